"""Jobs failing in every documented way across two dispatcher processes
(over ZEO and RelStorage), and an HTTP producer in a process of its own
losing no put.  Split from test_reliability.py."""
import collections
import datetime
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import persistent.mapping
import transaction
from ZODB.POSException import ConflictError

import jobs
import pyramid_zcasync
from conftest import TESTS_DIR, free_port, stop_process, wait_for_port
from pyramid_zcasync import Job
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.interfaces import COMPLETED, IQueue
from pyramid_zcasync.retry import RetryCommonFourTimes
from pyramid_zcasync.testing import wait_until
from dbtools import read, write
from reliabilitytools import count_done, job_states, timing

UTC = datetime.timezone.utc
RETRY_COUNTS = 'pyramid_zcasync.retry'


# -- 4. failing jobs end in their documented state -------------------------

def hammer(db, stop, seconds=0.02):
    """Write root['contended'] until ``stop`` is set: every transaction
    reading it meanwhile conflicts at commit."""
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    writes = 0
    try:
        while not stop():
            with manager:
                mapping = connection.root()['contended']
                mapping['hammer'] = mapping.get('hammer', 0) + 1
            writes += 1
            time.sleep(seconds)
    finally:
        connection.close()
    return writes


def test_failures_end_in_their_documented_state(tmp_path, engine,
                                                workers):
    db = engine.db()
    pyramid_zcasync.install_queues(db)
    log = str(tmp_path / 'attempts.log')
    write(db, lambda root: root.update(
        contended=persistent.mapping.PersistentMapping(),
        lucky=persistent.mapping.PersistentMapping()))

    def counted(func, *args):
        # The default policy, named: a job without a policy of its own may
        # run first in a group commit, whose conflict is not counted as
        # one of its attempts (6 attempts instead of 5; see the report).
        job = Job(func, *args)
        job.retry_policy_factory = RetryCommonFourTimes
        return job

    def put_all(root):
        queue = IQueue(root)
        now = datetime.datetime.now(UTC)
        put = {
            'raises': queue.put(jobs.fail_with, log, 'raises', 'no good'),
            'conflicts': queue.put(counted(jobs.raise_conflict, log,
                                           'conflicts')),
            'contended': queue.put(counted(
                jobs.write_contended, root['contended'], log, 'contended',
                0.15)),
            'lucky': queue.put(counted(jobs.write_contended, root['lucky'],
                                       log, 'lucky', 0.3)),
            'late': queue.put(jobs.note, log, 'late',
                              begin_by=now - datetime.timedelta(seconds=1)),
            'parent': queue.put(jobs.multiply, 6, 7),
            'errback': queue.put(jobs.fail_with, log, 'errback', 'handle me'),
        }
        put['late_cb'] = put['late'].addCallback(
            Job(jobs.noting_callback, log, 'late_cb'))
        put['bad_cb'] = put['parent'].addCallback(
            Job(jobs.failing_callback, log, 'bad_cb'))
        put['good_cb'] = put['parent'].addCallback(
            Job(jobs.noting_callback, log, 'good_cb'))
        put['handler'] = put['errback'].addCallbacks(
            failure=jobs.describe_failure)
        return put
    oids = {name: job._p_oid for name, job in write(db, put_all).items()}

    # Someone else keeps writing what 'contended' writes, for good; and
    # what 'lucky' writes, until its third attempt starts.
    stop = threading.Event()
    hammers = [threading.Thread(target=hammer, args=(db, stop.is_set)),
               threading.Thread(target=lucky_hammer, args=(db, log))]
    for thread in hammers:
        thread.start()
    try:
        worker = workers(engine.spec, tmp_path / 'w.txt',
                         timing(0.2, 0.3, 30.0, tmp_path / 'w.log'))
        assert worker.first_line == 'ready'

        def all_done():
            states = job_states(db, oids.values())
            return all(s[0] == COMPLETED for s in states.values())
        wait_until(all_done, 60, 'every job to complete')
    finally:
        stop.set()
        for thread in hammers:
            thread.join(10)
    states = {name: job_states(db, [oid])[oid] for name, oid in oids.items()}
    attempts = collections.Counter(
        line.split(':')[0] for line in jobs.notes(log))
    result = {name: state[1] for name, state in states.items()}

    def readable(failure, type_name, *texts):
        assert isinstance(failure, Failure), failure
        assert failure.type_name == type_name
        text = failure.getTraceback()
        assert text.startswith('Traceback') or text.startswith(type_name)
        for fragment in texts:
            assert fragment in failure.message + text, (fragment, text)

    # An exception fails the job at once, with its traceback.
    assert attempts['raises'] == 1
    readable(result['raises'], 'ValueError', 'no good', 'fail_with',
             'ValueError: no good')
    assert result['raises'].message == 'no good'
    # ConflictError: 5 attempts in all, then the last conflict is the
    # result; the count is in the annotations.
    assert attempts['conflicts'] == 5
    readable(result['conflicts'], 'ZODB.POSException.ConflictError',
             'conflicts on purpose', 'raise_conflict')
    assert result['conflicts'].check(ConflictError)
    assert states['conflicts'][3][RETRY_COUNTS] == {'conflict': 5}
    # A real commit conflict with another connection, every attempt.
    assert attempts['contended'] == 5
    readable(result['contended'], 'ZODB.POSException.ConflictError',
             'database conflict error', 'PersistentMapping')
    assert states['contended'][3][RETRY_COUNTS] == {'conflict': 5}
    # ... and one that gets through on its third attempt.
    assert attempts['lucky'] == 3 and result['lucky'] == 1
    assert states['lucky'][3][RETRY_COUNTS] == {'conflict': 2}
    # Past its begin_by: failed without running; its callback saw it.
    assert attempts['late'] == 0
    readable(result['late'], 'TimeoutError', 'begin_by deadline')
    assert attempts['late_cb'] == 1
    assert result['late_cb'].startswith('saw <Failure TimeoutError:')
    # A failing callback fails itself, not its job or its sibling.
    assert result['parent'] == 42
    assert attempts['bad_cb'] == 1
    readable(result['bad_cb'], 'RuntimeError', 'callback bad_cb refused 42',
             'failing_callback')
    assert result['good_cb'] == 'saw 42'
    # An errback gets the failure record.
    assert result['handler'] == 'handled ValueError: handle me'
    print('\nfailures: attempts %s' % dict(sorted(attempts.items())))
    db.close()


def lucky_hammer(db, log, conflicts=2):
    """Write root['lucky'] once during each of the first ``conflicts``
    attempts of 'lucky' (each waits 0.3 s between its read and its
    write), then leave it alone."""
    deadline = time.monotonic() + 60
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    written = 0
    try:
        while written < conflicts and time.monotonic() < deadline:
            tries = [n for n in jobs.notes(log) if n.startswith('lucky:')]
            if len(tries) > written:
                with manager:
                    mapping = connection.root()['lucky']
                    mapping['hammer'] = mapping.get('hammer', 0) + 1
                written += 1
            time.sleep(0.01)
    finally:
        connection.close()


# -- 5. producer and consumer in different processes -----------------------

class Producer:
    """tests/producer_app.py under waitress, in a process of its own."""

    def __init__(self, uri, log_path):
        self.port = free_port()
        self.log_path = str(log_path)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [TESTS_DIR] + sys.path))
        # stderr to a file: a pipe nobody reads blocks the app once full.
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                [sys.executable, os.path.join(TESTS_DIR, 'producer_app.py'),
                 uri, str(self.port)],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        line = self.process.stdout.readline().strip()
        assert line == 'serving', open(self.log_path).read()
        wait_for_port(self.port)

    def post(self, key, hot=False):
        data = urllib.parse.urlencode(
            {'key': key, 'hot': '1' if hot else '0'}).encode()
        request = urllib.request.Request(
            'http://127.0.0.1:%d/enqueue' % self.port, data=data)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.loads(response.read())
                return (key, response.status,
                        int(response.headers['X-Retry-Attempt']), body)
        except urllib.error.HTTPError as error:
            return key, error.code, None, None

    def stop(self):
        stop_process(self.process)
        self.process.stdout.close()


def test_http_producer_and_worker_lose_no_put(tmp_path, engine, workers):
    producer = Producer(engine.uri, tmp_path / 'producer.log')
    try:
        worker = workers(engine.spec, tmp_path / 'w.txt',
                         timing(0.2, 0.3, 30.0, tmp_path / 'w.log'))
        assert worker.first_line == 'ready'
        db = engine.db()
        posts = [('plain%03d' % i, False) for i in range(150)] + \
                [('hot%03d' % i, True) for i in range(100)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: producer.post(*p), posts))
        ok = [a for a in answers if a[1] == 200]
        refused = [a for a in answers if a[1] != 200]
        assert all(a[1] == 500 for a in refused)  # conflicts exhausted

        wait_until(lambda: count_done(db) >= len(ok), 90,
                   '%d jobs to be consumed' % len(ok))
        time.sleep(0.5)  # a lost or extra put would show up by now
        ok_keys = sorted(a[0] for a in ok)
        posted = read(db, lambda r: dict(r['posted']))
        done = read(db, lambda r: dict(r['done']))
        hot = read(db, lambda r: r['hot']['n'])
        pending = read(db, lambda r: len(IQueue(r)))
        # No lost put, no extra put: what the app recorded, what ran.
        assert sorted(posted) == ok_keys
        assert sorted(done) == ok_keys
        assert set(done.values()) == {1}
        assert pending == 0
        assert hot == len([a for a in ok if a[0].startswith('hot')])
        # The attempt that committed is the one that answered.
        assert all(posted[a[0]] == a[2] == a[3]['attempt'] for a in ok)

        figures = {}
        for kind in ('plain', 'hot'):
            mine = [a for a in answers if a[0].startswith(kind)]
            good = [a for a in mine if a[1] == 200]
            # A refused request made retry.attempts (5) attempts.
            retried = sum(a[2] for a in good) + 4 * (len(mine) - len(good))
            figures[kind] = (len(mine), len(good), retried)
        # Writing the same object from 8 concurrent requests conflicts.
        assert figures['hot'][2] > 0
        print('\nHTTP producer, 8 concurrent clients, retry.attempts 5: %s'
              % '; '.join('%s: %d posts, %d committed, %d refused, %d '
                          'conflict retries (%.2f per post)'
                          % (kind, n, good, n - good, retried, retried / n)
                          for kind, (n, good, retried) in figures.items()))
        db.close()
    finally:
        producer.stop()
