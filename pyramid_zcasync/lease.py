"""The dispatcher's bookkeeping lock, held for a group of jobs by a
thread of its own, so that it can be let go while the group still runs.

A group of short jobs frees their agent slots in its own transaction:
one commit for all (FileStorage's throughput is in the number of
commits).  Nothing else of the process may write that bookkeeping from
the group's start to its commit, or the commit would conflict; so the
group holds the lock throughout, as polls, pings and other workers wait.
That is right for 50 ms of short jobs and wrong for a job that turns
out slow.  A lock is released by the thread that took it: hence a keeper
thread takes it for the group and lets it go once the group's current
job has run ``stall`` seconds, unless the group has begun its commit.
A group whose lease was let go commits its jobs alone and leaves their
slots to be freed afterwards.
"""
from __future__ import annotations

import threading
from typing import Any, Callable


class Lease:
    """``with Lease(lock, running_for, stall) as lease:`` holds ``lock``
    until the block ends or ``running_for()`` (seconds the group's
    current job has run) reaches ``stall``; ``lease.keep()`` says
    whether it is still held, and if so keeps it to the block's end."""

    def __init__(self, lock: Any, running_for: Callable[[], float],
                 stall: float):
        self._lock = lock
        self._running_for = running_for
        self._stall = stall
        self._condition = threading.Condition()
        self._held = self._kept = self._let_go = self._over = False
        self._keeper = threading.Thread(target=self._hold, daemon=True,
                                        name='zcasync-lease')

    def __enter__(self) -> 'Lease':
        self._keeper.start()
        with self._condition:
            while not self._held:
                self._condition.wait()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with self._condition:
            self._over = True
            self._condition.notify_all()
        self._keeper.join()

    def keep(self) -> bool:
        """True: the lock is held, and will be until the block ends."""
        with self._condition:
            if not self._let_go:
                self._kept = True
            return self._kept

    def _hold(self) -> None:
        with self._lock:
            with self._condition:
                self._held = True
                self._condition.notify_all()
                while not self._over:
                    if not self._kept and \
                            self._running_for() >= self._stall:
                        self._let_go = True
                        break
                    self._condition.wait(self._stall)
