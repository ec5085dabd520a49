"""The database stays bounded under a steady job load: histories are
trimmed by size and age, and packing frees the jobs they dropped."""
import datetime
import os

import transaction
import ZODB

import pyramid_zcasync
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.agent import CompletedHistory
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync import Job, keys
from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result

from jobs import noop


def run_jobs(queue, count):
    last = None
    for _ in range(count):
        last = queue.put(noop)
    transaction.commit()
    wait_for_result(last, seconds=60)
    while len(queue):  # the last put is not always the last run
        transaction.begin()


def packed_size(db, path):
    db.pack()
    return os.path.getsize(path)


def test_packing_keeps_the_database_bounded(tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(path)
    pyramid_zcasync.install_queues(db)
    running = dispatcher_module.start(
        db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False, history_size=50)
    connection = db.open()
    queue = IQueue(connection.root())
    try:
        run_jobs(queue, 600)
        first = packed_size(db, path)
        run_jobs(queue, 1200)
        second = packed_size(db, path)
        agent = queue.dispatchers[running.UUID]['main']
        transaction.begin()
        assert len(agent.completed) <= 50 + 100  # size + trim slack
        # Twice the jobs, yet the packed file grew by less than a tenth.
        assert second < first * 1.1, (first, second)
    finally:
        connection.close()
        tear_down_dispatcher(running)
        db.close()


def ended_job(when, tiebreak):
    job = Job(noop)
    job._key = keys.make(0, tiebreak)
    job.active_end = when
    return job


def test_history_trims_by_age_and_size():
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    history = CompletedHistory(max_age=datetime.timedelta(hours=1),
                               max_size=1000)
    old = [ended_job(now - datetime.timedelta(hours=3), n) for n in range(5)]
    new = [ended_job(now - datetime.timedelta(minutes=n), 10 + n)
           for n in range(5)]
    for job in old + new:
        history.add(job, now)
    history.trim(now)
    assert sorted(history, key=id) == sorted(new, key=id)
    history.configure(max_size=2)
    history.trim(now)
    assert list(history) == [new[0], new[1]]  # the newest two, newest first
