"""Job functions and worker entry points for the peer benchmarks.

Kept in their own importable module so that the enqueuing process and the
worker processes agree on the job's dotted name (RQ) or task name (Huey).

    python -m benchmarks._peer_jobs huey <sqlite-file> <threads>
    python -m benchmarks._peer_jobs rq <redis-url> <queue-name>

Both run until SIGTERM.
"""
import os
import sys
import time
from typing import Any, Sequence, Tuple


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


def main(argv: Sequence[str]) -> None:
    kind = argv[0]
    if kind == 'huey':
        huey_consumer(argv[1], int(argv[2]))
    elif kind == 'rq':
        rq_worker(argv[1], argv[2])
    else:
        raise SystemExit('unknown worker kind %r' % kind)


if __name__ == '__main__':
    # Run the functions from the module imported under its real name, so
    # that task names ("benchmarks._peer_jobs.started_at") match the
    # enqueuing process's, not "__main__.started_at".
    from benchmarks import _peer_jobs
    _peer_jobs.main(sys.argv[1:])
