"""Queues and Queue: pending jobs in order, claimed without scanning.

Pending jobs live in BTrees keyed by due time (see keys.py), so that a
claim walks from the front and stops at the first job not yet due: jobs
scheduled for later are never visited.  There is one such BTree, a
*lane*, per priority and set of quota names: a claim visits the priorities
from the highest, and in each takes the earliest due job of its lanes, so
it never loads a job of a lower priority than the one it returns, and a
lane whose quotas are full or out of rate is passed over whole, without
loading its jobs.  Each lane is *striped*: keys.STRIPES BTrees, the key's
low bits naming the tree (keys.stripe_of), each producer thread putting
in its own (keys.local_stripe), because producers appending to one tree
all conflict on its last bucket and its nodes.  A claim takes the
earliest job of all trees of its priority, so striping changes no order.
Lanes are created on first use and kept (a producer may be adding to one
while a claim empties it).  Queues stored before stripes keep their
unstriped trees (``_pending``, the default lane and the only tree before
lanes, and ``_lanes``): claims merge them as one more tree of their lane,
and check quotas job by job in every tree, as jobs put before lanes may
name quotas in ``_pending``.  Deadlines
(``begin_by``) have trees of their own, striped the same way (one tree in
queues stored before), so expired jobs are failed at claim time even when
every agent's filter would skip them.  Each lane
counts its jobs in a ``BTrees.Length`` of its own (the queue's length is
their sum), and inserts land in BTree buckets: conflict resolution lets a
producer and a consumer in two processes commit at once.
"""
from __future__ import annotations

import datetime
import heapq
import itertools
import operator
from typing import Any, Callable, Iterator, List, Optional, Tuple

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
from .retry import RetryPolicy
from .timelimit import check_limit


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

    #: ``(-priority, quota names) -> tuple``: the keys.STRIPES trees of
    #: that lane, then the ``BTrees.Length`` of the jobs in them; None in
    #: queues stored before stripes.
    _stripes = None
    #: Unstriped trees of queues stored before stripes, still read (and
    #: written by processes not yet upgraded): ``_pending`` the default
    #: lane, ``_lanes`` ``(-priority, quota names) -> BTree`` the others;
    #: ``_length`` counts their jobs.
    _pending = None
    _lanes = None
    _length = None
    #: The jobs with a ``begin_by``, keyed by deadline: keys.STRIPES trees,
    #: each job in the stripe of its own key, so that producers putting
    #: jobs with deadlines do not all insert into one tree's last bucket.
    #: ``_deadlines``, one tree, in queues stored before: still read.
    _deadline_stripes = None
    _deadlines = None

    def __init__(self, name: str = ''):
        self.name = name
        self.parent = None
        # All keep a floor entry: see quota.FLOOR.
        self._deadline_stripes = _floor_trees()
        self._stripes = BTrees.OOBTree.OOBTree()
        self._stripe(0, (), 0, create=True)  # the first puts do not race
        self.quotas = Quotas()
        self.dispatchers = DispatcherAgents(self)

    def __repr__(self):
        return '<Queue %r pending=%d>' % (self.name, len(self))

    # -- reading ------------------------------------------------------

    def __len__(self) -> int:
        counters = [] if self._stripes is None else [
            lane[keys.STRIPES] for lane in self._stripes.values()]
        if self._length is not None:
            counters.append(self._length)
        return sum(counter() for counter in counters)

    def __iter__(self) -> Iterator[Job]:
        """Pending jobs in claim order: highest priority first, then
        earliest due, then first queued."""
        return map(operator.itemgetter(1), self._items())

    def __getitem__(self, index: int) -> Job:
        return self._item_at(index)[1]

    def __contains__(self, job) -> bool:
        return (isinstance(job, Job) and job.queue is self
                and job.status == PENDING and self._tree_of(job) is not None)

    def _items(self) -> Iterator[Tuple[int, Job]]:
        for _, lanes in self._levels():
            trees = [tree for _, lane in lanes for tree in lane]
            if len(trees) == 1:
                yield from above_floor(trees[0], 'items')
            else:
                yield from heapq.merge(
                    *(above_floor(tree, 'items') for tree in trees),
                    key=operator.itemgetter(0))

    def _item_at(self, index: int) -> Tuple[int, Job]:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError('queue index must be an integer, got %r'
                            % (index,))
        size = len(self)
        position = index + size if index < 0 else index
        if not 0 <= position < size:
            raise IndexError('queue %r has %d pending jobs; no index %d'
                             % (self.name, size, index))
        return next(itertools.islice(self._items(), position, None))

    # -- lanes --------------------------------------------------------

    @staticmethod
    def _names_of(job: Job) -> tuple:
        return tuple(sorted(set(job.quota_names)))

    def _stripe(self, priority: int, names: tuple, stripe: int,
                create: bool = False):
        """The tree of that lane and stripe, or None."""
        if self._stripes is None:
            if not create:
                return None
            self._stripes = BTrees.OOBTree.OOBTree()
        trees = self._stripes.get((-priority, names))
        if trees is None:
            if not create:
                return None
            # All at once: producers in other stripes find them made.
            # The counter last, so that its oid is above the trees': on
            # RelStorage-PostgreSQL, which locks in oid order (read-current
            # rows first), a counter below a tree lets two producers of
            # one stripe deadlock, one holding the counter and waiting for
            # the tree the other holds.
            trees = self._stripes[(-priority, names)] = tuple(
                floor_tree() for _ in range(keys.STRIPES)) + (
                    BTrees.Length.Length(),)
        return trees[stripe]

    def _counter_of(self, tree, job: Job):
        """The Length counting the jobs of ``tree``, which holds ``job``."""
        if self._stripes is not None:
            own = self._stripes.get((-job.priority, self._names_of(job)))
            # Its own lane, and only if its quota names were changed while
            # it was pending, every lane (read lazily: puts and claims
            # come here).
            lanes = itertools.chain([own] if own is not None else [],
                                    self._stripes.values())
            for lane in lanes:
                if any(stripe is tree for stripe in lane[:keys.STRIPES]):
                    return lane[keys.STRIPES]
        return self._length  # a tree from before stripes

    def _unstriped(self, priority: int, names: tuple):
        """The tree of that lane from before stripes, or None."""
        if priority == 0 and not names:
            return self._pending
        return None if self._lanes is None else self._lanes.get(
            (-priority, names))

    def _all_lanes(self) -> List[Tuple[int, tuple, list]]:
        """``(priority, names, trees)`` of every lane, in claim order."""
        lanes = {}
        if self._pending is not None:
            lanes[(0, ())] = [self._pending]
        if self._lanes is not None:
            for lane, tree in self._lanes.items():
                lanes[lane] = [tree]
        if self._stripes is not None:
            for lane, trees in self._stripes.items():
                lanes.setdefault(lane, []).extend(trees[:keys.STRIPES])
        return [(-negative, names, lanes[(negative, names)])
                for negative, names in sorted(lanes)]

    def _all_trees(self) -> Iterator[Tuple[tuple, Any]]:
        """``(names, tree)`` of every tree of every lane."""
        for _, names, trees in self._all_lanes():
            for tree in trees:
                yield names, tree

    def _levels(self) -> Iterator[Tuple[int, List[Tuple[tuple, list]]]]:
        """``(priority, [(names, trees), ...])``, highest priority first."""
        for priority, lanes in itertools.groupby(
                self._all_lanes(), key=operator.itemgetter(0)):
            yield priority, [(names, trees) for _, names, trees in lanes]

    def _tree_of(self, job: Job):
        """The tree holding ``job``, or None."""
        key = job._key
        if key is None:
            return None
        names = self._names_of(job)
        for tree in (self._stripe(job.priority, names, keys.stripe_of(key)),
                     self._unstriped(job.priority, names), self._pending):
            if tree is not None and tree.get(key) is job:
                return tree
        # Its quota names were changed while it was pending: look around.
        for _, tree in self._all_trees():
            if tree.get(key) is job:
                return tree
        return None

    # -- adding -------------------------------------------------------

    def put(self, item: Any, *args: Any,
            begin_after: Optional[datetime.datetime] = None,
            begin_by: Optional[Any] = None,
            priority: Optional[int] = None,
            time_limit: Optional[float] = None, **kwargs: Any) -> Job:
        """Queue a Job, or a callable with its arguments; return the job.

        The job runs once the current transaction commits; if it aborts,
        nothing was queued.  ``priority`` (an int, higher first; the job's
        own, 0 by default, when not given) comes before due time in the
        claim order.  ``time_limit`` is ``job.time_limit`` (timelimit.py).
        """
        job = self._as_job(item, args, kwargs)
        if job.status != NEW:
            raise BadStatusError('cannot put %r: only new jobs can be '
                                 'queued' % (job,))
        self.quotas.check_names(job.quota_names)
        if priority is not None:
            job.priority = priority
        if time_limit is not None:
            job.time_limit = check_limit(time_limit)
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
        """Queue ``job`` in front of every other pending job of its
        priority."""
        if job.status != NEW:
            raise BadStatusError('cannot put back %r: only new jobs can be '
                                 'queued' % (job,))
        self.quotas.check_names(job.quota_names)
        return self._put_back(job)

    def _put_back(self, job: Job) -> Job:
        self._insert(job, self._front_micros(job.priority))
        zope.event.notify(JobQueued(job, self))
        return job

    def _front_micros(self, priority: int) -> int:
        now = clock.to_micros(clock.utcnow())
        firsts = [_front_key(tree)
                  for level, _, trees in self._all_lanes()
                  if level == priority for tree in trees]
        firsts = [key for key in firsts if key is not None]
        if not firsts:
            return now
        return min(keys.micros_of(min(firsts)), now) - 1

    def _insert(self, job: Job, micros: int) -> None:
        stripe = keys.local_stripe()
        if self._p_jar is not None:
            keys.move_on_failed_commit(self._p_jar.transaction_manager.get())
        tiebreak = keys.new_tiebreak(stripe)
        lane = self._stripe(job.priority, self._names_of(job), stripe,
                            create=True)
        job._key = keys.insert_unique(lane, keys.make(micros, tiebreak), job)
        if job.begin_by is not None:
            if self._deadline_stripes is None:  # a queue stored before
                self._deadline_stripes = _floor_trees()
            job._deadline_key = keys.insert_unique(
                self._deadline_stripes[stripe],
                keys.make(clock.to_micros(job.begin_by), tiebreak), job)
        self._counter_of(lane, job).change(1)
        job.queue = self
        job._status = PENDING
        if job._p_jar is None and self._p_jar is not None:
            # Stored in the queues' database now, as zc.async does: the
            # app may then keep the job on its own objects (of another
            # database) in this transaction, and it has its oid at once.
            self._p_jar.add(job)

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
        if job.agent is not None:
            # Its slot, which a slow group leaves for the next poll to
            # free: freed now, or the agent would keep it (keyed by the
            # key that the put below changes) for good.
            self.release(job)
        job.annotations['pyramid_zcasync.failed_before'] = job.result
        # A new attempt: the retry counts of the last one do not limit it.
        job.annotations.pop(RetryPolicy.key, None)
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
        job = self._item_at(index)[1]
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

    def _take(self, job: Job, lane=None) -> None:
        if lane is None:
            lane = self._tree_of(job)
            if lane is None:
                raise KeyError('%r is not pending in queue %r'
                               % (job, self.name))
        del lane[job._key]
        if job._deadline_key is not None:
            self._forget_deadline(job)
        self._counter_of(lane, job).change(-1)

    def _forget_deadline(self, job: Job) -> None:
        key, job._deadline_key = job._deadline_key, None
        for tree in self._deadline_trees(key):
            if tree.get(key) is job:
                del tree[key]
                return

    def _deadline_trees(self, key: Optional[int] = None) -> list:
        """Every tree of deadlines, or those that may hold ``key``."""
        trees = list(self._deadline_stripes or ())
        if trees and key is not None:
            trees = [trees[keys.stripe_of(key)]]
        if self._deadlines is not None:
            trees.append(self._deadlines)
        return trees

    # -- claiming -----------------------------------------------------

    def claim(self, filter: Optional[Callable[[Job], bool]] = None,
              now: Optional[datetime.datetime] = None) -> Optional[Job]:
        """The next due job that ``filter`` and the quotas allow, ASSIGNED:
        of the highest priority that has one, the earliest due, then the
        first queued.

        Expired jobs (past ``begin_by``) are failed with TimeoutError first,
        whatever the filter.  Each lane's walk stops at its first job not
        yet due, and lanes whose quotas are full or out of rate are passed
        over whole, so the cost is the lanes and the jobs skipped by the
        filter, not the queue.
        """
        now = clock.aware_utc(now, 'now') or clock.utcnow()
        now_micros = clock.to_micros(now)
        self.fail_expired(now_micros)
        due = keys.last_of(now_micros)
        for _, lanes in self._levels():
            best = None  # (key, job, tree): the earliest so far
            for names, trees in lanes:
                if names and not self.quotas.allow_names(names, now_micros):
                    continue  # every job here waits for these quotas
                for tree in trees:
                    best = self._first(tree, due, best, filter, now,
                                       now_micros) or best
            if best is not None:
                _, job, lane = best
                self._take(job, lane)
                self.quotas.acquire(job, now)
                job._status = ASSIGNED
                return job
        return None

    def _first(self, tree, due: int, best, filter, now, now_micros):
        """``(key, job, tree)`` of the first job of ``tree`` that may start
        and comes before ``best`` (or is due, without a best), or None."""
        front = _front_key(tree)
        if front is None or front > due or best is not None and (
                front >= best[0]):
            return None  # as most stripes: without making an iterator
        bound = due if best is None else best[0]
        for key, job in tree.items(front, bound,
                                   excludemax=best is not None):
            if job.begin_after is not None and job.begin_after > now:
                continue  # put back ahead of its time
            if filter is not None and not filter(job):
                continue
            if job.quota_names and not self.quotas.allow_names(
                    job.quota_names, now_micros):
                continue
            return key, job, tree
        return None

    def front_oids(self, count: int, now: datetime.datetime) -> List[bytes]:
        """The oids of about the ``count`` due jobs the next claims take,
        lanes in claim order, read from the trees without loading a job.

        A hint for prefetching: over ZEO or RelStorage each job a claim
        reads (its ``begin_after``, filter, quotas) is otherwise a round
        trip of its own to the server; one prefetch asks for all of them."""
        due = keys.last_of(clock.to_micros(now))
        found: List[Tuple[int, bytes]] = []
        for _, _, trees in self._all_lanes():
            lane = []
            for tree in trees:
                front = _front_key(tree)
                if front is not None and front <= due:
                    lane.extend(itertools.islice(
                        ((key, job._p_oid) for key, job
                         in tree.items(front, due)), count))
            found.extend(sorted(lane)[:count - len(found)])
            if len(found) >= count:
                break
        return [oid for _, oid in found if oid is not None]

    def next_due(self, now: datetime.datetime
                 ) -> Optional[datetime.datetime]:
        """When a job waiting only for time may start: the first job not
        yet due at ``now`` becomes due, or the rate window of a quota
        holding back due jobs reopens (``Quota.next_allowed``), so a
        dispatcher can wake then instead of at its next poll.  (Due jobs
        of the default lane, from before lanes, are not looked at.)"""
        now_micros = clock.to_micros(now)
        after = keys.first_of(now_micros + 1)
        times = []
        for _, names, trees in self._all_lanes():
            for tree in trees:
                later = _first_key(tree, after)
                if later is not None:
                    times.append(keys.micros_of(later))
            if names and any(_holds_before(tree, after)
                             for tree in trees):  # held by its quotas
                reopens = self.quotas.next_allowed(names, now_micros)
                if reopens is not None:
                    times.append(reopens)
        return clock.from_micros(min(times)) if times else None

    def fail_expired(self, now_micros: int) -> int:
        bound = keys.first_of(now_micros)
        expired = []
        for tree in self._deadline_trees():
            # Most hold no expired job: a first key costs less than items.
            if _holds_before(tree, bound):
                expired.extend(above_floor(tree, 'items', max=bound,
                                           excludemax=True))
        expired = [job for _, job in
                   sorted(expired, key=operator.itemgetter(0))]
        for job in expired:
            self._take(job)
            job._status = ASSIGNED
            job.fail(TimeoutError(
                'job %r was not started by its begin_by deadline %s'
                % (job, job.begin_by.isoformat())))
        return len(expired)

    def release(self, job: Job, agent=None) -> None:
        """A job stopped running: free its quotas and the slot it held in
        ``agent`` (by default its own: a group unassigns its jobs first)."""
        self.quotas.release(job)
        agent = agent if agent is not None else job.agent
        if agent is not None:
            agent.jobCompleted(job)


def _floor_trees() -> tuple:
    return tuple(floor_tree() for _ in range(keys.STRIPES))


def _front_key(tree) -> Optional[int]:
    """The first job key of ``tree``, or None: cheaper than an iterator,
    which a claim would otherwise make for every stripe, and it reads only
    the first bucket, which claims load anyway (``maxKey`` would load the
    last, the one producers change)."""
    try:
        return tree.minKey(keys.FLOOR + 1)
    except ValueError:
        return None


def _first_key(tree, low: int) -> Optional[int]:
    """The first key of ``tree`` from ``low`` on, or None, without an
    iterator (next_due looks at every stripe of every lane).  A tree is
    never empty: it keeps its floor."""
    return None if tree.maxKey() < low else tree.minKey(low)


def _holds_before(tree, bound: int) -> bool:
    """Whether ``tree`` holds a job whose key is below ``bound``."""
    first = _front_key(tree)
    return first is not None and first < bound
