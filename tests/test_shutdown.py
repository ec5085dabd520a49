"""Stopping ``pzcasync-worker``: what README's "Stopping" section says.

Real worker processes on a copy of development.ini (FileStorage, read by
the test between runs).  SIGINT logs in the order things happen; a job
running longer than the grace is handed back to its queue and runs again,
from the start, at the next start; a second SIGINT exits at once, and the
next start recovers the job it left running.
"""
import os
import re
import signal
import subprocess

import pytest
import ZODB
import ZODB.FileStorage

import jobs
import pyramid_zcasync
from conftest import stop_process
from pyramid_zcasync.instance import read_uuid
from pyramid_zcasync.interfaces import COMPLETED, PENDING, IQueue
from test_scripts import (READY, WORKER, clean_env, default_sigint,
                          make_site, wait_until)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


class Worker:
    """pzcasync-worker with tests/ importable (for tests/jobs.py)."""

    def __init__(self, ini, name):
        self.log = os.path.join(os.path.dirname(ini), name + '.out')
        env = clean_env()
        env['PYTHONPATH'] = os.pathsep.join(
            [TESTS_DIR] + [p for p in [env.get('PYTHONPATH')] if p])
        with open(self.log, 'wb') as out:
            self.process = subprocess.Popen(
                WORKER + [ini], stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=os.path.dirname(ini), preexec_fn=default_sigint)

    @property
    def output(self):
        with open(self.log, encoding='utf-8', errors='replace') as stream:
            return stream.read()

    def wait_for(self, text, what):
        wait_until(lambda: text in self.output or
                   self.process.poll() is not None, 30, what)
        assert text in self.output, self.output

    def wait(self):
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError('worker still runs:\n' + self.output)


@pytest.fixture
def workers():
    started = []

    def start(ini, name='worker'):
        worker = Worker(ini, name)
        started.append(worker)
        return worker
    yield start
    for worker in started:
        stop_process(worker.process)


@pytest.fixture
def site(tmp_path):
    """development.ini's copy, with a long job queued (it runs while the
    file ``hold`` exists) whose runs are written to ``runs.log``."""
    ini = make_site(tmp_path)
    hold, runs = str(tmp_path / 'hold'), str(tmp_path / 'runs.log')
    open(hold, 'w').close()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'var' /
                                                  'Data.fs')))
    try:
        pyramid_zcasync.install_queues(db)
        with db.transaction() as conn:
            IQueue(conn.root()).put(jobs.record_run, runs, 'long', hold, 120)
    finally:
        db.close()
    return ini, hold, runs


def stored_job(ini):
    """(status, queue length) of the one job, from the FileStorage."""
    path = os.path.join(os.path.dirname(ini), 'var', 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True))
    try:
        with db.transaction() as conn:
            queue = IQueue(conn.root())
            agent_jobs = [job for registration in queue.dispatchers.values()
                          for agent in registration.values()
                          for job in list(agent) + list(agent.completed)]
            pending = list(queue)
            job = (pending + agent_jobs)[0]
            return job.status, len(pending)
    finally:
        db.close()


def starts(runs):
    return [event for event, _, _ in jobs.runs(runs, 'long')]


def interrupted_while_the_job_runs(ini, runs, workers):
    """A worker sent SIGINT once the long job runs in it."""
    worker = workers(ini)
    wait_until(lambda: starts(runs) == ['start'], 30, 'the job starts')
    worker.process.send_signal(signal.SIGINT)
    return worker


def run_to_the_end(ini, hold, runs, workers):
    """Start a worker again, let the job finish: it ran again from the
    start, and completed (a job that finished gets the grace to commit)."""
    os.remove(hold)
    again = workers(ini, 'again')
    wait_until(lambda: 'end' in starts(runs), 30, 'the job runs again')
    again.process.send_signal(signal.SIGINT)
    assert again.wait() == 0, again.output
    assert starts(runs) == ['start', 'start', 'end']
    assert stored_job(ini) == (COMPLETED, 0)


def test_worker_logs_stopping_before_stopped(site, workers):
    ini, hold, runs = site
    worker = workers(ini)
    worker.wait_for(READY, 'the worker starts')
    uuid = read_uuid(os.path.join(os.path.dirname(ini), 'var', 'uuid.txt'),
                     create=False)
    worker.process.send_signal(signal.SIGINT)
    assert worker.wait() == 0, worker.output
    lines = worker.output.splitlines()
    order = [next(i for i, line in enumerate(lines) if re.search(text, line))
             for text in ('SIGINT: stopping dispatcher %s' % uuid,
                          'dispatcher %s stopped' % uuid,
                          'pzcasync-worker: stopped')]
    assert order == sorted(order), worker.output


def test_long_job_is_handed_back_and_runs_again_from_the_start(
        site, workers):
    ini, hold, runs = site
    worker = interrupted_while_the_job_runs(ini, runs, workers)
    assert worker.wait() == 0, worker.output
    assert 'recovered 1 unfinished job(s)' in worker.output
    assert starts(runs) == ['start']  # cut short: no end
    assert stored_job(ini) == (PENDING, 1)  # back in its queue

    run_to_the_end(ini, hold, runs, workers)


def test_second_sigint_exits_at_once_and_the_next_start_recovers(
        site, workers):
    ini, hold, runs = site
    worker = interrupted_while_the_job_runs(ini, runs, workers)
    worker.wait_for('stopping dispatcher', 'the worker starts stopping')
    worker.process.send_signal(signal.SIGINT)
    assert worker.wait() == 128 + signal.SIGINT, worker.output
    assert 'SIGINT again: exiting now' in worker.output
    assert 'recovered 1 unfinished' not in worker.output
    assert starts(runs) == ['start']

    run_to_the_end(ini, hold, runs, workers)
