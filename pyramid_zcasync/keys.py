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

#: A key below every job key: trees keep it as their first entry, so that
#: removing the first job never removes a bucket's first key (BTrees
#: cannot resolve that conflict).
FLOOR = -1

_TIE_BITS = 32
_TIE_MASK = (1 << _TIE_BITS) - 1
#: Orders keys made in the same microsecond by this process.
_sequence = itertools.count(int.from_bytes(os.urandom(2), 'big') << 16)


def new_tiebreak() -> int:
    return next(_sequence) & _TIE_MASK


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


def insert_unique(tree, key: int, value) -> int:
    """``tree[key] = value`` at ``key`` or, taken, the next free key."""
    while key in tree:
        key += 1
    tree[key] = value
    return key
