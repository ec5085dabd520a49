"""production.ini end to end, with real processes on 127.0.0.1.

``pzcasync-zeo`` serves the two storages; ``pserve production.ini`` (a
copy, in a directory of its own) runs the app and its dispatcher on them;
a job is submitted through the app's form and its result read over HTTP;
a separate ZEO client checks that the queues live in the ``async``
storage; SIGTERM stops pserve within seconds and leaves its dispatcher
deactivated in the database.
"""
import html.parser
import http.cookiejar
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import free_port, stop_process, wait_for_port

ZEO = pytest.importorskip('ZEO')

import transaction  # noqa: E402
import ZODB  # noqa: E402
from ZODB.utils import p64  # noqa: E402

from pyramid_zcasync.instance import read_uuid  # noqa: E402
from pyramid_zcasync.interfaces import COMPLETED, KEY  # noqa: E402
from pyramid_zcasync.scripts import zeoserver  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
PRODUCTION_INI = os.path.join(ROOT, 'production.ini')
BIN = os.path.dirname(sys.executable)
#: The ZEO address written in production.ini's two URIs.
SHIPPED_ZEO = 'zeo://127.0.0.1:8100?'


def script(name, module):
    """The console script beside this Python, else ``python -m``."""
    path = os.path.join(BIN, name)
    if os.path.exists(path):
        return [path]
    return [sys.executable, '-m', module]


def read(path):
    try:
        with open(path, encoding='utf-8', errors='replace') as stream:
            return stream.read()
    except FileNotFoundError:
        return '(no %s)' % path


class Process:
    """A child whose output goes to a file (no pipe to fill up)."""

    def __init__(self, command, directory, name, env=None):
        self.log = os.path.join(str(directory), name + '.out')
        with open(self.log, 'wb') as out:
            self.process = subprocess.Popen(
                command, cwd=str(directory), stdout=out,
                stderr=subprocess.STDOUT, env=env)

    def wait_for_port(self, port, seconds=30):
        """Until something listens on ``port``; fail at once, with the
        output, if the process exits first."""
        deadline = time.monotonic() + seconds
        while self.process.poll() is None:
            try:
                wait_for_port(port, seconds=0.2)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    break
        raise AssertionError('%s: nothing listens on %d (exit status %s):\n%s'
                             % (self.log, port, self.process.poll(),
                                self.output))

    @property
    def output(self):
        return read(self.log)

    def stop(self):
        stop_process(self.process)


# -- the ZEO server ------------------------------------------------------


def start_zeo(directory, *options):
    """``pzcasync-zeo OPTIONS`` on a free port, storages in its own
    directory, once it listens (stop it with ``.stop()``)."""
    port = free_port()
    var = directory / 'zeo-var'
    server = Process(
        script('pzcasync-zeo', 'pyramid_zcasync.scripts.zeoserver') + [
            '--address', '127.0.0.1:%d' % port, '--var', str(var)]
        + list(options), directory, 'zeo')
    server.port, server.var = port, var
    try:
        server.wait_for_port(port)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def zeo(tmp_path):
    """``pzcasync-zeo`` with its defaults."""
    server = start_zeo(tmp_path)
    yield server
    server.stop()


def zeo_multidb(port):
    """A client multi-database like production.ini's: '' on storage main,
    'async' on storage async."""
    databases = {}
    for database_name, storage in (('', 'main'), ('async', 'async')):
        ZODB.DB(ZEO.client(('127.0.0.1', port), storage=storage,
                           wait_timeout=30),
                databases=databases, database_name=database_name)
    return databases


def close_all(databases):
    for db in list(databases.values()):
        db.close()


def test_zeo_serves_two_named_storages(zeo):
    assert wait_for_file(zeo.var / 'main.fs')
    databases = zeo_multidb(zeo.port)
    try:
        manager = transaction.TransactionManager()
        main = databases[''].open(transaction_manager=manager)
        with manager:
            main.root()['x'] = 1
            main.get_connection('async').root()['y'] = 2
        main.close()
    finally:
        close_all(databases)
    for storage, key in (('main', 'x'), ('async', 'y')):
        db = ZEO.DB(('127.0.0.1', zeo.port), storage=storage, wait_timeout=30)
        try:
            with db.transaction() as conn:
                assert sorted(conn.root().keys()) == [key]
        finally:
            db.close()
    assert int(read(zeo.var / 'zeo.pid')) == zeo.process.pid
    zeo.stop()
    assert zeo.process.returncode == 0, zeo.output
    assert not (zeo.var / 'zeo.pid').exists()


def wait_for_file(path, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def run_zeo_script(*args):
    return subprocess.run(
        script('pzcasync-zeo', 'pyramid_zcasync.scripts.zeoserver')
        + list(args), capture_output=True, text=True, timeout=30)


def zeo_main(capsys, *args):
    """``pzcasync-zeo ARGS`` in this process: (status, stdout, stderr)."""
    status = zeoserver.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize('address, says', [
    ('nonsense', "--address 'nonsense': expected HOST:PORT"),
    ('127.0.0.1:99999', "--address '127.0.0.1:99999': expected HOST:PORT"),
    ('127.0.0.1:', "--address '127.0.0.1:': expected HOST:PORT"),
    (':8100', "--address ':8100': expected HOST:PORT"),
    ('::1:8100', "--address '::1:8100': put an IPv6 address in brackets"),
    ('no-such-host.invalid:8100',
     "--address 'no-such-host.invalid:8100': unknown host"),
])
def test_bad_address_is_one_clear_line(tmp_path, capsys, address, says):
    status, out, err = zeo_main(capsys, '--address', address,
                                '--var', str(tmp_path))
    assert (status, out, err.count('\n')) == (2, '', 1), err
    assert err.startswith('pzcasync-zeo: error: ' + says), err
    assert not (tmp_path / 'zeo.conf').exists()


def test_bad_address_from_the_console_script(tmp_path):
    result = run_zeo_script('--address', 'localhost:http', '--var',
                            str(tmp_path))
    assert (result.returncode, result.stdout) == (2, '')
    assert result.stderr == (
        "pzcasync-zeo: error: --address 'localhost:http': expected HOST:PORT"
        " (e.g. 127.0.0.1:8100) or PORT; 'http' is not a port number from 1"
        ' to 65535\n')


def test_busy_address_and_locked_var(zeo, tmp_path, capsys):
    address = '127.0.0.1:%d' % zeo.port
    assert zeo_main(capsys, '--address', address, '--var', str(tmp_path)) == (
        2, '', 'pzcasync-zeo: error: --address %r: cannot listen there: the '
        'port is already in use\n' % address)
    # Same storages, another port: refused before touching the running
    # server's zeo.conf and PID file.
    assert wait_for_file(zeo.var / 'zeo.pid')
    before = read(zeo.var / 'zeo.conf')
    status, out, err = zeo_main(capsys, '--address', '127.0.0.1:%d'
                                % free_port(), '--var', str(zeo.var))
    assert (status, out) == (2, '')
    assert err.startswith(
        "pzcasync-zeo: error: --var %r: storage 'main' there is in use by "
        'another running ZEO server' % str(zeo.var)), err
    assert read(zeo.var / 'zeo.conf') == before
    assert int(read(zeo.var / 'zeo.pid')) == zeo.process.pid


def test_bad_var_names_the_value(tmp_path, capsys):
    a_file = tmp_path / 'a-file'
    a_file.write_text('')
    assert zeo_main(capsys, '--var', str(a_file)) == (
        2, '', 'pzcasync-zeo: error: --var %r: %s exists and is not a '
        'directory\n' % (str(a_file), a_file))
    below = str(a_file / 'var')
    status, out, err = zeo_main(capsys, '--var', below)
    assert (status, out) == (2, '')
    assert err.startswith('pzcasync-zeo: error: --var %r: cannot write in '
                          '%s: ' % (below, below)), err


def test_config_is_valid_for_runzeo(tmp_path, capsys, monkeypatch):
    """The defaults: loopback, ./var; ``$`` in a path stays literal."""
    site = tmp_path / 'a $HOME dir'
    site.mkdir()
    monkeypatch.chdir(site)
    var = site / 'var'
    assert zeo_main(capsys, '--config-only') == (
        0, str(var / 'zeo.conf') + '\n', '')
    from ZEO.runzeo import ZEOOptions
    options = ZEOOptions()
    options.realize(['-C', str(var / 'zeo.conf')])
    assert options.address == ('127.0.0.1', 8100)
    assert [(s.name, s.config.path) for s in options.storages] == [
        ('main', str(var / 'main.fs')), ('async', str(var / 'async.fs'))]
    assert options.pid_file == str(var / 'zeo.pid')
    assert zeoserver.parse_address('8100') == ('127.0.0.1', 8100)
    assert zeoserver.parse_address('[::1]:8100') == ('::1', 8100)
    assert zeoserver.format_address('::1', 8100) == '[::1]:8100'


# -- pserve production.ini -----------------------------------------------


class Browser:
    """urllib with cookies; no redirects followed unless asked."""

    def __init__(self, base):
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect)

    def request(self, path, data=None):
        body = None if data is None else urllib.parse.urlencode(data).encode()
        try:
            response = self.opener.open(self.base + path, body, timeout=20)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            return (response.status, dict(response.headers),
                    response.read().decode('utf-8', 'replace'))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class FormParser(html.parser.HTMLParser):
    """The inputs of the first POST form of a page."""

    def __init__(self):
        super().__init__()
        self.fields, self.action, self.depth = {}, None, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'form' and self.action is None and \
                (attrs.get('method') or '').lower() == 'post':
            self.action, self.depth = attrs.get('action') or '', 1
        elif self.depth and tag in ('input', 'select', 'textarea'):
            name = attrs.get('name')
            if name and (tag != 'input' or attrs.get('type') not in (
                    'radio', 'checkbox', 'submit') or 'checked' in attrs):
                self.fields.setdefault(name, attrs.get('value') or '')

    def handle_endtag(self, tag):
        if tag == 'form' and self.depth:
            self.depth = 0


def site_copy(tmp_path, zeo_port):
    """production.ini in a fresh directory, pointed at our ZEO server."""
    site = tmp_path / 'site'
    (site / 'var' / 'log').mkdir(parents=True)
    text = read(PRODUCTION_INI)
    assert text.count(SHIPPED_ZEO) == 2, 'both URIs name the ZEO server'
    text = text.replace(SHIPPED_ZEO, 'zeo://127.0.0.1:%d?' % zeo_port)
    assert '\ndemo.secret =\n' in text, 'shipped without a secret'
    text = text.replace('\ndemo.secret =\n',
                        '\ndemo.secret = %s\n' % secrets.token_hex())
    assert '\ndemo.admin_password = change-me\n' in text  # refused as is
    text = text.replace('\ndemo.admin_password = change-me\n',
                        '\ndemo.admin_password = %s\n' % secrets.token_hex())
    (site / 'production.ini').write_text(text)
    return site


@pytest.fixture
def pserve(tmp_path, zeo):
    site = site_copy(tmp_path, zeo.port)
    http_port = free_port()
    env = dict(os.environ)
    env.pop('ZC_ASYNC_UUID', None)
    env.pop('ZCASYNC_DISPATCHER', None)
    server = Process(
        script('pserve', 'pyramid.scripts.pserve') + [
            'production.ini', 'http_port=%d' % http_port], site, 'pserve',
        env=env)
    server.site, server.http_port, server.zeo = site, http_port, zeo
    try:
        server.wait_for_port(http_port)
        yield server
    finally:
        server.stop()


def submit_job(browser):
    status, headers, page = browser.request('/')
    assert status == 200, page
    form = FormParser()
    form.feed(page)
    assert 'csrf_token' in form.fields, page
    fields = dict(form.fields, a='6', b='7', kind='multiply')
    status, headers, page = browser.request(form.action or '/', fields)
    assert status in (302, 303), (status, page)
    # The demo redirects to its page, the job highlighted: /?job=OID.
    location = urllib.parse.urlsplit(headers['Location'])
    assert location.path == '/', headers['Location']
    oid = urllib.parse.parse_qs(location.query)['job'][0]
    assert oid.isdigit(), headers['Location']
    return int(oid)


def wait_for_json_result(browser, oid, seconds=20):
    deadline = time.monotonic() + seconds
    while True:
        status, headers, body = browser.request('/jobs/%d' % oid)
        assert status == 200, body
        info = json.loads(body)
        if info['done'] or time.monotonic() > deadline:
            return info
        time.sleep(0.1)


def test_pserve_production_ini(pserve):
    browser = Browser('http://127.0.0.1:%d' % pserve.http_port)
    # The CSRF check is on: a POST without the token is refused.
    assert browser.request('/', {'a': '1', 'b': '2'})[0] == 400

    oid = submit_job(browser)
    info = wait_for_json_result(browser, oid)
    assert (info['status'], info['result'], info['failure']) == (
        'completed', 42, None), info

    # The queues and the job are in storage 'async', reached from 'main'.
    uuid = read_uuid(str(pserve.site / 'var' / 'uuid.txt'), create=False)
    databases = zeo_multidb(pserve.zeo.port)
    try:
        manager = transaction.TransactionManager()
        conn = databases[''].open(transaction_manager=manager)
        queues = conn.root()[KEY]
        assert queues._p_jar.db().database_name == 'async'
        async_conn = conn.get_connection('async')
        assert async_conn.root()[KEY] is queues
        job = async_conn.get(p64(oid))
        assert job._p_jar is async_conn
        assert job.status == COMPLETED and job.result == 42
        assert queues[''].dispatchers[uuid].activated
        manager.abort()
        conn.close()

        # SIGTERM: pserve exits within seconds, its dispatcher deactivated.
        started = time.monotonic()
        pserve.process.send_signal(signal.SIGTERM)
        try:
            pserve.process.wait(10)
        except subprocess.TimeoutExpired:
            raise AssertionError('pserve still runs 10 s after SIGTERM:\n'
                                 + pserve.output)
        assert time.monotonic() - started < 8
        assert pserve.process.returncode == 0, pserve.output
        conn = databases[''].open(transaction_manager=manager)
        conn.sync()
        registration = conn.root()[KEY][''].dispatchers[uuid]
        assert not registration.activated
        conn.close()
    finally:
        close_all(databases)

    # Logging went to files under var/log/.
    logs = pserve.site / 'var' / 'log'
    events = read(logs / 'events.log')
    assert 'dispatcher %s started' % uuid in events
    assert 'dispatcher %s stopped' % uuid in events
    assert 'Traceback' not in read(logs / 'app.log')
    assert (logs / 'trace.log').exists()
