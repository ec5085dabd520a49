"""Live, web-style producers: jobs put one per transaction while the
workers run.

    python -m benchmarks.live [--quick] [--only fs,zeo,pg,huey] [--threads 2,4]
                              [--jobs N] [--rounds N] [--rate R] [--json PATH]

A web application does not put 3,000 jobs in one transaction: each request
puts one and commits, while the dispatcher (or the peer's consumer) is
already working.  Each row starts its workers, warms them up, then starts
THREADS producer threads at once; each opens its own connection (a request
thread's) and commits PUTS no-op puts, one a transaction, as fast as it can
(a ConflictError is retried, up to 5 attempts, as ``retry.attempts`` would).

live jobs/s
    THREADS x PUTS / (time the last job is seen done - time the producers
    were released).  Every job is then checked: COMPLETED with a float.
CPU per put
    the producer threads' own CPU (``time.thread_time``) / puts: what a
    request pays for its put, commit included.
dispatcher CPU per job
    FileStorage (one process): this process's CPU minus the producers' /
    jobs; ZEO and RelStorage: the dispatcher process's CPU / jobs.
pick-up p50
    the job's own start (``started_at``) - the moment the put's commit (the
    peer's put call) returned, over every job of the round: with the
    workers busy this includes the wait in the queue.

With ``--rate R`` the producers are paced: R puts a second in all, each
thread putting at its share of the rate (a put late behind the pace goes
at once).  The jobs then arrive the same way whatever the machine's load
and the code measured, so the dispatcher's CPU per job of two checkouts is
compared for the same work; unpaced, a faster dispatcher also changes how
the jobs arrive (and so how many each poll claims).

Rows: ours on FileStorage in one process (producers in the dispatcher's
process: the default deployment); over ZEO and over RelStorage (the
producers are this process, the dispatcher a child process); Huey
(SqliteHuey, 1 consumer x 2 threads; the producers in this process).
The persistence each row runs with is recorded in its ``persistence``.
Median of ``rounds`` rounds per thread count.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import (IO, Any, Callable, Dict, Iterator, List, Optional,
                    Sequence, Tuple)

from benchmarks import common

Params = Dict[str, Any]
Result = Dict[str, Any]
#: One put: (what identifies the job, time its commit returned).
Handle = Tuple[Any, float]
PutOne = Callable[[], Handle]

SYSTEMS = ('fs', 'zeo', 'pg', 'huey')
DEFAULTS: Params = {
    'threads': (2, 4),
    'jobs': 2000,             # per round, spread over the threads
    'rounds': 3,
    'warmup_jobs': 50,
    'agent_size': 3,
    'poll_interval': 5.0,
    'huey_threads': 2,
    'conflict_attempts': 5,
    'phase_timeout_s': 120.0,
    'rate': None,             # puts/s in all (None: as fast as they can)
}
QUICK: Params = dict(DEFAULTS, jobs=300, rounds=1, warmup_jobs=20)


# -- the producers --------------------------------------------------------

class Producers:
    """THREADS threads, each with a put of its own (``open_put`` is
    called in the thread: a connection belongs to one thread), released
    together."""

    def __init__(self, open_put: Callable[[], Tuple[PutOne, Callable[[], None]]],
                 threads: int, puts: int, rate: Optional[float] = None
                 ) -> None:
        self.open_put = open_put
        self.puts = puts
        #: Seconds between two puts of one thread (None: no pause).
        self.spacing = threads / rate if rate else None
        self.ready = threading.Barrier(threads + 1)
        self.handles: List[List[Handle]] = [[] for _ in range(threads)]
        self.cpu = [0.0] * threads
        self.errors: List[BaseException] = []
        self.threads = [threading.Thread(target=self._produce, args=(i,),
                                         daemon=True)
                        for i in range(threads)]

    def _produce(self, index: int) -> None:
        put, close = self.open_put()
        try:
            self.ready.wait()
            cpu0 = time.thread_time()
            self.handles[index] = [put() for _ in self._paced()]
            self.cpu[index] = time.thread_time() - cpu0
        except BaseException as e:   # reported by join()
            self.errors.append(e)
        finally:
            close()

    def _paced(self) -> Iterator[int]:
        """``puts`` turns, each at its time when the producers are paced
        (a turn behind its time comes at once: the pace is not made up
        for by bursts of more than one put)."""
        due = time.perf_counter()
        for turn in range(self.puts):
            if self.spacing is not None:
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                due = max(due, time.perf_counter()) + self.spacing
            yield turn

    def start(self) -> float:
        """Start the threads; once all are ready, release them and return
        the time they were released."""
        for t in self.threads:
            t.start()
        self.ready.wait(timeout=30)
        return time.perf_counter()

    def join(self, timeout: float) -> List[Handle]:
        for t in self.threads:
            t.join(timeout)
        if self.errors:
            raise RuntimeError('a producer failed: %r' % self.errors[0])
        return [h for hs in self.handles for h in hs]


def live_round(open_put: Callable[[], Tuple[PutOne, Callable[[], None]]],
               done: Callable[[int], bool], threads: int, jobs: int,
               timeout: float, other_cpu: Callable[[], float],
               rate: Optional[float] = None) -> Tuple[Result, List[Handle]]:
    """One round: ``threads`` producers put ``jobs`` jobs in all (at
    ``rate`` puts/s if given); wait until ``done(jobs)``.  ``other_cpu()``
    is the workers' CPU so far."""
    producers = Producers(open_put, threads, jobs // threads, rate)
    total = threads * (jobs // threads)
    other0 = other_cpu()
    t0 = producers.start()
    handles = producers.join(timeout)
    t_put = time.perf_counter()
    common.wait_until(lambda: done(total), timeout, 0.002,
                      'live jobs to complete')
    t1 = time.perf_counter()
    put_cpu = sum(producers.cpu)
    return {'jobs': total, 'seconds': t1 - t0, 'put_seconds': t_put - t0,
            'jobs_per_s': total / (t1 - t0),
            'cpu_ms_per_put': 1000 * put_cpu / total,
            'worker_cpu_ms_per_job': 1000 * (other_cpu() - other0
                                             - put_cpu) / total}, handles


def median_of(rounds: Sequence[Result], pickups: Sequence[float]) -> Result:
    med = sorted(rounds, key=lambda r: r['jobs_per_s'])[len(rounds) // 2]
    return {'jobs': med['jobs'],
            'jobs_per_s': round(med['jobs_per_s'], 1),
            'seconds': round(med['seconds'], 3),
            'put_seconds': round(med['put_seconds'], 3),
            'cpu_ms_per_put': round(med['cpu_ms_per_put'], 3),
            'worker_cpu_ms_per_job': round(med['worker_cpu_ms_per_job'], 3),
            'jobs_per_s_rounds': [round(r['jobs_per_s'], 1) for r in rounds],
            'cpu_ms_per_put_rounds': [round(r['cpu_ms_per_put'], 3)
                                      for r in rounds],
            'pickup': common.latency_summary(pickups)}


# -- pyramid_zcasync --------------------------------------------------------

class Ours:
    """Our side of a row: producers on ``db`` (connections of their own),
    a probe connection that waits for the queue to drain."""

    def __init__(self, db: Any, attempts: int) -> None:
        from benchmarks.dispatchers import Client
        self.db = db
        self.attempts = attempts
        self.client = Client(db)
        self.conflicts = 0
        self.lock = threading.Lock()

    def open_put(self) -> Tuple[PutOne, Callable[[], None]]:
        import transaction
        from ZODB.POSException import ConflictError
        from benchmarks._peer_jobs import started_at
        manager = transaction.TransactionManager()
        connection = self.db.open(transaction_manager=manager)
        queue = self.client.queue(connection)

        def put() -> Handle:
            for attempt in range(self.attempts):
                manager.begin()
                job = queue.put(started_at)
                try:
                    manager.commit()
                    return job._p_oid, time.time()
                except ConflictError:
                    manager.abort()
                    with self.lock:
                        self.conflicts += 1
            raise RuntimeError('a put conflicted %d times' % self.attempts)

        def close() -> None:
            manager.abort()
            connection.close()
        return put, close

    def done(self, jobs: int) -> bool:
        return self.client.idle()

    def pickups(self, handles: Sequence[Handle]) -> List[float]:
        """Every job COMPLETED; each one's start - its commit's return."""
        from pyramid_zcasync.interfaces import COMPLETED
        manager, connection = self.client.tm, self.client.connection
        manager.begin()
        out = []
        for oid, committed in handles:
            job = connection.get(oid)
            if job.status != COMPLETED or not isinstance(job.result, float):
                raise RuntimeError('job %r: status %s, result %r'
                                   % (job, job.status, job.result))
            out.append(job.result - committed)
        manager.abort()
        connection.cacheMinimize()
        return out

    def warm_up(self, n: int, timeout: float) -> None:
        jobs, _ = self.client.put(n)
        common.wait_until(self.client.idle, timeout, 0.01, 'warm-up jobs')
        self.client.check(jobs)

    def close(self) -> None:
        self.client.close()


def rows_for(system: Any, name: str, persistence: str, params: Params,
             other_cpu: Callable[[], float]) -> List[Result]:
    """A row per thread count, each the median of its rounds."""
    rows = []
    for threads in params['threads']:
        per_round, pickups = [], []
        conflicts_before = getattr(system, 'conflicts', 0)
        for _ in range(params['rounds']):
            result, handles = live_round(
                system.open_put, system.done, threads, params['jobs'],
                params['phase_timeout_s'], other_cpu, params.get('rate'))
            per_round.append(result)
            pickups.extend(system.pickups(handles))
        row = median_of(per_round, pickups)
        row.update(name='%s, %d producer threads' % (name, threads),
                   threads=threads, persistence=persistence,
                   rate=params.get('rate'),
                   conflicts=(system.conflicts - conflicts_before
                              if hasattr(system, 'conflicts') else None))
        rows.append(row)
    return rows


def run_fs(params: Params) -> List[Result]:
    """FileStorage, producers in the dispatcher's process."""
    from benchmarks import throughput
    with throughput.temporary_database('bench-live-') as (db, directory):
        with throughput.running_dispatcher(
                db, uuid_file=os.path.join(directory, 'uuid.txt'),
                poll_interval=params['poll_interval'],
                agent_size=params['agent_size'],
                install_signal_handlers=False):
            ours = Ours(db, params['conflict_attempts'])
            try:
                ours.warm_up(params['warmup_jobs'], params['phase_timeout_s'])
                return rows_for(ours, 'ours, FileStorage, 1 process',
                                'FileStorage, fsync each commit', params,
                                common.process_cpu_seconds)
            finally:
                ours.close()


def _over_server(params: Params, name: str, persistence: str,
                 open_server: Callable[[str], Tuple[Any, Any, Any]]
                 ) -> List[Result]:
    """Producers in this process over a storage server, the dispatcher in
    a child process.  ``open_server(tmp)`` -> (server, db, a function
    starting the dispatcher process)."""
    from benchmarks.dispatchers import shut_down
    tmp = tempfile.mkdtemp(prefix='bench-live-server-')
    server = db = ours = None
    dispatchers: List[Any] = []
    try:
        server, db, start_dispatcher = open_server(tmp)
        import pyramid_zcasync
        pyramid_zcasync.install_queues(db)
        dispatchers.append(start_dispatcher(tmp))
        ours = Ours(db, params['conflict_attempts'])
        ours.warm_up(params['warmup_jobs'], params['phase_timeout_s'])
        process = dispatchers[0]
        return rows_for(ours, name, persistence, params,
                        lambda: process.cpu_seconds()
                        + common.process_cpu_seconds())
    finally:
        shut_down(dispatchers, ours.client if ours else None, db, server,
                  tmp)


def run_zeo(params: Params) -> List[Result]:
    from benchmarks.dispatchers import DispatcherProcess
    from benchmarks.zeo import ZEOServer

    def open_server(tmp: str) -> Tuple[Any, Any, Any]:
        server = ZEOServer(tmp).start()
        return server, server.db(), lambda d: DispatcherProcess(
            d, 'live', server.port, params['poll_interval'],
            params['agent_size'])
    return _over_server(params, 'ours, ZEO, producer + dispatcher process',
                        'ZEO server FileStorage, fsync each commit',
                        open_server)


def run_pg(params: Params) -> List[Result]:
    from benchmarks import relstorage

    def open_server(tmp: str) -> Tuple[Any, Any, Any]:
        pgserver = relstorage._pgserver()
        server = pgserver.PostgreSQL(durable=True).start()
        uri = server.uri('jobs')
        return server, relstorage.open_db(uri), (
            lambda d: relstorage.RelStorageDispatcherProcess(
                d, 'live', uri, params['poll_interval'],
                params['agent_size']))
    return _over_server(
        params, 'ours, RelStorage-PostgreSQL, producer + dispatcher process',
        'PostgreSQL fsync on, history-free', open_server)


# -- Huey -------------------------------------------------------------------

class Huey:
    """SqliteHuey producers (its storage keeps a connection per thread)."""

    def __init__(self, filename: str) -> None:
        from benchmarks._peer_jobs import make_huey
        self.huey, self.task = make_huey(filename)

    def open_put(self) -> Tuple[PutOne, Callable[[], None]]:
        def put() -> Handle:
            result = self.task()
            return result, time.time()
        return put, lambda: None

    def done(self, jobs: int) -> bool:
        return bool(self.huey.storage.result_store_size() >= jobs)

    def pickups(self, handles: Sequence[Handle]) -> List[float]:
        out = []
        for result, returned in handles:
            started = result.get()      # pops the result: the store empties
            if not isinstance(started, float):
                raise RuntimeError('huey result %r' % (started,))
            out.append(started - returned)
        return out


def run_huey(params: Params) -> List[Result]:
    from benchmarks import peers
    try:
        import huey  # noqa: F401
    except ImportError:
        raise common.Skipped('huey is not installed; pip install huey')
    tmp = tempfile.mkdtemp(prefix='bench-live-huey-')
    consumer = None
    try:
        dbfile = os.path.join(tmp, 'huey.db')
        system = Huey(dbfile)
        consumer = peers.python_child(
            ['huey', dbfile, str(params['huey_threads'])],
            os.path.join(tmp, 'consumer.log'))
        put, _ = system.open_put()
        warm = [put() for _ in range(params['warmup_jobs'])]
        common.wait_until(lambda: system.done(len(warm)),
                          params['phase_timeout_s'], 0.01, 'huey warm-up')
        system.pickups(warm)
        pid = consumer.pid
        from benchmarks.dispatchers import cpu_seconds
        return rows_for(
            system, 'Huey SqliteHuey, 1 consumer x %d threads'
            % params['huey_threads'],
            'SQLite WAL, synchronous FULL (huey defaults)', params,
            lambda: cpu_seconds(pid) + common.process_cpu_seconds())
    finally:
        if consumer is not None:
            consumer.stop()
        shutil.rmtree(tmp, ignore_errors=True)


RUNNERS: Dict[str, Callable[[Params], List[Result]]] = {
    'fs': run_fs, 'zeo': run_zeo, 'pg': run_pg, 'huey': run_huey}


def run(params: Optional[Params] = None, only: Sequence[str] = SYSTEMS,
        log: Callable[[str], None] = print,
        runners: Optional[Dict[str, Callable[[Params], List[Result]]]] = None,
        defaults: Params = DEFAULTS) -> Result:
    """Every selected system's rows; a JSON-able dict.  ``runners`` (by
    default ours and Huey's, RUNNERS) is how livepeers.py runs the peers
    through the same loop."""
    p = dict(defaults, **(params or {}))
    out: Result = {'params': {k: list(v) if isinstance(v, tuple) else v
                              for k, v in p.items()},
                   'rows': [], 'skipped': {}, 'errors': {}}
    started = time.perf_counter()
    for system, runner in (RUNNERS if runners is None else runners).items():
        if system in only:
            rows = common.attempt(out, system, lambda: runner(p), log)
            out['rows'].extend(rows or [])
    out['duration_s'] = round(time.perf_counter() - started, 1)
    return out


def huey_rate(result: Result, threads: int) -> Optional[float]:
    return next((r['jobs_per_s'] for r in result['rows']
                 if r['name'].startswith('Huey') and r['threads'] == threads),
                None)


def table_rows(result: Result) -> List[List[Any]]:
    rows = []
    for r in result['rows']:
        huey = huey_rate(result, r['threads'])
        rows.append([r['name'], r['jobs'], r['jobs_per_s'],
                     round(r['jobs_per_s'] / huey, 2) if huey else None,
                     r['cpu_ms_per_put'], r['worker_cpu_ms_per_job'],
                     r['pickup'].get('p50_ms'), r.get('conflicts'),
                     r['persistence']])
    return rows


def print_report(result: Result, file: Optional[IO[str]] = None) -> None:
    common.print_table(
        ['live, one put per transaction', 'n', 'jobs/s', 'x Huey',
         'put CPU ms', 'worker CPU ms/job', 'pick-up p50 ms', 'conflicts',
         'persistence'], table_rows(result), out=file)
    for key, why in sorted(result.get('skipped', {}).items()):
        print('skipped %s: %s' % (key, why), file=file)
    for key, why in sorted(result.get('errors', {}).items()):
        print('ERROR %s: %s' % (key, why), file=file)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--only', default=','.join(SYSTEMS),
                    help='comma-separated subset of ' + ','.join(SYSTEMS))
    ap.add_argument('--threads', default=None,
                    help='producer thread counts, e.g. 2,4')
    ap.add_argument('--jobs', type=int, default=None,
                    help='jobs per round, over all producer threads')
    ap.add_argument('--rounds', type=int, default=None)
    ap.add_argument('--rate', type=float, default=None,
                    help='pace the producers: puts per second in all')
    ap.add_argument('--json', default=None,
                    help='output path (default benchmarks/results/live.json)')
    args = ap.parse_args(argv)
    params = dict(QUICK if args.quick else DEFAULTS)
    if args.threads:
        params['threads'] = tuple(int(t) for t in args.threads.split(','))
    for name in ('jobs', 'rounds', 'rate'):
        if getattr(args, name):
            params[name] = getattr(args, name)
    only = tuple(s.strip() for s in args.only.split(',') if s.strip())
    result = run(params, only, log=common.log_to_stderr)
    result['machine'] = common.machine_description()
    result['code'] = common.code_version()
    common.report_and_write('live', result, args.json, print_report)
    return 1 if result['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
