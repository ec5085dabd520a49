"""Multi-process reliability on the storages processes share: a real ZEO
server (runzeo) and RelStorage on a real PostgreSQL (the ``engine``
fixture runs each such test on both).  Dispatcher processes sharing a
queue, kill -9, and the storage server restarting mid-run; jobs failing
in every documented way and an HTTP producer are in
test_reliability_failures.py, a commit whose answer was lost in
test_reliability_lost_answers.py.

The promise under test: no job lost, none committed twice, even when
processes die.  Each test prints its figures (``pytest -s`` shows them).
The last ones are about ZEO's own client (oids it prefetched before a
restart).
"""
import collections
import os
import time

import persistent.mapping
import pytest
from ZODB.POSException import ConflictError

import jobs
import pyramid_zcasync
from pyramid_zcasync.interfaces import ACTIVE, COMPLETED, IQueue
from pyramid_zcasync.testing import wait_until
from dbtools import read, write
from reliabilitytools import (make_trees, put_jobs, count_done, uuid_of,
                              held_jobs, registration_info, job_states,
                              wait_for_done, check_exactly_once, timing,
                              worker_log, log_excerpts, conflict_count)

INTERRUPTIONS = 'pyramid_zcasync.retry.interruptions'


# -- 1. two dispatcher processes share a queue -----------------------------

def test_two_dispatchers_run_1000_jobs_exactly_once(tmp_path, engine,
                                                    workers):
    db = engine.db()
    pyramid_zcasync.install_queues(db)
    keys = ['k%04d' % i for i in range(1000)]
    # Keys in place, so the jobs change values (which BTrees resolve)
    # rather than insert: inserts from two processes split the same
    # buckets, and a job could spend its 5 attempts on those conflicts
    # (seen twice under load: 999 of 1000 done).
    make_trees(db, 'done', 'pids', 'times', keys=keys)
    storage = engine.spec
    a = workers(storage, tmp_path / 'a.txt',
                timing(0.2, 0.3, 5.0, tmp_path / 'a.log'))
    b = workers(storage, tmp_path / 'b.txt',
                timing(0.2, 0.3, 5.0, tmp_path / 'b.log'))
    assert (a.first_line, b.first_line) == ('ready', 'ready')
    started = time.monotonic()
    oids = put_jobs(db, keys)
    wait_for_done(db, keys, oids, 150)
    elapsed = time.monotonic() - started
    states = check_exactly_once(db, keys, oids)

    pids = collections.Counter(read(db, lambda r: list(r['pids'].values())))
    assert set(pids) == {a.pid, b.pid}
    # Work is spread over both (a process claims up to 150 short jobs
    # ahead, to commit them in groups, so shares need not be even).
    assert min(pids.values()) >= 50, pids
    assert {s[2] for s in states.values()} == {uuid_of(tmp_path / 'a.txt'),
                                               uuid_of(tmp_path / 'b.txt')}
    print('\n1000 jobs, 2 dispatchers: %.1f s (%.0f jobs/s), per process %s, '
          'conflict retries %d' % (elapsed, len(keys) / elapsed,
                                   sorted(pids.values()),
                                   conflict_count(states)))
    db.close()


# -- 2. kill -9 one of two dispatchers --------------------------------------

def put_held_jobs(db, keys, hold_path):
    """Jobs that run until ``hold_path`` is removed; oids."""
    open(hold_path, 'w').close()

    def put(root):
        queue = IQueue(root)
        return [queue.put(jobs.append_when_released, root['done'],
                          root['pids'], key, hold_path, root['times'])
                for key in keys]
    return [job._p_oid for job in write(db, put)]


def holds_active(db, uuid, oids):
    held = held_jobs(db, uuid)
    return all(held.get(oid) == ACTIVE for oid in oids)


def test_kill_9_survivor_recovers_and_restart_recovers_at_once(
        tmp_path, engine, workers):
    """A (death 2 s) is killed while it runs 3 jobs: B finds it dead after
    2 s of silence in database time and re-queues them.  Then B (death
    30 s) is killed while it runs 3 jobs and restarted with its UUID: its
    jobs are recovered at once, not after 30 s.  Meanwhile 300 other jobs
    run on whoever is alive; each commits exactly once."""
    db = engine.db()
    pyramid_zcasync.install_queues(db)
    make_trees(db, 'done', 'pids', 'times')
    storage = engine.spec
    a_file, b_file = tmp_path / 'a.txt', tmp_path / 'b.txt'
    a_timing = timing(0.2, 0.3, 2.0, tmp_path / 'a.log')
    b_timing = timing(0.2, 0.3, 30.0, tmp_path / 'b.log')
    hold_a, hold_b = str(tmp_path / 'hold-a'), str(tmp_path / 'hold-b')
    keys, oids = [], []

    # -- A runs 3 held jobs; B runs the others; A dies; B notices -----
    a = workers(storage, a_file, a_timing)
    assert a.first_line == 'ready'
    a_uuid = uuid_of(a_file)
    a_keys = ['a%d' % i for i in range(3)]
    a_oids = put_held_jobs(db, a_keys, hold_a)
    wait_until(lambda: holds_active(db, a_uuid, a_oids), 30,
               'A to run its 3 jobs')
    b = workers(storage, b_file, b_timing)
    assert b.first_line == 'ready'
    b_uuid = uuid_of(b_file)
    batch = ['k%04d' % i for i in range(150)]
    oids += put_jobs(db, batch, seconds=0.05)
    keys += batch
    wait_until(lambda: count_done(db) >= 20, 30, 'B running jobs')
    a.kill()
    killed_at = time.time()
    os.remove(hold_a)
    a_held = held_jobs(db, a_uuid)
    a_last_ping = registration_info(db, a_uuid)['last_ping']
    assert a_held == {oid: ACTIVE for oid in a_oids}

    found_dead = wait_until(
        lambda: registration_info(db, a_uuid)['activated'] is None
        and time.time(), 20, 'B to find A dead', step=0.02)
    detection = found_dead - killed_at
    deactivated = registration_info(db, a_uuid)['written']
    silence = (deactivated - a_last_ping).total_seconds()
    # Dead only after ping_death_interval (2 s) of silence in database
    # time, and found within a few of B's polls and pings after that.
    assert 2.0 <= silence < 2.0 + 3.0, silence
    assert detection < 2.0 + 3.0, detection
    states = job_states(db, a_oids)
    for oid in a_oids:
        # Re-queued by the retry policy, counted as an interruption.
        assert states[oid][3][INTERRUPTIONS] == 1
        assert states[oid][2] != a_uuid
    wait_until(lambda: all(s[0] == COMPLETED for s in
                           job_states(db, a_oids).values()), 20,
               "A's jobs to be run by B")
    pids = read(db, lambda r: dict(r['pids']))
    assert {pids[key] for key in a_keys} == {b.pid}
    keys += a_keys
    oids += a_oids
    wait_for_done(db, keys, oids, 60, 'the first jobs')

    # -- B runs 3 held jobs; A comes back; B dies, comes back at once -
    b_keys = ['b%d' % i for i in range(3)]
    b_oids = put_held_jobs(db, b_keys, hold_b)
    wait_until(lambda: holds_active(db, b_uuid, b_oids), 30,
               'B to run its 3 jobs')
    a2 = workers(storage, a_file, a_timing)
    assert a2.first_line == 'ready'
    batch = ['k%04d' % i for i in range(150, 300)]
    oids += put_jobs(db, batch, seconds=0.05)
    keys += batch
    wait_until(lambda: count_done(db) >= len(keys) - 130, 30,
               'A running jobs again')
    b.kill()
    os.remove(hold_b)
    b_held = held_jobs(db, b_uuid)
    assert b_held == {oid: ACTIVE for oid in b_oids}
    restarted_at = time.time()
    b2 = workers(storage, b_file, b_timing)
    assert b2.first_line == 'ready'
    wait_until(lambda: all(s[0] == COMPLETED for s in
                           job_states(db, b_oids).values()), 20,
               "B's orphaned jobs")
    recovery = time.time() - restarted_at
    assert recovery < 10, recovery  # at start-up, not after 30 s
    states = job_states(db, b_oids)
    assert all(states[oid][3][INTERRUPTIONS] == 1 for oid in b_oids)
    assert 'restarted: recovered 3 unfinished job(s)' in worker_log(
        tmp_path, 'b')
    assert registration_info(db, b_uuid)['activated'] is not None  # not dead
    keys += b_keys
    oids += b_oids

    wait_for_done(db, keys, oids, 60)
    check_exactly_once(db, keys, oids)
    pids = collections.Counter(read(db, lambda r: list(r['pids'].values())))
    assert set(pids) <= {a.pid, a2.pid, b.pid, b2.pid}
    print('\nkill -9: A found dead %.2f s after the kill (silence %.2f s in '
          'database time, death interval 2 s); B restarted with its UUID: '
          'its 3 jobs done %.2f s later (death interval 30 s); jobs per '
          'process %s' % (detection, silence, recovery,
                          sorted(pids.values())))
    db.close()


# -- 3. the storage server restarts mid-run -----------------------------

def restart(server, down_seconds=1.0):
    """Restart runzeo on the same port and file; the seconds it was down."""
    from conftest import ZEOEngine
    return ZEOEngine(server).restart(down_seconds)


@pytest.mark.parametrize('count, seconds', [
    (240, 0.15),  # one job at a time, through the Runner (~6 s on 6 slots)
    (1500, 0.0),  # no-op jobs: claimed ahead, committed in groups
], ids=['jobs', 'noop-jobs'])
def test_server_restart_dispatchers_reconnect_and_finish(
        tmp_path, engine, workers, count, seconds):
    db = engine.db()
    pyramid_zcasync.install_queues(db)
    keys = ['k%04d' % i for i in range(count)]
    # The jobs' own writes should not be what fails them: this test is
    # about the outages (on RelStorage, inserts into the same trees from
    # two processes can exhaust a job's 5 attempts at a conflict).
    make_trees(db, 'done', 'pids', 'times', keys=keys)
    storage = engine.spec
    # Death far beyond the outage: this test is about reconnecting.
    a = workers(storage, tmp_path / 'a.txt',
                timing(0.2, 0.3, 30.0, tmp_path / 'a.log'))
    b = workers(storage, tmp_path / 'b.txt',
                timing(0.2, 0.3, 30.0, tmp_path / 'b.log'))
    assert (a.first_line, b.first_line) == ('ready', 'ready')
    oids = put_jobs(db, keys, seconds=seconds)

    outages = []
    for fraction in (0.2, 0.5):
        wait_for_done(db, keys[:int(len(keys) * fraction)], oids, 60,
                      '%d%% of the jobs' % (fraction * 100))
        # (Under load the last jobs may all be done by the time it is
        # seen that half are: then nothing is left to show resuming.)
        left_at_restart = len(keys) - count_done(db)
        back_at = time.time()
        outages.append(engine.restart())
        back_at += outages[-1]
    wait_for_done(db, keys, oids, 90)
    finished = time.time() - back_at
    states = check_exactly_once(db, keys, oids)

    # Both reconnected: each pinged after the last restart, still active
    # (one may have run all the jobs left while the other waited out the
    # back-off of the jobs it held when the server went away).
    pids = read(db, lambda r: dict(r['pids']))
    times = read(db, lambda r: dict(r['times']))
    after = {pids[key] for key in keys if times[key] > back_at}
    assert after <= {a.pid, b.pid}
    assert after or not left_at_restart, (
        '%d jobs were left at the restart, none ran after it'
        % left_at_restart)
    for process, name in ((a, 'a'), (b, 'b')):
        info = registration_info(db, uuid_of(tmp_path / (name + '.txt')))
        assert info['activated'] is not None, (
            'dispatcher %s is deactivated (process %s); its log and its '
            "sibling's say why:\n%s" % (
                name, 'running' if process.process.poll() is None
                else 'gone', log_excerpts(tmp_path, processes=(a, b))))
        assert info['last_ping'].timestamp() > back_at
        assert process.process.poll() is None  # still running
        log = worker_log(tmp_path, name)
        if engine.name == 'zeo':
            assert 'Reconnected to storage' in log
        assert 'is dead' not in log and 'found itself deactivated' not in log
        # The outage was waited out, never taken for a crash of our own.
        assert 'crash handler failed' not in log
        assert 'failed for good' not in log
    print('\n%s restarts: down %s s; all %d jobs done %.1f s after the last '
          'restart; conflict retries %d' % (
              engine.name, ', '.join('%.1f' % o for o in outages), len(keys),
              finished, conflict_count(states)))
    db.close()


def add_mapping(db, name):
    """Commit a new PersistentMapping at root[name]; its oid."""
    def add(root):
        root[name] = persistent.mapping.PersistentMapping()
        return root[name]
    return write(db, add)._p_oid


@pytest.mark.xfail(strict=True, raises=(ConflictError, ValueError), reason=(
    'ZEO: ClientStorage keeps the oids it prefetched (new_oids, 100 at a '
    'time) across a reconnection, while a restarted FileStorage hands out '
    'oids again from the highest one stored.  Two clients then create '
    'objects with the same oid: ConflictError, or "ValueError: A '
    'different object already has the same oid" and later POSKeyError '
    'in the client whose cache it corrupted.  After a ZEO restart this '
    'failed jobs of the reliability suite (ValueError, POSKeyError).  '
    'dispatcher.start works around it for its database (next test); '
    'other ZEO clients (the web app\'s) still need it.'))
def test_zeo_clients_do_not_reuse_oids_after_a_server_restart(zeo_server):
    first = zeo_server.db()
    try:
        oid_a = add_mapping(first, 'a')  # prefetches the next 99 oids
        restart(zeo_server, 0.2)
        second = zeo_server.db()  # a client started after the restart
        try:
            oid_b = add_mapping(second, 'b')
        finally:
            second.close()
        wait_until(first.storage.is_connected, 30, 'the reconnection')
        oid_c = add_mapping(first, 'c')  # from the oids prefetched before
        assert len({oid_a, oid_b, oid_c}) == 3
    finally:
        first.close()


def test_a_dispatcher_does_not_reuse_oids_after_a_server_restart(
        zeo_server):
    """The same story, with a dispatcher started on the first database:
    it drops the oids its ZEO client prefetched when it reconnects."""
    from pyramid_zcasync import dispatcher as dispatcher_module
    from pyramid_zcasync.testing import tear_down_dispatcher
    first = zeo_server.db()
    pyramid_zcasync.install_queues(first)
    dispatcher = dispatcher_module.start(
        first, uuid='u-oids', poll_interval=0.2,
        install_signal_handlers=False)
    try:
        oid_a = add_mapping(first, 'a')
        restart(zeo_server, 0.2)
        second = zeo_server.db()
        try:
            oid_b = add_mapping(second, 'b')
        finally:
            second.close()
        wait_until(first.storage.is_connected, 30, 'the reconnection')
        oid_c = add_mapping(first, 'c')
        assert len({oid_a, oid_b, oid_c}) == 3
    finally:
        tear_down_dispatcher(dispatcher)
        first.close()
