"""The whole benchmark suite in one run: one table, one JSON file.

    python -m benchmarks [--quick] [--only PHASES] [--json PATH]

Run from the project root.  Phases, in this order (``--only`` takes any
subset, comma-separated):

raw     raw FileStorage commit rate (the denominator of every ``x raw FS``)
huey    Huey, SqliteHuey, 1 consumer x 2 threads
rq      RQ, redis-server started here, 1 and 2 SimpleWorker processes
dramatiq, celery
        Dramatiq and Celery, each on a redis-server started here, 1 worker
        process x 2 threads (benchmarks/morepeers.py)
procrastinate
        procrastinate on a throw-away PostgreSQL cluster started here
        (fsync on), 1 worker process, concurrency 2
fs      pyramid_zcasync on FileStorage in one process: throughput, bulk put
        of 10,000 jobs, same-process pick-up latency
zeo     pyramid_zcasync over a ZEO server started here: 1 and 2 dispatcher
        processes (throughput, cross-process pick-up), idle CPU of a
        dispatcher process
pg      the same on RelStorage (history-free) over a throw-away PostgreSQL
        cluster started here (fsync on; benchmarks/relstorage.py), plus
        RelStorage's raw commit rate with one client; skipped, with the
        reason in the table, without RelStorage, psycopg2 or the
        PostgreSQL server binaries
live    web-style producers: THREADS threads each committing one put per
        transaction while the workers run (benchmarks/live.py): ours on
        FileStorage (one process), over ZEO and RelStorage (producers and
        dispatcher in two processes), Huey; then RQ, Dramatiq, Celery,
        procrastinate the same way (benchmarks/livepeers.py); live jobs/s,
        CPU per put, each row against Huey's and ours
scale   poll cost and throughput with 0 vs 100,000 completed jobs kept
memory  a dispatcher process's memory over 100,000 no-op jobs; last, with
        what is left of the time budget (``budget_s``, 320 s): on a busy
        machine it stops early and the table says after how many jobs

``--profile DIR`` adds one uncounted ZEO throughput round per process
count under py-spy (raw profiles in DIR, summaries in the JSON and below
the table).

Prints one table (every row's ratios against the raw FileStorage commit
rate of this run, and pyramid_zcasync's against Huey and RQ with one
worker, with the SPEC target and whether it is met; the RelStorage rows
also against RelStorage's own raw commit rate) and writes every figure,
round and parameter to ``benchmarks/results/all.json``.  A phase that
cannot run here (a missing package or server binary) is skipped, its
reason in the table.  Exit status 1 if a phase failed.  See
benchmarks/README.md.
"""
import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence

from benchmarks import (common, livepeers, morepeers, peers, pickup,
                        raw_storage, relstorage, report, scale, throughput,
                        zeo)

Params = Dict[str, Any]
Result = Dict[str, Any]
Log = Callable[[str], None]

PHASES = ('raw', 'huey', 'rq', 'dramatiq', 'celery', 'procrastinate', 'fs',
          'zeo', 'pg', 'live', 'scale', 'memory')
#: The drain phases benchmarks/morepeers.py measures.
MORE_PEERS = morepeers.SYSTEMS

FULL: Params = {
    'budget_s': 320.0,
    'peers': dict(morepeers.DEFAULTS),
    'fs': {'jobs': 3000, 'rounds': 3, 'bulk_jobs': 10000, 'bulk_rounds': 3,
           'latency_jobs': 100, 'gap_min_s': 0.020, 'gap_max_s': 0.100,
           'raw_alongside_commits': 1500},
    'zeo': dict(zeo.DEFAULTS),
    'pg': dict(relstorage.DEFAULTS),
    'live': dict(livepeers.DEFAULTS),
    'scale': dict(scale.DEFAULTS),
}
QUICK: Params = dict(
    FULL, budget_s=120.0, peers=dict(morepeers.QUICK), zeo=dict(zeo.QUICK),
    pg=dict(relstorage.QUICK), live=dict(livepeers.QUICK),
    scale=dict(scale.QUICK),
    fs=dict(FULL['fs'], jobs=500, rounds=1, bulk_rounds=1, latency_jobs=20,
            raw_alongside_commits=300))

#: Where each phase's result goes in ``results`` (a phase's name otherwise).
RESULT_KEYS = {'raw': 'raw_storage'}


def fs_phase(fp: Params) -> Result:
    """pyramid_zcasync on FileStorage in this process.  The raw commit
    rate is measured again just before and after the throughput rounds
    ('raw alongside'): on a shared machine the disk's speed drifts
    between the start of the run and this phase."""
    before = raw_storage.run(fp['raw_alongside_commits'], rounds=1)
    tput = throughput.run_warm(fp['jobs'], fp['rounds'],
                               profile_dir=fp.get('profile_dir'))
    after = raw_storage.run(fp['raw_alongside_commits'], rounds=1)
    return {
        'throughput': tput,
        'raw_alongside': {
            'commits_per_s': round((before['commits_per_s']
                                    + after['commits_per_s']) / 2, 1),
            'before': before['commits_per_s'],
            'after': after['commits_per_s']},
        'bulk_put': throughput.bulk_put(fp['bulk_jobs'], fp['bulk_rounds']),
        'pickup': pickup.measure(fp['latency_jobs'], pause=fp['gap_min_s'],
                                 pause_max=fp['gap_max_s']),
    }


def memory_phase(params: Params, started: float, out: Result) -> Result:
    """Last, with the rest of the time budget (the child stops early,
    and says so, rather than overrun it)."""
    left = params['budget_s'] - (time.time() - started)
    sp = dict(params['scale'], memory_timeout_s=max(
        30.0, min(params['scale']['memory_timeout_s'], left - 10)))
    out['params']['memory_timeout_s_given'] = sp['memory_timeout_s']
    return scale.Memory(sp).result()


def drain_phase(kind: str, pp: Params) -> Callable[[], Result]:
    """A morepeers peer's drain and pick-up rows, as a phase."""
    return lambda: morepeers.drain(kind, pp)


def phase_runners(params: Params, started: float, out: Result,
                  log: Log) -> Dict[str, Callable[[], Any]]:
    pp = params['peers']
    more = {kind: drain_phase(kind, pp) for kind in MORE_PEERS}
    return dict(more, **{
        'raw': lambda: raw_storage.run_all(
            pp['raw_commits'], pp['phase_timeout_s'], pp['rounds']),
        'huey': lambda: peers.run_huey(pp),
        'rq': lambda: peers.run_rq(pp),
        'fs': lambda: fs_phase(params['fs']),
        'zeo': lambda: zeo.run(params['zeo'], log),
        'pg': lambda: relstorage.run(params['pg'], log),
        'live': lambda: livepeers.run_with_ours(params['live'], log=log),
        'scale': lambda: scale.poll_cost(params['scale'], log),
        'memory': lambda: memory_phase(params, started, out),
    })


def run(params: Params, only: Sequence[str] = PHASES,
        log: Log = print) -> Result:
    started = time.time()
    out: Result = {
        'machine': common.machine_description(
            ('ZODB', 'ZEO', 'persistent', 'transaction', 'BTrees',
             'Twisted', 'RelStorage', 'psycopg2', 'pyramid_zcasync', 'huey',
             'rq', 'redis', 'dramatiq', 'celery', 'procrastinate',
             'psycopg')),
        'started': time.strftime('%Y-%m-%dT%H:%M:%S%z',
                                 time.localtime(started)),
        'code': common.code_version(),
        'params': params,
        'phases': list(only),
        'results': {},
        'phase_seconds': {},
        'load_average': {},
        'skipped': {},
        'errors': {},
    }
    runners = phase_runners(params, started, out, log)
    for phase in PHASES:
        if phase in only:
            out['results'][RESULT_KEYS.get(phase, phase)] = common.attempt(
                out, phase, runners[phase], log)
    out['duration_s'] = round(time.time() - started, 1)
    out['table'] = report.table(out)
    return out


def reprint(path: str) -> int:
    """The table of a saved run again, with this version's verdicts."""
    with open(path) as f:
        saved = json.load(f)
    saved['table'] = report.table(saved)
    report.print_report(saved)
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog='python -m benchmarks',
        description='The whole benchmark suite: one table, one JSON file. '
                    '"python -m benchmarks compare --help": two checkouts '
                    'side by side.')
    ap.add_argument('--quick', action='store_true',
                    help='small counts: a smoke test (figures noisy)')
    ap.add_argument('--only', default=','.join(PHASES),
                    help='comma-separated subset of ' + ','.join(PHASES))
    ap.add_argument('--json', default=None,
                    help='output path (default benchmarks/results/all.json)')
    ap.add_argument('--report', metavar='JSON', default=None,
                    help='print the table of a saved run again (with this '
                         "version's verdicts) and exit")
    ap.add_argument('--profile', metavar='DIR', default=None,
                    help='profile one extra ZEO round per process count '
                         'with py-spy; raw profiles go to DIR')
    args = ap.parse_args(argv)
    args.only = tuple(s.strip() for s in args.only.split(',') if s.strip())
    unknown = set(args.only) - set(PHASES)
    if unknown:
        ap.error('unknown phase(s): %s' % ', '.join(sorted(unknown)))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['compare']:
        from benchmarks import compare
        return compare.main(argv[1:])
    args = parse_args(argv)
    if args.report:
        return reprint(args.report)
    params = dict(QUICK if args.quick else FULL)
    if args.profile:
        params['fs'] = dict(params['fs'],
                            profile_dir=os.path.join(args.profile, 'fs'))
        params['zeo'] = dict(params['zeo'], profile_dir=args.profile)
    out = run(params, args.only, log=common.log_to_stderr)
    out['quick'] = args.quick
    report.print_report(out)
    print('wrote %s' % common.write_result('all', out, args.json))
    return 1 if out['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
