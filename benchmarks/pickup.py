"""Pick-up latency: commit of a put -> the job starts.

    python -m benchmarks.pickup [--jobs 200] [--json PATH]
    python -m benchmarks.pickup --across zeo|pg [--jobs 60] [--rounds 3]
                                [--before TREE] [--fsync off] [--parts]
                                [--json PATH]

Each job is put and committed alone, with a pause between jobs so that
every pick-up is measured from an idle dispatcher (the worst case for a
poller).  The clock starts when ``transaction.commit()`` is called (the
put's own fsync is included) and stops at the first line of the job.
Target (SPEC): p50 <= 5 ms, by waking on commit rather than polling.

``--across``: the dispatcher runs in another process, over a ZEO server
(``zeo``) or RelStorage on a throw-away PostgreSQL (``pg``; fsync on
unless ``--fsync off``, which shows the wake-up without the disk),
polling every 5 s; this process puts (issue 18: p50 <= 5 ms over ZEO,
<= 10 ms over RelStorage).  Idle gaps of 20-100 ms (fixed seed), as
benchmarks/zeo.py's rows.  With ``--before TREE`` (a checkout, e.g. a
``git worktree add`` of the base commit) each round runs a dispatcher
process importing the package from TREE and one from this checkout, in
alternating order, against the same server: before and after side by
side.  The putting process is always this checkout's.  ``--parts``
also stamps, inside the dispatcher process, where each pick-up's time
went (pickup_parts.py: push, poll, claims and their loads, the poll's
commit, the way to the job's first line).
"""
import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

import transaction
import ZODB

import pyramid_zcasync
from benchmarks import common
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result


def measure(jobs: int = 200, pause: float = 0.02, poll_interval: float = 5.0,
            pause_max: Optional[float] = None,
            warmup: int = 5, seed: int = 1,
            timeout: float = 60.0) -> Dict[str, Any]:
    """``jobs`` samples; between them an idle pause of ``pause`` s, or
    uniform in [pause, pause_max] (fixed seed) if ``pause_max`` is given.
    The job is ``benchmarks._peer_jobs.started_at``, which returns
    ``time.time()`` as it starts: p50/p95 are from the ``commit()`` call,
    ``from_commit_return`` from the moment it returned."""
    from benchmarks._peer_jobs import started_at
    rnd = random.Random(seed)
    directory = tempfile.mkdtemp()
    db = ZODB.DB(os.path.join(directory, 'Data.fs'))
    from_call, from_return, commit_s = [], [], []
    try:
        pyramid_zcasync.install_queues(db)
        dispatcher = dispatcher_module.start(
            db, uuid_file=os.path.join(directory, 'uuid.txt'),
            poll_interval=poll_interval, install_signal_handlers=False)
        connection = db.open()
        queue = IQueue(connection.root())
        deadline = time.monotonic() + timeout
        for key in range(warmup + jobs):
            if time.monotonic() > deadline:
                break
            job = queue.put(started_at)
            committing = time.time()
            transaction.commit()
            committed = time.time()
            started = wait_for_result(job, seconds=30)
            if key >= warmup:
                from_call.append(started - committing)
                from_return.append(started - committed)
                commit_s.append(committed - committing)
            time.sleep(pause if pause_max is None
                       else rnd.uniform(pause, pause_max))
        connection.close()
        tear_down_dispatcher(dispatcher)
    finally:
        db.close()
        shutil.rmtree(directory)
    latencies = [s * 1000 for s in from_call]
    return {
        'jobs': len(latencies),
        'poll_interval_s': poll_interval,
        'pause_s': [pause, pause_max if pause_max is not None else pause],
        'p50_ms': round(statistics.median(latencies), 2),
        'p95_ms': round(common.percentile(latencies, 95), 2),
        'max_ms': round(max(latencies), 2),
        'min_ms': round(min(latencies), 2),
        'from_commit_return': common.latency_summary(from_return),
        'commit_call': common.latency_summary(commit_s),
    }


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=None,
                        help='samples (per side and round with --across)')
    parser.add_argument('--across', choices=('zeo', 'pg'), default=None)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--before', metavar='TREE', default=None)
    parser.add_argument('--fsync', choices=('on', 'off'), default='on',
                        help='PostgreSQL\'s, with --across pg')
    parser.add_argument('--parts', action='store_true',
                        help='with --across: where the time goes, stamped '
                             'in the dispatcher (pickup_parts.py)')
    parser.add_argument('--json', default=None,
                        help='output path (default '
                             'benchmarks/results/pickup.json)')
    args = parser.parse_args(argv)
    if args.across:
        from benchmarks import pickup_across
        pickup_across.main(args)
        return
    result = measure(args.jobs or 200)
    print('same-process pick-up latency (commit of put -> job starts), '
          '%(jobs)d jobs, poll interval %(poll_interval_s)s s' % result)
    print('  p50 %(p50_ms)8.2f ms\n  p95 %(p95_ms)8.2f ms\n'
          '  max %(max_ms)8.2f ms' % result)
    common.write_result('pickup', result, args.json)


if __name__ == '__main__':
    main()
