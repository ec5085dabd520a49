"""Upgrading queues stored in older layouts, once, at start-up.

Queues stored before lanes kept their pending jobs in one tree
(``_pending``), those stored before stripes one tree per lane
(``_lanes``), counted by one ``_length``, and those stored before
striped deadlines one tree of deadlines (``_deadlines``); those stored
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

import BTrees.OOBTree

from . import deps, keys, unique
from .quota import above_floor, floor_tree

#: Attributes of the older layouts.
OLD_TREES = ('_pending', '_lanes', '_length', '_deadlines')


def needs_upgrade(queue: Any) -> bool:
    """Whether ``queue`` still has trees of an older layout."""
    state = queue.__dict__
    return (any(state.get(name) is not None for name in OLD_TREES)
            or queue._stripes is None or queue._deadline_stripes is None
            or queue._unique is None or deps.index(queue) is None)


def upgrade(queue: Any) -> bool:
    """Move ``queue``'s jobs from older trees into the striped ones;
    whether anything changed (run it in a transaction that commits)."""
    queue._p_activate()
    if not needs_upgrade(queue):
        return False
    if queue._stripes is None:
        queue._stripes = BTrees.OOBTree.OOBTree()
    if queue._deadline_stripes is None:
        queue._deadline_stripes = tuple(
            floor_tree() for _ in range(keys.STRIPES))
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
        for key, job in above_floor(deadlines, 'items'):
            queue._deadline_stripes[keys.stripe_of(key)][key] = job
    for name in OLD_TREES:
        if name in state:
            delattr(queue, name)
    return True


def _move_pending(queue: Any, tree: Any) -> None:
    """Each job of ``tree`` into the stripe of its key in its own lane."""
    for key, job in list(above_floor(tree, 'items')):
        lane = queue._lane(job.priority, queue._names_of(job), create=True)
        lane[keys.stripe_of(key)][key] = job
        lane[keys.STRIPES].change(1)
