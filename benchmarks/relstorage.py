"""pyramid_zcasync on RelStorage (PostgreSQL, history-free), with
dispatcher processes.

    python -m benchmarks.relstorage [--quick] [--json PATH] [--fsync off]

The script starts a throw-away PostgreSQL cluster (tests/pgserver.py:
initdb into a temporary directory, 127.0.0.1 and a free port; fsync on,
as a production server runs, unless ``--fsync off``), a database reached
through RelStorage's zodburi URI ``postgres://...?keep_history=false``,
and dispatcher-only child processes (``python -m benchmarks.relstorage
worker URI UUID_FILE``), each with its own UUID file.  This process puts
the jobs and watches them.  The job is the peers' no-op
(``benchmarks._peer_jobs.started_at``).

raw commits
    one client commits a change of one small object, over and over: the
    storage's ceiling for one-commit-per-job work.
throughput
    the dispatchers are running and warmed up; put N jobs in one
    transaction, wait until the queue is empty and no agent holds a job;
    jobs/s = N / (time all are done - time the put started).  Every job is
    checked (COMPLETED, a float result).  Median of ``rounds`` rounds, with
    1 and with 2 dispatcher processes.
pick-up latency (across processes)
    put one job and commit here; the job returns ``time.time()`` taken as
    it starts in a dispatcher process; latency = that minus ``time.time()``
    just before ``commit()``.  Idle gaps of 20-100 ms between samples.
    The dispatchers poll every 5 s (the default): pick-up relies on their
    watching the newest transaction id (pyramid_zcasync/watch.py).

The cluster and the children are stopped by PID, the temporary directories
removed, and every wait is bounded (``phase_timeout_s``).
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import time

from benchmarks import common
from benchmarks.peers import Child
from benchmarks.zeo import Client, _wait  # the same client, on RelStorage

TESTS = os.path.join(common.project_root(), 'tests')

DEFAULTS = {
    'rounds': 3,
    'jobs': 500,
    'latency_jobs': 100,
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
QUICK = dict(DEFAULTS, rounds=1, jobs=300, latency_jobs=20, raw_commits=200,
             idle_cpu_s=1.0)


def _pgserver():
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    import pgserver
    return pgserver


def open_db(uri):
    import ZODB
    import zodburi
    factory, options = zodburi.resolve_uri(uri)
    return ZODB.DB(factory(), **options)


# -- the dispatcher child ---------------------------------------------------

def worker_main(argv):
    parser = argparse.ArgumentParser(prog='benchmarks.relstorage worker')
    parser.add_argument('uri')
    parser.add_argument('uuid_file')
    parser.add_argument('--poll', type=float, default=5.0)
    parser.add_argument('--agent-size', type=int, default=3)
    args = parser.parse_args(argv)
    from benchmarks._zc_worker import serve
    serve(open_db(args.uri), args)


class Dispatcher:
    def __init__(self, directory, name, uri, poll, agent_size, timeout=30.0):
        self.uuid_file = os.path.join(directory, name + '.uuid')
        self.child = Child(
            [sys.executable, '-m', 'benchmarks.relstorage', 'worker', uri,
             self.uuid_file, '--poll', str(poll), '--agent-size',
             str(agent_size)], os.path.join(directory, name + '.log'))
        try:
            common.wait_until(self._ready, timeout, 0.02,
                              'dispatcher %s to start' % name)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self):
        return self.child.pid

    def _ready(self):
        self.child.check_alive()
        return 'ready' in self.child.tail()

    def stop(self):
        return self.child.stop(timeout=10.0)


# -- measurements -------------------------------------------------------------

def raw_commits(db, n):
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


def cpu_seconds(pid):
    """User + system CPU time of a process so far (from /proc)."""
    with open('/proc/%s/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def idle_cpu(dispatcher, seconds):
    """CPU an idle dispatcher process uses (its 20 ms look at the newest
    transaction is a query here), as a percentage of one core."""
    before = cpu_seconds(dispatcher.pid)
    started = time.perf_counter()
    time.sleep(seconds)
    used = cpu_seconds(dispatcher.pid) - before
    return round(100 * used / (time.perf_counter() - started), 2)


def warm_up(client, n, dispatchers, timeout):
    jobs, _ = client.put(n)
    _wait(client.idle, timeout, 'warm-up jobs', dispatchers, 0.01)
    client.check(jobs)


def throughput(client, jobs, rounds, dispatchers, timeout):
    per_round = []
    for i in range(rounds):
        t0 = time.perf_counter()
        handles, _ = client.put(jobs)
        _wait(client.idle, timeout, 'round %d to finish' % (i + 1),
              dispatchers, 0.005)
        seconds = time.perf_counter() - t0
        by = client.check(handles)
        per_round.append((jobs / seconds, sorted(by.values())))
    ordered = sorted(per_round)
    return {'jobs': jobs, 'rounds': rounds,
            'jobs_per_s': round(ordered[len(ordered) // 2][0], 1),
            'jobs_per_s_rounds': [round(r[0], 1) for r in per_round],
            'jobs_by_process_rounds': [r[1] for r in per_round]}


def pickup(client, samples, gap_min_s, gap_max_s, dispatchers, timeout,
           seed=1):
    from pyramid_zcasync.interfaces import COMPLETED
    rnd = random.Random(seed)
    waits = []
    for _ in range(samples):
        (job,), before = client.put(1)

        def done():
            client.tm.begin()
            return job.status == COMPLETED
        _wait(done, timeout, 'job %r' % (job,), dispatchers, 0.001)
        waits.append(job.result - before)
        client.tm.abort()
        time.sleep(rnd.uniform(gap_min_s, gap_max_s))
    return common.latency_summary(waits)


# -- the whole run ------------------------------------------------------------

def run(params=None, log=print):
    p = dict(DEFAULTS, **(params or {}))
    pgserver = _pgserver()
    if pgserver.MISSING:
        raise SystemExit('benchmarks.relstorage: ' + pgserver.MISSING)
    timeout = p['phase_timeout_s']
    tmp = tempfile.mkdtemp(prefix='bench-relstorage-')
    server = db = client = None
    dispatchers = []
    out = {'params': dict(p), 'rows': []}
    started = time.perf_counter()
    try:
        server = pgserver.PostgreSQL(durable=p['fsync']).start()
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
        client = Client(db)
        for count in (1, 2):
            dispatchers.append(Dispatcher(
                tmp, 'dispatcher-%d' % count, uri, p['poll_interval'],
                p['agent_size']))
            warm_up(client, p['warmup_jobs'], dispatchers, timeout)
            if count == 1:
                out['idle_cpu_percent'] = idle_cpu(dispatchers[0],
                                                   p['idle_cpu_s'])
            log('  RelStorage, %d dispatcher process(es): throughput'
                % count)
            tput = throughput(client, p['jobs'], p['rounds'], dispatchers,
                              timeout)
            log('  RelStorage, %d dispatcher process(es): pick-up' % count)
            lat = pickup(client, p['latency_jobs'], p['gap_min_s'],
                         p['gap_max_s'], dispatchers, timeout)
            out['rows'].append({
                'name': 'pyramid_zcasync RelStorage-PostgreSQL, %d '
                        'dispatcher process%s'
                        % (count, '' if count == 1 else 'es'),
                'processes': count, 'poll_interval_s': p['poll_interval'],
                'agent_size': p['agent_size'],
                'throughput': tput, 'pickup': lat})
    finally:
        for d in dispatchers:
            d.stop()
        if client is not None:
            client.close()
        if db is not None:
            db.close()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out['duration_s'] = round(time.perf_counter() - started, 1)
    return out


def print_report(result, file=None):
    print('RelStorage-PostgreSQL (fsync %s): raw commits, one client: '
          '%s/s' % ('on' if result['params']['fsync'] else 'off',
                    result['raw_commits_per_s']), file=file)
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
    print('idle dispatcher at %s s poll: %s %% of one core' % (
        result['params']['poll_interval'], result['idle_cpu_percent']),
        file=file)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['worker']:
        return worker_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--fsync', choices=('on', 'off'), default='on')
    ap.add_argument('--json', default=None, help='output path (default '
                    'benchmarks/results/relstorage.json)')
    args = ap.parse_args(argv)
    params = dict(QUICK if args.quick else DEFAULTS,
                  fsync=args.fsync == 'on')
    result = run(params, log=lambda s: print(s, file=sys.stderr))
    result['machine'] = common.machine_description()
    print_report(result)
    path = (common.write_json_path(args.json, result) if args.json
            else common.write_json('relstorage', result))
    print('wrote %s (%.1f s)' % (path, result['duration_s']))


if __name__ == '__main__':
    main()
