"""Unique jobs: ``queue.put(f, *args, unique_key=...)`` returns the queue's
job of that key while it has not completed, exactly once across
processes; the key is free again once the job completes.

Run as a script, this module is one of the racing putters of the ZEO
test: ``python test_unique.py PORT KEY``.
"""
import datetime
import operator
import os
import subprocess
import sys

import pytest
import transaction

import jobs
import pyramid_zcasync
from pyramid_zcasync import Job, layout
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.errors import BadStatusError
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.interfaces import (ASSIGNED, COMPLETED, NEW, PENDING,
                                        IQueue)
from pyramid_zcasync.queue import Queue
from pyramid_zcasync.retry import NeverRetry
from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result
from queuetools import HOUR, now, other_connection


# -- one process --------------------------------------------------------------

def test_same_key_in_one_transaction_returns_the_first_job(queue):
    first = queue.put(operator.add, 1, 2, unique_key='report-42')
    again = queue.put(operator.add, 3, 4, unique_key='report-42')
    assert again is first
    assert first.unique_key == 'report-42'
    assert len(queue) == 1 and list(queue) == [first]
    assert again.args == [1, 2]  # the second call's arguments are dropped


def test_same_key_in_a_later_transaction_returns_the_first_job(db, queue):
    first = queue.put(operator.add, 1, 2, unique_key='report-42')
    transaction.commit()
    conn, other = other_connection(db)
    try:
        again = other.put(operator.add, 3, 4, unique_key='report-42')
        assert again._p_oid == first._p_oid
        assert again is conn.get(first._p_oid)  # the caller's connection's
        conn.transaction_manager.commit()
    finally:
        conn.close()
    transaction.begin()
    assert len(queue) == 1


def test_different_keys_queue_both(queue):
    one = queue.put(operator.add, 1, 2, unique_key='report-1')
    two = queue.put(operator.add, 1, 2, unique_key='report-2')
    plain = queue.put(operator.add, 1, 2)
    assert len({one, two, plain}) == 3 and len(queue) == 3
    assert plain.unique_key is None
    transaction.commit()


def test_a_job_instance_takes_a_key_too(queue):
    first = queue.put(Job(operator.add, 1, 2), unique_key='report-42')
    assert queue.put(Job(operator.add, 3, 4), unique_key='report-42') \
        is first
    keyed = Job(operator.add, 5, 6)
    keyed.unique_key = 'own-key'  # the job's own key is taken by a put
    assert queue.put(keyed) is keyed
    assert queue.put(operator.add, unique_key='own-key') is keyed
    assert len(queue) == 2


def test_keys_are_per_queue(conn, queue):
    queues = conn.root()['pyramid_zcasync']
    queues['other'] = Queue()
    here = queue.put(operator.add, 1, 2, unique_key='k')
    there = queues['other'].put(operator.add, 1, 2, unique_key='k')
    assert here is not there


@pytest.mark.parametrize('key, error', [
    (42, TypeError), (b'report', TypeError), (('a',), TypeError),
    ('', ValueError)])
def test_bad_keys_are_refused_naming_them(queue, key, error):
    with pytest.raises(error, match='unique_key.*%s' % repr(key).replace(
            '(', r'\(').replace(')', r'\)')):
        queue.put(operator.add, 1, 2, unique_key=key)
    assert len(queue) == 0


def test_a_cancelled_job_frees_its_key(queue):
    first = queue.put(operator.add, 1, 2, unique_key='k')
    first.cancel()
    assert first.status == COMPLETED
    second = queue.put(operator.add, 1, 2, unique_key='k')
    assert second is not first and second.status == PENDING
    assert first.unique_key == 'k'  # it remembers the key it had


def test_a_failed_job_frees_its_key(queue):
    first = queue.put(operator.add, 1, 2, unique_key='k')
    first.fail(RuntimeError('given up'))
    assert queue.put(operator.add, unique_key='k') is not first


def test_an_expired_job_frees_its_key(queue):
    first = queue.put(operator.add, 1, 2, unique_key='k',
                      begin_by=datetime.timedelta(minutes=1))
    assert queue.claim(now=now() + HOUR) is None
    assert first.result.check(TimeoutError)
    assert queue.put(operator.add, unique_key='k') is not first


def test_a_job_with_callbacks_holds_its_key_until_they_ran(queue):
    first = queue.put(operator.add, 1, 2, unique_key='k')
    callback = first.addCallback(operator.neg)
    assert queue.claim() is first
    first()  # called in place: result, then its callback
    assert first.status == COMPLETED and callback.status == COMPLETED
    assert queue.put(operator.add, unique_key='k') is not first


def test_a_job_requeued_for_a_retry_keeps_its_key(queue):
    first = queue.put(operator.add, 1, 2, unique_key='k')
    assert queue.claim() is first and first.status == ASSIGNED
    assert queue.put(operator.add, unique_key='k') is first
    queue.requeue(first)
    assert first.status == PENDING
    assert queue.put(operator.add, unique_key='k') is first
    assert len(queue) == 1


def test_a_pulled_job_frees_its_key_and_takes_it_again(queue):
    first = queue.put(operator.add, 1, 2, unique_key='k')
    assert queue.pull() is first and first.status == NEW
    second = queue.put(operator.add, 3, 4, unique_key='k')
    assert second is not first
    second.cancel()
    assert queue.put(first) is first  # put again: it holds its key again
    assert queue.put(operator.add, unique_key='k') is first


def test_a_retried_failed_job_takes_its_key_again(queue):
    first = queue.put(operator.add, 1, 2, unique_key='k')
    first.fail()
    assert queue.retry_failed(first) is first
    assert queue.put(operator.add, unique_key='k') is first


def test_a_failed_job_is_not_retried_while_another_holds_its_key(queue):
    first = queue.put(operator.add, 1, 2, unique_key='k')
    first.fail()
    second = queue.put(operator.add, 3, 4, unique_key='k')
    with pytest.raises(BadStatusError, match="unique key 'k' is held"):
        queue.retry_failed(first)
    assert first.status == COMPLETED and isinstance(first.result, Failure)
    assert list(queue) == [second]


def test_a_completed_job_left_in_the_index_holds_nothing(queue):
    """The lifecycle frees a key when its job completes; a put reads an
    entry of a completed job as free all the same, and takes it over."""
    done = Job(operator.add, 1, 2)
    done()
    queue._unique['k'] = done
    fresh = queue.put(operator.add, 3, 4, unique_key='k')
    assert fresh is not done and queue._unique['k'] is fresh


def test_a_queue_stored_before_unique_keys(queue):
    """Its index is made by the upgrade (install_queues), or, if it was
    not run, by the first put with a key; jobs stored before have no
    key."""
    del queue._unique  # as stored before
    assert Job(operator.add).unique_key is None
    assert queue.put(operator.add, 1, 2) is not None  # writes no index
    assert queue._unique is None
    first = queue.put(operator.add, 1, 2, unique_key='k')
    assert queue.put(operator.add, unique_key='k') is first
    del queue._unique
    assert layout.needs_upgrade(queue)
    assert layout.upgrade(queue)
    assert not layout.needs_upgrade(queue)
    assert list(queue._unique.keys()) == ['']  # only its floor


# -- a real dispatcher --------------------------------------------------------

@pytest.fixture
def running(fs_db, tmp_path):
    """A queue of ``fs_db`` served by a dispatcher of this process."""
    started = dispatcher_module.start(
        fs_db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False)
    connection = fs_db.open()
    yield IQueue(connection.root())
    transaction.abort()
    connection.close()
    tear_down_dispatcher(started)


def test_a_completed_job_frees_its_key(running):
    first = running.put(operator.add, 1, 2, unique_key='k')
    transaction.commit()
    assert wait_for_result(first) == 3
    assert 'k' not in running._unique
    second = running.put(operator.add, 3, 4, unique_key='k')
    assert second is not first
    transaction.commit()
    assert wait_for_result(second) == 7


def test_a_job_failed_by_the_dispatcher_frees_its_key(running):
    first = running.put(jobs.divide, 1, 0, unique_key='k')
    first.retry_policy_factory = NeverRetry
    transaction.commit()
    assert wait_for_result(first).check(ZeroDivisionError)
    second = running.put(operator.add, 3, 4, unique_key='k')
    assert second is not first
    transaction.commit()
    assert wait_for_result(second) == 7


# -- two processes over ZEO ---------------------------------------------------

def race_put(port, key):
    """One racing putter: put, say so, wait for the word to commit; on a
    conflict, retry at once.  Prints the oid it got and its attempts."""
    import ZEO
    from ZODB.POSException import ConflictError
    db = ZEO.DB(('127.0.0.1', port), wait_timeout=30)
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    attempts = 0
    while True:
        attempts += 1
        job = IQueue(connection.root()).put(operator.add, 1, 2,
                                           unique_key=key)
        if attempts == 1:
            print('put', flush=True)
            sys.stdin.readline()
        try:
            manager.commit()
            break
        except ConflictError:
            manager.abort()
    print('%s %d' % (job._p_oid.hex(), attempts), flush=True)
    connection.close()
    db.close()


def putter(port, key):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.abspath(__file__))] + sys.path))
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), str(port), key],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def test_two_processes_racing_over_zeo_queue_one_job(zeo_server):
    db = zeo_server.db()
    pyramid_zcasync.install_queues(db)
    putters = [putter(zeo_server.port, 'report-42') for _ in range(2)]
    try:
        # Both have put (neither committed) before either may commit.
        assert [p.stdout.readline().strip() for p in putters] == ['put'] * 2
        for process in putters:
            process.stdin.write('commit\n')
            process.stdin.flush()
        outputs = [process.communicate(timeout=60)[0].split()
                   for process in putters]
    finally:
        for process in putters:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    oids = {oid for oid, _ in outputs}
    assert len(oids) == 1, outputs
    assert sorted(int(attempts) for _, attempts in outputs) == [1, 2]
    connection = db.open()
    try:
        queue = IQueue(connection.root())
        assert len(queue) == 1
        job = queue[0]
        assert job._p_oid.hex() in oids and job.unique_key == 'report-42'
        assert queue._unique['report-42'] is job
    finally:
        connection.close()
        db.close()


if __name__ == '__main__':
    race_put(int(sys.argv[1]), sys.argv[2])
