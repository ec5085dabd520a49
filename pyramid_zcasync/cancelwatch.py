"""How a dispatcher notices that a job it runs was cancelled, and stops it.

The cancel is a request committed on the job (cancels.py), maybe by
another process.  The dispatcher's reactor looks at the newest
transaction every few milliseconds anyway (``Dispatcher._watch_database``);
while jobs run, and when a transaction was committed since its last look
(or a job started), it reads in a connection of its own which of them
carry a request, at most every CHECK_INTERVAL seconds.  A job found is
asked to stop (``local.cancel_requested()`` turns true, so a loop can end
cleanly) and, if still running GRACE seconds later, is interrupted with
JobCancelled (``timelimit.Interruptible``): the runner then aborts its
attempt and records the cancellation.  Between the request's commit and
the interruption: at most about CHECK_INTERVAL + GRACE, well within a
second.  A job blocked in a C call (``time.sleep``) is interrupted only
when that call returns.

Nothing is read while no job runs, nor while no transaction is
committed: the cost of the watch is then one test per look.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from . import transact
from .errors import JobCancelled, cancel_reason
from .timelimit import Interruptible

trace = logging.getLogger('pyramid_zcasync.trace')

#: Seconds between two reads of the cancel requests of the running jobs.
CHECK_INTERVAL = 0.1
#: Seconds a job asked to stop has to end by itself before it is
#: interrupted.
GRACE = 0.3

#: ``later(seconds, function, *args)``: the reactor's callLater.
Later = Callable[..., Any]


class RunningCalls:
    """The calls a dispatcher's workers are making now, by job oid."""

    def __init__(self) -> None:
        self._calls: Dict[bytes, Interruptible] = {}
        self._lock = threading.Lock()
        #: Counts the calls started: a watch that read the requests
        #: before a call started must read them again for it.
        self.started = 0

    def start(self, oid: bytes) -> Interruptible:
        """The call of job ``oid`` starts in this thread."""
        call = Interruptible()
        with self._lock:
            self._calls[oid] = call
            self.started += 1
        return call

    def end(self, oid: bytes, call: Interruptible) -> None:
        with self._lock:
            if self._calls.get(oid) is call:
                del self._calls[oid]

    def __bool__(self) -> bool:
        return bool(self._calls)

    def snapshot(self) -> Dict[bytes, Interruptible]:
        with self._lock:
            return dict(self._calls)


class CancelWatch:
    """Stops the running calls whose jobs were asked to cancel.  Called
    by one thread (the dispatcher's reactor)."""

    def __init__(self, db: Any, calls: RunningCalls, later: Later) -> None:
        self.db = db
        self.calls = calls
        self.later = later
        self._seen: tuple = (None, -1)
        self._next_read = 0.0

    def look(self, latest: Optional[bytes]) -> None:
        """Called at each look at the newest transaction ``latest``."""
        if not self.calls:
            return
        seen = (latest, self.calls.started)
        if seen == self._seen or time.monotonic() < self._next_read:
            return
        self._next_read = time.monotonic() + CHECK_INTERVAL
        calls = self.calls.snapshot()
        try:
            asked = transact.read(self.db, lambda conn: _requested(
                conn, calls))
        except Exception:  # the storage is away: the next look reads again
            trace.debug('could not read cancel requests', exc_info=True)
            return
        self._seen = seen
        for oid, reason in asked:
            self.stop(calls[oid], reason)

    def stop(self, call: Interruptible, reason: str) -> None:
        """Ask ``call`` to stop; interrupt it if it runs GRACE later."""
        if call.ask_to_stop(reason):
            trace.info('cancel requested (%s): stopping thread %d', reason,
                       call.thread_id)
            self.later(GRACE, call.interrupt, JobCancelled)


def _requested(connection: Any, calls: Dict[bytes, Interruptible]
               ) -> List[tuple]:
    """``[(oid, reason)]`` of the running jobs with a cancel request."""
    found = []
    for oid in calls:
        reason = cancel_reason(connection.get(oid))
        if reason is not None:
            found.append((oid, reason))
    return found
