"""RelStorage on PostgreSQL (history-free) as a production back end.

Each test gets a fresh database in one throw-away PostgreSQL cluster
(tests/pgserver.py, the ``postgresql`` and ``pg_uri`` fixtures of
conftest.py), reached through RelStorage's zodburi URI
``postgres://USER@HOST:PORT/DBNAME?keep_history=false`` as an app would.
Dispatcher processes are tests/worker.py with storage ``pg:URI``.
The promises: jobs run; two processes share the work, each job committed
exactly once; kill -9 loses nothing (a sibling recovers after
ping_death_interval, a restart with the same UUID at once); a twin UUID
is refused; a put in another process starts without waiting for a poll;
``pserve production-relstorage.ini`` works end to end.
"""
import collections
import os
import signal
import subprocess
import time

import BTrees.OOBTree
import pytest
import transaction
import ZODB
import zodburi

import jobs
import pyramid_zcasync
import pyramid_zcasync.instance
from pyramid_zcasync.interfaces import ACTIVE, COMPLETED, IQueue, KEY
from pyramid_zcasync.testing import wait_until
from dbtools import read, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCTION_INI = os.path.join(ROOT, 'production-relstorage.ini')
#: The server address written in production-relstorage.ini's URIs.
SHIPPED_SERVER = 'postgres://zcasync@127.0.0.1:5432/'
#: poll, ping, death (seconds) of the workers sharing and crashing.
FAST = (0.2, 0.3, 2.0)
#: Death far beyond any test: only a restart can recover the jobs.
SLOW_DEATH = (0.2, 0.3, 60.0)


# -- helpers --------------------------------------------------------------

def open_db(uri):
    """What pyramid_zodbconn does with ``zodbconn.uri``."""
    factory, options = zodburi.resolve_uri(uri)
    return ZODB.DB(factory(), **options)


@pytest.fixture
def db(pg_uri):
    """Here ``db`` is on RelStorage (instead of conftest's mapping/file)."""
    database = open_db(pg_uri)
    pyramid_zcasync.install_queues(database)
    yield database
    database.close()


def make_trees(db):
    def create(root):
        for name in ('done', 'pids', 'times'):
            root[name] = BTrees.OOBTree.OOBTree()
    write(db, create)


def put_jobs(db, keys, hold_path=None):
    """An ``append_with_pid`` job per key (held while ``hold_path``
    exists, if given), in one transaction; their oids."""
    def put(root):
        queue = IQueue(root)
        if hold_path:
            return [queue.put(jobs.append_when_released, root['done'],
                              root['pids'], key, hold_path, root['times'])
                    for key in keys]
        return [queue.put(jobs.append_with_pid, root['done'], root['pids'],
                          key, 0.0, root['times'])
                for key in keys]
    if hold_path:
        open(hold_path, 'w').close()
    return [job._p_oid for job in write(db, put)]


def job_states(db, oids):
    def states(root):
        return {oid: (root._p_jar.get(oid).status,
                      root._p_jar.get(oid).result)
                for oid in oids}
    return read(db, states)


def held_jobs(db, uuid):
    """{oid: status} of the jobs in dispatcher ``uuid``'s agents."""
    def held(root):
        registration = IQueue(root).dispatchers.get(uuid)
        if registration is None:
            return {}
        return {job._p_oid: job.status
                for agent in registration.values() for job in agent}
    return read(db, held)


def activated(db, uuid):
    return read(db, lambda root: IQueue(root).dispatchers[uuid].activated)


def wait_for_done(db, count, seconds):
    wait_until(lambda: read(db, lambda root: len(root['done'])) >= count,
               seconds, '%d jobs done' % count, step=0.1)


def check_exactly_once(db, keys, oids):
    """Every key committed once, by a job that COMPLETED with it."""
    done = read(db, lambda root: dict(root['done']))
    assert sorted(done) == sorted(keys)
    assert set(done.values()) == {1}
    states = job_states(db, oids)
    assert collections.Counter(s[0] for s in states.values()) == {
        COMPLETED: len(oids)}
    assert sorted(s[1] for s in states.values()) == sorted(keys)


def uuid_of(uuid_file):
    return pyramid_zcasync.instance.read_uuid(str(uuid_file))


# -- in process -----------------------------------------------------------

def test_zodburi_gives_a_history_free_relstorage(db):
    from relstorage.storage import RelStorage
    assert isinstance(db.storage, RelStorage)
    assert not db.supportsUndo()  # keep_history=false: history-free
    assert KEY in read(db, lambda root: list(root.keys()))


def test_another_process_commit_is_seen(pg_uri, db):
    """The database's own RelStorage object does not poll: the watch
    (cross-process pick-up) and the database time (death of siblings)
    ask storage instances that do."""
    from pyramid_zcasync.watch import LastTransaction
    other = open_db(pg_uri)  # as another process would
    watch = LastTransaction(db.storage)
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        before = watch.latest()
        manager.begin()
        dispatchers = IQueue(connection.root()).dispatchers
        then = dispatchers.database_now()
        time.sleep(0.05)
        write(other, lambda root: root.update(x=1))
        assert watch.latest() > before
        manager.begin()
        assert dispatchers.database_now() > then
    finally:
        manager.abort()
        connection.close()
        watch.close()
        other.close()


def test_the_dispatcher_runs_jobs(db):
    from pyramid_zcasync import dispatcher as dispatcher_module
    from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result
    running = dispatcher_module.start(
        db, uuid='relstorage-1', poll_interval=30, ping_interval=30,
        ping_death_interval=60, install_signal_handlers=False)
    try:
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        queue = IQueue(connection.root())
        with manager:
            products = [queue.put(jobs.multiply, n, 7) for n in range(5)]
            failing = queue.put(jobs.divide, 1, 0)
            callback = products[0].addCallback(jobs.multiply)
        started = time.monotonic()
        for job in products + [failing]:
            wait_for_result(job, seconds=10)
        # Woken by this process's commit, not by the 30 s poll.
        assert time.monotonic() - started < 10
        wait_for_result(callback, seconds=10)
        assert [job.result for job in products] == [0, 7, 14, 21, 28]
        assert failing.result.check(ZeroDivisionError)
        assert callback.status == COMPLETED
        manager.abort()
        connection.close()
    finally:
        tear_down_dispatcher(running)
    uuid = 'relstorage-1'
    assert activated(db, uuid) is None


# -- dispatcher processes -------------------------------------------------

def test_two_dispatchers_share_300_jobs_exactly_once(tmp_path, pg_uri, db,
                                                     workers):
    make_trees(db)
    a = workers('pg:' + pg_uri, tmp_path / 'a.txt', FAST)
    b = workers('pg:' + pg_uri, tmp_path / 'b.txt', FAST)
    assert (a.first_line, b.first_line) == ('ready', 'ready')
    keys = ['k%03d' % i for i in range(300)]
    started = time.monotonic()
    oids = put_jobs(db, keys)
    wait_for_done(db, len(keys), 60)
    elapsed = time.monotonic() - started
    time.sleep(0.3)  # a job committed twice would show by now
    check_exactly_once(db, keys, oids)
    pids = collections.Counter(read(db, lambda r: list(r['pids'].values())))
    assert set(pids) == {a.pid, b.pid}, pids  # both ran some
    print('\nRelStorage: 300 jobs, 2 dispatchers: %.1f s (%.0f jobs/s), '
          'per process %s' % (elapsed, len(keys) / elapsed,
                              sorted(pids.values())))


def test_kill_9_the_survivor_recovers_the_held_jobs(tmp_path, pg_uri, db,
                                                    workers):
    make_trees(db)
    storage = 'pg:' + pg_uri
    hold = str(tmp_path / 'hold')
    doomed = workers(storage, tmp_path / 'a.txt', FAST)
    assert doomed.first_line == 'ready'
    doomed_uuid = uuid_of(tmp_path / 'a.txt')
    held_keys = ['held%d' % i for i in range(3)]
    held_oids = put_jobs(db, held_keys, hold)
    wait_until(lambda: held_jobs(db, doomed_uuid) == dict.fromkeys(
        held_oids, ACTIVE), 20, 'the doomed dispatcher to run 3 jobs')
    survivor = workers(storage, tmp_path / 'b.txt', FAST)
    assert survivor.first_line == 'ready'
    other_keys = ['k%02d' % i for i in range(30)]
    other_oids = put_jobs(db, other_keys)

    doomed.kill()
    killed_at = time.time()
    os.remove(hold)  # a job still running in the doomed process would end
    found_dead = wait_until(
        lambda: activated(db, doomed_uuid) is None and time.time(), 20,
        'the survivor to find the killed dispatcher dead', step=0.02)
    # After ping_death_interval (2 s) of silence, and not much later.
    assert 1.0 < found_dead - killed_at < 2.0 + 4.0, found_dead - killed_at
    keys, oids = held_keys + other_keys, held_oids + other_oids
    wait_for_done(db, len(keys), 30)
    time.sleep(0.3)
    check_exactly_once(db, keys, oids)
    pids = read(db, lambda root: dict(root['pids']))
    assert {pids[key] for key in held_keys} == {survivor.pid}
    times = read(db, lambda root: dict(root['times']))
    assert min(times[key] for key in held_keys) > killed_at + 1.0


def test_restart_with_the_same_uuid_recovers_at_once(tmp_path, pg_uri, db,
                                                     workers):
    make_trees(db)
    storage = 'pg:' + pg_uri
    uuid_file = tmp_path / 'uuid.txt'
    hold = str(tmp_path / 'hold')
    first = workers(storage, uuid_file, SLOW_DEATH)
    assert first.first_line == 'ready'
    keys = ['held%d' % i for i in range(3)]
    oids = put_jobs(db, keys, hold)
    wait_until(lambda: held_jobs(db, uuid_of(uuid_file)) == dict.fromkeys(
        oids, ACTIVE), 20, 'the first process to run 3 jobs')
    first.kill()
    os.remove(hold)
    restarted_at = time.monotonic()
    second = workers(storage, uuid_file, SLOW_DEATH)
    assert second.first_line == 'ready'
    wait_for_done(db, len(keys), 20)
    assert time.monotonic() - restarted_at < 10  # not after 60 s
    check_exactly_once(db, keys, oids)
    assert set(read(db, lambda root: dict(root['pids'])).values()) == {
        second.pid}
    assert activated(db, uuid_of(uuid_file)) is not None


def test_a_second_process_with_the_same_uuid_is_refused(tmp_path, pg_uri,
                                                        db, workers):
    uuid_file = tmp_path / 'uuid.txt'
    first = workers('pg:' + pg_uri, uuid_file)
    assert first.first_line == 'ready'
    twin = workers('pg:' + pg_uri, uuid_file)
    assert twin.process.wait(30) != 0
    error = twin.process.stderr.read()
    assert 'is already running' in error, error
    assert str(first.pid) in error  # names the live holder
    assert activated(db, uuid_of(uuid_file)) is not None
    first.stop()
    assert first.process.returncode == 0
    assert activated(db, uuid_of(uuid_file)) is None


def test_a_put_in_another_process_is_picked_up_before_any_poll(
        tmp_path, pg_uri, db, workers):
    """RelStorage's own storage object does not see other processes'
    commits: the dispatcher polls a storage instance of its own for the
    newest transaction (pyramid_zcasync/watch.py)."""
    from pyramid_zcasync.testing import wait_for_result
    poll_every = 30.0  # a poll would come far too late to explain a pick-up
    write(db, lambda root: root.update(starts=BTrees.OOBTree.OOBTree()))
    worker = workers('pg:' + pg_uri, tmp_path / 'uuid.txt',
                     (poll_every, 1.0, 60.0))
    assert worker.first_line == 'ready'
    time.sleep(1.0)  # past the worker's first poll
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    root = connection.root()
    queue = IQueue(root)
    waits = []
    for key in range(5):
        job = queue.put(jobs.remember_start, root['starts'], key)
        committed = time.time()
        manager.commit()
        wait_for_result(job, seconds=10)
        waits.append(root['starts'][key] - committed)
    connection.close()
    assert max(waits) < poll_every / 10, waits


# -- pserve production-relstorage.ini -------------------------------------

def test_pserve_production_relstorage_ini(tmp_path, postgresql):
    from test_production import (Browser, Process, script, submit_job,
                                 wait_for_json_result)
    from conftest import free_port
    site = tmp_path / 'site'
    (site / 'var' / 'log').mkdir(parents=True)
    text = open(PRODUCTION_INI).read()
    assert text.count(SHIPPED_SERVER) == 2, 'both URIs name the server'
    text = text.replace(SHIPPED_SERVER, 'postgres://zcasync@127.0.0.1:%d/'
                        % postgresql.port)
    assert '\ndemo.secret =\n' in text, 'shipped without a secret'
    text = text.replace('\ndemo.secret =\n', '\ndemo.secret = %s\n'
                        % os.urandom(16).hex())
    (site / 'production-relstorage.ini').write_text(text)
    postgresql.createdb('app')
    postgresql.createdb('jobs')
    http_port = free_port()
    env = dict(os.environ)
    env.pop('ZC_ASYNC_UUID', None)
    env.pop('ZCASYNC_DISPATCHER', None)
    server = Process(script('pserve', 'pyramid.scripts.pserve') + [
        'production-relstorage.ini', 'http_port=%d' % http_port], site,
        'pserve', env=env)
    try:
        server.wait_for_port(http_port)
        browser = Browser('http://127.0.0.1:%d' % http_port)
        oid = submit_job(browser)
        info = wait_for_json_result(browser, oid)
        assert (info['status'], info['result'], info['failure']) == (
            'completed', 42, None), info
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            raise AssertionError('pserve ignored SIGTERM:\n' + server.output)
        assert time.monotonic() - started < 10
        assert server.process.returncode == 0, server.output
    finally:
        server.stop()
    assert 'Traceback' not in server.output, server.output

    # The queues are in the PostgreSQL database 'jobs', reached from 'app';
    # the dispatcher deactivated itself on the way out.
    uuid = uuid_of(site / 'var' / 'uuid.txt')
    databases = {}
    for name, dbname in (('', 'app'), ('async', 'jobs')):
        factory, options = zodburi.resolve_uri(
            postgresql.uri(dbname, create=False))
        options['database_name'] = name
        ZODB.DB(factory(), databases=databases, **options)
    try:
        manager = transaction.TransactionManager()
        connection = databases[''].open(transaction_manager=manager)
        queues = connection.root()[KEY]
        assert queues._p_jar.db().database_name == 'async'
        queue = queues['']
        assert queue.dispatchers[uuid].activated is None
        from ZODB.utils import p64
        job = queues._p_jar.get(p64(oid))
        assert job.status == COMPLETED and job.result == 42
        manager.abort()
        connection.close()
    finally:
        for database in databases.values():
            database.close()
