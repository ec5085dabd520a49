"""Run-time limits: a job running longer than ``job.time_limit`` seconds
is interrupted and fails with :class:`TimeLimitExceeded`.

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
from typing import Any, Callable, Optional

from .checks import check_time_limit


class TimeLimitExceeded(Exception):
    """The job ran longer than its ``time_limit``."""


def _interrupt(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(TimeLimitExceeded))


def call_with_limit(func: Callable[[], Any], seconds: Optional[float],
                    what: str = 'the job') -> Any:
    """``func()``, interrupted after ``seconds`` (None: no limit)."""
    if seconds is None:
        return func()
    state = {'running': True}
    lock = threading.Lock()
    thread_id = threading.get_ident()

    def expire() -> None:
        with lock:
            if state['running']:
                _interrupt(thread_id)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    try:
        try:
            timer.start()
            return func()
        finally:
            # The interruption may land in here too (it was raised while
            # we waited for the lock): the outer handler catches it.
            with lock:
                state['running'] = False
            timer.cancel()
    except TimeLimitExceeded as interrupted:
        # The interrupted frames stay in the traceback: where the job was
        # when its time ran out is what its owner needs to know.
        raise TimeLimitExceeded(
            '%s ran longer than its time limit of %s s' % (what, seconds)
        ).with_traceback(interrupted.__traceback__) from None


#: Kept under its old name: the check belongs to the job (job.py).
check_limit = check_time_limit
