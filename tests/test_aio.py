"""Async jobs: ``async def`` callables run on an event loop of the
dispatcher, side by side with threaded jobs, with time limits."""
import asyncio
import threading
import time

import BTrees.OOBTree
import pytest
import transaction

from pyramid_zcasync import aio, local, testing
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.errors import JobCancelled
from pyramid_zcasync.interfaces import ACTIVE, COMPLETED
from pyramid_zcasync.job import Job
from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result
from pyramid_zcasync.timelimit import TimeLimitExceeded, call_with_limit

#: What the coroutines' ``finally`` blocks saw (a time limit must let them
#: run).
CLEANED_UP = []


async def double_and_store(tree, key, value):
    await asyncio.sleep(0.01)
    tree[key] = value
    return value * 2


async def sleep_and_record(tree, key, seconds):
    start = time.time()
    await asyncio.sleep(seconds)
    tree[key] = (start, time.time())


def block_and_record(tree, key, seconds):
    start = time.time()
    time.sleep(seconds)
    tree[key] = (start, time.time())


async def fail_in_coroutine():
    await asyncio.sleep(0)
    raise ValueError('raised by the coroutine')


async def sleep_past_the_limit(seconds):
    try:
        await asyncio.sleep(seconds)
    finally:
        CLEANED_UP.append('sleep_past_the_limit')


async def write_then_sleep(tree, key, seconds):
    tree[key] = True
    try:
        await asyncio.sleep(seconds)
    finally:
        CLEANED_UP.append('write_then_sleep')


async def what_local_says():
    await asyncio.sleep(0)  # after a step: the loop's thread, not the job's
    job = local.get_job()
    return (job._p_oid, local.get_dispatcher().UUID,
            threading.current_thread().name)


async def add_later(a, b):
    await asyncio.sleep(0)
    return a + b


async def call_async_job_in_place():
    await asyncio.sleep(0)
    return Job(add_later, 20, 22)()


def start_dispatcher(db, tmp_path, agent_size):
    return dispatcher_module.start(
        db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        agent_size=agent_size, install_signal_handlers=False)


@pytest.fixture
def two_slots(fs_db, tmp_path):
    """A dispatcher whose agent runs two jobs at once."""
    started = start_dispatcher(fs_db, tmp_path, agent_size=2)
    yield started
    tear_down_dispatcher(started)


@pytest.fixture
def db(fs_db):
    """conftest's ``conn`` and ``queue`` on the dispatcher's database."""
    return fs_db


@pytest.fixture
def tree(queue):
    tree = queue._p_jar.root()['tree'] = BTrees.OOBTree.OOBTree()
    transaction.commit()
    return tree


def loop_threads(uuid):
    prefix = aio.THREAD_PREFIX + uuid[:8]
    return [thread for thread in threading.enumerate()
            if thread.name.startswith(prefix)]


def overlap(first, second):
    """Whether two ``(start, end)`` runs overlapped in time."""
    return first[0] < second[1] and second[0] < first[1]


def test_an_async_job_returns_its_result_and_commits_its_writes(
        two_slots, queue, tree):
    job = queue.put(double_and_store, tree, 'key', 21)
    transaction.commit()
    assert wait_for_result(job) == 42
    assert tree['key'] == 21


def test_local_knows_the_job_inside_the_coroutine(two_slots, queue):
    job = queue.put(what_local_says)
    transaction.commit()
    oid, uuid, thread = wait_for_result(job)
    assert (oid, uuid) == (job._p_oid, two_slots.UUID)
    assert thread.startswith(aio.THREAD_PREFIX + two_slots.UUID[:8])


def test_async_jobs_run_side_by_side_on_one_loop(two_slots, queue, tree):
    first = queue.put(sleep_and_record, tree, 'first', 0.5)
    second = queue.put(sleep_and_record, tree, 'second', 0.5)
    transaction.commit()
    wait_for_result(first)
    wait_for_result(second)
    assert overlap(tree['first'], tree['second'])
    assert len(loop_threads(two_slots.UUID)) == 1


def test_an_async_job_and_a_threaded_job_side_by_side(two_slots, queue,
                                                      tree):
    coroutine = queue.put(sleep_and_record, tree, 'async', 0.5)
    threaded = queue.put(block_and_record, tree, 'threaded', 0.5)
    transaction.commit()
    wait_for_result(coroutine)
    wait_for_result(threaded)
    assert overlap(tree['async'], tree['threaded'])


def test_an_exception_in_the_coroutine_is_the_jobs_failure(two_slots,
                                                           queue):
    job = queue.put(fail_in_coroutine)
    transaction.commit()
    failure = wait_for_result(job)
    assert isinstance(failure, Failure)
    assert failure.check(ValueError)
    traceback = failure.getTraceback()
    assert 'in fail_in_coroutine' in traceback
    assert "raise ValueError('raised by the coroutine')" in traceback


def test_a_time_limit_cancels_the_coroutine(two_slots, queue):
    del CLEANED_UP[:]
    job = queue.put(sleep_past_the_limit, 10)
    job.time_limit = 0.5
    transaction.commit()
    failure = wait_for_result(job, seconds=8)
    assert failure.check(TimeLimitExceeded)
    assert 'time limit of 0.5 s' in failure.message
    assert (job.active_end - job.active_start).total_seconds() < 2
    assert CLEANED_UP == ['sleep_past_the_limit']


def test_cancel_stops_a_running_coroutine(two_slots, queue, tree):
    """A cancel reaches the job's waiting thread as an interruption, which
    cancels the coroutine at its await: its finally runs, its writes are
    rolled back, and the job ends JobCancelled within a second."""
    del CLEANED_UP[:]
    job = queue.put(write_then_sleep, tree, 'written', 30)
    transaction.commit()
    deadline = time.monotonic() + 10
    while job.status != ACTIVE and time.monotonic() < deadline:
        time.sleep(0.02)
        transaction.begin()
    time.sleep(0.2)  # awaiting inside the coroutine
    job.cancel('not wanted any more')
    transaction.commit()
    asked = time.monotonic()
    failure = wait_for_result(job, seconds=8)
    assert time.monotonic() - asked < 1.5
    assert failure.check(JobCancelled)
    assert CLEANED_UP == ['write_then_sleep']
    assert 'written' not in tree


def test_the_loop_stops_with_its_dispatcher(fs_db, tmp_path, queue):
    started = start_dispatcher(fs_db, tmp_path, agent_size=1)
    try:
        job = queue.put(add_later, 1, 2)
        transaction.commit()
        assert wait_for_result(job) == 3
        assert len(loop_threads(started.UUID)) == 1
        assert aio.loop_of(started) is not None
    finally:
        tear_down_dispatcher(started)
    assert loop_threads(started.UUID) == []
    assert aio.loop_of(started) is None


def test_an_async_job_called_in_place(queue, tree):
    job = queue._p_jar.root()['job'] = Job(double_and_store, tree, 'here', 5)
    assert job() == 10
    assert tree['here'] == 5
    transaction.commit()
    assert loop_threads('call') == []  # its loop ended with the call


def test_a_coroutine_calls_an_async_job_in_place(two_slots, queue):
    job = queue.put(call_async_job_in_place)
    transaction.commit()
    assert wait_for_result(job) == 42


def test_an_interrupted_wait_cancels_the_coroutine(loop_thread):
    """What time limits and cancels rely on: an exception landing in the
    waiting thread cancels the task and still propagates."""
    del CLEANED_UP[:]
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        call_with_limit(
            lambda: loop_thread.wait_for(sleep_past_the_limit(10)), 0.2)
    assert time.monotonic() - started < 2
    assert CLEANED_UP == ['sleep_past_the_limit']


def test_eager_mode_runs_an_async_job_at_its_put(fs_db, queue, tree):
    with testing.eager(fs_db):
        job = queue.put(double_and_store, tree, 'eager', 4)
        transaction.commit()
    transaction.begin()
    assert job.status == COMPLETED
    assert job.result == 8
    assert tree['eager'] == 4


def test_eager_mode_keeps_time_limits_of_async_jobs(fs_db, queue):
    del CLEANED_UP[:]
    with testing.eager(fs_db):
        job = queue.put(sleep_past_the_limit, 10)
        job.time_limit = 0.3
        transaction.commit()
    transaction.begin()
    assert job.result.check(TimeLimitExceeded)
    assert CLEANED_UP == ['sleep_past_the_limit']


async def registry_and_request_url():
    await asyncio.sleep(0)
    from pyramid.threadlocal import get_current_registry
    return (get_current_registry().settings['marker'],
            local.get_request().route_url('home'))


def test_carried_pyramid_thread_locals_reach_the_coroutine(two_slots, fs_db,
                                                           queue):
    """context.py carries Pyramid's thread-locals into the loop's thread."""
    from pyramid.config import Configurator
    from pyramid_zcasync import extensions
    from pyramid_zcasync.context import PyramidContext
    config = Configurator(settings={'marker': 'the app'})
    config.add_route('home', '/home')
    config.commit()
    context = PyramidContext(config.registry, 'http://app.example')
    extensions.add(fs_db, context)
    try:
        job = queue.put(registry_and_request_url)
        transaction.commit()
        assert wait_for_result(job) == ('the app', 'http://app.example/home')
    finally:
        extensions.remove(fs_db, context)


async def exit_the_process():
    await asyncio.sleep(0)
    raise SystemExit(3)


async def cancel_itself():
    asyncio.current_task().cancel()
    await asyncio.sleep(1)


@pytest.fixture
def loop_thread():
    loop = aio.LoopThread(aio.THREAD_PREFIX + 'test')
    yield loop
    loop.stop()
    assert not loop.thread.is_alive()


def test_system_exit_reaches_the_jobs_thread_and_spares_the_loop(
        loop_thread):
    with pytest.raises(SystemExit):
        loop_thread.wait_for(exit_the_process())
    assert loop_thread.wait_for(add_later(1, 1)) == 2


def test_a_coroutine_cancelled_from_inside_fails_like_any_job(loop_thread):
    # asyncio's CancelledError is no Exception: the runner would not
    # record it as the job's failure.
    with pytest.raises(aio.CoroutineCancelled):
        loop_thread.wait_for(cancel_itself())
