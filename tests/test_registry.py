"""Dispatcher registrations: activation, pings, death and job recovery."""
import datetime
import operator

import persistent.list
import pytest
import transaction

from pyramid_zcasync import Job
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.interfaces import COMPLETED, PENDING, IQueue
from pyramid_zcasync.registry import JobInterrupted, DispatcherAgent
from pyramid_zcasync.retry import NeverRetry
from pyramid_zcasync.runner import Runner

UTC = datetime.timezone.utc
SECOND = datetime.timedelta(seconds=1)
MINUTE = datetime.timedelta(minutes=1)


def append_to(log, value):
    log.append(value)


@pytest.fixture
def main(queue):
    """Dispatcher u1 activated with agent ``main`` (size 3), committed."""
    registration = queue.dispatchers.register('u1')
    agent = registration.add(Agent('main', 3))
    registration.activate()
    transaction.commit()
    return agent


def claim_and_start(queue, agent, *jobs):
    """Queue ``jobs``; the agent claims them all and starts all but the
    ASSIGNED-only first one, as a dispatcher would before dying."""
    for job in jobs:
        queue.put(job)
        assert agent.claimJob() is job
    for job in jobs[1:]:
        job.mark_active()
    transaction.commit()


def test_register_and_activate(queue):
    registration = queue.dispatchers.register('u1')
    assert isinstance(registration, DispatcherAgent)
    assert registration.UUID == 'u1'
    assert queue.dispatchers['u1'] is registration and 'u1' in (
        queue.dispatchers)
    assert list(queue.dispatchers) == ['u1'] and len(queue.dispatchers) == 1
    assert registration.activated is None
    assert registration.ping_interval == 30 * SECOND
    assert registration.ping_death_interval == 60 * SECOND
    with pytest.raises(KeyError, match='already registered'):
        queue.dispatchers.register('u1')
    registration.activate()
    assert registration.activated.tzinfo is not None
    assert not registration.dead
    transaction.commit()


def test_register_with_custom_intervals(queue):
    registration = queue.dispatchers.register(
        'u2', ping_interval=5 * SECOND, ping_death_interval=20 * SECOND)
    assert registration.ping_death_interval == 20 * SECOND


def test_last_ping_is_database_time_not_the_dispatcher_clock(queue, main):
    registration = main.parent
    skewed = datetime.datetime(2001, 1, 1, tzinfo=UTC)
    before = datetime.datetime.now(UTC) - SECOND
    registration.ping(skewed)  # a dispatcher whose clock is 25 years off
    transaction.commit()
    after = datetime.datetime.now(UTC) + SECOND
    assert before <= registration.last_ping <= after
    assert not registration.dead
    assert queue.dispatchers.find_dead() == []


def test_is_dead_after_ping_death_interval(queue, main):
    registration = main.parent
    last = registration.last_ping
    assert last is not None
    assert not registration.is_dead(last + 59 * SECOND)
    assert registration.is_dead(last + 61 * SECOND)
    later = last + 2 * MINUTE
    assert queue.dispatchers.find_dead(later) == [registration]
    registration.ping()
    transaction.commit()
    assert not registration.is_dead(registration.last_ping + 59 * SECOND)


def test_inactive_registration_is_never_dead(queue):
    registration = queue.dispatchers.register('u1')
    transaction.commit()
    assert not registration.is_dead(datetime.datetime(2100, 1, 1,
                                                      tzinfo=UTC))


def test_deactivate_dead_recovers_assigned_and_active_jobs(queue, main):
    assigned = Job(operator.add, 1, 1)
    retried = Job(operator.add, 2, 2)
    never = Job(operator.add, 3, 3)
    never.retry_policy_factory = NeverRetry
    claim_and_start(queue, main, assigned, retried, never)
    waiting = queue.put(operator.add, 'w', '')  # pending, never claimed
    transaction.commit()
    registration = main.parent

    later = registration.last_ping + 2 * MINUTE
    assert queue.dispatchers.deactivate_dead(later, exclude='u1') == []
    assert registration.activated
    assert queue.dispatchers.deactivate_dead(later) == ['u1']
    assert registration.activated is None
    assert not registration.is_dead(later)
    assert len(main) == 0

    # ASSIGNED never started: back at the front of the queue
    assert assigned.status == PENDING
    assert assigned.assignerUUID is None and assigned.agent is None
    # ACTIVE under the default policy: requeued, interruption counted
    assert retried.status == PENDING
    assert retried.active_start is None
    assert retried.annotations['pyramid_zcasync.retry.interruptions'] == 1
    # ACTIVE under NeverRetry: failed, never run twice
    assert never.status == COMPLETED
    assert never.result.check(JobInterrupted)
    assert 'u1 died' in never.result.message
    # both recovered jobs go ahead of the one that was waiting
    assert set(list(queue)[:2]) == {assigned, retried}
    assert list(queue)[2:] == [waiting]
    transaction.commit()


def test_recovered_jobs_go_ahead_of_waiting_ones(queue, main):
    assigned = Job(operator.add, 1, 1)
    claim_and_start(queue, main, assigned)
    waiting = queue.put(operator.add, 'w', '')
    assert queue.dispatchers.deactivate_dead(
        main.parent.last_ping + 2 * MINUTE) == ['u1']
    assert list(queue) == [assigned, waiting]


def test_interruptions_are_limited_by_policy(queue, main):
    job = Job(operator.add, 1, 1)
    job.annotations['pyramid_zcasync.retry.interruptions'] = 9
    claim_and_start(queue, main, Job(operator.add, 0, 0), job)
    main.parent.deactivate()
    assert job.status == COMPLETED
    assert job.result.check(JobInterrupted)
    assert job.annotations['pyramid_zcasync.retry.interruptions'] == 10


def test_clean_deactivate_recovers_too(queue, main):
    job = Job(operator.add, 1, 1)
    claim_and_start(queue, main, job)
    main.parent.deactivate()
    assert job.status == PENDING
    assert main.parent.activated is None
    transaction.commit()


def test_restart_with_the_same_uuid_recovers_orphans_at_once(queue, main):
    assigned = Job(operator.add, 1, 1)
    active = Job(operator.add, 2, 2)
    claim_and_start(queue, main, assigned, active)
    registration = main.parent
    # the process crashed; it starts again within the death interval
    assert not registration.is_dead(registration.last_ping + SECOND)
    registration.activate()
    assert registration.activated
    assert assigned.status == PENDING and active.status == PENDING
    assert len(main) == 0
    transaction.commit()


def test_unregister(queue, main):
    registration = main.parent
    with pytest.raises(ValueError, match='u1 is active'):
        queue.dispatchers.unregister('u1')
    registration.deactivate()
    assert queue.dispatchers.unregister('u1') is registration
    assert 'u1' not in queue.dispatchers
    with pytest.raises(KeyError):
        queue.dispatchers.unregister('u1')
    transaction.commit()


def test_job_in_callbacks_when_its_dispatcher_died_gets_them_run(
        db, conn, queue, main):
    """The result is committed but the callbacks never ran: recovery must
    not leave the job in CALLBACKS forever."""
    log = conn.root()['log'] = persistent.list.PersistentList()
    job = Job(operator.add, 20, 22)
    job.addCallback(Job(append_to, log))
    queue.put(job)
    main.claimJob()
    transaction.commit()
    runner = Runner(db, uuid='u1')
    oid = job._p_oid
    # what Runner.run does, up to the crash before run_callbacks
    assert runner.transact(lambda conn: runner._start(conn.get(oid)))
    assert runner.call(lambda conn: runner._own_active(conn.get(oid)))
    transaction.begin()
    assert job.result == 42
    registration = main.parent
    assert queue.dispatchers.deactivate_dead(
        registration.last_ping + 2 * MINUTE) == ['u1']
    # the callback was handed to the queue, with the job's result
    callback = job.callbacks[0]
    assert callback.status == PENDING
    assert queue.claim() is callback
    callback()
    assert list(log) == [42]
    assert job.status == COMPLETED
    transaction.commit()


def test_database_now_follows_commits(db, queue):
    before = datetime.datetime.now(UTC) - SECOND
    queue.dispatchers.register('u9')
    transaction.commit()
    assert before <= queue.dispatchers.database_now() <= (
        datetime.datetime.now(UTC) + SECOND)


def test_registry_works_through_iqueue_of_another_connection(db, main):
    manager = transaction.TransactionManager()
    other = db.open(transaction_manager=manager)
    try:
        registration = IQueue(other.root()).dispatchers['u1']
        assert registration.activated
        assert list(registration) == ['main']
        assert registration['main'].size == 3
    finally:
        manager.abort()
        other.close()


def test_siblings_judge_pings_in_database_time(db, queue, main):
    """Read from another connection (a sibling), where the ping object
    starts as a ghost, a skewed dispatcher clock changes nothing."""
    main.parent.ping(datetime.datetime(2001, 1, 1, tzinfo=UTC))
    transaction.commit()
    manager = transaction.TransactionManager()
    other = db.open(transaction_manager=manager)
    try:
        dispatchers = IQueue(other.root()).dispatchers
        registration = dispatchers['u1']
        assert abs(registration.last_ping - datetime.datetime.now(UTC)) < (
            5 * SECOND)
        assert not registration.dead
        assert dispatchers.deactivate_dead() == []
    finally:
        manager.abort()
        other.close()
