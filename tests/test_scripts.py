"""``pzcasync-worker`` and ``pzcasync`` end to end, as subprocesses.

Each test has its own copy of development.ini (its own var/, a short
poll).  On ZEO the worker runs jobs the test puts, while ``pzcasync``
reads and changes the same database beside it: every report, the JSON,
retry of a failed job (the worker then completes it), cancel of a pending
one, the error messages, a twin worker refused, SIGTERM.  On FileStorage
``pzcasync`` says the database is locked while the worker runs, and reads
what the worker left once SIGINT stopped it.  Every wait is bounded and
every child is stopped by its PID.
"""
import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import ZODB
import ZODB.FileStorage

import pyramid_zcasync
from pyramid_zcasync.demo import jobs as demo_jobs
from pyramid_zcasync.instance import read_uuid
from pyramid_zcasync.interfaces import COMPLETED, KEY, NEW, IQueue

from conftest import stop_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
POLL = 'zcasync.poll_interval = 5'
URI = 'zodbconn.uri = file://%(here)s/var/Data.fs?connection_cache_size=20000'
READY = 'running in process'


def command(name, module):
    """The console script beside this Python, else ``python -m``."""
    path = os.path.join(BIN, name)
    return [path] if os.path.exists(path) else [sys.executable, '-m', module]


WORKER = command('pzcasync-worker', 'pyramid_zcasync.scripts.worker')
CLI = command('pzcasync', 'pyramid_zcasync.scripts.cli')


def clean_env():
    env = dict(os.environ)
    for name in ('ZCASYNC_DISPATCHER', 'ZC_ASYNC_UUID'):
        env.pop(name, None)
    return env


def default_sigint():
    """A shell without job control starts background commands with
    SIGINT ignored, and children inherit that: restore the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def make_site(directory, uri=None, extra=''):
    """development.ini in ``directory`` with its own var/, polling every
    0.5 s; ``uri`` replaces the FileStorage."""
    text = open(os.path.join(ROOT, 'development.ini')).read()
    assert POLL in text and URI in text
    text = text.replace(POLL, 'zcasync.poll_interval = 0.5' + extra)
    if uri:
        text = text.replace(URI, 'zodbconn.uri = ' + uri)
    os.makedirs(os.path.join(str(directory), 'var'), exist_ok=True)
    path = os.path.join(str(directory), 'site.ini')
    with open(path, 'w') as stream:
        stream.write(text)
    return path


def wait_until(predicate, seconds=20, what='condition'):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('%s not met within %s s' % (what, seconds))
        time.sleep(0.05)


class Worker:
    """``pzcasync-worker INI``, its output in a file (no pipe fills up)."""

    def __init__(self, ini, name='worker'):
        self.log = os.path.join(os.path.dirname(ini), name + '.out')
        with open(self.log, 'wb') as out:
            self.process = subprocess.Popen(
                WORKER + [ini], stdout=out, stderr=subprocess.STDOUT,
                env=clean_env(), cwd=os.path.dirname(ini),
                preexec_fn=default_sigint)

    @property
    def output(self):
        with open(self.log, encoding='utf-8', errors='replace') as stream:
            return stream.read()

    def wait_ready(self, seconds=30):
        deadline = time.monotonic() + seconds
        while READY not in self.output:
            if self.process.poll() is not None or \
                    time.monotonic() > deadline:
                raise AssertionError('worker not ready (exit status %s):\n%s'
                                     % (self.process.poll(), self.output))
            time.sleep(0.05)

    def signal(self, signum, seconds=10):
        """Send ``signum``; the exit status and how long the exit took."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError('worker still runs %s s after signal %s:\n%s'
                                 % (seconds, signum, self.output))
        return self.process.returncode, time.monotonic() - started


@pytest.fixture
def workers():
    started = []

    def start(*args, **kwargs):
        worker = Worker(*args, **kwargs)
        started.append(worker)
        return worker
    yield start
    for worker in started:
        stop_process(worker.process)


#: Commands started at once by run_many: each pays about a second of
#: CPU importing the CLI, and fifteen at once on two busy cores took
#: longer than a command's deadline.
AT_ONCE = 4


def run_many(commands, seconds=60, cwd=None):
    """The commands, AT_ONCE at a time; [(status, stdout, stderr)] in
    order."""
    results = []
    for first in range(0, len(commands), AT_ONCE):
        results.extend(_run_together(commands[first:first + AT_ONCE],
                                     seconds, cwd))
    return results


def _run_together(commands, seconds, cwd):
    processes = [subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env(), cwd=cwd) for args in commands]
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=seconds)
            results.append((process.returncode, out, err))
    finally:
        for process in processes:
            stop_process(process)
    return results


def run_all(ini, *commands):
    """``pzcasync INI ARGS...`` for each command, a few at a time."""
    return run_many([CLI + [ini] + list(args) for args in commands])


def run(ini, *args):
    return run_all(ini, args)[0]


def oid_of(job):
    return int.from_bytes(job._p_oid, 'big')


def seed(db, flag, marker):
    """Jobs for every outcome; the marker job last, so that once it ran
    the others were claimed."""
    pyramid_zcasync.install_queues(db)
    later = datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(days=1)
    with db.transaction() as conn:
        queue = IQueue(conn.root())
        jobs = {'ok': queue.put(demo_jobs.multiply, 6, 7),
                'fail': queue.put(demo_jobs.fail, 1, 2),
                'flag': queue.put(os.remove, flag),
                'later': queue.put(demo_jobs.multiply, 2, 3,
                                   begin_after=later),
                'marker': queue.put(os.mkdir, marker)}
    return {name: oid_of(job) for name, job in jobs.items()}


def job_state(db, oid):
    with db.transaction() as conn:
        job = conn.get(oid.to_bytes(8, 'big'))
        failed = type(job.result).__name__ == 'Failure'
        return job.status, failed


def completed(db, oid):
    return job_state(db, oid)[0] == COMPLETED


def output(result):
    """The stdout of a command that succeeded.  Its stderr may hold the
    ini's logging (development.ini logs INFO there), never a traceback."""
    code, out, err = result
    assert code == 0 and 'Traceback' not in err, result
    return out


def one_error_line(result, status, *fragments):
    """A failure: ``status``, nothing on stdout, one error line last on
    stderr (after any log lines of the ini's logging), no traceback."""
    code, out, err = result
    lines = err.splitlines()
    errors = [line for line in lines
              if line.startswith(('pzcasync: ', 'pzcasync-worker: '))]
    assert (code, out, errors[-1:]) == (status, '', lines[-1:]), result
    assert len(errors) == 1 and 'error: ' in errors[0], result
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert 'Traceback' not in err, err


def test_worker_and_cli_on_zeo(tmp_path, zeo_server, workers):
    ini = make_site(tmp_path, 'zeo://127.0.0.1:%d?wait_timeout=20'
                    % zeo_server.port)
    flag, marker = str(tmp_path / 'flag'), str(tmp_path / 'marker')
    db = zeo_server.db()
    try:
        oids = seed(db, flag, marker)
        worker = workers(ini)
        worker.wait_ready()
        uuid = read_uuid(str(tmp_path / 'var' / 'uuid.txt'), create=False)
        wait_until(lambda: all(completed(db, oids[name]) for name in
                               ('ok', 'fail', 'flag', 'marker')),
                   what='the worker completes the jobs')
        assert os.path.isdir(marker)
        assert job_state(db, oids['flag']) == (COMPLETED, True)

        twin = workers(ini, 'twin')
        (uuids, status, table, listing, ok, ok_json, trace, count,
         last_failed, nextpending, unknown, not_a_job, not_failed,
         not_pending, no_traceback) = run_all(
            ini, ['uuids'], ['status'], ['jobs'], ['jobs', '--json'],
            ['job', str(oids['ok'])], ['--json', 'job', str(oids['ok'])],
            ['traceback', str(oids['fail'])],
            ['count', '--state', 'failed'],
            ['lastcompleted', '--state', 'failed', '--json'],
            ['nextpending', '--json'], ['job', '999999'], ['job', 'x1'],
            ['retry', str(oids['ok'])], ['cancel', str(oids['ok'])],
            ['traceback', hex(oids['ok'])])
        twin.process.wait(30)
        assert twin.process.returncode == 1, twin.output
        assert 'already running' in twin.output, twin.output
        assert 'Traceback' not in twin.output

        assert output(uuids) == uuid + '\n'
        header, row = output(status).splitlines()
        assert header.split()[:3] == ['QUEUE', 'PENDING', 'DISPATCHER']
        assert row.split()[:3] == ["''", '1', uuid]
        assert ' main ' in row and ' no ' in row

        lines = output(table).splitlines()
        assert lines[0].split() == ['OID', 'STATUS', 'QUEUE', 'CALLABLE',
                                    'BEGIN', 'AFTER', 'STARTED', 'ENDED',
                                    'DISPATCHER']
        assert lines[1].split()[:4] == [
            str(oids['later']), 'pending', "''",
            'pyramid_zcasync.demo.jobs.multiply']
        by_oid = {int(line.split()[0]): line.split()[1]
                  for line in lines[1:]}
        assert by_oid == {oids['later']: 'pending', oids['ok']: 'succeeded',
                          oids['fail']: 'failed', oids['flag']: 'failed',
                          oids['marker']: 'succeeded'}
        # Columns are aligned: every row starts its STATUS where the
        # header does.
        at = lines[0].index('STATUS')
        assert all(line[at - 2:at] == '  ' and line[at] != ' '
                   for line in lines[1:])

        found = json.loads(output(listing))
        assert {info['id'][0]: (info['status'], info['failed'])
                for info in found} == {
            oids['later']: ('pending', False),
            oids['ok']: ('completed', False),
            oids['fail']: ('completed', True),
            oids['flag']: ('completed', True),
            oids['marker']: ('completed', False)}
        assert found[0]['begin after'].endswith('Z')

        out = output(ok)
        assert 'status:' in out and 'succeeded' in out and '42' in out
        assert json.loads(output(ok_json))['result'] == '42'
        assert json.loads(output(ok_json))['id'] == [oids['ok'], '']
        assert json.loads(output(ok_json))['dispatcher'] == uuid

        out = output(trace)
        assert out.startswith('job %d failed with ValueError: this demo job '
                              'always fails' % oids['fail']), out
        assert 'Traceback (most recent call last)' in out
        assert 'raise ValueError' in out

        assert output(count) == '2\n'
        last = json.loads(output(last_failed))
        assert last['id'][0] in (oids['fail'], oids['flag'])
        assert last['failure']['type'] in ('ValueError', 'FileNotFoundError')
        assert json.loads(output(nextpending))['id'][0] == oids['later']

        one_error_line(unknown, 1, 'no object 0xf423f')
        one_error_line(not_a_job, 2, "'x1' is not a job id")
        one_error_line(not_failed, 1, 'has not failed', 'succeeded')
        one_error_line(not_pending, 1, 'is not pending')
        one_error_line(no_traceback, 1, 'has no traceback: it did not fail')

        # retry: the worker runs the job again, and now it succeeds.
        open(flag, 'w').close()
        assert output(run(ini, 'retry', str(oids['flag']))) == (
            "job %d retried: pending again in queue ''\n" % oids['flag'])
        wait_until(lambda: job_state(db, oids['flag']) == (COMPLETED, False),
                   what='the retried job succeeds')
        assert not os.path.exists(flag)

        # cancel: the pending job will never run; it failed, cancelled.
        retried_again, cancelled = run_all(
            ini, ['retry', str(oids['flag'])],
            ['cancel', str(oids['later']), '--json'])
        one_error_line(retried_again, 1, 'has not failed')
        out = json.loads(output(cancelled))
        assert (out['done'], out['job']['status'], out['job']['failed']) \
            == ('cancelled', 'completed', True)
        assert 'JobCancelled' in json.dumps(out['job']['failure'])
        assert job_state(db, oids['later']) == (COMPLETED, True)
        one_error_line(run(ini, 'cancel', str(oids['later'])), 1,
                       'is not pending')

        code, took = worker.signal(signal.SIGTERM)
        assert code == 0, worker.output
        assert took < 8, worker.output
        # (Tracebacks before are the failing jobs', logged.)
        stopping = worker.output.split('SIGTERM: stopping dispatcher')
        assert len(stopping) == 2, worker.output
        assert stopping[1].endswith('pzcasync-worker: stopped\n')
        assert 'Traceback' not in stopping[1]
        with db.transaction() as conn:
            registration = conn.root()[KEY][''].dispatchers[uuid]
            assert not registration.activated
    finally:
        db.close()


def test_worker_and_cli_on_filestorage(tmp_path, workers):
    ini = make_site(tmp_path)
    path = str(tmp_path / 'var' / 'Data.fs')
    marker = str(tmp_path / 'marker')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    try:
        pyramid_zcasync.install_queues(db)
        with db.transaction() as conn:
            queue = IQueue(conn.root())
            job = queue.put(demo_jobs.multiply, 6, 7)
            queue.put(os.mkdir, marker)
        ok = oid_of(job)
    finally:
        db.close()

    worker = workers(ini)
    worker.wait_ready()
    wait_until(lambda: os.path.isdir(marker), what='the worker runs a job')
    one_error_line(run(ini, 'status'), 1, 'locked by another process',
                   'FileStorage', 'pzcasync-zeo')
    code, took = worker.signal(signal.SIGINT)
    assert code == 0, worker.output
    assert took < 8, worker.output
    assert 'SIGINT: stopping dispatcher' in worker.output
    assert worker.output.endswith('pzcasync-worker: stopped\n')
    assert 'Traceback' not in worker.output

    # The worker closed the storage: pzcasync opens it, one at a time.
    assert json.loads(output(run(ini, 'status', '--json'))) == {
        '': {'dispatchers': {}, 'len': 0, 'quotas': {}}}
    assert output(run(ini, 'uuids')) == ''
    out = output(run(ini, 'job', str(ok)))
    assert 'succeeded' in out and '42' in out
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True))
    try:
        uuid = read_uuid(str(tmp_path / 'var' / 'uuid.txt'), create=False)
        with db.transaction() as conn:
            assert not conn.root()[KEY][''].dispatchers[uuid].activated
    finally:
        db.close()


def test_bad_input_is_one_clear_line(tmp_path):
    ini = make_site(tmp_path)
    bad = make_site(tmp_path / 'bad', extra='\nzcasync.agent_size = -1')
    missing = str(tmp_path / 'missing.ini')
    results = run_many(
        [WORKER + [missing], WORKER + [bad], WORKER + [ini, 'oops'],
         CLI + [missing, 'status'], CLI + [bad, 'count']]
        # A bad command line: argparse's usage message.
        + [CLI + args for args in ([ini], [ini, 'nonsense'], [ini, 'job'])],
        cwd=str(tmp_path))
    worker_missing, worker_bad, worker_oops, cli_missing, cli_bad = \
        results[:5]
    one_error_line(worker_missing, 2, '%s: no such file' % missing)
    one_error_line(worker_bad, 2, 'zcasync.agent_size', "'-1'")
    one_error_line(worker_oops, 2, "'oops': expected name=value")
    one_error_line(cli_missing, 2, '%s: no such file' % missing)
    one_error_line(cli_bad, 2, 'zcasync.agent_size', "'-1'")
    for code, out, err in results[5:]:
        assert (code, out) == (2, ''), (code, out, err)
        assert err.startswith('usage: pzcasync'), err
        assert 'Traceback' not in err


def test_a_signal_another_thread_took_still_ends_the_workers_wait():
    """The kernel hands a process's SIGTERM to any of its threads, and
    Python runs the handler in the main thread only when that thread next
    runs: a worker paused in ``signal.pause()`` slept on until SIGKILL.
    Here the signal goes to a thread of our own, as the kernel may do."""
    import threading
    from pyramid_zcasync.scripts.worker import StopSignal
    previous = {signum: signal.getsignal(signum)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    stopper = StopSignal()
    stopper.install()
    woken = threading.Event()

    def deliver():
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        if not woken.wait(3):  # still asleep: wake it, to fail, not hang
            signal.pthread_kill(threading.main_thread().ident,
                                signal.SIGTERM)
    thread = threading.Thread(target=deliver, daemon=True)
    try:
        started = time.monotonic()
        thread.start()
        stopper.wait()
        waited = time.monotonic() - started
        woken.set()
        thread.join(5)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert stopper.received == signal.SIGTERM
    assert waited < 2, waited
