"""Claim cost with 100,000 pending jobs: plain, priorities, rate limits,
future jobs.

    python -m benchmarks.claims [--jobs 100000] [--claims 1000]
                                [--no-baseline] [--json PATH]

Each scenario builds its queue on a FileStorage of its own (bulk puts of
10,000 jobs a transaction), then opens a fresh connection (empty object
cache, as a dispatcher after a restart) and measures:

- ``first ms``, ``loads``: the first claim, and the objects it loaded;
- ``p50 us``, ``p95 us``, ``loads/claim``: ``--claims`` claims in one
  transaction (a warm cache, as a dispatcher polling);
- ``+commit ms``: claim and commit, one job a transaction, 200 times
  (the storage's fsync dominates; a rate-limited claim also rewrites the
  quota's record of recent starts);
- ``next_due us``: ``queue.next_due(now)``, which the dispatcher calls at
  every poll.

Scenarios (``--jobs`` pending jobs each):

- ``plain``: all due, priority 0;
- ``priorities``: all due, priorities -5..5 at random (11 lanes);
- ``rate held``: all name a quota of 10 starts a minute that is used up,
  with 2,000 free jobs queued behind them: claims must pass the held jobs
  without visiting them;
- ``rate 2000/min``: all name a quota of 2000 starts a minute: every claim
  is allowed and records its start (the record holds up to 2000 times);
- ``future``: all scheduled an hour ahead, with 2,000 due jobs;
- ``rate held, one tree`` (baseline, skip with ``--no-baseline``): the
  ``rate held`` queue with every job in one tree, as before lanes: each
  claim walks the held jobs.  Only a few claims are measured: each costs
  a walk of the whole queue.

Writes benchmarks/results/claims.json (every sample summary, parameters
and the machine).
"""
import argparse
import datetime
import operator
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import transaction
import ZODB
import ZODB.FileStorage

import pyramid_zcasync
from benchmarks import common
from pyramid_zcasync import Job
from pyramid_zcasync.interfaces import IQueue

UTC = datetime.timezone.utc
BATCH = 10000
FREE = 2000
COMMITTED_CLAIMS = 200

Result = Dict[str, Any]
Build = Callable[[Any, Any, int], None]     # (connection, queue, jobs)


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def _put_batches(conn: Any, queue: Any, count: int,
                 make: Callable[[Any, int], Any]) -> None:
    """``make(queue, i)`` ``count`` times, committing every BATCH."""
    for i in range(count):
        make(queue, i)
        if (i + 1) % BATCH == 0:
            transaction.commit()
            conn.cacheGC()
    transaction.commit()
    conn.cacheGC()


def _quota_job(tag: object, name: str) -> Job:
    job = Job(operator.add, tag, 0)
    job.quota_names = (name,)
    return job


# -- scenarios: each fills the queue of ``conn`` ----------------------------

def build_plain(conn: Any, queue: Any, jobs: int) -> None:
    _put_batches(conn, queue, jobs,
                 lambda q, i: q.put(operator.add, i, 0))


def build_priorities(conn: Any, queue: Any, jobs: int) -> None:
    rnd = random.Random(1)
    _put_batches(conn, queue, jobs, lambda q, i: q.put(
        operator.add, i, 0, priority=rnd.randint(-5, 5)))


def _use_up(quota: Any) -> None:
    starts, _ = quota.rate
    for _ in range(starts):
        quota.acquire(Job(operator.add), None)


def build_rate_held(conn: Any, queue: Any, jobs: int) -> None:
    queue.quotas.create('api', rate=(10, 60))
    _put_batches(conn, queue, jobs,
                 lambda q, i: q.put(_quota_job(i, 'api')))
    _put_batches(conn, queue, FREE,
                 lambda q, i: q.put(operator.add, 'free', i))
    _use_up(queue.quotas['api'])
    transaction.commit()


def build_rate_allowed(conn: Any, queue: Any, jobs: int) -> None:
    queue.quotas.create('api', rate=(2000, 60))
    _put_batches(conn, queue, jobs,
                 lambda q, i: q.put(_quota_job(i, 'api')))


def build_future(conn: Any, queue: Any, jobs: int) -> None:
    later = _now() + datetime.timedelta(hours=1)
    _put_batches(conn, queue, jobs, lambda q, i: q.put(
        operator.add, i, 0, begin_after=later))
    _put_batches(conn, queue, FREE,
                 lambda q, i: q.put(operator.add, 'due', i))


def build_rate_held_one_tree(conn: Any, queue: Any, jobs: int) -> None:
    """As ``rate held``, laid out as before lanes: one tree for all."""
    queue.quotas.create('api', rate=(10, 60))

    def put_in_default_tree(q: Any, i: int) -> None:
        job = q.put(operator.add, i, 0)
        job.quota_names = ('api',)  # set after the put: in the default lane
    _put_batches(conn, queue, jobs, put_in_default_tree)
    _put_batches(conn, queue, FREE,
                 lambda q, i: q.put(operator.add, 'free', i))
    _use_up(queue.quotas['api'])
    transaction.commit()


SCENARIOS: List[Any] = [
    ('plain', build_plain, None),
    ('priorities', build_priorities, None),
    ('rate held', build_rate_held, None),
    ('rate 2000/min', build_rate_allowed, None),
    ('future', build_future, None),
    # (name, build, most warm claims measured)
    ('rate held, one tree', build_rate_held_one_tree, 3),
]


# -- measuring ---------------------------------------------------------------

class LoadCounter:
    """Counts the objects a connection loads from its storage: a claim
    that loads many is one that walks past jobs it does not take."""

    def __init__(self, conn: Any) -> None:
        self.count = 0
        original = conn._storage.load

        def load(oid: bytes, *args: Any) -> Any:
            self.count += 1
            return original(oid, *args)
        conn._storage.load = load


def _summary_us(samples_ns: Sequence[int]) -> Dict[str, Any]:
    us = [s / 1000.0 for s in samples_ns]
    if not us:
        return {'n': 0}
    return {'n': len(us),
            'p50_us': round(common.percentile(us, 50), 1),
            'p95_us': round(common.percentile(us, 95), 1),
            'max_us': round(max(us), 1),
            'mean_us': round(statistics.fmean(us), 1)}


def measure(name: str, build: Build, jobs: int, claims: int,
            max_claims: Optional[int] = None) -> Result:
    directory = tempfile.mkdtemp(prefix='claims-')
    path = os.path.join(directory, 'Data.fs')
    try:
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
        try:
            pyramid_zcasync.install_queues(db)
            started = time.perf_counter()
            conn = db.open()
            build(conn, IQueue(conn.root()), jobs)
            build_s = time.perf_counter() - started
            conn.close()
        finally:
            db.close()
        # A new database: its connections start with empty caches.
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
        try:
            return _measure_claims(db, name, jobs, build_s,
                                   claims if max_claims is None
                                   else min(claims, max_claims))
        finally:
            db.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _measure_claims(db: Any, name: str, jobs: int, build_s: float,
                    claims: int) -> Result:
    manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=manager)
    try:
        queue: Any = IQueue(conn.root())
        lanes = len(queue._all_lanes())
        pending = len(queue)
        loads = LoadCounter(conn)

        # first claim, cold cache
        before = time.perf_counter_ns()
        first = queue.claim()
        first_ns = time.perf_counter_ns() - before
        first_loads = loads.count
        assert first is not None, name

        # warm claims, one transaction
        samples: List[int] = []
        loads_before = loads.count
        for _ in range(claims):
            before = time.perf_counter_ns()
            job = queue.claim()
            samples.append(time.perf_counter_ns() - before)
            assert job is not None, name
        warm_loads = (loads.count - loads_before) / max(claims, 1)
        now = _now()
        due_ns = []
        for _ in range(200):
            before = time.perf_counter_ns()
            queue.next_due(now)
            due_ns.append(time.perf_counter_ns() - before)
        manager.abort()

        # claim + commit, one job a transaction
        committed = []
        for _ in range(min(COMMITTED_CLAIMS, claims)):
            before = time.perf_counter_ns()
            job = queue.claim()
            manager.commit()
            committed.append(time.perf_counter_ns() - before)
            assert job is not None, name
        return {
            'scenario': name, 'pending': pending, 'jobs': jobs,
            'lanes': lanes, 'build_s': round(build_s, 2),
            'first_claim_ms': round(first_ns / 1e6, 2),
            'first_claim_loads': first_loads,
            'claim': _summary_us(samples),
            'loads_per_claim': round(warm_loads, 2),
            'claim_commit': _summary_us(committed),
            'next_due': _summary_us(due_ns),
        }
    finally:
        manager.abort()
        conn.close()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=100000)
    parser.add_argument('--claims', type=int, default=1000)
    parser.add_argument('--no-baseline', action='store_true',
                        help='skip the one-tree (before lanes) baseline')
    parser.add_argument('--json', default=None,
                        help='default: benchmarks/results/claims.json')
    args = parser.parse_args(argv)
    machine = common.machine_description(
        ('ZODB', 'persistent', 'transaction', 'BTrees'))
    print(common.describe_machine(machine))
    print('%d pending jobs per scenario, FileStorage, %d warm claims'
          % (args.jobs, args.claims))
    results = []
    for name, build, max_claims in SCENARIOS:
        if args.no_baseline and max_claims is not None:
            continue
        print('  %s ...' % name, file=sys.stderr, flush=True)
        results.append(measure(name, build, args.jobs, args.claims,
                               max_claims))
    headers = ['scenario', 'pending', 'lanes', 'first ms', 'loads',
               'p50 us', 'p95 us', 'loads/claim', '+commit ms', 'next_due us']
    rows = [[r['scenario'], r['pending'], r['lanes'], r['first_claim_ms'],
             r['first_claim_loads'], r['claim']['p50_us'],
             r['claim']['p95_us'], r['loads_per_claim'],
             r['claim_commit']['p50_us'] / 1000.0,
             r['next_due']['p50_us']] for r in results]
    common.print_table(headers, rows)
    data = {'benchmark': 'claims', 'jobs': args.jobs, 'claims': args.claims,
            'free_jobs': FREE, 'committed_claims': COMMITTED_CLAIMS,
            'machine': machine, 'results': results}
    path = common.write_result('claims', data, args.json)
    print('written to %s' % os.path.relpath(path))


if __name__ == '__main__':
    main()
