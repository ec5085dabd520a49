"""Queues and Queue: pending jobs in order, claimed without scanning.

Pending jobs live in BTrees keyed by due time (see keys.py), so that a
claim walks from the front and stops at the first job not yet due: jobs
scheduled for later are never visited.  There is one such BTree, a
*lane*, per priority and set of quota names: a claim visits the priorities
from the highest, and in each takes the earliest due job of its lanes, so
it never loads a job of a lower priority than the one it returns, and a
lane whose quotas are full or out of rate is passed over whole, without
loading its jobs.  Each lane is *striped*: up to keys.STRIPES BTrees, the
key's low bits naming the tree (keys.stripe_of), each producer thread
putting in its own (keys.local_stripe), because producers appending to
one tree all conflict on its last bucket and its nodes.  A claim takes
the earliest job of all trees of its priority, so striping changes no
order.  A lane's stripes are made on first use, each a key of its own in
``_stripes`` (producers making two stripes at once insert two keys, which
BTrees merge), and kept (a producer may be adding to one while a claim
empties it): a claim with a cold cache loads the stripes used, not all.  Deadlines (``begin_by``) have trees of their
own, striped the same way, so expired jobs are failed at claim time even
when every agent's filter would skip them.  Queues stored in older
layouts are upgraded once, by ``install_queues`` (layout.py), so claims
read one layout only.  Each stripe
counts its jobs in a ``BTrees.Length`` of its own (the queue's length is
their sum), and inserts land in BTree buckets: conflict resolution lets a
producer and a consumer in two processes commit at once.

What happens to a job (its status, slot and quotas) is lifecycle.py's:
this module keeps the pending jobs in order.
"""
from __future__ import annotations

import datetime
import heapq
import itertools
import operator
from typing import (Any, Callable, Iterable, Iterator, List, Optional,
                    Tuple, cast)

import BTrees.Length
import BTrees.OOBTree
import persistent
import persistent.mapping
import zope.interface

from . import clock, keys, lifecycle, unique
from .interfaces import PENDING, IQueue, IQueues
from .job import Job
from .quota import Quotas, above_floor, floor_tree
from .registry import DispatcherAgents

#: A stripe of a lane: its tree, then the Length counting its jobs.
Stripe = Tuple[Any, Any]
#: ``(key, job, tree)`` of a job a claim may take.
_Found = Tuple[int, Job, Any]


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

    #: ``(-priority, quota names, stripe) -> (tree, Length)``: the tree of
    #: that stripe of that lane and the count of the jobs in it.
    _stripes: Any = None
    #: The jobs with a ``begin_by``, keyed by deadline: keys.STRIPES trees,
    #: each job in the stripe of its own key, so that producers putting
    #: jobs with deadlines do not all insert into one tree's last bucket.
    _deadline_stripes: Any = None
    #: ``unique_key -> job``: unique.py's index of the keyed jobs that
    #: have not completed.  None on queues stored before unique keys.
    _unique: Any = None

    def __init__(self, name: str = ''):
        self.name = name
        self.parent: Any = None
        # All keep a floor entry: see quota.FLOOR.
        self._deadline_stripes = _floor_trees()
        self._stripes = BTrees.OOBTree.OOBTree()
        self._entry(0, (), keys.local_stripe(), create=True)
        unique.index(self, create=True)
        self.quotas = Quotas()
        self.dispatchers = DispatcherAgents(self)

    def __repr__(self) -> str:
        return '<Queue %r pending=%d>' % (self.name, len(self))

    # -- reading ------------------------------------------------------

    def __len__(self) -> int:
        return sum(counter() for _, counter in self._stripes.values())

    def __iter__(self) -> Iterator[Job]:
        """Pending jobs in claim order: highest priority first, then
        earliest due, then first queued."""
        return map(operator.itemgetter(1), self._items())

    def __getitem__(self, index: int) -> Job:
        return self._item_at(index)[1]

    def __contains__(self, job: object) -> bool:
        return (isinstance(job, Job) and job.queue is self
                and job.status == PENDING and self._tree_of(job) is not None)

    def _items(self) -> Iterator[Tuple[int, Job]]:
        for _, lanes in self._levels():
            trees = [tree for _, lane in lanes for tree in lane]
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
    def _names_of(job: Job) -> Tuple[str, ...]:
        return tuple(sorted(set(job.quota_names)))

    def _entry(self, priority: int, names: Tuple[str, ...], stripe: int,
               create: bool = False) -> Optional[Stripe]:
        """The tree and counter of that stripe of that lane, or None."""
        entry: Optional[Stripe] = self._stripes.get((-priority, names,
                                                     stripe))
        if entry is None and create:
            # The counter after the tree, so that its oid is above the
            # tree's: on RelStorage-PostgreSQL, which locks in oid order
            # (read-current rows first), a counter below a tree lets two
            # producers of one stripe deadlock, one holding the counter
            # and waiting for the tree the other holds.
            entry = self._stripes[(-priority, names, stripe)] = (
                floor_tree(), BTrees.Length.Length())
        return entry

    def _stripe(self, priority: int, names: Tuple[str, ...], stripe: int,
                create: bool = False) -> Any:
        """The tree of that lane and stripe, or None."""
        entry = self._entry(priority, names, stripe, create)
        return None if entry is None else entry[0]

    def _counter_of(self, tree: Any, job: Job) -> Any:
        """The Length counting the jobs of ``tree``, which holds ``job``:
        its own stripe's, or, only if its quota names were changed while
        it was pending (or it was put before a change of keys.STRIPES),
        another's (read lazily: puts and claims come here)."""
        assert job._key is not None
        own = self._entry(job.priority, self._names_of(job),
                          keys.stripe_of(job._key))
        entries = itertools.chain([own] if own is not None else [],
                                  self._stripes.values())
        for stripe_tree, counter in entries:
            if stripe_tree is tree:
                return counter
        raise KeyError('no lane of queue %r holds %r' % (self.name, job))

    def _all_lanes(self) -> List[Tuple[int, Tuple[str, ...], List[Any]]]:
        """``(priority, names, trees)`` of every lane, in claim order."""
        return [(-negative, names, [tree for _, (tree, _) in stripes])
                for (negative, names), stripes in itertools.groupby(
                    self._stripes.items(), key=_lane_of)]

    def _levels(self) -> Iterator[Tuple[int, List[Tuple[Tuple[str, ...],
                                                        List[Any]]]]]:
        """``(priority, [(names, trees), ...])``, highest priority first."""
        for priority, lanes in itertools.groupby(
                self._all_lanes(), key=operator.itemgetter(0)):
            yield priority, [(names, trees) for _, names, trees in lanes]

    def _tree_of(self, job: Job) -> Any:
        """The tree holding ``job``, or None."""
        key = job._key
        if key is None:
            return None
        tree = self._stripe(job.priority, self._names_of(job),
                            keys.stripe_of(key))
        if tree is not None and tree.get(key) is job:
            return tree
        # Its quota names were changed while it was pending: look around.
        for _, _, trees in self._all_lanes():
            for tree in trees:
                if tree.get(key) is job:
                    return tree
        return None

    # -- adding (lifecycle.py decides; these keep the trees) ------------

    def put(self, item: Any, *args: Any,
            begin_after: Optional[datetime.datetime] = None,
            begin_by: Optional[Any] = None,
            priority: Optional[int] = None,
            time_limit: Optional[float] = None,
            unique_key: Optional[str] = None,
            after: Optional[Iterable[Job]] = None, **kwargs: Any) -> Job:
        """Queue a Job, or a callable with its arguments; return the job.

        The job runs once the current transaction commits; if it aborts,
        nothing was queued.  ``priority`` (an int, higher first; the job's
        own, 0 by default, when not given) comes before due time in the
        claim order.  ``time_limit`` is ``job.time_limit`` (timelimit.py).

        ``unique_key`` (a non-empty string) makes the put return this
        queue's job put with that key that has not completed, if there is
        one, instead of queueing a second; once it completes (succeeded,
        failed, cancelled or expired) the key is free again.  A job put
        back for a retry keeps its key: it has not completed.

        ``after`` (jobs put in this database): the job waits, out of
        reach of claims, until they all succeeded; if one fails, the job
        completes with DependencyFailed without running (deps.py).
        """
        return lifecycle.put(self, self._as_job(item, args, kwargs),
                             begin_after=begin_after, begin_by=begin_by,
                             priority=priority, time_limit=time_limit,
                             unique_key=unique_key, after=after)

    @staticmethod
    def _as_job(item: Any, args: tuple, kwargs: dict) -> Job:
        if isinstance(item, Job):
            if args or kwargs:
                raise TypeError('put(job) takes no call arguments; pass '
                                'them to Job(callable, *args, **kwargs)')
            return item
        return Job(item, *args, **kwargs)

    def putBack(self, job: Job) -> Job:
        """Queue ``job`` in front of every other pending job of its
        priority."""
        return lifecycle.put_back(self, job)

    def _front_micros(self, priority: int) -> int:
        now = clock.to_micros(clock.utcnow())
        lane_keys = [_front_key(tree)
                     for level, _, trees in self._all_lanes()
                     if level == priority for tree in trees]
        firsts = [key for key in lane_keys if key is not None]
        if not firsts:
            return now
        return min(keys.micros_of(min(firsts)), now) - 1

    def _insert(self, job: Job, micros: int) -> None:
        """Store ``job`` in its lane (and deadlines), due at ``micros``."""
        stripe = keys.local_stripe()
        if self._p_jar is not None:
            keys.move_on_failed_commit(self._p_jar.transaction_manager.get())
        tiebreak = keys.new_tiebreak(stripe)
        entry = self._entry(job.priority, self._names_of(job), stripe,
                            create=True)
        assert entry is not None
        tree, counter = entry
        job._key = keys.insert_unique(tree, keys.make(micros, tiebreak), job)
        if job.begin_by is not None:
            job._deadline_key = keys.insert_unique(
                self._deadline_stripes[stripe],
                keys.make(clock.to_micros(job.begin_by), tiebreak), job)
        counter.change(1)
        if job._p_jar is None and self._p_jar is not None:
            # Stored in the queues' database now, as zc.async does: the
            # app may then keep the job on its own objects (of another
            # database) in this transaction, and it has its oid at once.
            self._p_jar.add(job)

    def requeue(self, job: Job,
                begin_after: Optional[datetime.datetime] = None) -> None:
        """Queue an assigned or interrupted job again, for a retry."""
        lifecycle.requeue(job, begin_after)

    def retry_failed(self, job: Job) -> Job:
        """Run a failed job again (an operator's decision): same job, new
        attempt, at the back of the queue."""
        return lifecycle.retry_failed(self, job)

    # -- removing -----------------------------------------------------

    def pull(self, index: int = 0) -> Job:
        """Remove the pending job at ``index``; it is NEW again."""
        job = self._item_at(index)[1]
        lifecycle.unqueue(self, job)
        return job

    def remove(self, job: Job) -> None:
        """Cancel a pending job; it is NEW again and out of the queue."""
        if job not in self:
            raise LookupError('%r is not pending in queue %r'
                              % (job, self.name))
        lifecycle.unqueue(self, job)

    def _take(self, job: Job, tree: Any = None) -> None:
        """Take ``job`` out of the pending trees (``tree`` if known)."""
        if tree is None:
            tree = self._tree_of(job)
            if tree is None:
                raise KeyError('%r is not pending in queue %r'
                               % (job, self.name))
        assert job._key is not None  # (it was found in a tree)
        keys.remove(tree, job._key)  # (a node rewrite per bucket, not claim)
        if job._deadline_key is not None:
            self._forget_deadline(job)
        self._counter_of(tree, job).change(-1)

    def _forget_deadline(self, job: Job) -> None:
        key, job._deadline_key = job._deadline_key, None
        if key is None:
            return
        tree = self._deadline_stripes[keys.stripe_of(key)]
        if tree.get(key) is job:
            keys.remove(tree, key)

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
        # The job is one of this queue's: a job.Job.
        return cast(Optional[Job], lifecycle.claim(self, filter, now))

    def _claimable(self, filter: Optional[Callable[[Job], bool]],
                   now: datetime.datetime, now_micros: int
                   ) -> Optional[Tuple[Job, Any]]:
        """``(job, tree)``: the job a claim takes now, or None."""
        due = keys.last_of(now_micros)
        for _, lanes in self._levels():
            best: Optional[_Found] = None  # the earliest so far
            for names, trees in lanes:
                if names and not self.quotas.allow_names(names, now_micros):
                    continue  # every job here waits for these quotas
                for tree in trees:
                    best = self._first(tree, due, best, filter, now,
                                       now_micros) or best
            if best is not None:
                return best[1], best[2]
        return None

    def _first(self, tree: Any, due: int, best: Optional[_Found],
               filter: Optional[Callable[[Job], bool]],
               now: datetime.datetime, now_micros: int) -> Optional[_Found]:
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
                continue  # its quota names changed while it was pending
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
            lane: List[Tuple[int, bytes]] = []
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
        dispatcher can wake then instead of at its next poll."""
        now_micros = clock.to_micros(now)
        after = keys.first_of(now_micros + 1)
        times: List[int] = []
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
        """Fail the jobs whose deadline passed (lifecycle.expire)."""
        return lifecycle.expire(self, now_micros)

    def _expired(self, now_micros: int) -> List[Job]:
        """The pending jobs whose deadline passed, earliest first."""
        bound = keys.first_of(now_micros)
        expired: List[Tuple[int, Job]] = []
        for tree in self._deadline_stripes:
            # Most hold no expired job: a first key costs less than items.
            if _holds_before(tree, bound):
                expired.extend(above_floor(tree, 'items', max=bound,
                                           excludemax=True))
        return [job for _, job in sorted(expired,
                                         key=operator.itemgetter(0))]

    # -- run-time control ---------------------------------------------

    #: Whether dispatchers stop claiming from this queue (pause/resume);
    #: a class default, so that queues stored before it load unpaused.
    paused = False

    def pause(self) -> None:
        """Stop every dispatcher claiming from this queue, from its next
        poll after the caller's transaction commits.  Jobs running finish;
        jobs put meanwhile, periodic ones included, wait pending."""
        if not self.paused:
            self.paused = True

    def resume(self) -> None:
        """Let dispatchers claim from this queue again at their next poll."""
        if self.paused:
            self.paused = False


def _floor_trees() -> Tuple[Any, ...]:
    return tuple(floor_tree() for _ in range(keys.STRIPES))


def _lane_of(item: Tuple[Tuple[int, Tuple[str, ...], int], Stripe]
             ) -> Tuple[int, Tuple[str, ...]]:
    """``(-priority, names)`` of an item of ``Queue._stripes``."""
    return item[0][0], item[0][1]


def _front_key(tree: Any) -> Optional[int]:
    """The first job key of ``tree``, or None: cheaper than an iterator,
    which a claim would otherwise make for every stripe, and it reads only
    the first bucket, which claims load anyway (``maxKey`` would load the
    last, the one producers change)."""
    try:
        return tree.minKey(keys.FLOOR + 1)
    except ValueError:
        return None


def _first_key(tree: Any, low: int) -> Optional[int]:
    """The first key of ``tree`` from ``low`` on, or None, without an
    iterator (next_due looks at every stripe of every lane).  A tree is
    never empty: it keeps its floor."""
    return None if tree.maxKey() < low else tree.minKey(low)


def _holds_before(tree: Any, bound: int) -> bool:
    """Whether ``tree`` holds a job whose key is below ``bound``."""
    first = _front_key(tree)
    return first is not None and first < bound
