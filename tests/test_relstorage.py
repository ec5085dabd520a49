"""RelStorage on PostgreSQL (history-free) as a production back end:
what is particular to it.

Each test gets a fresh database in one throw-away PostgreSQL cluster
(tests/pgserver.py, the ``postgresql`` and ``pg_uri`` fixtures of
conftest.py), reached through RelStorage's zodburi URI
``postgres://USER@HOST:PORT/DBNAME?keep_history=false`` as an app would.
Here: the URI gives a history-free RelStorage, another process's commit
is seen, the dispatcher runs jobs, ``pserve production-relstorage.ini``
works end to end.  The multi-process promises (two processes share the
work exactly once, kill -9, a restart with the same UUID, a twin UUID
refused, PostgreSQL restarting mid-run, pick-up without a poll) are the
reliability suite's, run on ZEO and on RelStorage alike: the ``engine``
fixture of test_reliability.py, test_crash.py and test_crossprocess.py.
"""
import os
import signal
import subprocess
import time

import pytest
import transaction

import jobs
import pyramid_zcasync
import pyramid_zcasync.instance
from pyramid_zcasync import keys
from pyramid_zcasync.interfaces import COMPLETED, IQueue, KEY
from dbtools import open_uri, put_concurrently, read, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCTION_INI = os.path.join(ROOT, 'production-relstorage.ini')
#: The server address written in production-relstorage.ini's URIs.
SHIPPED_SERVER = 'postgres://zcasync@127.0.0.1:5432/'


# -- helpers --------------------------------------------------------------

@pytest.fixture
def db(pg_uri):
    """Here ``db`` is on RelStorage (instead of conftest's mapping/file)."""
    database = open_uri(pg_uri)
    pyramid_zcasync.install_queues(database)
    yield database
    database.close()


def activated(db, uuid):
    return read(db, lambda root: IQueue(root).dispatchers[uuid].activated)



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
    other = open_uri(pg_uri)  # as another process would
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


def test_concurrent_producers_do_not_deadlock(db):
    """Twice as many producer threads as stripes, so two share each
    stripe: PostgreSQL must not find the lock cycle it would between a
    stripe's tree and a counter below it in oid order."""
    threads = 2 * keys.STRIPES
    committed, given_up, conflicts, _ = put_concurrently(
        db, threads, 30, lambda root: IQueue(root).put(jobs.noop),
        attempts=10)
    assert (committed, given_up) == (threads * 30, 0)
    assert [c for c in conflicts if 'deadlock' in str(c)] == []
    assert read(db, lambda root: len(IQueue(root))) == threads * 30
    print('\n%d producers x 30 puts on RelStorage: %d conflicts retried'
          % (threads, len(conflicts)))


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
    assert '\ndemo.admin_password = change-me\n' in text  # refused as is
    text = text.replace('\ndemo.admin_password = change-me\n',
                        '\ndemo.admin_password = %s\n' % os.urandom(16).hex())
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
    uuid = pyramid_zcasync.instance.read_uuid(
        str(site / 'var' / 'uuid.txt'))
    databases = {}
    for name, dbname in (('', 'app'), ('async', 'jobs')):
        open_uri(postgresql.uri(dbname, create=False), database_name=name,
                 databases=databases)
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
