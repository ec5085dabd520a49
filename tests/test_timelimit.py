"""Run-time limits: jobs running too long are interrupted and fail."""
import operator
import time

import BTrees.OOBTree
import pytest
import transaction

import jobs
from pyramid_zcasync.timelimit import (TimeLimitExceeded, call_with_limit,
                                       check_limit)
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.interfaces import COMPLETED, IQueue
from pyramid_zcasync.runner import Runner


def test_a_call_within_its_limit_returns():
    assert call_with_limit(lambda: 42, 1.0) == 42
    assert call_with_limit(lambda: 42, None) == 42


def test_a_call_over_its_limit_is_interrupted():
    with pytest.raises(TimeLimitExceeded, match='time limit of 0.2 s'):
        call_with_limit(lambda: jobs.busy_for(5), 0.2)


def test_no_interruption_leaks_after_the_call():
    """Limits expiring at every moment of the call and its clean-up: the
    interruption is raised by call_with_limit or not at all, never later."""
    for _ in range(300):
        try:
            call_with_limit(lambda: jobs.busy_for(0.0002), 0.0002)
        except TimeLimitExceeded:
            pass
        jobs.busy_for(0.001)  # a late interruption would land here


@pytest.mark.parametrize('value, error', [
    (0, "time_limit must be more than 0 seconds, got 0"),
    (-1, "time_limit must be more than 0 seconds, got -1"),
    ('soon', "time_limit must be a number of seconds, got 'soon'"),
])
def test_bad_limits_are_refused(value, error):
    with pytest.raises((TypeError, ValueError), match=error):
        check_limit(value)


def write_then_spin(tree):
    tree['written'] = True
    return jobs.busy_for(5)


def test_the_runner_fails_the_job_and_aborts_its_writes(db):
    connection = db.open()
    queue = IQueue(connection.root())
    tree = connection.root()['tree'] = BTrees.OOBTree.OOBTree()
    registration = queue.dispatchers.register('u1')
    registration.add(Agent('main', 3))
    registration.activate()
    slow = queue.put(write_then_spin, tree)
    slow.time_limit = 0.3
    quick = queue.put(operator.add, 1, 2)
    quick.time_limit = 5
    transaction.commit()
    for _ in range(2):
        registration['main'].claimJob()
    transaction.commit()
    runner = Runner(db, 'u1')
    runner.run(slow._p_oid)
    runner.run(quick._p_oid)
    transaction.begin()
    assert slow.status == COMPLETED
    assert isinstance(slow.result, Failure)
    assert slow.result.check(TimeLimitExceeded)
    assert 'time limit of 0.3 s' in slow.result.message
    assert 'written' not in tree  # its transaction was aborted
    assert quick.result == 3
    connection.close()


def spin_until_interrupted(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass  # the line a time limit interrupts


def test_the_failure_shows_where_the_job_was_interrupted(db):
    connection = db.open()
    queue = IQueue(connection.root())
    registration = queue.dispatchers.register('u1')
    registration.add(Agent('main', 3))
    registration.activate()
    job = queue.put(spin_until_interrupted, 5)
    job.time_limit = 0.2
    transaction.commit()
    registration['main'].claimJob()
    transaction.commit()
    Runner(db, 'u1').run(job._p_oid)
    transaction.begin()
    traceback = job.result.getTraceback()
    assert job.result.check(TimeLimitExceeded)
    assert 'in spin_until_interrupted' in traceback
    assert 'while time.monotonic() < deadline' in traceback or \
        'pass  # the line a time limit interrupts' in traceback
    connection.close()
