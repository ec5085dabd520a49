"""serial() and parallel(), run end to end by claiming and running."""
import operator
import threading

import persistent.list
import pytest
import transaction

from pyramid_zcasync import Job, parallel, serial
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.interfaces import COMPLETED, IQueue, NEW
from pyramid_zcasync.runner import Runner


def step(log, name):
    """Record the order of the parts and what was pending meanwhile."""
    queue = IQueue(log._p_jar.root())
    log.append((name, sorted(job.args[1] for job in queue
                             if job.callable is step)))
    return name.upper()


def explode(message):
    raise RuntimeError(message)


def joined(*jobs):
    return '+'.join(str(job.result) for job in jobs)


def total(*jobs):
    return sum(job.result for job in jobs)


#: Calls of ``counted_postprocess``, and barriers, outside ZODB.
CALLS = []
BARRIERS = {}


def counted_postprocess(*jobs):
    CALLS.append(len(jobs))
    return total(*jobs)


def meet(name, result):
    """A callback holding each part until both have committed results."""
    BARRIERS[name].wait(10)
    return result


@pytest.fixture
def main(db, conn, queue):
    registration = queue.dispatchers.register('u1')
    agent = registration.add(Agent('main', 3))
    registration.activate()
    transaction.commit()
    return agent


def drain(db, limit=50):
    """Claim one job at a time and run it, until none is due."""
    runner = Runner(db, uuid='u1')
    count = 0
    for _ in range(limit):
        manager = transaction.TransactionManager()
        conn = db.open(transaction_manager=manager)
        try:
            with manager:
                job = IQueue(conn.root()).dispatchers['u1']['main'].claimJob()
                oid = None if job is None else job._p_oid
        finally:
            conn.close()
        if oid is None:
            return count
        runner.run(oid)
        count += 1
    raise AssertionError('still claiming after %d jobs' % limit)


def test_serial_runs_parts_one_after_another(db, conn, queue, main):
    log = conn.root()['log'] = persistent.list.PersistentList()
    job = queue.put(serial(Job(step, log, 'a'), Job(step, log, 'b'),
                           Job(step, log, 'c')))
    transaction.commit()
    drain(db)
    transaction.begin()
    # each part ran alone: none of the others was queued meanwhile
    assert list(log) == [('a', []), ('b', []), ('c', [])]
    assert job.status == COMPLETED
    assert job.result == ['A', 'B', 'C']
    assert len(queue) == 0 and len(main) == 0


def test_serial_with_postprocess_and_plain_callables(db, conn, queue, main):
    job = queue.put(serial(Job(operator.add, 1, 2), Job(operator.mul, 3, 4),
                           postprocess=joined))
    transaction.commit()
    drain(db)
    transaction.begin()
    assert job.result == '3+12'


def test_serial_goes_on_after_a_failed_part(db, conn, queue, main):
    job = queue.put(serial(Job(explode, 'first'), Job(operator.add, 1, 1)))
    transaction.commit()
    drain(db)
    transaction.begin()
    first, second = job.result
    assert first.check(RuntimeError) and first.message == 'first'
    assert second == 2


def test_parallel_queues_all_parts_then_postprocesses(db, conn, queue,
                                                      main):
    log = conn.root()['log'] = persistent.list.PersistentList()
    job = queue.put(parallel(Job(step, log, 'a'), Job(step, log, 'b'),
                             Job(step, log, 'c')))
    transaction.commit()
    drain(db)
    transaction.begin()
    # the first part to run saw the two others queued with it
    assert log[0] == ('a', ['b', 'c'])
    assert sorted(name for name, _ in log) == ['a', 'b', 'c']
    assert job.status == COMPLETED
    assert job.result == ['A', 'B', 'C']
    assert len(queue) == 0 and len(main) == 0


def test_parallel_with_postprocess(db, conn, queue, main):
    log = conn.root()['log'] = persistent.list.PersistentList()
    job = queue.put(parallel(Job(operator.add, 1, 2), Job(operator.add, 3, 4),
                             postprocess=total))
    done = job.addCallback(Job(log.append))
    transaction.commit()
    drain(db)
    transaction.begin()
    assert job.result == 10
    assert done.status == COMPLETED
    assert list(log) == [10]


def test_parallel_with_a_failed_part_still_finishes(db, conn, queue, main):
    job = queue.put(parallel(Job(explode, 'bad'), Job(operator.add, 1, 1),
                             postprocess=joined))
    transaction.commit()
    drain(db)
    transaction.begin()
    assert job.status == COMPLETED
    assert job.result.startswith('<Failure RuntimeError: bad>+2')


@pytest.mark.parametrize('compose', [serial, parallel])
def test_no_parts(db, conn, queue, main, compose):
    job = queue.put(compose(postprocess=joined))
    transaction.commit()
    drain(db)
    transaction.begin()
    assert job.status == COMPLETED
    assert job.result == ''


def test_composite_outside_a_queue_is_a_clear_error(conn):
    job = serial(Job(operator.add, 1, 1))
    assert job.status == NEW
    result = job()
    assert result.check(RuntimeError)
    assert 'must run from a queue' in result.message


def claim_all(db):
    manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=manager)
    try:
        with manager:
            agent = IQueue(conn.root()).dispatchers['u1']['main']
            oids = []
            while True:
                job = agent.claimJob()
                if job is None:
                    return oids
                oids.append(job._p_oid)
    finally:
        conn.close()


def test_parallel_parts_ending_together_queue_the_postprocess_once(
        db, conn, queue, main):
    del CALLS[:]
    BARRIERS['together'] = threading.Barrier(2)
    first = Job(operator.add, 1, 2)
    second = Job(operator.add, 3, 4)
    for part in (first, second):
        part.addCallback(Job(meet, 'together'))
    job = queue.put(parallel(first, second, postprocess=counted_postprocess))
    transaction.commit()
    outer_oid, = claim_all(db)
    Runner(db, uuid='u1').run(outer_oid)
    part_oids = claim_all(db)
    assert len(part_oids) == 2
    # both parts commit their results, wait for each other, then both
    # find every part finished and try to queue the postprocess
    threads = [threading.Thread(target=Runner(db, uuid='u1').run,
                                args=(oid,)) for oid in part_oids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    drain(db)
    transaction.begin()
    assert CALLS == [2]
    assert job.status == COMPLETED
    assert job.result == 10
    assert len(queue) == 0 and len(main) == 0
