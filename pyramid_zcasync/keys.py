"""BTree keys for jobs: one integer, ordered by time, unique.

A key is ``micros << 32 | tiebreak``: the time in microseconds since the
epoch (when the job is due, or its deadline, or when it ended) and 32
bits that tell apart jobs of the same microsecond.  One integer instead
of a tuple pickles as one object instead of four: a put or a claim of
many jobs rewrites many BTree buckets full of keys.
"""
from __future__ import annotations

import itertools
import os
import random
import threading
from typing import Any, Iterator

#: A key below every job key: trees keep it as their first entry, so that
#: removing the first job never removes a bucket's first key (BTrees
#: cannot resolve that conflict).
FLOOR = -1

_TIE_BITS = 32
_TIE_MASK = (1 << _TIE_BITS) - 1
STRIPE_BITS = 3
#: Trees per lane (queue.py): more than the producers that usually put at
#: once, few enough that a claim's look at each tree's front stays cheap.
STRIPES = 1 << STRIPE_BITS
_STRIPE_MASK = STRIPES - 1


def _random(size: int) -> int:
    return int.from_bytes(os.urandom(size), 'big')


_sequence: Iterator[int]
_next_stripe: Iterator[int]
_local: threading.local


def _seed() -> None:
    """Fresh counters, also in each forked child: children of one parent
    (a preforking server) would otherwise pick the same stripes and
    tiebreaks in the same order."""
    global _sequence, _next_stripe, _local
    #: Orders keys made in the same microsecond by this process.
    _sequence = itertools.count(_random(2) << 13)
    _next_stripe = itertools.count(_random(1))
    _local = threading.local()


_seed()
os.register_at_fork(after_in_child=_seed)


def local_stripe() -> int:
    """This thread's stripe.  The threads of a process take turns from a
    random start, so up to STRIPES threads never share one (a waitress
    thread puts one request's jobs at a time) and processes likely
    differ; all jobs of one transaction share a tree, as before."""
    stripe = getattr(_local, 'stripe', None)
    if stripe is None:
        stripe = _local.stripe = next(_next_stripe) & _STRIPE_MASK
    return stripe


def move_on_failed_commit(txn: Any) -> None:
    """Move this thread to another stripe if ``txn``, which puts in its
    stripe, fails to commit.  That is mostly a conflict with a producer
    sharing the stripe (more threads than stripes, or processes that drew
    the same): apps retry at once, so the two would keep meeting there."""
    if getattr(_local, 'watched', None) == id(txn):
        return
    _local.watched = id(txn)
    txn.addAfterCommitHook(_move_unless_committed)


def _move_unless_committed(committed: bool) -> None:
    if not committed:
        _local.stripe = (local_stripe() + random.randrange(1, STRIPES)
                         ) % STRIPES


def new_tiebreak(stripe: int = 0) -> int:
    """A tiebreak in ``stripe``, after this process's previous ones."""
    return ((next(_sequence) << STRIPE_BITS) | stripe) & _TIE_MASK


def stripe_of(key: int) -> int:
    return key & _STRIPE_MASK


def make(micros: int, tiebreak: int) -> int:
    return (micros << _TIE_BITS) | (tiebreak & _TIE_MASK)


def micros_of(key: int) -> int:
    return key >> _TIE_BITS


def tiebreak_of(key: int) -> int:
    return key & _TIE_MASK


def first_of(micros: int) -> int:
    """The smallest key of that microsecond."""
    return micros << _TIE_BITS


def last_of(micros: int) -> int:
    """The largest key of that microsecond."""
    return (micros << _TIE_BITS) | _TIE_MASK


def insert_unique(tree: Any, key: int, value: Any) -> int:
    """``tree[key] = value`` at ``key`` or, taken, the next free key of
    the same stripe."""
    while key in tree:
        key += STRIPES
    tree[key] = value
    return key


def remove(tree: Any, key: int) -> Any:
    """``del tree[key]`` (returning its value) without rewriting the
    tree's nodes at each claim.

    A BTree node keeps the first key of each of its buckets but the
    first; deleting that key rewrites the node (thousands of bytes in a
    big queue, and a conflict no resolution can merge with a producer's
    split).  FLOOR shields the first bucket's front; once the claims have
    emptied that bucket down to FLOOR, the next jobs are at the front of
    the second bucket, whose first key is in the node.  So FLOOR moves
    there first: the empty bucket goes (one node rewrite per bucket of
    claims, not one per claim) and the job is again behind FLOOR."""
    first = tree._firstbucket
    if (key != FLOOR and first is not None and len(first) == 1
            and first.minKey() == FLOOR and first._next is not None):
        floor_value = tree[FLOOR]
        del tree[FLOOR]
        tree[FLOOR] = floor_value
    value = tree[key]
    del tree[key]
    return value
