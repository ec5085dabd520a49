"""Job dependencies: ``queue.put(f, after=[job_a, job_b])`` waits for its
prerequisites without any scan.

A job put with prerequisites that have not all completed is *waiting*:
PENDING, in its queue, but held here instead of in the queue's claimable
lanes, so no claim ever reads it.  Its prerequisites wake it: each
prerequisite's queue keeps ``prerequisite oid -> waiting jobs`` in one
BTree (``Dependents.waiting``), which the put writes and the
prerequisite's completion reads and clears (``released_by``), in the
transaction that completes it (a dispatcher's run: in the short one after
it, ``lifecycle.release``).  lifecycle.py decides what happens to a
released job (queued once every prerequisite succeeded, failed with
DependencyFailed when one did not); this module keeps the books.

Why nothing is ever left waiting across processes, without locks, and
why no prerequisite runs twice for it (a conflict in the transaction of
a job's run runs it again):

- Two puts naming one prerequisite change the same key of the BTree:
  BTrees refuse to resolve that, one conflicts and its retry reads the
  other's entry.  Puts naming different prerequisites change different
  keys, which BTrees resolve.  The tree keeps a floor entry (``FLOOR``):
  BTrees do not resolve a deletion of a bucket's first key against an
  insert in that bucket, and completions delete keys.
- A put racing the completion of its prerequisite.  The put marks the
  prerequisite *read current* (``Connection.readCurrent``): if the
  completion commits first, the put conflicts, and its retry sees the
  prerequisite completed.  The put never writes the prerequisite, which
  may be running.  If the put commits first, the completion must
  conflict instead: it marks one of its queue's
  ``Dependents.generations`` read current, which each put bumps (the
  one of its prerequisite's oid; Lengths, so that puts do not conflict
  with each other there).  A counter is shared by many oids, and a
  dispatcher's run must not conflict for an unrelated put (that would
  run it again): so a run (``lifecycle.finish``) leaves its job's
  dependents to ``lifecycle.release``, which the dispatcher runs after
  it in a short transaction of its own (recovery, after a crash), where
  a conflict only retries that transaction.  A group of short jobs
  releases them in its own transaction: a conflict there runs each
  alone, as any conflict of a group does.
- Two prerequisites of one job completing at once each see the other
  unfinished.  A completion does not write the waiting job then (the
  two would conflict): it queues a small job (lifecycle.settle_waiting)
  that decides once it committed.  The last of them to commit either
  sees all done, or queues such a job, which runs after it committed
  and sees all done.  Two failing at once both fail the job: one
  conflicts, rarely.

A queue stored before dependencies has no ``Dependents`` until
``install_queues`` (layout.upgrade) or the first put with prerequisites
makes it; a completion in such a queue marks the queue's own record read
current instead, which that first put writes.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import BTrees.Length
import BTrees.OOBTree
import persistent

from .errors import DependencyFailed
from .failure import Failure
from .interfaces import COMPLETED, IJob
from .shapes import JobShape, QueueShape

#: The floor entry's key, below every oid.
FLOOR = b''
#: How many generation counters a queue keeps: a completion conflicts
#: with a concurrent put only when the two oids share a counter.
GENERATIONS = 32
#: The queue attribute holding its Dependents (None on older queues).
QUEUE_ATTRIBUTE = '_dependents'
#: The job attribute holding, while it waits, the prerequisites it still
#: waits for (absent from the records of jobs that never waited).
JOB_ATTRIBUTE = '_waiting_on'


class Dependents(persistent.Persistent):
    """A queue's waiting jobs, by the prerequisites of this queue that
    they wait for."""

    def __init__(self) -> None:
        #: prerequisite oid -> tuple of the jobs waiting for it.
        self.waiting = BTrees.OOBTree.OOBTree()
        self.waiting[FLOOR] = ()
        #: Bumped by each put naming a prerequisite whose oid maps there.
        self.generations = tuple(BTrees.Length.Length()
                                 for _ in range(GENERATIONS))
        #: How many jobs of this queue wait (a job waits in its own queue,
        #: whichever queues its prerequisites are in).
        self.count = BTrees.Length.Length()


def index(queue: QueueShape, create: bool = False) -> Optional[Dependents]:
    """``queue``'s Dependents, or None.  Made by install_queues (layout.py)
    or by the first put with prerequisites (which then writes the queue's
    own record)."""
    found: Optional[Dependents] = getattr(queue, QUEUE_ATTRIBUTE, None)
    if found is None and create:
        found = Dependents()
        setattr(queue, QUEUE_ATTRIBUTE, found)
    return found


# -- reading ------------------------------------------------------------

def is_waiting(job: JobShape) -> bool:
    """Whether ``job`` waits for prerequisites (PENDING, out of the
    claimable lanes)."""
    return bool(getattr(job, JOB_ATTRIBUTE, ()))


def waiting_for(job: Any) -> Tuple[Any, ...]:
    """The prerequisites ``job`` waits for that have not succeeded yet;
    empty once it was queued or completed.  For views and the command
    line."""
    return tuple(prerequisite for prerequisite
                 in getattr(job, JOB_ATTRIBUTE, ())
                 if not succeeded(prerequisite))


def waiting_count(queue: Any) -> int:
    """How many of ``queue``'s jobs wait for prerequisites (``len(queue)``
    counts the claimable ones only)."""
    found = index(queue)
    return 0 if found is None else int(found.count())


def waiting_jobs(queue: Any) -> List[Any]:
    """``queue``'s jobs waiting for prerequisites, each once, for admin
    listings: read from the indexes of every queue of its Queues (a
    prerequisite may be in another queue), never from the jobs."""
    queues = queue.parent.values() if queue.parent is not None else [queue]
    seen: Dict[int, Any] = {}
    for book in filter(None, map(index, queues)):
        for dependents in book.waiting.values():
            for job in dependents:
                if job.queue is queue and is_waiting(job):
                    seen.setdefault(id(job), job)
    return list(seen.values())


def succeeded(job: JobShape) -> bool:
    return job._status == COMPLETED and not isinstance(job._result, Failure)


def failed(job: JobShape) -> bool:
    return job._status == COMPLETED and isinstance(job._result, Failure)


def failure_of(prerequisite: JobShape) -> DependencyFailed:
    """The exception ending a job whose ``prerequisite`` failed, was
    cancelled or expired: it names the prerequisite and its failure."""
    result = prerequisite._result
    return DependencyFailed('prerequisite %s %s failed: %s: %s' % (
        prerequisite._oid_repr(), _callable_name(prerequisite),
        result.type_name, result.message.split('\n', 1)[0]))


def _callable_name(job: Any) -> str:
    func = getattr(job, 'callable', None)
    return getattr(func, '__qualname__', None) or repr(func)


# -- the put ------------------------------------------------------------

def check_after(queue: QueueShape, job: JobShape, after: Any
                ) -> Tuple[JobShape, ...]:
    """The prerequisites ``after`` names, each as loaded by ``queue``'s
    connection; refused, naming the value, unless each is a job put in a
    queue of ``queue``'s database (in this transaction or before)."""
    if after is None:
        return ()
    if isinstance(after, (str, bytes)) or IJob.providedBy(after):
        raise TypeError('after must be an iterable of jobs, got %r' % (after,))
    try:
        values = list(after)
    except TypeError:
        raise TypeError('after must be an iterable of jobs, got %r (%s)'
                        % (after, type(after).__name__)) from None
    prerequisites: List[JobShape] = []
    for value in values:
        if value is job:
            raise ValueError('a job cannot wait for itself: %r' % (value,))
        found = _own_copy(queue, value)
        if all(found is not seen for seen in prerequisites):
            prerequisites.append(found)
    return tuple(prerequisites)


def _own_copy(queue: QueueShape, value: Any) -> JobShape:
    """``value``, a job, as loaded by ``queue``'s connection."""
    if not IJob.providedBy(value):
        raise TypeError('after takes jobs, got %r (%s)'
                        % (value, type(value).__name__))
    jar, here = value._p_jar, queue._p_jar
    if jar is None or value._p_oid is None or here is None:
        raise ValueError('after takes jobs put in a queue of a database; '
                         '%r is not stored' % (value,))
    if value.queue is None and value._status != COMPLETED:
        raise ValueError('after takes jobs put in a queue; %r was not put'
                         % (value,))
    if jar is here:
        return value
    theirs, ours = jar.db().database_name, here.db().database_name
    if theirs != ours:
        raise ValueError('after takes jobs of the queue\'s own database '
                         '%r; %r is in database %r' % (ours, value, theirs))
    found: JobShape = here.get(value._p_oid)
    return found


def hold(queue: QueueShape, job: JobShape,
         prerequisites: Tuple[JobShape, ...]) -> None:
    """``job``, PENDING in ``queue`` but out of its lanes, waits for each
    of ``prerequisites`` (none completed yet)."""
    setattr(job, JOB_ATTRIBUTE, prerequisites)
    for prerequisite in prerequisites:
        # Its completion, committed first, makes this put conflict (it
        # was loaded: check_after's caller read its status).
        prerequisite._p_jar.readCurrent(prerequisite)
        book = _book_of(prerequisite)
        oid = prerequisite._p_oid
        assert oid is not None  # check_after took stored jobs only
        book.waiting[oid] = book.waiting.get(oid, ()) + (job,)
        _generation(book, oid).change(1)
    own = index(queue, create=True)
    assert own is not None
    own.count.change(1)


def _book_of(prerequisite: JobShape) -> Dependents:
    book = index(prerequisite.queue, create=True)
    assert book is not None
    return book


def _generation(book: Dependents, oid: bytes) -> Any:
    return book.generations[int.from_bytes(oid, 'big') % GENERATIONS]


# -- a completion -------------------------------------------------------

def released_by(prerequisite: JobShape) -> Iterator[JobShape]:
    """The jobs still waiting for ``prerequisite``, which has just
    completed, now out of its queue's index: the caller queues or fails
    each of them in this transaction.  Each is checked as it comes, as
    failing one may fail the next (a job waiting for it too).  A put
    naming ``prerequisite`` that commits first makes this transaction
    conflict (see the module's docstring)."""
    queue, oid = prerequisite.queue, prerequisite._p_oid
    jar = None if queue is None else queue._p_jar
    if jar is None or oid is None:
        return iter(())  # never stored: no put could name it
    book = index(queue)
    if book is None:
        jar.readCurrent(queue)  # the first put with prerequisites writes it
        return iter(())
    counter = _generation(book, oid)
    if counter._p_jar is jar:
        counter._p_activate()  # a ghost's serial is unknown
        jar.readCurrent(counter)  # a put that committed first conflicts
    dependents = book.waiting.get(oid)
    if dependents is None:
        return iter(())
    del book.waiting[oid]
    return (job for job in dependents if is_waiting(job))


def verdict(job: JobShape) -> Tuple[Optional[JobShape], bool]:
    """``(failed prerequisite or None, still waiting)`` of a job, as this
    transaction sees its prerequisites (writing nothing: two of them may
    be completing at once, each seeing the other unfinished)."""
    remaining = False
    for prerequisite in getattr(job, JOB_ATTRIBUTE, ()):
        if failed(prerequisite):
            return prerequisite, False
        remaining = remaining or not succeeded(prerequisite)
    return None, remaining


def forget(job: JobShape) -> None:
    """``job`` waits no more (it is being queued, or it completes): its
    queue counts it no longer.  Nothing if it was not waiting.  Entries
    of other prerequisites naming it are dropped when they complete."""
    if not is_waiting(job):
        return
    delattr(job, JOB_ATTRIBUTE)
    book = index(job.queue) if job.queue is not None else None
    if book is not None:
        book.count.change(-1)


def first_failed(prerequisites: Iterable[JobShape]) -> Optional[JobShape]:
    for prerequisite in prerequisites:
        if failed(prerequisite):
            return prerequisite
    return None


def unfinished(prerequisites: Iterable[JobShape]
               ) -> Tuple[JobShape, ...]:
    return tuple(job for job in prerequisites if job._status != COMPLETED)
