"""Agents: the named job slots a dispatcher holds in a queue.

An agent claims jobs for its dispatcher up to ``size`` at once, through an
optional ``chooser`` (which job) and ``filter`` (which jobs at all), and
keeps a bounded history of the jobs it completed.  Choosers and filters
are stored in ZODB: make them module-level functions.
"""
from __future__ import annotations

import datetime
import inspect
import logging
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, cast

import BTrees.Length
import BTrees.OOBTree
import persistent

from . import clock, keys, lifecycle
from .failure import Failure
from .job import Job
from .quota import FLOOR, above_floor, check_size, floor_tree

trace = logging.getLogger('pyramid_zcasync.trace')

#: How long completed jobs stay in an agent's history.
HISTORY_AGE = datetime.timedelta(days=7)
#: The most completed jobs an agent's history keeps, whatever their age.
HISTORY_SIZE = 10000
#: How far past its limits a history grows before it is trimmed (entries,
#: and age).  Trimming on every completion made every two jobs of an
#: agent finishing together delete the same oldest entry: a conflict
#: that ran one of them again.  Trimming in batches makes that rare.
TRIM_SLACK = 100
TRIM_SLACK_AGE = datetime.timedelta(hours=1)


def claim_from_queue(agent: 'Agent',
                     now: Optional[datetime.datetime] = None
                     ) -> Optional[Job]:
    """The default chooser: the queue's next job that the filter allows."""
    return agent.queue.claim(agent.filter, now=now)


def takes_now(chooser: Callable) -> bool:
    """Whether ``chooser`` is called as ``chooser(agent, now=now)`` (ours)
    or as ``chooser(agent)`` (zc.async's); a TypeError naming the expected
    signature if it fits neither, so that a wrong chooser is refused when
    assigned, not at every claim of a running dispatcher."""
    if not callable(chooser):
        raise TypeError('a chooser must be callable as chooser(agent), '
                        'got %r' % (chooser,))
    try:
        signature = inspect.signature(chooser)
    except (TypeError, ValueError):  # a builtin without one: trust it
        return False
    for args, kwargs, answer in (((None,), {'now': None}, True),
                                 ((None,), {}, False)):
        try:
            signature.bind(*args, **kwargs)
        except TypeError:
            continue
        return answer
    raise TypeError('a chooser must be callable as chooser(agent) (or '
                    'chooser(agent, now=None)); %r has the signature %s'
                    % (chooser, signature))


class CompletedHistory(persistent.Persistent):
    """Completed jobs by completion time, trimmed by age and count."""

    def __init__(self, max_age: datetime.timedelta = HISTORY_AGE,
                 max_size: int = HISTORY_SIZE):
        self.max_age = max_age
        self.max_size = max_size
        self._jobs = BTrees.OOBTree.OOBTree()
        self._length = BTrees.Length.Length()

    def add(self, job: Job, now: Optional[datetime.datetime] = None) -> None:
        now = now or clock.utcnow()
        ended = job.active_end or now
        tiebreak = keys.tiebreak_of(cast(int, job._key))  # it was queued
        keys.insert_unique(
            self._jobs, keys.make(clock.to_micros(ended), tiebreak), job)
        self._length.change(1)
        if (self._length() > self.max_size + TRIM_SLACK
                or keys.micros_of(self._jobs.minKey()) < clock.to_micros(
                    now - self.max_age - TRIM_SLACK_AGE)):
            self.trim(now)

    def trim(self, now: datetime.datetime) -> None:
        oldest_kept = clock.to_micros(now - self.max_age)
        while self._jobs and (
                self._length() > self.max_size
                or keys.micros_of(self._jobs.minKey()) < oldest_kept):
            del self._jobs[self._jobs.minKey()]
            self._length.change(-1)

    def configure(self, max_size: Optional[int] = None,
                  max_age: Optional[datetime.timedelta] = None) -> None:
        """Change the bounds (written only when they differ)."""
        if max_size is not None and max_size != self.max_size:
            self.max_size = max_size
        if max_age is not None and max_age != self.max_age:
            self.max_age = max_age

    def __len__(self) -> int:
        return self._length()

    def __iter__(self) -> Iterator[Job]:
        """Newest first."""
        return reversed(list(self._jobs.values()))

    def first(self) -> Optional[Job]:
        """The most recently completed job, or None."""
        if not self._jobs:
            return None
        return self._jobs[self._jobs.maxKey()]

    def since(self, when: datetime.datetime) -> Iterable[Job]:
        """Jobs completed at or after ``when``, oldest first."""
        return self._jobs.values(min=keys.first_of(clock.to_micros(when)))

    def end_times(self, since: datetime.datetime) -> list:
        """Completion times (µs since the epoch) from ``since`` on, read
        from the keys alone: counting completions loads no job."""
        return [keys.micros_of(key) for key in
                self._jobs.keys(min=keys.first_of(clock.to_micros(since)))]


    def failed_end_times(self, since: datetime.datetime) -> list:
        """Completion times (µs) of the runs that failed, from ``since``
        on.  The history holds a job once per run, but the job keeps only
        its last result; a job runs again only after it failed
        (``Queue.retry_failed``), so each earlier run failed."""
        found = []
        for key, job in self._jobs.items(
                min=keys.first_of(clock.to_micros(since))):
            ended = keys.micros_of(key)
            last = job.active_end
            if (last is not None and ended != clock.to_micros(last)) or \
                    isinstance(job.result, Failure):
                found.append(ended)
        return found


class Agent(persistent.Persistent):

    #: Stored agents from before choosers were checked: ours took ``now``.
    _chooser_takes_now = True
    _chooser = None
    _filter = None

    def __init__(self, name: str = 'main', size: int = 3,
                 chooser: Optional[Callable] = None,
                 filter: Optional[Callable] = None):
        _exclusive(chooser, filter)
        self.name = name
        self.size = check_size(size, 'agent %r size' % name)
        self.chooser = chooser
        self.filter = filter
        #: The DispatcherAgent holding this agent (see ``registration``).
        self.parent: Any = None
        self._active = floor_tree()
        self.completed = CompletedHistory()

    def __repr__(self) -> str:
        return '<Agent %r %d/%d>' % (self.name, len(self), self.size)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # Agents stored before chooser and filter became properties.
        for name in ('chooser', 'filter'):
            if name in state:
                state['_' + name] = state.pop(name)
        super().__setstate__(state)

    @property
    def chooser(self) -> Optional[Callable]:
        """Claims the agent's next job: ``chooser(agent)``, as in zc.async
        (or ``chooser(agent, now=None)``); exclusive with ``filter``."""
        return self._chooser

    @chooser.setter
    def chooser(self, chooser: Optional[Callable]) -> None:
        _exclusive(chooser, self._filter)
        if chooser is not None:
            self._chooser_takes_now = takes_now(chooser)
        self._chooser = chooser

    @property
    def filter(self) -> Optional[Callable]:
        """``filter(job)``: whether the default chooser may claim the job;
        exclusive with ``chooser``, which decides alone."""
        return self._filter

    @filter.setter
    def filter(self, filter: Optional[Callable]) -> None:
        _exclusive(self._chooser, filter)
        self._filter = filter

    @property
    def registration(self) -> Any:
        """The DispatcherAgent holding this agent (stored as ``parent``)."""
        return self.parent

    @property
    def queue(self) -> Any:
        return self.parent.registrations.queue

    @property
    def UUID(self) -> str:
        return self.parent.UUID

    def __len__(self) -> int:
        return len(self._active) - 1

    def __iter__(self) -> Iterator[Job]:
        return iter(list(above_floor(self._active)))

    def __contains__(self, job: object) -> bool:
        return self._active.get(getattr(job, '_key', FLOOR)) is job

    def resize(self, size: int) -> None:
        """Change the number of slots (written only when it differs): a
        smaller size claims nothing until enough running jobs end."""
        size = check_size(size, 'agent %r size' % self.name)
        if size != self.size:
            self.size = size

    @property
    def available(self) -> int:
        return max(self.size - len(self), 0)

    def claimJob(self, now: Optional[datetime.datetime] = None,
                 limit: Optional[int] = None) -> Optional[Job]:
        """Claim one job for this agent's dispatcher, if a slot is free.

        ``limit`` lets a dispatcher hold more claimed jobs than ``size``
        when its jobs are short, to run them in groups (see group.py).
        """
        if len(self) >= (self.size if limit is None else limit):
            return None
        if not self._claims_allowed():
            return None
        job = self._choose(now)
        if job is not None:
            lifecycle.take_slot(self, job)
        return job

    def _claims_allowed(self) -> bool:
        """Nothing is claimed from a paused queue.  Only a live
        registration claims: one deactivated, or silent
        long enough to be declared dead, has its jobs handed back by
        siblings, so what it claimed now might run twice."""
        registration = self.parent
        if registration is None:
            return True
        if queue_paused(self):
            trace.info('agent %r of dispatcher %s claims nothing: its '
                       'queue is paused', self.name, self.UUID)
            return False
        if not registration.activated:
            trace.info('agent %r of dispatcher %s claims nothing: the '
                       'registration is deactivated', self.name, self.UUID)
            return False
        if registration.dead:
            trace.info('agent %r of dispatcher %s claims nothing: the '
                       'registration is dead', self.name, self.UUID)
            return False
        return True

    def _choose(self, now: Optional[datetime.datetime]) -> Optional[Job]:
        if self._chooser is None:
            return claim_from_queue(self, now=now)
        if self._chooser_takes_now:
            return self._chooser(self, now=now)
        return self._chooser(self)

    def jobCompleted(self, job: Job) -> None:
        """Free the job's slot and quotas (lifecycle.release); completed
        jobs enter the history."""
        lifecycle.release(job, self)


def queue_paused(agent: Agent) -> bool:
    """Whether the queue of ``agent`` is paused (False for an agent not
    in a queue yet)."""
    registrations = getattr(agent.parent, 'registrations', None)
    queue = getattr(registrations, 'queue', None)
    return bool(getattr(queue, 'paused', False))


def _exclusive(chooser: Optional[Callable],
               filter: Optional[Callable]) -> None:
    """As in zc.async: a chooser decides alone which job to claim, so a
    filter next to it would silently be ignored."""
    if chooser is not None and filter is not None:
        raise ValueError('cannot set both chooser and filter to non-None')
