"""The demo app and the README's first command, ``pserve development.ini``.

In process (WebTest, real FileStorage, dispatcher on): the form queues a
job that completes and shows on the page; a request that fails, lacks its
CSRF token or has bad input queues nothing.  Out of process: the shipped
development.ini served by ``pserve`` on a free port, a job submitted over
HTTP, then SIGINT or SIGTERM: the process exits in seconds and leaves its
dispatcher deactivated and its FileStorage closed.  And ``pshell`` on the
same ini starts no dispatcher.
"""
import contextlib
import http.cookiejar
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import transaction
import webtest
import ZODB
import ZODB.FileStorage

from conftest import free_port, stop_process, wait_for_port
from pyramid_zcasync import demo
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.demo import jobs as demo_jobs
from pyramid_zcasync.demo import recent
from pyramid_zcasync.instance import read_uuid
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import wait_until

DEVELOPMENT_INI = pathlib.Path(__file__).resolve().parents[1] / (
    'development.ini')
LISTEN = 'listen = 127.0.0.1:6543'
#: Runs ``argv[1:]`` with SIGINT at its default: a shell without job
#: control starts background commands (maybe this test run) with SIGINT
#: ignored, children inherit that, and then SIGINT would not stop them.
DEFAULT_SIGINT = ('import os, signal, sys; '
                  'signal.signal(signal.SIGINT, signal.SIG_DFL); '
                  'os.execv(sys.argv[1], sys.argv[1:])')


# -- in process ----------------------------------------------------------

def put_then_fail(request):
    """Test-only view: queues a job (and remembers it), then fails."""
    job = request.async_queue.put(demo_jobs.multiply, 3, 3)
    recent.remember(request, job)
    raise ValueError('the view failed after its put')


@pytest.fixture
def demo_app(request, tmp_path, monkeypatch):
    """The demo on a tmp FileStorage; ``two_databases`` (indirect param)
    puts the queues, the jobs and the recent list in a second one."""
    monkeypatch.setenv('ZCASYNC_DISPATCHER', 'setting')
    settings = {
        'demo.secret': 'test-secret',
        'demo.admin_password': 'test-password',
        'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
        'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
        'zcasync.dispatcher': 'true',
        'zcasync.poll_interval': '0.5',
        'retry.attempts': '3',
    }
    if getattr(request, 'param', None) == 'two_databases':
        settings['zodbconn.uri.async'] = 'file://%s/async.fs' % tmp_path
        settings['zcasync.database'] = 'async'
    config = demo.configure(settings)
    config.add_route('put_then_fail', '/test/put-then-fail')
    config.add_view(put_then_fail, route_name='put_then_fail')
    app = config.make_wsgi_app()
    try:
        assert dispatcher_module.get() is app.registry.zcasync_dispatcher
        yield webtest.TestApp(app)
    finally:
        close_databases(app.registry)


def stored(test_app):
    """(pending in the queue, remembered by the page, run by the agent)."""
    registry = test_app.app.registry
    connection = registry._zodb_databases[''].open()
    try:
        root = connection.get_connection(
            registry.zcasync_settings.database or '').root()
        queue = IQueue(root)
        agent = queue.dispatchers[registry.zcasync_dispatcher.UUID]['main']
        return (len(queue), len(root[recent.ROOT_KEY]),
                len(list(agent.completed)))
    finally:
        transaction.abort()
        connection.close()


def submit(test_app, status=303, **fields):
    form = test_app.get('/').forms[0]
    for name, value in fields.items():
        form[name] = value
    return form.submit(status=status)


def oid_of(url):
    """The job's oid in the URL the form's POST redirects to."""
    query = urllib.parse.urlparse(getattr(url, 'location', url)).query
    return int(urllib.parse.parse_qs(query)['job'][0])


def row_of(page, oid):
    return re.search(r'<tr id="job-%d".*?</tr>' % oid, page.text,
                     re.S).group()


def wait_done(get_json, oid, seconds=10):
    deadline = time.monotonic() + seconds
    while True:
        info = get_json('/jobs/%d' % oid)
        if info['done'] or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


@pytest.mark.parametrize('demo_app', ['one_database', 'two_databases'],
                         indirect=True)
def test_form_queues_jobs_that_complete_and_show(demo_app):
    started = time.monotonic()
    multiply = oid_of(submit(demo_app, a='6', b='7'))
    failing = oid_of(submit(demo_app, kind='fail', a='1', b='2'))
    slow = oid_of(submit(demo_app, kind='slow', a='2.5', b='4'))
    later = oid_of(submit(demo_app, a='3', b='5', delay='1'))
    assert demo_app.get('/jobs/%d' % later).json['status'] == 'pending'
    assert 'http-equiv="refresh"' in demo_app.get('/').text  # no-JS reload

    def get_json(url):
        return demo_app.get(url).json
    assert wait_done(get_json, multiply)['result'] == 42
    failure = wait_done(get_json, failing)['failure']
    assert failure['type'] == 'ValueError'
    assert 'always fails' in failure['message']
    assert 'Traceback' in failure['traceback']
    assert wait_done(get_json, slow)['result'] == 10.0
    scheduled = wait_done(get_json, later)
    assert scheduled['result'] == 15
    assert scheduled['active_start'] >= scheduled['begin_after']
    assert time.monotonic() - started >= 1.0

    page = demo_app.get('/?job=%d' % multiply)
    assert 'http-equiv="refresh"' not in page.text  # all done: no reload
    row = row_of(page, multiply)
    assert 'completed' in row and '<td class="result">42</td>' in row
    assert 'highlight' in row
    row = row_of(page, failing)
    assert 'ValueError: this demo job always fails' in row
    # The agent's history gets a job when its slot is released, in a
    # transaction of its own just after the one the page showed.
    wait_until(lambda: stored(demo_app) == (0, 4, 4), 10,
               'the four jobs in the agent history')


def test_json_client_gets_the_oid(demo_app):
    token = demo_app.get('/').forms[0]['csrf_token'].value
    response = demo_app.post(
        '/', {'csrf_token': token, 'kind': 'multiply', 'a': '-2', 'b': '21'},
        headers={'Accept': 'application/json'}, status=201)
    oid = response.json['oid']
    assert response.json['url'].endswith('/jobs/%d' % oid)
    assert wait_done(lambda url: demo_app.get(url).json, oid)['result'] == -42


def test_view_that_raises_after_put_queues_nothing(demo_app):
    with pytest.raises(ValueError, match='failed after its put'):
        demo_app.get('/test/put-then-fail')
    time.sleep(0.6)  # more than a poll: nothing to run turns up
    assert stored(demo_app) == (0, 0, 0)
    assert 'No jobs yet.' in demo_app.get('/').text


@pytest.mark.parametrize('token', [None, 'forged'])
def test_post_without_the_csrf_token_is_refused(demo_app, token):
    fields = {'kind': 'multiply', 'a': '6', 'b': '7'}
    if token:
        fields['csrf_token'] = token
    response = demo_app.post('/', fields, status=400)
    assert 'CSRF token is missing or does not match' in response.text
    assert 'Nothing was queued' in response.text
    time.sleep(0.6)
    assert stored(demo_app) == (0, 0, 0)


@pytest.mark.parametrize('field, value, message', [
    ('a', 'abc', "first number = 'abc' is not a number"),
    ('b', '1e999', "second number = '1e999' is not a finite number"),
    ('b', 'nan', "second number = 'nan' is not a finite number"),
    ('a', '', "first number = '' is empty"),
    ('a', '1' * 20, 'is out of range'),
    ('delay', '-1', "run in (seconds) = '-1' is out of range (0 to 3600)"),
    ('delay', 'soon', "run in (seconds) = 'soon' is not a number"),
])
def test_bad_input_is_a_400_naming_the_value(demo_app, field, value,
                                             message):
    response = submit(demo_app, status=400, **{field: value})
    assert message.replace("'", '&#x27;') in response.text
    # Nothing typed is lost: the form comes back with the values as sent.
    assert response.forms[0][field].value == value
    time.sleep(0.6)
    assert stored(demo_app) == (0, 0, 0)


def test_bad_job_kind_and_bad_job_ids(demo_app):
    token = demo_app.get('/').forms[0]['csrf_token'].value
    response = demo_app.post(
        '/', {'csrf_token': token, 'kind': 'rm -rf', 'a': '1', 'b': '1'},
        headers={'Accept': 'application/json'}, status=400)
    assert response.json == {'error': "job = 'rm -rf' is not a job kind; "
                             'expected one of multiply, slow, fail'}
    assert demo_app.get('/jobs/x1', status=400).json == {
        'error': "'x1' is not a job id (a whole number, at most 20 digits)"}
    assert 'no job 0 among' in demo_app.get('/jobs/0', status=404).json[
        'error']
    # Anyone's input: neither is a 500 (int() refuses 4,301 digits, and
    # '²' is a digit to isdigit() but not to int()).
    for text in ('9' * 4301, '\u00b2'):
        assert 'is not a job id' in demo_app.get(
            '/jobs/' + urllib.parse.quote(text), status=400).json['error']
        assert demo_app.get('/', {'job': text}).status_int == 200


# -- out of process ------------------------------------------------------

def script(name):
    """pserve or pshell by path: ``python -m`` would change ``argv[0]``,
    by which pyramid_zcasync tells pshell from pserve."""
    return os.path.join(os.path.dirname(sys.executable), name)


@pytest.fixture
def site(tmp_path):
    """A copy of development.ini on a free port, with its own var/."""
    port = free_port()
    text = DEVELOPMENT_INI.read_text()
    assert LISTEN in text
    (tmp_path / 'var').mkdir()
    ini = tmp_path / 'development.ini'
    ini.write_text(text.replace(LISTEN, 'listen = 127.0.0.1:%d' % port))
    return ini, port


@pytest.fixture
def processes():
    """Start children with ``processes(args, **popen)``; each is stopped by
    its PID at the end, whatever happened."""
    started = []

    def start(args, **options):
        env = dict(os.environ)
        for name in ('ZCASYNC_DISPATCHER', 'ZC_ASYNC_UUID'):
            env.pop(name, None)
        process = subprocess.Popen(
            [sys.executable, '-c', DEFAULT_SIGINT] + list(args), env=env,
            **options)
        started.append(process)
        return process
    yield start
    for process in started:
        stop_process(process)


@pytest.fixture
def pserved(site, processes):
    """``site``'s development.ini served by ``pserve`` (its output
    discarded), once it listens: (ini path, port)."""
    ini, port = site
    processes([script('pserve'), str(ini)], cwd=str(ini.parent),
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 30)
    return ini, port


def http_client(port):
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    base = 'http://127.0.0.1:%d' % port

    def request(path, data=None, headers=()):
        body = data and urllib.parse.urlencode(data).encode()
        with opener.open(urllib.request.Request(
                base + path, body, dict(headers)), timeout=10) as response:
            return response.geturl(), response.read().decode()
    return request


@contextlib.contextmanager
def queue_left_in(var):
    """The default queue in the FileStorage a finished process left."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(var / 'Data.fs'),
                                              read_only=True))
    try:
        yield IQueue(db.open().root())
    finally:
        db.close()


@pytest.mark.parametrize('command, signum', [
    ('pserve', signal.SIGINT),
    ('pserve', signal.SIGTERM),
    ('python -m pyramid_zcasync.demo', signal.SIGINT),
])
def test_served_job_completes_then_signal_stops_cleanly(
        site, processes, command, signum):
    ini, port = site
    var = ini.parent / 'var'
    if command == 'pserve':
        args = [script('pserve'), str(ini)]
    else:
        args = [sys.executable, '-m', 'pyramid_zcasync.demo']
    log_path = ini.parent / 'server.log'
    with open(log_path, 'w') as log:
        server = processes(args, cwd=str(ini.parent), stdout=log,
                           stderr=subprocess.STDOUT)
    wait_for_port(port, 30)
    request = http_client(port)
    _, page = request('/')
    assert 'Dispatcher' in page and 'is running here' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    url, page = request('/', {'csrf_token': token, 'kind': 'multiply',
                              'a': '6', 'b': '7', 'delay': '0'})
    oid = oid_of(url)
    assert 'id="job-%d"' % oid in page

    def get_json(path):
        return json.loads(request(path,
                                  headers={'Accept': 'application/json'})[1])
    assert wait_done(get_json, oid)['result'] == 42

    signalled = time.monotonic()
    server.send_signal(signum)
    server.wait(15)
    elapsed = time.monotonic() - signalled
    output = log_path.read_text()
    assert elapsed < 8, output
    assert re.search(r'dispatcher \S+ stopped', output), output
    assert 'Traceback' not in output, output
    # atexit closed the FileStorage: it wrote its index.
    assert (var / 'Data.fs.index').exists(), output
    uuid = read_uuid(str(var / 'uuid.txt'), create=False)
    with queue_left_in(var) as queue:
        assert queue.dispatchers[uuid].activated is None


def test_pshell_starts_no_dispatcher(site, processes):
    ini, _ = site
    shell = processes([script('pshell'), str(ini)], cwd=str(ini.parent),
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    out, err = shell.communicate(
        'import pyramid_zcasync.dispatcher\n'
        'print("DISPATCHER", pyramid_zcasync.dispatcher.get())\n',
        timeout=30)
    assert 'DISPATCHER None' in out, (out, err)
    assert shell.returncode == 0, (out, err)
    with queue_left_in(ini.parent / 'var') as queue:
        assert list(queue.dispatchers) == []  # none ever registered
