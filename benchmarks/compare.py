"""Two checkouts of the package side by side, measured by the same code.

    python -m benchmarks compare --before DIR --after DIR [--rounds N]
                                 [--quick] [--json PATH]
                                 [--live zeo,fs,pg [--live-jobs N]
                                  [--live-rate R]]

A change to the package's architecture should not cost throughput or
pick-up latency, and on a shared machine a figure from an hour ago says
little about one from now.  So both checkouts are measured here, in
alternating order (before, after; then after, before; ...), each
measurement in a child process whose ``pyramid_zcasync`` is imported from
that checkout while the benchmark code is always this one.  Each child
runs the no-op drain on FileStorage (``throughput.run_warm``, one round)
and the same-process pick-up latency (``pickup.measure``).

With ``--live SYSTEMS`` each child runs the live web-style rows instead
(``live.py``: 2 producer threads, one put per commit, LIVE_JOBS jobs, one
round per system; ``--live-rate R`` paces them, R puts/s in all, so both
sides get the same arrivals): the dispatcher's CPU per job (judged: it is what a
change to the dispatcher moves, and much less noisy than jobs/s), live
jobs/s and CPU per put.  Over ZEO and RelStorage the dispatcher is a
process of its own: it imports the package from the same checkout as its
parent child (the checkout goes first on its PYTHONPATH).

Prints medians per side and the after/before ratio, and writes every
round to ``benchmarks/results/compare-YYYY-MM-DD.json``.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

from benchmarks import common

Measurement = Dict[str, Any]

QUICK = {'rounds': 5, 'drain_jobs': 1000, 'pickup_jobs': 40}
FULL = {'rounds': 7, 'drain_jobs': 3000, 'pickup_jobs': 100}
#: Jobs per live round (``--live``), spread over LIVE_THREADS producers.
LIVE_JOBS = 1000
LIVE_THREADS = 2
CHILD_TIMEOUT_S = 300.0
TOLERANCE = 0.05    # issue 17: "within 5 % of before"


@dataclass(frozen=True)
class Metric:
    """One figure read from a child's measurement."""
    benchmark: str
    field: str
    label: str
    higher_is_better: bool
    judged: bool = True     # p95 of a few dozen samples is shown, not judged


METRICS = (
    Metric('drain', 'jobs_per_s', 'FileStorage drain, jobs/s', True),
    Metric('drain', 'cpu_ms_per_job', 'FileStorage drain, CPU ms/job',
           False),
    Metric('pickup', 'p50_ms', 'pick-up p50 ms, same process', False),
    Metric('pickup', 'p95_ms', 'pick-up p95 ms, same process', False,
           judged=False),
)


def live_metrics(systems: Sequence[str]) -> List[Metric]:
    """The figures of ``--live``, per system (the child's key ``live-S``)."""
    metrics = []
    for system in systems:
        key = 'live-' + system
        metrics += [
            Metric(key, 'worker_cpu_ms_per_job',
                   '%s live, dispatcher CPU ms/job' % system, False),
            Metric(key, 'jobs_per_s', '%s live, jobs/s' % system, True,
                   judged=False),
            Metric(key, 'cpu_ms_per_put', '%s live, CPU ms/put' % system,
                   False, judged=False)]
    return metrics


# -- the child: one measurement of one checkout ------------------------------

def import_package_from(checkout: str) -> str:
    """Import ``pyramid_zcasync`` from ``checkout`` before anything else
    does; the benchmark modules imported afterwards then use it.  Returns
    the package's directory, refusing to measure any other copy."""
    sys.path.insert(0, checkout)
    import pyramid_zcasync
    where = os.path.dirname(os.path.abspath(pyramid_zcasync.__file__ or ''))
    expected = os.path.join(os.path.abspath(checkout), 'pyramid_zcasync')
    if os.path.realpath(where) != os.path.realpath(expected):
        raise SystemExit('pyramid_zcasync came from %s, not %s'
                         % (where, expected))
    return where


def measure_checkout(drain_jobs: int, pickup_jobs: int) -> Measurement:
    """The two benchmarks, in this process, on the package imported."""
    from benchmarks import pickup, throughput
    drain = throughput.run_warm(drain_jobs, rounds=1)
    latency = pickup.measure(pickup_jobs, pause=0.020, pause_max=0.100)
    return {'drain': drain, 'pickup': latency,
            'load_average': os.getloadavg()}


def measure_live(checkout: str, systems: Sequence[str], jobs: int,
                 rate: Optional[float] = None) -> Measurement:
    """One live round per system, the dispatcher processes importing the
    package from ``checkout`` too."""
    from benchmarks import live
    params = dict(live.DEFAULTS, threads=(LIVE_THREADS,), jobs=jobs,
                  rounds=1, rate=rate)
    with package_first_in_children(checkout):
        out: Measurement = {'live-' + system: live.RUNNERS[system](params)[0]
                            for system in systems}
    out['load_average'] = os.getloadavg()
    return out


@contextlib.contextmanager
def package_first_in_children(checkout: str) -> Iterator[None]:
    """Child processes started meanwhile (``common.python_env``) import
    ``checkout``'s package, and this tree's benchmarks.

    They run from this tree's root, which Python puts first on their
    path, ahead of PYTHONPATH: so that root is left off
    (PYTHONSAFEPATH), and the package is reached through a directory
    holding only a link to it, ahead of the root."""
    original = common.python_env
    with tempfile.TemporaryDirectory(prefix='compare-package-') as linked:
        os.symlink(os.path.join(os.path.abspath(checkout), 'pyramid_zcasync'),
                   os.path.join(linked, 'pyramid_zcasync'))

        def env() -> Dict[str, str]:
            out = original()
            out['PYTHONPATH'] = os.pathsep.join([linked, out['PYTHONPATH']])
            out['PYTHONSAFEPATH'] = '1'
            return out
        common.python_env = env
        try:
            yield
        finally:
            common.python_env = original


def child_main(checkout: str, params: Dict[str, Any]) -> int:
    import_package_from(checkout)
    if params.get('live'):
        measured = measure_live(checkout, params['live'], params['live_jobs'],
                                params.get('live_rate'))
    else:
        measured = measure_checkout(params['drain_jobs'],
                                    params['pickup_jobs'])
    print(json.dumps(measured))
    return 0


# -- the parent: alternate the checkouts, summarise ------------------------

def run_child(checkout: str, params: Dict[str, Any]) -> Measurement:
    """One measurement of ``checkout`` in a fresh process, run from this
    tree so that ``benchmarks`` is this tree's."""
    command = [sys.executable, '-m', 'benchmarks.compare', '--child',
               checkout, '--drain-jobs', str(params['drain_jobs']),
               '--pickup-jobs', str(params['pickup_jobs'])]
    if params.get('live'):
        command += ['--live', ','.join(params['live']),
                    '--live-jobs', str(params['live_jobs'])]
        if params.get('live_rate'):
            command += ['--live-rate', str(params['live_rate'])]
    done = subprocess.run(command, cwd=common.project_root(),
                          capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError('measuring %s failed:\n%s'
                           % (checkout, done.stderr[-2000:]))
    result: Measurement = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def alternate(checkouts: Dict[str, str], params: Dict[str, Any],
              log: Any = print) -> List[Measurement]:
    """``rounds`` measurements of each side, the order swapped every
    round so that neither side always runs on a warmer (or busier)
    machine."""
    sides = list(checkouts)
    measured = []
    for index in range(params['rounds']):
        order = sides if index % 2 == 0 else sides[::-1]
        for side in order:
            log('round %d/%d: %s ...' % (index + 1, params['rounds'], side))
            result = run_child(checkouts[side], params)
            measured.append(dict(result, side=side, round=index + 1))
    return measured


def values_of(measured: Sequence[Measurement], side: str,
              metric: Metric) -> List[float]:
    return [float(m[metric.benchmark][metric.field]) for m in measured
            if m['side'] == side]


def relative_noise(values: Sequence[float]) -> float:
    """Half the range of the rounds over their median: how far one round
    strays, as a fraction, on this machine right now."""
    median = statistics.median(values)
    if not median:
        return 0.0
    return (max(values) - min(values)) / 2 / median


def verdict(metric: Metric, ratio: Optional[float], noise: float) -> str:
    """'yes' when after is within 5 % of before in the direction that
    matters (slower, or later, by more is not); 'noise' when it is not,
    but by less than a round strays (measure again, longer); else 'NO'."""
    if ratio is None or not metric.judged:
        return '-'
    worse_by = 1 - ratio if metric.higher_is_better else ratio - 1
    if worse_by <= TOLERANCE:
        return 'yes'
    return 'noise' if worse_by <= noise else 'NO'


def summarise(measured: Sequence[Measurement],
              metrics: Sequence[Metric] = METRICS) -> List[Dict[str, Any]]:
    """Per metric: each side's rounds and median, after / before, the
    rounds' noise, and the verdict."""
    rows = []
    for metric in metrics:
        before = values_of(measured, 'before', metric)
        after = values_of(measured, 'after', metric)
        before_median = statistics.median(before)
        ratio = (statistics.median(after) / before_median
                 if before_median else None)
        noise = max(relative_noise(before), relative_noise(after))
        rows.append({'metric': metric.label,
                     'benchmark': metric.benchmark, 'field': metric.field,
                     'before_median': round(before_median, 3),
                     'after_median': round(statistics.median(after), 3),
                     'after_over_before': round(ratio, 3)
                     if ratio is not None else None,
                     'noise': round(noise, 3),
                     'within_tolerance': verdict(metric, ratio, noise),
                     'before_rounds': before, 'after_rounds': after})
    return rows


def print_summary(rows: Sequence[Dict[str, Any]]) -> None:
    headers = ['metric', 'before', 'after', 'after/before', 'noise',
               'within 5 %', 'before rounds', 'after rounds']
    common.print_table(headers, [[
        r['metric'], r['before_median'], r['after_median'],
        r['after_over_before'], '%.0f %%' % (100 * r['noise']),
        r['within_tolerance'],
        ' '.join(common.fmt(v) for v in r['before_rounds']),
        ' '.join(common.fmt(v) for v in r['after_rounds'])] for r in rows])


def compare(before: str, after: str, params: Dict[str, Any],
            log: Any = print) -> Dict[str, Any]:
    started = time.time()
    checkouts = {'before': before, 'after': after}
    measured = alternate(checkouts, params, log)
    return {
        'benchmark': 'compare',
        'started': time.strftime('%Y-%m-%dT%H:%M:%S%z',
                                 time.localtime(started)),
        'duration_s': round(time.time() - started, 1),
        'machine': common.machine_description(),
        'params': params,
        'code': {side: common.code_version(path)
                 for side, path in checkouts.items()},
        'measurements': measured,
        'summary': summarise(measured, live_metrics(params['live'])
                             if params.get('live') else METRICS),
    }


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog='python -m benchmarks compare',
        description='Drain throughput and pick-up latency of two '
                    'checkouts of the package, alternating.')
    ap.add_argument('--before', help='checkout measured as "before"')
    ap.add_argument('--after', help='checkout measured as "after"')
    ap.add_argument('--rounds', type=int, default=None,
                    help='measurements per side (default 7, quick 5)')
    ap.add_argument('--quick', action='store_true',
                    help='smaller counts: 1,000 jobs, 40 pick-ups, 5 rounds')
    ap.add_argument('--label', default=None,
                    help='names the result (compare-LABEL-YYYY-MM-DD.json) '
                         'so that two comparisons of a day both stay')
    ap.add_argument('--note', default='',
                    help='what the two sides are, kept in the JSON')
    ap.add_argument('--json', default=None,
                    help='output path (default '
                         'benchmarks/results/compare-YYYY-MM-DD.json)')
    ap.add_argument('--live', default=None,
                    help='instead: the live rows of these systems '
                         '(zeo,fs,pg), dispatcher CPU per job judged')
    ap.add_argument('--live-jobs', type=int, default=LIVE_JOBS,
                    help='jobs per live round (default %(default)s)')
    ap.add_argument('--live-rate', type=float, default=None,
                    help='pace the live producers: puts per second in all '
                         '(the same arrivals on both sides)')
    ap.add_argument('--child', metavar='CHECKOUT', help=argparse.SUPPRESS)
    ap.add_argument('--drain-jobs', type=int, help=argparse.SUPPRESS)
    ap.add_argument('--pickup-jobs', type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.child and not (args.before and args.after):
        ap.error('--before and --after are both needed')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    params: Dict[str, Any] = dict(QUICK if args.quick else FULL)
    params.update(live=args.live.split(',') if args.live else None,
                  live_jobs=args.live_jobs, live_rate=args.live_rate)
    if args.drain_jobs:
        params['drain_jobs'] = args.drain_jobs
    if args.pickup_jobs:
        params['pickup_jobs'] = args.pickup_jobs
    if args.child:
        return child_main(args.child, params)
    if args.rounds:
        params['rounds'] = args.rounds
    out = compare(os.path.abspath(args.before), os.path.abspath(args.after),
                  params, log=common.log_to_stderr)
    out.update(quick=args.quick, label=args.label, note=args.note)
    print_summary(out['summary'])
    for side in ('before', 'after'):
        code = out['code'][side]
        print('%s: %s %s' % (side, (code['commit'] or '?')[:10],
                             code['subject'] or ''))
    print('total %.1f s' % out['duration_s'])
    name = 'compare-' + args.label if args.label else 'compare'
    print('wrote %s' % common.write_dated_json(name, out, args.json))
    return 0


if __name__ == '__main__':
    sys.exit(main())
