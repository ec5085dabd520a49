"""README's "Install into your own app", followed as a user would: the app
it builds (.ci/smokeapp.py, which .ci/run also serves from the installed
wheel) tested the way its "Testing your own code" paragraph says.

The view answers the job's oid before the commit (``connection.add``),
with one database and with two; the test asks for a dispatcher with
``ZCASYNC_DISPATCHER=1`` and waits with ``wait_for_result``.
"""
import os
import sys

import pytest
import webtest
from ZODB.utils import p64

from pyramid_zcasync import Job
from pyramid_zcasync.config import close_databases, queue_database
from pyramid_zcasync.testing import wait_for_result

CI_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), '.ci')


@pytest.fixture
def smokeapp(monkeypatch):
    monkeypatch.syspath_prepend(CI_DIR)
    import smokeapp
    yield smokeapp
    sys.modules.pop('smokeapp', None)


@pytest.fixture(params=['one database', 'two databases'])
def app(request, tmp_path, monkeypatch, smokeapp):
    monkeypatch.setenv('ZCASYNC_DISPATCHER', '1')
    settings = {
        'smoke.secret': 'test',
        'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
        'tm.manager_hook': 'pyramid_tm.explicit_manager',
        'retry.attempts': '3',
        'zcasync.uuid_file': str(tmp_path / 'var' / 'uuid.txt'),
    }
    if request.param == 'two databases':
        settings['zodbconn.uri.async'] = 'file://%s/async.fs' % tmp_path
        settings['zcasync.database'] = 'async'
    wsgi_app = smokeapp.main({}, **settings)
    yield wsgi_app
    close_databases(wsgi_app.registry)  # stops the dispatcher too


def test_view_answers_the_oid_and_the_job_runs(app):
    oid = webtest.TestApp(app).post('/queue', {'number': '12'}).json['oid']
    connection = queue_database(app.registry).open()
    try:
        job = connection.get(p64(oid))
        assert isinstance(job, Job)
        assert wait_for_result(job) == 144
    finally:
        connection.close()
    shown = webtest.TestApp(app).get('/job/%d' % oid).json
    assert shown == {'status': 'completed-status', 'result': 144}


def test_admin_views_need_the_policy(app):
    client = webtest.TestApp(app)
    client.get('/_async/status', status=403)
    assert 'uuid' in client.get('/_async/status',
                                headers={'X-Smoke-Admin': 'yes'}).json
