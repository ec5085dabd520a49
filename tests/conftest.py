"""Shared fixtures: real ZODB databases with the queues installed."""
import os

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage

import pyramid_zcasync
from pyramid_zcasync.interfaces import IQueue

# pytest does not serve apps, so by default apps built here would start no
# dispatcher (see pyramid_zcasync/programs.py); this suite's apps say in
# their settings whether they want one, so follow the setting.  Tests of
# the rule itself set or remove the variable.
os.environ.setdefault('ZCASYNC_DISPATCHER', 'setting')


@pytest.fixture
def mapping_db():
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    pyramid_zcasync.install_queues(db)
    yield db
    transaction.abort()
    db.close()


@pytest.fixture
def file_db(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    pyramid_zcasync.install_queues(db)
    yield db
    transaction.abort()
    db.close()


@pytest.fixture(params=['mapping', 'file'])
def db(request, tmp_path):
    """Each test using it runs on MappingStorage and on FileStorage."""
    if request.param == 'mapping':
        storage = ZODB.MappingStorage.MappingStorage()
    else:
        storage = ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs'))
    database = ZODB.DB(storage)
    pyramid_zcasync.install_queues(database)
    yield database
    transaction.abort()
    database.close()


@pytest.fixture
def fs_db(tmp_path):
    """A FileStorage database with the default queue, for a real
    dispatcher (threads need a storage that is not MappingStorage's)."""
    db = ZODB.DB(str(tmp_path / 'Data.fs'))
    pyramid_zcasync.install_queues(db)
    yield db
    transaction.abort()
    db.close()


@pytest.fixture
def dispatcher(fs_db, tmp_path):
    """This process's dispatcher on ``fs_db``, polling every 0.2 s; torn
    down checking that no job was left running."""
    from pyramid_zcasync import dispatcher as dispatcher_module
    from pyramid_zcasync.testing import tear_down_dispatcher
    started = dispatcher_module.start(
        fs_db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False)
    yield started
    tear_down_dispatcher(started)


@pytest.fixture
def conn(db):
    connection = db.open()
    yield connection
    transaction.abort()
    connection.close()


@pytest.fixture
def queue(conn):
    return IQueue(conn.root())


# -- processes ------------------------------------------------------------

import itertools  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for_port(port, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(('127.0.0.1', port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError('nothing listens on 127.0.0.1:%d' % port)


def stop_process(process, seconds=10):
    """Stop a child by its PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(seconds)


class ZEOServer:
    """A real ZEO server (runzeo) on a free loopback port."""

    def __init__(self, directory):
        self.path = os.path.join(str(directory), 'zeo.fs')
        self.port = free_port()
        self.process = None

    def start(self):
        runzeo = os.path.join(os.path.dirname(sys.executable), 'runzeo')
        command = [runzeo, '-a', '127.0.0.1:%d' % self.port, '-f', self.path]
        if not os.path.exists(runzeo):
            command = [sys.executable, '-m', 'ZEO.runzeo'] + command[1:]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self):
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def kill(self):
        """kill -9: no shutdown, as a crash or the OOM killer would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def db(self, **options):
        import ZEO
        return ZEO.DB(('127.0.0.1', self.port), wait_timeout=30, **options)


@pytest.fixture
def zeo_server(tmp_path):
    server = ZEOServer(tmp_path).start()
    yield server
    server.stop()


_worker_numbers = itertools.count()


class Worker:
    """A dispatcher-only subprocess running tests/worker.py (or
    ``script``, which takes the same arguments).

    Its standard error goes to a file beside the UUID file, never to a
    pipe: a worker writing more than a pipe holds (logging errors while
    the storage is away print tracebacks there) would block in the
    middle of a log call, holding the logging lock every thread needs,
    and stop pinging."""

    script = 'worker.py'

    def __init__(self, storage, uuid_file, timing=(0.2, 0.5, 2.0)):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [TESTS_DIR] + sys.path))
        self.stderr_path = '%s.%d.stderr' % (uuid_file, next(_worker_numbers))
        with open(self.stderr_path, 'w') as stderr:
            self.process = subprocess.Popen(
                [sys.executable, os.path.join(TESTS_DIR, self.script),
                 storage, str(uuid_file)] + [str(t) for t in timing],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        self.first_line = self.process.stdout.readline().strip()

    def stderr_text(self):
        with open(self.stderr_path, errors='replace') as stderr:
            return stderr.read()

    @property
    def pid(self):
        return self.process.pid

    def kill(self):
        self.process.kill()
        self.process.wait(10)

    def stop(self):
        stop_process(self.process)


@pytest.fixture
def workers():
    """Start workers with ``workers(storage, uuid_file)``; all are stopped
    at the end of the test."""
    started = []

    def start(*args, **kwargs):
        worker = Worker(*args, **kwargs)
        started.append(worker)
        return worker
    yield start
    for worker in started:
        worker.stop()
        worker.process.stdout.close()


# -- PostgreSQL (RelStorage) -----------------------------------------------


@pytest.fixture(scope='session')
def postgresql():
    """One throw-away PostgreSQL cluster for the session (tests/pgserver.py);
    skipped only when the server binaries are not installed."""
    import pgserver
    if pgserver.MISSING:
        pytest.skip(pgserver.MISSING)
    server = pgserver.PostgreSQL().start()
    yield server
    server.stop()


_pg_databases = itertools.count(1)


@pytest.fixture
def pg_uri(postgresql):
    """A fresh, empty database of that cluster: its RelStorage zodburi URI
    (history-free)."""
    return postgresql.uri('test%d' % next(_pg_databases))


# -- the multi-process engines ---------------------------------------------

class ZEOEngine:
    """A ZEO server of this test's own (runzeo on FileStorage)."""

    name = 'zeo'

    def __init__(self, server):
        self.server = server

    @property
    def spec(self):
        """tests/worker.py's STORAGE argument."""
        return 'zeo:%d' % self.server.port

    @property
    def uri(self):
        """The zodburi URI an app's ``zodbconn.uri`` would hold."""
        return 'zeo://127.0.0.1:%d?wait_timeout=30' % self.server.port

    def db(self):
        return self.server.db()

    def restart(self, down_seconds=1.0):
        """Stop runzeo by PID (SIGTERM), wait, start it on the same port
        and file; the seconds it was down."""
        went = time.time()
        self.server.stop()
        time.sleep(down_seconds)
        self.server.start()
        return time.time() - went

    def crash(self, down_seconds=5.0):
        """kill -9 runzeo, wait, start it on the same port and file; the
        seconds it was down."""
        went = time.time()
        self.server.kill()
        time.sleep(down_seconds)
        self.server.start()
        return time.time() - went

    def spec_through(self, port):
        """worker.py's STORAGE argument through a proxy on ``port``."""
        return 'zeo:%d' % port

    @property
    def port(self):
        return self.server.port

    def db_through(self, port):
        import ZEO
        return ZEO.DB(('127.0.0.1', port), wait_timeout=30)


class RelStorageEngine:
    """A fresh database in the session's PostgreSQL cluster, reached by
    RelStorage (history-free) through its zodburi URI."""

    name = 'relstorage'

    def __init__(self, cluster, uri):
        self.cluster = cluster
        self.uri = uri

    @property
    def spec(self):
        return 'pg:' + self.uri

    def db(self):
        from dbtools import open_uri
        return open_uri(self.uri)

    def restart(self, down_seconds=1.0):
        return self.cluster.restart(down_seconds)

    def crash(self, down_seconds=5.0):
        return self.cluster.crash(down_seconds)

    @property
    def port(self):
        return self.cluster.port

    def _uri_through(self, port):
        return self.uri.replace(':%d/' % self.cluster.port, ':%d/' % port)

    def spec_through(self, port):
        return 'pg:' + self._uri_through(port)

    def db_through(self, port):
        from dbtools import open_uri
        return open_uri(self._uri_through(port))


@pytest.fixture(params=['zeo', 'relstorage'])
def engine(request, tmp_path):
    """Each test using it runs over a real ZEO server and over RelStorage
    on a real PostgreSQL: the storages several processes can share."""
    if request.param == 'zeo':
        server = ZEOServer(tmp_path).start()
        yield ZEOEngine(server)
        server.stop()
    else:
        cluster = request.getfixturevalue('postgresql')
        yield RelStorageEngine(cluster, cluster.uri(
            'test%d' % next(_pg_databases)))
