"""Retry policies: the decisions they take, attempt by attempt."""
import datetime
import operator

import psycopg2
import pytest
import transaction
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError, ReadConflictError

from pyramid_zcasync import Job
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.retry import (NeverRetry, RetryCommonForever,
                                   RetryCommonFourTimes, abort, backoff,
                                   conflict_pause, is_disconnected)

S = datetime.timedelta(seconds=1)


def failure(exc):
    return Failure.from_exception(exc)


def decisions(hook, exc, times):
    data_cache = {}
    return [hook(failure(exc), data_cache) for _ in range(times)], data_cache


def test_backoff_doubles_from_5_to_a_60_second_cap():
    assert [backoff(n) for n in range(1, 8)] == [
        5 * S, 10 * S, 20 * S, 40 * S, 60 * S, 60 * S, 60 * S]


@pytest.mark.parametrize('hook', ['jobError', 'commitError'])
@pytest.mark.parametrize('exc', [ConflictError(), ReadConflictError()])
def test_four_times_retries_conflicts_for_5_attempts_in_all(hook, exc):
    policy = RetryCommonFourTimes(Job(operator.add))
    # each decision follows a failed attempt: 4 retries, then give up
    answers, data_cache = decisions(getattr(policy, hook), exc, 5)
    assert answers[-1] is False
    # attempts 2-5 each after a random pause of up to 25, 50, 100, 200 ms
    assert [paused_within(answer, ms) for answer, ms in
            zip(answers, [25, 50, 100, 200])] == [True] * 4
    assert data_cache['pyramid_zcasync.retry'] == {'conflict': 5}


def paused_within(answer, milliseconds):
    return (isinstance(answer, datetime.timedelta)
            and datetime.timedelta(0) <= answer
            <= datetime.timedelta(milliseconds=milliseconds))


def test_conflict_pauses_are_random_up_to_a_second():
    pauses = [conflict_pause(2) for _ in range(200)]
    assert all(paused_within(pause, 25) for pause in pauses)
    # jittered: two processes that collided do not retry in step
    assert len(set(pauses)) > 150
    assert max(pauses) > datetime.timedelta(milliseconds=15)
    late = [conflict_pause(30) for _ in range(200)]
    assert all(paused_within(pause, 1000) for pause in late)
    assert max(late) > datetime.timedelta(milliseconds=600)


#: How each storage says its server went away: ZEO, and the psycopg2
#: errors RelStorage lets through when PostgreSQL restarts.
SERVER_AWAY = [
    ClientDisconnected('gone'),
    psycopg2.OperationalError('server closed the connection unexpectedly'),
    psycopg2.InterfaceError('connection already closed'),
]


@pytest.mark.parametrize('hook', ['jobError', 'commitError'])
@pytest.mark.parametrize('exc', SERVER_AWAY, ids=lambda e: type(e).__name__)
def test_four_times_backs_off_on_a_lost_server_forever(hook, exc):
    policy = RetryCommonFourTimes(Job(operator.add))
    answers, _ = decisions(getattr(policy, hook), exc, 8)
    assert answers == [5 * S, 10 * S, 20 * S, 40 * S, 60 * S, 60 * S,
                       60 * S, 60 * S]


def test_four_times_gives_up_on_other_errors_at_once():
    policy = RetryCommonFourTimes(Job(operator.add))
    assert policy.jobError(failure(ValueError('x')), {}) is False
    assert policy.commitError(failure(TypeError('x')), {}) is False


def test_counts_are_per_kind():
    policy = RetryCommonFourTimes(Job(operator.add))
    data_cache = {}
    for _ in range(4):
        assert paused_within(
            policy.jobError(failure(ConflictError()), data_cache), 200)
        assert policy.jobError(failure(ClientDisconnected()),
                               data_cache) == backoff(
            data_cache['pyramid_zcasync.retry']['disconnected'])
    assert data_cache['pyramid_zcasync.retry'] == {
        'conflict': 4, 'disconnected': 4}


def test_forever_retries_conflicts_forever():
    policy = RetryCommonForever(Job(operator.add))
    for hook in (policy.jobError, policy.commitError):
        answers, _ = decisions(hook, ConflictError(), 200)
        assert all(paused_within(answer, 1000) for answer in answers)


def test_forever_errors_of_the_call_fail_but_commit_errors_retry():
    policy = RetryCommonForever(Job(operator.add))
    assert policy.jobError(failure(ValueError()), {}) is False
    answers, _ = decisions(policy.commitError, OSError('disk'), 5)
    assert answers == [5 * S, 10 * S, 20 * S, 40 * S, False]


def test_never_retry_never_retries():
    policy = NeverRetry(Job(operator.add))
    assert policy.jobError(failure(ConflictError()), {}) is False
    assert policy.commitError(failure(ConflictError()), {}) is False
    assert policy.jobError(failure(ClientDisconnected()), {}) is False
    assert policy.jobError(failure(ValueError()), {}) is False
    assert policy.interrupted() is False


def test_interruptions_are_counted_on_the_job():
    job = Job(operator.add)
    policy = RetryCommonFourTimes(job)
    assert [policy.interrupted() for _ in range(10)] == [True] * 9 + [False]
    assert job.annotations['pyramid_zcasync.retry.interruptions'] == 10
    # a fresh policy object (as after a restart) sees the stored count
    assert RetryCommonFourTimes(job).interrupted() is False


def test_forever_interruptions():
    job = Job(operator.add)
    policy = RetryCommonForever(job)
    assert all(policy.interrupted() for _ in range(50))
    assert job.annotations['pyramid_zcasync.retry.interruptions'] == 50


def test_update_data_stores_counts_in_annotations():
    job = Job(operator.add)
    policy = RetryCommonFourTimes(job)
    policy.updateData({})
    assert 'pyramid_zcasync.retry' not in job.annotations
    data_cache = {}
    policy.jobError(failure(ConflictError()), data_cache)
    policy.updateData(data_cache)
    assert job.annotations['pyramid_zcasync.retry'] == {'conflict': 1}


@pytest.mark.parametrize('exc', SERVER_AWAY, ids=lambda e: type(e).__name__)
def test_a_lost_server_is_recognised_by_name_and_by_subclass(exc):
    assert is_disconnected(exc)

    class AdminShutdown(type(exc)):  # as psycopg2.errors subclasses them
        pass
    assert is_disconnected(AdminShutdown('terminating connection'))


def test_other_errors_are_not_a_lost_server():
    assert not is_disconnected(ConflictError())
    assert not is_disconnected(psycopg2.ProgrammingError('syntax error'))
    assert not is_disconnected(ValueError('x'))


class EndsBadly:
    """A data manager whose abort raises ``exc``, as a RelStorage
    connection's does when PostgreSQL went away (it polls as the
    transaction ends)."""

    def __init__(self, exc):
        self.exc = exc
        self.aborted = 0

    def abort(self, txn):
        self.aborted += 1
        raise self.exc

    def sortKey(self):
        return 'ends-badly'


def test_abort_ends_the_transaction_while_the_server_is_away():
    manager = transaction.TransactionManager()
    first = manager.begin()
    resource = EndsBadly(psycopg2.OperationalError('server closed'))
    first.join(resource)
    abort(manager)  # no exception: the caller is handling the outage
    assert resource.aborted == 1
    assert manager.begin() is not first  # over, a new one can begin


def test_abort_lets_other_errors_through():
    manager = transaction.TransactionManager()
    manager.begin().join(EndsBadly(KeyError('bug')))
    with pytest.raises(KeyError):
        abort(manager)
