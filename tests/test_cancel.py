"""Cancelling a job: pending (completes at once), claimed (never runs) and
running (interrupted within a second by the dispatcher running it, in
this process or another over ZEO, its transaction aborted), through
``job.cancel()``, the dashboard and ``pzcasync INI cancel OID``; a loop
asking ``local.cancel_requested()`` stops cleanly; callbacks see the
JobCancelled failure; no retry policy retries it."""
import json
import os
import subprocess
import sys
import threading
import time

import BTrees.OOBTree
import pytest
import transaction

import jobs
from pyramid_zcasync import lifecycle, local
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.cancelwatch import RunningCalls
from pyramid_zcasync.errors import cancel_reason
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.group import GroupRunner, eligible
from pyramid_zcasync.interfaces import (ACTIVE, ASSIGNED, CALLBACKS,
                                        COMPLETED, IQueue)
from pyramid_zcasync.job import BadStatusError, Job, JobCancelled
from pyramid_zcasync.lifelog import events
from pyramid_zcasync.retry import RetryCommonForever, RetryPolicy
from pyramid_zcasync.runner import Runner
from pyramid_zcasync.testing import wait_for_result, wait_for_start
from pyramid_zcasync.timelimit import Interruptible

#: What the issue promises: a running job ends within this many seconds
#: of the cancel's commit.
PROMISED = 1.0


# -- jobs (module-level: the worker process imports them from here) -------

def write_then_spin(tree, key, seconds=30):
    """Writes to the database, then computes without ever asking whether
    it was cancelled: only an interruption stops it."""
    tree[key] = 'written'
    return jobs.busy_for(seconds)


def write_then_loop(tree, key, seconds=30):
    """Writes, then loops in short steps until asked to stop; says so in
    a live annotation (committed at once) and returns."""
    tree[key] = 'written'
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if local.cancel_requested():
            local.set_live_annotation('saw the request', True)
            return 'stopped cleanly'
        time.sleep(0.01)
    return 'never asked'


def note_result(tree, result):
    """A callback: what its job ended with."""
    tree['callback saw'] = result


def cancel_from_inside(tree, key):
    """Commits a cancel of itself from another connection (as another
    process would), then writes and asks: what a request committed during
    a call looks like without a dispatcher watching."""
    job = local.get_job()
    oid = job._p_oid
    manager = transaction.TransactionManager()
    connection = job._p_jar.db().open(transaction_manager=manager)
    try:
        manager.begin()
        connection.get(oid).cancel('from another process')
        manager.commit()
    finally:
        connection.close()
    tree[key] = local.cancel_requested()
    return 'finished anyway'


def raise_cancelled():
    raise JobCancelled('by its own code')


# -- helpers ----------------------------------------------------------------

def registered(queue, uuid='u1', size=3):
    registration = queue.dispatchers.register(uuid)
    registration.add(Agent('main', size))
    registration.activate()
    return registration


def run_as_claimed(db, registration, job):
    """Claim ``job`` for ``registration``'s agent and run it as its
    dispatcher would; then see what that run committed."""
    registration['main'].claimJob()
    transaction.commit()
    Runner(db, registration.UUID).run(job._p_oid)
    transaction.begin()


def open_tree(connection, name='tree'):
    root = connection.root()
    tree = root[name] = BTrees.OOBTree.OOBTree()
    return tree


def timed_cancel(job, seconds=10):
    """Cancel ``job`` (in its connection) and commit; seconds from that
    commit until its result is in."""
    job.cancel()
    transaction.commit()
    committed = time.monotonic()
    wait_for_result(job, seconds)
    return time.monotonic() - committed


# -- the request itself ------------------------------------------------------

def test_a_pending_job_completes_at_once_and_its_callbacks_see_it(queue):
    tree = open_tree(queue._p_jar)
    job = queue.put(jobs.multiply, 6, 7)
    job.addCallback(Job(note_result, tree))
    job.cancel('not wanted')
    assert job.status in (CALLBACKS, COMPLETED)
    assert job.result.check(JobCancelled)
    assert job.result.message == 'not wanted'
    assert cancel_reason(job) is None  # nothing left for a dispatcher


def test_a_completed_job_is_refused_naming_it(queue):
    job = queue.put(jobs.multiply, 6, 7)
    job.cancel()
    with pytest.raises(BadStatusError, match=r'cannot cancel .*multiply.*'
                       r'it has completed already'):
        job.cancel()


def test_a_job_whose_call_finished_is_refused(queue):
    registration = registered(queue)
    job = queue.put(jobs.multiply, 6, 7)
    job.addCallback(jobs.multiply)
    registration['main'].claimJob()
    lifecycle.start(job)
    lifecycle.finish(job, 42)  # as a worker does; its callbacks are next
    assert job.status == CALLBACKS
    with pytest.raises(BadStatusError, match='its call finished already'):
        job.cancel()


def test_a_claimed_job_gets_a_request_logged_once(queue):
    registration = registered(queue)
    job = queue.put(jobs.multiply, 6, 7)
    assert registration['main'].claimJob() is job
    job.cancel('first')
    job.cancel('second')  # the first reason stays
    assert job.status == ASSIGNED and cancel_reason(job) == 'first'
    assert not eligible(job, 'u1')  # never run in a group
    details = [event.detail for event in events(job)]
    assert details.count('cancel requested: first') == 1


def test_no_retry_policy_retries_a_cancel(db):
    failure = Failure.from_exception(JobCancelled('stop'))
    assert RetryPolicy(None).jobError(failure, {}) is False
    connection = db.open()
    queue = IQueue(connection.root())
    registration = registered(queue)
    job = queue.put(raise_cancelled)
    job.retry_policy_factory = RetryCommonForever
    transaction.commit()
    run_as_claimed(db, registration, job)
    assert job.status == COMPLETED and job.result.check(JobCancelled)
    assert 'by its own code' in job.result.message
    connection.close()


# -- runs without a dispatcher (the runner alone) ---------------------------

def test_a_claimed_job_cancelled_before_its_worker_started_never_runs(db):
    connection = db.open()
    queue = IQueue(connection.root())
    tree = open_tree(connection)
    registration = registered(queue)
    job = queue.put(write_then_spin, tree, 'ran', 0)
    job.addCallback(Job(note_result, tree))
    transaction.commit()
    registration['main'].claimJob()
    job.cancel('changed my mind')
    transaction.commit()
    Runner(db, 'u1').run(job._p_oid)
    transaction.begin()
    assert job.status == COMPLETED and job.result.check(JobCancelled)
    assert 'ran' not in tree
    assert tree['callback saw'].check(JobCancelled)
    assert cancel_reason(job) is None  # fulfilled: a retry is not cancelled
    assert len(registration['main']) == 0  # its slot is free
    connection.close()


def test_a_request_committed_during_the_call_wins_over_its_result(db):
    """The request and the result both write the job: the result's commit
    conflicts, and the retry finds the request.  No false success, and
    ``local.cancel_requested()`` reads the committed request."""
    connection = db.open()
    queue = IQueue(connection.root())
    tree = open_tree(connection)
    registration = registered(queue)
    job = queue.put(cancel_from_inside, tree, 'asked')
    transaction.commit()
    run_as_claimed(db, registration, job)
    assert job.status == COMPLETED and job.result.check(JobCancelled)
    assert job.result.message == 'from another process'
    assert 'asked' not in tree  # the attempt's writes were aborted
    connection.close()


def wait_until_asked(tree, key, seconds=10):
    """Loops in short steps until asked to stop, writing as it goes."""
    tree[key] = 'written'
    deadline = time.monotonic() + seconds
    while not local.cancel_requested():
        assert time.monotonic() < deadline, 'never asked to stop'
        time.sleep(0.01)
    return 'stopped'


class WatchingDispatcher:
    """What a runner uses of a dispatcher that watches for cancels."""

    def __init__(self):
        self.running_calls = RunningCalls()


def cancel_once_running(db, calls, oid):
    """In another thread, as the dispatcher's watch would: commit a
    cancel of job ``oid`` once its call runs, then ask the call to stop."""
    def cancel():
        while oid not in calls.snapshot():
            time.sleep(0.01)
        with db.transaction() as connection:
            connection.get(oid).cancel('stop the group job')
        calls.snapshot()[oid].ask_to_stop('stop the group job')
    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


def test_a_cancelled_job_of_a_group_leaves_the_others_committed(db):
    connection = db.open()
    queue = IQueue(connection.root())
    tree = open_tree(connection)
    registration = registered(queue)
    slow = queue.put(wait_until_asked, tree, 'slow')
    quick = queue.put(jobs.multiply, 6, 7)
    transaction.commit()
    for _ in range(2):
        registration['main'].claimJob()
    transaction.commit()
    dispatcher = WatchingDispatcher()
    runner = Runner(db, 'u1', dispatcher=dispatcher)
    thread = cancel_once_running(db, dispatcher.running_calls, slow._p_oid)
    outcomes = dict(GroupRunner(runner).run([slow._p_oid, quick._p_oid]))
    thread.join(10)
    transaction.begin()
    assert quick.result == 42 and not outcomes[quick._p_oid]['failed']
    assert slow.status == COMPLETED and slow.result.check(JobCancelled)
    assert 'slow' not in tree  # rolled back to its savepoint
    assert len(registration['main']) == 0
    connection.close()


def test_an_interruptible_call_is_interrupted_once_and_never_after_it():
    call = Interruptible()
    assert call.ask_to_stop('why') and not call.ask_to_stop('again')
    assert call.stop_reason == 'why' and call.stop_asked
    call.finish()
    assert not call.interrupt(JobCancelled)  # ended: nothing lands later
    jobs.busy_for(0.01)


# -- with a real dispatcher on FileStorage ----------------------------------

@pytest.fixture
def running_queue(dispatcher):
    connection = dispatcher.db.open()
    queue = IQueue(connection.root())
    yield queue, open_tree(connection)
    transaction.abort()
    connection.close()


def test_a_running_job_is_interrupted_within_a_second(running_queue):
    queue, tree = running_queue
    job = queue.put(write_then_spin, tree, 'written')
    job.addCallback(Job(note_result, tree))
    transaction.commit()
    wait_for_start(job)
    time.sleep(0.1)  # inside its call
    took = timed_cancel(job)
    assert took < PROMISED, took
    assert job.result.check(JobCancelled)
    assert 'in write_then_spin' in job.result.getTraceback()  # where
    assert 'written' not in tree  # its transaction was aborted
    assert tree['callback saw'].check(JobCancelled)
    details = [event.detail for event in events(job)]
    assert 'cancel requested: cancelled' in details
    assert details[-2:] == ['cancelled', 'callbacks done']


def test_a_loop_asking_cancel_requested_stops_cleanly(running_queue):
    queue, tree = running_queue
    job = queue.put(write_then_loop, tree, 'written')
    transaction.commit()
    wait_for_start(job)
    time.sleep(0.1)
    took = timed_cancel(job)
    assert took < PROMISED, took
    assert job.result.check(JobCancelled)
    assert job.annotations.get('saw the request') is True
    assert 'written' not in tree


# -- the dashboard and the command line -------------------------------------

def test_the_dashboard_cancels_a_running_job(tmp_path, made):
    from test_dashboard import ADMIN, Model, token_of
    from pyramid_zcasync.testing import get_poll
    import webtest
    app = made()
    get_poll(app.registry.zcasync_dispatcher, 0)
    model = Model(app)
    client = webtest.TestApp(app)
    try:
        tree = model.connection.root()['tree'] = BTrees.OOBTree.OOBTree()
        job = model.put(write_then_spin, tree, 'written')
        wait_until_running(model, job)
        response = client.post('/_async/actions/cancel', {
            'csrf_token': token_of(client), 'job': str(oid(job))},
            headers=ADMIN, status=303)
        page = response.follow(headers=ADMIN)
        assert 'Job 0x%x was cancelled' % oid(job) in page.text
        wait_for_result(job)
        assert job.result.check(JobCancelled)
        assert 'administrator' in job.result.message
        assert 'written' not in tree
    finally:
        model.close()


@pytest.fixture
def made(tmp_path):
    from test_dashboard import make_app
    from pyramid_zcasync.config import close_databases
    apps = []

    def make(**kwargs):
        apps.append(make_app(tmp_path, **kwargs))
        return apps[-1]
    yield make
    for app in apps:
        close_databases(app.registry)


def wait_until_running(model, job, seconds=10):
    deadline = time.monotonic() + seconds
    while True:
        model.sync()
        if job.status == ACTIVE:
            time.sleep(0.1)
            return
        assert time.monotonic() < deadline, 'the job did not start'
        time.sleep(0.02)


def oid(job):
    return int.from_bytes(job._p_oid, 'big')


# -- two processes over ZEO ---------------------------------------------------

def test_over_zeo_the_worker_process_stops_the_job(tmp_path, zeo_server,
                                                   workers):
    """The job runs in a worker process; the cancels are committed here
    (``job.cancel()``) and by ``pzcasync INI cancel OID``."""
    db = zeo_server.db()
    try:
        import pyramid_zcasync
        pyramid_zcasync.install_queues(db)
        connection = db.open()
        queue = IQueue(connection.root())
        tree = open_tree(connection)
        first = queue.put(write_then_spin, tree, 'first')
        second = queue.put(write_then_loop, tree, 'second')
        transaction.commit()
        worker = workers('zeo:%d' % zeo_server.port, tmp_path / 'uuid.txt')
        assert worker.first_line == 'ready'
        for job in (first, second):
            wait_for_start(job, 20)
        time.sleep(0.2)

        took = timed_cancel(first)
        assert took < PROMISED, took
        assert first.result.check(JobCancelled)
        assert 'first' not in tree

        result = cancel_with_the_cli(tmp_path, zeo_server.port, oid(second))
        asked = time.monotonic()
        wait_for_result(second, 10)
        assert time.monotonic() - asked < PROMISED
        assert second.result.check(JobCancelled)
        assert 'administrator' in second.result.message
        assert second.annotations.get('saw the request') is True
        assert json.loads(result)['done'] == 'cancelled'
        for job in (first, second):  # never retried
            assert [e.attempt for e in events(job)][-1] == 1
            assert [e.detail for e in events(job)].count('started') == 1
        transaction.abort()
        connection.close()
    finally:
        db.close()


def cancel_with_the_cli(tmp_path, port, job_oid):
    """``pzcasync INI cancel OID --json``; its stdout.  The job's module
    (this file) is importable by it, as the app's would be."""
    from test_scripts import CLI, clean_env, make_site
    site = tmp_path / 'site'
    site.mkdir()
    ini = make_site(site, 'zeo://127.0.0.1:%d?wait_timeout=20' % port)
    env = clean_env()
    env['PYTHONPATH'] = os.pathsep.join(
        [os.path.dirname(os.path.abspath(__file__))] + sys.path)
    done = subprocess.run(CLI + [ini, 'cancel', str(job_oid), '--json'],
                          capture_output=True, text=True, env=env,
                          timeout=60, cwd=str(site))
    assert done.returncode == 0 and 'Traceback' not in done.stderr, done
    return done.stdout


@pytest.mark.parametrize('status, words', [
    ('pending', 'cancelled: out of its queue, it will not run'),
    ('completed', 'cancelled: out of its queue, it will not run'),
    ('active', 'asked to stop: its dispatcher interrupts it within a second'),
    ('assigned', 'asked to stop'),
])
def test_the_command_line_says_what_a_cancel_did(status, words):
    from pyramid_zcasync.scripts import tables
    said = tables.changed({'done': 'cancelled',
                           'job': {'id': [42, ''], 'status': status}})
    assert said.startswith('job 42 ') and words in said
