"""Pick-up latency in one process: commit of a put -> the job starts.

    python -m benchmarks.pickup [--jobs 200] [--json PATH]

Each job is put and committed alone, with a pause between jobs so that
every pick-up is measured from an idle dispatcher (the worst case for a
poller).  The clock starts when ``transaction.commit()`` is called (the
put's own fsync is included) and stops at the first line of the job.
Target (SPEC): p50 <= 5 ms, by waking on commit rather than polling.
"""
import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import transaction
import ZODB

import pyramid_zcasync
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result

STARTED = {}


def note_start(key):
    STARTED[key] = time.perf_counter()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def measure(jobs=200, pause=0.02, poll_interval=5.0):
    directory = tempfile.mkdtemp()
    db = ZODB.DB(os.path.join(directory, 'Data.fs'))
    try:
        pyramid_zcasync.install_queues(db)
        dispatcher = dispatcher_module.start(
            db, uuid_file=os.path.join(directory, 'uuid.txt'),
            poll_interval=poll_interval, install_signal_handlers=False)
        connection = db.open()
        queue = IQueue(connection.root())
        latencies = []
        for key in range(jobs):
            job = queue.put(note_start, key)
            committing = time.perf_counter()
            transaction.commit()
            wait_for_result(job, seconds=30)
            latencies.append((STARTED[key] - committing) * 1000)
            time.sleep(pause)
        connection.close()
        tear_down_dispatcher(dispatcher)
    finally:
        db.close()
        shutil.rmtree(directory)
    return {
        'jobs': jobs,
        'poll_interval_s': poll_interval,
        'p50_ms': round(statistics.median(latencies), 2),
        'p95_ms': round(percentile(latencies, 0.95), 2),
        'max_ms': round(max(latencies), 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=200)
    parser.add_argument('--json', default='benchmarks/results/pickup.json')
    args = parser.parse_args()
    result = measure(args.jobs)
    print('same-process pick-up latency (commit of put -> job starts), '
          '%(jobs)d jobs, poll interval %(poll_interval_s)s s' % result)
    print('  p50 %(p50_ms)8.2f ms\n  p95 %(p95_ms)8.2f ms\n'
          '  max %(max_ms)8.2f ms' % result)
    os.makedirs(os.path.dirname(args.json) or '.', exist_ok=True)
    with open(args.json, 'w') as stream:
        json.dump(result, stream, indent=2)


if __name__ == '__main__':
    main()
