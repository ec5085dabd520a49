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
import time
from typing import Any, Dict, Iterator, Set

#: A key below every job key: trees keep it as their first entry, so that
#: removing the first job never removes a bucket's first key (BTrees
#: cannot resolve that conflict).
FLOOR = -1

_TIE_BITS = 32
_TIE_MASK = (1 << _TIE_BITS) - 1
STRIPE_BITS = 4
#: Trees per lane (queue.py), made on first use: as many as the threads
#: of a busy web process (16), so that each of its putting transactions
#: has a tree of its own (two in one tree conflict whenever one splits
#: the bucket both append to); a claim looks only at the trees made.
STRIPES = 1 << STRIPE_BITS
_STRIPE_MASK = STRIPES - 1


def _random(size: int) -> int:
    return int.from_bytes(os.urandom(size), 'big')


_sequence: Iterator[int]
_next_stripe: Iterator[int]
_local: threading.local
#: Thread ident -> that thread's last transaction that put jobs.
_puts: Dict[int, '_Put']
#: Guards ``_puts``; notified when a transaction stops putting.
_freed: threading.Condition


class _Put:
    """A transaction putting jobs into ``stripe``; ``open`` until it
    commits, fails to commit or aborts."""

    __slots__ = ('stripe', 'txn_id', 'open')

    def __init__(self, stripe: int, txn_id: int) -> None:
        self.stripe = stripe
        self.txn_id = txn_id
        self.open = True


def _seed() -> None:
    """Fresh counters, also in each forked child: children of one parent
    (a preforking server) would otherwise pick the same stripes and
    tiebreaks in the same order."""
    global _sequence, _next_stripe, _local, _puts, _freed
    #: Orders keys made in the same microsecond by this process.
    _sequence = itertools.count(_random(2) << 13)
    _next_stripe = itertools.count(_random(1))
    _local = threading.local()
    _puts = {}
    _freed = threading.Condition()


_seed()
os.register_at_fork(after_in_child=_seed)


#: Seconds a transaction starting to put waits for a stripe that no
#: other transaction of this process is putting into, when all are: a
#: conflict costs the whole request again, a short wait much less.
STRIPE_WAIT = 0.05


def local_stripe() -> int:
    """The stripe this thread puts into.  Each thread keeps one, drawn in
    turns from a random start (so processes likely differ); all jobs of
    one transaction share it.  A transaction starting to put avoids the
    stripes of this process's other transactions still putting: two
    transactions appending to one tree conflict whenever one splits the
    bucket both append to (one put in ten with 16 threads and 8 stripes),
    while transactions that take turns in a stripe never meet.  With
    every stripe taken it waits up to STRIPE_WAIT for one, then shares."""
    stripe = getattr(_local, 'stripe', None)
    if stripe is None:
        stripe = _local.stripe = next(_next_stripe) & _STRIPE_MASK
    mine = _puts.get(threading.get_ident())
    if mine is not None and mine.open:
        return stripe
    with _freed:
        give_up = time.monotonic() + STRIPE_WAIT
        while True:
            busy = _stripes_putting()
            if stripe not in busy:
                return stripe
            free = [s for s in range(STRIPES) if s not in busy]
            if free:
                stripe = _local.stripe = random.choice(free)
                return stripe
            left = give_up - time.monotonic()
            if left <= 0:
                return stripe
            _freed.wait(left)


def _stripes_putting() -> Set[int]:
    """The stripes of the other threads' open transactions (the caller
    holds ``_freed``)."""
    me = threading.get_ident()
    return {put.stripe for ident, put in _puts.items()
            if put.open and ident != me}


def move_on_failed_commit(txn: Any) -> None:
    """Hold this thread's stripe until ``txn``, which puts into it, ends
    (see local_stripe), and move the thread to another stripe if ``txn``
    fails to commit.  That is mostly a conflict with a producer sharing
    the stripe (another process, or more threads than stripes): apps
    retry at once, so the two would keep meeting there."""
    ident = threading.get_ident()
    mine = _puts.get(ident)
    if mine is not None and mine.open and mine.txn_id == id(txn):
        return
    stripe = getattr(_local, 'stripe', None)  # what local_stripe gave
    put = _Put(local_stripe() if stripe is None else stripe, id(txn))
    with _freed:
        _puts[ident] = put
    txn.addAfterCommitHook(_committed, (put,))
    txn.addAfterAbortHook(_aborted, (put,))


def _committed(committed: bool, put: _Put) -> None:
    _aborted(put)
    if not committed:
        _local.stripe = (put.stripe + random.randrange(1, STRIPES)
                         ) % STRIPES


def _aborted(put: _Put) -> None:
    with _freed:
        put.open = False
        _freed.notify_all()


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
