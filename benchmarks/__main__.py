"""The whole benchmark suite in one run: one table, one JSON file.

    python -m benchmarks [--quick] [--only PHASES] [--json PATH]

Run from the project root.  Phases, in this order (``--only`` takes any
subset, comma-separated):

raw     raw FileStorage commit rate (the denominator of every ``x raw FS``)
huey    Huey, SqliteHuey, 1 consumer x 2 threads
rq      RQ, redis-server started here, 1 and 2 SimpleWorker processes
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
import os
import sys
import time

from benchmarks import (common, peers, pickup, relstorage, scale,
                        throughput, zeo)


PHASES = ('raw', 'huey', 'rq', 'fs', 'zeo', 'pg', 'scale', 'memory')

FULL = {
    'budget_s': 320.0,
    'peers': dict(peers.DEFAULTS),
    'fs': {'jobs': 3000, 'rounds': 3, 'bulk_jobs': 10000, 'bulk_rounds': 3,
           'latency_jobs': 100, 'gap_min_s': 0.020, 'gap_max_s': 0.100,
           'raw_alongside_commits': 1500},
    'zeo': dict(zeo.DEFAULTS),
    'pg': dict(relstorage.DEFAULTS),
    'scale': dict(scale.DEFAULTS),
}
QUICK = dict(
    FULL, budget_s=120.0, peers=dict(peers.QUICK), zeo=dict(zeo.QUICK),
    pg=dict(relstorage.QUICK), scale=dict(scale.QUICK),
    fs=dict(FULL['fs'], jobs=500, rounds=1, bulk_rounds=1, latency_jobs=20,
            raw_alongside_commits=300))

# SPEC, "Non-functional targets".
TARGET_RAW = 0.75          # x raw FileStorage commit rate, one process
TARGET_RQ1 = 3.0           # x RQ with one worker
TARGET_PICKUP_LOCAL_MS = 5.0
TARGET_PICKUP_ZEO_MS = 50.0
TARGET_BULK_S = 1.0
# Our reading of the qualitative targets (README, "Targets"):
TARGET_GROWTH = 1.10       # 2 processes over ZEO vs 1: beyond the noise
TARGET_FLAT_POLL = 1.25    # idle poll CPU, 100k kept / 0 kept
TARGET_FLAT_JOB = 1.25     # CPU per job end to end, 100k kept / 0 kept
TARGET_MEMORY_TAIL = 0.05  # RSS growth once every history is full
TARGET_POOLED_GROWTH = 1.5  # peak of the 2nd half / 1st half of the jobs


def run(params, only=PHASES, log=print):
    started = time.time()
    out = {
        'machine': common.machine_description(
            ('ZODB', 'ZEO', 'persistent', 'transaction', 'BTrees',
             'Twisted', 'RelStorage', 'psycopg2', 'pyramid_zcasync', 'huey',
             'rq', 'redis')),
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
    res = out['results']

    def attempt(key, measure):
        return common.attempt(out, key, measure, log)

    pp = params['peers']
    gaps = dict(gap_min_s=pp['gap_min_s'], gap_max_s=pp['gap_max_s'],
                phase_timeout_s=pp['phase_timeout_s'])
    if 'raw' in only:
        res['raw_storage'] = attempt('raw', lambda: raw_storage_all(pp))
    if 'huey' in only:
        res['huey'] = attempt('huey', lambda: peers.run_huey(
            pp['huey_jobs'], pp['rounds'], pp['latency_jobs'],
            pp['huey_threads'], pp['warmup_jobs'], **gaps))
    if 'rq' in only:
        res['rq'] = attempt('rq', lambda: peers.run_rq(
            tuple(pp['rq_workers']), pp['rq_jobs'], pp['rounds'],
            pp['latency_jobs'], pp['warmup_jobs'], **gaps))
    if 'fs' in only:
        res['fs'] = attempt('fs', lambda: fs_phase(params['fs']))
    if 'zeo' in only:
        res['zeo'] = attempt('zeo', lambda: zeo.run(params['zeo'], log))
    if 'pg' in only:
        res['pg'] = attempt('pg', lambda: relstorage.run(params['pg'], log))
    if 'scale' in only:
        res['scale'] = attempt('scale', lambda: scale.poll_cost(
            params['scale'], log))
    if 'memory' in only:
        # Last, with the rest of the time budget (the child stops early,
        # and says so, rather than overrun it).
        left = params['budget_s'] - (time.time() - started)
        sp = dict(params['scale'], memory_timeout_s=max(
            30.0, min(params['scale']['memory_timeout_s'], left - 10)))
        out['params']['memory_timeout_s_given'] = sp['memory_timeout_s']
        res['memory'] = attempt('memory',
                                lambda: scale.Memory(sp).result())
    out['duration_s'] = round(time.time() - started, 1)
    out['table'] = table(out)
    return out


def fs_phase(fp):
    """pyramid_zcasync on FileStorage in this process.  The raw commit
    rate is measured again just before and after the throughput rounds
    ('raw alongside'): on a shared machine the disk's speed drifts
    between the start of the run and this phase."""
    from benchmarks import raw_storage
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


def raw_storage_all(pp):
    from benchmarks import raw_storage
    return raw_storage.run_all(pp['raw_commits'], pp['phase_timeout_s'],
                               pp['rounds'])


# -- the table ----------------------------------------------------------------

HEADERS = ['benchmark', 'n', 'jobs/s', 'x raw FS', 'x Huey', 'x RQx1',
           'p50 ms', 'p95 ms', 'other', 'SPEC target', 'met']


def _ratio(a, b):
    if a is None or not b:
        return None
    return round(a / b, 2)


def _verdict(checks):
    """``checks``: [(ok, text shown when not ok)] -> 'yes' / 'NO: ...'."""
    checks = [c for c in checks if c[0] is not None]
    if not checks:
        return '-'
    failed = [text for ok, text in checks if not ok]
    return 'yes' if not failed else 'NO: ' + '; '.join(failed)


def table(out):
    """Rows of dicts (the JSON keeps them) in HEADERS order."""
    res = out['results']
    rows = []

    def row(name, n=None, rate=None, p50=None, p95=None, other=None,
            target=None, met=None, **extra):
        rows.append(dict(benchmark=name, n=n, rate=rate,
                         x_raw=_ratio(rate, raw), x_huey=None, x_rq1=None,
                         p50_ms=p50, p95_ms=p95, other=other,
                         target=target, met=met, **extra))
        return rows[-1]

    raw_rows = res.get('raw_storage') or {}
    raw = raw_rows.get('modify', {}).get('commits_per_s')
    for key in sorted(raw_rows, key=lambda k: (k != 'modify', k != 'add')):
        r = raw_rows[key]
        row(r['name'], r['commits'], r['commits_per_s'],
            other='%.3f ms/commit' % r['ms_per_commit'])
    skipped = out.get('skipped') or {}

    def skipped_row(key, name):
        if key in skipped:
            row(name, other='skipped: %s' % skipped[key])

    skipped_row('huey', 'Huey SqliteHuey')
    skipped_row('rq', 'RQ Redis')
    huey = res.get('huey')
    rq = res.get('rq') or []
    rq1 = next((r for r in rq if r['workers'] == 1), None)
    huey_rate = huey['throughput']['jobs_per_s'] if huey else None
    rq1_rate = rq1['throughput']['jobs_per_s'] if rq1 else None
    for r in ([huey] if huey else []) + list(rq):
        t, pk = r['throughput'], r['pickup']
        row(r['name'], t['jobs'], t['jobs_per_s'], pk['p50_ms'],
            pk['p95_ms'], other='pick-up from put return')

    def ours(name, n, rate, p50=None, p95=None, other=None, target=None,
             met=None):
        r = row(name, n, rate, p50, p95, other, target, met)
        r['x_huey'] = _ratio(rate, huey_rate)
        r['x_rq1'] = _ratio(rate, rq1_rate)
        return r

    fs = res.get('fs')
    if fs:
        t, pk, bulk = fs['throughput'], fs['pickup'], fs['bulk_put']
        rate = t['jobs_per_s']
        alongside = (fs.get('raw_alongside') or {}).get('commits_per_s')
        x_along, x_rq1 = _ratio(rate, alongside), _ratio(rate, rq1_rate)
        ours('pyramid_zcasync FileStorage, 1 process', t['jobs'], rate,
             pk['p50_ms'], pk['p95_ms'],
             other='%.2f x raw alongside; p50 from return %.2f'
                   % (x_along or 0, pk['from_commit_return']['p50_ms']),
             target='>= %.2f x raw alongside, >= %g x RQx1, p50 <= %g ms'
                    % (TARGET_RAW, TARGET_RQ1, TARGET_PICKUP_LOCAL_MS),
             met=_verdict([
                 (None if x_along is None else x_along >= TARGET_RAW,
                  '%.2f x raw alongside' % (x_along or 0)),
                 (None if x_rq1 is None else x_rq1 >= TARGET_RQ1,
                  '%.2f x RQx1' % (x_rq1 or 0)),
                 (pk['p50_ms'] <= TARGET_PICKUP_LOCAL_MS,
                  'p50 %.2f ms' % pk['p50_ms'])]))
        ours('bulk put of %d jobs, 1 transaction' % bulk['jobs'],
             bulk['jobs'], None, other='%.3f s' % bulk['seconds'],
             target='< %g s' % TARGET_BULK_S,
             met=_verdict([(bulk['seconds'] < TARGET_BULK_S,
                            '%.3f s' % bulk['seconds'])]))

    def dispatcher_processes(result, storage, other=lambda r: ''):
        """zeo.run's or relstorage.run's rows: 1 and 2 dispatcher
        processes, an idle one.  The targets SPEC sets over ZEO; ours for
        RelStorage, the other way to scale out."""
        one = next((r for r in result['rows'] if r['processes'] == 1), None)
        for r in result['rows']:
            t, pk = r['throughput'], r['pickup']
            checks = [(pk['p50_ms'] <= TARGET_PICKUP_ZEO_MS,
                       'p50 %.1f ms' % pk['p50_ms'])]
            target = 'p50 <= %g ms' % TARGET_PICKUP_ZEO_MS
            text = 'poll %g s' % r['poll_interval_s'] + other(r)
            if r['processes'] == 2 and one:
                growth = _ratio(t['jobs_per_s'],
                                one['throughput']['jobs_per_s'])
                text += ', %.2f x 1 process' % growth
                target = '>= %.2f x 1 process, ' % TARGET_GROWTH + target
                checks.insert(0, (growth >= TARGET_GROWTH,
                                  '%.2f x 1 process' % growth))
            ours(r['name'], t['jobs'], t['jobs_per_s'], pk['p50_ms'],
                 pk['p95_ms'], text, target, _verdict(checks))
        cpu = result.get('idle_cpu')
        if cpu:
            ours('idle dispatcher process, %s' % storage, None, None,
                 other='%.1f %% of a core'
                       % cpu['cpu_percent_of_one_core'][0])

    z = res.get('zeo')
    if z:
        dispatcher_processes(z, 'ZEO')
    pg = res.get('pg')
    skipped_row('pg', 'pyramid_zcasync RelStorage-PostgreSQL')
    if pg:
        pg_raw = pg['raw_commits_per_s']
        row(relstorage.raw_name(pg), pg['params']['raw_commits'], pg_raw,
            other='%.2f ms/commit; %s, history-free' % (
                1000 / pg_raw, pg.get('postgresql') or 'PostgreSQL'))
        dispatcher_processes(
            pg, 'RelStorage', lambda r: ', %.2f x raw RelStorage' % _ratio(
                r['throughput']['jobs_per_s'], pg_raw))
    s = res.get('scale')
    if s:
        us, cpu_us = s['idle_poll_us'], s['idle_poll_cpu_us']
        jps, cpu_ms = s['jobs_per_s'], s['cpu_ms_per_job']
        k = '%dk' % (s['history'] // 1000)
        poll_ratio = s['idle_poll_cpu_ratio_full_to_empty']
        job_ratio = s['cpu_per_job_ratio_full_to_empty']
        ours('idle poll, 0 completed jobs kept', None, None,
             other='%.0f us/poll (CPU %.0f us)' % (us['empty'],
                                                   cpu_us['empty']))
        ours('idle poll, %s completed jobs kept' % k, None, None,
             other='%.0f us/poll (CPU %.0f us, %.2f x 0 kept)'
                   % (us['full'], cpu_us['full'], poll_ratio),
             target='CPU <= %.2f x 0 kept (flat)' % TARGET_FLAT_POLL,
             met=_verdict([(poll_ratio <= TARGET_FLAT_POLL,
                            'CPU %.2f x' % poll_ratio)]))
        ours('FileStorage 1 process, 0 completed kept', s['jobs'],
             jps['empty'], other='CPU %.2f ms/job' % cpu_ms['empty'])
        ours('FileStorage 1 process, %s completed kept' % k, s['jobs'],
             jps['full'],
             other='CPU %.2f ms/job, %.2f x 0 kept' % (cpu_ms['full'],
                                                       job_ratio),
             target='CPU/job <= %.2f x 0 kept (flat)' % TARGET_FLAT_JOB,
             met=_verdict([(job_ratio <= TARGET_FLAT_JOB,
                            'CPU %.2f x' % job_ratio)]))
    m = res.get('memory')
    if m:
        h = m['histories_end']
        capped = (h['dispatcher_job_history'] <= scale.JOB_HISTORY
                  and h['dispatcher_poll_history'] <= scale.POLL_HISTORY
                  and h['agent_completed_history']
                  <= scale.HISTORY_SIZE + scale.TRIM_SLACK)
        peak = m.get('pooled_invalidations_peak') or {}
        pooled_flat = (None if not peak.get('first_half') or not peak.get(
            'second_half') else peak['second_half']
            <= TARGET_POOLED_GROWTH * peak['first_half'])
        tail = m.get('rss_after_histories_full')
        if tail:
            rss = '%+.1f MiB (%.0f B/job) once histories full (%dk)' % (
                tail['growth_mib'], tail['bytes_per_job'],
                tail['from_jobs'] // 1000)
        else:
            rss = 'histories not full yet'
        ours('dispatcher RSS after %d jobs%s' % (
                m['jobs'], ' (time-bounded)' if m['truncated_by_time']
                else ''), m['jobs'], None,
             other='%.0f MiB; %s' % (m['rss_mib_end'], rss),
             target='histories capped, nothing grows',
             met=_verdict([
                 (capped, 'a history over its cap: %r' % (h,)),
                 (None if not tail else
                  tail['growth_fraction'] < TARGET_MEMORY_TAIL,
                  'RSS %+.1f%% after the histories filled'
                  % (100 * (tail or {}).get('growth_fraction', 0))),
                 (pooled_flat, 'idle pooled connections hold %dk -> %dk '
                  'invalidated oids' % (
                      (peak.get('first_half') or 0) // 1000,
                      (peak.get('second_half') or 0) // 1000))]))
    return rows


def print_report(out, file=None):
    cells = [[r['benchmark'], r['n'], r['rate'], r['x_raw'], r['x_huey'],
              r['x_rq1'], r['p50_ms'], r['p95_ms'], r['other'] or '',
              r['target'] or '', r['met'] or ''] for r in out['table']]
    common.print_table(HEADERS, cells, out=file)
    for key, why in sorted(out['skipped'].items()):
        print('skipped %s: %s' % (key, why), file=file)
    for key, why in sorted(out['errors'].items()):
        print('ERROR %s: %s' % (key, why), file=file)
    fs = out['results'].get('fs')
    if fs:
        t = fs['throughput']
        print('pyramid_zcasync FileStorage, 1 process, median round: %s '
              'commits for %d jobs; CPU %.2f ms/job (%.0f %% of a core)'
              % (t.get('commits'), t['jobs'], t.get('cpu_ms_per_job') or 0,
                 t.get('cpu_percent') or 0), file=file)
        if t.get('profile'):
            zeo.print_profiles({'rows': [dict(
                name='pyramid_zcasync FileStorage, 1 process',
                profile=t['profile'])]}, file)
    z = out['results'].get('zeo')
    if z:
        zeo.print_cpu(z, file)
        zeo.print_profiles(z, file)
    pg = out['results'].get('pg')
    if pg:
        relstorage.print_cpu(pg, file)
    code = out.get('code') or {}
    print('code: %s %s%s' % (
        (code.get('commit') or '?')[:10], code.get('subject') or '',
        ' (+ uncommitted package changes: %d files)'
        % len(code['package_changes_not_committed'])
        if code.get('package_changes_not_committed') else ''), file=file)
    print('machine: ' + common.describe_machine(out['machine']), file=file)
    print('phases: ' + ', '.join('%s %.0f s' % kv
                                 for kv in out['phase_seconds'].items()),
          file=file)
    print('total %.1f s, started %s' % (out['duration_s'], out['started']),
          file=file)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['compare']:
        from benchmarks import compare
        return compare.main(argv[1:])
    ap = argparse.ArgumentParser(
        prog='python -m benchmarks',
        description='The whole benchmark suite: one table, one JSON file.')
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
    if args.report:
        import json
        with open(args.report) as f:
            saved = json.load(f)
        saved['table'] = table(saved)
        print_report(saved)
        return 0
    only = tuple(s.strip() for s in args.only.split(',') if s.strip())
    unknown = set(only) - set(PHASES)
    if unknown:
        ap.error('unknown phase(s): %s' % ', '.join(sorted(unknown)))
    params = dict(QUICK if args.quick else FULL)
    if args.profile:
        params['fs'] = dict(params['fs'],
                            profile_dir=os.path.join(args.profile, 'fs'))
        params['zeo'] = dict(params['zeo'], profile_dir=args.profile)
    out = run(params, only, log=common.log_to_stderr)
    out['quick'] = args.quick
    print_report(out)
    print('wrote %s' % common.write_result('all', out, args.json))
    return 1 if out['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
