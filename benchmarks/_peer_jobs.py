"""Job functions and worker entry points for the peer benchmarks.

Kept in their own importable module so that the enqueuing process and the
worker processes agree on the job's dotted name (RQ) or task name (Huey).

    python -m benchmarks._peer_jobs huey <sqlite-file> <threads>
    python -m benchmarks._peer_jobs rq <redis-url> <queue-name>
    python -m benchmarks._peer_jobs dramatiq <redis-url> <threads>
    python -m benchmarks._peer_jobs celery <redis-url> <threads>
    python -m benchmarks._peer_jobs procrastinate <conninfo> <concurrency>

Each runs one worker process until SIGTERM.  Every peer runs with its
own defaults but for the worker's concurrency and a quieter log level.
"""
import os
import signal
import sys
import threading
import time
from typing import Any, Sequence, Tuple

#: The task name every peer registers ``started_at`` under.
TASK_NAME = 'started_at'


def started_at() -> float:
    """The no-op job: return the wall-clock time at which it started."""
    return time.time()


def make_huey(filename: str) -> Tuple[Any, Any]:
    """A SqliteHuey on ``filename`` (huey's defaults: WAL journal, SQLite's
    default synchronous=FULL) with the ``started_at`` task; returns
    (huey, task)."""
    from huey import SqliteHuey
    huey = SqliteHuey('bench', filename=filename)
    task = huey.task()(started_at)
    return huey, task


def huey_consumer(filename: str, workers: int) -> None:
    from huey.consumer import Consumer
    huey, _ = make_huey(filename)
    # huey's defaults otherwise (initial_delay 0.1 s, backoff 1.15, ...).
    consumer = Consumer(huey, workers=workers, worker_type='thread')
    consumer.run()   # until SIGTERM/SIGINT (handlers installed by run())


def rq_worker(url: str, queue_name: str) -> None:
    from redis import Redis
    from rq import Queue
    from rq.worker import SimpleWorker
    conn = Redis.from_url(url)
    queue = Queue(queue_name, connection=conn)
    worker = SimpleWorker([queue], connection=conn)
    # WARNING keeps the per-job INFO log lines out (they cost a little and
    # would only go to a pipe); everything else is RQ's default.
    worker.work(logging_level=os.environ.get('BENCH_RQ_LOG', 'WARNING'),
                with_scheduler=False)


def make_dramatiq(url: str) -> Tuple[Any, Any, Any]:
    """A RedisBroker with the Results middleware (a RedisBackend on the
    same server: dramatiq keeps no results otherwise) and the
    ``started_at`` actor; returns (broker, backend, actor)."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend
    broker = RedisBroker(url=url)
    backend = RedisBackend(url=url)
    broker.add_middleware(Results(backend=backend))
    actor = dramatiq.actor(actor_name=TASK_NAME, store_results=True,
                           broker=broker)(started_at)
    return broker, backend, actor


def dramatiq_worker(url: str, threads: int) -> None:
    """What ``dramatiq`` runs in each of its worker processes, in this one
    process (so that its CPU is this PID's)."""
    from dramatiq import Worker
    broker, _, _ = make_dramatiq(url)
    worker = Worker(broker, worker_threads=threads)
    worker.start()
    _wait_for_sigterm()
    worker.stop()


def make_celery(url: str) -> Tuple[Any, Any]:
    """A Celery app with Redis as broker and result backend, celery's
    defaults otherwise (``task_acks_late`` off: a task is acknowledged
    as it starts); returns (app, task)."""
    from celery import Celery
    app = Celery('bench', broker=url, backend=url)
    task = app.task(name=TASK_NAME)(started_at)
    return app, task


def celery_worker(url: str, threads: int) -> None:
    app, _ = make_celery(url)
    app.worker_main(['worker', '--pool=threads',
                     '--concurrency=%d' % threads,
                     '--loglevel=' + os.environ.get('BENCH_LOG', 'WARNING')])


def make_procrastinate(conninfo: str, sync: bool) -> Tuple[Any, Any]:
    """A procrastinate App on PostgreSQL (psycopg 3; ``sync``: the
    connector a web process defers with) and its ``started_at`` task;
    returns (app, task)."""
    import procrastinate
    connector = (procrastinate.SyncPsycopgConnector if sync
                 else procrastinate.PsycopgConnector)(conninfo=conninfo)
    app = procrastinate.App(connector=connector)
    task = app.task(name=TASK_NAME)(started_at)
    return app, task


def procrastinate_worker(conninfo: str, concurrency: int) -> None:
    """procrastinate's worker (asyncio; LISTEN/NOTIFY on by default; a
    sync task runs in a thread), stopped gracefully by SIGTERM."""
    import logging
    logging.basicConfig(level=os.environ.get('BENCH_LOG', 'WARNING'))
    app, _ = make_procrastinate(conninfo, sync=False)
    app.run_worker(concurrency=concurrency, wait=True)


def _wait_for_sigterm() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def main(argv: Sequence[str]) -> None:
    kind = argv[0]
    if kind == 'huey':
        huey_consumer(argv[1], int(argv[2]))
    elif kind == 'rq':
        rq_worker(argv[1], argv[2])
    elif kind == 'dramatiq':
        dramatiq_worker(argv[1], int(argv[2]))
    elif kind == 'celery':
        celery_worker(argv[1], int(argv[2]))
    elif kind == 'procrastinate':
        procrastinate_worker(argv[1], int(argv[2]))
    else:
        raise SystemExit('unknown worker kind %r' % kind)


if __name__ == '__main__':
    # Run the functions from the module imported under its real name, so
    # that task names ("benchmarks._peer_jobs.started_at") match the
    # enqueuing process's, not "__main__.started_at".
    from benchmarks import _peer_jobs
    _peer_jobs.main(sys.argv[1:])
