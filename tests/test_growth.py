"""The database stays bounded under a steady job load: histories are
trimmed by size and age, and packing frees the jobs they dropped."""
import datetime
import os
import shutil
import subprocess
import sys
import threading
import time

import transaction
import ZODB
from ZODB.POSException import ConflictError

import pyramid_zcasync
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.agent import CompletedHistory
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.instance import read_uuid
from pyramid_zcasync.interfaces import COMPLETED, IQueue
from pyramid_zcasync import Job, keys
from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result

from dbtools import read
from jobs import noop


def run_jobs(queue, count):
    """Put ``count`` no-op jobs and wait until every one has completed and
    left its dispatcher: a pack while jobs are claimed but not yet done
    (a loaded machine claims them in big groups) keeps them as well."""
    jobs = [queue.put(noop) for _ in range(count)]
    transaction.commit()
    for job in jobs:
        wait_for_result(job, seconds=60)


def packed_size(db, path):
    db.pack()
    return os.path.getsize(path)


def test_packing_keeps_the_database_bounded(tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(path)
    pyramid_zcasync.install_queues(db)
    running = dispatcher_module.start(
        db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False, history_size=50)
    connection = db.open()
    queue = IQueue(connection.root())
    try:
        run_jobs(queue, 600)
        first = packed_size(db, path)
        run_jobs(queue, 1200)
        second = packed_size(db, path)
        agent = queue.dispatchers[running.UUID]['main']
        transaction.begin()
        assert len(agent.completed) <= 50 + 100  # size + trim slack
        # Twice the jobs, yet the packed file grew by less than a tenth.
        assert second < first * 1.1, (first, second)
    finally:
        connection.close()
        tear_down_dispatcher(running)
        db.close()


def ended_job(when, tiebreak):
    job = Job(noop)
    job._key = keys.make(0, tiebreak)
    job.active_end = when
    return job


def test_history_trims_by_age_and_size():
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    history = CompletedHistory(max_age=datetime.timedelta(hours=1),
                               max_size=1000)
    old = [ended_job(now - datetime.timedelta(hours=3), n) for n in range(5)]
    new = [ended_job(now - datetime.timedelta(minutes=n), 10 + n)
           for n in range(5)]
    for job in old + new:
        history.add(job, now)
    history.trim(now)
    assert sorted(history, key=id) == sorted(new, key=id)
    history.configure(max_size=2)
    history.trim(now)
    assert list(history) == [new[0], new[1]]  # the newest two, newest first


# -- over ZEO and RelStorage, with the operator's own pack tools -------------
#
# A dispatcher process (tests/worker.py) runs a steady load of no-op jobs
# with a history of 50 completed jobs per agent; the database is packed
# between two rounds with the tool an operator would run from cron or a
# systemd timer: ``zeopack`` against the ZEO server, RelStorage's
# ``zodbpack`` with a ZConfig file on PostgreSQL (history-free: a pack is
# a garbage collection of the objects nothing references any more).

HISTORY = 50
BATCH = 50  # jobs per producer transaction


def console_script(name, module):
    """The installed console script ``name`` beside this Python, else
    ``python -m module``."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(path):
        return [path]
    found = shutil.which(name)
    return [found] if found else [sys.executable, '-m', module]


def run_tool(command):
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result


def zeo_size(engine):
    """Bytes of the server's FileStorage file, as ``ls -l`` shows them;
    and of the copy FileStorage keeps of it from before the last pack
    (``.old``, replaced by each pack unless ``pack-keep-old false``)."""
    old = engine.server.path + '.old'
    return (os.path.getsize(engine.server.path),
            'zeo.fs.old %d' % os.path.getsize(old)
            if os.path.exists(old) else 'no zeo.fs.old yet')


def zeo_pack(engine, tmp_path):
    # Pack to now (-d 0 is the default; written out as a cron line would).
    run_tool(console_script('zeopack', 'ZEO.scripts.zeopack')
             + ['-d', '0', '127.0.0.1:%d' % engine.server.port])


def pg_dbname(engine):
    return engine.uri.rsplit('/', 1)[1].split('?', 1)[0]


def relstorage_size(engine):
    """Bytes of object state stored in PostgreSQL (live objects and
    garbage: what a pack can remove); the row count and the table's size
    on disk (which PostgreSQL's vacuum makes reusable, not smaller)."""
    import psycopg2
    connection = psycopg2.connect(engine.cluster.dsn(pg_dbname(engine)))
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                'SELECT sum(octet_length(state)), count(*), '
                "pg_total_relation_size('object_state') FROM object_state")
            size, rows, disk = cursor.fetchone()
    finally:
        connection.close()
    return int(size), '%d rows, table %d bytes on disk' % (rows, disk)


ZODBPACK_CONF = """\
<relstorage>
  keep-history false
  pack-gc true
  <postgresql>
    dsn %s
  </postgresql>
</relstorage>
"""


def relstorage_pack(engine, tmp_path):
    config = tmp_path / 'zodbpack.conf'
    config.write_text(ZODBPACK_CONF % engine.cluster.dsn(pg_dbname(engine)))
    run_tool(console_script('zodbpack', 'relstorage.zodbpack')
             + ['-d', '0', str(config)])


TOOLS = {'zeo': (zeo_size, zeo_pack),
         'relstorage': (relstorage_size, relstorage_pack)}


def steady_load(db, count, midway=None, seconds=120):
    """Put ``count`` no-op jobs, ``BATCH`` per transaction, a new batch
    whenever the queue is down to less than one batch; return once every
    one of them has completed: the number that failed, and how many had
    been put when ``midway()`` (if given: it runs in a thread of its own
    from half-way through) returned."""
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    pending = set()
    failed = 0
    thread = None
    errors = []
    put_when_done = None

    def run_midway():
        try:
            midway()
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)
    deadline = time.monotonic() + seconds
    try:
        queue = IQueue(connection.root())
        put = 0
        while put < count or pending:
            assert time.monotonic() < deadline, (
                'waited %s s: %d of %d jobs put, %d not completed'
                % (seconds, put, count, len(pending)))
            manager.begin()
            for oid in list(pending):
                job = connection.get(oid)
                if job.status == COMPLETED:
                    pending.discard(oid)
                    failed += isinstance(job.result, Failure)
            if midway and thread is None and put >= count // 2:
                thread = threading.Thread(target=run_midway)
                thread.start()
            if thread is not None and put_when_done is None \
                    and not thread.is_alive():
                put_when_done = put
            if put < count and len(queue) < BATCH:
                batch = [queue.put(noop) for _ in range(min(BATCH,
                                                            count - put))]
                try:
                    manager.commit()
                except ConflictError:
                    # The dispatcher's claims changed the bucket this batch
                    # went into in a way BTrees cannot merge (seen once
                    # under load): put again, as an app's retry would.
                    manager.abort()
                    continue
                pending.update(job._p_oid for job in batch)
                put += len(batch)
            else:
                manager.abort()
                time.sleep(0.05)
    finally:
        manager.abort()
        connection.close()
        if thread is not None:
            thread.join(120)
    if errors:
        raise errors[0]
    return failed, put_when_done


def completed_in_history(db, uuid):
    def count(root):
        return len(IQueue(root).dispatchers[uuid]['main'].completed)
    return read(db, count)


def test_packing_with_the_servers_tool_keeps_it_bounded(
        tmp_path, engine, workers):
    size_of, pack = TOOLS[engine.name]
    db = engine.db()
    try:
        pyramid_zcasync.install_queues(db)
        uuid_file = tmp_path / 'uuid.txt'
        worker = workers(engine.spec, uuid_file,
                         (0.2, 0.5, 5.0, '--history-size', str(HISTORY)))
        assert worker.first_line == 'ready'
        uuid = read_uuid(str(uuid_file))
        figures = []
        for jobs, midway in ((1000, None),
                             (2000, lambda: pack(engine, tmp_path))):
            # The second round is also packed half-way, under load, as a
            # timer would: no job may fail or go missing for it.
            started = time.monotonic()
            failed, put_when_packed = steady_load(db, jobs, midway)
            assert failed == 0
            ran = time.monotonic() - started
            before = size_of(engine)
            started = time.monotonic()
            pack(engine, tmp_path)
            packing = time.monotonic() - started
            after = size_of(engine)
            figures.append((jobs, ran, before, after, packing,
                            put_when_packed))
            # The pack removed the jobs the history let go of.
            assert after[0] < before[0], figures
        # The agent keeps its 50 jobs (plus the trimming's slack).
        assert completed_in_history(db, uuid) <= HISTORY + 100
        print('\n%s, history %d:' % (engine.name, HISTORY))
        for jobs, ran, before, after, packing, put_when in figures:
            if put_when is not None:
                print('  (a pack under load, started at %d jobs put, '
                      'ended at %d)' % (jobs // 2, put_when))
            print('  %4d jobs in %4.1f s; %d bytes before the pack (%s), '
                  '%d after it (%s), pack %.1f s' % (
                      jobs, ran, before[0], before[1], after[0], after[1],
                      packing))
        first, second = figures[0][3][0], figures[1][3][0]
        # Twice the jobs, yet the packed database grew by less than a tenth.
        assert second < first * 1.1, (first, second)
    finally:
        db.close()
