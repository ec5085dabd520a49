"""Eager mode (pyramid_zcasync.eager): a job runs in the putting thread
as soon as its put commits, with its retry policy, callbacks and quotas
as under a dispatcher; ``zcasync.eager = true`` for a Pyramid app,
``testing.eager(db)`` without one."""
import datetime
import threading

import pytest
import transaction
import webtest
from pyramid.config import Configurator

from pyramid_zcasync import eager, extensions, local, retry, testing
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.interfaces import COMPLETED, IQueue, PENDING
from pyramid_zcasync.job import Job

#: What the jobs below did, in order, outside any transaction: attempts
#: whose transactions were aborted leave a trace here only.
CALLS = []


@pytest.fixture(autouse=True)
def forget_calls():
    CALLS.clear()
    yield
    CALLS.clear()


# -- jobs (module level: stored by reference) ------------------------------

def count(name):
    """Counts its runs in the database, in the job's own transaction."""
    CALLS.append(name)
    root = local.get_job()._p_jar.root()
    root[name] = root.get(name, 0) + 1
    return name


def fail_always(name):
    CALLS.append(name)
    raise ValueError('%s fails' % name)


def note_result(result):
    """A callback: what its job came to, committed."""
    root = local.get_job()._p_jar.root()
    root['seen'] = repr(result)
    return result


def put_child():
    CALLS.append('parent starts')
    local.get_queue().put(count, 'child')
    CALLS.append('parent ends')
    return count('parent')


def wait_for_child():
    """Returns the job it put: it completes with that job's result."""
    CALLS.append('waiting parent')
    return local.get_queue().put(count, 'awaited')


def in_thread():
    return threading.get_ident()


class RetryThreeTimes(retry.RetryPolicy):
    """Other errors of the call: three attempts in all, 5 s apart and
    more under a dispatcher."""

    other_job_attempts = 3


# -- Pyramid --------------------------------------------------------------

def put_view(request):
    job = request.async_queue.put(count, 'from_view')
    request.tm.get().note('put')
    return {'queued': len(request.async_queue), 'job': repr(job)}


def put_failing_view(request):
    job = Job(fail_always, 'flaky')
    job.retry_policy_factory = RetryThreeTimes
    job.addCallback(note_result)
    request.async_queue.put(job)
    return {}


def put_then_fail_view(request):
    request.async_queue.put(count, 'aborted')
    raise ValueError('the view failed after its put')


def make_app(tmp_path, **extra):
    settings = {
        'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
        'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
        'zcasync.eager': 'true',
    }
    settings.update(extra)
    with Configurator(settings=settings) as config:
        config.include('pyramid_zcasync')
        for name, view in [('put', put_view), ('failing', put_failing_view),
                           ('fail', put_then_fail_view)]:
            config.add_route(name, '/' + name)
            config.add_view(view, route_name=name, renderer='json')
        return config.make_wsgi_app()


@pytest.fixture
def app(tmp_path):
    made = make_app(tmp_path)
    yield made
    transaction.abort()
    close_databases(made.registry)


def read(app, work):
    db = app.registry._zodb_databases['']
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        return work(connection.root(), IQueue(connection.root()))
    finally:
        manager.abort()
        connection.close()


def test_the_job_ran_when_the_response_returns(app):
    response = webtest.TestApp(app).get('/put')
    assert response.json['queued'] == 1  # pending while the view ran
    assert CALLS == ['from_view']
    assert read(app, lambda root, queue: (root['from_view'], len(queue))) \
        == (1, 0)
    assert app.registry.zcasync_dispatcher is None


def test_a_failing_job_is_retried_per_policy_then_fails(app):
    webtest.TestApp(app).get('/failing')
    assert CALLS == ['flaky'] * 3  # no waiting for the 5 s, 10 s back-off

    seen, pending = read(app, lambda root, queue: (root.get('seen'),
                                                   len(queue)))
    assert pending == 0
    assert 'ValueError' in seen and 'flaky fails' in seen


def test_a_put_in_an_aborted_transaction_runs_nothing(app):
    with pytest.raises(ValueError):
        webtest.TestApp(app).get('/fail')
    assert CALLS == []
    assert read(app, lambda root, queue: ('aborted' in root, len(queue))) \
        == (False, 0)


def test_eager_means_no_dispatcher(tmp_path, monkeypatch):
    monkeypatch.setenv('ZCASYNC_DISPATCHER', 'setting')
    made = make_app(tmp_path, **{'zcasync.dispatcher': 'true'})
    try:
        assert made.registry.zcasync_dispatcher is None
        webtest.TestApp(made).get('/put')
        assert CALLS == ['from_view']
    finally:
        close_databases(made.registry)


# -- without Pyramid ------------------------------------------------------

@pytest.fixture
def conn(mapping_db):
    connection = mapping_db.open()
    yield connection
    transaction.abort()
    connection.close()


def _sync(connection):
    connection.transaction_manager.begin()
    return connection.root()


def test_testing_eager_runs_jobs_at_commit_in_this_thread(mapping_db, conn):
    queue = IQueue(conn.root())
    with testing.eager(mapping_db):
        job = queue.put(in_thread)
        assert job.status == PENDING  # nothing before the commit
        transaction.commit()
        _sync(conn)
        assert job.status == COMPLETED
        assert job.result == threading.get_ident()
        assert job.assignerUUID == eager.EAGER_UUID
    later = queue.put(count, 'after')
    transaction.commit()
    _sync(conn)
    assert later.status == PENDING  # eager mode ended with the block
    assert CALLS == []


def test_a_job_putting_a_job_sees_it_run_after_its_own_commit(mapping_db,
                                                              conn):
    with testing.eager(mapping_db):
        job = IQueue(conn.root()).put(put_child)
        transaction.commit()
    root = _sync(conn)
    assert CALLS == ['parent starts', 'parent ends', 'parent', 'child']
    assert (root['parent'], root['child']) == (1, 1)
    assert job.result == 'parent'
    assert len(IQueue(root)) == 0


def test_a_job_returning_a_job_completes_with_its_result(mapping_db, conn):
    queue = IQueue(conn.root())
    queue.quotas.create('mail')
    transaction.commit()
    job = Job(wait_for_child)
    job.quota_names = ('mail',)
    with testing.eager(mapping_db):
        queue.put(job)
        transaction.commit()
    _sync(conn)
    assert CALLS == ['waiting parent', 'awaited']
    assert (job.status, job.result) == (COMPLETED, 'awaited')
    assert len(queue.quotas['mail']) == 0


def test_an_aborted_put_runs_nothing(mapping_db, conn):
    with testing.eager(mapping_db):
        IQueue(conn.root()).put(count, 'never')
        transaction.abort()
    assert CALLS == []
    assert 'never' not in _sync(conn)


def test_retries_and_callbacks_without_pyramid(mapping_db, conn):
    job = Job(fail_always, 'again')
    job.retry_policy_factory = RetryThreeTimes
    job.addCallback(note_result)
    with testing.eager(mapping_db):
        IQueue(conn.root()).put(job)
        transaction.commit()
    root = _sync(conn)
    assert CALLS == ['again'] * 3
    assert job.status == COMPLETED
    assert isinstance(job.result, Failure)
    assert 'again fails' in root['seen']
    assert job.annotations[retry.RETRY_COUNTS] == {'other': 3}


def test_a_scheduled_job_runs_at_once_and_frees_its_quota(mapping_db, conn):
    queue = IQueue(conn.root())
    queue.quotas.create('mail')
    transaction.commit()
    job = Job(count, 'scheduled')
    job.quota_names = ('mail',)
    later = datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(hours=1)
    with testing.eager(mapping_db):
        queue.put(job, begin_after=later)
        transaction.commit()
    _sync(conn)
    assert job.status == COMPLETED and CALLS == ['scheduled']
    assert len(queue.quotas['mail']) == 0


class Reports(extensions.Extension):

    def __init__(self):
        self.runs = []

    def after_run(self, run):
        self.runs.append(run)


def test_extensions_hear_of_eager_runs(mapping_db, conn):
    reports = Reports()
    extensions.add(mapping_db, reports)
    try:
        with testing.eager(mapping_db):
            job = IQueue(conn.root()).put(count, 'reported')
            transaction.commit()
    finally:
        extensions.remove(mapping_db, reports)
    [run] = reports.runs
    assert run.job_id == int.from_bytes(job._p_oid, 'big')
    assert (run.status, run.failed, run.agent, run.queue) == (
        COMPLETED, False, eager.EAGER_AGENT, '')
