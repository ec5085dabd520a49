"""zc.async's documented behaviours, told on our API (issue: parity).

Each test here failed on the code before it: a job kept on an object of
another database, live annotations read inside a job, a callback added
as its job completes, a back-off that overflowed, shared keyword
arguments, retry policies that reschedule, a job calling itself and
quota names checked when set.
"""
import datetime
import operator
import time

import persistent.mapping
import pytest
import transaction
import ZODB
import ZODB.MappingStorage
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError

import pyramid_zcasync
from pyramid_zcasync import Job, lifecycle, local
from pyramid_zcasync.interfaces import (ACTIVE, CALLBACKS, COMPLETED, NEW,
                                        PENDING, IQueue)
from pyramid_zcasync.job import BadStatusError, JobCancelled
from pyramid_zcasync.registry import recover_job
from pyramid_zcasync.retry import RetryCommonFourTimes, backoff
from pyramid_zcasync.runner import Runner

from test_runner import FIXED, FakeClock, claim_one, main  # noqa: F401

UTC = datetime.timezone.utc


# -- 2. a job kept on the app's objects in another database ---------------

def test_put_stores_the_job_in_the_queues_database_at_once():
    databases = {}
    main_db = ZODB.DB(ZODB.MappingStorage.MappingStorage(),
                      databases=databases, database_name='main')
    ZODB.DB(ZODB.MappingStorage.MappingStorage(), databases=databases,
            database_name='async')
    pyramid_zcasync.install_queues(main_db, database_name='async')
    try:
        connection = main_db.open()
        root = connection.root()
        job = IQueue(root).put(operator.mul, 6, 7)
        assert job._p_oid is not None, 'a view can return its id at once'
        assert job._p_jar.db().database_name == 'async'
        root['order'] = persistent.mapping.PersistentMapping(job=job)
        transaction.commit()  # InvalidObjectReference before
        check = main_db.open(transaction_manager=transaction.TransactionManager())
        assert check.root()['order']['job'].status == PENDING
        check.close()
        connection.close()
    finally:
        transaction.abort()
        main_db.close()


# -- 3. reading a live annotation inside a job ----------------------------

def change_then_read_annotation(tree, other):
    tree['changed'] = True
    seen = local.get_live_annotation(other, 'progress')
    return seen


def test_reading_a_live_annotation_keeps_the_jobs_own_work(db, conn, queue,
                                                          main):
    other = queue.put(operator.add, 1, 2)
    other.annotations['progress'] = 'half way'
    tree = conn.root()['tree'] = persistent.mapping.PersistentMapping()
    job = queue.put(change_then_read_annotation, tree, other)
    transaction.commit()
    runner = Runner(db, uuid='u1', clock=FakeClock())
    for _ in range(2):
        runner.run(claim_one(db))
    transaction.begin()
    assert job.result == 'half way'
    assert tree.get('changed') is True, 'the job committed its work'


# -- 4. no lost callback ----------------------------------------------------

def private_connection(db):
    manager = transaction.TransactionManager()
    return manager, db.open(transaction_manager=manager)


def test_a_callback_added_as_its_job_completes_runs(db, conn, queue, main):
    job = queue.put(operator.mul, 6, 7)
    first = job.addCallback(Job(operator.add, 1))
    transaction.commit()
    runner = Runner(db, uuid='u1', clock=FakeClock())
    claim_one(db)
    # The job ran and so did its callback; it is still CALLBACKS when
    # someone adds a second callback, in a transaction not yet committed.
    transaction.begin()
    job.mark_active()
    lifecycle.finish(job, 42)
    first(42)
    transaction.commit()
    assert job.status == CALLBACKS
    manager, user = private_connection(db)
    late = user.get(job._p_oid).addCallback(Job(operator.add, 100))
    runner.run_callbacks(job._p_oid)   # the worker marks it COMPLETED
    runner.free_slot_and_quotas(job._p_oid)
    try:
        manager.commit()
    except ConflictError:
        # The user's retry adds it to a completed job, which starts it
        # through its queue.
        manager.abort()
        late = user.get(job._p_oid).addCallback(Job(operator.add, 100))
        manager.commit()
    late_oid = late._p_oid
    user.close()
    oid = claim_one(db)
    if oid is not None:
        runner.run(oid)
    transaction.begin()
    late = conn.get(late_oid)
    assert job.status == COMPLETED
    assert late.status == COMPLETED, 'the callback added late ran'
    assert late.result == 142


# -- 6. "forever" is forever --------------------------------------------

def test_a_thousand_disconnects_are_waited_out_with_capped_backoff(db):
    clock = FakeClock()
    attempts = []

    def work(connection):
        attempts.append(1)
        if len(attempts) <= 1000:
            raise ClientDisconnected('server away, attempt %d'
                                     % len(attempts))
        return 'written'
    assert Runner(db, uuid='u1', clock=clock).bookkeep(work) == 'written'
    assert len(clock.slept) == 1000
    assert max(clock.slept) == 60.0
    assert backoff(10 ** 6) == datetime.timedelta(seconds=60)


# -- 7. no shared mutable defaults; arguments can be changed ---------------

def test_keyword_arguments_belong_to_each_job():
    first, second = Job(operator.add, 1, 2), Job(operator.mul, 3, 4)
    first.kwargs['x'] = 2
    assert second.kwargs == {}
    assert Job(operator.neg, 1).kwargs == {}


def test_changing_a_stored_jobs_arguments_in_place_is_stored(db, conn,
                                                            queue):
    job = queue.put(operator.add, 1, 2)
    transaction.commit()
    manager, other = private_connection(db)
    stored = other.get(job._p_oid)
    stored.args.append(3)
    stored.args[0] = 10
    stored.kwargs['extra'] = 'yes'
    manager.commit()
    other.close()
    transaction.begin()
    assert job.args == [10, 2, 3]
    assert job.kwargs == {'extra': 'yes'}


# -- 8. retry policies that reschedule ------------------------------------

LATER = FIXED + datetime.timedelta(hours=3)


class RetryInAnHour(RetryCommonFourTimes):
    def jobError(self, failure, data_cache):
        return datetime.timedelta(hours=1)


class RetryAtATime(RetryCommonFourTimes):
    def jobError(self, failure, data_cache):
        return LATER


class ResumeLater(RetryCommonFourTimes):
    def interrupted(self):
        return LATER


def failing():
    raise ValueError('not yet')


@pytest.mark.parametrize('policy, due', [
    (RetryInAnHour, FIXED + datetime.timedelta(hours=1)),
    (RetryAtATime, LATER)])
def test_a_retry_later_puts_the_job_back_and_frees_its_slot(
        db, conn, queue, main, policy, due):
    job = Job(failing)
    job.retry_policy_factory = policy
    queue.put(job)
    transaction.commit()
    clock = FakeClock()
    Runner(db, uuid='u1', clock=clock).run(claim_one(db))
    transaction.begin()
    assert job.status == PENDING
    assert job.begin_after == due
    assert len(main) == 0, 'its slot is free for other jobs'
    assert clock.slept == [], 'no worker waited for it'
    assert claim_one(db) is None, 'not due before then'


def test_an_interrupted_job_whose_policy_says_when_is_queued_then(
        db, conn, queue, main):
    job = Job(operator.add, 1, 2)
    job.retry_policy_factory = ResumeLater
    queue.put(job)
    transaction.commit()
    claim_one(db)
    transaction.begin()
    job.mark_active()
    recover_job(job, 'died')
    transaction.commit()
    assert job.status == PENDING
    assert job.begin_after == LATER


# -- 9. a job calling itself; quota names ---------------------------------

def call_my_job():
    return local.get_job()()


def test_a_job_calling_itself_gets_bad_status(db, conn, queue, main):
    job = queue.put(call_my_job)
    transaction.commit()
    Runner(db, uuid='u1', clock=FakeClock()).run(claim_one(db))
    transaction.begin()
    assert job.status == COMPLETED
    assert job.result.check(BadStatusError), job.result


def test_quota_names_are_checked_when_set(queue):
    queue.quotas.create('mail', 1)
    job = Job(operator.add, 1, 2)
    with pytest.raises(TypeError, match="not a single string: use \\('mail',\\)"):
        job.quota_names = 'mail'
    job.quota_names = ['mail']
    assert job.quota_names == ('mail',)
    queue.put(job)
    with pytest.raises(ValueError, match="unknown quota name.*'sms'"):
        job.quota_names = ('mail', 'sms')
    assert job.quota_names == ('mail',)
    assert job.status == PENDING


def test_jobs_stored_before_keep_their_arguments_and_quota_names(db, conn,
                                                                queue):
    """Records written by earlier versions named these attributes
    publicly; they load unchanged."""
    job = queue.put(operator.add, 1, 2)
    transaction.commit()
    state = job.__getstate__()
    state['args'] = state.pop('_args')
    state['kwargs'] = {}
    del state['_kwargs']
    state['quota_names'] = ()
    old = Job.__new__(Job)
    old.__setstate__(state)
    assert old.args == [1, 2] and old.kwargs == {} and old.quota_names == ()
    assert old.status in (NEW, PENDING, ACTIVE)


# -- a cancelled job ends in a state one can name ---------------------------

def test_a_cancelled_job_completes_with_a_failure_its_callbacks_see(
        conn, queue):
    job = queue.put(operator.add, 1, 2)
    seen = job.addCallback(Job(repr))
    transaction.commit()
    job.cancel('not needed any more')
    transaction.commit()
    assert job.status == COMPLETED
    assert job.result.check(JobCancelled)
    assert 'not needed any more' in str(job.result)
    assert list(queue) == [seen], 'only its callback is queued, to run'
    with pytest.raises(BadStatusError, match='it has completed already'):
        job.cancel()


# -- a poll prefetches only jobs already stored ----------------------------

def test_a_poll_does_not_prefetch_jobs_put_in_its_own_transaction(
        db, conn, queue, main):
    from pyramid_zcasync.dispatcher import Dispatcher
    stored = queue.put(operator.add, 1, 2)
    transaction.commit()
    dispatcher = Dispatcher(db, 'u1')
    dispatcher.poller.prefetches = True
    asked = []
    conn.prefetch = lambda oids: asked.extend(oids)
    new = queue.put(operator.add, 3, 4)   # as a periodic job is, mid-poll
    dispatcher.poller.prefetch_claims(main, limit=10)
    assert stored._p_oid in asked
    assert new._p_oid not in asked, 'the server has no such oid yet'


# -- the same through Pyramid: a view keeps the job on its order -----------

def order_view(request):
    """The order lives in the main database, the queues in ``async``."""
    import jobs
    connection = request.async_queues._p_jar.get_connection('')
    root = connection.root()
    order = root['order'] = persistent.mapping.PersistentMapping()
    order['job'] = request.async_queue.put(jobs.multiply, 6, 7)
    job = order['job']
    return {'job': [int.from_bytes(job._p_oid, 'big'),
                    job._p_jar.db().database_name]}


def test_a_view_keeps_its_job_on_an_object_of_the_main_database(tmp_path):
    import webtest
    from pyramid.config import Configurator
    from pyramid_zcasync.config import close_databases
    from pyramid_zcasync.testing import wait_for_result
    settings = {
        'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
        'zodbconn.uri.async': 'file://%s/async.fs' % tmp_path,
        'zcasync.database': 'async',
        'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
        'zcasync.poll_interval': '0.5',
        'zcasync.dispatcher': 'true',
    }
    with Configurator(settings=settings) as config:
        config.include('pyramid_zcasync')
        config.add_route('order', '/order')
        config.add_view(order_view, route_name='order', renderer='json')
        app = config.make_wsgi_app()
    try:
        response = webtest.TestApp(app).get('/order')  # HTTP 500 before
        oid, database = response.json['job']
        assert database == 'async'
        connection = app.registry._zodb_databases[''].open()
        job = connection.root()['order']['job']
        assert int.from_bytes(job._p_oid, 'big') == oid
        assert wait_for_result(job) == 42
        connection.close()
    finally:
        close_databases(app.registry)


# -- views load a job through its own database ------------------------------

def test_admin_views_show_the_job_not_the_main_databases_object(tmp_path):
    import webtest
    from adminapp import ADMIN, make_admin_app
    from pyramid_zcasync.config import close_databases
    app = make_admin_app(tmp_path, **{
        'zodbconn.uri.async': 'file://%s/async.fs' % tmp_path,
        'zcasync.database': 'async'})
    try:
        main_db = app.registry._zodb_databases['']
        connection = main_db.open()
        root = connection.root()
        job = IQueue(root).put(operator.mul, 6, 7)
        oid = int.from_bytes(job._p_oid, 'big')
        # The main database holds an object at that oid too.
        root['things'] = [persistent.mapping.PersistentMapping()
                          for _ in range(oid + 2)]
        transaction.commit()
        assert connection.get(job._p_oid) is not job
        info = webtest.TestApp(app).get('/_async/db/jobs/%d' % oid,
                                        headers=ADMIN).json
        assert 'mul' in info['callable'] and info['status'] == 'pending'
        connection.close()
    finally:
        transaction.abort()
        close_databases(app.registry)


# -- a retried job that fails again counts once per run everywhere ---------

def test_a_retried_job_failing_again_counts_two_failed_runs(tmp_path):
    import jobs
    from pyramid_zcasync import dispatcher as dispatcher_module
    from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result
    db = ZODB.DB(str(tmp_path / 'Data.fs'))
    pyramid_zcasync.install_queues(db)
    running = dispatcher_module.start(
        db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False)
    connection = db.open()
    try:
        queue = IQueue(connection.root())
        job = queue.put(jobs.divide, 1, 0)
        transaction.commit()
        wait_for_result(job)
        queue.retry_failed(job)
        transaction.commit()
        assert wait_for_result(job).check(ZeroDivisionError)
        agent = queue.dispatchers[running.UUID]['main']
        # The dispatcher records a run just after its commit.
        deadline = time.monotonic() + 5
        while running.getStatistics()['unknown'] and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        stats = running.getStatistics()
        assert (stats['started'], stats['failed'], stats['successful']) \
            == (2, 2, 0)
        since = FIXED - datetime.timedelta(days=3650)
        assert len(agent.completed.end_times(since)) == 2
        assert len(agent.completed.failed_end_times(since)) == 2
    finally:
        transaction.abort()
        connection.close()
        tear_down_dispatcher(running)
        db.close()
