"""What the multi-process reliability tests share (test_reliability*.py,
test_chaos.py, test_guarantees.py): jobs that record which process ran
them, reading what the workers committed, and their logs."""
import collections
import contextlib
import os
import signal
import time

import BTrees.OOBTree

import jobs
import pyramid_zcasync
import pyramid_zcasync.instance
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.interfaces import COMPLETED, IQueue
from pyramid_zcasync.registry import database_time
from pyramid_zcasync.testing import wait_until
from dbtools import read, write

RETRY_COUNTS = 'pyramid_zcasync.retry'


# -- helpers ---------------------------------------------------------------


def make_trees(db, *names, keys=()):
    """Empty OOBTrees, or holding 0 for each of ``keys``: then the jobs
    change existing keys, which BTrees merge, instead of inserting (and
    splitting buckets), so their own writes conflict less."""
    def create(root):
        for name in names:
            root[name] = BTrees.OOBTree.OOBTree(dict.fromkeys(keys, 0))
    write(db, create)


def put_jobs(db, keys, seconds=0.0):
    """One ``append_with_pid`` job per key, in one transaction; oids."""
    def put(root):
        queue = IQueue(root)
        return [queue.put(jobs.append_with_pid, root['done'], root['pids'],
                          key, seconds, root['times'])
                for key in keys]
    return [job._p_oid for job in write(db, put)]


def count_done(db):
    return read(db, lambda root: sum(1 for n in root['done'].values() if n))


def uuid_of(uuid_file):
    return pyramid_zcasync.instance.read_uuid(str(uuid_file))


def held_jobs(db, uuid):
    """{oid: status} of the jobs in the agents of dispatcher ``uuid``."""
    def held(root):
        registration = IQueue(root).dispatchers.get(uuid)
        if registration is None:
            return {}
        return {job._p_oid: job.status
                for agent in registration.values() for job in agent}
    return read(db, held)


def registration_info(db, uuid):
    def info(root):
        registration = IQueue(root).dispatchers[uuid]
        return {'activated': registration.activated,
                'last_ping': registration.last_ping,
                'written': database_time(registration)}
    return read(db, info)


def job_states(db, oids):
    def states(root):
        connection = root._p_jar
        found = {}
        for oid in oids:
            job = connection.get(oid)
            found[oid] = (job.status, job.result, job.assignerUUID,
                          dict(job.annotations))
        return found
    return read(db, states)


def wait_for_done(db, keys, oids, seconds, what='all jobs'):
    """Until every key is done; on timeout, say where the jobs are."""
    try:
        wait_until(lambda: count_done(db) >= len(keys), seconds, what,
                   step=0.1)
    except AssertionError:
        states = job_states(db, oids)
        statuses = collections.Counter(s[0] for s in states.values())
        failures = collections.Counter(
            repr(s[1])[:160] for s in states.values()
            if isinstance(s[1], Failure))
        raise AssertionError('waited %s s for %s: %d of %d done; job '
                             'statuses %s; failures %s' % (
                                 seconds, what, count_done(db), len(keys),
                                 dict(statuses), dict(failures)))


def unfinished(db, keys, oids, limit=5):
    """For a failure message: the first jobs whose keys are not done, each
    with its status, whether a pending tree of its queue holds it (one
    that is PENDING but in no tree is never claimed: seen once, after
    network faults over RelStorage) and the last events of its life log;
    and the queue's pending count beside the jobs its trees hold."""
    from pyramid_zcasync import lifelog

    def where(root):
        done = root['done']
        lines = []
        queue = None
        for key, oid in zip(keys, oids):
            if done.get(key):
                continue
            job = root._p_jar.get(oid)
            queue = job.queue or queue
            held = job.queue is not None and \
                job.queue._tree_of(job) is not None
            lines.append('%s %r %s, in a pending tree: %s; %s' % (
                key, job, job.status, held, '; '.join(
                    '%s %s->%s %s' % (e.at.time(), e.before, e.after,
                                      e.detail)
                    for e in lifelog.events(job)[-4:])))
            if len(lines) >= limit:
                break
        if queue is not None:
            lines.append('queue %r: pending count %d, jobs in its trees %d'
                         % (queue.name, len(queue), sum(1 for _ in queue)))
        return '\n'.join(lines)
    return read(db, where)


def check_exactly_once(db, keys, oids):
    """Every key committed once, every job COMPLETED with its key."""
    done = read(db, lambda root: dict(root['done']))
    assert sorted(done) == sorted(keys)
    assert collections.Counter(done.values()) == {1: len(keys)}
    states = job_states(db, oids)
    assert collections.Counter(s[0] for s in states.values()) == {
        COMPLETED: len(oids)}
    failed = [s for s in states.values() if isinstance(s[1], Failure)]
    assert failed == []
    return states


def timing(poll, ping, death, log=None):
    """Worker arguments: tests/worker.py takes options after its timing
    (conftest's Worker passes ``timing`` through as strings)."""
    return (poll, ping, death) + (('--log', str(log)) if log else ())


def worker_log(tmp_path, name):
    path = tmp_path / ('%s.log' % name)
    return path.read_text() if path.exists() else ''


def log_excerpts(tmp_path, lines=40, processes=()):
    """The warnings and errors of both workers' logs, for a failure
    message: pytest keeps only the last few runs' files.  ``processes``
    (conftest Workers, still running) are asked for their threads'
    stacks first (tests/worker.py: SIGUSR1), which show where one hangs."""
    for process in processes:
        if process.process.poll() is None:
            os.kill(process.process.pid, signal.SIGUSR1)
    if processes:
        time.sleep(0.5)
    told = []
    for name in ('a', 'b'):
        kept = [line for line in worker_log(tmp_path, name).splitlines()
                if 'WARNING' in line or 'ERROR' in line]
        told.append('--- %s.log ---\n%s' % (name, '\n'.join(kept[-lines:])))
        stacks = tmp_path / ('%s.log.stacks' % name)
        if processes and stacks.exists():
            told.append('--- %s: stacks ---\n%s' % (name, stacks.read_text()))
    return '\n'.join(told)


def conflict_count(states):
    return sum(s[3].get(RETRY_COUNTS, {}).get('conflict', 0)
               for s in states.values())


@contextlib.contextmanager
def explained(tmp_path, processes, *views):
    """A failed wait inside says what the workers were doing: their
    threads' stacks and their logs' warnings, taken while they still run
    (the fixture stops them right after), and the text of each of
    ``views`` (callables; None is skipped): what the storage server or
    the database hold."""
    try:
        yield
    except AssertionError as exc:
        told = [str(exc), log_excerpts(tmp_path, processes=processes)]
        for view in views:
            if view is None:
                continue
            try:
                told.append('---\n' + view())
            except Exception as failure:  # the explanation must not hide
                told.append('--- a view failed: %r ---' % failure)
        raise AssertionError('\n'.join(told)) from exc
