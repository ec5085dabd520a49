"""pyramid_zcasync dispatcher processes started by the benchmarks.

    python -m benchmarks._zc_worker zeo PORT UUID_FILE [--poll S]
                                    [--agent-size N]
    python -m benchmarks._zc_worker memory DIRECTORY UUID_FILE --jobs N
                                    [--batch B] [--out JSON]

``zeo``: a dispatcher-only process over the ZEO server on 127.0.0.1:PORT.
Prints ``ready`` once the dispatcher runs, then waits for SIGTERM or SIGINT,
which stop the dispatcher cleanly (the package's own signal handlers).

``memory``: one process with a FileStorage in DIRECTORY and a dispatcher,
which puts N no-op jobs in batches of B (one transaction each), waits for
each batch to be done (stopping early, and saying so, rather than overrun
``--timeout`` seconds), and after each batch records the process's resident
memory (VmRSS from /proc/self/status), the dispatcher's in-memory history
sizes and the agent's stored history length.  The samples are written as
JSON to ``--out``; the process then stops its dispatcher and exits.

The job everywhere is ``benchmarks._peer_jobs.started_at``: the same no-op
that the peers run, returning ``time.time()`` taken as it starts.
"""
import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import common


def rss_kib(pid: str = 'self') -> Tuple[Optional[int], Optional[int]]:
    """Resident set size (VmRSS) and its peak (VmHWM), in KiB."""
    out = {}
    with open('/proc/%s/status' % pid) as f:
        for line in f:
            if line.startswith(('VmRSS:', 'VmHWM:')):
                key, value = line.split(':', 1)
                out[key] = int(value.split()[0])
    return out.get('VmRSS'), out.get('VmHWM')


def _logging() -> None:
    """BENCH_ZC_LOG=LEVEL[:PATH] turns on the package's logging (for
    looking into a run; off by default, as logging costs time)."""
    spec = os.environ.get('BENCH_ZC_LOG')
    if spec:
        import logging
        level, _, path = spec.partition(':')
        logging.basicConfig(
            filename=path or None, level=getattr(logging, level.upper()),
            format='%(asctime)s %(process)d %(threadName)s %(name)s '
                   '%(levelname)s %(message)s')


#: As production.ini ships the queues' database: a 50 MB ZEO client cache
#: and 5,000 objects per connection.
ZEO_CLIENT_CACHE = 50 * 2 ** 20
ZEO_CONNECTION_CACHE = 5000


def zeo_db(port: int) -> Any:
    import ZODB
    from ZEO.ClientStorage import ClientStorage
    return ZODB.DB(ClientStorage(('127.0.0.1', port), wait_timeout=30,
                                 cache_size=ZEO_CLIENT_CACHE),
                   cache_size=ZEO_CONNECTION_CACHE)


def zeo_main(args: argparse.Namespace) -> None:
    serve(zeo_db(args.port), args)


def serve(db: Any, args: argparse.Namespace) -> None:
    """The dispatcher child of the ZEO and RelStorage rows."""
    serve_dispatcher(db, dict(uuid_file=args.uuid_file,
                              poll_interval=args.poll,
                              agent_size=args.agent_size,
                              install_signal_handlers=True))


def serve_dispatcher(db: Any, start_options: Dict[str, Any],
                     stop_dispatchers: bool = True,
                     job_history: Optional[int] = None) -> None:
    """Run a dispatcher on ``db`` until SIGTERM/SIGINT, then close it;
    prints ``ready`` and ``stopped`` for the parent.  The soak's workers
    leave their dispatcher to the package's signal handlers
    (``stop_dispatchers=False``), as a deployment would.  ``job_history``
    bounds the dispatcher's in-memory job records below the package's
    10,000, so that a soak of half an hour fills them and can show the
    memory that follows."""
    import pyramid_zcasync
    from pyramid_zcasync import dispatcher, process

    try:
        pyramid_zcasync.install_queues(db)
        started = dispatcher.start(db, **start_options)
        if job_history is not None:
            started.monitor.jobs.size = job_history
        print('ready', flush=True)
        process.wait_for_signal()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if stop_dispatchers:
            dispatcher.stop_all()
        db.close()
        print('stopped', flush=True)


def pooled_invalidations(db: Any) -> Dict[str, int]:
    """Invalidated oids waiting in the DB pool's idle connections.

    A closed connection stays in the pool and keeps receiving every
    committed oid until it is opened again (ZODB's MVCC adapter); the pool
    reuses the most recently closed connection first, so connections
    opened once at start-up can sit idle, and their sets grow with every
    job.  Reads ZODB internals, for this benchmark only."""
    total, idle = 0, 0
    for connection in list(getattr(db.pool, 'all', ())):
        if connection.opened:
            continue
        idle += 1
        pending = getattr(connection._storage, '_invalidations', None)
        total += len(pending or ())
    return {'idle_connections': idle, 'oids': total}


def _idle(connection: Any, manager: Any) -> bool:
    from pyramid_zcasync.interfaces import KEY
    return common.queue_drained(manager, connection,
                                lambda c: c.root()[KEY][''])


def _memory_sample(running: Any, probe: Any, db: Any, jobs: int,
                   seconds: float) -> Dict[str, Any]:
    """What may grow with the jobs run: the process's memory, the
    dispatcher's and the agent's histories, the pool's held oids."""
    from pyramid_zcasync.interfaces import KEY
    agent = probe.root()[KEY][''].dispatchers[running.UUID]['main']
    rss, hwm = rss_kib()
    return {
        'jobs': jobs, 'rss_kib': rss, 'hwm_kib': hwm,
        'seconds': round(seconds, 3),
        'dispatcher_job_history': len(running.jobs),
        'dispatcher_poll_history': len(running.polls),
        'agent_completed_history': len(agent.completed),
        'pooled_invalidations': pooled_invalidations(db),
        'storage_index_oids': len(getattr(db.storage, '_index', ())),
    }


def _batch_would_overrun(samples: List[Dict[str, Any]],
                         deadline: float) -> bool:
    """Stop early rather than overrun the time bound: a batch takes
    about as long as the previous one did."""
    if len(samples) < 2:
        return False
    last = samples[-1]['seconds'] - samples[-2]['seconds']
    return time.monotonic() + 1.5 * last > deadline


def _run_batches(args: argparse.Namespace, db: Any, running: Any,
                 samples: List[Dict[str, Any]]) -> bool:
    """Put and drain ``args.jobs`` jobs in batches, sampling after each;
    True if the time bound cut the run short."""
    import transaction
    from pyramid_zcasync.interfaces import KEY
    from benchmarks._peer_jobs import started_at
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    probe_manager = transaction.TransactionManager()
    probe = db.open(transaction_manager=probe_manager)
    rss, hwm = rss_kib()
    samples.append({'jobs': 0, 'rss_kib': rss, 'hwm_kib': hwm,
                    'seconds': 0.0})
    started = time.perf_counter()
    deadline = time.monotonic() + args.timeout
    done = 0
    while done < args.jobs:
        if _batch_would_overrun(samples, deadline):
            return True
        batch = min(args.batch, args.jobs - done)
        manager.begin()
        queue = connection.root()[KEY]['']
        for _ in range(batch):
            queue.put(started_at)
        manager.commit()
        connection.cacheMinimize()
        while not _idle(probe, probe_manager):
            if time.monotonic() > deadline + 30:
                raise RuntimeError('timed out after %d jobs' % done)
            time.sleep(0.02)
        done += batch
        samples.append(_memory_sample(running, probe, db, done,
                                      time.perf_counter() - started))
        probe_manager.abort()
        print('%(jobs)d jobs, RSS %(rss_kib)d KiB' % samples[-1], flush=True)
    connection.close()
    probe.close()
    return False


def memory_main(args: argparse.Namespace) -> None:
    import ZODB
    import pyramid_zcasync
    from benchmarks.throughput import running_dispatcher

    # The connection cache development.ini ships (and the FileStorage rows
    # of the suite use): 20,000 objects per connection.
    db = ZODB.DB(os.path.join(args.directory, 'Data.fs'),
                 cache_size=args.cache_size)
    samples: List[Dict[str, Any]] = []
    truncated = False
    try:
        pyramid_zcasync.install_queues(db)
        with running_dispatcher(db, uuid_file=args.uuid_file,
                                poll_interval=args.poll,
                                agent_size=args.agent_size,
                                install_signal_handlers=True) as running:
            truncated = _run_batches(args, db, running, samples)
    finally:
        db.close()
        if args.out:
            with open(args.out, 'w') as f:
                json.dump({'samples': samples, 'jobs_asked': args.jobs,
                           'truncated_by_time': truncated}, f)
    print('done', flush=True)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest='kind', required=True)
    zeo = sub.add_parser('zeo')
    zeo.add_argument('port', type=int)
    zeo.add_argument('uuid_file')
    zeo.add_argument('--poll', type=float, default=5.0)
    zeo.add_argument('--agent-size', type=int, default=3)
    mem = sub.add_parser('memory')
    mem.add_argument('directory')
    mem.add_argument('uuid_file')
    mem.add_argument('--jobs', type=int, default=100000)
    mem.add_argument('--batch', type=int, default=10000)
    mem.add_argument('--poll', type=float, default=5.0)
    mem.add_argument('--agent-size', type=int, default=3)
    mem.add_argument('--timeout', type=float, default=240.0)
    mem.add_argument('--cache-size', type=int, default=20000)
    mem.add_argument('--out')
    args = parser.parse_args(argv)
    _logging()
    if args.kind == 'zeo':
        zeo_main(args)
    else:
        memory_main(args)


if __name__ == '__main__':
    main(sys.argv[1:])
