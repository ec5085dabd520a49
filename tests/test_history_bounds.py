"""A dispatcher's in-memory records stay bounded however long it runs.

The 30-minute soak saw a worker's memory grow from 52 to 109 MB; what
grew was these records filling up to their bounds (and ZEO's client
cache index, bounded by its file's size).  These tests count entries
after many times the bound's worth of jobs, retries and threads: a
record that grows with uptime fails them, whatever the machine's speed.
"""
import datetime
import threading

from pyramid_zcasync.history import EARLIER_RUNS, JobHistory, Poll, Polls
from pyramid_zcasync.monitor import Monitor

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)


def run_once(history, job_id, at):
    """What the executor records of one run, claim to completion."""
    history.record(job_id, id=job_id, queue='', agent='main', poll_id=1,
                   claimed=True)
    history.record(job_id, started=at, thread=1)
    history.record(job_id, completed=at, status='completed-status',
                   result='None', runtime=0.01, pickup=0.1, failed=False)


def test_job_history_keeps_its_size_over_many_jobs():
    history = JobHistory(size=100)
    for number in range(1000):
        run_once(history, (number, ''), T0)
    assert len(history) == 100
    assert history.get((999, '')) is not None  # the newest are kept
    assert history.get((0, '')) is None
    assert history.active_ids(started=False) == []


def test_a_job_retried_many_times_keeps_few_earlier_runs():
    history = JobHistory(size=10)
    for attempt in range(200):
        run_once(history, (1, ''), T0 + datetime.timedelta(seconds=attempt))
    entry = history.get((1, ''))
    assert len(entry['earlier runs']) == EARLIER_RUNS
    assert len(history) == 1


def test_jobs_claimed_and_never_completed_are_bounded_too():
    """A dispatcher that claims jobs whose completion it never sees (it
    lost them to a sibling that found it dead) must not keep them open
    for ever."""
    history = JobHistory(size=50)
    for number in range(500):
        history.record((number, ''), id=(number, ''), claimed=True)
    assert len(history) == 50
    assert len(history.active_ids(started=False)) == 50


def test_polls_keep_their_size_and_count_every_poll():
    polls = Polls(size=20)
    for key in range(300):
        polls.add(Poll(key, T0, {'': {'main': {'new jobs': [key]}}}))
    assert len(polls) == 20
    assert polls.total == 300
    assert polls.first().key == 299


class Watched:
    UUID = 'u'
    db = None
    clock = None
    poll_interval = 1.0
    activated = None


def report_from_a_thread(monitor, exc):
    thread = threading.Thread(target=monitor.report_storage, args=(exc,))
    thread.start()
    thread.join()


def test_storage_trouble_of_threads_that_ended_is_forgotten():
    """Pool threads come and go (scale, shrink): one that ended while the
    storage was away must neither keep /health down nor stay listed."""
    monitor = Monitor(Watched())
    for _ in range(200):
        report_from_a_thread(monitor, OSError('server away'))
    assert monitor.storage_trouble == {}
    assert len(monitor._trouble) <= 1  # only the last, until next report


def test_storage_trouble_of_a_running_thread_stays_until_it_commits():
    monitor = Monitor(Watched())
    monitor.report_storage(OSError('disk full'))
    name = threading.current_thread().name
    assert monitor.storage_trouble == {name: 'disk full'}
    monitor.report_storage(None)
    assert monitor.storage_trouble == {}
