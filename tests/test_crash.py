"""kill -9 in the middle of a job: the job is re-run by its retry policy,
never twice at once, never lost; restarts with the same UUID recover at
once; a live twin with the same UUID is refused."""
import os
import time

import transaction
import ZODB

import jobs
import pyramid_zcasync
import pyramid_zcasync.instance
from pyramid_zcasync.interfaces import COMPLETED, IQueue
from pyramid_zcasync.testing import wait_until

SLOW = (0.2, 0.5, 30.0)  # poll, ping, death: death far beyond the test


def put_held_job(db, tmp_path, name='j1'):
    log, hold = str(tmp_path / 'runs.log'), str(tmp_path / 'hold')
    open(hold, 'w').close()
    connection = db.open()
    job = IQueue(connection.root()).put(jobs.record_run, log, name, hold)
    transaction.commit()
    oid = job._p_oid
    connection.close()
    return oid, log, hold


def started_by(log, name, count=1):
    found = [r for r in jobs.runs(log, name) if r[0] == 'start']
    return found if len(found) >= count else None


def assert_never_concurrent(log, name):
    spans, open_start = [], None
    for event, pid, when in jobs.runs(log, name):
        if event == 'start':
            open_start = (pid, when)
        else:
            spans.append((open_start, (pid, when)))
    for (start_pid, _), (end_pid, _) in spans:
        assert start_pid == end_pid


def job_state(db, oid):
    connection = db.open()
    try:
        job = connection.get(oid)
        return job.status, job.result, job.annotations.get('started_by')
    finally:
        connection.close()


def test_restart_with_same_uuid_recovers_at_once(tmp_path, workers):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(path)
    pyramid_zcasync.install_queues(db)
    oid, log, hold = put_held_job(db, tmp_path)
    db.close()
    uuid_file = tmp_path / 'uuid.txt'

    first = workers('file:' + path, uuid_file, SLOW)
    assert first.first_line == 'ready'
    wait_until(lambda: started_by(log, 'j1'), 15, 'the first run')
    first.kill()

    os.remove(hold)
    restarted_at = time.time()
    second = workers('file:' + path, uuid_file, SLOW)
    assert second.first_line == 'ready'
    ended = wait_until(
        lambda: [r for r in jobs.runs(log, 'j1') if r[0] == 'end'], 15,
        'the re-run to end')
    # Recovered at start-up, not after the 30 s death interval.
    assert ended[0][2] - restarted_at < 10
    second.stop()

    db = ZODB.DB(path)
    status, result, _ = job_state(db, oid)
    db.close()
    starts = [r[1] for r in jobs.runs(log, 'j1') if r[0] == 'start']
    assert starts == [first.pid, second.pid]
    assert status == COMPLETED and result == second.pid
    assert_never_concurrent(log, 'j1')


def test_sibling_recovers_jobs_of_a_killed_dispatcher(tmp_path, engine,
                                                      workers):
    db = engine.db()
    pyramid_zcasync.install_queues(db)
    oid, log, hold = put_held_job(db, tmp_path)
    storage = engine.spec
    fast = (0.2, 0.3, 2.0)

    doomed = workers(storage, tmp_path / 'a.txt', fast)
    assert doomed.first_line == 'ready'
    wait_until(lambda: started_by(log, 'j1'), 15, 'the first run')
    survivor = workers(storage, tmp_path / 'b.txt', fast)
    assert survivor.first_line == 'ready'
    doomed.kill()
    killed_at = time.time()
    os.remove(hold)

    rerun = wait_until(lambda: started_by(log, 'j1', 2), 20, 'the re-run')
    assert rerun[1][1] == survivor.pid
    # Found dead after ping_death_interval (2 s) of silence, not much later.
    assert 1.0 < rerun[1][2] - killed_at < 10

    def completed():
        transaction.begin()
        return job_state(db, oid)[0] == COMPLETED
    wait_until(completed, 15, 'completion')
    status, result, started = job_state(db, oid)
    assert result == survivor.pid and started == survivor.pid
    assert_never_concurrent(log, 'j1')
    db.close()


def test_second_process_with_same_uuid_is_refused(tmp_path, engine,
                                                  workers):
    storage = engine.spec
    uuid_file = tmp_path / 'uuid.txt'
    first = workers(storage, uuid_file)
    assert first.first_line == 'ready'
    twin = workers(storage, uuid_file)
    assert twin.process.wait(30) != 0
    error = twin.stderr_text()
    assert 'is already running' in error
    assert str(first.pid) in error  # names the live holder
    # The first one is untouched: still registered as active.
    db = engine.db()
    connection = db.open()
    queue = IQueue(connection.root())
    uuid = pyramid_zcasync.instance.read_uuid(str(uuid_file))
    assert queue.dispatchers[uuid].activated is not None
    connection.close()
    db.close()


def test_sigterm_deactivates_and_exits(tmp_path, engine, workers):
    storage = engine.spec
    uuid_file = tmp_path / 'uuid.txt'
    worker = workers(storage, uuid_file)
    assert worker.first_line == 'ready'
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 8
    assert worker.process.returncode is not None
    assert 'stopped' in worker.process.stdout.read()
    db = engine.db()
    connection = db.open()
    uuid = pyramid_zcasync.instance.read_uuid(str(uuid_file))
    assert IQueue(connection.root()).dispatchers[uuid].activated is None
    connection.close()
    db.close()
