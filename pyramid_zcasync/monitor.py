"""What a dispatcher tells about itself: status, polls, jobs, statistics.

The methods of zc.async's dispatcher monitor, kept apart from the
dispatcher's work; the admin views and the tests read them through the
dispatcher, which holds one Monitor.  The poll and the workers write its
records (``polls``, ``jobs``) directly: no call in between on hot paths.
"""
from __future__ import annotations

import datetime
import threading
from typing import Any, Dict, Iterator, Optional, Protocol

from ZODB.POSException import POSError

from . import retry
from .clock import Clock
from .history import JobHistory, Poll, Polls, statistics

STOPPED = 'STOPPED'
STARTING = 'STARTING'
RUNNING = 'RUNNING'
STUCK = 'STUCK'


class Watched(Protocol):
    """What a Monitor reads of its dispatcher."""

    UUID: str
    db: Any
    clock: Clock
    poll_interval: float
    activated: Optional[datetime.datetime]


class Monitor:
    """The records of one dispatcher, and zc.async's questions on them."""

    def __init__(self, dispatcher: Watched) -> None:
        self.dispatcher = dispatcher
        self.polls = Polls()
        self.jobs = JobHistory()
        #: Thread -> why its last commit failed (report_storage).
        self._trouble: Dict[threading.Thread, str] = {}
        self._trouble_lock = threading.Lock()

    def report_storage(self, exc: Optional[BaseException]) -> None:
        """What a worker (or the poll) found committing: ``exc`` when the
        storage could not (server away, disk full), None when it did;
        /health says down while any worker's or the poll's last commit
        could not.  A thread that ended in trouble (a pool shrunk during
        an outage) no longer counts: it would say down for ever, and its
        entry would stay for the process's life."""
        who = threading.current_thread()
        with self._trouble_lock:
            if exc is None:
                self._trouble.pop(who, None)
            else:
                self._trouble[who] = str(exc)
            self._forget_ended_threads()

    def _forget_ended_threads(self) -> None:
        for thread in [t for t in self._trouble if not t.is_alive()]:
            del self._trouble[thread]

    @property
    def storage_trouble(self) -> Dict[str, str]:
        """Thread name -> why the storage could not commit, for the
        threads still running whose last commit failed."""
        with self._trouble_lock:
            self._forget_ended_threads()
            return {thread.name: why for thread, why in self._trouble.items()}

    @property
    def status(self) -> str:
        if self.dispatcher.activated is None:
            return STOPPED
        last = self.polls.first()
        if last is None:
            return STARTING
        limit = datetime.timedelta(
            seconds=self.dispatcher.poll_interval * 2 + 5)
        return STUCK if self.dispatcher.clock.utcnow() - \
            last.utc_timestamp > limit else RUNNING

    def getStatusInfo(self) -> dict:
        dispatcher = self.dispatcher
        now = dispatcher.clock.utcnow()
        last = self.polls.first()
        return {
            'poll interval': datetime.timedelta(
                seconds=dispatcher.poll_interval),
            'status': self.status,
            'time since last poll': (now - last.utc_timestamp
                                     if last is not None else None),
            'uptime': (now - dispatcher.activated if dispatcher.activated
                       else None),
            'uuid': dispatcher.UUID,
        }

    def getJobInfo(self, oid: int, database_name: Optional[str] = None
                   ) -> dict:
        job_id = (oid, database_name or self.dispatcher.db.database_name)
        info = self.jobs.get(job_id)
        if info is None:
            raise ValueError('job %r is not in the history of dispatcher %s'
                             % (job_id, self.dispatcher.UUID))
        return info

    def getActiveJobIds(self, queue: Optional[str] = None,
                        agent: Optional[str] = None) -> list:
        return self.jobs.active_ids(queue, agent)

    def getPollInfo(self, at: Any = None, before: Any = None
                    ) -> Optional[Poll]:
        found = self.polls.select(at=at, before=before, count=1)
        return found[0] if found else None

    def iterPolls(self, at: Any = None, before: Any = None, since: Any = None,
                  count: Optional[int] = None) -> Iterator[Poll]:
        return iter(self.polls.select(at, before, since, count))

    def getStatistics(self, at: Optional[datetime.datetime] = None,
                      before: Optional[datetime.datetime] = None,
                      since: Optional[datetime.datetime] = None,
                      queue: Optional[str] = None,
                      agent: Optional[str] = None) -> dict:
        until = at or (before - datetime.timedelta(microseconds=1)
                       if before else self.dispatcher.clock.utcnow())
        since = since or (self.dispatcher.activated or until)
        entries = [e for e in self.jobs.values()
                   if (queue is None or e.get('queue') == queue)
                   and (agent is None or e.get('agent') == agent)]
        return statistics(entries, since, until)


def spoils_poll(exc: BaseException) -> bool:
    """Whether an error raised inside an agent's claims must fail the
    whole poll (the dispatcher then aborts it) instead of being logged
    and skipped.  A storage error (the server away, an object that could
    not be loaded) can come in the middle of one claim: after the job
    left its pending tree, before it was ASSIGNED.  A poll committed
    then stores a PENDING job that no tree holds, which no dispatcher
    ever claims: after network faults over RelStorage, "Couldn't load
    state for BTrees.Length.Length" while a claim took a job, then the
    queue's last job waited for good.  An error of a job's own (a filter
    that raises) comes before anything is taken: skipping it keeps the
    dispatcher pinging."""
    return isinstance(exc, POSError) or retry.is_disconnected(exc)
