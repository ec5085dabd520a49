"""Scale: poll cost with 0 vs 100,000 completed jobs kept, and the
dispatcher's memory after 100,000 jobs.

    python -m benchmarks.scale [--quick] [--json PATH]

poll cost (SPEC: independent of the number of completed jobs kept)
    Two FileStorage databases in temporary directories, each with a running
    dispatcher (poll interval 1 h, so only the benchmark polls it).  In one,
    the agent's history of completed jobs is filled with 100,000 COMPLETED
    jobs, written directly into ``agent.completed`` in transactions of
    20,000; its ``max_size`` is raised to 1,000,000 first, since the
    package's default bound (``agent.HISTORY_SIZE``, 10,000) would
    otherwise trim them at the next completion.  Then, alternately on each
    database (to cancel the machine's drift), ``Dispatcher._poll_once`` is
    called directly, under the dispatcher's bookkeeping lock as its reactor
    would, ``polls`` times per round; the median round's mean µs per poll is
    reported, in wall time and in CPU time of the polling thread (CPU time
    is what the flatness verdict uses: other processes on a shared machine
    move wall times far more than a BTree's size does).  These are idle
    polls: nothing is pending, so the figure is the fixed cost of a poll.
    The work a poll interval brings when jobs flow (claim, run, complete,
    add to the 100,000-entry history) is timed as end-to-end no-op
    throughput on both databases, also alternately, with this process's
    CPU time per job.
memory (SPEC: the dispatcher's histories are bounded)
    A child process (``python -m benchmarks._zc_worker memory``) with a
    FileStorage and a dispatcher puts 100,000 no-op jobs in batches of
    10,000 and records its resident memory (VmRSS) after each batch, with
    the sizes of the dispatcher's in-memory histories, the agent's stored
    history, and the invalidations held by idle pooled connections.  The
    child stops early (and says so) rather than overrun its time bound,
    and is stopped by PID if it does not exit.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import transaction
import ZODB

from benchmarks import common

# The package's bounds (history.POLL_HISTORY, history.JOB_HISTORY,
# agent.HISTORY_SIZE), as shipped when this was written; read from the
# package when it has them.
try:
    from pyramid_zcasync.history import JOB_HISTORY, POLL_HISTORY
except ImportError:  # pragma: no cover
    JOB_HISTORY, POLL_HISTORY = 10000, 800
try:
    from pyramid_zcasync.agent import HISTORY_SIZE, TRIM_SLACK
except ImportError:  # pragma: no cover
    HISTORY_SIZE, TRIM_SLACK = 10000, 100


DEFAULTS = {
    'history': 100000,         # completed jobs kept in the full database
    'fill_batch': 20000,       # jobs per transaction while filling
    'polls': 500,              # idle polls per round
    'poll_rounds': 5,
    'jobs': 1500,              # throughput: jobs per round, on each db
    'rounds': 5,
    'memory_jobs': 100000,
    'memory_batch': 10000,
    'memory_timeout_s': 170.0,  # the child stops early rather than overrun
    'phase_timeout_s': 60.0,
}
QUICK = dict(DEFAULTS, history=20000, polls=200, poll_rounds=3, jobs=500,
             rounds=1, memory_jobs=20000, memory_batch=5000)

Result = Dict[str, Any]
Log = Callable[[str], None]
Timings = Dict[str, List[Tuple[float, float]]]   # 'empty'/'full' -> rounds

UUID_EMPTY = 'b0000000-0000-4000-8000-000000000000'
UUID_FULL = 'b0000000-0000-4000-8000-000000100000'


# -- the poll cost ------------------------------------------------------------

def _fill_history(db: Any, uuid: str, count: int, batch: int,
                  log: Log) -> Result:
    """``count`` COMPLETED jobs into the completed history of the agent
    'main' of dispatcher ``uuid`` (registered already)."""
    from benchmarks._peer_jobs import started_at
    from pyramid_zcasync import clock, keys
    from pyramid_zcasync.interfaces import COMPLETED, IQueue
    from pyramid_zcasync.job import Job

    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    t0 = time.perf_counter()
    try:
        manager.begin()
        queue = IQueue(connection.root())
        agent = queue.dispatchers[uuid]['main']
        agent.completed.max_size = 1000000
        manager.commit()
        now = clock.utcnow()
        # Ended over the last 10 minutes, oldest first: all within the
        # history's age limit (7 days).
        start = now - datetime.timedelta(minutes=10)
        step = datetime.timedelta(minutes=10) / count
        done = 0
        while done < count:
            manager.begin()
            queue = IQueue(connection.root())
            history = queue.dispatchers[uuid]['main'].completed
            for i in range(done, min(done + batch, count)):
                job: Any = Job(started_at)  # finished by hand, below
                ended = start + step * i
                job.begin_after = ended
                job._status = COMPLETED
                job._result = time.time()
                job.active_start = ended
                job.active_end = ended
                job.assignerUUID = uuid
                job.queue = queue
                job._key = keys.make(clock.to_micros(ended), i)
                history.add(job, now)
            manager.commit()
            connection.cacheMinimize()
            done = min(done + batch, count)
        manager.begin()
        kept = len(IQueue(connection.root()).dispatchers[uuid]['main']
                   .completed)
        manager.abort()
    finally:
        connection.close()
    seconds = time.perf_counter() - t0
    log('  filled %d completed jobs in %.1f s' % (kept, seconds))
    if kept != count:
        raise RuntimeError('history holds %d jobs, not %d' % (kept, count))
    return {'kept': kept, 'fill_seconds': round(seconds, 2)}


class _Db:
    """A FileStorage database with a running dispatcher that polls only
    when asked (poll interval 1 h) or woken by a put."""

    def __init__(self, uuid: str) -> None:
        import pyramid_zcasync
        from pyramid_zcasync import dispatcher
        self.directory = tempfile.mkdtemp(prefix='bench-scale-')
        self.db = ZODB.DB(os.path.join(self.directory, 'Data.fs'),
                          cache_size=20000)
        pyramid_zcasync.install_queues(self.db)
        self.uuid = uuid
        self.dispatcher = dispatcher.start(
            self.db, uuid=uuid, poll_interval=3600,
            install_signal_handlers=False)
        self.manager = transaction.TransactionManager()
        self.connection = self.db.open(transaction_manager=self.manager)
        self.probe_manager = transaction.TransactionManager()
        self.probe = self.db.open(transaction_manager=self.probe_manager)

    def close(self) -> None:
        try:
            self.dispatcher.stop()
            self.manager.abort()
            self.probe_manager.abort()
            self.connection.close()
            self.probe.close()
            self.db.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def poll_seconds(self, polls: int) -> Tuple[float, float]:
        """Mean seconds of one idle poll over ``polls`` polls: (wall, CPU
        of this thread, which is the one polling)."""
        d = self.dispatcher
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(polls):
            with d._bookkeeping:
                d._poll_once()
        return ((time.perf_counter() - t0) / polls,
                (time.thread_time() - c0) / polls)

    def _idle(self) -> bool:
        from pyramid_zcasync.interfaces import IQueue
        return common.queue_drained(self.probe_manager, self.probe,
                                    lambda c: IQueue(c.root()))

    def drain_rate(self, jobs: int, timeout: float) -> Tuple[float, float]:
        """Put ``jobs`` no-op jobs in one transaction; jobs/s until all
        are done (measured as in benchmarks.throughput.run_warm)."""
        from benchmarks._peer_jobs import started_at
        from pyramid_zcasync.interfaces import IQueue
        t0, c0 = time.perf_counter(), common.process_cpu_seconds()
        self.manager.begin()
        queue = IQueue(self.connection.root())
        for _ in range(jobs):
            queue.put(started_at)
        self.manager.commit()
        common.wait_until(self._idle, timeout, 0.005, 'jobs to complete')
        return (jobs / (time.perf_counter() - t0),
                (common.process_cpu_seconds() - c0) / jobs)

    def kept(self) -> int:
        from pyramid_zcasync.interfaces import IQueue
        self.probe_manager.begin()
        n = len(IQueue(self.probe.root()).dispatchers[self.uuid]['main']
                .completed)
        self.probe_manager.abort()
        return n


def _median(values: Sequence[float]) -> float:
    return sorted(values)[len(values) // 2]


def poll_cost(params: Optional[Result] = None, log: Log = print) -> Result:
    p = dict(DEFAULTS, **(params or {}))
    empty: Optional[_Db] = None
    full: Optional[_Db] = None
    try:
        empty = _Db(UUID_EMPTY)
        full = _Db(UUID_FULL)
        fill = _fill_history(full.db, UUID_FULL, p['history'],
                             p['fill_batch'], log)
        # warm both: caches loaded, pools started
        for db in (empty, full):
            db.poll_seconds(20)
            db.drain_rate(50, p['phase_timeout_s'])
        polls: Timings = {'empty': [], 'full': []}
        for _ in range(p['poll_rounds']):
            polls['empty'].append(empty.poll_seconds(p['polls']))
            polls['full'].append(full.poll_seconds(p['polls']))
        rates: Timings = {'empty': [], 'full': []}
        for _ in range(p['rounds']):
            rates['empty'].append(empty.drain_rate(p['jobs'],
                                                   p['phase_timeout_s']))
            rates['full'].append(full.drain_rate(p['jobs'],
                                                 p['phase_timeout_s']))
        kept_after = full.kept()
    finally:
        for opened in (empty, full):
            if opened is not None:
                opened.close()

    def med(runs: Timings, i: int, scale: float) -> Dict[str, float]:
        return {k: round(_median([r[i] for r in v]) * scale, 3)
                for k, v in runs.items()}

    def each(runs: Timings, i: int, scale: float) -> Dict[str, List[float]]:
        return {k: [round(r[i] * scale, 3) for r in v]
                for k, v in runs.items()}
    us, cpu_us = med(polls, 0, 1e6), med(polls, 1, 1e6)
    jps, cpu_ms = med(rates, 0, 1), med(rates, 1, 1e3)
    return {
        'history': p['history'], 'fill': fill,
        'kept_after_runs': kept_after,
        'polls_per_round': p['polls'], 'poll_rounds': p['poll_rounds'],
        'idle_poll_us': us, 'idle_poll_us_rounds': each(polls, 0, 1e6),
        'idle_poll_cpu_us': cpu_us,
        'idle_poll_cpu_us_rounds': each(polls, 1, 1e6),
        'idle_poll_ratio_full_to_empty': round(us['full'] / us['empty'], 3),
        'idle_poll_cpu_ratio_full_to_empty': round(
            cpu_us['full'] / cpu_us['empty'], 3),
        'jobs': p['jobs'], 'rounds': p['rounds'],
        'jobs_per_s': jps, 'jobs_per_s_rounds': each(rates, 0, 1),
        'cpu_ms_per_job': cpu_ms, 'cpu_ms_per_job_rounds': each(rates, 1, 1e3),
        'throughput_ratio_full_to_empty': round(jps['full'] / jps['empty'],
                                                3),
        'cpu_per_job_ratio_full_to_empty': round(
            cpu_ms['full'] / cpu_ms['empty'], 3),
    }


# -- memory -------------------------------------------------------------------

class Memory:
    """The memory child, started in the background so that the caller can
    overlap it with a phase that mostly waits."""

    def __init__(self, params: Optional[Result] = None) -> None:
        from benchmarks.peers import Child
        p = dict(DEFAULTS, **(params or {}))
        self.params = p
        self.tmp = tempfile.mkdtemp(prefix='bench-mem-')
        self.out = os.path.join(self.tmp, 'memory.json')
        self.started = time.perf_counter()
        self.child = Child(
            [sys.executable, '-m', 'benchmarks._zc_worker', 'memory',
             self.tmp, os.path.join(self.tmp, 'uuid.txt'),
             '--jobs', str(p['memory_jobs']),
             '--batch', str(p['memory_batch']),
             '--timeout', str(p['memory_timeout_s']), '--out', self.out],
            os.path.join(self.tmp, 'memory.log'))

    def result(self) -> Result:
        """Wait (bounded) for the child; the samples and a summary."""
        try:
            try:
                code = self.child.proc.wait(self.params['memory_timeout_s']
                                            + 30)
            except subprocess.TimeoutExpired:
                raise RuntimeError('memory child overran; log tail:\n%s'
                                   % self.child.tail())
            if code != 0:
                raise RuntimeError('memory child exited with %s:\n%s'
                                   % (code, self.child.tail()))
            with open(self.out) as f:
                data = json.load(f)
        finally:
            self.child.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        out = summarise_memory(data['samples'], self.params,
                               time.perf_counter() - self.started)
        out['jobs_asked'] = data['jobs_asked']
        out['truncated_by_time'] = data['truncated_by_time']
        return out


def _peaks(samples: Sequence[Result], key: str,
           jobs: int) -> Optional[Dict[str, Optional[int]]]:
    values = [(s['jobs'], s[key]['oids']) for s in samples if key in s]
    if not values:
        return None
    first = [v for j, v in values if j <= jobs / 2]
    second = [v for j, v in values if j > jobs / 2]
    return {'first_half': max(first) if first else None,
            'second_half': max(second) if second else None}


def summarise_memory(samples: List[Result], params: Result,
                     seconds: float) -> Result:
    """RSS at the start and end, and its growth once the dispatcher's
    in-memory histories (jobs: 10,000; polls: 800) and the agent's stored
    history (10,000 + trimming slack) are all full: growth before that is
    the histories filling, growth after it is something else."""
    last = samples[-1]
    full = [s for s in samples
            if s.get('dispatcher_job_history', 0) >= JOB_HISTORY
            and s.get('dispatcher_poll_history', 0) >= POLL_HISTORY
            and s.get('agent_completed_history', 0) >= HISTORY_SIZE]
    tail = None
    if full and full[0] is not last:
        first = full[0]
        growth = last['rss_kib'] - first['rss_kib']
        tail = {'from_jobs': first['jobs'], 'to_jobs': last['jobs'],
                'growth_mib': round(growth / 1024, 1),
                'growth_fraction': round(growth / first['rss_kib'], 4),
                'bytes_per_job': round(growth * 1024
                                       / (last['jobs'] - first['jobs']), 1)}
    return {
        'jobs': last['jobs'], 'batch': params['memory_batch'],
        'seconds': round(seconds, 1),
        'rss_mib_start': round(samples[0]['rss_kib'] / 1024, 1),
        'rss_mib_end': round(last['rss_kib'] / 1024, 1),
        'hwm_mib_end': round(last['hwm_kib'] / 1024, 1),
        'rss_after_histories_full': tail,
        'histories_end': {
            'dispatcher_job_history': last.get('dispatcher_job_history'),
            'dispatcher_poll_history': last.get('dispatcher_poll_history'),
            'agent_completed_history': last.get('agent_completed_history'),
        },
        # What else grows with the jobs (see _zc_worker.pooled_invalidations)
        # Peaks over the first and the second half of the jobs: bounded,
        # they would be about equal; they grow with the jobs until the
        # pool happens to reuse an idle connection.
        'pooled_invalidations_end': last.get('pooled_invalidations'),
        'pooled_invalidations_peak': _peaks(samples, 'pooled_invalidations',
                                            last['jobs']),
        'storage_index_oids_end': last.get('storage_index_oids'),
        'samples': samples,
    }


def run(params: Optional[Result] = None, log: Log = print) -> Result:
    p = dict(DEFAULTS, **(params or {}))
    out: Result = {'params': dict(p)}
    log('  poll cost, 0 vs %d completed jobs kept' % p['history'])
    out['poll_cost'] = poll_cost(p, log)
    log('  memory after %d jobs' % p['memory_jobs'])
    out['memory'] = Memory(p).result()
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--json', default=None,
                    help='output path (default benchmarks/results/scale.json)')
    args = ap.parse_args(argv)
    result = run(QUICK if args.quick else DEFAULTS,
                 log=common.log_to_stderr)
    result['machine'] = common.machine_description()
    pc, mem = result['poll_cost'], result['memory']
    common.print_table(
        ['what', '0 kept', '%d kept' % pc['history'], 'ratio'],
        [['idle poll, us', pc['idle_poll_us']['empty'],
          pc['idle_poll_us']['full'], pc['idle_poll_ratio_full_to_empty']],
         ['idle poll, CPU us', pc['idle_poll_cpu_us']['empty'],
          pc['idle_poll_cpu_us']['full'],
          pc['idle_poll_cpu_ratio_full_to_empty']],
         ['no-op jobs/s', pc['jobs_per_s']['empty'],
          pc['jobs_per_s']['full'], pc['throughput_ratio_full_to_empty']],
         ['CPU ms per job', pc['cpu_ms_per_job']['empty'],
          pc['cpu_ms_per_job']['full'],
          pc['cpu_per_job_ratio_full_to_empty']]])
    tail = mem['rss_after_histories_full']
    print('memory: RSS %.1f MiB -> %.1f MiB after %d jobs%s; %s; idle '
          'pooled connections: peak invalidated oids %r' % (
              mem['rss_mib_start'], mem['rss_mib_end'], mem['jobs'],
              ' (stopped early: time bound)' if mem['truncated_by_time']
              else '',
              'after the histories filled (%d jobs): %+.1f MiB, %.0f B/job'
              % (tail['from_jobs'], tail['growth_mib'], tail['bytes_per_job'])
              if tail else 'the histories never all filled',
              mem['pooled_invalidations_peak']))
    print('wrote %s' % common.write_result('scale', result, args.json))


if __name__ == '__main__':
    main()
