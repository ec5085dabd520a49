"""More peers, drained and picked up as peers.py measures Huey and RQ:
Dramatiq and Celery (each on a private redis-server), procrastinate (on a
throw-away PostgreSQL cluster).

    python -m benchmarks.morepeers [--quick] [--only dramatiq,celery,procrastinate]

prints a table and writes benchmarks/results/morepeers.json.  The
definitions (throughput: put N jobs as fast as the client can, jobs/s to
the last result; pick-up: a job's own start - its put call's return, one
job at a time after an idle gap) are peers.py's, with its helpers.

The classes here are each peer's client side (put a job, is it done, when
did it start), started with its server and one worker process by
:func:`running`; benchmarks/livepeers.py drives the same classes with
web-style producers.  Every worker is 1 process with 2 threads (or
2-way concurrency) where the peer has them, like Huey's 1 consumer x 2
threads; RQ's worker runs one job at a time.

Persistence, recorded in each row: redis-server runs with its defaults
(RDB snapshots, no AOF): a job acknowledged by the put can be lost if
the server crashes before its next snapshot.  procrastinate's
PostgreSQL runs with fsync on and synchronous_commit on (its defaults).
"""
import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import (IO, Any, Callable, Dict, Iterator, List, NamedTuple,
                    Optional, Sequence)

from benchmarks import common, peers

Params = Dict[str, Any]
Result = Dict[str, Any]

SYSTEMS = ('dramatiq', 'celery', 'procrastinate')
DEFAULTS: Params = dict(peers.DEFAULTS, peer_jobs=500, peer_threads=2)
QUICK: Params = dict(peers.QUICK, peer_jobs=150, peer_threads=2)
REDIS_PERSISTENCE = ('Redis defaults: RDB snapshots, no AOF (a crash loses '
                     'acknowledged jobs)')
PG_PERSISTENCE = 'PostgreSQL fsync on, synchronous_commit on'
PIP_HINT = "pip install -e '.[bench]'"


class Job(NamedTuple):
    """What a put returned: the peer's id (``_pickup`` names it) and the
    peer's own object for the job."""
    id: Any
    ref: Any


class Peer:
    """A peer's client side.  Subclasses put a job and say whether it is
    done and when it started; this class keeps every job put (from any
    thread) and counts, in order, those done."""
    system = ''
    name = ''
    persistence = ''
    concurrency = ''
    server = ''     # the server's name and version
    server_pid: Optional[int] = None

    def __init__(self, workers: Sequence[peers.Child]) -> None:
        self.workers = list(workers)
        self._jobs: List[Job] = []
        self._lock = threading.Lock()
        self._done = 0

    # -- what each peer answers -------------------------------------------

    def put(self) -> Job:
        raise NotImplementedError

    def is_done(self, job: Job) -> bool:
        raise NotImplementedError

    def started_at(self, job: Job) -> float:
        """The job's start (``time.time()``), checked to be a float."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the client's connections."""

    # -- shared -----------------------------------------------------------

    def put_tracked(self) -> Job:
        job = self.put()
        with self._lock:
            self._jobs.append(job)
        return job

    def done_count(self) -> int:
        """Jobs done so far, counting in the order they were put (each
        check asks about one job, the first not yet seen done)."""
        for c in self.workers:
            c.check_alive()
        while self._done < len(self._jobs) and self.is_done(
                self._jobs[self._done]):
            self._done += 1
        return self._done

    def all_done(self) -> bool:
        return self.done_count() == len(self._jobs)

    def worker_cpu(self) -> float:
        """CPU seconds of the worker processes so far."""
        from benchmarks.dispatchers import cpu_seconds
        return sum(cpu_seconds(c.pid) for c in self.workers)

    def server_cpu(self) -> float:
        """CPU seconds of the server (Redis, PostgreSQL) so far, with its
        child processes (PostgreSQL's backends, Redis's snapshots): the
        work of a job that neither the client nor the worker shows."""
        return tree_cpu_seconds(self.server_pid) if self.server_pid else 0.0

    def warm_up(self, n: int, timeout: float) -> None:
        jobs = [self.put_tracked() for _ in range(n)]
        common.wait_until(self.all_done, timeout, 0.01,
                          '%s warm-up' % self.system)
        for job in jobs:
            self.started_at(job)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live children (from /proc)."""
    from benchmarks.dispatchers import cpu_seconds
    total = 0.0
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            if int(entry) == pid or ppid == pid:
                total += cpu_seconds(entry)
        except (OSError, ValueError, IndexError):
            pass      # ended meanwhile
    return total


def _float(value: Any, job: Job) -> float:
    if not isinstance(value, float):
        raise RuntimeError('job %s: result %r, not a float' % (job.id, value))
    return value


class RQ(Peer):
    system = 'rq'
    name = 'RQ Redis, 1 SimpleWorker process'
    persistence = REDIS_PERSISTENCE
    concurrency = '1 worker process, 1 job at a time'

    def __init__(self, url: str, workers: Sequence[peers.Child],
                 queue_name: str) -> None:
        super().__init__(workers)
        from redis import Redis
        from rq import Queue
        from rq.registry import FailedJobRegistry, FinishedJobRegistry
        from benchmarks._peer_jobs import started_at
        self.conn = Redis.from_url(url)
        self.queue = Queue(queue_name, connection=self.conn)
        self.finished = FinishedJobRegistry(queue=self.queue).key
        self.failed = FailedJobRegistry(queue=self.queue).key
        self.function = started_at

    def put(self) -> Job:
        job = self.queue.enqueue(self.function)
        return Job(job.id, job)

    def is_done(self, job: Job) -> bool:
        if self.conn.zscore(self.finished, job.id) is not None:
            return True
        if self.conn.zscore(self.failed, job.id) is not None:
            raise RuntimeError('rq job %s failed' % job.id)
        return False

    def started_at(self, job: Job) -> float:
        return _float(job.ref.return_value(), job)

    def close(self) -> None:
        self.conn.close()


class Dramatiq(Peer):
    system = 'dramatiq'
    persistence = REDIS_PERSISTENCE

    def __init__(self, url: str, workers: Sequence[peers.Child],
                 threads: int) -> None:
        super().__init__(workers)
        from benchmarks._peer_jobs import make_dramatiq
        from dramatiq.results import ResultMissing
        self.broker, self.backend, self.actor = make_dramatiq(url)
        self.missing = ResultMissing
        self.name = ('Dramatiq Redis, 1 worker process x %d threads'
                     % threads)
        self.concurrency = '1 worker process x %d threads' % threads

    def put(self) -> Job:
        message = self.actor.send()
        return Job(message.message_id, message)

    def is_done(self, job: Job) -> bool:
        try:
            self.backend.get_result(job.ref)   # raises a failed job's error
        except self.missing:
            return False
        return True

    def started_at(self, job: Job) -> float:
        return _float(self.backend.get_result(job.ref), job)

    def close(self) -> None:
        self.broker.close()


class Celery(Peer):
    system = 'celery'
    persistence = REDIS_PERSISTENCE + '; task_acks_late off (default)'

    def __init__(self, url: str, workers: Sequence[peers.Child],
                 threads: int) -> None:
        super().__init__(workers)
        from benchmarks._peer_jobs import make_celery
        self.app, self.task = make_celery(url)
        self.name = 'Celery Redis, 1 worker process, threads pool x %d' % (
            threads)
        self.concurrency = '1 worker process, --pool=threads x %d' % threads

    def put(self) -> Job:
        result = self.task.delay()
        return Job(result.id, result)

    def is_done(self, job: Job) -> bool:
        if job.ref.failed():
            raise RuntimeError('celery task %s failed: %r'
                               % (job.id, job.ref.result))
        return bool(job.ref.successful())

    def started_at(self, job: Job) -> float:
        return _float(job.ref.result, job)

    def close(self) -> None:
        self.app.close()


class Procrastinate(Peer):
    """procrastinate keeps no return value: a job's start is the time of
    its ``started`` event, written by the worker's fetch (PostgreSQL's
    ``now()``, on this machine's clock)."""
    system = 'procrastinate'
    persistence = PG_PERSISTENCE

    def __init__(self, conninfo: str, workers: Sequence[peers.Child],
                 concurrency: int) -> None:
        super().__init__(workers)
        import psycopg
        from benchmarks._peer_jobs import make_procrastinate
        self.app, self.task = make_procrastinate(conninfo, sync=True)
        self.app.open()
        self.conninfo = conninfo
        self.watch = threading.local()
        self.connect = psycopg.connect
        self.name = ('procrastinate PostgreSQL, 1 worker process, '
                     'concurrency %d' % concurrency)
        self.concurrency = ('1 worker process, concurrency %d (asyncio; '
                            'the sync task in a thread)' % concurrency)

    def _query(self, sql: str, job: Job) -> Any:
        conn = getattr(self.watch, 'conn', None)
        if conn is None:
            conn = self.watch.conn = self.connect(self.conninfo,
                                                  autocommit=True)
        row = conn.execute(sql, (job.id,)).fetchone()
        return row[0] if row else None

    def put(self) -> Job:
        job_id = self.task.defer()
        return Job(job_id, None)

    def is_done(self, job: Job) -> bool:
        status = self._query('SELECT status::text FROM procrastinate_jobs '
                             'WHERE id = %s', job)
        if status in ('failed', 'cancelled', 'aborted'):
            raise RuntimeError('procrastinate job %s: %s' % (job.id, status))
        return bool(status == 'succeeded')

    def started_at(self, job: Job) -> float:
        return _float(self._query(
            "SELECT extract(epoch FROM at)::float8 FROM procrastinate_events"
            " WHERE job_id = %s AND type = 'started'", job), job)

    def close(self) -> None:
        conn = getattr(self.watch, 'conn', None)
        if conn is not None:
            conn.close()
        self.app.close()


def _imports(*names: str) -> None:
    import importlib.util
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise common.Skipped('%s not installed: %s'
                             % (', '.join(missing), PIP_HINT))


def _worker(kind: str, tmp: str, *args: Any) -> peers.Child:
    return peers.python_child([kind] + [str(a) for a in args],
                              os.path.join(tmp, '%s-worker.log' % kind))


@contextlib.contextmanager
def _redis_peer(kind: str, params: Params, tmp: str,
                make: Callable[[str, List[peers.Child]], Peer]
                ) -> Iterator[Peer]:
    with peers.RedisServer() as server:
        workers: List[peers.Child] = []
        peer = None
        try:
            if kind == 'rq':
                workers.append(_worker('rq', tmp, server.url, 'bench'))
            else:
                workers.append(_worker(kind, tmp, server.url,
                                       params['peer_threads']))
            peer = make(server.url, workers)
            peer.server = 'redis-server %s, save "%s"' % (server.version,
                                                          server.save)
            peer.server_pid = server.child.pid if server.child else None
            yield peer
        finally:
            if peer is not None:
                peer.close()
            for w in workers:
                w.stop()


@contextlib.contextmanager
def _procrastinate(params: Params, tmp: str) -> Iterator[Peer]:
    from benchmarks import relstorage
    pgserver = relstorage._pgserver()
    server = pgserver.PostgreSQL(durable=True).start()
    worker = peer = None
    try:
        server.createdb('procrastinate')
        conninfo = server.dsn('procrastinate')
        from benchmarks._peer_jobs import make_procrastinate
        app, _ = make_procrastinate(conninfo, sync=True)
        with app.open():
            app.schema_manager.apply_schema()
        worker = _worker('procrastinate', tmp, conninfo,
                         params['peer_threads'])
        peer = Procrastinate(conninfo, [worker], params['peer_threads'])
        peer.server = relstorage.postgres_version(server.bin)
        peer.server_pid = server.pid
        yield peer
    finally:
        if peer is not None:
            peer.close()
        if worker is not None:
            worker.stop()
        server.stop()


@contextlib.contextmanager
def running(kind: str, params: Params) -> Iterator[Peer]:
    """The peer ``kind`` with its server and one worker process, warmed
    up; everything stopped by PID and removed at the end.
    :class:`common.Skipped` when a package or server is missing."""
    threads = params['peer_threads']
    makers: Dict[str, Callable[[str, List[peers.Child]], Peer]] = {
        'rq': lambda url, ws: RQ(url, ws, 'bench'),
        'dramatiq': lambda url, ws: Dramatiq(url, ws, threads),
        'celery': lambda url, ws: Celery(url, ws, threads)}
    needs = {'rq': ('redis', 'rq'), 'dramatiq': ('redis', 'dramatiq'),
             'celery': ('redis', 'celery'),
             'procrastinate': ('procrastinate', 'psycopg')}
    _imports(*needs[kind])
    tmp = tempfile.mkdtemp(prefix='bench-%s-' % kind)
    try:
        context = (_procrastinate(params, tmp) if kind == 'procrastinate'
                   else _redis_peer(kind, params, tmp, makers[kind]))
        with context as peer:
            peer.warm_up(params['warmup_jobs'], params['phase_timeout_s'])
            yield peer
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- drain and pick-up ------------------------------------------------------

def drain(kind: str, params: Params = DEFAULTS) -> Result:
    """peers.py's throughput and pick-up rows for one peer."""
    p = dict(DEFAULTS, **params)
    with running(kind, p) as peer:
        timeout = p['phase_timeout_s']
        tput = peers.throughput(peer.put_tracked, peer.done_count,
                                p['peer_jobs'], p['rounds'], peer.workers,
                                timeout, kind,
                                after_round=lambda js: [peer.started_at(j)
                                                        for j in js])
        pickup = peers.pickup(
            peer.put_tracked, peer.is_done, peer.started_at,
            peers.gaps(p['latency_jobs'], p['gap_min_s'], p['gap_max_s']),
            peer.workers, timeout, kind)
        return dict(pickup, name=peer.name, system=kind,
                    workers=len(peer.workers),
                    concurrency=peer.concurrency,
                    persistence=peer.persistence, server=peer.server,
                    failures=0,
                    throughput=tput)


def run(params: Optional[Params] = None, only: Sequence[str] = SYSTEMS,
        log: Callable[[str], None] = print) -> Result:
    p = dict(DEFAULTS, **(params or {}))
    out: Result = {'machine': common.machine_description(),
                   'params': p, 'peers': [], 'skipped': {}, 'errors': {}}
    started = time.time()
    for kind in SYSTEMS:
        if kind in only:
            r = common.attempt(out, kind, lambda: drain(kind, p), log)
            if r:
                out['peers'].append(r)
    out['duration_s'] = round(time.time() - started, 1)
    return out


def print_report(result: Result, file: Optional[IO[str]] = None) -> None:
    rows = [[r['name'], r['throughput']['jobs'],
             r['throughput']['jobs_per_s'], r['pickup'].get('p50_ms'),
             r['pickup'].get('p95_ms'), r['persistence']]
            for r in result['peers']]
    common.print_table(['drain', 'n', 'jobs/s', 'pickup p50 ms',
                        'pickup p95 ms', 'persistence'], rows, out=file)
    peers.print_skips(result, file)


def options(description: str, systems: Sequence[str],
            name: str) -> argparse.ArgumentParser:
    """The options every peers' command takes: --quick, --only, --json."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument('--quick', action='store_true',
                    help='small counts, for a smoke test (figures noisy)')
    ap.add_argument('--only', default=','.join(systems),
                    type=lambda text: tuple(
                        s.strip() for s in text.split(',') if s.strip()),
                    help='comma-separated subset of ' + ','.join(systems))
    ap.add_argument('--json', default=None,
                    help='default benchmarks/results/%s.json' % name)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = options(__doc__.splitlines()[0], SYSTEMS,
                   'morepeers').parse_args(argv)
    result = run(QUICK if args.quick else DEFAULTS, args.only,
                 log=common.log_to_stderr)
    common.report_and_write('morepeers', result, args.json, print_report)
    return 1 if result['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
