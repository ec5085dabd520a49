"""config.include('pyramid_zcasync'): the request API in one and two
databases, commit/abort semantics, conflicts retried by pyramid_retry,
bad settings, and when the dispatcher starts."""
import operator
import os
import time

import pytest
import transaction
import webtest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from ZODB.POSException import ConflictError

import jobs
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.config import close_databases, dispatcher_wanted
from pyramid_zcasync.interfaces import IQueue, KEY
from pyramid_zcasync.settings import parse_settings
from pyramid_zcasync.testing import wait_for_result


def put_view(request):
    job = request.async_queue.put(jobs.multiply, 6, 7)
    request.tm.get().note('put')  # the job's oid exists only after commit
    request.response.headers['X-Queue'] = repr(request.async_queue)
    return {'queued': len(request.async_queue)}


def put_then_fail_view(request):
    request.async_queue.put(jobs.multiply, 1, 1)
    raise ValueError('the view failed after its put')


ATTEMPTS = []


def conflicting_view(request):
    """Conflicts on its first attempt: another connection commits a write
    to the same object between this request's read and its commit."""
    ATTEMPTS.append(1)
    root = request.async_queues._p_jar.root()
    root['counter'] = root.get('counter', 0) + 1
    request.async_queue.put(jobs.multiply, 2, len(ATTEMPTS))
    if len(ATTEMPTS) == 1:
        db = request.async_queues._p_jar.db()
        manager = transaction.TransactionManager()
        other = db.open(transaction_manager=manager)
        other.root()['counter'] = 100
        manager.commit()
        other.close()
    return {'attempt': len(ATTEMPTS)}


def make_app(tmp_path, two_databases=False, **extra):
    settings = {
        'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
        'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
        'zcasync.poll_interval': '0.5',
        'retry.attempts': '3',
    }
    if two_databases:
        settings['zodbconn.uri.async'] = 'file://%s/async.fs' % tmp_path
        settings['zcasync.database'] = 'async'
    settings.update(extra)
    with Configurator(settings=settings) as config:
        config.include('pyramid_zcasync')
        for name, view in [('put', put_view), ('fail', put_then_fail_view),
                           ('conflict', conflicting_view)]:
            config.add_route(name, '/' + name)
            config.add_view(view, route_name=name, renderer='json')
        return config.make_wsgi_app()


@pytest.fixture
def apps():
    made = []

    def make(*args, **kwargs):
        app = make_app(*args, **kwargs)
        made.append(app)
        return app
    yield make
    for app in made:
        close_databases(app.registry)


def open_queue(app):
    connection = app.registry._zodb_databases[''].open()
    return connection, IQueue(connection.root())


@pytest.mark.parametrize('two_databases', [False, True])
def test_put_in_a_view_runs_after_commit(apps, tmp_path, two_databases):
    app = apps(tmp_path, two_databases, **{'zcasync.dispatcher': 'true'})
    running = app.registry.zcasync_dispatcher
    assert running is dispatcher_module.get() and running.activated
    response = webtest.TestApp(app).get('/put')
    assert response.json == {'queued': 1}
    connection, queue = open_queue(app)
    expected_db = 'async' if two_databases else ''
    assert queue._p_jar.db().database_name == expected_db
    if two_databases:  # both roots reach the same queues
        async_root = connection.get_connection('async').root()
        assert IQueue(async_root) is queue
    agent = queue.dispatchers[running.UUID]['main']
    deadline = time.monotonic() + 6
    while not len(agent.completed) and time.monotonic() < deadline:
        time.sleep(0.01)
        transaction.begin()
    assert [job.result for job in agent.completed] == [42]
    assert len(queue) == 0
    connection.close()


def test_a_view_that_raises_enqueues_nothing(apps, tmp_path):
    app = apps(tmp_path)
    test_app = webtest.TestApp(app)
    with pytest.raises(ValueError, match='failed after its put'):
        test_app.get('/fail')
    test_app.get('/put')
    connection, queue = open_queue(app)
    assert [job.args[:] for job in queue] == [[6, 7]]
    connection.close()


def test_conflict_is_retried_by_pyramid_retry(apps, tmp_path):
    app = apps(tmp_path)
    ATTEMPTS.clear()
    response = webtest.TestApp(app).get('/conflict')
    assert response.json == {'attempt': 2}
    connection, queue = open_queue(app)
    # Only the second attempt's put exists; the first was rolled back.
    assert [job.args[:] for job in queue] == [[2, 2]]
    assert connection.root()['counter'] == 101
    connection.close()


def test_no_dispatcher_unless_asked(apps, tmp_path):
    app = apps(tmp_path)
    assert app.registry.zcasync_dispatcher is None
    assert dispatcher_module.get() is None


def test_request_queue_is_in_the_request_transaction(apps, tmp_path):
    app = apps(tmp_path)
    response = webtest.TestApp(app).get('/put')
    assert response.headers['X-Queue'] == "<Queue '' pending=1>"


@pytest.mark.parametrize('argv, env, setting, expected', [
    (['pserve'], None, True, True),
    (['pserve'], None, False, False),
    (['/usr/bin/pshell'], None, True, False),
    (['proutes'], None, True, False),
    (['prequest'], None, True, False),
    (['/venv/lib/pyramid/scripts/pshell.py'], None, True, False),
    (['pshell'], '1', True, True),
    (['pserve'], '0', True, False),
    # Only serving programs start one from the setting alone.
    (['/venv/bin/gunicorn'], None, True, True),
    (['uwsgi'], None, True, True),
    (['pzcasync-worker'], None, True, True),
    (['/venv/bin/pytest'], None, True, False),
    (['send_reminders.py'], None, True, False),
    (['send_reminders.py'], '1', False, True),
    (['pytest'], 'setting', True, True),
    (['pytest'], 'setting', False, False),
    (['pshell'], 'setting', True, False),
])
def test_dispatcher_wanted(monkeypatch, argv, env, setting, expected):
    if env is None:
        monkeypatch.delenv('ZCASYNC_DISPATCHER', raising=False)
    else:
        monkeypatch.setenv('ZCASYNC_DISPATCHER', env)
    settings = parse_settings({'zcasync.dispatcher': setting})
    assert dispatcher_wanted(settings, argv) is expected


@pytest.mark.parametrize('extra, message', [
    ({'zcasync.database': 'nosuch'},
     "zcasync.database = 'nosuch': no such pyramid_zodbconn database"),
    ({'zcasync.poll_interval': '-5'}, "zcasync.poll_interval = '-5'"),
    ({'zcasync.agent_size': 'three'}, "zcasync.agent_size = 'three'"),
    ({'zcasync.ping_death_interval': '10'}, 'zcasync.ping_death_interval'),
    ({'zodbconn.uri': None}, 'needs a ZODB database: set zodbconn.uri'),
])
def test_bad_settings_stop_start_up_with_a_clear_message(tmp_path, extra,
                                                         message):
    settings = dict(extra)
    if settings.get('zodbconn.uri', '') is None:
        del settings['zodbconn.uri']
        with Configurator(settings={}) as config, \
                pytest.raises(ConfigurationError) as raised:
            config.include('pyramid_zcasync')
    else:
        with pytest.raises(ConfigurationError) as raised:
            make_app(tmp_path, **settings)
    assert message in str(raised.value)


def test_bad_settings_lose_nothing_already_committed(apps, tmp_path):
    app = apps(tmp_path)
    webtest.TestApp(app).get('/put')
    close_databases(app.registry)
    with pytest.raises(ConfigurationError):
        make_app(tmp_path, **{'zcasync.poll_interval': 'soon'})
    again = apps(tmp_path)
    connection, queue = open_queue(again)
    assert len(queue) == 1 and KEY in connection.root()
    connection.close()


def test_unreadable_uuid_file_stops_start_up(tmp_path):
    (tmp_path / 'uuid.txt').write_text('garbage\n')
    app = None
    with pytest.raises(ConfigurationError) as raised:
        app = make_app(tmp_path, **{'zcasync.dispatcher': 'true'})
    assert "zcasync.uuid_file = '%s'" % (tmp_path / 'uuid.txt') \
        in str(raised.value)
    assert 'does not hold a UUID' in str(raised.value)
    assert 'garbage' not in str(raised.value)  # its contents stay private
    assert app is None and dispatcher_module.get() is None


def test_the_default_queue_is_always_installed(apps, tmp_path):
    app = apps(tmp_path, **{'zcasync.queues': 'reports'})
    connection, queue = open_queue(app)
    assert sorted(connection.root()[KEY]) == ['', 'reports']
    assert queue is connection.root()[KEY]['']
    connection.close()


def test_operator_jobs_too(apps, tmp_path):
    app = apps(tmp_path, **{'zcasync.dispatcher': 'true'})
    connection, queue = open_queue(app)
    job = queue.put(operator.pow, 2, 10)
    transaction.commit()
    assert wait_for_result(job) == 1024
    connection.close()


def test_a_twin_uuid_stops_start_up_with_a_clear_message(apps, tmp_path):
    """A live twin is not a bad setting (the worker exits 1 for it, 2 for
    settings): its own error, which names the UUID file and the holder."""
    from pyramid_zcasync.instance import DispatcherAlreadyRunning
    apps(tmp_path, **{'zcasync.dispatcher': 'true'})
    other = tmp_path / 'other'
    other.mkdir()
    with pytest.raises(DispatcherAlreadyRunning) as raised:
        make_app(other, **{'zcasync.dispatcher': 'true',
                           'zcasync.uuid_file': str(tmp_path / 'uuid.txt')})
    assert 'is already running (process %d' % os.getpid() \
        in str(raised.value)
    assert 'uuid.txt.lock' in str(raised.value)
