"""Async jobs: a job whose callable is an ``async def`` (or returns a
coroutine) runs its coroutine on an event loop, while the job's worker
thread waits for it.

Why the worker thread waits instead of handing the job over: it stays the
owner of the job's transaction, so the runner's commit, retries,
callbacks, life log and time limits work for coroutines as they do for
plain calls.  A coroutine still takes an agent slot while it runs, so an
agent's size bounds how many of its jobs run at once, async or not; many
coroutines run side by side on one loop, each waiting on I/O.

Where the coroutine runs:

- In a job run by a dispatcher: on that dispatcher's loop, in a thread
  of its own (``zcasync-aio-`` and the dispatcher's UUID), started at its
  first async job and stopped when the dispatcher stops (an extension's
  ``dispatcher_deactivated``), which it does at the process's exit when
  it installed its exit handlers; a daemon thread, it never holds the
  process up.
- Anywhere else (``job()`` called in place, eager mode, a coroutine
  calling another async job in place): on a loop of its own, in a
  thread that ends with the call (``zcasync-aio-call``).

Persistent objects: the coroutine may read and write the job's arguments
and the objects they reach, as a plain job does.  They belong to the
job's connection, which ZODB does not let two threads use at once; the
job's thread only waits while the coroutine runs, so each connection is
used by one thread at a time.  Their changes join the job's transaction
(the runner's connection has a transaction manager of its own; a job
called in place wrote itself when it started, so its connection already
joined the caller's transaction): they commit or abort with the job.
What the coroutine must not do: hand those objects to other tasks that
outlive it, keep using them after its job ended, or use the
thread-bound ``transaction.get()`` and ``transaction.commit()`` (in
the loop's thread they name another transaction); open a connection of
its own (``transact.write``) for work that must commit apart.

Interruptions: a time limit (timelimit.py) or a cancel raises its
exception in the job's thread, where it lands only between bytecodes;
the job's thread therefore waits in slices of ``WAIT_SLICE`` seconds.
When anything interrupts the wait, the coroutine's task is cancelled (it
gets ``CancelledError`` at its current ``await``, so its ``finally``
blocks run), the job's thread waits up to ``CANCEL_GRACE`` seconds for
it to end, and the interruption goes on as for a plain call.

``local.get_job()`` and the rest of local.py work inside the coroutine:
what local.py keeps for the job's thread is made current in the loop's
thread around each step of the coroutine (see :func:`carry`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import (Any, Coroutine, Dict, Generator, Iterator, List,
                    Optional, Tuple)

from . import extensions, local

log = logging.getLogger('pyramid_zcasync.events')

#: Seconds the job's thread waits for its coroutine at a time: an
#: interruption (time limit, cancel) lands within about this long.
WAIT_SLICE = 0.05
#: Seconds a cancelled coroutine gets to run its ``finally`` blocks before
#: the job's thread goes on (and aborts the job's transaction).
CANCEL_GRACE = 2.0
#: Seconds a stopping loop gives its unfinished tasks to end.
STOP_GRACE = 2.0
#: The name of a dispatcher's loop thread starts with this.
THREAD_PREFIX = 'zcasync-aio-'

Snapshot = Tuple[Any, Dict[str, Any]]


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coroutine`` to its end and return its result (or raise its
    exception, its frames in the traceback), from a job's thread; see the
    module's docstring for which loop runs it.  Job.invoke calls it for
    native coroutines only: other awaitables (a Twisted Deferred has
    ``__await__``) keep their own handling (runner.settle)."""
    loop = _dispatcher_loop()
    if loop is not None:
        return loop.wait_for(coroutine)
    with _one_call_loop() as own:
        return own.wait_for(coroutine)


# -- thread-local state carried into the coroutine -------------------------

#: Thread-locals whose values the job's thread has are made current in the
#: loop's thread around each step of the job's coroutine.
_carried_states: List[threading.local] = []


def carry(state: threading.local) -> None:
    """Make the values ``state`` holds in a job's thread current in the
    loop's thread whenever that job's coroutine runs (e.g. Pyramid's
    thread-local registry and request: ``carry(pyramid.threadlocal.
    manager)``)."""
    if state not in _carried_states:
        _carried_states.append(state)


def _snapshots() -> List[Snapshot]:
    return [(state, dict(state.__dict__)) for state in _carried_states]


@contextlib.contextmanager
def _entered(snapshots: List[Snapshot]) -> Iterator[None]:
    """The snapshots' values current in this thread; changes made meanwhile
    are kept in the snapshots for the next step, and this thread's own
    values come back afterwards."""
    own = []
    for state, values in snapshots:
        own.append(dict(state.__dict__))
        _replace(state, values)
    try:
        yield
    finally:
        for index, (state, _) in enumerate(snapshots):
            snapshots[index] = (state, dict(state.__dict__))
            _replace(state, own[index])


def _replace(state: threading.local, values: Dict[str, Any]) -> None:
    current = state.__dict__
    current.clear()
    current.update(values)


class _Carrying:
    """Awaits a coroutine step by step, each step inside the job thread's
    snapshots (a thread-local cannot follow a task from step to step)."""

    def __init__(self, coroutine: Coroutine[Any, Any, Any],
                 snapshots: List[Snapshot]) -> None:
        self.coroutine = coroutine
        self.snapshots = snapshots

    def __await__(self) -> Generator[Any, Any, Any]:
        sent: Any = None
        thrown: Optional[BaseException] = None
        while True:
            with _entered(self.snapshots):
                try:
                    if thrown is None:
                        signal = self.coroutine.send(sent)
                    else:
                        signal = self.coroutine.throw(thrown)
                except StopIteration as done:
                    return done.value
            sent, thrown = None, None
            try:
                sent = yield signal
            except BaseException as exc:  # the task cancelled or closed:
                thrown = exc  # passed on to the coroutine


class CoroutineCancelled(Exception):
    """The job's coroutine was cancelled, not by its job's thread (it
    cancelled itself, or its loop stopped under it): a failure of the job,
    not asyncio's CancelledError, which no runner would catch."""


class _Escaped(Exception):
    """Carries a KeyboardInterrupt or SystemExit out of the loop to the
    job's thread: raised in a task, they would stop the loop itself."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(original)
        self.original = original


async def _carried(coroutine: Coroutine[Any, Any, Any],
                   snapshots: List[Snapshot]) -> Any:
    try:
        return await _Carrying(coroutine, snapshots)
    except (KeyboardInterrupt, SystemExit) as exc:
        raise _Escaped(exc) from None


# -- a loop in a thread of its own -----------------------------------------

class LoopThread:
    """An event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name=name,
                                       daemon=True)
        self.thread.start()

    def __repr__(self) -> str:
        return '<LoopThread %s>' % self.thread.name

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            self._end_leftover_tasks()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def _end_leftover_tasks(self) -> None:
        """Cancel tasks still running (their jobs' threads gave up on
        them) and give them STOP_GRACE seconds to run their clean-up."""
        tasks = asyncio.all_tasks(self.loop)
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        ended = asyncio.wait(tasks, timeout=STOP_GRACE)
        _, pending = self.loop.run_until_complete(ended)
        if pending:
            log.warning('%d coroutine(s) ignored being cancelled; '
                        'abandoned with their loop', len(pending))

    def stop(self, timeout: float = STOP_GRACE + 1) -> None:
        """Stop the loop and wait for its thread to end."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def wait_for(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` on this loop; the calling thread waits for it
        in slices, and cancels it when interrupted while waiting."""
        outcome = _Outcome()
        snapshots = _snapshots()

        def start() -> None:
            outcome.follow(self.loop.create_task(
                _carried(coroutine, snapshots)))
        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:
            coroutine.close()  # never started: no "never awaited" warning
            raise
        try:
            while not outcome.ended.wait(WAIT_SLICE):
                pass  # an exception raised in this thread lands here
        except BaseException:
            self._cancel(outcome)
            raise
        return outcome.value()

    def _cancel(self, outcome: '_Outcome') -> None:
        """Cancel the task and give it CANCEL_GRACE seconds to end."""
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(outcome.cancel)
        if not outcome.ended.wait(CANCEL_GRACE):
            log.error('a cancelled job coroutine did not end within %s s; '
                      'it still runs on %r', CANCEL_GRACE, self)


class _Outcome:
    """A job coroutine's task, as its job's thread sees it."""

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.task: Optional[asyncio.Task[Any]] = None

    def follow(self, task: asyncio.Task[Any]) -> None:
        """In the loop's thread, as the task is made."""
        self.task = task
        task.add_done_callback(lambda _: self.ended.set())

    def cancel(self) -> None:
        """In the loop's thread, after ``follow``."""
        if self.task is not None:
            self.task.cancel()

    def value(self) -> Any:
        """In the job's thread, once ended: the result, or the exception
        raised with the coroutine's frames in its traceback."""
        assert self.task is not None
        if self.task.cancelled():
            raise CoroutineCancelled('the coroutine of the job was '
                                     'cancelled')
        error = self.task.exception()
        if isinstance(error, _Escaped):
            raise error.original
        if error is not None:
            raise error
        return self.task.result()


# -- which loop -------------------------------------------------------------

_loops: Dict[Any, LoopThread] = {}
_loops_lock = threading.Lock()


class StopLoopWithDispatcher(extensions.Extension):
    """Stops a dispatcher's loop when the dispatcher stops."""

    def dispatcher_deactivated(self, dispatcher: Any) -> None:
        stop_loop(dispatcher)


_STOPPER = StopLoopWithDispatcher()


def _dispatcher_loop() -> Optional[LoopThread]:
    """The loop of the dispatcher running the current job; None outside a
    dispatcher, once it stopped, or in a thread that runs an event loop
    already (a coroutine calling an async job in place: waiting for its
    own loop would never end)."""
    dispatcher = local.get_dispatcher()
    if dispatcher is None or _in_event_loop():
        return None
    db = getattr(dispatcher, 'db', None)
    if db is not None:  # before the loop exists: its stop must see it
        extensions.add(db, _STOPPER)
    if getattr(dispatcher, 'activated', True) is None:
        return None  # stopping: a new loop would outlive it
    with _loops_lock:
        loop = _loops.get(dispatcher)
        if loop is None or loop.loop.is_closed():
            loop = _loops[dispatcher] = LoopThread(
                THREAD_PREFIX + str(getattr(dispatcher, 'UUID', 'x'))[:8])
    return loop


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def _one_call_loop() -> Iterator[LoopThread]:
    own = LoopThread(THREAD_PREFIX + 'call')
    try:
        yield own
    finally:
        own.stop()


def loop_of(dispatcher: Any) -> Optional[asyncio.AbstractEventLoop]:
    """The event loop running ``dispatcher``'s async jobs, if started."""
    with _loops_lock:
        found = _loops.get(dispatcher)
    return None if found is None else found.loop


def stop_loop(dispatcher: Any) -> None:
    """Stop ``dispatcher``'s loop (its coroutines still running are
    cancelled) and wait for its thread to end."""
    with _loops_lock:
        found = _loops.pop(dispatcher, None)
    if found is not None:
        found.stop()


def stop_all() -> None:
    """Stop every dispatcher's loop.  Not registered with atexit: at exit
    it would run before the dispatchers' own stop (process.py) and cancel
    coroutines their grace would have let finish; the loops' daemon
    threads end with the process, like the dispatchers' threads."""
    with _loops_lock:
        dispatchers = list(_loops)
    for dispatcher in dispatchers:
        stop_loop(dispatcher)


def _carry_local_state() -> None:
    """local.py keeps the running job in a thread-local of its own: carry
    it (a context variable there would need nothing from here)."""
    state = getattr(local, '_state', None)
    if isinstance(state, threading.local):
        carry(state)


_carry_local_state()
