"""What lifecycle.py touches of a job, a queue and an agent, as Protocols.

The lifecycle sits below job.py, queue.py and agent.py (they call it to
change a job's status), so it cannot import their classes, not even for
annotations, without closing an import circle.  These Protocols name the
members it uses instead; Job, Queue and Agent match them structurally.

The methods of a queue, its quotas and an agent accept ``Any`` job: each
of them takes the jobs of its own package's Job class, which the
lifecycle only hands back to them (a Protocol parameter typed
``JobShape`` would claim that they accept any object of that shape).
"""
from __future__ import annotations

import datetime
from typing import (Any, Callable, Iterable, List, Optional, Protocol,
                    Sequence, Tuple, Union)


class JobShape(Protocol):
    """A job as the lifecycle reads and writes it (job.Job)."""

    _status: str
    _result: Any
    _p_jar: Any  # its connection, once stored
    _p_oid: Optional[bytes]
    _key: Optional[int]
    unique_key: Optional[str]
    _begin_after: Optional[datetime.datetime]
    _begin_by: Optional[datetime.datetime]
    queue: Any  # a QueueShape once queued; Job leaves it untyped
    agent: Any  # an AgentShape while it holds a slot
    waiting_for: Any  # the job it returned and waits for, if any
    assignerUUID: Optional[str]
    time_limit: Optional[float]
    active_start: Optional[datetime.datetime]
    active_end: Optional[datetime.datetime]
    initial_callbacks_end: Optional[datetime.datetime]

    @property
    def quota_names(self) -> tuple: ...

    @property
    def priority(self) -> int: ...

    @priority.setter
    def priority(self, value: int) -> None: ...

    @property
    def begin_after(self) -> Optional[datetime.datetime]: ...

    @begin_after.setter
    def begin_after(self, value: Optional[datetime.datetime]) -> None: ...

    @property
    def begin_by(self) -> Optional[datetime.datetime]: ...

    @begin_by.setter
    def begin_by(self, value: Union[None, datetime.datetime,
                                    datetime.timedelta]) -> None: ...

    @property
    def args(self) -> list: ...

    @args.setter
    def args(self, value: Iterable[Any]) -> None: ...

    @property
    def annotations(self) -> Any: ...  # a BTree

    @property
    def callbacks(self) -> Sequence[JobShape]: ...

    def pending_callbacks(self) -> Sequence[JobShape]: ...

    def addCallback(self, callback: Callable) -> JobShape: ...

    def _resolver(self) -> JobShape: ...

    def _oid_repr(self) -> str: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


class QuotasShape(Protocol):
    """A queue's quotas (quota.Quotas)."""

    def check_names(self, names: Iterable[str]) -> None: ...

    def acquire(self, job: Any, now: Optional[datetime.datetime] = None
                ) -> None: ...

    def release(self, job: Any) -> None: ...


class QueueShape(Protocol):
    """A queue's storage of pending jobs (queue.Queue)."""

    quotas: QuotasShape
    _p_jar: Any
    _unique: Any  # unique.py's BTree of unique keys, or None

    def put(self, item: Any, *args: Any) -> Any: ...

    def _front_micros(self, priority: int) -> int: ...

    def _insert(self, job: Any, micros: int) -> None: ...

    def _take(self, job: Any, tree: Any = None) -> None: ...

    def _claimable(self, filter: Optional[Callable[[Any], bool]],
                   now: datetime.datetime, now_micros: int
                   ) -> Optional[Tuple[Any, Any]]: ...

    def _expired(self, now_micros: int) -> List[Any]: ...


class HistoryShape(Protocol):
    """An agent's history of finished jobs (agent.CompletedHistory)."""

    def add(self, job: Any, now: Optional[datetime.datetime] = None
            ) -> None: ...


class AgentShape(Protocol):
    """An agent's slots (agent.Agent)."""

    _active: Any  # a BTree: job key -> job
    completed: HistoryShape

    @property
    def UUID(self) -> str: ...
