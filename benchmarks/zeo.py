"""pyramid_zcasync over a real ZEO server, with dispatcher processes.

    python -m benchmarks.zeo [--quick] [--json PATH]

The script starts ``runzeo`` (FileStorage, fsync on every commit, as
shipped) on 127.0.0.1 and a free port, and dispatcher-only child processes
(``python -m benchmarks._zc_worker zeo``), each with its own UUID file.
This process is a ZEO client that puts the jobs and watches them.

throughput
    the dispatchers are running and warmed up; put N no-op jobs in one
    transaction and commit, then wait until the queue is empty and no agent
    holds a job; jobs/s = N / (time all are done - time the put started).
    Every job is then checked (COMPLETED, a float result) and counted by the
    dispatcher that ran it.  Median of ``rounds`` rounds.  With 1 and with
    2 dispatcher processes.
pick-up latency (across processes)
    put one job and commit in this process; the job runs in a dispatcher
    process and returns ``time.time()`` taken as it starts; latency = that
    minus ``time.time()`` taken just before ``commit()`` was called (the
    commit's own round trips and fsync count).  Idle gap of 20-100 ms
    (fixed seed) between samples, as for the peers.

The dispatchers run with the package's default poll interval (5 s): a
dispatcher hears of another process's commit from the ZEO server's
invalidations, as they arrive (pyramid_zcasync/wakeup.py), and behind that
by watching the storage's last transaction id (every 20 ms, since commit
540eabd), not by polling.  The idle CPU cost of that watching is measured
too (CPU time of an idle dispatcher process), and the CPU used by every
process during each throughput round.

Children are stopped by PID, the temporary directory is removed, and
every wait is bounded (``phase_timeout_s``).
"""
import argparse
import os
import socket
import sys
import tempfile
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence

from benchmarks import common
from benchmarks.dispatchers import (Client, DispatcherProcess, one_then_two,
                                    print_cpu, print_profiles, shut_down)
from benchmarks.peers import Child


DEFAULTS = {
    'rounds': 3,
    'jobs': 1500,              # throughput: jobs per round
    'latency_jobs': 60,        # pick-up samples
    # Enough for the dispatcher to learn that the jobs are short (its
    # running average of job time, which decides group commit).
    'warmup_jobs': 50,
    'poll_interval': 5.0,      # the package's default
    'agent_size': 3,
    'gap_min_s': 0.020,
    'gap_max_s': 0.100,
    'idle_cpu_s': 3.0,         # how long the idle CPU cost is measured
    'profile_jobs': 5000,      # the extra round under py-spy (--profile)
    'phase_timeout_s': 60.0,
}
QUICK = dict(DEFAULTS, rounds=1, jobs=500, latency_jobs=20, idle_cpu_s=1.0,
             profile_jobs=1000)


# -- the ZEO server -----------------------------------------------------------

class ZEOServer:
    """runzeo on 127.0.0.1 and a free port, FileStorage in ``directory``;
    stopped by PID."""

    def __init__(self, directory: str, timeout: float = 20.0) -> None:
        self.directory = directory
        self.path = os.path.join(directory, 'zeo.fs')
        self.timeout = timeout
        self.port = 0
        self.child: Optional[Child] = None

    def start(self) -> 'ZEOServer':
        self.port = port = common.free_port()
        runzeo = os.path.join(os.path.dirname(sys.executable), 'runzeo')
        argv = ([runzeo] if os.path.exists(runzeo)
                else [sys.executable, '-m', 'ZEO.runzeo'])
        self.child = child = Child(
            argv + ['-a', '127.0.0.1:%d' % port, '-f', self.path],
            os.path.join(self.directory, 'zeo.log'))

        def listening() -> bool:
            child.check_alive()
            with socket.socket() as s:
                return s.connect_ex(('127.0.0.1', port)) == 0
        common.wait_until(listening, self.timeout, 0.02,
                          'the ZEO server to listen on port %d' % self.port)
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    def db(self) -> Any:
        from benchmarks._zc_worker import zeo_db
        return zeo_db(self.port)


# -- the whole ZEO run --------------------------------------------------------

def run(params: Optional[Dict[str, Any]] = None,
        log: Callable[[str], None] = print) -> Dict[str, Any]:
    """All ZEO rows; returns a JSON-able dict."""
    p = dict(DEFAULTS, **(params or {}))
    tmp = tempfile.mkdtemp(prefix='bench-zeo-')
    server = None
    db = client = None
    dispatchers: List[DispatcherProcess] = []
    out: Dict[str, Any] = {'params': dict(p), 'rows': []}
    started = time.perf_counter()
    try:
        server = ZEOServer(tmp).start()
        db = server.db()
        import pyramid_zcasync
        pyramid_zcasync.install_queues(db)
        client = Client(db)
        port = server.port
        out['idle_cpu'], out['rows'] = one_then_two(
            client, lambda name: DispatcherProcess(
                tmp, name, port, p['poll_interval'], p['agent_size']),
            dispatchers, p, 'ZEO', log, server)
    finally:
        shut_down(dispatchers, client, db, server, tmp)
    out['duration_s'] = round(time.perf_counter() - started, 1)
    return out


def print_report(result: Dict[str, Any],
                 file: Optional[IO[str]] = None) -> None:
    headers = ['benchmark', 'n', 'jobs/s', 'pickup p50 ms', 'pickup p95 ms',
               'poll s']
    rows = []
    for r in result['rows']:
        rows.append([r['name'], r['throughput']['jobs'],
                     r['throughput']['jobs_per_s'], r['pickup']['p50_ms'],
                     r['pickup']['p95_ms'], r['poll_interval_s']])
    common.print_table(headers, rows, out=file)
    print_cpu(result, file)
    print_profiles(result, file)
    cpu = result.get('idle_cpu')
    if cpu:
        print('idle dispatcher at %s s poll: %s %% of one core'
              % (cpu['poll_interval_s'], cpu['cpu_percent_of_one_core'][0]),
              file=file)


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--json', default=None,
                    help='output path (default benchmarks/results/zeo.json)')
    ap.add_argument('--profile', metavar='DIR', default=None,
                    help='also run one uncounted round per process count '
                         'under py-spy; raw profiles go to DIR')
    args = ap.parse_args(argv)
    params = dict(QUICK if args.quick else DEFAULTS,
                  profile_dir=args.profile)
    common.report_and_write('zeo', run(params, log=common.log_to_stderr),
                            args.json, print_report)


if __name__ == '__main__':
    main()
