"""zc.async parity (issue 14): an agent's size is a promise of concurrency,
conflicts count across a group, and a test is told of a job still running
when its dispatcher is torn down.  Real dispatchers on FileStorage."""
import os
import threading
import time

import pytest

import jobs
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.testing import (get_poll, tear_down_dispatcher,
                                     wait_for_result, wait_for_start,
                                     wait_until)
from queuetools import other_connection


def hold_while(path, seconds=30):
    """Runs while the file ``path`` exists (at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return 'released'


def note_span(log_path, name, seconds):
    """Notes when it started and ended (time.time()) in ``log_path``."""
    jobs.note(log_path, 'start-%s-%.6f' % (name, time.time()))
    time.sleep(seconds)
    jobs.note(log_path, 'end-%s-%.6f' % (name, time.time()))


def spans(log_path):
    """{name: (start, end)} from what ``note_span`` noted."""
    found = {}
    for line in jobs.notes(log_path):
        event, name, when = line.split('-')
        found.setdefault(name, {})[event] = float(when)
    return {name: (times['start'], times['end'])
            for name, times in found.items()}


def meet(directory, me, other, seconds=10):
    """Says it is here (a file named ``me``), then waits for ``other``:
    two of these meet only if they run at the same time."""
    open(os.path.join(directory, me), 'w').close()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(directory, other)):
            return 'met'
        time.sleep(0.01)
    return 'waited alone'


@pytest.fixture
def queue(file_db):
    """The queue in a connection of its own; commit with ``commit(queue)``."""
    connection, queue = other_connection(file_db)
    yield queue
    connection.transaction_manager.abort()
    connection.close()


def commit(queue):
    queue._p_jar.transaction_manager.commit()


def start(db, tmp_path, **options):
    return dispatcher_module.start(
        db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False, **options)


def test_tear_down_names_a_job_still_running(file_db, queue, tmp_path):
    before = set(threading.enumerate())
    dispatcher = start(file_db, tmp_path)
    hold = tmp_path / 'hold'
    hold.touch()
    job = queue.put(hold_while, str(hold))
    commit(queue)
    wait_for_start(job)
    with pytest.raises(AssertionError, match='hold_while') as raised:
        tear_down_dispatcher(dispatcher, seconds=1)
    assert 'still ran' in str(raised.value)
    hold.unlink()  # then let the job's thread end before the database
    wait_until(lambda: not [t for t in set(threading.enumerate()) - before
                            if t.is_alive()], 10, 'the worker threads to end')


def run_short_jobs(queue, count=20):
    """What makes a dispatcher claim ahead and group its jobs: a run of
    short ones."""
    put = [queue.put(jobs.noop) for _ in range(count)]
    commit(queue)
    for job in put:
        wait_for_result(job)


@pytest.fixture
def warm(file_db, queue, tmp_path):
    """A running dispatcher (3 slots) that has just run short jobs."""
    dispatcher = start(file_db, tmp_path)
    run_short_jobs(queue)
    yield dispatcher
    tear_down_dispatcher(dispatcher)


def test_two_slow_jobs_after_short_ones_run_side_by_side(warm, queue,
                                                         tmp_path):
    log = str(tmp_path / 'spans.log')
    first = queue.put(note_span, log, 'a', 1.0)
    second = queue.put(note_span, log, 'b', 1.0)
    commit(queue)
    wait_for_result(first)
    wait_for_result(second)
    (a_start, a_end), (b_start, b_end) = spans(log)['a'], spans(log)['b']
    assert a_start < b_end and b_start < a_end  # they overlapped


def test_two_jobs_waiting_for_each_other_meet(warm, queue, tmp_path):
    first = queue.put(meet, str(tmp_path), 'a', 'b')
    second = queue.put(meet, str(tmp_path), 'b', 'a')
    commit(queue)
    assert wait_for_result(first, 15) == 'met'
    assert wait_for_result(second, 15) == 'met'


def test_a_slow_job_does_not_hold_back_jobs_claimed_with_it(file_db, queue,
                                                            tmp_path):
    dispatcher = start(file_db, tmp_path, agent_size=2)
    try:
        run_short_jobs(queue)
        hold = tmp_path / 'hold'
        hold.touch()
        slow = queue.put(hold_while, str(hold))
        quick = [queue.put(jobs.multiply, n, 2) for n in range(5)]
        commit(queue)
        try:
            # Each quick job finishes while the slow one still runs.
            assert [wait_for_result(job, 10) for job in quick] == [
                0, 2, 4, 6, 8]
        finally:
            hold.unlink()
        assert wait_for_result(slow) == 'released'
    finally:
        tear_down_dispatcher(dispatcher)


def test_a_job_whose_group_conflicted_has_five_attempts_in_all(
        warm, queue, tmp_path):
    log = str(tmp_path / 'attempts.log')
    job = queue.put(jobs.raise_conflict, log, 'job')
    commit(queue)
    result = wait_for_result(job, 15)
    assert isinstance(result, Failure) and result.check('ZODB.POSException.ConflictError')
    assert len(jobs.notes(log)) == 5


def say_started_and_hold(started_path, hold_path):
    open(started_path, 'w').close()
    return hold_while(hold_path)


def test_a_slow_job_after_short_ones_does_not_stop_the_polls(warm, queue,
                                                             tmp_path):
    """Polls are what ping, claim for the other slots and free finished
    jobs: a grouped job must not hold them off while it runs."""
    started, hold = tmp_path / 'started', tmp_path / 'hold'
    hold.touch()
    job = queue.put(say_started_and_hold, str(started), str(hold))
    commit(queue)
    try:
        wait_until(started.exists, 10, 'the job to start')
        count = warm.polls.total
        # Two polls while the job holds (it cannot end before the file
        # is gone): get_poll fails if they do not come.
        get_poll(warm, count + 2, seconds=5)
    finally:
        hold.unlink()
    assert wait_for_result(job) == 'released'
