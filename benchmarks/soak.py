"""Soak test: N jobs over a real ZEO server while dispatchers are killed.

    python -m benchmarks.soak --jobs 2000 --seconds 60 [--workers 3]
                              [--death 2] [--seed 1] [--json PATH] [--keep]
                              [--steady 1] [--pack-every 60]
                              [--history-size 1000]

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
import collections
import importlib
import os
import random
import sys
import tempfile
import threading
import time
from typing import IO, Any, Counter, Dict, List, Optional, Sequence, Tuple

from benchmarks import common, dispatchers
from benchmarks.soakprocs import Worker, ZEOServer
from benchmarks.soakwatch import ResourceWatch

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

def producer(db: Any, plan: Sequence[Tuple[str, float]], runs_log: str,
             seconds: float, stop: threading.Event,
             put_oids: List[Tuple[str, bytes]], errors: List[str]) -> None:
    """Put ``plan`` ([(key, sleep seconds)]) evenly over ``seconds``."""
    import transaction

    from pyramid_zcasync.interfaces import IQueue
    job_function = importlib.import_module('benchmarks.soakprocs').soak_job
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    started = time.monotonic()
    step = 0.1
    batches = max(int(seconds / step), 1)
    per_batch = -(-len(plan) // batches)
    try:
        for index in range(0, len(plan), per_batch):
            if stop.is_set():
                break
            wait = started + (index // per_batch) * step - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            batch = plan[index:index + per_batch]
            for attempt in range(20):
                try:
                    manager.begin()
                    root = connection.root()
                    queue = IQueue(root)
                    jobs = [queue.put(job_function, root['soak_done'], key,
                                      sleep, runs_log)
                            for key, sleep in batch]
                    manager.commit()
                    put_oids.extend((key, job._p_oid)
                                    for (key, _), job in zip(batch, jobs))
                    break
                except Exception as exc:  # a conflict: put the batch again
                    manager.abort()
                    errors.append(repr(exc))
                    time.sleep(0.05)
    finally:
        manager.abort()
        connection.close()


def run(params: Dict[str, Any], keep: bool = False,
        out: IO[str] = sys.stdout) -> Dict[str, Any]:
    import BTrees.OOBTree
    import transaction
    import ZEO

    from ZODB.POSException import POSKeyError

    import pyramid_zcasync
    from pyramid_zcasync.failure import Failure
    from pyramid_zcasync.interfaces import ACTIVE, COMPLETED

    rng = random.Random(params['seed'])
    directory = tempfile.mkdtemp(prefix='zcasync-soak-')
    runs_log = os.path.join(directory, 'runs.log')
    server = ZEOServer(directory)
    workers: List[Worker] = []
    db: Any = None
    reader: Optional[Reader] = None
    kills: List[Dict[str, Any]] = []
    try:
        server.start(params['start_timeout_s'])
        db = ZEO.DB(('127.0.0.1', server.port), wait_timeout=30)
        pyramid_zcasync.install_queues(db)
        connection = db.open()
        with transaction.manager:
            connection.root()['soak_done'] = BTrees.OOBTree.OOBTree()
        connection.close()
        workers = [Worker('w%d' % i, directory, server.port, params)
                   for i in range(params['workers'])]
        for worker in workers:
            worker.start()
        for worker in workers:
            if not worker.ready.wait(params['start_timeout_s']):
                raise RuntimeError('worker %s did not start; see %s'
                                   % (worker.name, worker.log))
        reader = Reader(db)
        resources = ResourceWatch(db, server.path,
                                  workers[:params['steady']],
                                  pack_every=params['pack_every'])

        plan = []
        for i in range(params['jobs']):
            slow = rng.random() < params['slow_share']
            plan.append(('j%06d' % i, rng.uniform(*params['slow_ms']) / 1000
                         if slow else 0.0))
        put_oids: List[Tuple[str, bytes]] = []
        put_errors: List[str] = []
        stop = threading.Event()
        feeding = threading.Thread(target=producer, args=(
            db, plan, runs_log, params['seconds'], stop, put_oids,
            put_errors))
        started = time.monotonic()
        feeding.start()
        print('soak: %d jobs over %.0f s, %d workers, kill -9 every %s s, '
              'ping_death_interval %s s' % (
                  params['jobs'], params['seconds'], params['workers'],
                  '-'.join('%g' % s for s in params['kill_every']),
                  params['death']), file=out, flush=True)

        # -- kill, restart, watch recoveries, for ``seconds`` ----------
        next_kill = started + rng.uniform(*params['kill_every'])
        restarts: List[Tuple[float, Worker]] = []  # (when, worker)
        open_kills: List[Dict[str, Any]] = []
        end = started + params['seconds']

        def watch(now: float) -> None:
            for worker_when in list(restarts):
                when, worker = worker_when
                if now >= when:
                    worker.start()
                    restarts.remove(worker_when)
                    record = next(k for k in reversed(kills)
                                  if k['worker'] == worker.name)
                    record['restarted_after_s'] = round(
                        now - record['_killed'], 3)
            for record in list(open_kills):
                if record['_detected'] is None and \
                        'restarted_after_s' not in record and \
                        not reader.activated(record['uuid']):
                    record['_detected'] = now  # a sibling found it dead
                if record['recovery_s'] is None and all(
                        s == COMPLETED
                        for s in reader.statuses(record['_held'])):
                    record['recovery_s'] = round(now - record['_killed'], 3)
                if record['recovery_s'] is not None and (
                        record['_detected'] is not None
                        or 'restarted_after_s' in record):
                    open_kills.remove(record)

        while time.monotonic() < end:
            now = time.monotonic()
            watch(now)
            resources.tick(now)
            if now >= next_kill:
                live = [w for w in workers if w.alive and w.ready.is_set()
                        and not any(r[1] is w for r in restarts)]
                steady = workers[:params['steady']]
                live = [w for w in live if w not in steady]
                if len(live) > (0 if steady else 1):
                    victim = rng.choice(live)
                    victim.kill()
                    killed = time.monotonic()
                    held = reader.held(victim.uuid)
                    delay = rng.uniform(0, 2 * params['death'])
                    restarts.append((killed + delay, victim))
                    record: Dict[str, Any] = {
                        'at_s': round(killed - started, 3),
                        'worker': victim.name, 'uuid': victim.uuid,
                        'held': len(held),
                        'held_active': sum(1 for s in held.values()
                                           if s == ACTIVE),
                        'restart_delay_s': round(delay, 3),
                        'recovery_s': None if held else 0.0,
                        '_killed': killed, '_held': list(held),
                        '_detected': None}
                    kills.append(record)
                    open_kills.append(record)
                next_kill = now + rng.uniform(*params['kill_every'])
            time.sleep(0.05)

        # -- restart the dead, drain ------------------------------------
        feeding.join(params['seconds'] + 30)
        stop.set()
        drain_end = time.monotonic() + params['drain_timeout_s']
        while time.monotonic() < drain_end:
            now = time.monotonic()
            for _, worker in list(restarts):
                restarts.remove((_, worker))
                restarts.append((now, worker))
            watch(now)
            done_count = len(reader.root()['soak_done'])
            if (not open_kills and not restarts
                    and done_count >= len(put_oids)):
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started

        # -- check ------------------------------------------------------
        root = reader.root()
        done = dict(root['soak_done'])
        statuses: Counter[str] = collections.Counter()
        failures: Counter[str] = collections.Counter()
        for key, oid in put_oids:
            try:
                job = reader.connection.get(oid)
            except POSKeyError:
                # Packed away: out of every queue and agent, and trimmed
                # from its agent's history of completed jobs.
                statuses['packed'] += 1
                continue
            statuses[job.status] += 1
            if job.status == COMPLETED and isinstance(job.result, Failure):
                failures['%s: %s' % (job.result.type_name,
                                     job.result.message[:80])] += 1
        runs: Counter[str] = collections.Counter()
        if os.path.exists(runs_log):
            with open(runs_log) as stream:
                for line in stream:
                    runs[line.split()[0]] += 1
        keys = [key for key, _ in put_oids]
        lost = [key for key in keys if done.get(key, 0) == 0]
        duplicated = [key for key in keys if done.get(key, 0) > 1]
        for record in kills:
            record['recovered_by'] = (
                None if not record['held'] else
                'sibling' if record['_detected'] is not None else 'restart')
            record['found_dead_after_s'] = (
                round(record['_detected'] - record['_killed'], 3)
                if record['_detected'] is not None else None)
            record.setdefault('recovery_s', None)
        recoveries = [k['recovery_s'] for k in kills
                      if k['held'] and k['recovery_s'] is not None]
        for record in kills:
            if not record['held']:
                record['recovery_s'] = None  # nothing to recover
        detections = [k['found_dead_after_s'] for k in kills
                      if k['found_dead_after_s'] is not None]
        summary = {
            'jobs_put': len(put_oids),
            'jobs_completed': statuses.get(COMPLETED, 0)
            + statuses.get('packed', 0),
            'jobs_packed_away': statuses.get('packed', 0),
            'jobs_failed': sum(failures.values()),
            'jobs_lost': len(lost),
            'jobs_duplicated': len(duplicated),
            'unfinished_statuses': {s: n for s, n in statuses.items()
                                    if s not in (COMPLETED, 'packed')},
            'failures': dict(failures),
            'runs': sum(runs.values()),
            # Conflict retries, and jobs interrupted by a kill run again.
            'extra_runs': sum(n - 1 for n in runs.values() if n > 1),
            'kills': len(kills),
            'kills_holding_jobs': sum(1 for k in kills if k['held']),
            'unrecovered_kills': sum(1 for k in kills
                                     if k['held'] and k['recovery_s'] is None),
            'max_recovery_s': max(recoveries) if recoveries else None,
            'median_recovery_s': (common.percentile(recoveries, 50)
                                  if recoveries else None),
            'max_found_dead_after_s': max(detections) if detections else None,
            'elapsed_s': round(elapsed, 1),
            'put_retries': len(put_errors),
        }
        for record in kills:
            for name in [n for n in record if n.startswith('_')]:
                del record[name]
        return {'parameters': dict(params), 'summary': summary,
                'resources': resources.summary(), 'kills': kills,
                'lost_keys': lost[:20],
                'duplicated_keys': duplicated[:20],
                'machine': common.machine_description(
                    ('ZODB', 'ZEO', 'persistent', 'transaction')),
                'directory': directory if keep else None}
    finally:
        dispatchers.shut_down(workers, reader, db, server,
                              None if keep else directory)


def report(result: Dict[str, Any], out: IO[str] = sys.stdout) -> None:
    s = result['summary']
    print('jobs put %d, completed %d, failed %d' % (
        s['jobs_put'], s['jobs_completed'], s['jobs_failed']), file=out)
    print('jobs lost: %d' % s['jobs_lost'], file=out)
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
    parser.add_argument('--json', help='where to write the JSON (default '
                        'benchmarks/results/soak.json)')
    parser.add_argument('--keep', action='store_true',
                        help='keep the temporary directory (logs, Data.fs)')
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error('--workers must be at least 2 (one is always alive)')
    if not 0 <= args.steady < args.workers:
        parser.error('--steady must be from 0 to --workers - 1 (some worker '
                      'must be killed), got %d' % args.steady)
    params = dict(DEFAULTS, jobs=args.jobs, seconds=args.seconds,
                  workers=args.workers, death=args.death, seed=args.seed,
                  steady=args.steady, pack_every=args.pack_every,
                  history_size=args.history_size)
    result = run(params, keep=args.keep)
    report(result)
    path = common.write_result('soak', result, args.json)
    print('written to %s' % path)
    if result['directory']:
        print('kept %s' % result['directory'])
    s = result['summary']
    bad = (s['jobs_lost'] or s['jobs_duplicated'] or s['jobs_failed']
           or s['unrecovered_kills'])
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
