"""pyramid_zcasync end-to-end throughput on FileStorage, one process.

    python -m benchmarks.throughput [--jobs 3000] [--json PATH]

Puts N no-op jobs in one transaction (the bulk put is timed too), then
starts the dispatcher and waits until every job is COMPLETED in the
database; jobs/s is N over the time from the dispatcher's start to the
last completion.  The raw FileStorage commit rate is measured in the same
run so the result is also a ratio (SPEC: >= 0.75 x raw).
"""
import argparse
import os
import shutil
import tempfile
import time

import transaction
import ZODB

import pyramid_zcasync
from benchmarks import common, raw_storage
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import COMPLETED, IQueue


def noop():
    return None


def _all_done(db, oids):
    connection = db.open()
    try:
        return all(connection.get(oid).status == COMPLETED for oid in oids)
    finally:
        connection.close()


def _agents_idle(queue):
    transaction.begin()
    return len(queue) == 0 and all(
        len(agent) == 0 for registration in queue.dispatchers.values()
        for agent in registration.values())


def run(jobs=3000, agent_size=3, timeout=120.0):
    directory = tempfile.mkdtemp(prefix='bench-zc-')
    db = ZODB.DB(os.path.join(directory, 'Data.fs'),
                 cache_size=max(20000, jobs * 3))
    try:
        pyramid_zcasync.install_queues(db)
        connection = db.open()
        queue = IQueue(connection.root())
        started = time.perf_counter()
        put = [queue.put(noop) for _ in range(jobs)]
        transaction.commit()
        bulk_put_s = time.perf_counter() - started
        oids = [job._p_oid for job in put]
        started = time.perf_counter()
        running = dispatcher_module.start(
            db, uuid_file=os.path.join(directory, 'uuid.txt'),
            poll_interval=5, agent_size=agent_size,
            install_signal_handlers=False)
        common.wait_until(lambda: _agents_idle(queue), timeout,
                          interval=0.05, what='all jobs to complete')
        elapsed = time.perf_counter() - started
        running.stop()
        assert _all_done(db, oids), 'some job did not complete'
        connection.close()
    finally:
        db.close()
        shutil.rmtree(directory)
    return {'jobs': jobs, 'agent_size': agent_size,
            'seconds': round(elapsed, 3),
            'jobs_per_s': round(jobs / elapsed, 1),
            'bulk_put_s': round(bulk_put_s, 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=3000)
    parser.add_argument('--bulk', type=int, default=10000)
    parser.add_argument('--json', default='benchmarks/results/throughput.json')
    args = parser.parse_args(argv)
    raw = raw_storage.run(mode='modify')
    ours = run(args.jobs)
    bulk = run(args.bulk) if args.bulk != args.jobs else ours
    ratio = ours['jobs_per_s'] / raw['commits_per_s']
    rows = [['raw FileStorage commits', raw['commits_per_s'], 1.0, ''],
            ['pyramid_zcasync no-op jobs (1 process)', ours['jobs_per_s'],
             round(ratio, 2), ''],
            ['bulk put of %d jobs, one transaction' % bulk['jobs'], '',
             '', '%.3f s' % bulk['bulk_put_s']]]
    common.print_table(['what', 'per s', 'x raw', 'time'], rows)
    common.write_json_path(args.json, {
        'machine': common.machine_description(), 'raw': raw,
        'pyramid_zcasync': ours, 'bulk': bulk, 'ratio_to_raw': ratio})


if __name__ == '__main__':
    main()
