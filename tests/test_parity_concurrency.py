"""zc.async parity (issue 14): an agent's size is a promise of concurrency,
conflicts count across a group, and a test is told of a job still running
when its dispatcher is torn down.  Real dispatchers on FileStorage."""
import os
import threading
import time

import pytest
import transaction
import ZODB

import pyramid_zcasync
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import (tear_down_dispatcher, wait_for_result,
                                     wait_for_start, wait_until)


def hold_while(path, seconds=30):
    """Runs while the file ``path`` exists (at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return 'released'


@pytest.fixture
def fs_db(tmp_path):
    db = ZODB.DB(str(tmp_path / 'Data.fs'))
    pyramid_zcasync.install_queues(db)
    yield db
    transaction.abort()
    db.close()


@pytest.fixture
def queue(fs_db):
    connection = fs_db.open()
    yield IQueue(connection.root())
    transaction.abort()
    connection.close()


def start(db, tmp_path, **options):
    return dispatcher_module.start(
        db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False, **options)


def test_tear_down_names_a_job_still_running(fs_db, queue, tmp_path):
    before = set(threading.enumerate())
    dispatcher = start(fs_db, tmp_path)
    hold = tmp_path / 'hold'
    hold.touch()
    job = queue.put(hold_while, str(hold))
    transaction.commit()
    wait_for_start(job)
    with pytest.raises(AssertionError, match='hold_while') as raised:
        tear_down_dispatcher(dispatcher, seconds=1)
    assert 'still ran' in str(raised.value)
    hold.unlink()  # then let the job's thread end before the database
    wait_until(lambda: not [t for t in set(threading.enumerate()) - before
                            if t.is_alive()], 10, 'the worker threads to end')
