"""A job put in one process starts in another without waiting for a poll:
the dispatcher watches the storage's last transaction (ZEO pushes it; on
RelStorage a storage instance of its own asks PostgreSQL for it, see
pyramid_zcasync/watch.py: RelStorage's own storage object does not see
other processes' commits until polled)."""
import time

import BTrees.OOBTree
import transaction

import jobs
import pyramid_zcasync
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import wait_for_result

POLL_EVERY = 30.0  # a poll would come far too late to explain a pick-up


def test_a_put_in_another_process_is_picked_up_before_any_poll(
        tmp_path, engine, workers):
    db = engine.db()
    pyramid_zcasync.install_queues(db)
    connection = db.open()
    root = connection.root()
    root['starts'] = BTrees.OOBTree.OOBTree()
    transaction.commit()
    worker = workers(engine.spec, tmp_path / 'uuid.txt',
                     (POLL_EVERY, 1.0, 60.0))
    assert worker.first_line == 'ready'
    time.sleep(1.0)  # past the worker's first poll
    queue = IQueue(root)
    waits = []
    for key in range(5):
        job = queue.put(jobs.remember_start, root['starts'], key)
        committed = time.time()
        transaction.commit()
        wait_for_result(job, seconds=10)
        waits.append(root['starts'][key] - committed)
    connection.close()
    db.close()
    assert max(waits) < POLL_EVERY / 10, waits
