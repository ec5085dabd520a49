"""pyramid_zcasync end-to-end throughput on FileStorage, one process.

    python -m benchmarks.throughput [--jobs 3000] [--json PATH]

Puts N no-op jobs in one transaction (the bulk put is timed too), then
starts the dispatcher and waits until every job is COMPLETED in the
database; jobs/s is N over the time from the dispatcher's start to the
last completion.  The raw FileStorage commit rate is measured in the same
run so the result is also a ratio (SPEC: >= 0.75 x raw).

``python -m benchmarks`` (the whole suite) uses ``run_warm`` and
``bulk_put`` instead, which measure as the peers are measured: the
dispatcher already running and warmed up, jobs/s = N / (time all are done
- time the put started), median of several rounds.
"""
import argparse
import os
import shutil
import tempfile
import time

import transaction
import ZODB

import pyramid_zcasync
from benchmarks import common, raw_storage
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import COMPLETED, IQueue


def noop():
    return None


def _all_done(db, oids):
    connection = db.open()
    try:
        return all(connection.get(oid).status == COMPLETED for oid in oids)
    finally:
        connection.close()


def _agents_idle(queue):
    transaction.begin()
    return len(queue) == 0 and all(
        len(agent) == 0 for registration in queue.dispatchers.values()
        for agent in registration.values())


def run(jobs=3000, agent_size=3, timeout=120.0):
    directory = tempfile.mkdtemp(prefix='bench-zc-')
    db = ZODB.DB(os.path.join(directory, 'Data.fs'),
                 cache_size=max(20000, jobs * 3))
    try:
        pyramid_zcasync.install_queues(db)
        connection = db.open()
        queue = IQueue(connection.root())
        started = time.perf_counter()
        put = [queue.put(noop) for _ in range(jobs)]
        transaction.commit()
        bulk_put_s = time.perf_counter() - started
        oids = [job._p_oid for job in put]
        started = time.perf_counter()
        running = dispatcher_module.start(
            db, uuid_file=os.path.join(directory, 'uuid.txt'),
            poll_interval=5, agent_size=agent_size,
            install_signal_handlers=False)
        common.wait_until(lambda: _agents_idle(queue), timeout,
                          interval=0.05, what='all jobs to complete')
        elapsed = time.perf_counter() - started
        running.stop()
        assert _all_done(db, oids), 'some job did not complete'
        connection.close()
    finally:
        db.close()
        shutil.rmtree(directory)
    return {'jobs': jobs, 'agent_size': agent_size,
            'seconds': round(elapsed, 3),
            'jobs_per_s': round(jobs / elapsed, 1),
            'bulk_put_s': round(bulk_put_s, 3)}


CONNECTION_CACHE = 20000   # objects; as development.ini ships it


def _open(directory):
    return ZODB.DB(os.path.join(directory, 'Data.fs'),
                   cache_size=CONNECTION_CACHE)


def _idle(manager, connection):
    """No job pending and no agent holding one (a fresh view)."""
    manager.begin()
    queue = IQueue(connection.root())
    idle = len(queue) == 0 and all(
        len(agent) == 0 for registration in queue.dispatchers.values()
        for agent in registration.values())
    manager.abort()
    return idle


def _check(manager, connection, oids):
    """Every job COMPLETED with a float result (``started_at``'s)."""
    manager.begin()
    for oid in oids:
        job = connection.get(oid)
        if job.status != COMPLETED or not isinstance(job.result, float):
            raise RuntimeError('job %r: status %s, result %r'
                               % (job, job.status, job.result))
    manager.abort()


def transactions_between(path, after_tid, upto_tid):
    """Transactions committed in the FileStorage file ``path`` after
    ``after_tid`` up to ``upto_tid``, and the data records they wrote.
    Reads the file alongside its writer: only complete transactions
    before ``upto_tid`` are read."""
    from ZODB.FileStorage import FileIterator
    from ZODB.utils import p64, u64
    commits = records = 0
    iterator = FileIterator(path, start=p64(u64(after_tid) + 1),
                            stop=upto_tid)
    try:
        for txn in iterator:
            commits += 1
            records += sum(1 for _ in txn)
    finally:
        iterator.close()
    return {'commits': commits, 'records': records}


def cpu_seconds():
    """This process's user + system CPU time so far."""
    t = os.times()
    return t.user + t.system


def run_warm(jobs=3000, rounds=3, agent_size=3, warmup=50, timeout=60.0,
             poll_interval=5.0, profile_dir=None, profile_jobs=10000):
    """Dispatcher started and warmed up first; then ``rounds`` times: put
    ``jobs`` no-op jobs in one transaction, commit (which wakes the
    dispatcher), and wait until all are done.  Median round.  With
    ``profile_dir``, one more round (not counted) runs under py-spy."""
    from benchmarks._peer_jobs import started_at
    directory = tempfile.mkdtemp(prefix='bench-zc-')
    db = _open(directory)
    running = None
    per_round = []
    try:
        pyramid_zcasync.install_queues(db)
        running = dispatcher_module.start(
            db, uuid_file=os.path.join(directory, 'uuid.txt'),
            poll_interval=poll_interval, agent_size=agent_size,
            install_signal_handlers=False)
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        probe_manager = transaction.TransactionManager()
        probe = db.open(transaction_manager=probe_manager)

        def put(n):
            manager.begin()
            queue = IQueue(connection.root())
            put = [queue.put(started_at) for _ in range(n)]
            manager.commit()
            return [job._p_oid for job in put]

        oids = put(warmup)
        common.wait_until(lambda: _idle(probe_manager, probe), timeout,
                          0.005, 'warm-up jobs to complete')
        _check(manager, connection, oids)
        for i in range(rounds):
            tid0 = db.storage.lastTransaction()
            cpu0 = cpu_seconds()
            t0 = time.perf_counter()
            oids = put(jobs)
            t_put = time.perf_counter()
            common.wait_until(lambda: _idle(probe_manager, probe), timeout,
                              0.005, 'round %d to complete' % (i + 1))
            t1 = time.perf_counter()
            cpu = cpu_seconds() - cpu0
            _check(manager, connection, oids)
            stats = transactions_between(
                os.path.join(directory, 'Data.fs'), tid0,
                db.storage.lastTransaction())
            per_round.append({'seconds': t1 - t0, 'put_seconds': t_put - t0,
                              'jobs_per_s': jobs / (t1 - t0),
                              'cpu_percent': round(100 * cpu / (t1 - t0), 1),
                              'cpu_ms_per_job': round(1000 * cpu / jobs, 3),
                              'commits': stats['commits'],
                              'records': stats['records']})
        profile = None
        if profile_dir:
            from benchmarks import spy
            if spy.available():
                os.makedirs(profile_dir, exist_ok=True)
                recorder = spy.Recorder({'fs-1-process': os.getpid()},
                                        profile_dir)
                try:
                    time.sleep(0.5)
                    t0 = time.perf_counter()
                    put(profile_jobs)
                    common.wait_until(lambda: _idle(probe_manager, probe),
                                      timeout, 0.005, 'the profiled round')
                    rate = profile_jobs / (time.perf_counter() - t0)
                finally:
                    summaries = recorder.stop()
                profile = {'jobs': profile_jobs,
                           'jobs_per_s': round(rate, 1),
                           'directory': profile_dir, 'profiles': summaries}
        connection.close()
        probe.close()
    finally:
        if running is not None:
            running.stop()
        db.close()
        shutil.rmtree(directory, ignore_errors=True)
    med = sorted(per_round, key=lambda r: r['jobs_per_s'])[len(per_round) // 2]
    return {'jobs': jobs, 'rounds': rounds, 'agent_size': agent_size,
            'connection_cache_size': CONNECTION_CACHE,
            'jobs_per_s': round(med['jobs_per_s'], 1),
            'seconds': round(med['seconds'], 4),
            'put_seconds': round(med['put_seconds'], 4),
            'cpu_percent': med['cpu_percent'],
            'cpu_ms_per_job': med['cpu_ms_per_job'],
            'commits': med['commits'], 'records': med['records'],
            'jobs_per_s_rounds': [round(r['jobs_per_s'], 1)
                                  for r in per_round],
            'profile': profile}


def bulk_put(jobs=10000, rounds=3):
    """Put ``jobs`` jobs in one transaction and commit, no dispatcher
    running, ``rounds`` times into the same queue; median seconds."""
    from benchmarks._peer_jobs import started_at
    directory = tempfile.mkdtemp(prefix='bench-zc-bulk-')
    db = _open(directory)
    times = []
    try:
        pyramid_zcasync.install_queues(db)
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        for _ in range(rounds):
            manager.begin()
            t0 = time.perf_counter()
            queue = IQueue(connection.root())
            for _ in range(jobs):
                queue.put(started_at)
            manager.commit()
            times.append(time.perf_counter() - t0)
            connection.cacheMinimize()
        pending = len(IQueue(connection.root()))
        connection.close()
    finally:
        db.close()
        shutil.rmtree(directory, ignore_errors=True)
    if pending != jobs * rounds:
        raise RuntimeError('%d jobs pending, expected %d'
                           % (pending, jobs * rounds))
    return {'jobs': jobs, 'rounds': rounds,
            'seconds': round(sorted(times)[len(times) // 2], 4),
            'seconds_rounds': [round(t, 4) for t in times]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=3000)
    parser.add_argument('--bulk', type=int, default=10000)
    parser.add_argument('--json', default='benchmarks/results/throughput.json')
    args = parser.parse_args(argv)
    raw = raw_storage.run(mode='modify')
    ours = run(args.jobs)
    bulk = run(args.bulk) if args.bulk != args.jobs else ours
    ratio = ours['jobs_per_s'] / raw['commits_per_s']
    rows = [['raw FileStorage commits', raw['commits_per_s'], 1.0, ''],
            ['pyramid_zcasync no-op jobs (1 process)', ours['jobs_per_s'],
             round(ratio, 2), ''],
            ['bulk put of %d jobs, one transaction' % bulk['jobs'], '',
             '', '%.3f s' % bulk['bulk_put_s']]]
    common.print_table(['what', 'per s', 'x raw', 'time'], rows)
    common.write_json_path(args.json, {
        'machine': common.machine_description(), 'raw': raw,
        'pyramid_zcasync': ours, 'bulk': bulk, 'ratio_to_raw': ratio})


if __name__ == '__main__':
    main()
