"""Dispatcher processes over a shared storage, measured from this one.

The ZEO rows (zeo.py) and the RelStorage rows (relstorage.py) measure the
same things the same way: dispatcher-only child processes, this process
putting the jobs and watching them through a second connection, and the
CPU of every process read from /proc.  Only the server differs.

throughput
    the dispatchers running and warmed up; put N no-op jobs in one
    transaction, wait until no job is pending and no agent holds one;
    jobs/s = N / (all done - put started); every job checked and counted
    by the dispatcher that ran it; median of ``rounds``.
pick-up latency
    put one job and commit; latency from just before ``commit()`` to the
    job's start in a dispatcher process (``from_commit_return``: from its
    return); idle gaps of 20-100 ms between samples.
idle CPU
    CPU time of an idle dispatcher process, as a percentage of one core.
"""
import os
import random
import shutil
import sys
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks import common
from benchmarks.peers import Child

Result = Dict[str, Any]


# -- processes ----------------------------------------------------------------

def cpu_seconds(pid: object = 'self') -> float:
    """User + system CPU time of a process so far (from /proc)."""
    with open('/proc/%s/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class DispatcherProcess:
    """A dispatcher-only child process over the ZEO server."""

    def __init__(self, directory: str, name: str, where: Any, poll: float,
                 agent_size: int, timeout: float = 30.0) -> None:
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

    def command(self, port: Any) -> List[str]:
        return [sys.executable, '-m', 'benchmarks._zc_worker', 'zeo',
                str(port)]

    @property
    def pid(self) -> int:
        return self.child.pid

    def _ready(self) -> bool:
        self.child.check_alive()
        return 'ready' in self.child.tail()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> int:
        return self.child.stop(timeout=10.0)


# -- measurements -------------------------------------------------------------

class Client:
    """This process's view of the database: a connection for puts and one
    for watching, each with its own transaction manager."""

    def __init__(self, db: Any) -> None:
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

    def queue(self, connection: Any) -> Any:
        from pyramid_zcasync.interfaces import KEY
        return connection.root()[KEY]['']

    def put(self, n: int) -> Tuple[List[Any], float]:
        """Put ``n`` no-op jobs in one transaction; the jobs, and the
        time just before ``commit()`` was called."""
        from benchmarks._peer_jobs import started_at
        self.tm.begin()
        queue = self.queue(self.connection)
        jobs = [queue.put(started_at) for _ in range(n)]
        before = time.time()
        self.tm.commit()
        return jobs, before

    def idle(self) -> bool:
        """True once no job is pending and no agent holds one."""
        return common.queue_drained(self.probe_tm, self.probe, self.queue)

    def check(self, jobs: Sequence[Any]) -> Dict[str, int]:
        """Every job COMPLETED with a float result; count by dispatcher."""
        from pyramid_zcasync.interfaces import COMPLETED
        self.tm.begin()
        self.connection.prefetch(jobs)
        by: Dict[str, int] = {}
        for job in jobs:
            if job.status != COMPLETED or not isinstance(job.result, float):
                raise RuntimeError('job %r: status %s, result %r'
                                   % (job, job.status, job.result))
            by[job.assignerUUID] = by.get(job.assignerUUID, 0) + 1
        self.tm.abort()
        return by


def _wait(pred: Callable[[], Any], timeout: float, what: str,
          dispatchers: Sequence[DispatcherProcess], interval: float) -> Any:
    def check() -> Any:
        for d in dispatchers:
            d.child.check_alive()
        return pred()
    return common.wait_until(check, timeout, interval, what)


def warm_up(client: Client, n: int,
            dispatchers: Sequence[DispatcherProcess], timeout: float) -> None:
    jobs, _ = client.put(n)
    _wait(client.idle, timeout, 'warm-up jobs', dispatchers, 0.01)
    client.check(jobs)


def _pids(dispatchers: Sequence[DispatcherProcess],
          server: Any) -> Dict[str, object]:
    """Every process whose CPU a round counts, by the name shown."""
    pids: Dict[str, object] = {'this process': 'self'}
    if server is not None:
        pids['ZEO server'] = server.child.pid
    for d in dispatchers:
        pids['dispatcher pid %d' % d.pid] = d.pid
    return pids


def throughput_round(client: Client, jobs: int,
                     dispatchers: Sequence[DispatcherProcess],
                     timeout: float, server: Any, label: str) -> Result:
    """Put ``jobs`` jobs in one transaction and wait until all are done;
    the CPU used by every process, as a percentage of one core, and
    which dispatcher ran how many."""
    from benchmarks.throughput import transactions_between
    pids = _pids(dispatchers, server)
    tid0 = client.db.storage.lastTransaction()
    cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
    t0 = time.perf_counter()
    handles, _ = client.put(jobs)
    t_put = time.perf_counter()
    _wait(client.idle, timeout, label, dispatchers, 0.005)
    t1 = time.perf_counter()
    used = {k: cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
    by = client.check(handles)
    stats = (transactions_between(server.path, tid0,
                                  client.db.storage.lastTransaction())
             if server is not None else {})
    names = {d.uuid: 'pid %d' % d.pid for d in dispatchers}
    return {
        'seconds': t1 - t0, 'put_seconds': t_put - t0,
        'jobs_per_s': jobs / (t1 - t0),
        'cpu_percent': {k: round(100 * u / (t1 - t0), 1)
                        for k, u in used.items()},
        'cpu_ms_per_job': round(1000 * sum(used.values()) / jobs, 3),
        'commits': stats.get('commits'), 'records': stats.get('records'),
        'jobs_by_process': {names.get(u, str(u)): n for u, n in by.items()}}


def throughput(client: Client, jobs: int, rounds: int,
               dispatchers: Sequence[DispatcherProcess], timeout: float,
               server: Any = None) -> Result:
    """Median of ``rounds`` rounds (``throughput_round``), every round's
    rate, CPU and split between dispatchers kept: the noise."""
    per_round = [throughput_round(client, jobs, dispatchers, timeout, server,
                                  'round %d to finish' % (i + 1))
                 for i in range(rounds)]
    ordered = sorted(per_round, key=lambda r: float(r['jobs_per_s']))
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


def profiled_round(client: Client, jobs: int,
                   dispatchers: Sequence[DispatcherProcess], timeout: float,
                   server: Any, directory: str) -> Result:
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


def pickup(client: Client, samples: int, gap_min_s: float, gap_max_s: float,
           dispatchers: Sequence[DispatcherProcess], timeout: float,
           seed: int = 1) -> Result:
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

        def done() -> bool:
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


def idle_cpu(dispatchers: Sequence[DispatcherProcess],
             seconds: float) -> Result:
    """CPU used by idle dispatcher processes, as a percentage of one core."""
    before = [d.cpu_seconds() for d in dispatchers]
    t0 = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    used = [d.cpu_seconds() - b for d, b in zip(dispatchers, before)]
    return {'seconds': round(elapsed, 2),
            'cpu_percent_of_one_core': [round(100 * u / elapsed, 2)
                                        for u in used]}


def measure_row(client: Client, dispatchers: Sequence[DispatcherProcess],
                params: Result, storage: str, log: Callable[[str], None],
                server: Any = None) -> Result:
    """The row of ``len(dispatchers)`` processes: throughput, then
    pick-up (and, with ``profile_dir`` and a ZEO server, one more round
    under py-spy between them)."""
    p, count = params, len(dispatchers)
    timeout = p['phase_timeout_s']
    what = '  %s, %d dispatcher process(es): ' % (storage, count)
    log(what + 'throughput')
    row = {'name': 'pyramid_zcasync %s, %d dispatcher process%s'
                   % (storage, count, '' if count == 1 else 'es'),
           'processes': count, 'poll_interval_s': p['poll_interval'],
           'agent_size': p['agent_size'],
           'throughput': throughput(client, p['jobs'], p['rounds'],
                                    dispatchers, timeout, server)}
    if p.get('profile_dir') and server is not None:
        log(what + 'profiled round')
        row['profile'] = profiled_round(
            client, p['profile_jobs'], dispatchers, timeout, server,
            os.path.join(p['profile_dir'], '%s-%d' % (storage.lower(),
                                                      count)))
    log(what + 'pick-up')
    row['pickup'] = pickup(client, p['latency_jobs'], p['gap_min_s'],
                           p['gap_max_s'], dispatchers, timeout)
    return row


def one_then_two(client: Client,
                 start: Callable[[str], DispatcherProcess],
                 dispatchers: List[DispatcherProcess], params: Result,
                 storage: str, log: Callable[[str], None],
                 server: Any = None) -> Tuple[Result, List[Result]]:
    """One dispatcher process, then a second beside it, each warmed up
    first: SPEC asks that a second process add throughput.  Returns the
    idle CPU of the first and the two rows.  The processes ``start(name)``
    makes go into ``dispatchers`` as they start, for the caller to stop
    whatever happens."""
    idle: Result = {}
    rows = []
    for count in (1, 2):
        dispatchers.append(start('dispatcher-%d' % count))
        warm_up(client, params['warmup_jobs'], dispatchers,
                params['phase_timeout_s'])
        if count == 1:
            idle = dict(idle_cpu(dispatchers, params['idle_cpu_s']),
                        poll_interval_s=params['poll_interval'])
        rows.append(measure_row(client, dispatchers, params, storage, log,
                                server))
    return idle, rows


def shut_down(dispatchers: Sequence[Any], client: Any, db: Any, server: Any,
              directory: Optional[str]) -> None:
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


def print_cpu(result: Result, file: Optional[IO[str]] = None) -> None:
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


def print_profiles(result: Result,
                   file: Optional[IO[str]] = None) -> None:
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
