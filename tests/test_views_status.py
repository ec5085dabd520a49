"""The dispatcher monitor views, /health, and deny-by-default security."""
import operator
import re
import time

import pytest
import transaction
import webtest

import jobs
from adminapp import ADMIN, make_admin_app
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import get_poll, wait_for_result
from pyramid_zcasync.views import ROUTES

ISO_Z = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$')


@pytest.fixture
def made(tmp_path):
    apps = []

    def make(**kwargs):
        app = make_admin_app(tmp_path, **kwargs)
        apps.append(app)
        return app
    yield make
    for app in apps:
        close_databases(app.registry)


@pytest.fixture
def running(made):
    app = made(**{'zcasync.dispatcher': 'true'})
    get_poll(app.registry.zcasync_dispatcher, 0)
    return app, webtest.TestApp(app)


def run_job(app, func, *args):
    """Run a job by the app's dispatcher; return once its history has it
    (recorded just after the job's commit)."""
    connection = app.registry._zodb_databases[''].open()
    job = IQueue(connection.root()).put(func, *args)
    transaction.commit()
    result = wait_for_result(job)
    oid = int.from_bytes(job._p_oid, 'big')
    connection.close()
    running = app.registry.zcasync_dispatcher
    deadline = time.monotonic() + 6
    while 'result' not in (running.jobs.get(
            (oid, running.db.database_name)) or {}):
        assert time.monotonic() < deadline, 'job %d never recorded' % oid
        time.sleep(0.01)
    return oid, result


def test_status_has_exactly_the_seed_keys(running):
    app, client = running
    body = client.get('/_async/status', headers=ADMIN).json
    assert sorted(body) == ['poll interval', 'status',
                            'time since last poll', 'uptime', 'uuid']
    assert body['status'] == 'RUNNING'
    assert body['poll interval'] == {'seconds': 0.5}
    assert set(body['uptime']) <= {'days', 'hours', 'minutes', 'seconds'}
    assert body['uuid'] == app.registry.zcasync_dispatcher.UUID
    assert client.get('/_async/uuid', headers=ADMIN).json == body['uuid']
    assert ISO_Z.match(client.get('/_async/utcnow', headers=ADMIN).json)


def test_polls_jobs_and_statistics(running):
    app, client = running
    oid, result = run_job(app, operator.mul, 21, 2)
    assert result == 42
    poll = client.get('/_async/poll', headers=ADMIN).json
    assert ISO_Z.match(poll['time'])
    assert set(poll['results']['']['main']) == {
        'active jobs', 'error', 'len', 'new jobs', 'size'}
    polls = client.get('/_async/polls?count=2', headers=ADMIN).json
    assert len(polls) == 2 and polls[0]['key'] > polls[1]['key']
    info = client.get('/_async/dispatcher/jobs/%d' % oid, headers=ADMIN).json
    assert info['id'] == [oid, '']  # pyramid_zodbconn's primary is ''
    assert info['result'] == '42' and info['failed'] is False
    assert client.get('/_async/dispatcher/jobs/0x%x' % oid,
                      headers=ADMIN).json == info
    assert client.get('/_async/dispatcher/jobs', headers=ADMIN).json == []
    stats = client.get('/_async/jobstats', headers=ADMIN).json
    assert stats['successful'] >= 1 and stats['failed'] == 0
    oid, failure = run_job(app, jobs.divide, 1, 0)
    stats = client.get('/_async/jobstats', headers=ADMIN).json
    assert stats['failed'] == 1


@pytest.mark.parametrize('path, status, message', [
    ('/_async/dispatcher/jobs/123456789', 404, 'not in the history'),
    ('/_async/dispatcher/jobs/banana', 400, "'banana' is not a job id"),
    ('/_async/poll?at=yesterday', 400, "at='yesterday' is not a date"),
    ('/_async/polls?count=-1', 400, "count='-1' must be at least 1"),
    ('/_async/jobstats?since=2026-13-45', 400, 'is not a date'),
])
def test_bad_parameters_get_json_errors(running, path, status, message):
    app, client = running
    response = client.get(path, headers=ADMIN, status=status)
    assert message in response.json['error']


def test_without_dispatcher_status_is_a_404_and_health_is_up(made):
    client = webtest.TestApp(made())
    response = client.get('/_async/status', headers=ADMIN, status=404)
    assert 'no dispatcher runs in this process' in response.json['error']
    assert client.get('/_async/health').text == 'up\n'


def test_health_goes_down_when_the_dispatcher_stops(running):
    app, client = running
    response = client.get('/_async/health')
    assert response.status_int == 200 and response.text == 'up\n'
    app.registry.zcasync_dispatcher.stop()
    response = client.get('/_async/health', status=503)
    assert response.text == 'down\n'


def concrete(pattern):
    return pattern.replace('{oid}', '1')


PROTECTED = [pattern for name, pattern in ROUTES if name != 'health']


@pytest.mark.parametrize('pattern', PROTECTED)
def test_every_admin_route_is_denied_without_a_policy(made, pattern):
    client = webtest.TestApp(made(policy=False))
    method = client.post if pattern.startswith('/actions') else client.get
    response = method('/_async' + concrete(pattern), headers=ADMIN,
                      status=403)
    assert 'zcasync' not in response.text.lower().replace(
        '/_async', '')  # reveals nothing about the queues


@pytest.mark.parametrize('pattern', PROTECTED)
def test_every_admin_route_is_denied_to_non_admins(made, pattern):
    client = webtest.TestApp(made())
    method = client.post if pattern.startswith('/actions') else client.get
    method('/_async' + concrete(pattern), status=403)


def test_route_prefix_setting_moves_the_views(made):
    client = webtest.TestApp(made(**{'zcasync.route_prefix': '/ops/jobs'}))
    assert client.get('/ops/jobs/utcnow', headers=ADMIN).status_int == 200
    client.get('/_async/utcnow', headers=ADMIN, status=404)
