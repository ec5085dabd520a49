"""Does a dispatcher's memory level off?  One process, a ZEO server, a
dispatcher running rounds of no-op jobs; after each round, what the
process holds.

    python -m benchmarks.soakplateau --rounds 11 --per-round 2000 \
        [--json benchmarks/results/memory-plateau-DATE.json]

The long soak (benchmarks/soak.py) saw a never-killed worker grow from 52
to 109 MB in 30 minutes without saying whether it would stop.  This runs
the same kind of dispatcher without kills, so that each round's figures
can be read against the bounds: the dispatcher's in-memory job history
(history.JOB_HISTORY entries) and polls (history.POLL_HISTORY), and ZEO's
client cache, whose in-memory index grows with its records until its
file (20 MB by default) is full.  Resident memory should rise while they
fill and then stay flat; one that still rises after every bound is full
is a leak.
"""
import argparse
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from benchmarks import common
from benchmarks.soakwatch import rss_mb
from benchmarks.zeo import ZEOServer

#: Jobs put per transaction (a web request's worth).
BATCH = 20


def put_round(db: Any, dispatcher: Any, count: int,
              timeout: float = 300.0) -> None:
    """Put ``count`` no-op jobs in batches; wait until all are done."""
    import transaction

    from benchmarks._peer_jobs import started_at
    from pyramid_zcasync.interfaces import IQueue
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        for _ in range(count // BATCH):
            for attempt in manager.attempts(10):  # conflicts with claims
                with attempt:
                    queue = IQueue(connection.root())
                    for _ in range(BATCH):
                        queue.put(started_at)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            manager.begin()
            if not len(IQueue(connection.root())) and \
                    not dispatcher.monitor.jobs.active_ids(started=False):
                return
            time.sleep(0.2)
        raise RuntimeError('round not done in %s s' % timeout)
    finally:
        manager.abort()
        connection.close()


def figures(db: Any, dispatcher: Any) -> Dict[str, Any]:
    """What the process holds now (after a full collection)."""
    gc.collect()
    cache = db.storage._cache
    return {'rss_mb': round(rss_mb(os.getpid()) or 0, 1),
            'history_jobs': len(dispatcher.monitor.jobs),
            'history_polls': len(dispatcher.monitor.polls),
            'zeo_cache_records': len(cache),
            'gc_objects': len(gc.get_objects()),
            'threads': threading.active_count()}


def run(rounds: int, per_round: int, out: Any = sys.stdout
        ) -> Dict[str, Any]:
    import ZEO

    import pyramid_zcasync
    from pyramid_zcasync import dispatcher as dispatcher_module
    directory = tempfile.mkdtemp(prefix='zcasync-plateau-')
    server = ZEOServer(directory, timeout=30).start()
    db = ZEO.DB(('127.0.0.1', server.port), wait_timeout=30)
    samples: List[Dict[str, Any]] = []
    try:
        pyramid_zcasync.install_queues(db)
        dispatcher = dispatcher_module.start(
            db, uuid_file=os.path.join(directory, 'uuid'), poll_interval=0.5,
            ping_interval=0.3, ping_death_interval=2.0, agent_size=3,
            history_size=1000, install_signal_handlers=False)
        for number in range(rounds):
            put_round(db, dispatcher, per_round)
            sample = dict(figures(db, dispatcher), round=number,
                          jobs=(number + 1) * per_round)
            samples.append(sample)
            print(sample, file=out, flush=True)
        dispatcher_module.stop_all()
    finally:
        db.close()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return {'parameters': {'rounds': rounds, 'per_round': per_round},
            'samples': samples,
            'machine': common.machine_description(
                ('ZODB', 'ZEO', 'persistent', 'transaction'))}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks.soakplateau',
        description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=11)
    parser.add_argument('--per-round', type=int, default=2000)
    parser.add_argument('--json', help='where to write the JSON (default '
                        'benchmarks/results/soakplateau.json)')
    args = parser.parse_args(argv)
    result = run(args.rounds, args.per_round)
    print('written to %s' % common.write_result('soakplateau', result,
                                                  args.json))
    return 0


if __name__ == '__main__':
    sys.exit(main())
