"""Upgrading queues stored in older layouts, once, at start-up.

Queues stored before lanes kept their pending jobs in one tree
(``_pending``), those stored before stripes one tree per lane
(``_lanes``), counted by one ``_length``, and those stored before
striped deadlines one tree of deadlines (``_deadlines``).  Those stored
with 8 stripes kept each lane as one entry of ``_stripes`` (its 8 trees
and one Length) and 8 deadline trees; now each stripe of a lane is an
entry of its own, made on first use, and there are keys.STRIPES deadline
trees.  Those stored
before unique keys have no index of them (``_unique``), and those stored
before job dependencies none of the jobs waiting for theirs
(``_dependents``, deps.py).  Every claim
used to read those trees beside the striped ones; ``install_queues``
now moves their jobs into the striped trees instead (keeping their keys,
hence their order), so the claim path knows one layout.  It also gives
each queue its index of unique keys and of waiting jobs, so that the
first puts with a key or with prerequisites do not write the queue to
make them (racing there, on one record).
"""
from __future__ import annotations

from typing import Any

import BTrees.Length
import BTrees.OOBTree

from . import deps, keys, unique
from .quota import above_floor, floor_tree

#: Attributes of the older layouts.
OLD_TREES = ('_pending', '_lanes', '_length', '_deadlines')


def needs_upgrade(queue: Any) -> bool:
    """Whether ``queue`` still has trees of an older layout."""
    state = queue.__dict__
    return (any(state.get(name) is not None for name in OLD_TREES)
            or queue._stripes is None or bool(_whole_lanes(queue))
            or queue._deadline_stripes is None
            or len(queue._deadline_stripes) != keys.STRIPES
            or queue._unique is None or deps.index(queue) is None)


def _whole_lanes(queue: Any) -> list:
    """The ``_stripes`` keys of lanes stored whole (all their trees and
    one Length under ``(-priority, names)``), as before stripes were
    made one by one."""
    if queue._stripes is None:
        return []
    return [key for key in queue._stripes.keys() if len(key) == 2]


def upgrade(queue: Any) -> bool:
    """Move ``queue``'s jobs from older trees into the striped ones;
    whether anything changed (run it in a transaction that commits)."""
    queue._p_activate()
    if not needs_upgrade(queue):
        return False
    if queue._stripes is None:
        queue._stripes = BTrees.OOBTree.OOBTree()
    for key in _whole_lanes(queue):
        _split_lane(queue, key)
    old_deadlines = queue._deadline_stripes or ()
    if len(old_deadlines) != keys.STRIPES:
        queue._deadline_stripes = tuple(
            floor_tree() for _ in range(keys.STRIPES))
        for tree in old_deadlines:
            _move_deadlines(queue, tree)
    unique.index(queue, create=True)
    deps.index(queue, create=True)
    state = queue.__dict__
    old = [state.get('_pending')] + list(
        (state.get('_lanes') or {}).values())
    for tree in old:
        if tree is not None:
            _move_pending(queue, tree)
    deadlines = state.get('_deadlines')
    if deadlines is not None:
        _move_deadlines(queue, deadlines)
    for name in OLD_TREES:
        if name in state:
            delattr(queue, name)
    return True


def _move_pending(queue: Any, tree: Any) -> None:
    """Each job of ``tree`` into the stripe of its key in its own lane."""
    for key, job in list(above_floor(tree, 'items')):
        stripe, counter = queue._entry(job.priority, queue._names_of(job),
                                       keys.stripe_of(key), create=True)
        stripe[key] = job
        counter.change(1)


def _move_deadlines(queue: Any, tree: Any) -> None:
    """Each job of the deadline ``tree`` into the deadline stripe of its
    key."""
    for key, job in above_floor(tree, 'items'):
        queue._deadline_stripes[keys.stripe_of(key)][key] = job


def _split_lane(queue: Any, key: Any) -> None:
    """A lane stored whole becomes one entry per tree, its jobs left where
    they are: a million of them would take long to move.  Tree ``i`` is
    stripe ``i``; its jobs put then, whose keys may name another stripe
    now, are found by the queue's look around (Queue._tree_of,
    _counter_of), and claims take from every tree alike.  The lane's
    Length, the whole lane's count, goes with tree 0 (it was made after
    every tree of the lane, so it stays above in oid order); the others
    count from 0, going below it as their old jobs are claimed: only the
    sum, the queue's length, means anything for them."""
    negative, names = key
    *trees, length = queue._stripes[key]
    del queue._stripes[key]
    if any((negative, names, stripe) in queue._stripes
           for stripe in range(len(trees))):
        for tree in trees:  # stripes made since (not by install_queues)
            _move_pending(queue, tree)
        return
    for stripe, tree in enumerate(trees):
        counter = length if stripe == 0 else BTrees.Length.Length()
        queue._stripes[(negative, names, stripe)] = (tree, counter)
