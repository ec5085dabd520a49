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
import contextlib
import os
import shutil
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import transaction
import ZODB

import pyramid_zcasync
from benchmarks import common, raw_storage
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import COMPLETED, IQueue

Result = Dict[str, Any]
CONNECTION_CACHE = 20000   # objects; as development.ini ships it


def noop() -> None:
    return None


@contextlib.contextmanager
def running_dispatcher(db: Any, **start_options: Any) -> Iterator[Any]:
    """A dispatcher on ``db`` for the length of a measurement, stopped
    even when the measurement fails (its threads would outlive the
    temporary database otherwise)."""
    running = dispatcher_module.start(db, **start_options)
    try:
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def temporary_database(prefix: str,
                       cache_size: int = CONNECTION_CACHE) -> Iterator[Any]:
    """A FileStorage database with the queues installed, in a directory
    removed afterwards; yields (db, directory)."""
    directory = tempfile.mkdtemp(prefix=prefix)
    db = ZODB.DB(os.path.join(directory, 'Data.fs'), cache_size=cache_size)
    try:
        pyramid_zcasync.install_queues(db)
        yield db, directory
    finally:
        db.close()
        shutil.rmtree(directory, ignore_errors=True)


def _queue(connection: Any) -> Any:
    return IQueue(connection.root())


def _idle(manager: Any, connection: Any) -> bool:
    """No job pending and no agent holding one (a fresh view)."""
    return common.queue_drained(manager, connection, _queue)


def _check(manager: Any, connection: Any, oids: Sequence[bytes]) -> None:
    """Every job COMPLETED with a float result (``started_at``'s)."""
    manager.begin()
    for oid in oids:
        job = connection.get(oid)
        if job.status != COMPLETED or not isinstance(job.result, float):
            raise RuntimeError('job %r: status %s, result %r'
                               % (job, job.status, job.result))
    manager.abort()


def run(jobs: int = 3000, agent_size: int = 3,
        timeout: float = 120.0) -> Result:
    """The first method, kept for ``main``: put ``jobs`` jobs with no
    dispatcher running (the bulk put is timed), then start one and time
    the drain from its start, cold."""
    with temporary_database('bench-zc-', max(20000, jobs * 3)) as (
            db, directory):
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        started = time.perf_counter()
        put = [_queue(connection).put(noop) for _ in range(jobs)]
        manager.commit()
        bulk_put_s = time.perf_counter() - started
        started = time.perf_counter()
        with running_dispatcher(
                db, uuid_file=os.path.join(directory, 'uuid.txt'),
                poll_interval=5, agent_size=agent_size,
                install_signal_handlers=False):
            common.wait_until(lambda: _idle(manager, connection), timeout,
                              interval=0.05, what='all jobs to complete')
            elapsed = time.perf_counter() - started
        manager.begin()
        if not all(job.status == COMPLETED for job in put):
            raise RuntimeError('some job did not complete')
        connection.close()
    return {'jobs': jobs, 'agent_size': agent_size,
            'seconds': round(elapsed, 3),
            'jobs_per_s': round(jobs / elapsed, 1),
            'bulk_put_s': round(bulk_put_s, 3)}


def transactions_between(path: str, after_tid: bytes,
                         upto_tid: bytes) -> Dict[str, int]:
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


class Producer:
    """This process's side of a drain: puts jobs on one connection and
    watches for the end on another, as an application and a monitor
    would."""

    def __init__(self, db: Any, timeout: float) -> None:
        self.db = db
        self.timeout = timeout
        self.manager = transaction.TransactionManager()
        self.connection = db.open(transaction_manager=self.manager)
        self.probe_manager = transaction.TransactionManager()
        self.probe = db.open(transaction_manager=self.probe_manager)

    def put(self, n: int) -> List[bytes]:
        """Put ``n`` no-op jobs in one transaction; their oids."""
        from benchmarks._peer_jobs import started_at
        self.manager.begin()
        queue = _queue(self.connection)
        put = [queue.put(started_at) for _ in range(n)]
        self.manager.commit()
        return [job._p_oid for job in put]

    def wait_drained(self, what: str) -> None:
        common.wait_until(lambda: _idle(self.probe_manager, self.probe),
                          self.timeout, 0.005, what)

    def check(self, oids: Sequence[bytes]) -> None:
        _check(self.manager, self.connection, oids)

    def close(self) -> None:
        self.connection.close()
        self.probe.close()


def timed_round(producer: Producer, jobs: int, path: str,
                label: str) -> Result:
    """Put ``jobs`` jobs in one transaction and wait until all are done:
    wall time, this process's CPU, the transactions it took."""
    db = producer.db
    tid0 = db.storage.lastTransaction()
    cpu0 = common.process_cpu_seconds()
    t0 = time.perf_counter()
    oids = producer.put(jobs)
    t_put = time.perf_counter()
    producer.wait_drained(label)
    t1 = time.perf_counter()
    cpu = common.process_cpu_seconds() - cpu0
    producer.check(oids)
    stats = transactions_between(path, tid0, db.storage.lastTransaction())
    return {'seconds': t1 - t0, 'put_seconds': t_put - t0,
            'jobs_per_s': jobs / (t1 - t0),
            'cpu_percent': round(100 * cpu / (t1 - t0), 1),
            'cpu_ms_per_job': round(1000 * cpu / jobs, 3),
            'commits': stats['commits'], 'records': stats['records']}


def profiled_round(producer: Producer, jobs: int,
                   profile_dir: str) -> Optional[Result]:
    """One more round, not counted, under py-spy (None without it)."""
    from benchmarks import spy
    if not spy.available():
        return None
    os.makedirs(profile_dir, exist_ok=True)
    recorder = spy.Recorder({'fs-1-process': os.getpid()}, profile_dir)
    try:
        time.sleep(0.5)
        t0 = time.perf_counter()
        producer.put(jobs)
        producer.wait_drained('the profiled round')
        rate = jobs / (time.perf_counter() - t0)
    finally:
        summaries = recorder.stop()
    return {'jobs': jobs, 'jobs_per_s': round(rate, 1),
            'directory': profile_dir, 'profiles': summaries}


def median_round(per_round: Sequence[Result]) -> Result:
    return sorted(per_round, key=lambda r: r['jobs_per_s'])[
        len(per_round) // 2]


def run_warm(jobs: int = 3000, rounds: int = 3, agent_size: int = 3,
             warmup: int = 50, timeout: float = 60.0,
             poll_interval: float = 5.0, profile_dir: Optional[str] = None,
             profile_jobs: int = 10000) -> Result:
    """Dispatcher started and warmed up first (so it knows the jobs are
    short and groups them); then ``rounds`` times: put ``jobs`` no-op
    jobs in one transaction, commit (which wakes the dispatcher), and
    wait until all are done.  Median round.  With ``profile_dir``, one
    more round (not counted) runs under py-spy."""
    with temporary_database('bench-zc-') as (db, directory):
        with running_dispatcher(
                db, uuid_file=os.path.join(directory, 'uuid.txt'),
                poll_interval=poll_interval, agent_size=agent_size,
                install_signal_handlers=False):
            producer = Producer(db, timeout)
            oids = producer.put(warmup)
            producer.wait_drained('warm-up jobs to complete')
            producer.check(oids)
            path = os.path.join(directory, 'Data.fs')
            per_round = [timed_round(producer, jobs, path,
                                     'round %d to complete' % (i + 1))
                         for i in range(rounds)]
            profile = (profiled_round(producer, profile_jobs, profile_dir)
                       if profile_dir else None)
            producer.close()
    med = median_round(per_round)
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


def bulk_put(jobs: int = 10000, rounds: int = 3) -> Result:
    """Put ``jobs`` jobs in one transaction and commit, no dispatcher
    running, ``rounds`` times into the same queue; median seconds."""
    from benchmarks._peer_jobs import started_at
    times = []
    with temporary_database('bench-zc-bulk-') as (db, _):
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        for _ in range(rounds):
            manager.begin()
            t0 = time.perf_counter()
            queue = _queue(connection)
            for _ in range(jobs):
                queue.put(started_at)
            manager.commit()
            times.append(time.perf_counter() - t0)
            connection.cacheMinimize()
        pending = len(_queue(connection))
        connection.close()
    if pending != jobs * rounds:
        raise RuntimeError('%d jobs pending, expected %d'
                           % (pending, jobs * rounds))
    return {'jobs': jobs, 'rounds': rounds,
            'seconds': round(sorted(times)[len(times) // 2], 4),
            'seconds_rounds': [round(t, 4) for t in times]}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=3000)
    parser.add_argument('--bulk', type=int, default=10000)
    parser.add_argument('--json', default=None,
                        help='output path (default '
                             'benchmarks/results/throughput.json)')
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
    common.write_result('throughput', {
        'machine': common.machine_description(), 'raw': raw,
        'pyramid_zcasync': ours, 'bulk': bulk, 'ratio_to_raw': ratio},
        args.json)


if __name__ == '__main__':
    main()
