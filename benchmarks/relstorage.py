"""pyramid_zcasync on RelStorage (PostgreSQL, history-free), with
dispatcher processes.

    python -m benchmarks.relstorage [--quick] [--json PATH] [--fsync off]

``python -m benchmarks`` runs the same (``run``, with ``DEFAULTS`` or
``QUICK``) as its ``pg`` phase, and puts the rows in its one table.

The script starts a throw-away PostgreSQL cluster (tests/pgserver.py:
initdb into a temporary directory, 127.0.0.1 and a free port; fsync on,
as a production server runs, unless ``--fsync off``), a database reached
through RelStorage's zodburi URI ``postgres://...?keep_history=false``,
and dispatcher-only child processes (``python -m benchmarks.relstorage
worker URI UUID_FILE``, the loop of ``benchmarks._zc_worker.serve``), each
with its own UUID file.  This process puts the jobs and watches them.  The
job is the peers' no-op (``benchmarks._peer_jobs.started_at``).  Without
RelStorage, psycopg2 or the PostgreSQL server binaries, ``run`` raises
``benchmarks.peers.Skipped`` with the reason (this script exits with it).

raw commits
    one client commits a change of one small object, over and over: the
    storage's ceiling for one-commit-per-job work.
throughput, pick-up latency (across processes), idle CPU
    measured as the ZEO rows are (benchmarks/dispatchers.py:
    ``throughput``, ``pickup``, ``idle_cpu``, with the same ``Client``).
    Throughput: the dispatchers are running and warmed up; put N jobs in
    one transaction, wait until the queue is empty and no agent holds a
    job; jobs/s = N / (time all are done - time the put started); every job
    is checked (COMPLETED, a float result); median of ``rounds`` rounds,
    with 1 and with 2 dispatcher processes, and the CPU used by this
    process and each dispatcher. Pick-up: put one job and commit here; the
    job returns ``time.time()`` taken as it starts in a dispatcher process;
    latency = that minus ``time.time()`` just before ``commit()``. Idle
    gaps of 20-100 ms between samples. The dispatchers poll every 5 s (the
    default): pick-up relies on PostgreSQL's LISTEN/NOTIFY (this process's
    puts send NOTIFY, ``wakeup.announce_puts``; each dispatcher listens,
    pyramid_zcasync/pgnotify.py), and behind it on their watching the
    newest transaction id (pyramid_zcasync/watch.py), a query every 20 ms,
    whose cost the idle CPU of one dispatcher process shows.

The cluster and the children are stopped by PID, the temporary directories
removed, and every wait is bounded (``phase_timeout_s``).
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import time
from types import ModuleType
from typing import IO, Any, Callable, Dict, List, Optional, Sequence

from benchmarks import common
from benchmarks.peers import Skipped
# The ZEO rows' client and measurements, here on RelStorage.
from benchmarks.dispatchers import (Client, DispatcherProcess, one_then_two,
                                    shut_down)

TESTS = os.path.join(common.project_root(), 'tests')

# The ZEO rows' counts (benchmarks/zeo.py), so that the suite's table
# compares like with like.
DEFAULTS = {
    'rounds': 3,
    'jobs': 1500,
    'latency_jobs': 60,
    'warmup_jobs': 50,
    'raw_commits': 500,
    'poll_interval': 5.0,
    'agent_size': 3,
    'gap_min_s': 0.020,
    'gap_max_s': 0.100,
    'fsync': True,
    'idle_cpu_s': 3.0,
    'phase_timeout_s': 90.0,
}
QUICK = dict(DEFAULTS, rounds=1, jobs=500, latency_jobs=20, raw_commits=200,
             idle_cpu_s=1.0)


def _pgserver() -> ModuleType:
    """tests/pgserver.py; :class:`Skipped` (with the reason and the
    install command) when RelStorage or the PostgreSQL binaries are
    missing."""
    missing = [name for name in ('relstorage', 'psycopg2')
               if importlib.util.find_spec(name) is None]
    if missing:
        raise Skipped("%s not installed: pip install -e '.[relstorage]'"
                      % ' and '.join(missing))
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    import pgserver
    if pgserver.MISSING:
        raise Skipped(pgserver.MISSING)
    return pgserver


def postgres_version(bin_dir: str) -> str:
    """'PostgreSQL 15.18', from ``postgres --version`` in ``bin_dir``."""
    import subprocess
    words = subprocess.run([os.path.join(bin_dir, 'postgres'), '--version'],
                           capture_output=True, text=True,
                           timeout=30).stdout.split()
    return 'PostgreSQL %s' % (words[2] if len(words) > 2 else '?')


def open_db(uri: str) -> Any:
    import ZODB
    import zodburi
    factory, options = zodburi.resolve_uri(uri)
    return ZODB.DB(factory(), **options)


# -- the dispatcher child ---------------------------------------------------

def worker_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog='benchmarks.relstorage worker')
    parser.add_argument('uri')
    parser.add_argument('uuid_file')
    parser.add_argument('--poll', type=float, default=5.0)
    parser.add_argument('--agent-size', type=int, default=3)
    args = parser.parse_args(argv)
    from benchmarks._zc_worker import serve
    serve(open_db(args.uri), args)


class RelStorageDispatcherProcess(DispatcherProcess):
    """A dispatcher-only child process on the RelStorage database ``uri``
    (a DispatcherProcess but for the command it runs)."""

    def command(self, uri: Any) -> List[str]:
        return [sys.executable, '-m', 'benchmarks.relstorage', 'worker', uri]


def announce_puts(db: Any) -> None:
    """This process's puts wake the dispatcher processes at once, as a
    web process's would (a checkout without it leaves them to their
    watch of the last transaction)."""
    try:
        from pyramid_zcasync import wakeup
    except ImportError:
        return
    wakeup.announce_puts(db)


# -- measurements -------------------------------------------------------------

def raw_commits(db: Any, n: int) -> float:
    """Commits/s of one client changing one small object each time."""
    import persistent.mapping
    import transaction
    tm = transaction.TransactionManager()
    connection = db.open(transaction_manager=tm)
    try:
        with tm:
            connection.root()['raw'] = persistent.mapping.PersistentMapping()
        started = time.perf_counter()
        for i in range(n):
            with tm:
                connection.root()['raw']['n'] = i
        return round(n / (time.perf_counter() - started), 1)
    finally:
        connection.close()


# -- the whole run ------------------------------------------------------------

def run(params: Optional[Dict[str, Any]] = None,
        log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The raw commit rate and both rows; a JSON-able dict.  Raises
    :class:`benchmarks.peers.Skipped` when RelStorage or PostgreSQL is
    missing (``python -m benchmarks`` then skips its ``pg`` phase)."""
    p = dict(DEFAULTS, **(params or {}))
    pgserver = _pgserver()
    tmp = tempfile.mkdtemp(prefix='bench-relstorage-')
    server = db = client = None
    dispatchers: List[DispatcherProcess] = []
    out: Dict[str, Any] = {'params': dict(p), 'rows': []}
    started = time.perf_counter()
    try:
        server = pgserver.PostgreSQL(durable=p['fsync']).start()
        out['postgresql'] = postgres_version(server.bin)
        raw_db = open_db(server.uri('raw'))
        try:
            log('  RelStorage: raw commits')
            out['raw_commits_per_s'] = raw_commits(raw_db, p['raw_commits'])
        finally:
            raw_db.close()
        uri = server.uri('jobs')
        out['uri'] = uri
        db = open_db(uri)
        import pyramid_zcasync
        pyramid_zcasync.install_queues(db)
        announce_puts(db)
        client = Client(db)
        out['idle_cpu'], out['rows'] = one_then_two(
            client, lambda name: RelStorageDispatcherProcess(
                tmp, name, uri, p['poll_interval'], p['agent_size']),
            dispatchers, p, 'RelStorage-PostgreSQL', log)
    finally:
        shut_down(dispatchers, client, db, server, tmp)
    out['duration_s'] = round(time.perf_counter() - started, 1)
    return out


def raw_name(result: Dict[str, Any]) -> str:
    """The raw commit rate's row name (``python -m benchmarks`` too)."""
    return 'raw RelStorage-PostgreSQL commit, 1 client (fsync %s)' % (
        'on' if result['params']['fsync'] else 'off')


def print_report(result: Dict[str, Any],
                 file: Optional[IO[str]] = None) -> None:
    print('%s: %s/s' % (raw_name(result), result['raw_commits_per_s']),
          file=file)
    headers = ['benchmark', 'n', 'jobs/s', 'x raw', 'pickup p50 ms',
               'pickup p95 ms', 'poll s']
    rows = []
    for r in result['rows']:
        rows.append([r['name'], r['throughput']['jobs'],
                     r['throughput']['jobs_per_s'],
                     round(r['throughput']['jobs_per_s']
                           / result['raw_commits_per_s'], 2),
                     r['pickup']['p50_ms'], r['pickup']['p95_ms'],
                     r['poll_interval_s']])
    common.print_table(headers, rows, out=file)
    print_cpu(result, file)
    print('idle dispatcher at %s s poll: %s %% of one core' % (
        result['params']['poll_interval'],
        result['idle_cpu']['cpu_percent_of_one_core'][0]), file=file)


def print_cpu(result: Dict[str, Any],
              file: Optional[IO[str]] = None) -> None:
    """CPU per job and per process in each row's median throughput round
    (the commits are not counted here, unlike over ZEO)."""
    for r in result['rows']:
        t = r['throughput']
        per_process = ', '.join('%s %.0f' % kv
                                for kv in t['cpu_percent'].items())
        print('%s, median round: CPU %.2f ms/job (%% of a core: %s; the '
              'PostgreSQL server not counted)' % (
                  r['name'], t['cpu_ms_per_job'], per_process), file=file)


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['worker']:
        worker_main(argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--fsync', choices=('on', 'off'), default='on')
    ap.add_argument('--json', default=None, help='output path (default '
                    'benchmarks/results/relstorage.json)')
    args = ap.parse_args(argv)
    params = dict(QUICK if args.quick else DEFAULTS,
                  fsync=args.fsync == 'on')
    try:
        result = run(params, log=common.log_to_stderr)
    except Skipped as e:
        raise SystemExit('benchmarks.relstorage: %s' % e)
    common.report_and_write('relstorage', result, args.json, print_report)


if __name__ == '__main__':
    main()
