"""The peers' live rows: RQ, Dramatiq, Celery (Redis) and procrastinate
(PostgreSQL) with web-style producers, measured as benchmarks/live.py
measures ours and Huey.

    python -m benchmarks.livepeers [--quick] [--only rq,dramatiq,celery,procrastinate]
                                   [--threads 2,4] [--jobs N] [--rounds N]
                                   [--json PATH]

Without ``--only`` every live row runs, in one run: live.py's (ours on
FileStorage, ZEO, RelStorage; Huey) first, then the peers'; ``--only``
takes any subset of both (e.g. ``fs,huey,rq``).

Each row starts the peer's server and one worker process
(benchmarks/morepeers.py: 2 threads, or concurrency 2, where the peer
has them; RQ one job at a time), warms it up, then runs live.py's rounds:
THREADS producer threads in this process, each putting PUTS jobs one
call at a time as fast as it can.  The figures are live.py's (live
jobs/s, put CPU = the producers' thread_time / puts, worker CPU per job =
the worker process's CPU plus this process's less the producers', pick-up
p50 = the job's start - its put call's return), every job checked done
with a float.  ``python -m benchmarks --only live`` runs these beside
ours and Huey and shows each row's ratio to Huey's and ours.
"""
import functools
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks import common, live, morepeers

Params = Dict[str, Any]
Result = Dict[str, Any]

SYSTEMS = ('rq', 'dramatiq', 'celery', 'procrastinate')
DEFAULTS: Params = dict(live.DEFAULTS, peer_threads=2)
QUICK: Params = dict(live.QUICK, peer_threads=2)


class LivePeer:
    """A morepeers.Peer as live.rows_for drives a system."""

    def __init__(self, peer: morepeers.Peer) -> None:
        self.peer = peer

    def open_put(self) -> Tuple[live.PutOne, Callable[[], None]]:
        def put() -> live.Handle:
            job = self.peer.put_tracked()
            return job, time.time()
        return put, lambda: None

    def done(self, jobs: int) -> bool:
        """Every job put so far is done (the rounds before this one were
        checked done already)."""
        return self.peer.all_done()

    def pickups(self, handles: Sequence[live.Handle]) -> List[float]:
        return [self.peer.started_at(job) - returned
                for job, returned in handles]


def live_rows(kind: str, params: Params) -> List[Result]:
    """The peer ``kind``'s rows, one per producer thread count, each with
    the server's CPU per job over its rounds (pick-up checks included)."""
    rows = []
    with morepeers.running(kind, params) as peer:
        system = LivePeer(peer)
        for threads in params['threads']:
            server0 = peer.server_cpu()
            row, = live.rows_for(
                system, peer.name, peer.persistence,
                dict(params, threads=(threads,)),
                lambda: peer.worker_cpu() + common.process_cpu_seconds())
            row.update(system=kind, concurrency=peer.concurrency,
                       server=peer.server, failures=0,
                       server_cpu_ms_per_job=round(
                           1000 * (peer.server_cpu() - server0)
                           / (row['jobs'] * params['rounds']), 3))
            rows.append(row)
    return rows


def run(params: Optional[Params] = None, only: Sequence[str] = SYSTEMS,
        log: Callable[[str], None] = print) -> Result:
    """Every selected peer's rows, as live.run returns ours."""
    runners: Dict[str, Callable[[Params], List[Result]]] = {
        kind: functools.partial(live_rows, kind) for kind in SYSTEMS}
    return live.run(params, only, log, runners=runners, defaults=DEFAULTS)


def merged(ours: Result, peers: Result) -> Result:
    """live.run's result with the peers' rows, skips, errors, seconds and
    load averages added: the suite's live phase, one table (each row
    against Huey's)."""
    out = dict(ours, rows=list(ours['rows']) + list(peers['rows']),
               duration_s=round(ours['duration_s'] + peers['duration_s'], 1))
    for key in ('skipped', 'errors', 'params', 'phase_seconds',
                'load_average'):
        out[key] = dict(ours.get(key) or {}, **(peers.get(key) or {}))
    return out


def run_with_ours(params: Params, ours: Sequence[str] = live.SYSTEMS,
                  peers: Sequence[str] = SYSTEMS,
                  log: Callable[[str], None] = print) -> Result:
    """live.py's rows for ``ours`` (its systems: ours and Huey), then the
    peers' in the same run: the suite's ``live`` phase."""
    p = dict(DEFAULTS, **params)
    return merged(live.run(p, ours, log=log), run(p, peers, log=log))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = morepeers.options(__doc__.splitlines()[0],
                           SYSTEMS + live.SYSTEMS, 'livepeers')
    ap.add_argument('--threads', default=None,
                    help='producer thread counts, e.g. 2,4')
    ap.add_argument('--jobs', type=int, default=None,
                    help='jobs per round, over all producer threads')
    ap.add_argument('--rounds', type=int, default=None,
                    help='rounds per thread count (the median is shown)')
    args = ap.parse_args(argv)
    params = dict(QUICK if args.quick else DEFAULTS)
    if args.threads:
        params['threads'] = tuple(int(t) for t in args.threads.split(','))
    params.update({k: getattr(args, k) for k in ('jobs', 'rounds')
                   if getattr(args, k)})
    result = run_with_ours(params, [s for s in live.SYSTEMS
                                    if s in args.only], args.only,
                           log=common.log_to_stderr)
    result['code'] = common.code_version()
    common.report_and_write('livepeers', result, args.json,
                            live.print_report)
    return 1 if result['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
