"""The suite's one table: a row per figure, its ratios, its verdict.

The rows are plain dicts (the JSON keeps them) built from a run's
``results``; ``--report`` rebuilds them from a saved run, so a change of
target applies to old runs too.  The targets are SPEC's where it gives a
number, ours where it speaks in words (README, "Reading the table").
"""
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks import common, dispatchers, live, morepeers, relstorage, scale

Row = Dict[str, Any]
Result = Dict[str, Any]
Check = Tuple[Optional[bool], str]     # (met?, what is shown when not)

# SPEC, "Non-functional targets".
TARGET_RAW = 0.75          # x raw FileStorage commit rate, one process
TARGET_RQ1 = 3.0           # x RQ with one worker
TARGET_PICKUP_LOCAL_MS = 5.0
TARGET_PICKUP_ZEO_MS = 50.0
TARGET_BULK_S = 1.0
# Our reading of the qualitative targets (README, "Reading the table"):
TARGET_GROWTH = 1.10       # 2 processes over ZEO vs 1: beyond the noise
TARGET_FLAT_POLL = 1.25    # idle poll CPU, 100k kept / 0 kept
TARGET_FLAT_JOB = 1.25     # CPU per job end to end, 100k kept / 0 kept
TARGET_MEMORY_TAIL = 0.05  # RSS growth once every history is full
TARGET_POOLED_GROWTH = 1.5  # peak of the 2nd half / 1st half of the jobs
# Issue 18, live web-style producers: x Huey's live rate, same threads.
TARGET_LIVE_FS = 1.5
TARGET_LIVE_SERVER = 0.75
TARGET_PUT_CPU_MS = 0.25

HEADERS = ['benchmark', 'n', 'jobs/s', 'x raw FS', 'x Huey', 'x RQx1',
           'p50 ms', 'p95 ms', 'other', 'SPEC target', 'met']


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or not b:
        return None
    return round(a / b, 2)


def verdict(checks: Sequence[Check]) -> str:
    """'yes', 'NO: what missed; ...', or '-' when nothing could be
    judged (a figure missing, e.g. a skipped peer)."""
    judged = [c for c in checks if c[0] is not None]
    if not judged:
        return '-'
    failed = [text for ok, text in judged if not ok]
    return 'yes' if not failed else 'NO: ' + '; '.join(failed)


class Table:
    """The rows of one run, in the order of the phases."""

    def __init__(self, out: Result) -> None:
        self.results = out['results']
        self.skipped = out.get('skipped') or {}
        self.rows: List[Row] = []
        raw = self.results.get('raw_storage') or {}
        self.raw = raw.get('modify', {}).get('commits_per_s')
        huey = self.results.get('huey')
        rq1 = next((r for r in self.results.get('rq') or []
                    if r['workers'] == 1), None)
        self.huey_rate = huey['throughput']['jobs_per_s'] if huey else None
        self.rq1_rate = rq1['throughput']['jobs_per_s'] if rq1 else None

    def row(self, name: str, n: Optional[int] = None,
            rate: Optional[float] = None, p50: Optional[float] = None,
            p95: Optional[float] = None, other: Optional[str] = None,
            target: Optional[str] = None, met: Optional[str] = None) -> Row:
        self.rows.append(dict(
            benchmark=name, n=n, rate=rate, x_raw=ratio(rate, self.raw),
            x_huey=None, x_rq1=None, p50_ms=p50, p95_ms=p95, other=other,
            target=target, met=met))
        return self.rows[-1]

    def ours(self, name: str, n: Optional[int], rate: Optional[float],
             p50: Optional[float] = None, p95: Optional[float] = None,
             other: Optional[str] = None, target: Optional[str] = None,
             met: Optional[str] = None) -> Row:
        """A pyramid_zcasync row: also against Huey and RQ."""
        r = self.row(name, n, rate, p50, p95, other, target, met)
        r['x_huey'] = ratio(rate, self.huey_rate)
        r['x_rq1'] = ratio(rate, self.rq1_rate)
        return r

    def skipped_row(self, key: str, name: str) -> None:
        if key in self.skipped:
            self.row(name, other='skipped: %s' % self.skipped[key])

    def raw_storage(self) -> None:
        raw = self.results.get('raw_storage') or {}
        for key in sorted(raw, key=lambda k: (k != 'modify', k != 'add')):
            r = raw[key]
            self.row(r['name'], r['commits'], r['commits_per_s'],
                     other='%.3f ms/commit' % r['ms_per_commit'])

    def peers(self) -> None:
        self.skipped_row('huey', 'Huey SqliteHuey')
        self.skipped_row('rq', 'RQ Redis')
        for kind in morepeers.SYSTEMS:
            self.skipped_row(kind, kind)
        huey = self.results.get('huey')
        more = [self.results[k] for k in morepeers.SYSTEMS
                if self.results.get(k)]
        for r in (([huey] if huey else []) + list(self.results.get('rq')
                                                  or []) + more):
            t, pk = r['throughput'], r['pickup']
            other = 'pick-up from put return'
            if r.get('persistence'):
                other += '; ' + r['persistence']
            self.row(r['name'], t['jobs'], t['jobs_per_s'], pk['p50_ms'],
                     pk['p95_ms'], other=other)

    def filestorage(self) -> None:
        fs = self.results.get('fs')
        if not fs:
            return
        t, pk, bulk = fs['throughput'], fs['pickup'], fs['bulk_put']
        rate = t['jobs_per_s']
        alongside = (fs.get('raw_alongside') or {}).get('commits_per_s')
        x_along, x_rq1 = ratio(rate, alongside), ratio(rate, self.rq1_rate)
        self.ours(
            'pyramid_zcasync FileStorage, 1 process', t['jobs'], rate,
            pk['p50_ms'], pk['p95_ms'],
            other='%.2f x raw alongside; p50 from return %.2f'
                  % (x_along or 0, pk['from_commit_return']['p50_ms']),
            target='>= %.2f x raw alongside, >= %g x RQx1, p50 <= %g ms'
                   % (TARGET_RAW, TARGET_RQ1, TARGET_PICKUP_LOCAL_MS),
            met=verdict([
                (None if x_along is None else x_along >= TARGET_RAW,
                 '%.2f x raw alongside' % (x_along or 0)),
                (None if x_rq1 is None else x_rq1 >= TARGET_RQ1,
                 '%.2f x RQx1' % (x_rq1 or 0)),
                (pk['p50_ms'] <= TARGET_PICKUP_LOCAL_MS,
                 'p50 %.2f ms' % pk['p50_ms'])]))
        self.ours('bulk put of %d jobs, 1 transaction' % bulk['jobs'],
                  bulk['jobs'], None, other='%.3f s' % bulk['seconds'],
                  target='< %g s' % TARGET_BULK_S,
                  met=verdict([(bulk['seconds'] < TARGET_BULK_S,
                                '%.3f s' % bulk['seconds'])]))

    def dispatcher_processes(
            self, result: Result, storage: str,
            other: Callable[[Result], str] = lambda r: '') -> None:
        """zeo.run's or relstorage.run's rows: 1 and 2 dispatcher
        processes, an idle one.  The targets SPEC sets over ZEO; ours for
        RelStorage, the other way to scale out."""
        one = next((r for r in result['rows'] if r['processes'] == 1), None)
        for r in result['rows']:
            t, pk = r['throughput'], r['pickup']
            checks: List[Check] = [(pk['p50_ms'] <= TARGET_PICKUP_ZEO_MS,
                                    'p50 %.1f ms' % pk['p50_ms'])]
            target = 'p50 <= %g ms' % TARGET_PICKUP_ZEO_MS
            text = 'poll %g s' % r['poll_interval_s'] + other(r)
            if r['processes'] == 2 and one:
                growth = ratio(t['jobs_per_s'],
                               one['throughput']['jobs_per_s']) or 0.0
                text += ', %.2f x 1 process' % growth
                target = '>= %.2f x 1 process, ' % TARGET_GROWTH + target
                checks.insert(0, (growth >= TARGET_GROWTH,
                                  '%.2f x 1 process' % growth))
            self.ours(r['name'], t['jobs'], t['jobs_per_s'], pk['p50_ms'],
                      pk['p95_ms'], text, target, verdict(checks))
        cpu = result.get('idle_cpu')
        if cpu:
            self.ours('idle dispatcher process, %s' % storage, None, None,
                      other='%.1f %% of a core'
                            % cpu['cpu_percent_of_one_core'][0])

    def zeo(self) -> None:
        z = self.results.get('zeo')
        if z:
            self.dispatcher_processes(z, 'ZEO')

    def relstorage(self) -> None:
        self.skipped_row('pg', 'pyramid_zcasync RelStorage-PostgreSQL')
        pg = self.results.get('pg')
        if not pg:
            return
        pg_raw = pg['raw_commits_per_s']
        self.row(relstorage.raw_name(pg), pg['params']['raw_commits'], pg_raw,
                 other='%.2f ms/commit; %s, history-free' % (
                     1000 / pg_raw, pg.get('postgresql') or 'PostgreSQL'))
        self.dispatcher_processes(
            pg, 'RelStorage', lambda r: ', %.2f x raw RelStorage' % (
                ratio(r['throughput']['jobs_per_s'], pg_raw) or 0))

    def live(self) -> None:
        """live.run's rows and the peers' (livepeers.py): each against
        Huey's live row of its thread count (not the drain's Huey rate);
        the peers' also against ours on FileStorage."""
        self.skipped_row('live', 'live web-style producers')
        result = self.results.get('live') or {}
        for key, why in sorted((result.get('skipped') or {}).items()):
            self.row('live: ' + key, other='skipped: %s' % why)
        for key, why in sorted((result.get('errors') or {}).items()):
            self.row('live: ' + key, other='ERROR: %s' % why)
        for r in result.get('rows', []):
            if r['name'].startswith('ours'):
                self.live_ours(result, r)
            else:
                self.live_peer(result, r)

    def live_peer(self, result: Result, r: Row) -> None:
        """A peer's live row: ours on FileStorage (same producer threads)
        as a multiple of it."""
        x_ours = ratio(ours_live_rate(result, r['threads']), r['jobs_per_s'])
        row = self.row(
            'live: ' + r['name'], r['jobs'], r['jobs_per_s'],
            r['pickup']['p50_ms'], r['pickup']['p95_ms'],
            other='ours FileStorage %s x this; put CPU %.2f ms, workers '
                  '%.2f ms/job%s; %s' % (
                      x_ours, r['cpu_ms_per_put'],
                      r['worker_cpu_ms_per_job'],
                      ', server %.2f ms/job' % r['server_cpu_ms_per_job']
                      if 'server_cpu_ms_per_job' in r else '',
                      r['persistence']))
        row['x_huey'] = ratio(r['jobs_per_s'],
                              live.huey_rate(result, r['threads']))

    def live_ours(self, result: Result, r: Row) -> None:
        """One of our live rows, against issue 18's targets."""
        x_huey = ratio(r['jobs_per_s'], live.huey_rate(result, r['threads']))
        want = (TARGET_LIVE_FS if 'FileStorage' in r['name']
                else TARGET_LIVE_SERVER)
        checks: List[Check] = [
            (None if x_huey is None else x_huey >= want,
             '%.2f x Huey live' % (x_huey or 0)),
            (r['cpu_ms_per_put'] <= TARGET_PUT_CPU_MS,
             'put CPU %.2f ms' % r['cpu_ms_per_put'])]
        row = self.row('live: ' + r['name'], r['jobs'], r['jobs_per_s'],
                       r['pickup']['p50_ms'], r['pickup']['p95_ms'],
                       other='%s x Huey live; put CPU %.2f ms, workers '
                             '%.2f ms/job' % (x_huey, r['cpu_ms_per_put'],
                                              r['worker_cpu_ms_per_job']),
                       target='>= %g x Huey live, put CPU <= %g ms' % (
                           want, TARGET_PUT_CPU_MS),
                       met=verdict(checks))
        row['x_huey'] = x_huey

    def scale(self) -> None:
        s = self.results.get('scale')
        if not s:
            return
        us, cpu_us = s['idle_poll_us'], s['idle_poll_cpu_us']
        jps, cpu_ms = s['jobs_per_s'], s['cpu_ms_per_job']
        k = '%dk' % (s['history'] // 1000)
        poll_ratio = s['idle_poll_cpu_ratio_full_to_empty']
        job_ratio = s['cpu_per_job_ratio_full_to_empty']
        self.ours('idle poll, 0 completed jobs kept', None, None,
                  other='%.0f us/poll (CPU %.0f us)' % (us['empty'],
                                                        cpu_us['empty']))
        self.ours('idle poll, %s completed jobs kept' % k, None, None,
                  other='%.0f us/poll (CPU %.0f us, %.2f x 0 kept)'
                        % (us['full'], cpu_us['full'], poll_ratio),
                  target='CPU <= %.2f x 0 kept (flat)' % TARGET_FLAT_POLL,
                  met=verdict([(poll_ratio <= TARGET_FLAT_POLL,
                                'CPU %.2f x' % poll_ratio)]))
        self.ours('FileStorage 1 process, 0 completed kept', s['jobs'],
                  jps['empty'], other='CPU %.2f ms/job' % cpu_ms['empty'])
        self.ours('FileStorage 1 process, %s completed kept' % k, s['jobs'],
                  jps['full'],
                  other='CPU %.2f ms/job, %.2f x 0 kept' % (cpu_ms['full'],
                                                            job_ratio),
                  target='CPU/job <= %.2f x 0 kept (flat)' % TARGET_FLAT_JOB,
                  met=verdict([(job_ratio <= TARGET_FLAT_JOB,
                                'CPU %.2f x' % job_ratio)]))

    def memory(self) -> None:
        m = self.results.get('memory')
        if not m:
            return
        tail = m.get('rss_after_histories_full')
        if tail:
            rss = '%+.1f MiB (%.0f B/job) once histories full (%dk)' % (
                tail['growth_mib'], tail['bytes_per_job'],
                tail['from_jobs'] // 1000)
        else:
            rss = 'histories not full yet'
        self.ours('dispatcher RSS after %d jobs%s' % (
                      m['jobs'], ' (time-bounded)' if m['truncated_by_time']
                      else ''), m['jobs'], None,
                  other='%.0f MiB; %s' % (m['rss_mib_end'], rss),
                  target='histories capped, nothing grows',
                  met=verdict(memory_checks(m)))


def ours_live_rate(result: Result, threads: int) -> Optional[float]:
    """Our FileStorage live rate with ``threads`` producers, if measured."""
    return next((r['jobs_per_s'] for r in result.get('rows', [])
                 if r['name'].startswith('ours, FileStorage')
                 and r['threads'] == threads), None)


def memory_checks(m: Result) -> List[Check]:
    """Histories at or under their caps; RSS flat once they are full;
    idle pooled connections not holding ever more invalidated oids."""
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
    return [
        (capped, 'a history over its cap: %r' % (h,)),
        (None if not tail else tail['growth_fraction'] < TARGET_MEMORY_TAIL,
         'RSS %+.1f%% after the histories filled'
         % (100 * (tail or {}).get('growth_fraction', 0))),
        (pooled_flat, 'idle pooled connections hold %dk -> %dk '
         'invalidated oids' % ((peak.get('first_half') or 0) // 1000,
                               (peak.get('second_half') or 0) // 1000))]


def table(out: Result) -> List[Row]:
    """Rows of dicts (the JSON keeps them) in HEADERS order."""
    t = Table(out)
    t.raw_storage()
    t.peers()
    t.filestorage()
    t.zeo()
    t.relstorage()
    t.live()
    t.scale()
    t.memory()
    return t.rows


def print_details(out: Result, file: Optional[IO[str]]) -> None:
    """What the table's cells cannot hold: commits and CPU per round,
    the CPU of every process, the profiles."""
    fs = out['results'].get('fs')
    if fs:
        t = fs['throughput']
        print('pyramid_zcasync FileStorage, 1 process, median round: %s '
              'commits for %d jobs; CPU %.2f ms/job (%.0f %% of a core)'
              % (t.get('commits'), t['jobs'], t.get('cpu_ms_per_job') or 0,
                 t.get('cpu_percent') or 0), file=file)
        if t.get('profile'):
            dispatchers.print_profiles({'rows': [dict(
                name='pyramid_zcasync FileStorage, 1 process',
                profile=t['profile'])]}, file)
    z = out['results'].get('zeo')
    if z:
        dispatchers.print_cpu(z, file)
        dispatchers.print_profiles(z, file)
    pg = out['results'].get('pg')
    if pg:
        relstorage.print_cpu(pg, file)


def print_report(out: Result, file: Optional[IO[str]] = None) -> None:
    cells = [[r['benchmark'], r['n'], r['rate'], r['x_raw'], r['x_huey'],
              r['x_rq1'], r['p50_ms'], r['p95_ms'], r['other'] or '',
              r['target'] or '', r['met'] or ''] for r in out['table']]
    common.print_table(HEADERS, cells, out=file)
    for key, why in sorted(out['skipped'].items()):
        print('skipped %s: %s' % (key, why), file=file)
    for key, why in sorted(out['errors'].items()):
        print('ERROR %s: %s' % (key, why), file=file)
    print_details(out, file)
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
