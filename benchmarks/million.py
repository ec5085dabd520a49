"""1,000,000 pending jobs: put, claim, the admin views, dispatchers.

    python -m benchmarks.million [--jobs 1000000] [--quick] [--dir /dev/shm]
                                 [--parts views,ops,zeo] [--reuse FILE]
                                 [--window SECONDS] [--json PATH]

Issue 18's targets for a big queue, each measured against the same
figure on an empty queue where it has one:

build
    ``--jobs`` no-op jobs put in transactions of BATCH (bulk puts, as a
    backfill would) into a FileStorage in a temporary directory under
    ``--dir`` (tmpfs by default, for the build's speed; the JSON says which
    file system).  An empty database sits beside it, on the same disk.
put, claim
    One put per transaction (as a web request), then one claim per
    transaction (as a poll), alternating rounds between the empty and the
    big database; per operation the CPU time of this thread without the
    commit (``put_us``, ``claim_us``: what the queue's trees cost) and
    the wall time with the commit (``+commit``), medians of the rounds'
    medians.  Target: big / empty <= 1.5.
views
    ``/_async/db/count`` and the dashboard ``/_async/`` through the real
    WSGI app (webtest, the request's own ZODB connection, no dispatcher):
    the first request (cold cache) and the median of the next ones, with
    the objects each loaded from the storage.  Target: < 100 ms.
dispatchers
    A ZEO server on the big database, then one dispatcher process
    draining it for WINDOW seconds, then two: jobs/s from the queue's
    length (read without loading a job), and each dispatcher's RSS sampled
    every second.  Targets: two >= 1.5 x one; RSS flat while it drains
    (bounded by the ZODB caches, not by the pending jobs).

Writes benchmarks/results/million.json unless ``--json`` names a file.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import transaction
import ZODB
import ZODB.FileStorage

from benchmarks import common

Result = Dict[str, Any]
Log = Callable[[str], None]

BATCH = 20000
DEFAULTS = {'jobs': 1000000, 'ops': 300, 'rounds': 3, 'requests': 20,
            'window_s': 15.0, 'agent_size': 3, 'poll': 1.0}
QUICK = dict(DEFAULTS, jobs=50000, ops=100, rounds=2, requests=5,
             window_s=5.0)


def _noop() -> Any:
    from benchmarks._peer_jobs import started_at
    return started_at


def _queue(connection: Any) -> Any:
    from pyramid_zcasync.interfaces import IQueue
    return IQueue(connection.root())


def open_db(path: str) -> Any:
    return ZODB.DB(ZODB.FileStorage.FileStorage(path))


def filesystem_of(path: str) -> str:
    """The file system type holding ``path`` (tmpfs, ext4...)."""
    best = ('', '?')
    with open('/proc/mounts') as mounts:
        for line in mounts:
            _, point, kind = line.split()[:3]
            inside = path == point or path.startswith(point.rstrip('/') + '/')
            if inside and len(point) > len(best[0]):
                best = (point, kind)
    return '%s (%s)' % (best[0], best[1])


# -- building ---------------------------------------------------------------

def build(path: str, jobs: int, log: Log) -> Result:
    """``jobs`` pending no-op jobs in a new FileStorage at ``path``."""
    import pyramid_zcasync
    started = time.perf_counter()
    db = open_db(path)
    try:
        pyramid_zcasync.install_queues(db)
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        noop = _noop()
        done = 0
        while done < jobs:
            manager.begin()
            queue = _queue(connection)
            for _ in range(min(BATCH, jobs - done)):
                queue.put(noop)
            manager.commit()
            connection.cacheGC()
            done = min(done + BATCH, jobs)
            if done % (10 * BATCH) == 0:
                log('    built %d' % done)
        connection.close()
    finally:
        db.close()
    seconds = time.perf_counter() - started
    return {'jobs': jobs, 'seconds': round(seconds, 1),
            'jobs_per_s': round(jobs / seconds),
            'megabytes': round(os.path.getsize(path) / 2 ** 20)}


# -- put and claim cost -----------------------------------------------------

def _timed(operation: Callable[[], Any], manager: Any) -> List[float]:
    """``[cpu_us without the commit, wall_us with it]``."""
    wall = time.perf_counter()
    cpu = time.thread_time()
    operation()
    cpu_us = (time.thread_time() - cpu) * 1e6
    manager.commit()
    return [cpu_us, (time.perf_counter() - wall) * 1e6]


class Side:
    """A producer's and a dispatcher's connection to one database, kept
    (warm) across rounds: the claims load the jobs another connection
    put, as a dispatcher does."""

    def __init__(self, db: Any) -> None:
        self.managers = [transaction.TransactionManager() for _ in 'pc']
        self.connections = [db.open(transaction_manager=manager)
                            for manager in self.managers]

    def close(self) -> None:
        for manager, connection in zip(self.managers, self.connections):
            manager.abort()
            connection.close()

    def round(self, ops: int) -> Result:
        """``ops`` puts, one a transaction, then ``ops`` claims."""
        noop = _noop()
        (producer, dispatcher), (put_tm, claim_tm) = (self.connections,
                                                      self.managers)
        put_tm.begin()
        queue = _queue(producer)
        puts = [_timed(lambda: queue.put(noop), put_tm) for _ in range(ops)]
        claim_tm.begin()
        queue = _queue(dispatcher)
        claims = [_timed(queue.claim, claim_tm) for _ in range(ops)]
        return {'put': _medians(puts), 'claim': _medians(claims)}


def _medians(samples: List[List[float]]) -> Dict[str, float]:
    return {'cpu_us': round(statistics.median(s[0] for s in samples), 1),
            'commit_us': round(statistics.median(s[1] for s in samples), 1)}


def operation_costs(dbs: Dict[str, Any], ops: int, rounds: int,
                    log: Log) -> Result:
    """Rounds alternating between the databases; medians and ratios."""
    per: Dict[str, List[Result]] = {name: [] for name in dbs}
    sides = {name: Side(db) for name, db in dbs.items()}
    try:
        for number in range(rounds):
            for name, side in sides.items():
                log('    round %d, %s' % (number + 1, name))
                per[name].append(side.round(ops))
    finally:
        for side in sides.values():
            side.close()
    out: Result = {'ops_per_round': ops, 'rounds': per}
    for name in dbs:
        out[name] = {
            op: {field: round(statistics.median(
                r[op][field] for r in per[name]), 1)
                for field in ('cpu_us', 'commit_us')}
            for op in ('put', 'claim')}
    out['big_over_empty'] = {
        op: {field: round(out['big'][op][field] / out['empty'][op][field], 2)
             for field in ('cpu_us', 'commit_us')}
        for op in ('put', 'claim')}
    return out


# -- the admin views ----------------------------------------------------------

class LoadCounter:
    """Objects loaded from a database's storage by all its connections
    (they read through MVCC instances, which call ``loadBefore``)."""

    def __init__(self, db: Any) -> None:
        self.count = 0
        storage = db.storage
        for name in ('load', 'loadBefore'):
            setattr(storage, name, self._counting(getattr(storage, name)))

    def _counting(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            self.count += 1
            return method(*args)
        return counted


def _admin_tests() -> Any:
    """tests/adminapp.py: the admin app of the view tests (untyped)."""
    from benchmarks.producers import _tests_on_path
    _tests_on_path()
    return importlib.import_module('adminapp')


def admin_app(path: str, directory: str) -> Any:
    """The package's admin views over the FileStorage at ``path``."""
    import pathlib
    return _admin_tests().make_admin_app(
        pathlib.Path(directory), **{'zodbconn.uri': 'file://%s' % path})


def time_views(path: str, requests: int) -> Result:
    webtest = importlib.import_module('webtest')  # ships no types
    ADMIN = _admin_tests().ADMIN
    directory = tempfile.mkdtemp(prefix='million-app-')
    try:
        app = admin_app(path, directory)
        db = app.registry._zodb_databases['']
        loads = LoadCounter(db)
        testapp = webtest.TestApp(app)
        out: Result = {}
        for name, url in (('db_count', '/_async/db/count'),
                          ('dashboard', '/_async/')):
            samples = []
            loaded = []
            for _ in range(requests + 1):
                before, started = loads.count, time.perf_counter()
                response = testapp.get(url, headers=ADMIN)
                samples.append((time.perf_counter() - started) * 1000)
                loaded.append(loads.count - before)
            out[name] = {'first_ms': round(samples[0], 1),
                         'first_loads': loaded[0],
                         'p50_ms': round(statistics.median(samples[1:]), 1),
                         'max_ms': round(max(samples[1:]), 1),
                         'loads_after_first': max(loaded[1:])}
            if name == 'db_count':
                out[name]['answer'] = response.json
        db.close()
        return out
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- dispatchers over ZEO -----------------------------------------------------

def _pending(client: Any) -> int:
    client.probe_tm.begin()
    try:
        return len(client.queue(client.probe))
    finally:
        client.probe_tm.abort()


def drain_window(client: Any, dispatchers: Sequence[Any], server: Any,
                 seconds: float) -> Result:
    """Jobs/s taken off the queue during ``seconds``; each dispatcher's
    RSS every second; CPU of the dispatchers and the ZEO server (on a
    machine short of cores, a second process adds CPU, not jobs/s)."""
    from benchmarks._zc_worker import rss_kib
    from benchmarks.dispatchers import cpu_seconds
    pids = {'pid %d' % d.pid: d.pid for d in dispatchers}
    pids['ZEO server'] = server.child.pid
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    first = _pending(client)
    started = time.perf_counter()
    rss: Dict[str, List[Optional[int]]] = {
        'pid %d' % d.pid: [] for d in dispatchers}
    while time.perf_counter() - started < seconds:
        time.sleep(1.0)
        for d in dispatchers:
            d.child.check_alive()
            rss['pid %d' % d.pid].append(rss_kib(str(d.pid))[0])
    taken = first - _pending(client)
    elapsed = time.perf_counter() - started
    used = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
    return {'pending_at_start': first, 'taken': taken,
            'seconds': round(elapsed, 1),
            'jobs_per_s': round(taken / elapsed, 1), 'rss_kib': rss,
            'cpu_percent': {name: round(100 * u / elapsed, 1)
                            for name, u in used.items()},
            'cpu_ms_per_job': round(1000 * sum(used.values())
                                    / max(taken, 1), 2),
            'load_average': os.getloadavg()}


def dispatchers_over_zeo(directory: str, path: str, params: Result,
                         log: Log) -> Result:
    """One dispatcher draining the big queue, then two."""
    from benchmarks.dispatchers import Client, DispatcherProcess
    from benchmarks.zeo import ZEOServer
    os.rename(path, os.path.join(directory, 'zeo.fs'))
    for suffix in ('.index',):
        if os.path.exists(path + suffix):
            os.rename(path + suffix,
                      os.path.join(directory, 'zeo.fs' + suffix))
    server = ZEOServer(directory, timeout=120.0).start()
    db = server.db()
    client = Client(db)
    running: List[Any] = []
    out: Result = {}
    try:
        for count in (1, 2):
            name = 'dispatcher%d' % count
            running.append(DispatcherProcess(
                directory, name, server.port, params['poll'],
                params['agent_size'], timeout=120.0))
            time.sleep(2.0)  # past the first polls and the cold caches
            log('    %d dispatcher(s), %.0f s' % (count, params['window_s']))
            out['%d' % count] = drain_window(client, running, server,
                                             params['window_s'])
        out['two_over_one'] = round(
            out['2']['jobs_per_s'] / max(out['1']['jobs_per_s'], 1e-9), 2)
    finally:
        for d in running:
            d.stop()
        client.close()
        db.close()
        server.stop()
    return out


# -- the whole run ------------------------------------------------------------

def build_or_copy(big: str, jobs: int, saved: Optional[str],
                  log: Log) -> Result:
    """Build the big database, or copy the one ``--reuse`` saved (the
    same queue for a before and an after run)."""
    if saved and os.path.exists(saved):
        log('  copying %s' % saved)
        shutil.copyfile(saved, big)
        return {'jobs': jobs, 'copied_from_a_saved_build': True}
    log('  building %d pending jobs' % jobs)
    built = build(big, jobs, log)
    if saved:
        shutil.copyfile(big, saved)
    return built


PARTS = ('views', 'ops', 'zeo')


def run(params: Result, directory: str, parts: Sequence[str], log: Log,
        saved: Optional[str] = None) -> Result:
    big = os.path.join(directory, 'big.fs')
    empty = os.path.join(directory, 'empty.fs')
    out: Result = {'params': params, 'disk': filesystem_of(directory)}
    out['build'] = build_or_copy(big, params['jobs'], saved, log)
    build(empty, 0, log)
    if 'views' in parts:
        log('  views')
        time_views(empty, 1)  # compiles the templates: not the queue's
        out['views'] = time_views(big, params['requests'])
        out['views_empty'] = time_views(empty, params['requests'])
    if 'ops' in parts:
        log('  put and claim')
        out['operations'] = _operations(empty, big, params, log)
    if 'zeo' in parts:
        log('  dispatchers over ZEO')
        out['zeo'] = dispatchers_over_zeo(directory, big, params, log)
    return out


def _operations(empty: str, big: str, params: Result, log: Log) -> Result:
    dbs = {'empty': open_db(empty), 'big': open_db(big)}
    try:
        return operation_costs(dbs, params['ops'], params['rounds'], log)
    finally:
        for db in dbs.values():
            db.close()


def print_report(result: Result) -> None:
    rows: List[List[Any]] = []
    ops: Result = result.get('operations') or {}
    for op in ('put', 'claim') if ops else ():
        for field in ('cpu_us', 'commit_us'):
            rows.append(['%s %s' % (op, field), ops['empty'][op][field],
                         ops['big'][op][field],
                         ops['big_over_empty'][op][field], '<= 1.5'])
    for name in ('db_count', 'dashboard') if 'views' in result else ():
        rows.append(['%s p50 ms' % name, result['views_empty'][name]['p50_ms'],
                     result['views'][name]['p50_ms'], None, '< 100 ms'])
    zeo = result.get('zeo')
    if zeo:
        rows.append(['ZEO drain jobs/s (1 -> 2 dispatchers)',
                     zeo['1']['jobs_per_s'], zeo['2']['jobs_per_s'],
                     zeo['two_over_one'], '>= 1.5'])
        rows.append(['  CPU ms per job (1 -> 2)', zeo['1']['cpu_ms_per_job'],
                     zeo['2']['cpu_ms_per_job'], None, None])
    common.print_table(['figure', 'empty', '%d pending' % result['build'][
        'jobs'], 'ratio', 'target'], rows)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int)
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--dir', default='/dev/shm'
                        if os.path.isdir('/dev/shm') else None)
    parser.add_argument('--parts', default=','.join(PARTS),
                        help='which of %s, comma-separated' % ','.join(PARTS))
    parser.add_argument('--reuse', metavar='FILE', help='copy the big '
                        'database from FILE, or save it there once built')
    parser.add_argument('--window', type=float,
                        help='seconds each dispatcher count drains')
    parser.add_argument('--json')
    args = parser.parse_args(argv)
    params = dict(QUICK if args.quick else DEFAULTS)
    if args.jobs:
        params['jobs'] = args.jobs
    if args.window:
        params['window_s'] = args.window
    directory = tempfile.mkdtemp(prefix='million-', dir=args.dir)
    started = time.perf_counter()
    try:
        result = run(params, directory, args.parts.split(','),
                     common.log_to_stderr,
                     args.reuse)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result['duration_s'] = round(time.perf_counter() - started, 1)
    result['code'] = common.code_version()
    common.report_and_write('million', result, args.json, print_report)


if __name__ == '__main__':
    main()
