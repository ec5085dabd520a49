"""The dispatcher in this process, on a real FileStorage."""
import datetime
import operator
import os
import threading
import time

import BTrees.OOBTree
import pytest
import transaction

import jobs
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync import instance
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.interfaces import COMPLETED, PENDING, IQueue
from pyramid_zcasync.retry import NeverRetry
from pyramid_zcasync.testing import (get_poll, tear_down_dispatcher,
                                     wait_for_annotation, wait_for_result,
                                     wait_for_start, wait_until)


@pytest.fixture
def queue(fs_db):
    connection = fs_db.open()
    yield IQueue(connection.root())
    transaction.abort()
    connection.close()


def test_get_returns_the_running_dispatcher(dispatcher):
    assert dispatcher_module.get() is dispatcher
    assert dispatcher_module.get(dispatcher.UUID) is dispatcher
    assert dispatcher.thread.daemon and dispatcher.thread.is_alive()
    assert dispatcher.reactor.running


def test_same_uuid_twice_in_one_process_is_refused(dispatcher, fs_db,
                                                   tmp_path):
    with pytest.raises(instance.DispatcherAlreadyRunning,
                       match='already running'):
        dispatcher_module.start(fs_db, uuid_file=str(tmp_path / 'uuid.txt'),
                                install_signal_handlers=False)
    assert dispatcher_module.get() is dispatcher


def test_job_runs_and_local_knows_it(dispatcher, queue):
    job = queue.put(jobs.report_local)
    transaction.commit()
    oid, queue_name, uuid = wait_for_result(job)
    assert (oid, queue_name, uuid) == (job._p_oid, '', dispatcher.UUID)
    assert job.assignerUUID == dispatcher.UUID
    assert job.active_start <= job.active_end


def test_failure_is_recorded_and_callbacks_run(dispatcher, queue):
    tree = queue._p_jar.root()['tree'] = BTrees.OOBTree.OOBTree()
    job = queue.put(jobs.divide, 1, 0)
    job.addCallbacks(failure=_note_failure(tree))
    transaction.commit()
    result = wait_for_result(job)
    assert isinstance(result, Failure)
    assert result.check(ZeroDivisionError)
    assert 'division by zero' in result.getTraceback()
    assert tree['failure'] == 'ZeroDivisionError'
    assert job.status == COMPLETED and job.initial_callbacks_end


def _note_failure(tree):
    return _Noter(tree)


class _Noter:
    """A picklable callable (a plain class instance) holding the tree."""

    def __init__(self, tree):
        self.tree = tree

    def __call__(self, failure):
        self.tree['failure'] = failure.type_name


def test_live_annotation_is_seen_while_the_job_runs(dispatcher, queue,
                                                    tmp_path):
    hold = tmp_path / 'hold'
    hold.touch()
    job = queue.put(jobs.annotate_and_hold, str(hold))
    transaction.commit()
    wait_for_start(job)
    assert wait_for_annotation(job, 'progress') == 'half way'
    assert job.status != COMPLETED
    active = dispatcher.getActiveJobIds()
    assert active == [(int.from_bytes(job._p_oid, 'big'), 'unnamed')]
    hold.unlink()
    assert wait_for_result(job) == 'done'


def test_a_dead_worker_thread_does_not_leave_the_job_active(dispatcher,
                                                            queue):
    job = queue.put(jobs.kill_worker)
    job.retry_policy_factory = NeverRetry
    transaction.commit()
    result = wait_for_result(job)
    assert result.type_name == 'pyramid_zcasync.registry.JobInterrupted'
    assert 'WorkerKiller' in result.message
    # The pool survived: the next job runs.
    later = queue.put(operator.add, 1, 2)
    transaction.commit()
    assert wait_for_result(later) == 3


def test_scheduled_job_waits_for_begin_after(dispatcher, queue):
    begin = datetime.datetime.now(datetime.timezone.utc) \
        + datetime.timedelta(seconds=0.6)
    job = queue.put(operator.mul, 6, 7, begin_after=begin)
    transaction.commit()
    assert wait_for_result(job) == 42
    assert job.active_start >= begin


def test_scheduled_job_starts_on_time_not_at_the_next_poll(fs_db, tmp_path,
                                                           queue):
    slow_poller = dispatcher_module.start(
        fs_db, uuid_file=str(tmp_path / 'slow.txt'), poll_interval=5,
        install_signal_handlers=False)
    try:
        get_poll(slow_poller, 0)
        begin = datetime.datetime.now(datetime.timezone.utc) \
            + datetime.timedelta(seconds=0.5)
        job = queue.put(operator.mul, 6, 7, begin_after=begin)
        transaction.commit()
        assert wait_for_result(job) == 42
        assert job.active_start - begin < datetime.timedelta(seconds=0.3)
    finally:
        tear_down_dispatcher(slow_poller)


def test_monitoring_reports(dispatcher, queue):
    job = queue.put(operator.mul, 3, 4)
    transaction.commit()
    wait_for_result(job)
    poll = get_poll(dispatcher)
    assert set(poll) == {''}
    info = dispatcher.getJobInfo(int.from_bytes(job._p_oid, 'big'))
    assert info['queue'] == '' and info['agent'] == 'main'
    assert info['failed'] is False and info['result'] == '12'
    assert info['started'] <= info['completed']
    stats = dispatcher.getStatistics()
    assert stats['started'] >= 1 and stats['successful'] >= 1
    assert stats['failed'] == 0
    assert list(dispatcher.iterPolls(count=2)) == list(
        dispatcher.polls)[:2]
    with pytest.raises(ValueError, match='not in the history'):
        dispatcher.getJobInfo(999999)


def test_status_info_stuck_and_stopped(fs_db, tmp_path):
    clock = _Clock()
    started = dispatcher_module.start(
        fs_db, uuid='11111111-2222-3333-4444-555555555555',
        poll_interval=0.2, clock=clock, install_signal_handlers=False)
    try:
        get_poll(started, 0)
        assert started.getStatusInfo()['status'] == 'RUNNING'
        clock.shift(datetime.timedelta(minutes=5))
        info = started.getStatusInfo()
        assert info['status'] == 'STUCK'
        assert info['time since last poll'] >= datetime.timedelta(minutes=5)
    finally:
        tear_down_dispatcher(started)
    assert started.getStatusInfo()['status'] == 'STOPPED'


class _Clock:
    def __init__(self):
        self.offset = datetime.timedelta(0)

    def shift(self, delta):
        self.offset += delta

    def utcnow(self):
        return datetime.datetime.now(datetime.timezone.utc) + self.offset

    def sleep(self, seconds):
        pass


def test_deactivated_in_database_after_stop(fs_db, tmp_path, queue):
    started = dispatcher_module.start(
        fs_db, uuid_file=str(tmp_path / 'u.txt'), poll_interval=0.2,
        install_signal_handlers=False)
    get_poll(started, 0)
    transaction.begin()
    assert queue.dispatchers[started.UUID].activated
    assert queue.dispatchers[started.UUID]['main'].size == 3
    tear_down_dispatcher(started)
    transaction.begin()
    assert queue.dispatchers[started.UUID].activated is None
    assert dispatcher_module.get() is None


def test_a_poll_caught_by_stop_neither_reactivates_nor_claims(
        fs_db, tmp_path, queue):
    """A poll that was about to start when stop() was called waits for
    the lock stop() takes to deactivate the dispatcher.  Were it to run
    after that, it would reactivate a stopped dispatcher and claim a job
    nobody runs (until a sibling declared it dead).  Which of the two
    gets the lock first is up to the threads: tried eight times."""
    for attempt in range(8):
        started = dispatcher_module.start(
            fs_db, uuid_file=str(tmp_path / ('u%d.txt' % attempt)),
            poll_interval=60, install_signal_handlers=False)
        get_poll(started, 0)
        polls = len(started.polls)
        job = queue.put(operator.add, 1, 2)
        with started._bookkeeping:
            transaction.commit()  # wakes the dispatcher: its poll waits
            time.sleep(0.05)
            stopper = threading.Thread(target=started.stop)
            stopper.start()
            wait_until(lambda: started._stopping, 5, 'stop() to begin')
            time.sleep(0.05)  # stop() now waits to deactivate
        stopper.join(15)
        assert not stopper.is_alive()
        transaction.begin()
        assert queue.dispatchers[started.UUID].activated is None, attempt
        assert job.status == PENDING, (attempt, job.status)
        assert len(started.polls) == polls, attempt
        queue.remove(job)
        transaction.commit()


def test_uuid_file_forms_and_errors(tmp_path, monkeypatch):
    hexed = tmp_path / 'hex.txt'
    hexed.write_text('# zc.async style\n' + 'a' * 32 + '\n')
    assert instance.read_uuid(str(hexed)) == str(
        __import__('uuid').UUID('a' * 32))
    garbled = tmp_path / 'bad.txt'
    garbled.write_text('not-a-uuid\n')
    with pytest.raises(instance.UUIDFileError,
                       match='bad.txt.* does not hold a UUID') as raised:
        instance.read_uuid(str(garbled))
    assert 'not-a-uuid' not in str(raised.value)  # contents stay private
    with pytest.raises(instance.UUIDFileError, match='relative'):
        instance.resolve_uuid_file('var/uuid.txt')
    monkeypatch.delenv('ZC_ASYNC_UUID', raising=False)
    with pytest.raises(instance.UUIDFileError, match='ZC_ASYNC_UUID'):
        instance.resolve_uuid_file(None)
    created = tmp_path / 'sub' / 'new.txt'
    value = instance.read_uuid(str(created))
    assert instance.read_uuid(str(created)) == value
    monkeypatch.setenv('ZC_ASYNC_UUID', str(created))
    assert instance.resolve_uuid_file(None) == str(created)
    unreadable = tmp_path / 'dir.txt'
    os.mkdir(unreadable)
    with pytest.raises(instance.UUIDFileError, match='cannot read'):
        instance.read_uuid(str(unreadable))


def test_siblings_are_judged_only_while_our_own_pings_go_through(fs_db):
    """After an outage of the storage server (or a stall of this process)
    longer than two ping intervals, nobody could ping: judging siblings at
    once would declare live ones dead.  They get a ping interval first."""
    judge = dispatcher_module.Dispatcher(fs_db, 'u', ping_interval=30)
    now = datetime.datetime.now(datetime.timezone.utc)
    poller = judge.poller
    assert not poller.connected_throughout(now)  # never pinged yet
    poller.last_ping = now - datetime.timedelta(seconds=45)
    assert poller.connected_throughout(now)
    poller.last_ping = now - datetime.timedelta(seconds=61)
    assert not poller.connected_throughout(now)
