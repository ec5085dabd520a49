"""A throw-away PostgreSQL cluster for tests and benchmarks.

    server = PostgreSQL().start()      # initdb + pg_ctl start
    uri = server.uri('jobs')           # createdb, then a zodburi URI
    db = server.db('jobs')             # or a ZODB.DB on RelStorage
    server.restart()                   # cut every client, start again
    server.stop()                      # pg_ctl stop -m fast, then by PID

The cluster lives in a temporary directory of its own (removed by
``stop``), listens on 127.0.0.1 on a free port and on a unix socket in
that directory, and trusts local connections of the role ``zcasync``.
PostgreSQL refuses to run as root: as root, the server runs as the
``postgres`` user (Debian's package creates it), which owns the directory.

The binaries are looked up in ``$ZCASYNC_PG_BIN``, then the newest
/usr/lib/postgresql/*/bin (Debian), then ``$PATH``; :data:`MISSING` says
why none could be used, for ``pytest.skip``.
"""
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

#: The role the tests connect as (the cluster's superuser).
USER = 'zcasync'
#: The OS user running the server when we are root.
OS_USER = 'postgres'


def _version(path):
    name = path.split(os.sep)[-2]
    try:
        return tuple(int(part) for part in name.split('.'))
    except ValueError:
        return ()


def find_bin():
    """The directory holding initdb and pg_ctl, or None."""
    candidates = []
    if os.environ.get('ZCASYNC_PG_BIN'):
        candidates.append(os.environ['ZCASYNC_PG_BIN'])
    candidates += sorted(glob.glob('/usr/lib/postgresql/*/bin'),
                         key=_version, reverse=True)
    on_path = shutil.which('initdb')
    if on_path:
        candidates.append(os.path.dirname(on_path))
    for directory in candidates:
        if all(os.access(os.path.join(directory, name), os.X_OK)
               for name in ('initdb', 'pg_ctl', 'postgres')):
            return directory
    return None


def _missing():
    if find_bin() is None:
        return ('PostgreSQL server binaries (initdb, pg_ctl, postgres) not '
                'found in $ZCASYNC_PG_BIN, /usr/lib/postgresql/*/bin or '
                '$PATH: apt-get install postgresql')
    return None


#: Why no cluster can be started here (None when one can).
MISSING = _missing()


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


#: One row per backend of a database: its state, what it waits for, for
#: how long its transaction and its state have lasted, who blocks it.
ACTIVITY = """
SELECT pid, application_name, client_port, state, wait_event_type,
       wait_event, round(extract(epoch FROM now() - xact_start)::numeric, 1),
       round(extract(epoch FROM now() - state_change)::numeric, 1),
       pg_blocking_pids(pid), left(regexp_replace(query, '\\s+', ' ', 'g'), 80)
FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()
ORDER BY xact_start NULLS LAST
"""
ACTIVITY_COLUMNS = ('pid', 'application', 'client port', 'state',
                    'wait type', 'wait event', 'transaction s', 'state s',
                    'blocked by', 'query')


class PostgreSQL:
    """One cluster; ``durable=False`` turns fsync off (tests: the data
    need not survive a machine crash, and commits get much faster)."""

    def __init__(self, durable=False, max_connections=200):
        self.bin = find_bin()
        if self.bin is None:
            raise RuntimeError(MISSING)
        self.durable = durable
        self.max_connections = max_connections
        self.host = '127.0.0.1'
        self.port = None
        self.directory = None
        self.pid = None
        self._run_as = None

    # -- life ---------------------------------------------------------

    def start(self):
        self.directory = tempfile.mkdtemp(prefix='zcasync-pg-')
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(OS_USER)
            except KeyError:
                raise RuntimeError(
                    'running as root, and there is no %r user to run '
                    'PostgreSQL as (it refuses root)' % OS_USER)
            self._run_as = OS_USER
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self.data = os.path.join(self.directory, 'data')
        self.socket_dir = self.directory
        self.log = os.path.join(self.directory, 'server.log')
        self._run('initdb', '-D', self.data, '-U', USER, '-A', 'trust',
                  '-E', 'UTF8', '--no-locale', '--no-sync')
        options = [
            '-c', 'listen_addresses=%s' % self.host,
            '-c', 'unix_socket_directories=%s' % self.socket_dir,
            '-c', 'max_connections=%d' % self.max_connections,
            '-c', 'shared_buffers=64MB',
        ]
        if not self.durable:
            options += ['-c', 'fsync=off', '-c', 'synchronous_commit=off',
                        '-c', 'full_page_writes=off']
        self._options = options
        for attempt in range(5):  # a free port can be taken meanwhile
            self.port = free_port()
            if self._launch(check=False):
                break
        else:
            raise RuntimeError('PostgreSQL did not start:\n' + self.output)

    def _launch(self, check=True):
        """pg_ctl start on ``self.port``; whether the server runs."""
        command = ['-D', self.data, '-l', self.log, '-w', '-t', '60',
                   '-o', ' '.join(self._options + ['-p', str(self.port)]),
                   'start']
        if self._run('pg_ctl', *command, check=check).returncode != 0:
            return False
        with open(os.path.join(self.data, 'postmaster.pid')) as stream:
            self.pid = int(stream.readline())
        return True

    def restart(self, down_seconds=1.0):
        """Stop the server (fast shutdown: every client connection is cut)
        and start it again on the same port and data; the seconds it was
        down."""
        went = time.time()
        self._run('pg_ctl', '-D', self.data, '-m', 'fast', '-w', '-t', '20',
                  'stop')
        self._kill(self.pid)
        time.sleep(down_seconds)
        self._launch()
        return time.time() - went

    def crash(self, down_seconds=5.0):
        """kill -9 the postmaster (no shutdown: the next start recovers
        from the WAL), wait, start it again; the seconds it was down."""
        went = time.time()
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(down_seconds)
        # Its backends notice the postmaster's death and exit; until they
        # have, a new postmaster refuses their shared memory.
        deadline = time.monotonic() + 30
        while not self._launch(check=False):
            if time.monotonic() > deadline:
                raise RuntimeError('PostgreSQL did not start again after '
                                   'kill -9; see %s' % self.log)
            time.sleep(0.5)
        return time.time() - went

    def stop(self):
        """Stop the server (fast shutdown, then by PID) and remove its
        directory."""
        if self.pid is not None:
            self._run('pg_ctl', '-D', self.data, '-m', 'fast', '-w',
                      '-t', '20', 'stop', check=False)
            self._kill(self.pid)
            self.pid = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _kill(self, pid):
        """The postmaster by its PID, if pg_ctl left it running."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _alive(pid):
                return
            os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- databases ----------------------------------------------------

    def createdb(self, name):
        self._run('createdb', '-h', self.host, '-p', str(self.port),
                  '-U', USER, name)
        return name

    def dsn(self, name):
        return "dbname='%s' user='%s' host='%s' port='%d'" % (
            name, USER, self.host, self.port)

    def uri(self, name, create=True, **query):
        """RelStorage's zodburi URI for database ``name`` (history-free
        unless ``keep_history='true'`` is given)."""
        if create:
            self.createdb(name)
        query.setdefault('keep_history', 'false')
        return 'postgres://%s@%s:%d/%s?%s' % (
            USER, self.host, self.port, name,
            '&'.join('%s=%s' % item for item in sorted(query.items())))

    def storage(self, name, **options):
        """A RelStorage on database ``name`` (which must exist)."""
        from relstorage.adapters.postgresql import PostgreSQLAdapter
        from relstorage.options import Options
        from relstorage.storage import RelStorage
        options.setdefault('keep_history', False)
        options = Options(**options)
        return RelStorage(PostgreSQLAdapter(dsn=self.dsn(name),
                                            options=options),
                          options=options)

    def db(self, name, **options):
        import ZODB
        return ZODB.DB(self.storage(name, **options))

    def activity(self, name):
        """What every backend on database ``name`` is doing, and who waits
        for whose lock, as text for a failure message: a backend whose
        client is gone but which still holds row locks makes every commit
        touching those rows fail at RelStorage's lock timeout."""
        import psycopg2
        connection = psycopg2.connect(self.dsn(name), connect_timeout=5)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(ACTIVITY, (name,))
                rows = cursor.fetchall()
        finally:
            connection.close()
        return '\n'.join(' | '.join(str(value) for value in row)
                         for row in [ACTIVITY_COLUMNS] + rows)

    # -- helpers ------------------------------------------------------

    @property
    def output(self):
        try:
            with open(self.log) as stream:
                return stream.read()
        except OSError:
            return ''

    def _run(self, program, *args, check=True):
        command = [os.path.join(self.bin, program)] + list(args)
        if self._run_as and program in ('initdb', 'pg_ctl'):
            command = ['runuser', '-u', self._run_as, '--'] + command
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=120, cwd=self.directory)
        if check and result.returncode != 0:
            raise RuntimeError('%s failed (%d):\n%s%s\n%s' % (
                ' '.join(command), result.returncode, result.stdout,
                result.stderr, self.output))
        return result


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
