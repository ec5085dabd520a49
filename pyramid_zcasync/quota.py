"""Quotas: at most ``size`` jobs naming the quota run at once, per queue.

A quota is shared by every dispatcher serving the queue, so it is stored
with the queue; claims acquire it and job completion releases it in the
same transactions, which makes the limit exact across processes.
"""
from __future__ import annotations

import BTrees.OOBTree
import persistent

# FLOOR is kept in each BTree that producers and consumers change at once.
# BTrees refuse to resolve a conflict that deletes the first key of a
# bucket, and a FIFO claim always deletes the first key: with this floor
# entry in place, a put and a claim committed together resolve.
from .keys import FLOOR


def floor_tree() -> BTrees.OOBTree.OOBTree:
    """An OOBTree holding only its floor entry."""
    tree = BTrees.OOBTree.OOBTree()
    tree[FLOOR] = None
    return tree


def above_floor(tree, method: str = 'values', **bounds):
    """``tree.keys()``, ``values()`` or ``items()`` without the floor."""
    return getattr(tree, method)(min=FLOOR, excludemin=True, **bounds)


def check_size(size, what: str) -> int:
    """``size`` as a non-negative int, or a ValueError naming it."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError('%s must be an integer, got %r (%s)'
                        % (what, size, type(size).__name__))
    if size < 0:
        raise ValueError('%s must be zero or more, got %r' % (what, size))
    return size


class Quota(persistent.Persistent):

    def __init__(self, name: str, size: int):
        self.name = name
        self.size = check_size(size, 'quota %r size' % name)
        self._active = floor_tree()

    def __len__(self) -> int:
        return len(self._active) - 1

    def __iter__(self):
        return iter(above_floor(self._active))

    def __contains__(self, job) -> bool:
        return self._active.get(getattr(job, '_key', FLOOR)) is job

    @property
    def filled(self) -> bool:
        return len(self) >= self.size

    def acquire(self, job) -> None:
        self._active[job._key] = job

    def release(self, job) -> None:
        self._active.pop(job._key, None)

    def __repr__(self):
        return '<Quota %r %d/%d>' % (self.name, len(self), self.size)


class Quotas(persistent.Persistent):
    """The quotas of one queue, by name."""

    def __init__(self):
        self._quotas = BTrees.OOBTree.OOBTree()

    def create(self, name: str, size: int = 1) -> Quota:
        if not isinstance(name, str) or not name:
            raise ValueError('a quota name must be a non-empty string, '
                             'got %r' % (name,))
        if name in self._quotas:
            raise KeyError('quota %r already exists' % name)
        quota = self._quotas[name] = Quota(name, size)
        return quota

    def remove(self, name: str) -> None:
        quota = self[name]
        if len(quota):
            raise ValueError('quota %r still has %d active jobs'
                             % (name, len(quota)))
        del self._quotas[name]

    def __getitem__(self, name: str) -> Quota:
        try:
            return self._quotas[name]
        except KeyError:
            raise KeyError('unknown quota %r; known: %s'
                           % (name, sorted(self._quotas) or 'none')) from None

    def get(self, name, default=None):
        return self._quotas.get(name, default)

    def __contains__(self, name) -> bool:
        return name in self._quotas

    def __iter__(self):
        return iter(self._quotas.keys())

    def __len__(self) -> int:
        return len(self._quotas)

    def values(self):
        return self._quotas.values()

    def check_names(self, names) -> None:
        unknown = [name for name in names if name not in self._quotas]
        if unknown:
            raise ValueError('unknown quota name(s) %s; create them with '
                             'queue.quotas.create(name, size); known: %s'
                             % (unknown, sorted(self._quotas) or 'none'))

    def _named(self, job):
        """The job's quotas that exist (a removed quota limits nothing)."""
        return [quota for quota in map(self._quotas.get, job.quota_names)
                if quota is not None]

    def allow(self, job) -> bool:
        return not any(quota.filled for quota in self._named(job))

    def acquire(self, job) -> None:
        for quota in self._named(job):
            quota.acquire(job)

    def release(self, job) -> None:
        for name in job.quota_names:
            quota = self._quotas.get(name)
            if quota is not None:
                quota.release(job)
