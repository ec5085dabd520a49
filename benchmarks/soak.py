"""Soak test: N jobs over a real ZEO server while dispatchers are killed.

    python -m benchmarks.soak --jobs 2000 --seconds 60 [--workers 3]
                              [--death 2] [--seed 1] [--json PATH] [--keep]
                              [--steady 1] [--pack-every 60]
                              [--history-size 1000] [--web]

The long form (issue: chaos suite), 4 workers for 30 minutes:

    python -m benchmarks.soak --workers 4 --seconds 1800 --jobs 36000 \
        --json benchmarks/results/soak-30min-DATE.json

Run it from the project root. The script starts ``runzeo`` (FileStorage) on
127.0.0.1 and a free port and ``--workers`` dispatcher-only processes
(``python -m benchmarks.soakprocs --worker ...``), each with its own UUID
file. For ``--seconds`` it puts the ``--jobs`` jobs at an even pace and,
every 2-5 s (random, ``--seed``), kills one live worker with SIGKILL (never
the ``--steady`` first ones, nor the last one alive), notes the jobs the
database says it held, and restarts it with the same UUID after a random
0-2x ``--death`` seconds: so some of its jobs are recovered by its restart,
some by a sibling that finds it dead after ``ping_death_interval``
(``--death``) of silence. Then every dead worker is restarted and the queue
drained (bounded).

The producer puts in batches every 0.1 s, in transactions of its own or,
with ``--web``, through HTTP requests to a Pyramid app under waitress
(``benchmarks/soakweb.py``, no dispatcher), as a site's requests would.

Each job appends a line to a shared file (so re-runs of interrupted jobs
are counted) and adds 1 to ``done[key]`` in ZODB: a key at 0 is a lost
job, above 1 a duplicate.  70 % of the jobs do nothing else (they may be
committed in groups), 30 % sleep 20-60 ms first (so kills catch jobs
running).  Printed and written to ``benchmarks/results/soak.json``:

- jobs put, completed, failed, lost, duplicated; runs (more runs than
  jobs: conflict retries, and jobs interrupted by a kill run again);
- per kill: the jobs the killed worker held, whether its restart or a
  sibling recovered them, how long after the kill a sibling found it dead,
  and the recovery time: from the kill until every job it held is
  COMPLETED (it includes the restart delay when the restart came first);
- max and median recovery time;
- the memory of the workers never killed (settled after a tenth of the
  run, at the end, at most) and the database's size after each pack
  (every ``--pack-every`` s; agents keep ``--history-size`` completed jobs
  each), which stay flat when nothing leaks (benchmarks/soakwatch.py).

Children are stopped by PID (SIGTERM, then SIGKILL), everything listens on
127.0.0.1 only, every wait is bounded, and the temporary directory is
removed unless ``--keep``.  Exit status 1 if a job was lost, duplicated or
failed.
"""
import argparse
import importlib
import os
import random
import sys
import tempfile
import threading
import time
from typing import (IO, Any, Callable, Dict, List, Optional, Sequence,
                    Tuple)

from benchmarks import common, dispatchers, soakcheck
from benchmarks.soakprocs import WebProducer, Worker
from benchmarks.soakweb import post_jobs
from benchmarks.soakwatch import ResourceWatch
from benchmarks.zeo import ZEOServer
from pyramid_zcasync.interfaces import ACTIVE, COMPLETED

DEFAULTS = {
    'jobs': 2000,
    'seconds': 60.0,
    'workers': 3,
    'poll_interval': 0.5,
    'ping_interval': 0.3,
    'death': 2.0,              # ping_death_interval, seconds
    'agent_size': 3,
    'kill_every': (2.0, 5.0),  # seconds between kills, uniform
    'slow_share': 0.3,         # jobs that sleep first
    'slow_ms': (20, 60),
    'drain_timeout_s': 120.0,
    'start_timeout_s': 30.0,
    'history_size': 1000,      # completed jobs each agent keeps
    'steady': 1,               # workers never killed: their memory is watched
    'pack_every': 60.0,        # seconds between packs of the database
    'web': False,              # put through HTTP requests (soakweb.py)
    'job_history': None,       # in-memory job records (None: the package's)
}


# -- reading the database --------------------------------------------------

class Reader:
    """One connection of this process, a fresh transaction per look."""

    def __init__(self, db: Any) -> None:
        import transaction
        self.manager = transaction.TransactionManager()
        self.connection = db.open(transaction_manager=self.manager)

    def root(self) -> Any:
        self.manager.begin()
        return self.connection.root()

    def held(self, uuid: str) -> Dict[bytes, str]:
        """{oid: status} of the unfinished jobs in ``uuid``'s agents."""
        from pyramid_zcasync.interfaces import COMPLETED, IQueue
        registration = IQueue(self.root()).dispatchers.get(uuid)
        if registration is None:
            return {}
        return {job._p_oid: job.status for agent in registration.values()
                for job in agent if job.status != COMPLETED}

    def statuses(self, oids: Sequence[bytes]) -> List[str]:
        self.root()
        return [self.connection.get(oid).status for oid in oids]

    def activated(self, uuid: str) -> bool:
        from pyramid_zcasync.interfaces import IQueue
        return IQueue(self.root()).dispatchers[uuid].activated is not None

    def close(self) -> None:
        self.manager.abort()
        self.connection.close()


# -- the run -----------------------------------------------------------------

Batch = Sequence[Tuple[str, float]]   # [(key, sleep seconds)]


class DirectPuts:
    """Puts in this process, one transaction per batch: ``puts(batch)``
    gives the jobs' oids or raises (a conflict: the caller tries again)."""

    def __init__(self, db: Any, runs_log: str) -> None:
        import transaction
        self.manager = transaction.TransactionManager()
        self.connection = db.open(transaction_manager=self.manager)
        self.runs_log = runs_log

    def __call__(self, batch: Batch) -> List[bytes]:
        from pyramid_zcasync.interfaces import IQueue
        job_function = importlib.import_module(
            'benchmarks.soakprocs').soak_job
        try:
            self.manager.begin()
            root = self.connection.root()
            queue = IQueue(root)
            jobs = [queue.put(job_function, root['soak_done'], key, sleep,
                              self.runs_log) for key, sleep in batch]
            self.manager.commit()
        except Exception:
            self.manager.abort()
            raise
        return [job._p_oid for job in jobs]

    def close(self) -> None:
        self.manager.abort()
        self.connection.close()


def producer(puts: Callable[[Batch], List[bytes]], plan: Batch,
             seconds: float, stop: threading.Event,
             put_oids: List[Tuple[str, bytes]], errors: List[str]) -> None:
    """Put ``plan`` evenly over ``seconds`` through ``puts``."""
    started = time.monotonic()
    step = 0.1
    batches = max(int(seconds / step), 1)
    per_batch = -(-len(plan) // batches)
    for index in range(0, len(plan), per_batch):
        if stop.is_set():
            break
        wait = started + (index // per_batch) * step - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        batch = plan[index:index + per_batch]
        for attempt in range(20):
            try:
                oids = puts(batch)
            except Exception as exc:  # a conflict: put the batch again
                errors.append(repr(exc))
                time.sleep(0.05)
                continue
            put_oids.extend(zip((key for key, _ in batch), oids))
            break


class Soak:
    """One soak: the ZEO server, the workers, the jobs put, and the
    record of every kill and of what became of the jobs it held."""

    def __init__(self, params: Dict[str, Any]) -> None:
        self.params = params
        self.rng = random.Random(params['seed'])
        self.directory = tempfile.mkdtemp(prefix='zcasync-soak-')
        self.runs_log = os.path.join(self.directory, 'runs.log')
        self.server = ZEOServer(self.directory,
                                timeout=params['start_timeout_s'])
        self.workers: List[Worker] = []
        self.db: Any = None
        self.reader: Optional[Reader] = None
        self.kills: List[soakcheck.Kill] = []
        self.open_kills: List[soakcheck.Kill] = []
        self.restarts: List[Tuple[float, Worker]] = []   # (when, worker)
        self.put_oids: List[soakcheck.PutJob] = []
        self.put_errors: List[str] = []
        self.web: Optional[WebProducer] = None

    def start(self) -> ResourceWatch:
        """The server, the counting tree, every worker ready."""
        import BTrees.OOBTree
        import transaction
        import ZEO

        import pyramid_zcasync
        p = self.params
        self.server.start()
        self.db = ZEO.DB(('127.0.0.1', self.server.port), wait_timeout=30)
        pyramid_zcasync.install_queues(self.db)
        connection = self.db.open()
        with transaction.manager:
            connection.root()['soak_done'] = BTrees.OOBTree.OOBTree()
        connection.close()
        self.workers = [Worker('w%d' % i, self.directory, self.server.port, p)
                        for i in range(p['workers'])]
        for worker in self.workers:
            worker.start()
        for worker in self.workers:
            if not worker.ready.wait(p['start_timeout_s']):
                raise RuntimeError('worker %s did not start; see %s'
                                   % (worker.name, worker.log))
        self.reader = Reader(self.db)
        if p['web']:
            self.web = WebProducer(self.directory, self.server.port)
        return ResourceWatch(self.db, self.server.path,
                             self.workers[:p['steady']],
                             pack_every=p['pack_every'])

    @property
    def look(self) -> Reader:
        if self.reader is None:
            raise RuntimeError('the soak has not started')
        return self.reader

    def plan(self) -> List[Tuple[str, float]]:
        """[(key, seconds the job sleeps)], a share of them slow."""
        p = self.params
        plan = []
        for i in range(p['jobs']):
            slow = self.rng.random() < p['slow_share']
            plan.append(('j%06d' % i, self.rng.uniform(*p['slow_ms']) / 1000
                         if slow else 0.0))
        return plan

    def watch(self, now: float) -> None:
        """Restart the workers whose time has come; note the kills whose
        jobs are all done, and those a sibling found dead."""
        for worker_when in list(self.restarts):
            when, worker = worker_when
            if now >= when:
                worker.start()
                self.restarts.remove(worker_when)
                record = next(k for k in reversed(self.kills)
                              if k['worker'] == worker.name)
                record['restarted_after_s'] = round(
                    now - record['_killed'], 3)
        for record in list(self.open_kills):
            if record['_detected'] is None and \
                    'restarted_after_s' not in record and \
                    not self.look.activated(record['uuid']):
                record['_detected'] = now  # a sibling found it dead
            if record['recovery_s'] is None and all(
                    s == COMPLETED
                    for s in self.look.statuses(record['_held'])):
                record['recovery_s'] = round(now - record['_killed'], 3)
            if record['recovery_s'] is not None and (
                    record['_detected'] is not None
                    or 'restarted_after_s' in record):
                self.open_kills.remove(record)

    def kill_one(self, started: float) -> None:
        """SIGKILL a live worker (never a steady one, nor the last one
        alive), note what it held, and plan its restart."""
        p = self.params
        live = [w for w in self.workers if w.alive and w.ready.is_set()
                and not any(r[1] is w for r in self.restarts)]
        steady = self.workers[:p['steady']]
        live = [w for w in live if w not in steady]
        if len(live) <= (0 if steady else 1):
            return
        victim = self.rng.choice(live)
        victim.kill()
        killed = time.monotonic()
        held = self.look.held(victim.uuid)
        delay = self.rng.uniform(0, 2 * p['death'])
        self.restarts.append((killed + delay, victim))
        record: soakcheck.Kill = {
            'at_s': round(killed - started, 3),
            'worker': victim.name, 'uuid': victim.uuid,
            'held': len(held),
            'held_active': sum(1 for s in held.values() if s == ACTIVE),
            'restart_delay_s': round(delay, 3),
            'recovery_s': None if held else 0.0,
            '_killed': killed, '_held': list(held), '_detected': None}
        self.kills.append(record)
        self.open_kills.append(record)

    def kill_for_a_while(self, started: float,
                         resources: ResourceWatch) -> None:
        """Kill a worker every ``kill_every`` seconds until ``seconds``
        after ``started``, watching recoveries and resources."""
        p = self.params
        next_kill = started + self.rng.uniform(*p['kill_every'])
        end = started + p['seconds']
        while time.monotonic() < end:
            now = time.monotonic()
            self.watch(now)
            resources.tick(now)
            if now >= next_kill:
                self.kill_one(started)
                next_kill = now + self.rng.uniform(*p['kill_every'])
            time.sleep(0.05)

    def drain(self) -> None:
        """Restart the dead now; wait (bounded) until every job is done
        and every kill is settled."""
        drain_end = time.monotonic() + self.params['drain_timeout_s']
        while time.monotonic() < drain_end:
            now = time.monotonic()
            for _, worker in list(self.restarts):
                self.restarts.remove((_, worker))
                self.restarts.append((now, worker))
            self.watch(now)
            done_count = len(self.look.root()['soak_done'])
            if (not self.open_kills and not self.restarts
                    and done_count >= len(self.put_oids)):
                break
            time.sleep(0.1)

    def puts(self) -> Callable[[Batch], List[bytes]]:
        """How the producer puts a batch: an HTTP request to the web
        producer (``--web``), or a transaction of this process."""
        if self.web is not None:
            port = self.web.port
            return lambda batch: post_jobs(port, batch, self.runs_log)
        return DirectPuts(self.db, self.runs_log)

    def close(self, keep: bool) -> None:
        children = self.workers + ([self.web] if self.web else [])
        dispatchers.shut_down(children, self.reader, self.db,
                              self.server, None if keep else self.directory)


def run(params: Dict[str, Any], keep: bool = False,
        out: IO[str] = sys.stdout) -> Dict[str, Any]:
    soak = Soak(params)
    stop = threading.Event()
    try:
        resources = soak.start()
        plan = soak.plan()
        puts = soak.puts()
        feeding = threading.Thread(target=producer, args=(
            puts, plan, params['seconds'], stop, soak.put_oids,
            soak.put_errors))
        started = time.monotonic()
        feeding.start()
        print('soak: %d jobs over %.0f s, %d workers, kill -9 every %s s, '
              'ping_death_interval %s s' % (
                  params['jobs'], params['seconds'], params['workers'],
                  '-'.join('%g' % s for s in params['kill_every']),
                  params['death']), file=out, flush=True)
        soak.kill_for_a_while(started, resources)
        feeding.join(params['seconds'] + 30)
        stop.set()
        if isinstance(puts, DirectPuts):
            puts.close()
        soak.drain()
        summary, lost, duplicated = soakcheck.summarise(
            soak.look, soak.put_oids, soak.runs_log, soak.kills,
            time.monotonic() - started, len(soak.put_errors))
        return {'parameters': dict(params), 'summary': summary,
                'resources': resources.summary(), 'kills': soak.kills,
                'lost_keys': lost[:20], 'duplicated_keys': duplicated[:20],
                'machine': common.machine_description(
                    ('ZODB', 'ZEO', 'persistent', 'transaction')),
                'directory': soak.directory if keep else None}
    finally:
        stop.set()  # Ctrl-C: the producer thread must not outlive the soak
        soak.close(keep)


def report(result: Dict[str, Any], out: IO[str] = sys.stdout) -> None:
    s = result['summary']
    print('jobs put %d, completed %d, failed %d' % (
        s['jobs_put'], s['jobs_completed'], s['jobs_failed']), file=out)
    print('jobs lost: %d (unfinished when the drain ended: %d)' % (
        s['jobs_lost'], s.get('jobs_unfinished', 0)), file=out)
    print('duplicates: %d' % s['jobs_duplicated'], file=out)
    print('max recovery time: %s s (median %s s, over %d kills holding '
          'jobs; %d kills in all)' % (
              common.fmt(s['max_recovery_s']),
              common.fmt(s['median_recovery_s']), s['kills_holding_jobs'],
              s['kills']), file=out)
    print('found dead by a sibling after at most %s s; %d runs, %d more '
          'than jobs (conflict retries, and interrupted jobs run again); '
          '%.1f s in all' % (
              common.fmt(s['max_found_dead_after_s']), s['runs'],
              s['extra_runs'], s['elapsed_s']), file=out)
    if s['unfinished_statuses'] or s['failures'] or s['unrecovered_kills']:
        print('unfinished %s; failures %s; unrecovered kills %d' % (
            s['unfinished_statuses'], s['failures'], s['unrecovered_kills']),
            file=out)
    resources = result.get('resources') or {}
    for name, memory in sorted(resources.get('memory', {}).items()):
        print('worker %s (never killed): %s MB settled, %s MB at the end, '
              '%s MB at most' % (name, memory['settled_mb'],
                                 memory['last_mb'], memory['max_mb']),
              file=out)
    sizes = resources.get('db_mb_after_packs') or {}
    if sizes.get('last') is not None:
        print('database after each pack: %s MB first, %s MB median, %s MB '
              'last (%d packs)' % (sizes['first'], sizes['median'],
                                   sizes['last'], len(resources['packs'])),
              file=out)
    rows = [[k['at_s'], k['worker'], k['held'], k['held_active'],
             k['restart_delay_s'], k['recovered_by'] or '-',
             k['found_dead_after_s'], k['recovery_s']]
            for k in result['kills']]
    if rows:
        common.print_table(['kill at s', 'worker', 'held', 'active',
                            'restart after s', 'recovered by',
                            'found dead s', 'recovery s'], rows, out=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks.soak',
        description=__doc__.split('\n\n')[0])
    parser.add_argument('--jobs', type=int, default=DEFAULTS['jobs'])
    parser.add_argument('--seconds', type=float, default=DEFAULTS['seconds'])
    parser.add_argument('--workers', type=int, default=DEFAULTS['workers'])
    parser.add_argument('--death', type=float, default=DEFAULTS['death'],
                        help='ping_death_interval of the workers (s)')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--steady', type=int, default=DEFAULTS['steady'],
                        help='workers never killed (their memory is watched)')
    parser.add_argument('--pack-every', type=float,
                        default=DEFAULTS['pack_every'],
                        help='seconds between packs (0: never)')
    parser.add_argument('--history-size', type=int,
                        default=DEFAULTS['history_size'],
                        help='completed jobs each agent keeps')
    parser.add_argument('--job-history', type=int, default=None,
                        help='in-memory job records each dispatcher keeps '
                        '(default: the package\'s 10,000; smaller fills '
                        'within a shorter soak, to show the memory after)')
    parser.add_argument('--json', help='where to write the JSON (default '
                        'benchmarks/results/soak.json)')
    parser.add_argument('--web', action='store_true',
                        help='put the jobs through HTTP requests to a '
                        'Pyramid app under waitress (benchmarks/soakweb.py)')
    parser.add_argument('--keep', action='store_true',
                        help='keep the temporary directory (logs, zeo.fs)')
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error('--workers must be at least 2 (one is always alive)')
    if not 0 <= args.steady < args.workers:
        parser.error('--steady must be from 0 to --workers - 1 (some worker '
                      'must be killed), got %d' % args.steady)
    params = dict(DEFAULTS, jobs=args.jobs, seconds=args.seconds,
                  workers=args.workers, death=args.death, seed=args.seed,
                  steady=args.steady, pack_every=args.pack_every,
                  history_size=args.history_size, web=args.web,
                  job_history=args.job_history)
    result = run(params, keep=args.keep)
    report(result)
    path = common.write_result('soak', result, args.json)
    print('written to %s' % path)
    if result['directory']:
        print('kept %s' % result['directory'])
    s = result['summary']
    bad = (s['jobs_lost'] or s['jobs_unfinished'] or s['jobs_duplicated']
           or s['jobs_failed'] or s['unrecovered_kills'])
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
