"""The dispatcher's bookkeeping lock, held for a group of jobs, and let
go by a watcher when the group's current job turns out slow.

A group of short jobs frees their agent slots in its own transaction:
one commit for all (FileStorage's throughput is in the number of
commits).  Nothing else of the process may write that bookkeeping from
the group's start to its commit, or the commit would conflict; so the
group holds the lock throughout, as polls, pings and other workers wait.
That is right for 50 ms of short jobs and wrong for a job that turns
out slow.  The group's worker takes the lock itself; one watcher thread
per lock (a plain ``threading.Lock`` may be released by any thread)
lets it go once the group's current job has run ``stall`` seconds,
unless the group has begun its commit.  A group whose lease was let go
commits its jobs alone and leaves their slots to be freed afterwards.

One watcher for all the groups of a dispatcher, not a thread per group:
starting a thread cost every group (and so every job picked up while the
dispatcher is idle) about a tenth of a millisecond, and the lock is held
by one group at a time anyway.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class Leases:
    """Leases on ``lock`` (a ``threading.Lock``, not an RLock: the
    watcher releases it for the thread that took it).

    ``with leases.lease(running_for) as lease:`` holds ``lock`` until the
    block ends or ``running_for()`` (seconds the group's current job has
    run) reaches ``stall``; ``lease.keep()`` says whether it is still
    held, and if so keeps it to the block's end."""

    def __init__(self, lock: Any, stall: float):
        self.lock = lock
        self.stall = stall
        self._condition = threading.Condition()
        #: The lease holding the lock and not yet kept, if any.
        self._watched: Optional[Lease] = None
        self._watching = False
        self._closed = False

    def lease(self, running_for: Callable[[], float]) -> 'Lease':
        return Lease(self, running_for)

    def close(self) -> None:
        """Let the watcher end once no lease is left to watch (a lease
        taken later starts it again)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    # -- what leases tell -------------------------------------------------

    def _watch(self, lease: 'Lease') -> None:
        with self._condition:
            self._watched = lease
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._watcher, daemon=True,
                                 name='zcasync-lease').start()
            self._condition.notify_all()

    def _keep(self, lease: 'Lease') -> bool:
        with self._condition:
            if not lease.let_go:
                lease.kept = True
                if self._watched is lease:
                    self._watched = None
            return lease.kept

    def _end(self, lease: 'Lease') -> bool:
        """The lease's block ended: whether the lock is still its own."""
        with self._condition:
            if self._watched is lease:
                self._watched = None
                self._condition.notify_all()
            lease.over = True
            return not lease.let_go

    # -- the watcher's thread ---------------------------------------------

    def _watcher(self) -> None:
        with self._condition:
            while True:
                lease = self._watched
                if lease is None:
                    if self._closed:
                        self._watching = False
                        return
                    self._condition.wait()
                    continue
                left = self.stall - lease.running_for()
                if left > 0:
                    self._condition.wait(left)
                    continue
                lease.let_go = True
                self._watched = None
                self.lock.release()  # for the group's worker


class Lease:
    """One group's hold of the lock (see :class:`Leases`)."""

    def __init__(self, leases: Leases, running_for: Callable[[], float]):
        self._leases = leases
        self.running_for = running_for
        self.kept = self.let_go = self.over = False

    def __enter__(self) -> 'Lease':
        self._leases.lock.acquire()
        self._leases._watch(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._leases._end(self):
            self._leases.lock.release()

    def keep(self) -> bool:
        """True: the lock is held, and will be until the block ends."""
        return self._leases._keep(self)
