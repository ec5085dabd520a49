"""Peer and baseline benchmarks: raw FileStorage, Huey (SQLite), RQ (Redis).

    python -m benchmarks.peers [--quick] [--only raw,huey,rq]

prints a table and writes benchmarks/results/peers.json.  See
benchmarks/README.md for what each figure means and how it is measured.
Dramatiq, Celery and procrastinate are measured the same way, with this
module's helpers (``throughput``, ``pickup``, ``RedisServer``), by
benchmarks/morepeers.py; their live rows are benchmarks/livepeers.py's.

Every system is measured the same way:

throughput
    with the workers already running and warmed up, put N no-op jobs one
    after the other as fast as the client can, then wait until all N results
    are stored; jobs/s = N / (time of last result seen - time of first put).
pick-up latency
    put one job, wait until it has finished, sleep a small random gap, repeat.
    The job returns ``time.time()`` taken as it starts; latency = that minus
    ``time.time()`` taken right after the put call returned (the job is then
    committed and visible to workers).  p50 / p95 over the samples.

All servers listen on 127.0.0.1 only and are stopped by PID; temporary
directories are removed; every loop is bounded in count and in time.
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence

from benchmarks import common
from benchmarks import raw_storage


REDIS_INSTALL_HINT = 'apt-get install -y redis-server'
PIP_INSTALL_HINT = "pip install -e '.[bench]'  (or: pip install huey rq redis)"

# Defaults sized for a full run well under 90 s on a 2-core machine.
DEFAULTS = {
    'rounds': 3,               # throughput: median of this many rounds
    'raw_commits': 1500,
    'huey_jobs': 1500,
    'rq_jobs': 500,
    'latency_jobs': 100,
    'warmup_jobs': 20,
    'gap_min_s': 0.020,        # pick-up: idle gap before each put,
    'gap_max_s': 0.100,        #   uniform in [min, max], fixed seed
    'huey_threads': 2,
    'rq_workers': (1, 2),
    'phase_timeout_s': 30.0,   # upper bound on any one phase
}
Params = Dict[str, Any]
Result = Dict[str, Any]
QUICK = dict(DEFAULTS, rounds=1, raw_commits=300, huey_jobs=300,
             rq_jobs=150, latency_jobs=20, warmup_jobs=5)


Skipped = common.Skipped


# -- child processes ----------------------------------------------------------

class Child:
    """A child process with its output in a log file, stopped by PID."""

    def __init__(self, argv: Sequence[str], logpath: str,
                 cwd: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.logpath = logpath
        self.log = open(logpath, 'wb')
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=cwd or common.project_root(),
            env=env or common.python_env())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError('child %s exited with %s; log tail:\n%s'
                               % (self.pid, self.proc.returncode, self.tail()))

    def tail(self, n: int = 2000) -> str:
        try:
            with open(self.logpath, 'rb') as f:
                return f.read()[-n:].decode('utf-8', 'replace')
        except OSError:
            return ''

    def stop(self, timeout: float = 5.0) -> int:
        try:
            return common.stop_process(self.proc, timeout)
        finally:
            self.log.close()


def python_child(args: List[str], logpath: str) -> Child:
    return Child([sys.executable, '-m', 'benchmarks._peer_jobs'] + args,
                 logpath)


def gaps(n: int, lo: float, hi: float, seed: int = 1) -> List[float]:
    rnd = random.Random(seed)
    return [rnd.uniform(lo, hi) for _ in range(n)]


def _wait(pred: Callable[[], Any], timeout: float, what: str,
          children: Sequence[Child] = (), interval: float = 0.002) -> Any:
    def check() -> Any:
        for c in children:
            c.check_alive()
        return pred()
    return common.wait_until(check, timeout, interval, what)


def throughput(put: Callable[[], Any], done_count: Callable[[], int],
                jobs: int, rounds: int, children: Sequence[Child],
                timeout: float, what: str,
                after_round: Optional[Callable[[List[Any]], Any]] = None
                ) -> Result:
    """``rounds`` times: put ``jobs`` jobs with ``put()`` as fast as possible,
    then wait until ``done_count()`` has grown by ``jobs``.  Reports the
    median round (and every round's rate, to show the noise)."""
    per_round = []
    for i in range(rounds):
        base = done_count()
        t0 = time.perf_counter()
        handles = [put() for _ in range(jobs)]
        t_put = time.perf_counter()
        _wait(lambda: done_count() >= base + jobs, timeout,
              '%s results (round %d)' % (what, i + 1), children)
        t1 = time.perf_counter()
        if after_round is not None:
            after_round(handles)
        per_round.append({'seconds': t1 - t0, 'put_seconds': t_put - t0,
                          'jobs_per_s': jobs / (t1 - t0)})
    per_round_sorted = sorted(per_round, key=lambda r: r['jobs_per_s'])
    med = per_round_sorted[len(per_round_sorted) // 2]
    return {
        'jobs': jobs,
        'rounds': rounds,
        'jobs_per_s': round(med['jobs_per_s'], 1),
        'seconds': round(med['seconds'], 4),
        'put_seconds': round(med['put_seconds'], 4),
        'jobs_per_s_rounds': [round(r['jobs_per_s'], 1) for r in per_round],
    }


def pickup(put: Callable[[], Any], is_done: Callable[[Any], bool],
            started_at_of: Callable[[Any], float], gaps: Sequence[float],
            children: Sequence[Child], timeout: float, what: str) -> Result:
    """Pick-up latency as every peer row defines it: put one job, wait
    until it is done, sleep the next idle gap.  Latency = the job's start
    (``started_at_of(handle)``) - the moment the put call returned; the
    put call's own duration is kept apart (``put_call``)."""
    latency, put_cost = [], []
    deadline = time.monotonic() + timeout
    for gap in gaps:
        if time.monotonic() > deadline:
            break
        before = time.time()
        handle = put()
        after = time.time()
        _wait(lambda: is_done(handle), timeout,
              '%s job %s' % (what, handle.id), children, interval=0.0005)
        latency.append(started_at_of(handle) - after)
        put_cost.append(after - before)
        time.sleep(gap)
    return {'pickup': common.latency_summary(latency),
            'put_call': common.latency_summary(put_cost)}


# -- Huey -------------------------------------------------------------------

def run_huey(params: Params = DEFAULTS) -> Result:
    """Huey with SqliteHuey and one consumer process running
    ``huey_threads`` worker threads (huey's default polling: 0.1 s,
    backoff 1.15)."""
    threads, warmup_jobs = params['huey_threads'], params['warmup_jobs']
    phase_timeout_s = params['phase_timeout_s']
    try:
        import huey  # noqa: F401
    except ImportError:
        raise Skipped('huey is not installed; ' + PIP_INSTALL_HINT)
    from benchmarks._peer_jobs import make_huey

    tmp = tempfile.mkdtemp(prefix='bench-huey-')
    consumer = None
    try:
        dbfile = os.path.join(tmp, 'huey.db')
        hy, task = make_huey(dbfile)
        storage = hy.storage
        consumer = python_child(['huey', dbfile, str(threads)],
                                 os.path.join(tmp, 'consumer.log'))

        def results_in(rs: List[Any]) -> List[Any]:
            # pop each stored result (non-blocking) and check it is there
            vals = []
            for r in rs:
                v = r.get()   # non-blocking; pops the result
                if v is None:
                    raise RuntimeError('huey result missing for %s' % r.id)
                vals.append(v)
            return vals

        # warm-up: consumer imported, threads running, SQLite file hot
        warm = [task() for _ in range(warmup_jobs)]
        _wait(lambda: storage.result_store_size() >= warmup_jobs,
              phase_timeout_s, 'huey warm-up', [consumer])
        results_in(warm)

        # throughput (results_in pops the results: the store is empty
        # again at the start of each round)
        tput = throughput(task, storage.result_store_size,
                           params['huey_jobs'], params['rounds'],
                           [consumer], phase_timeout_s, 'huey',
                           after_round=results_in)

        latency = pickup(
            task, lambda r: storage.has_data_for_key(r.id),
            lambda r: r.get(), gaps(params['latency_jobs'],
                                     params['gap_min_s'],
                                     params['gap_max_s']),
            [consumer], phase_timeout_s, 'huey')
        return dict(
            latency, name='Huey SqliteHuey, 1 consumer x %d threads' % threads,
            system='huey', workers=threads, throughput=tput)
    finally:
        if consumer is not None:
            consumer.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# -- RQ ---------------------------------------------------------------------

class RedisServer:
    """redis-server on 127.0.0.1 and a free port, in a temp dir, with its
    default persistence (RDB snapshots there, no AOF: what a queue on an
    out-of-the-box Redis has); stopped by PID."""

    def __init__(self, timeout: float = 10.0) -> None:
        binary = shutil.which('redis-server')
        if not binary:
            raise Skipped('redis-server not found on PATH; install it with: '
                          + REDIS_INSTALL_HINT)
        self.binary = binary
        self.timeout = timeout
        self.child: Optional[Child] = None
        self.tmp: Optional[str] = None

    def __enter__(self) -> 'RedisServer':
        from redis import Redis
        self.tmp = tempfile.mkdtemp(prefix='bench-redis-')
        self.port = common.free_port()
        try:
            self.child = Child(
                [self.binary, '--bind', '127.0.0.1', '--port', str(self.port),
                 '--appendonly', 'no', '--daemonize', 'no',
                 '--dir', self.tmp],
                os.path.join(self.tmp, 'redis.log'))
            self.url = 'redis://127.0.0.1:%d/0' % self.port
            conn = Redis.from_url(self.url, socket_connect_timeout=1)

            def ping() -> bool:
                try:
                    return conn.ping()
                except Exception:
                    return False
            _wait(ping, self.timeout, 'redis-server to answer', [self.child],
                  interval=0.02)
            self.version = conn.info().get('redis_version')
            self.save = conn.config_get('save').get('save')
            conn.close()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _rq_one(url: str, n_workers: int, params: Params, tmp: str) -> Result:
    """RQ with ``n_workers`` SimpleWorker processes on one queue (its
    client side is morepeers.RQ, which the live rows use too)."""
    from rq import Queue, Worker
    from benchmarks.morepeers import RQ
    phase_timeout_s = params['phase_timeout_s']
    qname = 'bench-%dw' % n_workers
    workers: List[Child] = []
    peer = None
    try:
        for i in range(n_workers):
            workers.append(python_child(
                ['rq', url, qname],
                os.path.join(tmp, 'worker-%d-%d.log' % (n_workers, i))))
        peer = RQ(url, workers, qname)
        queue = Queue(qname, connection=peer.conn)
        _wait(lambda: Worker.count(queue=queue) >= n_workers,
              phase_timeout_s, 'rq workers to register', workers,
              interval=0.02)
        peer.warm_up(params['warmup_jobs'], phase_timeout_s)
        tput = throughput(peer.put_tracked, peer.done_count,
                          params['rq_jobs'], params['rounds'], workers,
                          phase_timeout_s, 'rq',
                          after_round=lambda js: [peer.started_at(j)
                                                  for j in js])
        latency = pickup(
            peer.put_tracked, peer.is_done, peer.started_at,
            gaps(params['latency_jobs'], params['gap_min_s'],
                 params['gap_max_s']), workers, phase_timeout_s, 'rq')
        return dict(
            latency, name='RQ Redis, %d SimpleWorker process%s'
            % (n_workers, '' if n_workers == 1 else 'es'),
            system='rq', workers=n_workers, persistence=peer.persistence,
            throughput=tput)
    finally:
        if peer is not None:
            peer.close()
        for w in workers:
            w.stop()


def run_rq(params: Params = DEFAULTS) -> List[Result]:
    """RQ against a private redis-server, once per worker count
    (``rq_workers``); returns a list of result dicts (one per count)."""
    try:
        import redis  # noqa: F401
        import rq  # noqa: F401
    except ImportError:
        raise Skipped('rq/redis are not installed; ' + PIP_INSTALL_HINT)
    out = []
    with RedisServer() as server:
        tmp = tempfile.mkdtemp(prefix='bench-rq-')
        try:
            for n in params['rq_workers']:
                r = _rq_one(server.url, n, params, tmp)
                r['redis_server'] = server.version
                out.append(r)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# -- the whole run ----------------------------------------------------------

def run(params: Optional[Params] = None,
        only: Sequence[str] = ('raw', 'huey', 'rq'),
        log: Callable[[str], None] = print) -> Result:
    """Run the selected benchmarks; return one JSON-able dict."""
    p = dict(DEFAULTS, **(params or {}))
    started = time.time()
    out: Result = {
        'machine': common.machine_description(),
        'started': time.strftime('%Y-%m-%dT%H:%M:%S%z',
                                 time.localtime(started)),
        'params': {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in p.items()},
        'raw_storage': {},
        'peers': [],
        'skipped': {},
        'errors': {},
    }

    def attempt(key: str, measure: Callable[[], Any]) -> Any:
        return common.attempt(out, key, measure, log)

    if 'raw' in only:
        r = attempt('raw', lambda: raw_storage.run_all(
            p['raw_commits'], p['phase_timeout_s'], p['rounds']))
        if r:
            out['raw_storage'] = r
    if 'huey' in only:
        r = attempt('huey', lambda: run_huey(p))
        if r:
            out['peers'].append(r)
    if 'rq' in only:
        r = attempt('rq', lambda: run_rq(p))
        if r:
            out['peers'].extend(r)
    out['duration_s'] = round(time.time() - started, 1)
    return out


def print_skips(result: Result, file: Optional[IO[str]] = None) -> None:
    """Below a table: what was skipped and why, what failed."""
    for key, why in sorted(result.get('skipped', {}).items()):
        print('skipped %s: %s' % (key, why), file=file)
    for key, why in sorted(result.get('errors', {}).items()):
        print('ERROR %s: %s' % (key, why), file=file)


def print_report(result: Result, file: Optional[IO[str]] = None) -> None:
    raw = result.get('raw_storage', {}).get('modify')
    raw_rate = raw['commits_per_s'] if raw else None
    headers = ['benchmark', 'n', 'per s', 'x raw FS', 'pickup p50 ms',
               'pickup p95 ms']
    rows = []
    for r in result.get('raw_storage', {}).values():
        rows.append([r['name'], r['commits'], r['commits_per_s'],
                     round(r['commits_per_s'] / raw_rate, 2)
                     if raw_rate else None, None, None])
    for r in result.get('peers', []):
        t, pk = r['throughput'], r['pickup']
        rows.append([r['name'], t['jobs'], t['jobs_per_s'],
                     round(t['jobs_per_s'] / raw_rate, 2)
                     if raw_rate else None,
                     pk.get('p50_ms'), pk.get('p95_ms')])
    common.print_table(headers, rows, out=file)
    print_skips(result, file)
    print('machine: ' + common.describe_machine(result['machine']),
          file=file)
    print('total %.1f s' % result['duration_s'], file=file)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description='Peer (Huey, RQ) and raw FileStorage benchmarks.')
    ap.add_argument('--quick', action='store_true',
                    help='small counts, for a smoke test (figures noisy)')
    ap.add_argument('--only', default='raw,huey,rq',
                    help='comma-separated subset of raw,huey,rq')
    ap.add_argument('--json', default=None,
                    help='output path (default benchmarks/results/peers.json)')
    args = ap.parse_args(argv)
    params = QUICK if args.quick else DEFAULTS
    only = tuple(s.strip() for s in args.only.split(',') if s.strip())
    result = run(params, only, log=common.log_to_stderr)
    print_report(result)
    print('wrote %s' % common.write_result('peers', result, args.json))
    return 1 if result['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
