"""Helpers for tests of code that uses pyramid_zcasync (as zc.async.testing).

Each waits by polling with short sleeps and fails with an AssertionError
saying what it waited for; the ``seconds`` bounds keep a broken test from
hanging a suite.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator, Optional, Tuple

from . import eager as eager_module
from . import transact

from .interfaces import ACTIVE, CALLBACKS, COMPLETED

_STEP = 0.01


def wait_until(condition: Callable[[], Any], seconds: float, what: str,
               step: float = _STEP) -> Any:
    """``condition()``'s first true value, checked every ``step`` seconds;
    an AssertionError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError('waited %s s for %s' % (seconds, what))
        time.sleep(step)


_wait = wait_until


@contextlib.contextmanager
def eager(db: Any) -> Iterator[eager_module.EagerRun]:
    """Inside the block, each job put into ``db``'s queues runs in the
    putting thread as soon as its transaction commits (eager.py): tests
    of code without Pyramid need no dispatcher and no waiting.  Pyramid
    apps say ``zcasync.eager = true`` instead."""
    run = eager_module.enable(db)
    try:
        yield run
    finally:
        eager_module.disable(run)


def _sync(obj: Any) -> None:
    """Start a new transaction in ``obj``'s connection, to see commits."""
    jar = getattr(obj, '_p_jar', None)
    if jar is not None:
        jar.transaction_manager.begin()


def get_poll(dispatcher: Any, count: Optional[int] = None,
             seconds: float = 6) -> Any:
    """The newest poll once more than ``count`` polls were made (by default,
    the next poll from now; ``0``: the first poll)."""
    if count is None:
        count = dispatcher.polls.total
    _wait(lambda: dispatcher.polls.total > count, seconds,
          'poll number %d of dispatcher %s' % (count + 1, dispatcher.UUID))
    return dispatcher.polls.first()


def wait_for_result(job: Any, seconds: float = 6) -> Any:
    """The job's result once it is COMPLETED and its dispatcher has
    released it (it then shows in its agent's history); aborts the
    current transaction of the job's connection, to see other commits."""
    def completed() -> bool:
        _sync(job)
        return job.status == COMPLETED and job.agent is None
    _wait(completed, seconds, 'the result of %r' % (job,))
    return job.result


def wait_for_start(job: Any, seconds: float = 6) -> None:
    def started() -> bool:
        _sync(job)
        return job.status in (ACTIVE, CALLBACKS, COMPLETED)
    _wait(started, seconds, '%r to start' % (job,))


def wait_for_annotation(job: Any, name: str, seconds: float = 6) -> Any:
    def annotated() -> bool:
        _sync(job)
        return name in job.annotations
    _wait(annotated, seconds, 'annotation %r of %r' % (name, job))
    return job.annotations[name]


def wait_for_deactivation(dispatcher: Any, seconds: float = 6) -> None:
    _wait(lambda: not dispatcher.activated, seconds,
          'dispatcher %s to deactivate' % dispatcher.UUID)


def wait_for_death(registration: Any, seconds: float = 6) -> None:
    """Until a dispatcher's registration (``queue.dispatchers[uuid]``) is
    dead, or was deactivated by a sibling that found it dead."""
    def dead() -> bool:
        _sync(registration)
        return not registration.activated or registration.dead
    _wait(dead, seconds, 'dispatcher %s to die' % registration.UUID)


def tear_down_dispatcher(dispatcher: Any, seconds: float = 10) -> None:
    """Stop the dispatcher; assert it deactivated, its threads ended and
    no job was still running (stopping hands such a job back to the queue,
    which would hide a job that hangs from the test that started it)."""
    dispatcher.stop(seconds)
    wait_for_deactivation(dispatcher, seconds)
    if dispatcher.thread is not None and dispatcher.thread.is_alive():
        raise AssertionError('the reactor thread of dispatcher %s is still '
                             'alive' % dispatcher.UUID)
    running = dispatcher.getActiveJobIds()
    if running:
        raise AssertionError(
            'dispatcher %s stopped while %s still ran (not finished within '
            '%s s)' % (dispatcher.UUID, ', '.join(
                _describe_job(dispatcher.db, job_id) for job_id in running),
                seconds))


def _describe_job(db: Any, job_id: Tuple[int, str]) -> str:
    """The job's repr (which names its call), read from the database;
    its id if it cannot be read."""
    oid, database_name = job_id
    try:
        return transact.read(db.databases[database_name], lambda connection:
                             repr(connection.get(oid.to_bytes(8, 'big'))))
    except Exception:  # a closed database: the id must do
        return 'job %r' % (job_id,)
