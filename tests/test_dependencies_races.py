"""Job dependencies across connections: a put naming a prerequisite while
it completes elsewhere, two puts naming one prerequisite, two
prerequisites completing at once.  After both commit (and retry), the
job is queued or failed, never left waiting; and a dispatcher's run
never conflicts for it (that would run it again).
"""
import operator

import pytest
from ZODB.POSException import ConflictError

import jobs
from pyramid_zcasync import deps, lifecycle
from pyramid_zcasync.errors import DependencyFailed
from pyramid_zcasync.interfaces import COMPLETED, PENDING
from queuetools import other_connection
from test_dependencies import claim_and_run


def close(*connections):
    for connection in connections:
        connection.transaction_manager.abort()
        connection.close()


def settled(job):
    """Queued or failed: never left waiting."""
    return not deps.is_waiting(job) and (
        job.status == PENDING or job.result.check(DependencyFailed))


def test_a_put_racing_a_completion_that_commits_first(file_db):
    """The put read its prerequisite before the completion committed: its
    commit conflicts, and its retry sees the prerequisite completed."""
    conn, mine = other_connection(file_db)
    worker, theirs = other_connection(file_db)
    try:
        a = mine.put(jobs.divide, 1, 0)
        conn.transaction_manager.commit()
        assert a.status == PENDING  # read before the completion
        worker.transaction_manager.begin()
        claim_and_run(theirs, worker.get(a._p_oid))
        worker.transaction_manager.commit()
        mine.put(operator.add, 3, 4, after=[a])
        with pytest.raises(ConflictError):
            conn.transaction_manager.commit()
        conn.transaction_manager.abort()
        c = mine.put(operator.add, 3, 4, after=[a])  # the retry
        conn.transaction_manager.commit()
        assert settled(c) and c.status == COMPLETED
    finally:
        close(conn, worker)


@pytest.mark.parametrize('fails', [False, True])
def test_a_completion_racing_a_put_that_commits_first(file_db, fails):
    """The completion began before the put committed: its commit
    conflicts, and its retry finds the put's job waiting."""
    conn, mine = other_connection(file_db)
    worker, theirs = other_connection(file_db)
    try:
        a = mine.put(jobs.divide, 1, 0 if fails else 1)
        conn.transaction_manager.commit()
        worker.transaction_manager.begin()
        theirs_a = theirs.claim()
        worker.transaction_manager.commit()
        theirs_a()  # completes, not yet committed
        conn.transaction_manager.begin()
        c = mine.put(operator.add, 3, 4, after=[conn.get(a._p_oid)])
        conn.transaction_manager.commit()
        with pytest.raises(ConflictError):
            worker.transaction_manager.commit()
        worker.transaction_manager.abort()
        theirs_a = worker.get(a._p_oid)
        theirs_a()  # the retry
        worker.transaction_manager.commit()
        conn.transaction_manager.begin()
        assert settled(c)
        assert (c.status == COMPLETED) is fails
    finally:
        close(conn, worker)


def test_a_run_racing_a_put_that_commits_first(file_db):
    """A dispatcher's run does not conflict (that would run the job
    again): the release after it, in a transaction of its own, finds the
    put's job waiting."""
    conn, mine = other_connection(file_db)
    worker, theirs = other_connection(file_db)
    try:
        a = mine.put(operator.add, 1, 2)
        conn.transaction_manager.commit()
        worker.transaction_manager.begin()
        theirs_a = theirs.claim()
        lifecycle.start(theirs_a)
        worker.transaction_manager.commit()
        lifecycle.finish(theirs_a, theirs_a.invoke())  # as a runner does
        conn.transaction_manager.begin()  # sees it started
        c = mine.put(operator.add, 3, 4, after=[conn.get(a._p_oid)])
        conn.transaction_manager.commit()
        worker.transaction_manager.commit()  # no conflict
        conn.transaction_manager.begin()
        assert deps.is_waiting(c)
        lifecycle.release(worker.get(a._p_oid))
        worker.transaction_manager.commit()
        conn.transaction_manager.begin()
        assert c in mine and not deps.is_waiting(c)
    finally:
        close(conn, worker)


def test_two_prerequisites_completing_at_once(file_db):
    """Each sees the other unfinished: neither writes the waiting job (a
    conflict would run one of them again); the small jobs they queue
    decide once both committed."""
    conn, mine = other_connection(file_db)
    worker, theirs = other_connection(file_db)
    try:
        a = mine.put(operator.add, 1, 2)
        b = mine.put(operator.add, 3, 4)
        c = mine.put(operator.add, 5, 6, after=[a, b])
        conn.transaction_manager.commit()
        worker.transaction_manager.begin()
        claim_and_run(mine, a)
        theirs.claim(lambda job: job._p_oid == b._p_oid)()
        conn.transaction_manager.commit()
        worker.transaction_manager.commit()  # no conflict
        conn.transaction_manager.begin()
        assert deps.is_waiting(c)
        settles = list(mine)
        assert [job.callable for job in settles] == [
            lifecycle.settle_waiting] * 2
        claim_and_run(mine, settles[0])
        assert not deps.is_waiting(c)
        claim_and_run(mine, settles[1])
        claim_and_run(mine, c)
        conn.transaction_manager.commit()
    finally:
        close(conn, worker)


def test_two_puts_naming_one_prerequisite(file_db):
    conn, mine = other_connection(file_db)
    other, theirs = other_connection(file_db)
    try:
        a = mine.put(operator.add, 1, 2)
        conn.transaction_manager.commit()
        other.transaction_manager.begin()
        mine.put(operator.add, 3, 4, after=[a])
        theirs.put(operator.add, 5, 6, after=[other.get(a._p_oid)])
        conn.transaction_manager.commit()
        with pytest.raises(ConflictError):
            other.transaction_manager.commit()
        other.transaction_manager.abort()
        theirs.put(operator.add, 5, 6, after=[other.get(a._p_oid)])
        other.transaction_manager.commit()
        conn.transaction_manager.begin()
        assert deps.waiting_count(mine) == 2
        claim_and_run(mine, a)
        assert len(mine) == 2 and deps.waiting_count(mine) == 0
    finally:
        close(conn, other)
