"""Each job's life log (lifelog.py): what a real dispatcher, retries,
cancelling and recovery record, its bound, and how the job view and
``pzcasync job`` show it."""
import datetime
import operator

import pytest
import transaction

import jobs
from pyramid_zcasync import Job, lifecycle, lifelog
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.interfaces import (ACTIVE, ASSIGNED, COMPLETED, KEY,
                                        NEW, PENDING, IQueue)
from pyramid_zcasync.retry import RetryPolicy
from pyramid_zcasync.scripts import tables
from pyramid_zcasync.testing import wait_for_result
from pyramid_zcasync.views import queries
from pyramid_zcasync.views.format import to_json

MINUTE = datetime.timedelta(minutes=1)


class RetryTwice(RetryPolicy):
    """Any error of the call: two more attempts, queued again at once."""

    def jobError(self, failure, data_cache):
        if self._count(data_cache, 'other') > 2:
            return False
        return datetime.datetime.now(datetime.timezone.utc)


def moves(job):
    return [(event.before, event.after, event.detail)
            for event in job.events]


@pytest.fixture
def fs_queue(fs_db):
    connection = fs_db.open()
    yield IQueue(connection.root())
    transaction.abort()
    connection.close()


def test_a_job_run_by_a_dispatcher_logs_each_step(dispatcher, fs_queue):
    job = fs_queue.put(jobs.multiply, 6, 7)
    transaction.commit()
    assert wait_for_result(job) == 42
    assert moves(job) == [(NEW, PENDING, 'put'),
                          (PENDING, ASSIGNED, 'claimed'),
                          (ASSIGNED, ACTIVE, 'started'),
                          (ACTIVE, COMPLETED, 'finished')]
    events = job.events
    assert [event.dispatcher for event in events] == [
        None] + [dispatcher.UUID] * 3
    assert [event.attempt for event in events] == [1] * 4
    times = [event.at for event in events]
    assert times == sorted(times) and times[-1] >= job.active_end
    assert lifelog.dropped(job) == 0


def test_a_failing_job_logs_each_attempt(dispatcher, fs_queue):
    job = Job(jobs.divide, 1, 0)
    job.retry_policy_factory = RetryTwice
    fs_queue.put(job)
    transaction.commit()
    assert wait_for_result(job).check(ZeroDivisionError)
    run = [(PENDING, ASSIGNED, 'claimed'), (ASSIGNED, ACTIVE, 'started')]
    again = [(ACTIVE, NEW, 'requeued for retry'),
             (NEW, PENDING, 'queued again')]
    assert moves(job) == ([(NEW, PENDING, 'put')] + run + again + run
                          + again + run + [
                              (ACTIVE, COMPLETED,
                               'failed: ZeroDivisionError: division by '
                               'zero')])
    assert [event.attempt for event in job.events] == [1] * 4 + [2] * 4 + [
        3] * 4
    assert {event.dispatcher for event in job.events
            if event.after in (ASSIGNED, ACTIVE, COMPLETED)} == {
                dispatcher.UUID}


def test_a_cancelled_pending_job(queue):
    job = queue.put(operator.add, 1, 2)
    job.cancel()
    other = queue.put(operator.add, 3, 4)
    other.cancel('not wanted')
    assert moves(job) == [(NEW, PENDING, 'put'),
                          (PENDING, COMPLETED, 'cancelled')]
    assert moves(other)[-1] == (PENDING, COMPLETED, 'cancelled: not wanted')


def test_recovery_of_a_dead_dispatchers_jobs(queue):
    registration = queue.dispatchers.register('u1')
    agent = registration.add(Agent('main', 2))
    registration.activate()
    claimed, running = queue.put(operator.add, 1, 1), queue.put(
        operator.add, 2, 2)
    assert agent.claimJob() is claimed and agent.claimJob() is running
    running.mark_active()
    transaction.commit()

    later = registration.last_ping + 2 * MINUTE
    assert queue.dispatchers.deactivate_dead(later) == ['u1']
    assert moves(claimed)[-2:] == [
        (ASSIGNED, NEW, 'recovered: dispatcher u1 died'),
        (NEW, PENDING, 'queued again')]
    interrupted, queued = running.events[-2:]
    assert (interrupted.before, interrupted.after, interrupted.detail) == (
        ACTIVE, NEW, 'recovered: dispatcher u1 died')
    assert (interrupted.dispatcher, interrupted.attempt) == ('u1', 1)
    # the interruption counted: the next run is the job's second attempt
    assert (queued.dispatcher, queued.attempt) == (None, 2)


def test_the_log_keeps_the_first_and_the_latest_events(queue):
    job = queue.put(operator.add, 1, 2)
    for _ in range(40):
        lifecycle.unqueue(queue, job)
        lifecycle.put(queue, job)
    kept = job.events
    assert len(kept) == lifelog.LIMIT + 1
    assert lifelog.dropped(job) == 81 - lifelog.LIMIT - 1
    assert (kept[0].before, kept[0].after) == (NEW, PENDING)
    assert [(e.before, e.after) for e in kept[-2:]] == [(PENDING, NEW),
                                                        (NEW, PENDING)]
    assert kept[0].at <= kept[1].at


def test_a_job_stored_before_the_log_loads_without_events(queue):
    job = queue.put(operator.add, 1, 2)
    transaction.commit()
    state = job.__getstate__()
    state.pop('_events')
    old = Job.__new__(Job)
    old.__setstate__(state)
    assert old.events == [] and lifelog.dropped(old) == 0
    assert old.status == PENDING


def test_the_job_view_and_the_command_show_the_log(conn, queue):
    job = queue.put(operator.add, 1, 2)
    job.cancel('\x1b[2Jgone')
    transaction.commit()
    ref = queries.JobRef(int.from_bytes(job._p_oid, 'big'))
    detail = queries.job(conn.root()[KEY], ref)
    shown = to_json(detail)
    assert shown['events dropped'] == 0
    assert [(e['from'], e['to'], e['detail']) for e in shown['events']] == [
        ('new', 'pending', 'put'),
        ('pending', 'completed', 'cancelled: \x1b[2Jgone')]
    assert shown['events'][0]['at'].endswith('Z')
    assert set(shown['events'][0]) == {'at', 'from', 'to', 'dispatcher',
                                       'attempt', 'detail'}

    text = tables.job(detail)
    assert '\x1b' not in text
    header, put, cancelled = text.split('\n\n')[-1].splitlines()
    assert header.split() == ['AT', 'FROM', 'TO', 'DISPATCHER', 'ATTEMPT',
                              'DETAIL']
    assert put.split()[2:] == ['new', 'pending', '-', '1', 'put']
    assert cancelled.split()[2:] == ['pending', 'completed', '-', '1',
                                     'cancelled:', '\\x1b[2Jgone']


def test_the_command_says_where_events_were_dropped():
    at = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000,
                           tzinfo=datetime.timezone.utc)
    event = {'at': at, 'from': 'new', 'to': 'pending', 'dispatcher': None,
             'attempt': 1, 'detail': 'put'}
    rows = tables.life_log([event, event], 7).splitlines()
    assert rows[1].startswith('2026-01-02 03:04:05.678Z')
    assert rows[2].strip() == '(7 more)'
