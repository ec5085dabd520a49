"""Quotas: at most ``size`` jobs naming the quota run at once, and at most
``rate[0]`` of them start in any ``rate[1]`` seconds, per queue.

A quota is shared by every dispatcher serving the queue, so it is stored
with the queue; claims acquire it and job completion releases it in the
same transactions.  Every acquisition rewrites the quota's own record (a
rate quota its record of recent starts; a size quota a counter), so two
processes claiming jobs of one quota at once conflict and one of them
claims again: the limits are exact across processes.  (The active jobs
alone, in a BTree, would not do: BTrees merge two concurrent inserts.)
Releases touch only that BTree, so a job ending never conflicts with a
claim.
"""
from __future__ import annotations

import bisect
import datetime
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

import BTrees.OOBTree
import persistent

from . import clock
from .job import Job

# FLOOR is kept in each BTree that producers and consumers change at once.
# BTrees refuse to resolve a conflict that deletes the first key of a
# bucket, and a FIFO claim always deletes the first key: with this floor
# entry in place, a put and a claim committed together resolve.
from .keys import FLOOR

#: ``(starts, seconds)``: at most ``starts`` starts in any ``seconds``.
Rate = Tuple[int, Union[float, datetime.timedelta]]


def floor_tree() -> BTrees.OOBTree.OOBTree:
    """An OOBTree holding only its floor entry."""
    tree = BTrees.OOBTree.OOBTree()
    tree[FLOOR] = None
    return tree


def above_floor(tree: Any, method: str = 'values', **bounds: Any) -> Any:
    """``tree.keys()``, ``values()`` or ``items()`` without the floor."""
    return getattr(tree, method)(min=FLOOR, excludemin=True, **bounds)


def check_size(size: Any, what: str) -> int:
    """``size`` as a non-negative int, or a ValueError naming it."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError('%s must be an integer, got %r (%s)'
                        % (what, size, type(size).__name__))
    if size < 0:
        raise ValueError('%s must be zero or more, got %r' % (what, size))
    return size


#: ``create(name)`` without a size: 1 for a plain quota (as before rate
#: limits existed), no bound on running jobs for a rate-limited one.
DEFAULT_SIZE = object()


def check_optional_size(size: Any, what: str) -> Optional[int]:
    return None if size is None else check_size(size, what)


def check_rate(rate: Any, what: str) -> Optional[Tuple[int, float]]:
    """``rate`` as ``(starts, seconds)``, or an error naming it."""
    if rate is None:
        return None
    if not isinstance(rate, (tuple, list)) or len(rate) != 2:
        raise TypeError('%s must be (starts, seconds), e.g. (10, 60) for '
                        '10 starts a minute, got %r' % (what, rate))
    starts, seconds = rate
    if isinstance(starts, bool) or not isinstance(starts, int):
        raise TypeError('%s starts must be an integer, got %r (%s)'
                        % (what, starts, type(starts).__name__))
    if starts < 1:
        raise ValueError('%s starts must be 1 or more, got %r (a size 0 '
                         'quota pauses its jobs)' % (what, starts))
    if isinstance(seconds, datetime.timedelta):
        seconds = seconds.total_seconds()
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError('%s seconds must be a number or a timedelta, got '
                        '%r (%s)' % (what, seconds, type(seconds).__name__))
    if not seconds * 1e6 >= 1 or seconds == float('inf'):
        raise ValueError('%s seconds must be a finite time of at least '
                         '1 microsecond, got %r' % (what, seconds))
    return (starts, seconds)


class Quota(persistent.Persistent):
    """At most ``size`` running jobs (None: no bound) and, with ``rate =
    (starts, seconds)``, at most ``starts`` starts in any ``seconds``."""

    # Quotas stored before rate limits existed have neither.
    _rate = None
    #: Start times (µs) of the last ``rate[0]`` claims, oldest first:
    #: trimmed to the window on every claim, so bounded by ``rate[0]``.
    _starts: tuple = ()
    #: Counts acquisitions of a quota without a rate: writing it makes two
    #: concurrent claims of this quota conflict (see the module doc).
    _acquired = 0

    def __init__(self, name: str, size: Optional[int] = 1,
                 rate: Optional[Rate] = None):
        self.name = name
        self.size = check_optional_size(size, 'quota %r size' % name)
        self.rate = rate
        if self.size is None and self.rate is None:
            raise ValueError('quota %r limits nothing: give it a size, a '
                             'rate, or both' % name)
        self._active = floor_tree()

    @property
    def rate(self) -> Optional[Tuple[int, float]]:
        """``(starts, seconds)``, or None for no rate limit."""
        return self._rate

    @rate.setter
    def rate(self, value: Optional[Rate]) -> None:
        self._rate = check_rate(value, 'quota %r rate' % self.name)

    def __len__(self) -> int:
        return len(self._active) - 1

    def __iter__(self) -> Iterator[Job]:
        return iter(above_floor(self._active))

    def __contains__(self, job: object) -> bool:
        return self._active.get(getattr(job, '_key', FLOOR)) is job

    @property
    def filled(self) -> bool:
        """No room for another running job (the size, not the rate)."""
        return self.size is not None and len(self) >= self.size

    # -- rate ---------------------------------------------------------

    def _window(self, now_micros: int) -> tuple:
        """Start times still inside the rate window at ``now_micros``."""
        rate = self._rate
        if rate is None or not self._starts:
            return ()
        starts = self._starts
        first = bisect.bisect_right(starts,
                                    now_micros - round(rate[1] * 1e6))
        return starts[first:]

    def rate_allows(self, now_micros: int) -> bool:
        rate = self._rate
        return rate is None or len(self._window(now_micros)) < rate[0]

    def allows(self, now_micros: int) -> bool:
        """Room for one more start at ``now_micros``: size and rate."""
        return not self.filled and self.rate_allows(now_micros)

    def recent_starts(self, now: Optional[datetime.datetime] = None
                      ) -> list:
        """Start times inside the rate window at ``now``, oldest first."""
        now_micros = clock.to_micros(now or clock.utcnow())
        return [clock.from_micros(m) for m in self._window(now_micros)]

    def next_allowed(self, now: Optional[datetime.datetime] = None
                     ) -> Optional[datetime.datetime]:
        """When the rate next allows a start, if it allows none at ``now``
        (None: it allows one now, or there is no rate).  A dispatcher can
        wake then; ``Queue.next_due`` includes it for held jobs."""
        now_micros = clock.to_micros(now or clock.utcnow())
        micros = self._next_allowed_micros(now_micros)
        return None if micros is None else clock.from_micros(micros)

    def _next_allowed_micros(self, now_micros: int) -> Optional[int]:
        rate = self._rate
        if rate is None:
            return None
        window = self._window(now_micros)
        if len(window) < rate[0]:
            return None
        # The window must lose len - starts + 1 entries to admit one more.
        return window[len(window) - rate[0]] + round(rate[1] * 1e6)

    # -- acquiring ----------------------------------------------------

    def acquire(self, job: Job, now_micros: Optional[int] = None) -> None:
        self._active[job._key] = job
        rate = self._rate
        if rate is None:
            self._acquired += 1  # rewrites this record: see module doc
            return
        if now_micros is None:
            now_micros = clock.to_micros(clock.utcnow())
        starts = list(self._window(now_micros))
        bisect.insort(starts, now_micros)
        self._starts = tuple(starts[-rate[0]:])

    def release(self, job: Job) -> None:
        self._active.pop(job._key, None)

    def __repr__(self) -> str:
        size = '-' if self.size is None else self.size
        rate = '' if self._rate is None else ' rate %d/%gs' % self._rate
        return '<Quota %r %d/%s%s>' % (self.name, len(self), size, rate)


class Quotas(persistent.Persistent):
    """The quotas of one queue, by name."""

    def __init__(self) -> None:
        self._quotas = BTrees.OOBTree.OOBTree()

    def create(self, name: str, size: Any = DEFAULT_SIZE,
               rate: Optional[Rate] = None) -> Quota:
        """A quota of at most ``size`` running jobs (None: no bound; 1
        unless given, or no bound when ``rate`` is given) and, with
        ``rate=(starts, seconds)``, at most ``starts`` starts in any
        ``seconds`` (a float, or a timedelta)."""
        if not isinstance(name, str) or not name:
            raise ValueError('a quota name must be a non-empty string, '
                             'got %r' % (name,))
        if name in self._quotas:
            raise KeyError('quota %r already exists' % name)
        if size is DEFAULT_SIZE:
            size = 1 if rate is None else None
        quota = Quota(name, size, rate)
        self._quotas[name] = quota
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

    def get(self, name: str, default: Optional[Quota] = None
            ) -> Optional[Quota]:
        return self._quotas.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._quotas

    def __iter__(self) -> Iterator[str]:
        return iter(self._quotas.keys())

    def __len__(self) -> int:
        return len(self._quotas)

    def values(self) -> Iterable[Quota]:
        return self._quotas.values()

    def check_names(self, names: Iterable[str]) -> None:
        unknown = [name for name in names if name not in self._quotas]
        if unknown:
            raise ValueError('unknown quota name(s) %s; create them with '
                             'queue.quotas.create(name, size); known: %s'
                             % (unknown, sorted(self._quotas) or 'none'))

    def _named(self, names: Iterable[str]) -> List[Quota]:
        """The quotas of these names that exist (a removed quota limits
        nothing)."""
        return [quota for quota in map(self._quotas.get, names)
                if quota is not None]

    def allow(self, job: Job, now: Optional[datetime.datetime] = None
              ) -> bool:
        """Whether ``job``'s quotas have room for it to start at ``now``."""
        return self.allow_names(job.quota_names, _micros(now))

    def allow_names(self, names: Iterable[str], now_micros: int) -> bool:
        return all(quota.allows(now_micros) for quota in self._named(names))

    def next_allowed(self, names: Iterable[str], now_micros: int
                     ) -> Optional[int]:
        """When the rates of these quotas next allow a start (µs), if one
        of them allows none at ``now_micros``; else None."""
        reopenings = [quota._next_allowed_micros(now_micros)
                      for quota in self._named(names)]
        times = [t for t in reopenings if t is not None]
        return max(times) if times else None

    def acquire(self, job: Job, now: Optional[datetime.datetime] = None
                ) -> None:
        now_micros = _micros(now)
        for quota in self._named(job.quota_names):
            quota.acquire(job, now_micros)

    def release(self, job: Job) -> None:
        for name in job.quota_names:
            quota = self._quotas.get(name)
            if quota is not None:
                quota.release(job)


def _micros(now: Optional[datetime.datetime]) -> int:
    return clock.to_micros(clock.aware_utc(now, 'now') or clock.utcnow())
