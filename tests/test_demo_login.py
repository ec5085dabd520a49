"""The demo's admin login: what the first command shows of the admin views.

In process (WebTest): anonymous visitors get 401 (a basic-auth challenge
with a link to the form) on every admin view but /health; basic auth and
the login form both open them; the form keeps CSRF and sends nobody off
site; a failed job reads "failed".  Out of process: the shipped
development.ini under pserve, logged in with the password it documents;
production.ini's demo refusing its placeholder password.
"""
import base64
import json
import re
import subprocess
import urllib.error
import urllib.request

import pytest
from pyramid.exceptions import ConfigurationError

from pyramid_zcasync import demo
from pyramid_zcasync.demo.auth import basic_credentials
from test_demo import (  # noqa: F401  (fixtures: demo_app, pserved & co)
    DEVELOPMENT_INI, demo_app, http_client, oid_of, processes, pserved,
    row_of, script, site, submit, wait_done)

PRODUCTION_INI = DEVELOPMENT_INI.parent / 'production.ini'
PASSWORD = 'test-password'  # demo_app's
#: What development.ini documents (README's first paragraph says it too).
DEVELOPMENT_PASSWORD = 'dev-only-admin'


def basic(user, password):
    token = base64.b64encode(('%s:%s' % (user, password)).encode()).decode()
    return {'Authorization': 'Basic ' + token}


def log_in(test_app, password=PASSWORD, came_from='/_async/', status=303):
    form = test_app.get('/login', {'came_from': came_from}).forms[0]
    form['password'] = password
    return form.submit(status=status)


@pytest.mark.parametrize('path', ['/_async/', '/_async/status',
                                  '/_async/db/jobs', '/_async/metrics'])
def test_anonymous_visitors_get_a_401_challenge(demo_app, path):
    response = demo_app.get(path, status=401)
    assert response.headers['WWW-Authenticate'] == (
        'Basic realm="pyramid_zcasync demo"')
    assert 'href="/login?came_from=' in response.text
    wrong = demo_app.get(path, headers=basic('admin', 'nope'), status=401)
    assert wrong.headers['WWW-Authenticate'].startswith('Basic ')
    as_json = demo_app.get(path, headers={'Accept': 'application/json'},
                           status=401)
    assert as_json.json == {'error': 'This page is for the demo admin: log '
                         'in first.'}
    # /health stays public (up, or down while the dispatcher starts).
    health = demo_app.get('/_async/health', status=[200, 503])
    assert health.text.strip() in ('up', 'down')


def test_basic_auth_opens_the_admin_views(demo_app):
    status = demo_app.get('/_async/status', headers=basic('admin', PASSWORD))
    assert set(status.json) == {'poll interval', 'status',
                                'time since last poll', 'uptime', 'uuid'}
    assert status.json['uuid'] == str(
        demo_app.app.registry.zcasync_dispatcher.UUID)
    demo_app.get('/_async/status', headers=basic('root', PASSWORD),
                 status=401)


def test_login_form_then_dashboard_then_logout(demo_app):
    page = demo_app.get('/')
    assert 'href="/login?came_from=%2F_async%2F"' in page.text
    assert 'href="/login?came_from=%2F_async%2Fstatus"' in page.text
    refused = log_in(demo_app, password='guess', status=403)
    assert 'Wrong user or password' in refused.text
    demo_app.get('/_async/status', status=401)

    response = log_in(demo_app)
    assert response.location == 'http://localhost/_async/'
    dashboard = response.follow()
    assert dashboard.status_int == 200
    assert dashboard.content_type == 'text/html'
    assert 'uuid' in demo_app.get('/_async/status').json
    page = demo_app.get('/')
    assert 'Logged in as <code>admin</code>' in page.text
    assert 'href="/_async/"' in page.text
    assert 'href="/_async/status"' in page.text

    page.forms['logout'].submit(status=303)
    demo_app.get('/_async/status', status=401)


@pytest.mark.parametrize('came_from', [
    'https://example.com/', '//example.com/', '/\\example.com',
    '/x\r\nSet-Cookie: a=b'])
def test_login_sends_nobody_off_site(demo_app, came_from):
    response = log_in(demo_app, came_from=came_from)
    assert response.location == 'http://localhost/_async/'


def test_login_without_its_csrf_token_is_refused(demo_app):
    response = demo_app.post('/login', {'user': 'admin',
                                        'password': PASSWORD}, status=400)
    assert 'CSRF token is missing' in response.text
    demo_app.get('/_async/status', status=401)


@pytest.mark.parametrize('password', [None, '', '  ', 'change-me'])
def test_demo_refuses_a_missing_or_placeholder_password(tmp_path, password):
    settings = {'demo.secret': 'x', 'zodbconn.uri': 'file://%s/Data.fs'
                % tmp_path}
    if password is not None:
        settings['demo.admin_password'] = password
    with pytest.raises(ConfigurationError,
                       match=r"demo.admin_password = '(change-me)?': set the "
                       "password of the demo user 'admin'"):
        demo.configure(settings)


@pytest.mark.parametrize('header', [
    'Basic !!!', 'Basic ' + base64.b64encode(b'no-colon').decode(),
    'Bearer abc', '', 'Basic ' + base64.b64encode(b'\xff:x').decode()])
def test_malformed_basic_auth_is_anonymous(header):
    class Request:
        headers = {'Authorization': header}
    assert basic_credentials(Request()) is None


def test_a_failed_job_reads_failed(demo_app):
    oid = oid_of(submit(demo_app, kind='fail', a='1', b='2'))
    info = wait_done(lambda url: demo_app.get(url).json, oid)
    assert info['status'] == 'failed'
    row = row_of(demo_app.get('/'), oid)
    assert '<td class="status">failed</td>' in row
    assert 'class="failed"' in row and 'completed' not in row
    ok = oid_of(submit(demo_app, a='2', b='3'))
    assert wait_done(lambda url: demo_app.get(url).json, ok)[
        'status'] == 'completed'


# -- out of process ------------------------------------------------------

def test_pserve_development_ini_shows_the_admin_views(pserved):
    ini, port = pserved
    assert '\ndemo.admin_password = %s\n' % DEVELOPMENT_PASSWORD in \
        ini.read_text()
    status_url = 'http://127.0.0.1:%d/_async/status' % port
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(status_url, timeout=10)
    assert anonymous.value.code == 401
    request = urllib.request.Request(
        status_url, headers=basic('admin', DEVELOPMENT_PASSWORD))
    with urllib.request.urlopen(request, timeout=10) as response:
        assert set(json.loads(response.read())) >= {'status', 'uuid'}

    browser = http_client(port)
    _, page = browser('/')
    login = re.search(r'href="(/login\?came_from=%2F_async%2F)"', page)
    _, form = browser(login.group(1))
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    url, dashboard = browser('/login', {
        'csrf_token': token, 'came_from': '/_async/', 'user': 'admin',
        'password': DEVELOPMENT_PASSWORD})
    assert url == 'http://127.0.0.1:%d/_async/' % port
    assert '<html' in dashboard
    _, page = browser('/')
    assert 'Logged in as <code>admin</code>' in page


def test_production_demo_refuses_the_placeholder_password(tmp_path):
    text = PRODUCTION_INI.read_text()
    text = text.replace('\ndemo.secret =\n', '\ndemo.secret = s3cret\n')
    assert '\ndemo.admin_password = change-me\n' in text
    (tmp_path / 'var' / 'log').mkdir(parents=True)
    ini = tmp_path / 'production.ini'
    ini.write_text(text)
    result = subprocess.run([script('pserve'), str(ini)], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert ("ConfigurationError: pyramid_zcasync demo: demo.admin_password"
            " = 'change-me'") in result.stderr, result.stderr



def test_dashboard_buttons_work_for_the_logged_in_admin(demo_app):
    """The demo's session carries the CSRF token the dashboard's POST
    actions check: retry a failed job from the dashboard."""
    oid = oid_of(submit(demo_app, kind='fail', a='1', b='2'))
    assert wait_done(lambda url: demo_app.get(url).json, oid)[
        'status'] == 'failed'
    log_in(demo_app)
    retry = next(form for form in demo_app.get('/_async/').forms.values()
                 if form.action.endswith('/actions/retry')
                 and form['job'].value == str(oid))
    response = retry.submit(status=303)
    assert response.location.endswith('?done=retried&job=%d' % oid)
