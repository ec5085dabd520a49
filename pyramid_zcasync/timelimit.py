"""Interrupting a running job: its time limit, or a cancel.

A job running longer than ``job.time_limit`` seconds is interrupted and
fails with :class:`TimeLimitExceeded`; a job cancelled while it runs is
interrupted with :class:`~.errors.JobCancelled` (cancelling.py).  Both go
through :class:`Interruptible`, the one place that interrupts a thread.

Python can only interrupt a thread between bytecodes: the exception is
raised in the job's thread (``PyThreadState_SetAsyncExc``) and lands at
its next bytecode.  A job blocked inside a C call (``time.sleep``, a
socket read without timeout, a long C extension call) is interrupted only
when that call returns; give such calls their own timeouts.  The job's
transaction is aborted like any failed call's, and the failure recorded.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Any, Callable, Optional, Type

from .checks import check_time_limit


class TimeLimitExceeded(Exception):
    """The job ran longer than its ``time_limit``."""


class Interruptible:
    """A call running in the thread that made this object, which other
    threads may interrupt: once, and only until :meth:`finish`.

    Once only, so that two causes (a time limit and a cancel) never raise
    two exceptions in the thread, the second landing in the runner's own
    clean-up; ``interrupted_by`` says which cause won.
    """

    def __init__(self) -> None:
        self.thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._running = True
        #: Why someone asked the call to stop (a cancel), if anyone did:
        #: the job can see it (``local.cancel_requested``) and stop.
        self.stop_reason: Optional[str] = None
        #: The exception class raised in the thread, if one was.
        self.interrupted_by: Optional[Type[BaseException]] = None

    @property
    def stop_asked(self) -> bool:
        return self.stop_reason is not None

    def ask_to_stop(self, reason: str) -> bool:
        """Note a request to stop; True the first time, while it runs."""
        with self._lock:
            first = self._running and self.stop_reason is None
            if self.stop_reason is None:
                self.stop_reason = reason
            return first

    def interrupt(self, exc_type: Type[BaseException]) -> bool:
        """Raise ``exc_type`` in the call's thread if it still runs and
        was not interrupted yet; whether it was raised."""
        with self._lock:
            if not self._running or self.interrupted_by is not None:
                return False
            self.interrupted_by = exc_type
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread_id), ctypes.py_object(exc_type))
            return True

    def held_back(self) -> Any:
        """``with call.held_back():`` an interruption asked for meanwhile
        waits, and is raised once the block ends."""
        return self._lock

    def finish(self) -> None:
        """The call returned or raised: nothing may interrupt it now.
        An interruption raised just before lands at the latest here, in
        the caller's ``try``."""
        with self._lock:
            self._running = False


def call_with_limit(func: Callable[[], Any], seconds: Optional[float],
                    what: str = 'the job',
                    call: Optional[Interruptible] = None) -> Any:
    """``func()``, interrupted after ``seconds`` (None: no limit).

    ``call``: the Interruptible others (a cancel) use to interrupt this
    call too; it is finished when ``func`` ends."""
    if seconds is None and call is None:
        return func()
    call = call if call is not None else Interruptible()
    timer = None
    if seconds is not None:
        timer = threading.Timer(seconds, call.interrupt, (TimeLimitExceeded,))
        timer.daemon = True
    try:
        try:
            if timer is not None:
                # A limit expiring while the timer starts (a fraction of a
                # millisecond, under load) raised inside threading's own
                # bookkeeping of the new thread, and escaped as a KeyError.
                with call.held_back():
                    timer.start()
            return func()
        finally:
            # The interruption may land in here too (it was raised while
            # we waited for the lock): the outer handler catches it.
            call.finish()
            if timer is not None:
                timer.cancel()
    except TimeLimitExceeded as interrupted:
        # The interrupted frames stay in the traceback: where the job was
        # when its time ran out is what its owner needs to know.
        raise TimeLimitExceeded(
            '%s ran longer than its time limit of %s s' % (what, seconds)
        ).with_traceback(interrupted.__traceback__) from None


#: Kept under its old name: the check belongs to the job (job.py).
check_limit = check_time_limit
