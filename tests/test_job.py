"""Job: storing calls, running them, statuses, results and callbacks."""
import datetime
import operator

import persistent
import pytest
import transaction

from pyramid_zcasync import Job
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.interfaces import (ACTIVE, ASSIGNED, CALLBACKS,
                                        COMPLETED, NEW, PENDING, IJob,
                                        IQueue)
from pyramid_zcasync.job import BadStatusError

UTC = datetime.timezone.utc


class Account(persistent.Persistent):

    def __init__(self, balance=0):
        self.balance = balance

    def deposit(self, amount):
        self.balance += amount
        return self.balance


def transfer(source, target, amount):
    source.balance -= amount
    target.balance += amount
    return (source.balance, target.balance)


def fail_with_key_error(name):
    raise KeyError(name)


def record(log, value):
    log.append(value)
    return value


def double(value):
    return value * 2


def on_failure(failure):
    return 'handled %s' % failure.type_name


def reload(db, job):
    """The same job, read from a fresh connection of its own."""
    other = db.open(transaction_manager=transaction.TransactionManager())
    return other, other.get(job._p_oid)


def test_job_provides_ijob_and_starts_new():
    job = Job(operator.add, 1, 2)
    assert IJob.providedBy(job)
    assert job.status == NEW
    assert job.result is None
    assert job.begin_after is None and job.begin_by is None
    assert job.active_start is None and job.active_end is None
    assert job.assignerUUID is None


def test_plain_function_runs_and_survives_reload(db, conn):
    job = conn.root()['job'] = Job(operator.mul, 6, 7)
    transaction.commit()
    other, copy = reload(db, job)
    try:
        assert copy.callable is operator.mul
        assert list(copy.args) == [6, 7]
        assert copy() == 42
        other.transaction_manager.commit()
    finally:
        other.close()
    transaction.begin()
    assert job.status == COMPLETED
    assert job.result == 42
    assert job.active_start <= job.active_end
    assert job.active_start.tzinfo is not None


def test_kwargs_and_call_time_args(conn):
    job = Job(dict, a=1)
    assert job(b=2) == {'a': 1, 'b': 2}


def test_bound_method_of_persistent_object_and_persistent_args(db, conn):
    root = conn.root()
    root['alice'] = Account(100)
    root['bob'] = Account(5)
    root['deposit'] = Job(root['bob'].deposit, 10)
    root['transfer'] = Job(transfer, root['alice'], root['bob'], amount=30)
    transaction.commit()

    other, deposit = reload(db, root['deposit'])
    try:
        transfer_job = other.get(root['transfer']._p_oid)
        # stored by reference: the very objects of this connection
        assert deposit.callable.__self__ is other.root()['bob']
        assert transfer_job.args[0] is other.root()['alice']
        assert deposit() == 15
        assert transfer_job() == (70, 45)
        other.transaction_manager.commit()
    finally:
        other.close()
    transaction.begin()
    assert root['alice'].balance == 70
    assert root['bob'].balance == 45
    assert root['transfer'].result == (70, 45)


def test_failed_call_records_a_failure_not_an_exception(conn):
    job = conn.root()['job'] = Job(fail_with_key_error, 'missing')
    result = job()
    assert isinstance(result, Failure)
    assert job.status == COMPLETED
    assert job.result.check(KeyError) is KeyError
    assert job.result.message == "'missing'"
    assert 'fail_with_key_error' in job.result.getTraceback()
    transaction.commit()


def test_status_lifecycle_through_a_queue(queue):
    job = Job(operator.add, 1, 1)
    assert job.status == NEW
    queue.put(job)
    assert job.status == PENDING
    assert queue.claim() is job
    assert job.status == ASSIGNED
    job.mark_active()
    assert job.status == ACTIVE
    with pytest.raises(BadStatusError):
        job.mark_active()
    log = []
    job.addCallback(Job(record, log))
    job.resolve(job.invoke(), run_callbacks=False)
    assert job.status == CALLBACKS
    assert log == []
    job.run_callbacks_inline()
    assert job.status == COMPLETED
    assert log == [2]
    assert job.initial_callbacks_end is not None
    with pytest.raises(BadStatusError, match='completed-status'):
        job()
    transaction.commit()


def test_annotations_are_persistent(db, conn):
    job = conn.root()['job'] = Job(operator.add, 1, 1)
    job.annotations['owner'] = 'alice'
    transaction.commit()
    other, copy = reload(db, job)
    try:
        assert dict(copy.annotations) == {'owner': 'alice'}
    finally:
        other.close()


# -- begin_after / begin_by ---------------------------------------------

def test_begin_after_and_begin_by_are_stored_in_utc():
    job = Job(operator.add, 1, 1)
    paris = datetime.timezone(datetime.timedelta(hours=2))
    job.begin_after = datetime.datetime(2030, 1, 1, 14, 0, tzinfo=paris)
    assert job.begin_after == datetime.datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert job.begin_after.utcoffset() == datetime.timedelta(0)
    job.begin_by = datetime.timedelta(hours=1)
    assert job.begin_by == datetime.datetime(2030, 1, 1, 13, tzinfo=UTC)


def test_timedelta_begin_by_without_begin_after_counts_from_now():
    job = Job(operator.add, 1, 1)
    before = datetime.datetime.now(UTC)
    job.begin_by = datetime.timedelta(minutes=5)
    after = datetime.datetime.now(UTC)
    assert (before + datetime.timedelta(minutes=5) <= job.begin_by
            <= after + datetime.timedelta(minutes=5))


@pytest.mark.parametrize('attribute', ['begin_after', 'begin_by'])
def test_naive_datetime_is_refused_naming_the_value(attribute):
    job = Job(operator.add, 1, 1)
    naive = datetime.datetime(2030, 5, 17, 8, 30)
    with pytest.raises(ValueError) as info:
        setattr(job, attribute, naive)
    message = str(info.value)
    assert attribute in message
    assert 'naive' in message
    assert '2030, 5, 17, 8, 30' in message
    assert getattr(job, attribute) is None


def test_non_datetime_begin_after_is_refused_naming_the_value():
    job = Job(operator.add, 1, 1)
    with pytest.raises(TypeError, match="'tomorrow'"):
        job.begin_after = 'tomorrow'


def test_negative_begin_by_is_refused():
    job = Job(operator.add, 1, 1)
    with pytest.raises(ValueError, match=r'begin_by must not be negative, got datetime\.timedelta\(days=-1, seconds=86399\)'):
        job.begin_by = datetime.timedelta(seconds=-1)


def test_times_cannot_change_once_queued(queue):
    job = queue.put(operator.add, 1, 1)
    with pytest.raises(BadStatusError):
        job.begin_after = datetime.datetime(2030, 1, 1, tzinfo=UTC)


# -- bad input ------------------------------------------------------------

def test_non_callable_is_refused_naming_it():
    with pytest.raises(TypeError, match="callable, got 'send_mail' "):
        Job('send_mail')
    with pytest.raises(TypeError, match='got 42 '):
        Job(42)


def test_lambda_and_nested_function_are_refused_naming_them():
    with pytest.raises(ValueError, match='lambda'):
        Job(lambda: 1)

    def nested():
        pass
    with pytest.raises(ValueError, match='nested'):
        Job(nested)
    with pytest.raises(ValueError, match='lambda'):
        Job(operator.add).addCallbacks(failure=lambda f: f)


# -- callbacks ------------------------------------------------------------

def test_callback_receives_the_result_not_a_chain(conn):
    log = conn.root()['log'] = persistent.list.PersistentList()
    job = conn.root()['job'] = Job(operator.add, 20, 1)
    first = job.addCallback(Job(double))
    second = job.addCallback(Job(record, log))
    assert first.parent is job and second.parent is job
    assert job() == 21
    assert first.result == 42
    assert list(log) == [21]  # the parent's result, not the first callback's
    assert first.status == second.status == COMPLETED
    transaction.commit()


def test_add_callback_accepts_a_plain_callable(conn):
    job = Job(operator.add, 2, 3)
    callback = job.addCallback(double)
    assert isinstance(callback, Job)
    job()
    assert callback.result == 10


def test_add_callback_refuses_a_job_in_use(queue):
    job = Job(operator.add, 1, 1)
    queued = queue.put(double, 1)
    with pytest.raises(BadStatusError):
        job.addCallback(queued)


def test_add_callbacks_success_route(conn):
    job = Job(operator.add, 2, 2)
    callback = job.addCallbacks(double, on_failure)
    job()
    assert callback.result == 8


def test_add_callbacks_failure_route(conn):
    job = Job(fail_with_key_error, 'k')
    callback = job.addCallbacks(double, on_failure)
    job()
    assert callback.result == 'handled KeyError'


def test_add_callbacks_passes_through_the_other_outcome(conn):
    ok = Job(operator.add, 2, 2)
    only_failure = ok.addCallbacks(failure=on_failure)
    ok()
    assert only_failure.result == 4
    bad = Job(fail_with_key_error, 'k')
    only_success = bad.addCallbacks(success=double)
    bad()
    assert isinstance(only_success.result, Failure)
    assert only_success.result.check(KeyError)


def test_add_callbacks_needs_one_of_them():
    with pytest.raises(ValueError):
        Job(operator.add).addCallbacks()


def test_callback_added_to_completed_job_without_queue_runs_at_once(conn):
    job = Job(operator.add, 2, 3)
    job()
    assert job.status == COMPLETED
    callback = job.addCallback(double)
    assert callback.status == COMPLETED
    assert callback.result == 10


def test_callback_added_to_completed_queued_job_is_queued(conn, queue):
    job = queue.put(operator.add, 2, 3)
    assert queue.claim() is job
    job()
    assert job.status == COMPLETED
    transaction.commit()
    callback = job.addCallback(double)
    assert callback.status == PENDING
    assert list(queue) == [callback]
    assert queue.claim() is callback
    assert callback() == 10
    assert callback.status == COMPLETED
    transaction.commit()


# -- jobs returning jobs ----------------------------------------------------

def test_outer_job_completes_when_the_inner_one_does(conn):
    inner = Job(operator.add, 40, 2)
    outer = Job(_return_it, inner)
    log = []
    outer.addCallback(Job(record, log))
    outer()
    assert outer.status == ACTIVE
    assert outer.waiting_for is inner
    assert log == []
    inner()
    assert outer.status == COMPLETED
    assert outer.result == 42
    assert outer.waiting_for is None
    assert log == [42]


def _return_it(job):
    return job


def test_job_returning_itself_is_refused(conn):
    job = Job(operator.add, 1, 1)
    job.mark_active()
    with pytest.raises(BadStatusError):
        job.resolve(job, run_callbacks=False)


def test_repr_names_callable_and_status(conn):
    job = Job(operator.add, 1, 1)
    assert repr(job) == '<Job unsaved add new-status>'
    conn.add(job)
    assert repr(job).startswith('<Job 0x')


def test_repr_of_a_job_the_storage_cannot_load_now(caplog):
    """Logs format a job lazily, often just after its storage went away:
    the repr says so instead of raising (logging would print a traceback
    for each record)."""
    import logging

    import ZODB
    import ZODB.MappingStorage
    from ZEO.Exceptions import ClientDisconnected

    class Away(ZODB.MappingStorage.MappingStorage):
        away = False

        def loadBefore(self, oid, tid):
            if self.away:
                raise ClientDisconnected('the server went away')
            return super().loadBefore(oid, tid)
    storage = Away()
    db = ZODB.DB(storage)
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    job = Job(operator.add, 1, 1)
    connection.root()['job'] = job
    manager.commit()
    job._p_deactivate()
    storage.away = True
    oid = '0x%x' % int.from_bytes(job._p_oid, 'big')
    assert repr(job) == '<Job %s (not loaded)>' % oid
    with caplog.at_level(logging.INFO, logger='pyramid_zcasync.test'):
        logging.getLogger('pyramid_zcasync.test').info('%r succeeded', job)
    assert [record.getMessage() for record in caplog.records
            if record.name == 'pyramid_zcasync.test'] == [
        '<Job %s (not loaded)> succeeded' % oid]
    storage.away = False
    assert repr(job) == '<Job %s add new-status>' % oid
    connection.close()
    db.close()


def test_default_retry_policies(conn):
    from pyramid_zcasync import retry
    job = Job(operator.add, 1, 1)
    callback = job.addCallback(double)
    assert isinstance(job.getRetryPolicy(), retry.RetryCommonFourTimes)
    assert isinstance(callback.getRetryPolicy(), retry.RetryCommonForever)
    job.retry_policy_factory = retry.NeverRetry
    assert isinstance(job.getRetryPolicy(), retry.NeverRetry)


def test_queued_job_adapts_from_root(conn):
    assert IQueue(conn.root()) is conn.root()['pyramid_zcasync']['']


def test_failing_a_pending_job_hands_its_callbacks_to_the_queue(queue):
    job = queue.put(operator.add, 1, 1)
    errback = job.addCallbacks(failure=on_failure)
    job.fail(LookupError('cancelled by an admin'))
    assert job.status == COMPLETED
    assert job.result.check(LookupError)
    assert job.result.message == 'cancelled by an admin'
    assert job not in queue
    # the caller's transaction does not run the callbacks itself
    assert errback.status == PENDING
    assert list(queue) == [errback]
    assert queue.claim() is errback
    assert errback() == 'handled LookupError'


def test_fail_without_an_exception_and_of_a_completed_job(conn):
    job = Job(operator.add, 1, 1)
    job.fail()
    assert job.result.check(RuntimeError)
    with pytest.raises(BadStatusError):
        job.fail()


def test_a_callable_whose_module_is_gone_fails_with_import_error():
    import ZODB.broken
    from pyramid_zcasync.failure import Failure
    job = Job(max, 1, 2)
    job.callable = ZODB.broken.find_global('no_such_module_here', 'func')
    result = job()
    assert isinstance(result, Failure) and result.check(ImportError)
    assert 'no_such_module_here.func' in result.message
