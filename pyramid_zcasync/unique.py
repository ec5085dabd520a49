"""Unique keys: at most one job per key and queue that has not completed.

``queue.put(f, unique_key='report-42')`` returns the queue's job of that
key while it has not completed, instead of queueing a second one.  Each
queue keeps ``key -> job`` in one BTree (``Queue._unique``, this
module's: ``index``); the lifecycle calls these functions when a job is
put (``holder``, then ``hold``), when it becomes COMPLETED or is pulled
out of its queue (``free``), and before a failed job is retried
(``refuse_if_held``).

Exactly once across threads and processes, without a lock: a put that
finds no holder inserts the key into the tree's bucket for it, so two
puts of one key racing in two transactions both write that bucket, and
BTrees refuse to resolve two inserts of one key.  The second to commit
conflicts; its retry (pyramid_tm's, transact.write's) reads the tree
again, finds the first one's job and returns it.  Puts and completions
of different keys change different keys of a bucket, which BTrees
resolve.  A put that finds a holder writes nothing.  The tree keeps a
floor entry ``''`` (no key can be empty): BTrees do not resolve a
deletion of a bucket's first key against a put in that bucket, and a
completion deletes any key.

Completing a job with a key writes the tree in the transaction that
completes it; a job requeued for a retry keeps its key, as it has not
completed.
"""
from __future__ import annotations

from typing import Any, Optional, cast

import BTrees.OOBTree

from .errors import BadStatusError
from .interfaces import COMPLETED, NEW
from .shapes import JobShape, QueueShape


#: The floor entry's key, below every key a put accepts.
FLOOR = ''


def index(queue: QueueShape, create: bool = False) -> Any:
    """``queue``'s BTree of unique keys, or None.  Made with the queue,
    or by install_queues' upgrade of a queue stored before unique keys;
    else (once) by the first put with a key, which then writes the
    queue's own record."""
    tree = queue._unique
    if tree is None and create:
        tree = queue._unique = BTrees.OOBTree.OOBTree()
        tree[FLOOR] = None
    return tree


def key_to_hold(job: JobShape, unique_key: Optional[str]) -> Optional[str]:
    """The key a put of ``job`` takes, checked: the one given, else the
    job's own (a pulled or a retried job keeps it), else None."""
    key = unique_key if unique_key is not None else job.unique_key
    if key is None:
        return None
    if not isinstance(key, str):
        raise TypeError('unique_key must be a string, got %r (%s)'
                        % (key, type(key).__name__))
    if not key:
        raise ValueError('unique_key must be a non-empty string, got %r'
                         % (key,))
    return key


def holder(queue: QueueShape, key: Optional[str]) -> Optional[JobShape]:
    """The job of ``queue`` holding ``key`` that has not completed, or
    None.  A COMPLETED or NEW job recorded under it holds nothing (the
    lifecycle frees a key when its job gets there; this reads it so in
    any case)."""
    if key is None:
        return None
    tree = index(queue)
    found = None if tree is None else tree.get(key)
    if found is None or found._status in (NEW, COMPLETED):
        return None
    return cast(JobShape, found)


def hold(queue: QueueShape, job: JobShape, key: Optional[str]) -> None:
    """``job``, being queued in ``queue``, holds ``key`` (if not None)."""
    if key is not None:
        if job.unique_key != key:  # the same value stays out of the record
            job.unique_key = key
        index(queue, create=True)[key] = job


def free(job: JobShape) -> None:
    """Free the key ``job`` holds in its queue; nothing if it holds none
    (another job may hold its key since it was pulled or completed)."""
    key, queue = job.unique_key, job.queue
    tree = None if key is None or queue is None else index(queue)
    if tree is not None and tree.get(key) is job:
        del tree[key]  # not a key another job took over meanwhile


def refuse_if_held(queue: QueueShape, job: JobShape) -> None:
    """Refuse to queue again a completed ``job`` whose key another job of
    ``queue`` holds now: a put would return that one, not run this one."""
    other = holder(queue, job.unique_key)
    if other is not None and other is not job:
        raise BadStatusError(
            'cannot queue %r again: its unique key %r is held by %r, which '
            'has not completed' % (job, job.unique_key, other))
