"""Pick-up across processes, before and after side by side
(``python -m benchmarks.pickup --across zeo|pg``; see pickup.py).

One server for the whole run; per round and side a fresh dispatcher
process (warmed up), ``jobs`` samples, then it is stopped; the order of
the sides alternates every round.  A sample: put one job and commit in
this process; the job returns ``time.time()`` as it starts in the
dispatcher process; latency from just before ``commit()``.
"""
import argparse
import os
import random
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from benchmarks import common, pickup_parts
from benchmarks.dispatchers import (Client, DispatcherProcess, shut_down,
                                    warm_up)

POLL_INTERVAL = 5.0   # the package's default: a poll cannot explain it
AGENT_SIZE = 3
WARMUP_JOBS = 20
GAP_S = (0.020, 0.100)
TIMEOUT_S = 60.0


def in_tree(cls: type, tree: str, parts: Optional[str] = None) -> type:
    """``cls`` (a DispatcherProcess) whose child imports the package from
    the checkout ``tree``: run there (``-m`` puts the working directory
    first on sys.path), with ``tree`` on PYTHONPATH too.  With ``parts``
    (a file) the child runs behind pickup_parts.py, which stamps there
    where each poll's time goes."""
    class InTree(cls):
        def command(self, where: Any) -> List[str]:
            command = super().command(where)
            if parts is not None:
                command = pickup_parts.command(command, parts)
            return ['env', '-C', tree, 'PYTHONPATH=' + tree] + command
    return InTree


#: Per sample: ``commit()`` called, returned, the job's first line ran.
Samples = List[pickup_parts.Stamps]


def samples(client: Client, n: int, rnd: random.Random,
            dispatcher: DispatcherProcess) -> Samples:
    """``n`` pick-ups: when the ``commit()`` of the put was called, when
    it returned and when the job's first line ran (seconds since the
    epoch: the dispatcher process shares the clock)."""
    from pyramid_zcasync.interfaces import COMPLETED
    found = []
    for _ in range(n):
        (job,), before = client.put(1)
        after = time.time()

        def done() -> bool:
            dispatcher.child.check_alive()
            client.tm.begin()
            return bool(job.status == COMPLETED)
        common.wait_until(done, TIMEOUT_S, 0.001, 'job %r' % (job,))
        found.append((before, after, job.result))
        client.tm.abort()
        time.sleep(rnd.uniform(*GAP_S))
    return found


def summary(found: Samples) -> Dict[str, Any]:
    def of(seconds: List[float]) -> Dict[str, Any]:
        out = common.latency_summary(seconds)
        out['p90_ms'] = round(common.percentile(
            [s * 1000 for s in seconds], 90), 3)
        return out
    out = of([started - call for call, _, started in found])
    out['from_commit_return'] = of([started - ret
                                    for _, ret, started in found])
    return out


class Server:
    """The storage server of one run and what opens it."""

    def __init__(self, kind: str, directory: str, fsync: bool,
                 parts: bool = False) -> None:
        self.kind = kind
        self.fsync = fsync
        #: Whether dispatchers stamp where their polls' time goes.
        self.parts = parts
        self.directory = directory
        self.server: Any = None
        self.where: Any = None
        self.process_class: type = DispatcherProcess
        self.description: Dict[str, Any] = {}

    def start(self) -> Any:
        """Start the server; the putting process's database."""
        if self.kind == 'zeo':
            from benchmarks.zeo import ZEOServer
            self.server = ZEOServer(self.directory).start()
            self.where = self.server.port
            self.description = {'storage': 'ZEO (FileStorage, fsync)'}
            return self.server.db()
        from benchmarks import relstorage
        self.server = relstorage._pgserver().PostgreSQL(
            durable=self.fsync).start()
        self.where = self.server.uri('jobs')
        self.process_class = relstorage.RelStorageDispatcherProcess
        self.description = {
            'storage': 'RelStorage history-free, fsync %s' % (
                'on' if self.fsync else 'off'),
            'postgresql': relstorage.postgres_version(self.server.bin)}
        db = relstorage.open_db(self.where)
        relstorage.announce_puts(db)
        return db

    def parts_file(self, name: str) -> Optional[str]:
        """Where the dispatcher ``name`` stamps its polls, if it does."""
        if not self.parts:
            return None
        return os.path.join(self.directory, name + '.parts')

    def dispatcher(self, name: str, tree: str) -> DispatcherProcess:
        cls = in_tree(self.process_class, tree, self.parts_file(name))
        made: DispatcherProcess = cls(self.directory, name, self.where,
                                      POLL_INTERVAL, AGENT_SIZE)
        return made


def run(kind: str, jobs: int, rounds: int, trees: Dict[str, str],
        log: Callable[[str], None] = print,
        fsync: bool = True, parts: bool = False) -> Dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix='bench-pickup-')
    server = Server(kind, tmp, fsync, parts)
    db = client = None
    running: List[DispatcherProcess] = []
    per_side: Dict[str, Samples] = {side: [] for side in trees}
    polls: Dict[str, List[Dict[str, Any]]] = {side: [] for side in trees}
    rounds_out: List[Dict[str, Any]] = []
    rnd = random.Random(1)
    started = time.perf_counter()
    try:
        db = server.start()
        import pyramid_zcasync
        pyramid_zcasync.install_queues(db)
        client = Client(db)
        order = list(trees)
        for number in range(1, rounds + 1):
            for side in order:
                log('  %s, round %d: %s' % (kind, number, side))
                found, stamped = _one_side(server, client, side,
                                           trees[side], number, jobs, rnd,
                                           running)
                per_side[side] += found
                polls[side] += stamped
                rounds_out.append(dict(summary(found), side=side,
                                       round=number,
                                       load_average=os.getloadavg()))
            order.reverse()
    finally:
        shut_down(running, client, db, server.server, tmp)
    out = {'across': kind, 'server': server.description,
            'params': {'jobs_per_side_and_round': jobs, 'rounds': rounds,
                       'poll_interval_s': POLL_INTERVAL,
                       'gap_s': list(GAP_S), 'warmup_jobs': WARMUP_JOBS},
            'duration_s': round(time.perf_counter() - started, 1),
            'trees': {side: common.code_version(tree)
                      for side, tree in trees.items()},
            'sides': {side: summary(found)
                      for side, found in per_side.items()},
            'rounds': rounds_out}
    if parts:
        out['parts'] = {side: pickup_parts.breakdown(found, polls[side])
                        for side, found in per_side.items()}
    return out


def _one_side(server: Server, client: Client, side: str, tree: str,
              number: int, jobs: int, rnd: random.Random,
              running: List[DispatcherProcess]
              ) -> Tuple[Samples, List[Dict[str, Any]]]:
    """One side's samples, and its polls' stamps (with ``--parts``)."""
    name = '%s-%d' % (side, number)
    dispatcher = server.dispatcher(name, tree)
    running.append(dispatcher)
    try:
        warm_up(client, WARMUP_JOBS, [dispatcher], TIMEOUT_S)
        found = samples(client, jobs, rnd, dispatcher)
    finally:
        dispatcher.stop()
        running.remove(dispatcher)
    parts = server.parts_file(name)
    return found, pickup_parts.read(parts) if parts else []


def print_report(result: Dict[str, Any], file: Any = None) -> None:
    headers = ['side', 'n', 'p50 ms', 'p90 ms', 'p95 ms', 'max ms',
               'p50 per round', 'from return p50/p90']
    rows: List[List[Any]] = []
    for side, s in result['sides'].items():
        per_round = [r['p50_ms'] for r in result['rounds']
                     if r['side'] == side]
        ret = s['from_commit_return']
        rows.append([side, s['n'], s['p50_ms'], s['p90_ms'], s['p95_ms'],
                     s['max_ms'], ' '.join('%.1f' % x for x in per_round),
                     '%.1f / %.1f' % (ret['p50_ms'], ret['p90_ms'])])
    print('pick-up across processes over %s (%s), poll %s s' % (
        result['across'], result['server'].get('storage'),
        result['params']['poll_interval_s']), file=file)
    common.print_table(headers, rows, out=file)
    for side, parts in result.get('parts', {}).items():
        print('%s: %s' % (side, ', '.join(
            '%s %s' % (name, value) for name, value in parts.items())),
            file=file)


def main(args: argparse.Namespace) -> None:
    here = common.project_root()
    trees: Dict[str, str] = {'after': here}
    if args.before:
        trees = {'before': os.path.abspath(args.before), 'after': here}
    try:
        result = run(args.across, args.jobs or 60, args.rounds, trees,
                     log=common.log_to_stderr, fsync=args.fsync == 'on',
                     parts=args.parts)
    except Exception as exc:
        if type(exc).__name__ == 'Skipped':
            sys.exit('benchmarks.pickup --across pg: %s' % exc)
        raise
    common.report_and_write('pickup-across-%s' % args.across, result,
                            args.json, print_report)
