"""Runner: a claimed job run in transactions of its own, with retries."""
import datetime
import operator
import threading

import persistent.list
import psycopg2
import pytest
import transaction
import ZODB
import ZODB.MappingStorage
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError

import pyramid_zcasync
from pyramid_zcasync import Job, local
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.interfaces import (ACTIVE, ASSIGNED, COMPLETED,
                                        PENDING, IQueue)
from pyramid_zcasync.retry import NeverRetry
from pyramid_zcasync.runner import Runner

UTC = datetime.timezone.utc
FIXED = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)

#: Calls per key, outside ZODB: aborted attempts cannot undo these.
CALLS = {}


def flaky(key, failures, exc_type):
    """Raise ``exc_type`` on the first ``failures`` calls, then succeed."""
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] <= failures:
        raise exc_type('attempt %d' % CALLS[key])
    return 'done after %d calls' % CALLS[key]


def flaky_callback(key, failures, result):
    flaky(key, failures, ConflictError)
    return result * 10


def bump(counter):
    counter.append(len(counter))
    return len(counter)


def bump_and_conflict(key, counter):
    counter.append('written')
    return flaky(key, 1, ConflictError)


def returns_a_lock():
    return threading.Lock()


def append_to(log, value):
    log.append(value)
    return value


#: Events a running job waits for, by key.
EVENTS = {}


def report_progress(key):
    job = local.get_job()
    local.set_live_annotation('progress', 'half way')
    assert EVENTS[key].wait(10), 'the test never let the job finish'
    return (job.status, local.get_queue().name, local.get_dispatcher())


def queue_inner_and_return_it(value):
    return local.get_queue().put(operator.mul, value, 2)


def deferred_result(value):
    from twisted.internet import defer
    return defer.succeed(value)


def deferred_failure():
    from twisted.internet import defer
    return defer.fail(KeyError('from a deferred'))


class FakeClock:
    """Records the back-off instead of sleeping; time stands still."""

    def __init__(self, db=None):
        self.db = db
        self.slept = []
        self.open_connections = []

    def utcnow(self):
        return FIXED

    def sleep(self, seconds):
        self.slept.append(seconds)
        if self.db is not None:
            self.open_connections.append(sum(
                1 for info in self.db.connectionDebugInfo()
                if info['opened']))


@pytest.fixture(autouse=True)
def clear_calls():
    CALLS.clear()


@pytest.fixture
def main(db, conn, queue):
    registration = queue.dispatchers.register('u1')
    agent = registration.add(Agent('main', 3))
    registration.activate()
    transaction.commit()
    return agent


def claim_one(db, uuid='u1'):
    """What a dispatcher's poll does: claim a job and commit; its oid."""
    manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=manager)
    try:
        with manager:
            job = IQueue(conn.root()).dispatchers[uuid]['main'].claimJob()
            return None if job is None else job._p_oid
    finally:
        conn.close()


def drain(db, uuid='u1', clock=None, limit=50):
    """Claim and run jobs until none is due; the oids run, in order."""
    runner = Runner(db, uuid=uuid, clock=clock)
    ran = []
    for _ in range(limit):
        oid = claim_one(db, uuid)
        if oid is None:
            return ran
        runner.run(oid)
        ran.append(oid)
    raise AssertionError('still claiming after %d jobs' % limit)


def test_run_commits_the_result(db, conn, queue, main):
    job = queue.put(operator.mul, 6, 7)
    transaction.commit()
    assert drain(db) == [job._p_oid]
    transaction.begin()
    assert job.status == COMPLETED
    assert job.result == 42
    assert job.assignerUUID == 'u1'
    assert job.active_start <= job.active_end
    assert len(main) == 0
    assert main.completed.first() is job


def test_run_persists_changes_made_by_the_job(db, conn, queue, main):
    counter = conn.root()['counter'] = persistent.list.PersistentList()
    queue.put(bump, counter)
    queue.put(bump, counter)
    transaction.commit()
    drain(db)
    transaction.begin()
    assert list(counter) == [0, 1]


def test_failed_job_records_failure_and_is_not_retried(db, conn, queue,
                                                       main):
    job = queue.put(flaky, 'value', 10, ValueError)
    transaction.commit()
    drain(db)
    transaction.begin()
    assert CALLS['value'] == 1
    assert job.status == COMPLETED
    assert isinstance(job.result, Failure)
    assert job.result.check(ValueError)
    assert job.result.message == 'attempt 1'


def test_conflict_twice_then_success(db, conn, queue, main):
    counter = conn.root()['counter'] = persistent.list.PersistentList()
    job = queue.put(bump_and_conflict, 'twice', counter)
    transaction.commit()
    drain(db)
    transaction.begin()
    assert CALLS['twice'] == 2
    assert job.result == 'done after 2 calls'
    assert list(counter) == ['written']  # the aborted attempt left nothing

    CALLS.clear()
    job = queue.put(flaky, 'two', 2, ConflictError)
    transaction.commit()
    drain(db)
    transaction.begin()
    assert CALLS['two'] == 3
    assert job.status == COMPLETED
    assert job.result == 'done after 3 calls'
    assert job.annotations['pyramid_zcasync.retry'] == {'conflict': 2}


def test_always_conflicting_job_fails_after_5_attempts(db, conn, queue,
                                                       main):
    job = queue.put(flaky, 'always', 1000, ConflictError)
    transaction.commit()
    drain(db)
    transaction.begin()
    assert CALLS['always'] == 5
    assert job.status == COMPLETED
    assert job.result.check(ConflictError)
    assert job.annotations['pyramid_zcasync.retry'] == {'conflict': 5}


def test_never_retry_conflict_runs_once(db, conn, queue, main):
    job = Job(flaky, 'once', 1000, ConflictError)
    job.retry_policy_factory = NeverRetry
    queue.put(job)
    transaction.commit()
    drain(db)
    transaction.begin()
    assert CALLS['once'] == 1
    assert job.result.check(ConflictError)


def test_client_disconnected_backs_off_without_holding_a_connection(
        db, conn, queue, main):
    job = queue.put(flaky, 'zeo', 6, ClientDisconnected)
    transaction.commit()
    clock = FakeClock(db)
    opened_before = sum(1 for info in db.connectionDebugInfo()
                        if info['opened'])
    drain(db, clock=clock)
    transaction.begin()
    assert clock.slept == [5, 10, 20, 40, 60, 60]
    # only the test's own connection was open while waiting
    assert clock.open_connections == [opened_before] * 6
    assert CALLS['zeo'] == 7
    assert job.result == 'done after 7 calls'
    assert job.active_start == FIXED
    assert job.annotations['pyramid_zcasync.retry'] == {'disconnected': 6}


def test_commit_error_fails_the_job_all_or_nothing(db, conn, queue, main):
    job = queue.put(returns_a_lock)
    transaction.commit()
    drain(db)
    transaction.begin()
    assert job.status == COMPLETED
    assert isinstance(job.result, Failure)
    assert 'lock' in job.result.message
    assert len(main) == 0


def test_callbacks_run_after_the_job(db, conn, queue, main):
    log = conn.root()['log'] = persistent.list.PersistentList()
    job = queue.put(operator.add, 40, 2)
    job.addCallback(Job(append_to, log))
    errback = job.addCallbacks(failure=append_to)
    transaction.commit()
    drain(db)
    transaction.begin()
    assert list(log) == [42]
    assert job.status == COMPLETED
    assert errback.status == COMPLETED and errback.result == 42
    assert job.initial_callbacks_end is not None
    assert len(main) == 0


def test_conflicting_callback_is_retried_until_it_commits(db, conn, queue,
                                                          main):
    job = queue.put(operator.add, 1, 1)
    callback = job.addCallback(Job(flaky_callback, 'callback', 8))
    transaction.commit()
    drain(db)
    transaction.begin()
    assert CALLS['callback'] == 9  # callbacks retry conflicts forever
    assert callback.result == 20
    assert job.status == COMPLETED


def test_callback_added_after_completion_runs_via_the_queue(db, conn, queue,
                                                            main):
    log = conn.root()['log'] = persistent.list.PersistentList()
    job = queue.put(operator.add, 2, 3)
    transaction.commit()
    drain(db)
    transaction.begin()
    callback = job.addCallback(Job(append_to, log))
    assert callback.status == PENDING
    transaction.commit()
    assert drain(db) == [callback._p_oid]
    transaction.begin()
    assert list(log) == [5]
    assert callback.status == COMPLETED


def test_running_job_sees_itself_and_sets_live_annotations(db, conn, queue,
                                                          main):
    EVENTS['live'] = threading.Event()
    job = queue.put(report_progress, 'live')
    transaction.commit()
    worker = threading.Thread(target=drain, args=(db,))
    worker.start()
    try:
        for _ in range(500):
            transaction.begin()
            if job.annotations.get('progress') == 'half way':
                break
            worker.join(0.01)
        # seen from here while the job is still running
        assert job.status == ACTIVE
        assert job.annotations['progress'] == 'half way'
    finally:
        EVENTS['live'].set()
        worker.join(10)
    transaction.begin()
    assert job.result == (ACTIVE, '', None)
    assert job.annotations['progress'] == 'half way'
    assert local.get_job() is None


def test_job_returning_a_queued_job_completes_with_it(db, conn, queue,
                                                      main):
    log = conn.root()['log'] = persistent.list.PersistentList()
    outer = queue.put(queue_inner_and_return_it, 21)
    outer.addCallback(Job(append_to, log))
    transaction.commit()
    ran = drain(db)
    transaction.begin()
    # outer, inner, then outer's callback (outer had no worker any more)
    assert len(ran) == 3
    assert outer.status == COMPLETED
    assert outer.result == 42
    assert list(log) == [42]
    assert len(main) == 0  # waiting held no slot; nothing left behind


def test_job_returning_deferreds(db, conn, queue, main):
    good = queue.put(deferred_result, 'fired')
    bad = queue.put(deferred_failure)
    transaction.commit()
    drain(db)
    transaction.begin()
    assert good.result == 'fired'
    assert bad.result.check(KeyError)


def test_runner_leaves_jobs_it_does_not_own(db, conn, queue, main):
    job = queue.put(operator.add, 1, 1)
    transaction.commit()
    oid = claim_one(db)
    Runner(db, uuid='someone-else').run(oid)
    transaction.begin()
    assert job.status == ASSIGNED
    assert job.result is None
    Runner(db, uuid='u1').run(oid)
    transaction.begin()
    assert job.result == 2


class FlakyServerStorage(ZODB.MappingStorage.MappingStorage):
    """Loads raise ClientDisconnected while ``down`` is set, as a ZEO
    client's do while its server is away."""

    down = False

    def loadBefore(self, oid, tid):
        if self.down:
            raise ClientDisconnected('server went away')
        return super().loadBefore(oid, tid)


class ServerComesBackClock(FakeClock):
    """The server is back after ``outage`` waits; ZEO drops its caches."""

    def __init__(self, db, storage, outage):
        super().__init__(db)
        self.storage = storage
        self.outage = outage

    def sleep(self, seconds):
        super().sleep(seconds)
        self.db.cacheMinimize()  # a reconnected client reloads objects
        if len(self.slept) >= self.outage:
            self.storage.down = False


STORAGES = {}


def lose_the_server(key):
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] == 1:
        STORAGES[key].down = True
        raise ClientDisconnected('server went away')
    return 'ran %d times' % CALLS[key]


@pytest.mark.parametrize('outage', [1, 3])
def test_server_away_while_the_runner_reloads_the_job(outage):
    storage = FlakyServerStorage()
    db = ZODB.DB(storage)
    try:
        pyramid_zcasync.install_queues(db)
        manager = transaction.TransactionManager()
        conn = db.open(transaction_manager=manager)
        queue = IQueue(conn.root())
        registration = queue.dispatchers.register('u1')
        registration.add(Agent('main', 3))
        registration.activate()
        STORAGES['zeo-away'] = storage
        job = queue.put(lose_the_server, 'zeo-away')
        manager.commit()
        clock = ServerComesBackClock(db, storage, outage)
        oid = claim_one(db)
        Runner(db, uuid='u1', clock=clock).run(oid)
        manager.begin()
        assert job.status == COMPLETED
        assert job.result == 'ran 2 times'
        # one back-off after the call failed, then one per failed reload
        assert clock.slept == [5, 10, 20][:outage]
        assert job.annotations['pyramid_zcasync.retry'] == {
            'disconnected': outage}
        conn.close()
    finally:
        STORAGES.clear()
        db.close()


def test_server_away_while_recording_a_failure():
    storage = FlakyServerStorage()
    db = ZODB.DB(storage)
    try:
        pyramid_zcasync.install_queues(db)
        manager = transaction.TransactionManager()
        conn = db.open(transaction_manager=manager)
        queue = IQueue(conn.root())
        registration = queue.dispatchers.register('u1')
        registration.add(Agent('main', 3))
        registration.activate()
        STORAGES['record'] = storage
        job = Job(lose_the_server, 'record')
        job.retry_policy_factory = NeverRetry
        queue.put(job)
        manager.commit()
        clock = ServerComesBackClock(db, storage, outage=2)
        Runner(db, uuid='u1', clock=clock).run(claim_one(db))
        manager.begin()
        assert CALLS['record'] == 1  # NeverRetry: not called again
        assert clock.slept == [5, 10]  # waited to write the failure
        assert job.status == COMPLETED
        assert job.result.check(ClientDisconnected)
        conn.close()
    finally:
        STORAGES.clear()
        db.close()


def raise_disconnected(connection):
    raise ClientDisconnected('server went away')


def test_plain_transact_does_not_wait_for_the_server(db):
    """The dispatcher's own bookkeeping (deactivate at shutdown) must not
    hang while the server is away: only job bookkeeping waits."""
    clock = FakeClock()
    runner = Runner(db, uuid='u1', clock=clock)
    with pytest.raises(ClientDisconnected):
        runner.transact(raise_disconnected)
    assert clock.slept == []


class OpensWhileTheServerIsAway(ZODB.DB):
    """Opening a connection raises what RelStorage raises while
    PostgreSQL restarts (opening polls the server), ``away`` times."""

    away = 0

    def open(self, *args, **kwargs):
        if self.away:
            self.away -= 1
            raise psycopg2.OperationalError(
                'the database system is shutting down')
        return super().open(*args, **kwargs)


def test_bookkeeping_waits_out_a_server_that_refuses_connections():
    db = OpensWhileTheServerIsAway(ZODB.MappingStorage.MappingStorage())
    try:
        pyramid_zcasync.install_queues(db)
        db.away = 2
        clock = FakeClock()
        runner = Runner(db, uuid='u1', clock=clock)
        written = runner.bookkeep(lambda conn: conn.root().setdefault(
            'written', 'yes'))
        assert written == 'yes'
        assert clock.slept == [5, 10]  # backed off twice, then wrote
        conn = db.open()
        assert conn.root()['written'] == 'yes'
        conn.close()
    finally:
        db.close()
