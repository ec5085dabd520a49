"""Pick-up across processes without polling: ZEO invalidations and
PostgreSQL LISTEN/NOTIFY wake the dispatcher (pyramid_zcasync/wakeup.py).

The dispatchers here poll every 5 s and look at the last transaction
every 5 s (tests/pushworker.py): a job started within the bound below
was pushed.  The bound is a behaviour check, not a benchmark
(benchmarks/zeo.py and relstorage.py measure the pick-up)."""
import os
import threading
import time

import BTrees.OOBTree
import pytest
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage

import jobs
import pyramid_zcasync
from conftest import Worker
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync import pgnotify, wakeup, zeoclient
from pyramid_zcasync.interfaces import IQueue

POLL = 5.0
#: Far below POLL and the worker's watch (pushworker.WATCH).
PUSHED_WITHIN = 2.0


def wait_until(predicate, seconds=10.0, what='the condition'):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, 'waited %s s for %s' % (
            seconds, what)
        time.sleep(0.01)


class PushWorker(Worker):
    """A dispatcher process whose own watch is too slow to explain a
    quick pick-up."""

    script = 'pushworker.py'


@pytest.fixture
def push_worker(tmp_path):
    started = []

    def start(storage):
        worker = PushWorker(storage, tmp_path / 'uuid.txt',
                            (POLL, 1.0, 60.0))
        started.append(worker)
        assert worker.first_line == 'ready', worker.stderr_text()
        return worker
    yield start
    for worker in started:
        worker.stop()
        worker.process.stdout.close()


def put_and_time(db, root_key, key, attempts=20):
    """Put ``jobs.remember_start`` in a transaction of its own (again
    while the storage is away); the time just before its commit."""
    manager = transaction.TransactionManager()
    for attempt in range(attempts):
        connection = db.open(transaction_manager=manager)
        try:
            manager.begin()
            root = connection.root()
            IQueue(root).put(jobs.remember_start, root[root_key], key)
            committing = time.time()
            manager.commit()
            return committing
        except Exception:
            manager.abort()
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
        finally:
            connection.close()


def started_at(db, key):
    from dbtools import read
    return read(db, lambda root: root['starts'].get(key))


def pick_ups(db, keys, seconds):
    """Put a job per key, each after the previous started; the seconds
    from each commit to its job's start."""
    waits = []
    for key in keys:
        committing = put_and_time(db, 'starts', key)
        wait_until(lambda: started_at(db, key) is not None, seconds,
                   'job %s to start' % key)
        waits.append(started_at(db, key) - committing)
        time.sleep(0.05)
    return waits


def test_a_put_elsewhere_is_pushed_to_the_dispatcher_also_after_a_restart(
        engine, push_worker):
    db = engine.db()
    pyramid_zcasync.install_queues(db)
    # This process puts: on PostgreSQL its puts announce themselves.
    announcer = wakeup.announce_puts(db)
    assert (announcer is None) == (engine.name == 'zeo')
    from dbtools import write
    write(db, lambda root: root.__setitem__(
        'starts', BTrees.OOBTree.OOBTree()))
    push_worker(engine.spec)
    time.sleep(1.0)  # past the worker's first poll
    waits = pick_ups(db, ['a%d' % i for i in range(5)], 10)
    assert max(waits) < PUSHED_WITHIN, waits

    engine.restart()
    # The first job after the restart may wait out the reconnections
    # (or a poll); then the pushes work again.
    pick_ups(db, ['b0'], 30)
    waits = pick_ups(db, ['c%d' % i for i in range(5)], 10)
    assert max(waits) < PUSHED_WITHIN, waits
    db.close()


# -- the parts ------------------------------------------------------------

def test_zeo_tells_of_other_clients_commits_only(zeo_server):
    listening, other = zeo_server.db(), zeo_server.db()
    heard = []
    stop = zeoclient.on_invalidations(listening.storage, heard.append)
    from dbtools import write
    write(other, lambda root: root.__setitem__('x', 1))
    wait_until(lambda: heard, what='the invalidation')
    assert heard == [other.storage.lastTransaction()]
    write(listening, lambda root: root.__setitem__('y', 1))  # its own
    stop()
    # (other's next transaction must see that one: the root changed)
    wait_until(lambda: other.storage.lastTransaction() ==
               listening.storage.lastTransaction(), what='other to see it')
    write(other, lambda root: root.__setitem__('x', 2))
    time.sleep(0.3)
    assert len(heard) == 1
    listening.close()
    other.close()


def test_a_failing_callback_does_not_hurt_zeo(zeo_server):
    listening, other = zeo_server.db(), zeo_server.db()
    heard = []

    def broken(tid):
        raise RuntimeError('broken')
    zeoclient.on_invalidations(listening.storage, broken)
    zeoclient.on_invalidations(listening.storage, heard.append)
    from dbtools import read, write
    write(other, lambda root: root.__setitem__('x', 1))
    wait_until(lambda: heard, what='the second callback')
    assert read(listening, lambda root: root['x']) == 1
    listening.close()
    other.close()


def test_storages_that_push_nothing_are_left_to_the_watch(tmp_path):
    for storage in (ZODB.MappingStorage.MappingStorage(),
                    ZODB.FileStorage.FileStorage(str(tmp_path / 'D.fs'))):
        db = ZODB.DB(storage)
        assert zeoclient.on_invalidations(db.storage, print) is None
        assert pgnotify.postgresql_dsn(db.storage) is None
        subscription = wakeup.listen(db, print)
        assert subscription.kind == 'none'
        subscription.close()
        assert wakeup.announce_puts(db) is None
        db.close()


def test_pushed_commits_wake_at_most_once_per_spacing(fs_db):
    dispatcher = dispatcher_module.Dispatcher(fs_db, 'u')
    woken, later = [], []
    dispatcher.reactor = FakeReactor(later)
    dispatcher.wake = lambda: woken.append(time.monotonic())
    dispatcher._committed_elsewhere(b'\0' * 8)
    dispatcher._committed_elsewhere(b'\1' * 8)  # deferred
    dispatcher._committed_elsewhere(b'\2' * 8)  # that deferred poll's
    assert len(woken) == 1
    assert [call for _, call in later] == [dispatcher._deferred_push]
    assert 0 < later[0][0] <= dispatcher_module.PUSH_SPACING
    # Seen: the watch of the last transaction need not poll for them.
    assert dispatcher._seen_tid == b'\2' * 8
    time.sleep(dispatcher_module.PUSH_SPACING * 2)
    dispatcher._committed_elsewhere(None)
    assert len(woken) == 2


class FakeReactor:
    """Records what is called later instead of calling it."""

    def __init__(self, later):
        self.later = later

    def callFromThread(self, function, *args):
        function(*args)

    def callLater(self, seconds, function, *args):
        self.later.append((seconds, function))


def test_the_dispatcher_listens_while_it_runs(dispatcher):
    assert dispatcher.pushed is not None
    assert dispatcher.pushed.kind == 'none'  # FileStorage


# -- PostgreSQL ---------------------------------------------------------------

@pytest.fixture
def pg(postgresql):
    pytest.importorskip('relstorage')
    pytest.importorskip('psycopg2')
    return postgresql


def test_notify_on_put_reaches_a_listener_and_survives_a_restart(pg):
    from dbtools import open_uri
    db = open_uri(pg.uri('wake%d' % os.getpid()))
    dsn = pgnotify.postgresql_dsn(db.storage)
    assert dsn is not None
    heard = threading.Event()
    listener = pgnotify.Listener(dsn, heard.set)
    try:
        wait_until(lambda: listener.connected, what='LISTEN')
        heard.clear()
        sender = pgnotify.Sender(dsn)
        sender.request()
        assert heard.wait(5)
        pg.restart()
        wait_until(lambda: listener.connections == 2, 15,
                   'the listener to reconnect')
        heard.clear()
        sender.request()  # its connection was cut: it reconnects
        assert heard.wait(5)
        # Counted by the sender's thread once the server answered, which
        # may be after the listener heard it.
        wait_until(lambda: sender.sent == 2, 5, 'the second NOTIFY counted')
    finally:
        listener.close()
        db.close()
    assert not listener._thread.is_alive()


def test_puts_announce_themselves_once_per_database(pg):
    from dbtools import open_uri
    db = open_uri(pg.uri('announce%d' % os.getpid()))
    pyramid_zcasync.install_queues(db)
    announcer = wakeup.announce_puts(db)
    assert isinstance(announcer, pgnotify.NotifyOnPut)
    assert wakeup.announce_puts(db) is announcer
    heard = threading.Event()
    subscription = wakeup.listen(db, lambda tid: heard.set())
    try:
        assert subscription.kind == 'postgresql'
        wait_until(lambda: subscription.listener.connected, what='LISTEN')
        heard.clear()
        connection = db.open()
        IQueue(connection.root()).put(jobs.remember_start, {}, 'k')
        transaction.abort()  # not committed: nothing announced
        time.sleep(0.3)
        assert not heard.is_set()
        IQueue(connection.root()).put(jobs.remember_start, {}, 'k')
        transaction.commit()
        assert heard.wait(5)
        connection.close()
    finally:
        subscription.close()
        db.close()
