"""Queues and Queue: pending jobs in order, claimed without scanning.

Pending jobs live in a BTree keyed by ``(due time in µs, sequence, nonce)``
so that a claim walks from the front and stops at the first job not yet
due: jobs scheduled for later are never visited.  Deadlines (``begin_by``)
have a BTree of their own, so expired jobs are failed at claim time even
when every agent's filter would skip them.  The length is a
``BTrees.Length`` and inserts land in BTree buckets, whose conflict
resolution lets a producer and a consumer in two processes commit at once.
"""
from __future__ import annotations

import datetime
import itertools
from typing import Any, Callable, Iterator, Optional

import BTrees.Length
import BTrees.OOBTree
import persistent
import persistent.mapping
import zope.event
import zope.interface

from . import clock, keys
from .failure import Failure
from .interfaces import (ASSIGNED, COMPLETED, NEW, PENDING, IQueue, IQueues,
                         JobQueued)
from .job import BadStatusError, Job
from .quota import Quotas, above_floor, floor_tree
from .registry import DispatcherAgents


@zope.interface.implementer(IQueues)
class Queues(persistent.mapping.PersistentMapping):
    """Queue name -> Queue; stored at ``root[KEY]``."""

    def __setitem__(self, name: str, queue: 'Queue') -> None:
        if not isinstance(name, str):
            raise TypeError('a queue name must be a string, got %r' % name)
        if not isinstance(queue, Queue):
            raise TypeError('Queues holds Queue objects, got %r' % queue)
        queue.name = name
        queue.parent = self
        super().__setitem__(name, queue)


@zope.interface.implementer(IQueue)
class Queue(persistent.Persistent):

    def __init__(self, name: str = ''):
        self.name = name
        self.parent = None
        # Both keep a floor entry: see quota.FLOOR.
        self._pending = floor_tree()
        self._deadlines = floor_tree()
        self._length = BTrees.Length.Length()
        self.quotas = Quotas()
        self.dispatchers = DispatcherAgents(self)

    def __repr__(self):
        return '<Queue %r pending=%d>' % (self.name, len(self))

    # -- reading ------------------------------------------------------

    def __len__(self) -> int:
        return self._length()

    def __iter__(self) -> Iterator[Job]:
        return iter(above_floor(self._pending))

    def __getitem__(self, index: int) -> Job:
        return self._pending[self._key_at(index)]

    def __contains__(self, job) -> bool:
        return (isinstance(job, Job) and job.queue is self
                and job.status == PENDING and job._key in self._pending)

    def _key_at(self, index: int) -> int:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError('queue index must be an integer, got %r'
                            % (index,))
        size = len(self)
        position = index + size if index < 0 else index
        if not 0 <= position < size:
            raise IndexError('queue %r has %d pending jobs; no index %d'
                             % (self.name, size, index))
        return next(itertools.islice(above_floor(self._pending, 'keys'),
                                     position, None))

    # -- adding -------------------------------------------------------

    def put(self, item: Any, *args: Any,
            begin_after: Optional[datetime.datetime] = None,
            begin_by: Optional[Any] = None, **kwargs: Any) -> Job:
        """Queue a Job, or a callable with its arguments; return the job.

        The job runs once the current transaction commits; if it aborts,
        nothing was queued.
        """
        job = self._as_job(item, args, kwargs)
        if job.status != NEW:
            raise BadStatusError('cannot put %r: only new jobs can be '
                                 'queued' % (job,))
        self.quotas.check_names(job.quota_names)
        if begin_after is not None:
            job.begin_after = begin_after
        if begin_by is not None:
            job.begin_by = begin_by
        now = clock.utcnow()
        if job.begin_after is None:
            job.begin_after = now
        self._insert(job, clock.to_micros(max(job.begin_after, now)))
        zope.event.notify(JobQueued(job, self))
        return job

    @staticmethod
    def _as_job(item, args, kwargs) -> Job:
        if isinstance(item, Job):
            if args or kwargs:
                raise TypeError('put(job) takes no call arguments; pass '
                                'them to Job(callable, *args, **kwargs)')
            return item
        return Job(item, *args, **kwargs)

    def putBack(self, job: Job) -> Job:
        """Queue ``job`` in front of every other pending job."""
        if job.status != NEW:
            raise BadStatusError('cannot put back %r: only new jobs can be '
                                 'queued' % (job,))
        self.quotas.check_names(job.quota_names)
        return self._put_back(job)

    def _put_back(self, job: Job) -> Job:
        self._insert(job, self._front_micros())
        zope.event.notify(JobQueued(job, self))
        return job

    def _front_micros(self) -> int:
        now = clock.to_micros(clock.utcnow())
        first = next(iter(above_floor(self._pending, 'keys')), None)
        if first is None:
            return now
        return min(keys.micros_of(first), now) - 1

    def _insert(self, job: Job, micros: int) -> None:
        tiebreak = keys.new_tiebreak()
        job._key = keys.insert_unique(self._pending,
                                      keys.make(micros, tiebreak), job)
        if job.begin_by is not None:
            job._deadline_key = keys.insert_unique(
                self._deadlines,
                keys.make(clock.to_micros(job.begin_by), tiebreak), job)
        self._length.change(1)
        job.queue = self
        job._status = PENDING

    def requeue(self, job: Job,
                begin_after: Optional[datetime.datetime] = None) -> None:
        """Queue an assigned or interrupted job again, for a retry."""
        self.release(job)
        job._status = NEW
        job.assignerUUID = None
        job.active_start = None
        if begin_after is None:
            self._put_back(job)  # even if one of its quotas was removed
        else:
            job._begin_after = clock.aware_utc(begin_after, 'begin_after')
            self._insert(job, clock.to_micros(job._begin_after))
            zope.event.notify(JobQueued(job, self))

    def retry_failed(self, job: Job) -> Job:
        """Run a failed job again (an operator's decision): same job, new
        attempt, at the back of the queue.  Its callbacks already saw the
        failure and are not run again."""
        if job.status != COMPLETED or not isinstance(job.result, Failure):
            raise BadStatusError('only a failed job can be retried; %r has '
                                 'status %s' % (job, job.status))
        job.annotations['pyramid_zcasync.failed_before'] = job.result
        job._result = None
        job._status = NEW
        job.assignerUUID = None
        job.active_start = job.active_end = None
        job._begin_after = None
        job._begin_by = None
        job.queue = None
        return self.put(job)

    # -- removing -----------------------------------------------------

    def pull(self, index: int = 0) -> Job:
        """Remove the pending job at ``index``; it is NEW again."""
        job = self._pending[self._key_at(index)]
        self._unlink(job)
        return job

    def remove(self, job: Job) -> None:
        """Cancel a pending job; it is NEW again and out of the queue."""
        if job not in self:
            raise LookupError('%r is not pending in queue %r'
                              % (job, self.name))
        self._unlink(job)

    def _unlink(self, job: Job) -> None:
        self._take(job)
        job._status = NEW
        job.queue = None

    def _take(self, job: Job) -> None:
        del self._pending[job._key]
        if job._deadline_key is not None:
            self._deadlines.pop(job._deadline_key, None)
            job._deadline_key = None
        self._length.change(-1)

    # -- claiming -----------------------------------------------------

    def claim(self, filter: Optional[Callable[[Job], bool]] = None,
              now: Optional[datetime.datetime] = None) -> Optional[Job]:
        """The next due job that ``filter`` and the quotas allow, ASSIGNED.

        Expired jobs (past ``begin_by``) are failed with TimeoutError first,
        whatever the filter.  The walk stops at the first job not yet due,
        so its cost is the jobs skipped by filter or quota, not the queue.
        """
        now = clock.aware_utc(now, 'now') or clock.utcnow()
        now_micros = clock.to_micros(now)
        self.fail_expired(now_micros)
        for job in above_floor(self._pending, max=keys.last_of(now_micros)):
            if job.begin_after is not None and job.begin_after > now:
                continue  # put back ahead of its time
            if filter is not None and not filter(job):
                continue
            if not self.quotas.allow(job):
                continue
            self._take(job)
            self.quotas.acquire(job)
            job._status = ASSIGNED
            return job
        return None

    def next_due(self, now: datetime.datetime
                 ) -> Optional[datetime.datetime]:
        """When the first job not yet due at ``now`` becomes due, so a
        dispatcher can wake then instead of at its next poll."""
        later = self._pending.keys(
            min=keys.first_of(clock.to_micros(now) + 1))
        key = next(iter(later), None)  # the floor sorts below any bound
        return None if key is None else clock.from_micros(keys.micros_of(key))

    def fail_expired(self, now_micros: int) -> int:
        expired = list(above_floor(self._deadlines,
                                   max=keys.first_of(now_micros),
                                   excludemax=True))
        for job in expired:
            self._take(job)
            job._status = ASSIGNED
            job.fail(TimeoutError(
                'job %r was not started by its begin_by deadline %s'
                % (job, job.begin_by.isoformat())))
        return len(expired)

    def release(self, job: Job) -> None:
        """A job stopped running: free its quotas and its agent slot."""
        self.quotas.release(job)
        if job.agent is not None:
            job.agent.jobCompleted(job)
