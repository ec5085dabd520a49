"""Job dependencies: ``queue.put(f, *args, after=[job_a, job_b])`` runs
once every listed job completed successfully; if one failed, was
cancelled or expired, the job completes with DependencyFailed without
running.  Waiting jobs are out of reach of claims until their
prerequisites wake them (no scan).
"""
import datetime
import operator
import time

import BTrees.OOBTree
import pytest
import transaction
import ZODB
import ZODB.MappingStorage

import jobs
import pyramid_zcasync
from pyramid_zcasync import Job, deps, layout, lifecycle
from pyramid_zcasync.errors import DependencyFailed
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.interfaces import COMPLETED, PENDING, IQueue
from pyramid_zcasync.retry import NeverRetry
from pyramid_zcasync.testing import wait_for_result
from queuetools import HOUR, now, other_connection


def pass_through(result):
    return result


def busy_and_note(log_path, name, seconds):
    """Runs ``seconds``, then notes ``name`` in the shared log."""
    time.sleep(seconds)
    jobs.note(log_path, name)
    return name


def claim_and_run(queue, expected):
    """Claim the next job, which must be ``expected``, and run it here."""
    job = queue.claim()
    assert job is expected
    job()
    return job


# -- one process --------------------------------------------------------------

def test_a_waiting_job_is_not_claimable_until_both_succeeded(queue):
    a = queue.put(operator.add, 1, 2)
    b = queue.put(operator.add, 3, 4)
    c = queue.put(operator.add, 5, 6, after=[a, b])
    transaction.commit()
    assert c.status == PENDING and deps.is_waiting(c)
    assert deps.waiting_for(c) == (a, b)
    assert c not in queue and list(queue) == [a, b]
    assert len(queue) == 2 and deps.waiting_count(queue) == 1
    assert deps.waiting_jobs(queue) == [c]
    claim_and_run(queue, a)
    assert deps.waiting_for(c) == (b,)
    settle = queue[-1]  # as b might be completing meanwhile
    assert settle.callable is lifecycle.settle_waiting
    assert queue.claim() is b
    b()
    assert not deps.is_waiting(c) and deps.waiting_for(c) == ()
    assert list(queue) == [settle, c] and deps.waiting_count(queue) == 0
    claim_and_run(queue, settle)
    assert settle.result is True
    claim_and_run(queue, c)
    assert c.result == 11
    details = [event.detail for event in c.events]
    assert details[0] == 'put, waiting for 2 jobs'
    assert 'prerequisites done' in details


def test_a_failed_prerequisite_fails_the_job_without_running(queue):
    tree = queue._p_jar.root()['tree'] = BTrees.OOBTree.OOBTree()
    a = queue.put(jobs.divide, 1, 0)
    c = queue.put(jobs.remember, tree, 'c', 1, after=[a])
    seen = c.addCallback(pass_through)
    transaction.commit()
    claim_and_run(queue, a)
    assert isinstance(a.result, Failure)
    assert c.status == COMPLETED and 'c' not in tree
    assert c.result.check(DependencyFailed)
    assert a._oid_repr() in c.result.message
    assert 'divide' in c.result.message
    assert 'ZeroDivisionError' in c.result.message
    assert deps.waiting_count(queue) == 0
    claim_and_run(queue, seen)  # its callback, queued, sees the failure
    assert seen.result.check(DependencyFailed)


def test_a_cancelled_prerequisite_fails_the_job(queue):
    a = queue.put(operator.add, 1, 2)
    c = queue.put(operator.add, 3, 4, after=[a])
    transaction.commit()
    a.cancel()
    assert c.status == COMPLETED and c.result.check(DependencyFailed)
    assert 'JobCancelled' in c.result.message
    assert list(queue) == []


def test_an_expired_prerequisite_fails_the_job(queue):
    a = queue.put(operator.add, 1, 2, begin_by=now() + HOUR)
    c = queue.put(operator.add, 3, 4, after=[a])
    queue.claim(now=now() + 2 * HOUR)
    assert a.result.check(TimeoutError)
    assert c.result.check(DependencyFailed)


def test_a_chain_runs_in_order(queue):
    a = queue.put(operator.add, 1, 2)
    b = queue.put(operator.add, 3, 4, after=[a])
    c = queue.put(operator.add, 5, 6, after=[b])
    assert list(queue) == [a]
    claim_and_run(queue, a)
    assert list(queue) == [b] and deps.is_waiting(c)
    claim_and_run(queue, b)
    claim_and_run(queue, c)
    assert c.result == 11


def test_a_failure_cascades_down_a_chain(queue):
    a = queue.put(jobs.divide, 1, 0)
    b = queue.put(operator.add, 3, 4, after=[a])
    c = queue.put(operator.add, 5, 6, after=[b])
    d = queue.put(operator.add, 7, 8, after=[c, a])
    claim_and_run(queue, a)
    for job in (b, c, d):
        assert job.status == COMPLETED and job.result.check(DependencyFailed)
    assert b._oid_repr() in c.result.message
    assert list(queue) == [] and deps.waiting_count(queue) == 0


def test_prerequisites_completed_at_the_put(queue):
    done = queue.put(operator.add, 1, 2)
    failed = queue.put(jobs.divide, 1, 0)
    claim_and_run(queue, done)
    claim_and_run(queue, failed)
    ready = queue.put(operator.add, 3, 4, after=[done])
    assert ready in queue and not deps.is_waiting(ready)
    doomed = queue.put(operator.add, 5, 6, after=[done, failed])
    assert doomed.status == COMPLETED and doomed._p_oid is not None
    assert doomed.result.check(DependencyFailed)
    assert doomed not in queue
    transaction.commit()


def test_after_empty_is_as_not_given(queue):
    job = queue.put(operator.add, 1, 2, after=[])
    assert job in queue and deps.waiting_for(job) == ()


@pytest.mark.parametrize('value, error, named', [
    ([1], TypeError, '1'),
    ('abc', TypeError, "'abc'"),
    (42, TypeError, '42'),
    ([operator.add], TypeError, 'add'),
])
def test_bad_after_values_are_refused_naming_them(queue, value, error,
                                                  named):
    with pytest.raises(error, match=named):
        queue.put(operator.add, 1, 2, after=value)
    assert len(queue) == 0


def test_a_job_that_was_not_put_is_refused(queue):
    loose = Job(operator.add, 1, 2)
    with pytest.raises(ValueError, match='not stored'):
        queue.put(operator.add, after=[loose])
    queue._p_jar.add(loose)
    with pytest.raises(ValueError, match='was not put'):
        queue.put(operator.add, after=[loose])
    with pytest.raises(TypeError, match='iterable of jobs'):
        queue.put(operator.add, after=queue.put(operator.add, 1, 2))


def test_a_job_cannot_wait_for_itself(queue):
    job = queue.put(operator.add, 1, 2)
    transaction.commit()
    queue.remove(job)
    with pytest.raises(ValueError, match='itself'):
        queue.put(job, after=[job])


def test_a_prerequisite_of_another_queue(db):
    pyramid_zcasync.install_queues(db, ['', 'other'])
    conn = db.open()
    try:
        queues = conn.root()[pyramid_zcasync.interfaces.KEY]
        a = queues['other'].put(operator.add, 1, 2)
        c = queues[''].put(operator.add, 3, 4, after=[a])
        transaction.commit()
        assert deps.waiting_count(queues['']) == 1
        assert deps.waiting_jobs(queues['']) == [c]
        assert deps.waiting_jobs(queues['other']) == []
        claim_and_run(queues['other'], a)
        assert c in queues[''] and deps.waiting_count(queues['']) == 0
    finally:
        transaction.abort()
        conn.close()


def test_a_prerequisite_of_another_database_is_refused():
    databases = {}
    one = ZODB.DB(ZODB.MappingStorage.MappingStorage(), databases=databases,
                  database_name='one')
    two = ZODB.DB(ZODB.MappingStorage.MappingStorage(), databases=databases,
                  database_name='two')
    pyramid_zcasync.install_queues(one)
    pyramid_zcasync.install_queues(two)  # queues of its own, in its root
    conn = one.open()
    try:
        queue = IQueue(conn.root())
        there = IQueue(conn.get_connection('two').root())
        elsewhere = there.put(operator.add, 1, 2)
        with pytest.raises(ValueError, match="database 'two'"):
            queue.put(operator.add, after=[elsewhere])
    finally:
        transaction.abort()
        conn.close()
        for database in databases.values():
            database.close()


def test_a_prerequisite_loaded_by_another_connection(db, queue):
    a = queue.put(operator.add, 1, 2)
    transaction.commit()
    conn, other = other_connection(db)
    try:
        c = other.put(operator.add, 3, 4, after=[a])
        assert deps.waiting_for(c) == (conn.get(a._p_oid),)
        conn.transaction_manager.commit()
    finally:
        conn.close()


def test_cancelling_a_waiting_job_fails_its_dependents(queue):
    a = queue.put(operator.add, 1, 2)
    c = queue.put(operator.add, 3, 4, after=[a])
    d = queue.put(operator.add, 5, 6, after=[c])
    c.cancel()
    assert c.status == COMPLETED and not deps.is_waiting(c)
    assert d.result.check(DependencyFailed) and 'JobCancelled' in (
        d.result.message)
    assert deps.waiting_count(queue) == 0
    claim_and_run(queue, a)  # does not revive c
    assert c.status == COMPLETED and list(queue) == []


def test_retrying_a_failed_prerequisite_does_not_revive_dependents(queue):
    a = queue.put(jobs.divide, 1, 0)
    c = queue.put(operator.add, 3, 4, after=[a])
    claim_and_run(queue, a)
    queue.retry_failed(a)
    a.args[1] = 1
    claim_and_run(queue, a)
    assert a.result == 1.0
    assert c.result.check(DependencyFailed) and list(queue) == []


def test_a_waiting_job_holds_its_unique_key(queue):
    a = queue.put(operator.add, 1, 2)
    c = queue.put(operator.add, 3, 4, after=[a], unique_key='k')
    assert queue.put(operator.add, 5, 6, unique_key='k', after=[]) is c
    claim_and_run(queue, a)
    claim_and_run(queue, c)
    assert queue.put(operator.add, 5, 6, unique_key='k') is not c


def test_a_waiting_job_cannot_be_put_again(queue):
    a = queue.put(operator.add, 1, 2)
    c = queue.put(operator.add, 3, 4, after=[a])
    with pytest.raises(Exception, match='only new jobs'):
        queue.put(c)


def test_a_queue_stored_before_dependencies(queue):
    """Its index is made by the upgrade (install_queues), or, if it was
    not run, by the first put with prerequisites."""
    del queue._dependents  # as stored before
    a = queue.put(operator.add, 1, 2)
    claim_and_run(queue, a)  # a completion reads no index
    assert deps.index(queue) is None
    b = queue.put(operator.add, 1, 2)
    c = queue.put(operator.add, 3, 4, after=[b])
    assert deps.index(queue) is not None
    claim_and_run(queue, b)
    assert c in queue
    del queue._dependents
    assert layout.needs_upgrade(queue)
    assert layout.upgrade(queue)
    assert not layout.needs_upgrade(queue)
    assert list(deps.index(queue).waiting.keys()) == [deps.FLOOR]


# -- a real dispatcher --------------------------------------------------------

@pytest.fixture
def running(fs_db, dispatcher):
    """A queue of ``fs_db`` served by a dispatcher of this process."""
    connection = fs_db.open()
    connection.root()['tree'] = BTrees.OOBTree.OOBTree()
    transaction.commit()
    yield IQueue(connection.root())
    transaction.abort()
    connection.close()


def test_a_job_runs_after_both_prerequisites(running, tmp_path):
    log = str(tmp_path / 'log')
    a = running.put(busy_and_note, log, 'a', 0.3)
    b = running.put(busy_and_note, log, 'b', 0.1)
    c = running.put(busy_and_note, log, 'c', 0, after=[a, b])
    transaction.commit()
    assert wait_for_result(c) == 'c'
    assert sorted(jobs.notes(log)[:2]) == ['a', 'b']
    assert jobs.notes(log)[2:] == ['c']
    assert c.active_start >= max(a.active_end, b.active_end)


def test_a_failed_prerequisite_with_a_dispatcher(running, tmp_path):
    log = str(tmp_path / 'log')
    tree = running._p_jar.root()['tree']
    a = running.put(jobs.divide, 1, 0)
    a.retry_policy_factory = NeverRetry
    c = running.put(jobs.remember, tree, 'c', 1, after=[a])
    c.addCallback(Job(jobs.noting_callback, log, 'callback'))
    transaction.commit()
    assert wait_for_result(a).check(ZeroDivisionError)
    assert wait_for_result(c).check(DependencyFailed)
    _wait_for_notes(log, 1)
    assert 'c' not in tree


def test_a_cancelled_prerequisite_with_a_dispatcher(running):
    a = running.put(operator.add, 1, 2,
                    begin_after=now() + datetime.timedelta(hours=1))
    c = running.put(operator.add, 3, 4, after=[a])
    transaction.commit()
    a.cancel()
    transaction.commit()
    assert wait_for_result(c).check(DependencyFailed)


def test_a_chain_with_a_dispatcher(running, tmp_path):
    log = str(tmp_path / 'log')
    a = running.put(busy_and_note, log, 'a', 0)
    b = running.put(busy_and_note, log, 'b', 0, after=[a])
    c = running.put(busy_and_note, log, 'c', 0, after=[b])
    transaction.commit()
    assert wait_for_result(c) == 'c'
    assert jobs.notes(log) == ['a', 'b', 'c']


def _wait_for_notes(log, count, seconds=6):
    deadline = time.monotonic() + seconds
    while len(jobs.notes(log)) < count:
        assert time.monotonic() < deadline, jobs.notes(log)
        time.sleep(0.05)


# -- eager mode ---------------------------------------------------------------

def test_eager_mode_runs_a_job_after_its_prerequisites(fs_db):
    from pyramid_zcasync.testing import eager
    connection = fs_db.open()
    try:
        queue = IQueue(connection.root())
        with eager(fs_db):
            a = queue.put(operator.add, 1, 2)
            b = queue.put(operator.add, 3, 4)
            c = queue.put(operator.add, 5, 6, after=[a, b])
            failed = queue.put(jobs.divide, 1, 0)
            failed.retry_policy_factory = NeverRetry
            d = queue.put(operator.add, 7, 8, after=[failed])
            transaction.commit()
        transaction.begin()  # to see the eager runs' commits
        assert (a.result, b.result, c.result) == (3, 7, 11)
        assert d.result.check(DependencyFailed)
    finally:
        transaction.abort()
        connection.close()
