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
dispatcher notices another process's commit by watching the storage's last
transaction id (every 20 ms, since commit 540eabd), not by polling.  The
idle CPU cost of that watching is measured too (CPU time of an idle
dispatcher process), and the CPU used by every process during each
throughput round.

Children are stopped by PID, the temporary directory is removed, and
every wait is bounded (``phase_timeout_s``).
"""
import argparse
import os
import random
import shutil
import socket
import sys
import tempfile
import time

from benchmarks import common
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


# -- processes ----------------------------------------------------------------

def cpu_seconds(pid: str = 'self'):
    """User + system CPU time of a process so far (from /proc)."""
    with open('/proc/%s/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class ZEOServer:
    """runzeo on 127.0.0.1 and a free port, FileStorage in ``directory``;
    stopped by PID."""

    def __init__(self, directory, timeout: float = 20.0) -> None:
        self.directory = directory
        self.path = os.path.join(directory, 'zeo.fs')
        self.timeout = timeout
        self.port = None
        self.child = None

    def start(self):
        self.port = common.free_port()
        runzeo = os.path.join(os.path.dirname(sys.executable), 'runzeo')
        argv = ([runzeo] if os.path.exists(runzeo)
                else [sys.executable, '-m', 'ZEO.runzeo'])
        self.child = Child(argv + ['-a', '127.0.0.1:%d' % self.port,
                                   '-f', self.path],
                           os.path.join(self.directory, 'zeo.log'))

        def listening():
            self.child.check_alive()
            with socket.socket() as s:
                return s.connect_ex(('127.0.0.1', self.port)) == 0
        common.wait_until(listening, self.timeout, 0.02,
                          'the ZEO server to listen on port %d' % self.port)
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    def db(self):
        from benchmarks._zc_worker import zeo_db
        return zeo_db(self.port)


class Dispatcher:
    """A dispatcher-only child process over the ZEO server."""

    def __init__(self, directory, name, where, poll, agent_size,
                 timeout: float = 30.0) -> None:
        """``where``: the ZEO server's port (a RelStorage URI in the
        subclass); waits until the child says ``ready``."""
        self.uuid_file = os.path.join(directory, name + '.uuid')
        self.poll = poll
        self.child = Child(
            self.command(where) + [self.uuid_file, '--poll', str(poll),
                                   '--agent-size', str(agent_size)],
            os.path.join(directory, name + '.log'))
        try:
            common.wait_until(self._ready, timeout, 0.02,
                              'dispatcher %s to start' % name)
            from pyramid_zcasync.instance import read_uuid
            self.uuid = read_uuid(self.uuid_file, create=False)
        except BaseException:
            self.stop()
            raise

    def command(self, port):
        return [sys.executable, '-m', 'benchmarks._zc_worker', 'zeo',
                str(port)]

    @property
    def pid(self):
        return self.child.pid

    def _ready(self) -> bool:
        self.child.check_alive()
        return 'ready' in self.child.tail()

    def cpu_seconds(self):
        return cpu_seconds(self.pid)

    def stop(self):
        return self.child.stop(timeout=10.0)


# -- measurements -------------------------------------------------------------

class Client:
    """This process's view of the database: a connection for puts and one
    for watching, each with its own transaction manager."""

    def __init__(self, db) -> None:
        import transaction
        self.db = db
        self.tm = transaction.TransactionManager()
        self.connection = db.open(transaction_manager=self.tm)
        self.probe_tm = transaction.TransactionManager()
        self.probe = db.open(transaction_manager=self.probe_tm)

    def close(self) -> None:
        self.tm.abort()
        self.probe_tm.abort()
        self.connection.close()
        self.probe.close()

    def queue(self, connection):
        from pyramid_zcasync.interfaces import KEY
        return connection.root()[KEY]['']

    def put(self, n):
        from benchmarks._peer_jobs import started_at
        self.tm.begin()
        queue = self.queue(self.connection)
        jobs = [queue.put(started_at) for _ in range(n)]
        before = time.time()
        self.tm.commit()
        return jobs, before

    def idle(self):
        """True once no job is pending and no agent holds one."""
        return common.queue_drained(self.probe_tm, self.probe, self.queue)

    def check(self, jobs):
        """Every job COMPLETED with a float result; count by dispatcher."""
        from pyramid_zcasync.interfaces import COMPLETED
        self.tm.begin()
        self.connection.prefetch(jobs)
        by = {}
        for job in jobs:
            if job.status != COMPLETED or not isinstance(job.result, float):
                raise RuntimeError('job %r: status %s, result %r'
                                   % (job, job.status, job.result))
            by[job.assignerUUID] = by.get(job.assignerUUID, 0) + 1
        self.tm.abort()
        return by


def _wait(pred, timeout, what, dispatchers, interval):
    def check():
        for d in dispatchers:
            d.child.check_alive()
        return pred()
    return common.wait_until(check, timeout, interval, what)


def warm_up(client, n, dispatchers, timeout) -> None:
    jobs, _ = client.put(n)
    _wait(client.idle, timeout, 'warm-up jobs', dispatchers, 0.01)
    client.check(jobs)


def throughput(client, jobs, rounds, dispatchers, timeout, server=None):
    """Median of ``rounds`` rounds; each round also records the CPU used
    by every process involved, as a percentage of one core."""
    per_round = []
    pids = {'this process': 'self'}
    if server is not None:
        pids['ZEO server'] = server.child.pid
    for d in dispatchers:
        pids['dispatcher pid %d' % d.pid] = d.pid
    from benchmarks.throughput import transactions_between
    for i in range(rounds):
        tid0 = client.db.storage.lastTransaction()
        cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
        t0 = time.perf_counter()
        handles, _ = client.put(jobs)
        t_put = time.perf_counter()
        _wait(client.idle, timeout, 'round %d to finish' % (i + 1),
              dispatchers, 0.005)
        t1 = time.perf_counter()
        used = {k: cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
        cpu = {k: round(100 * u / (t1 - t0), 1) for k, u in used.items()}
        by = client.check(handles)
        stats = (transactions_between(server.path, tid0,
                                      client.db.storage.lastTransaction())
                 if server is not None else {})
        names = {d.uuid: 'pid %d' % d.pid for d in dispatchers}
        per_round.append({
            'seconds': t1 - t0, 'put_seconds': t_put - t0,
            'jobs_per_s': jobs / (t1 - t0),
            'cpu_percent': cpu,
            'cpu_ms_per_job': round(1000 * sum(used.values()) / jobs, 3),
            'commits': stats.get('commits'), 'records': stats.get('records'),
            'jobs_by_process': {names.get(u, str(u)): n
                                for u, n in by.items()}})
    ordered = sorted(per_round, key=lambda r: r['jobs_per_s'])
    med = ordered[len(ordered) // 2]
    return {
        'jobs': jobs, 'rounds': rounds,
        'jobs_per_s': round(med['jobs_per_s'], 1),
        'seconds': round(med['seconds'], 4),
        'put_seconds': round(med['put_seconds'], 4),
        'jobs_per_s_rounds': [round(r['jobs_per_s'], 1) for r in per_round],
        'jobs_by_process_rounds': [r['jobs_by_process'] for r in per_round],
        'cpu_percent': med['cpu_percent'],
        'cpu_ms_per_job': med['cpu_ms_per_job'],
        'commits': med['commits'], 'records': med['records'],
        'cpu_percent_rounds': [r['cpu_percent'] for r in per_round],
        'load_average': os.getloadavg(),
    }


def profiled_round(client, jobs, dispatchers, timeout, server, directory):
    """One more round, not counted, with py-spy on the ZEO server and on
    every dispatcher; returns the profiles' summaries."""
    from benchmarks import spy
    if not spy.available():
        return {'error': 'py-spy is not on PATH'}
    pids = {'ZEO server': server.child.pid}
    for i, d in enumerate(dispatchers):
        pids['dispatcher %d' % (i + 1)] = d.pid
    os.makedirs(directory, exist_ok=True)
    recorder = spy.Recorder(pids, directory)
    try:
        time.sleep(0.5)   # py-spy attached
        t0 = time.perf_counter()
        handles, _ = client.put(jobs)
        _wait(client.idle, timeout, 'the profiled round', dispatchers,
              0.005)
        seconds = time.perf_counter() - t0
    finally:
        profiles = recorder.stop()
    by = client.check(handles)
    names = {d.uuid: 'dispatcher %d' % (i + 1)
             for i, d in enumerate(dispatchers)}
    return {'jobs': jobs, 'jobs_per_s': round(jobs / seconds, 1),
            'jobs_by_process': {names.get(u, str(u)): n
                                for u, n in by.items()},
            'directory': directory, 'profiles': profiles}


def pickup(client, samples, gap_min_s, gap_max_s, dispatchers, timeout,
           seed: int = 1):
    """Latency from the commit call (and from its return) of a one-job
    put to the job's start in a dispatcher process."""
    from pyramid_zcasync.interfaces import COMPLETED
    rnd = random.Random(seed)
    from_call, from_return, commit_s = [], [], []
    deadline = time.monotonic() + timeout
    for _ in range(samples):
        if time.monotonic() > deadline:
            break
        (job,), before = client.put(1)
        after = time.time()

        def done():
            client.tm.begin()
            return job.status == COMPLETED
        _wait(done, timeout, 'job %r' % (job,), dispatchers, 0.001)
        started = job.result
        client.tm.abort()
        from_call.append(started - before)
        from_return.append(started - after)
        commit_s.append(after - before)
        time.sleep(rnd.uniform(gap_min_s, gap_max_s))
    summary = common.latency_summary(from_call)
    summary['from_commit_return'] = common.latency_summary(from_return)
    summary['commit_call'] = common.latency_summary(commit_s)
    return summary


def idle_cpu(dispatchers, seconds):
    """CPU used by idle dispatcher processes, as a percentage of one core."""
    before = [d.cpu_seconds() for d in dispatchers]
    t0 = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    used = [d.cpu_seconds() - b for d, b in zip(dispatchers, before)]
    return {'seconds': round(elapsed, 2),
            'cpu_percent_of_one_core': [round(100 * u / elapsed, 2)
                                        for u in used]}


# -- the whole ZEO run --------------------------------------------------------

def run(params=None, log=print):
    """All ZEO rows; returns a JSON-able dict."""
    p = dict(DEFAULTS, **(params or {}))
    timeout = p['phase_timeout_s']
    tmp = tempfile.mkdtemp(prefix='bench-zeo-')
    server = None
    db = client = None
    dispatchers = []
    out = {'params': dict(p), 'rows': []}
    started = time.perf_counter()
    try:
        server = ZEOServer(tmp).start()
        db = server.db()
        import pyramid_zcasync
        pyramid_zcasync.install_queues(db)
        client = Client(db)

        def start(name, poll):
            d = Dispatcher(tmp, name, server.port, poll, p['agent_size'])
            dispatchers.append(d)
            return d

        first = start('dispatcher-1', p['poll_interval'])
        warm_up(client, p['warmup_jobs'], dispatchers, timeout)
        out['idle_cpu'] = dict(idle_cpu([first], p['idle_cpu_s']),
                               poll_interval_s=p['poll_interval'])
        for count in (1, 2):
            if count == 2:
                start('dispatcher-2', p['poll_interval'])
                warm_up(client, p['warmup_jobs'], dispatchers, timeout)
            log('  ZEO, %d dispatcher process(es): throughput' % count)
            tput = throughput(client, p['jobs'], p['rounds'], dispatchers,
                              timeout, server)
            profile = None
            if p.get('profile_dir'):
                log('  ZEO, %d dispatcher process(es): profiled round'
                    % count)
                profile = profiled_round(
                    client, p['profile_jobs'], dispatchers, timeout, server,
                    os.path.join(p['profile_dir'], 'zeo-%d' % count))
            log('  ZEO, %d dispatcher process(es): pick-up' % count)
            lat = pickup(client, p['latency_jobs'], p['gap_min_s'],
                         p['gap_max_s'], dispatchers, timeout)
            out['rows'].append({
                'name': 'pyramid_zcasync ZEO, %d dispatcher process%s'
                        % (count, '' if count == 1 else 'es'),
                'processes': count, 'poll_interval_s': p['poll_interval'],
                'agent_size': p['agent_size'],
                'throughput': tput, 'pickup': lat})
            if profile is not None:
                out['rows'][-1]['profile'] = profile
    finally:
        shut_down(dispatchers, client, db, server, tmp)
    out['duration_s'] = round(time.perf_counter() - started, 1)
    return out


def shut_down(dispatchers, client, db, server, directory) -> None:
    """Stop what a run started, whichever of it got started (None for the
    rest), children and server by PID, and remove its directory (unless
    None: kept for a look)."""
    for d in dispatchers:
        d.stop()
    if client is not None:
        client.close()
    if db is not None:
        db.close()
    if server is not None:
        server.stop()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def print_report(result, file=None) -> None:
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


def print_cpu(result, file=None) -> None:
    """CPU of each process during the median throughput round, and the
    transactions the round committed."""
    for r in result['rows']:
        t = r['throughput']
        cpu = t.get('cpu_percent') or {}
        print('%s, median round: %s commits for %d jobs; CPU %.2f ms/job '
              '(%% of a core: %s); load average %s' % (
                  r['name'], t.get('commits'), t['jobs'],
                  t.get('cpu_ms_per_job') or 0,
                  ', '.join('%s %.0f' % kv for kv in cpu.items()),
                  ' '.join('%.1f' % x for x in t.get('load_average', ()))),
              file=file)


def print_profiles(result, file=None) -> None:
    for r in result['rows']:
        prof = r.get('profile')
        if not prof or 'profiles' not in prof:
            continue
        print('py-spy, %s (an extra round of %d jobs, %.0f jobs/s under the '
              'profiler%s); share of samples with the operation on the '
              'stack:' % (r['name'], prof['jobs'], prof['jobs_per_s'],
                          '; jobs run: ' + ', '.join(
                              '%s %d' % kv for kv in sorted(
                                  prof['jobs_by_process'].items()))
                          if prof.get('jobs_by_process') else ''),
              file=file)
        for name, s in prof['profiles'].items():
            if 'focus_inclusive' not in s:
                print('  %s: %s' % (name, s.get('error')), file=file)
                continue
            print('  %s (%d samples): %s' % (
                name, s['samples'], ', '.join(
                    '%s %.0f%%' % kv for kv in s['focus_inclusive'].items())),
                file=file)


def main(argv=None) -> None:
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
    result = run(params, log=common.log_to_stderr)
    result['machine'] = common.machine_description()
    print_report(result)
    path = common.write_result('zeo', result, args.json)
    print('wrote %s (%.1f s)' % (path, result['duration_s']))


if __name__ == '__main__':
    main()
