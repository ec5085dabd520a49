"""This process: its running dispatchers (found by UUID, woken after a
commit that changed what they should see, ``wake_after_commit``), and
its signals and exit, which stop them cleanly.

A put wakes the dispatcher of its database through that dispatcher's
extension (dispatcher.py), so importing the package changes nothing in
the process.
"""
from __future__ import annotations

import atexit
import logging
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol

log = logging.getLogger('pyramid_zcasync.events')


class Running(Protocol):
    """What this module uses of a dispatcher."""

    UUID: str

    def wake(self) -> None: ...

    def stop(self, timeout: float = 10) -> None: ...


_running: Dict[str, Running] = {}
_running_lock = threading.Lock()


def register(dispatcher: Running) -> None:
    """A dispatcher starts: found by UUID from now on."""
    with _running_lock:
        if dispatcher.UUID in _running:
            raise RuntimeError('a dispatcher with UUID %s is already '
                               'running in this process' % dispatcher.UUID)
        _running[dispatcher.UUID] = dispatcher


def unregister(dispatcher: Running) -> None:
    """A dispatcher stopped."""
    with _running_lock:
        if _running.get(dispatcher.UUID) is dispatcher:
            del _running[dispatcher.UUID]


def running() -> List[Running]:
    with _running_lock:
        return list(_running.values())


def get(uuid: Optional[str] = None) -> Any:
    """This process's running dispatcher (for ``uuid``), or None."""
    with _running_lock:
        if uuid is not None:
            return _running.get(str(uuid))
        return next(iter(_running.values()), None)


def stop_all(timeout: float = 10) -> None:
    for dispatcher in running():
        dispatcher.stop(timeout)


# -- waking on commit -----------------------------------------------------

def wake_after_commit(txn: Any) -> None:
    """Wake this process's dispatchers once ``txn`` commits: it changed a
    schedule they should see now, not at their next poll.  Once per
    transaction however often it is asked."""
    if not getattr(txn, '_zcasync_wake', False):
        txn._zcasync_wake = True
        txn.addAfterCommitHook(_wake_all)


def _wake_all(committed: bool) -> None:
    if committed:
        for dispatcher in running():
            dispatcher.wake()


# -- process exit ---------------------------------------------------------

_signals_installed = False


def install_exit_handlers(grace: float) -> None:
    """Stop cleanly on SIGINT and SIGTERM, then do what was done before:
    the previous handler, KeyboardInterrupt for SIGINT, exit for SIGTERM.
    Only the main thread may install handlers; elsewhere atexit remains.
    """
    global _signals_installed
    if _signals_installed:
        return
    _signals_installed = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if previous == signal.SIG_IGN:
            continue  # as Python does: an ignored signal stays ignored
        signal.signal(signum, _make_handler(previous, grace))


def _make_handler(previous: Any, grace: float) -> Callable[[int, Any], Any]:
    def handler(signum: int, frame: Any) -> Any:
        log.info('signal %d: stopping dispatchers', signum)
        # In a thread of its own: the interrupted main thread may hold a
        # lock the shutdown needs; then we exit after the timeout anyway.
        stopper = threading.Thread(target=stop_all, daemon=True)
        stopper.start()
        stopper.join(grace + 10)
        if callable(previous):
            return previous(signum, frame)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
    return handler


#: How often a main thread waiting for a signal wakes up (seconds).
SIGNAL_CHECK = 0.2


def wait_for_signal(until: Callable[[], bool] = lambda: False) -> None:
    """Sleep in the main thread until a signal handler raises (the exit
    handlers above raise SystemExit or KeyboardInterrupt) or ``until()``
    is true.

    Not ``signal.pause()``: the kernel hands a signal sent to the process
    to any of its threads (the reactor's, a worker's, ZEO's), and Python
    runs the handler in the main thread only when that thread next runs;
    paused, it never does, and the process ignores SIGTERM until SIGKILL
    (seen about once in 15 stops of a test worker under load).  Short
    sleeps bound that delay to ``SIGNAL_CHECK``."""
    while not until():
        time.sleep(SIGNAL_CHECK)
