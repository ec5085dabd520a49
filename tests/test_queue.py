"""Queue: put, putBack, pull, remove and claim, on real ZODB."""
import datetime
import operator

import pytest
import transaction
from ZODB.POSException import ConflictError

from pyramid_zcasync import Job
from pyramid_zcasync.interfaces import ASSIGNED, COMPLETED, NEW, PENDING
from pyramid_zcasync.job import BadStatusError
from pyramid_zcasync import keys, layout
from pyramid_zcasync.queue import Queue, Queues
from pyramid_zcasync.quota import above_floor, floor_tree
from queuetools import HOUR, now, other_connection





def reject_all(job):
    return False


def test_default_queue_lives_under_key(conn, queue):
    queues = conn.root()['pyramid_zcasync']
    assert isinstance(queues, Queues)
    assert queues[''] is queue
    assert isinstance(queue, Queue)
    assert queue.name == ''
    assert len(queue) == 0
    assert queue.claim() is None


def test_put_callable_with_arguments(queue):
    job = queue.put(pow, 2, exp=10)
    assert isinstance(job, Job)
    assert job.status == PENDING
    assert job.queue is queue
    assert list(job.args) == [2] and job.kwargs == {'exp': 10}
    assert job.begin_after is not None and job.begin_after.tzinfo is not None
    assert len(queue) == 1 and list(queue) == [job] and queue[0] is job
    assert job in queue
    assert queue.claim() is job
    assert job() == 1024
    assert job not in queue


def test_put_job_and_order_is_kept(queue):
    jobs = [queue.put(Job(operator.add, i, 0)) for i in range(5)]
    assert list(queue) == jobs
    assert [queue[i] for i in range(5)] == jobs
    assert queue[-1] is jobs[-1]
    assert [queue.claim() for _ in range(5)] == jobs
    assert len(queue) == 0


def test_put_is_transactional(db, conn, queue):
    queue.put(operator.add, 1, 1)
    transaction.abort()
    assert len(queue) == 0
    job = queue.put(operator.add, 1, 1)
    transaction.commit()
    other, other_queue = other_connection(db)
    try:
        assert [j._p_oid for j in other_queue] == [job._p_oid]
        assert len(other_queue) == 1
    finally:
        other.close()


def test_put_with_times(queue):
    start = now() + HOUR
    job = queue.put(operator.add, 1, 1, begin_after=start,
                    begin_by=datetime.timedelta(minutes=5))
    assert job.begin_after == start
    assert job.begin_by == start + datetime.timedelta(minutes=5)


def test_put_refuses_naive_begin_after_naming_it(queue):
    naive = datetime.datetime(2031, 2, 3, 4, 5)
    with pytest.raises(ValueError, match=r'begin_after.*2031, 2, 3, 4, 5'):
        queue.put(operator.add, 1, 1, begin_after=naive)
    assert len(queue) == 0


def test_put_refuses_a_job_that_is_not_new(queue):
    job = queue.put(operator.add, 1, 1)
    with pytest.raises(BadStatusError, match='only new jobs'):
        queue.put(job)
    claimed = queue.claim()
    with pytest.raises(BadStatusError):
        queue.put(claimed)
    done = Job(operator.add, 1, 1)
    done()
    with pytest.raises(BadStatusError):
        queue.put(done)
    assert len(queue) == 0


def test_put_job_with_call_arguments_is_refused(queue):
    with pytest.raises(TypeError, match='takes no call arguments'):
        queue.put(Job(operator.add), 1, 2)


def test_put_bad_callables_is_refused_naming_them(queue):
    with pytest.raises(TypeError, match="'not a function'"):
        queue.put('not a function')
    with pytest.raises(ValueError, match='lambda'):
        queue.put(lambda: None)
    assert len(queue) == 0


def test_put_back_goes_to_the_front(queue):
    first = queue.put(operator.add, 1, 1)
    urgent = queue.putBack(Job(operator.add, 2, 2))
    even_more = queue.putBack(Job(operator.add, 3, 3))
    assert list(queue) == [even_more, urgent, first]
    assert urgent.status == PENDING
    assert queue.claim() is even_more
    with pytest.raises(BadStatusError):
        queue.putBack(first)


def test_put_back_in_front_of_future_jobs_runs_now(queue):
    later = queue.put(operator.add, 1, 1, begin_after=now() + HOUR)
    back = queue.putBack(Job(operator.add, 2, 2))
    assert list(queue) == [back, later]
    assert queue.claim() is back
    assert queue.claim() is None


def test_pull_by_index(queue):
    jobs = [queue.put(operator.add, i, 0) for i in range(4)]
    assert queue.pull(1) is jobs[1]
    assert jobs[1].status == NEW and jobs[1].queue is None
    assert queue.pull() is jobs[0]
    assert queue.pull(-1) is jobs[3]
    assert list(queue) == [jobs[2]]
    with pytest.raises(IndexError, match='no index 5'):
        queue.pull(5)
    with pytest.raises(TypeError, match="'0'"):
        queue.pull('0')
    # a pulled job can be queued again
    queue.put(jobs[1])
    assert list(queue) == [jobs[2], jobs[1]]


def test_remove(queue):
    keep = queue.put(operator.add, 1, 1)
    cancel = queue.put(operator.add, 2, 2, begin_by=HOUR)
    queue.remove(cancel)
    assert cancel.status == NEW
    assert list(queue) == [keep] and len(queue) == 1
    with pytest.raises(LookupError, match='not pending'):
        queue.remove(cancel)
    # its deadline went with it: nothing fails it later
    assert queue.fail_expired(10 ** 18) == 0
    assert cancel.status == NEW


# -- claim -------------------------------------------------------------

def test_claim_honours_begin_after(queue):
    later = queue.put(operator.add, 1, 1, begin_after=now() + HOUR)
    assert queue.claim() is None
    assert later.status == PENDING
    assert queue.claim(now=now() + 2 * HOUR) is later
    assert later.status == ASSIGNED
    assert len(queue) == 0


def test_claim_takes_due_jobs_in_due_order(queue):
    start = now()
    late = queue.put(operator.add, 1, 1, begin_after=start + 2 * HOUR)
    early = queue.put(operator.add, 2, 2, begin_after=start + HOUR)
    ready = queue.put(operator.add, 3, 3)
    when = start + 3 * HOUR
    assert [queue.claim(now=when) for _ in range(3)] == [ready, early, late]


def test_claim_with_filter_skips_but_keeps_jobs(queue):
    odd = queue.put(operator.add, 1, 0)
    even = queue.put(operator.add, 2, 0)
    assert queue.claim(lambda job: job.args[0] % 2 == 0) is even
    assert list(queue) == [odd]


def test_claim_refuses_naive_now(queue):
    queue.put(operator.add, 1, 1)
    with pytest.raises(ValueError, match='now'):
        queue.claim(now=datetime.datetime(2030, 1, 1))


def test_expired_job_fails_with_timeout_at_claim(queue):
    job = queue.put(operator.add, 1, 1, begin_by=datetime.timedelta(
        minutes=1))
    fresh = queue.put(operator.add, 2, 2)
    assert queue.claim(now=now() + HOUR) is fresh
    assert job.status == COMPLETED
    assert job.result.check(TimeoutError) is TimeoutError
    assert 'begin_by deadline' in job.result.message
    assert job not in queue and len(queue) == 0


def test_expired_job_fails_even_when_the_filter_rejects_it(queue):
    job = queue.put(operator.add, 1, 1, begin_by=datetime.timedelta(
        minutes=1))
    assert queue.claim(reject_all, now=now() + HOUR) is None
    assert job.status == COMPLETED
    assert job.result.check(TimeoutError)
    assert len(queue) == 0


def test_expired_future_job_fails(queue):
    start = now() + HOUR
    job = queue.put(operator.add, 1, 1, begin_after=start,
                    begin_by=datetime.timedelta(minutes=1))
    assert queue.claim(reject_all, now=start) is None
    assert job.status == PENDING  # not expired at its own start
    assert queue.claim(reject_all, now=start + HOUR) is None
    assert job.status == COMPLETED
    assert job.result.check(TimeoutError)


def test_expired_job_callbacks_go_through_the_queue(queue):
    job = queue.put(operator.add, 1, 1, begin_by=datetime.timedelta(
        minutes=1))
    errback = job.addCallbacks(failure=_failure_type)
    assert queue.claim(reject_all, now=now() + HOUR) is None
    assert job.status == COMPLETED
    assert errback.status == PENDING
    assert queue.claim(now=now() + HOUR) is errback
    assert errback() == 'TimeoutError'


def test_deadlines_of_a_queue_stored_before_deadline_stripes(queue):
    """Jobs indexed in the one deadline tree of an older queue are moved
    to the stripes by the upgrade (as install_queues does), and expire."""
    old_expiring, old_claimed = (
        queue.put(operator.add, i, 0, begin_by=datetime.timedelta(minutes=1))
        for i in (1, 2))
    del queue._deadline_stripes  # as stored before: one tree
    queue._deadlines = floor_tree()
    for job in (old_expiring, old_claimed):
        queue._deadlines[job._deadline_key] = job
    assert layout.upgrade(queue)
    assert '_deadlines' not in queue.__dict__
    new = queue.put(operator.add, 3, 0, begin_by=datetime.timedelta(
        minutes=1))
    assert queue.claim(lambda job: job is not old_expiring) is old_claimed
    assert old_claimed._deadline_key is None
    assert queue.claim(reject_all, now=now() + HOUR) is None
    assert old_expiring.result.check(TimeoutError)
    assert new.result.check(TimeoutError)
    assert all(list(above_floor(tree)) == []
               for tree in queue._deadline_stripes)
    assert len(queue) == 0


def _failure_type(failure):
    return failure.type_name


class CountingFilter:

    def __init__(self):
        self.calls = 0

    def __call__(self, job):
        self.calls += 1
        return True


def test_claim_does_not_visit_future_jobs(db, conn, queue):
    later = now() + HOUR
    for i in range(10000):
        queue.put(operator.add, i, 0, begin_after=later,
                  begin_by=datetime.timedelta(hours=1))
    due = queue.put(operator.add, 'due', '')
    transaction.commit()

    other, fresh_queue = other_connection(db)
    try:
        fresh_queue._p_activate()
        loads = []
        original = other._storage.load

        def counting_load(oid, *args):
            loads.append(oid)
            return original(oid, *args)
        other._storage.load = counting_load
        counter = CountingFilter()
        claimed = fresh_queue.claim(counter)
        assert claimed._p_oid == due._p_oid
        assert fresh_queue.claim(counter) is None  # nothing else is due
        assert counter.calls == 1
        assert 0 < len(loads) < 40, len(loads)
        assert len(fresh_queue) == 10000
    finally:
        other.transaction_manager.abort()
        other.close()


# -- concurrency ---------------------------------------------------------

def test_two_connections_racing_for_one_job_one_wins(db, conn, queue):
    job = queue.put(operator.add, 1, 1)
    transaction.commit()
    first, first_queue = other_connection(db)
    second, second_queue = other_connection(db)
    try:
        one = first_queue.claim()
        two = second_queue.claim()
        assert one._p_oid == two._p_oid == job._p_oid
        first.transaction_manager.commit()
        with pytest.raises(ConflictError):
            second.transaction_manager.commit()
        second.transaction_manager.abort()
        # the loser sees the truth on its next attempt
        assert second_queue.claim() is None
        assert second.get(job._p_oid).status == ASSIGNED
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize('count', [1, 200])
@pytest.mark.parametrize('priority', [0, 3])
@pytest.mark.parametrize('begin_by', [None, HOUR], ids=['', 'begin_by'])
def test_producers_in_two_threads_commit_without_conflict(
        file_db, count, priority, begin_by):
    """Each thread puts in a stripe of its own: no shared bucket, and no
    shared tree node even when both split buckets (200 jobs); jobs with a
    deadline are indexed by it in their own stripe too."""
    import threading
    setup, setup_queue = other_connection(file_db)
    setup_queue.put(operator.add, 'old', '', priority=priority,
                    begin_by=begin_by)  # the lane
    setup.transaction_manager.commit()
    setup.close()
    producers = [other_connection(file_db) for _ in range(2)]

    def produce(queue, tag):
        for i in range(count):
            queue.put(operator.add, tag, i, priority=priority,
                      begin_by=begin_by)
    threads = [threading.Thread(target=produce, args=(queue, tag))
               for tag, (_, queue) in zip('ab', producers)]
    try:
        for thread in threads:
            thread.start()
            thread.join()
        for connection, _ in producers:  # the second would conflict
            connection.transaction_manager.commit()
    finally:
        for connection, _ in producers:
            connection.close()
    check, check_queue = other_connection(file_db)
    try:
        assert len(check_queue) == len(list(check_queue)) == 1 + 2 * count
        assert [j.args for j in check_queue][:1 + count] == [
            ['old', '']] + [['a', i] for i in range(count)]
    finally:
        check.close()


@pytest.mark.parametrize('pending', [1, 5])
@pytest.mark.parametrize('consumer_first', [False, True])
def test_producer_and_consumer_commit_without_conflict(
        file_db, pending, consumer_first):
    setup, setup_queue = other_connection(file_db)
    for i in range(pending):
        setup_queue.put(operator.add, i, 0)
    setup.transaction_manager.commit()
    setup.close()

    producer, producer_queue = other_connection(file_db)
    consumer, consumer_queue = other_connection(file_db)
    try:
        added = producer_queue.put(operator.add, 'new', '',
                                   begin_by=HOUR)
        claimed = consumer_queue.claim()
        assert claimed is not None
        order = [producer, consumer]
        if consumer_first:
            order.reverse()
        for connection in order:
            connection.transaction_manager.commit()
    finally:
        producer.close()
        consumer.close()

    check, check_queue = other_connection(file_db)
    try:
        assert len(check_queue) == pending
        assert len(list(check_queue)) == pending
        assert list(check_queue)[-1]._p_oid == added._p_oid
    finally:
        check.close()


def test_a_lanes_counter_comes_after_its_trees_in_oid_order(file_db):
    """RelStorage-PostgreSQL locks in oid order: a counter below a tree
    lets two producers of one stripe deadlock (see Queue._stripe)."""
    connection, queue = other_connection(file_db)
    try:
        queue.put(operator.add, 1, 2, priority=4)  # a lane made later
        connection.transaction_manager.commit()
        for lane in queue._stripes.values():
            *trees, counter = lane
            assert counter._p_oid > max(tree._p_oid for tree in trees)
        assert len(queue._stripes) == 2
    finally:
        connection.close()


def test_a_producer_whose_put_fails_to_commit_moves_to_another_stripe(
        file_db):
    """Two producers sharing a stripe would meet again on every retry;
    the one whose commit failed draws another stripe, the other stays."""
    import persistent.mapping
    from pyramid_zcasync import keys, layout
    setup, _ = other_connection(file_db)
    setup.root()['shared'] = persistent.mapping.PersistentMapping()
    setup.transaction_manager.commit()
    setup.close()
    producer, queue = other_connection(file_db)
    rival, _ = other_connection(file_db)
    try:
        stripe = keys.local_stripe()
        queue.put(operator.add, 1, 2)
        producer.transaction_manager.commit()
        assert keys.local_stripe() == stripe  # committed: it stays

        queue.put(operator.add, 3, 4)
        producer.root()['shared']['by'] = 'producer'
        rival.root()['shared']['by'] = 'rival'
        rival.transaction_manager.commit()
        with pytest.raises(ConflictError):
            producer.transaction_manager.commit()
        producer.transaction_manager.abort()
        moved = keys.local_stripe()
        assert moved != stripe

        job = queue.put(operator.add, 5, 6)  # the retry
        producer.transaction_manager.commit()
        assert keys.stripe_of(job._key) == moved == keys.local_stripe()
    finally:
        producer.close()
        rival.close()


def test_front_oids_name_the_next_claims_without_loading_them(file_db):
    """What a dispatcher prefetches before claiming: the due jobs in the
    order claims take them (highest lane first, stripes merged by key)."""
    import threading
    setup, queue = other_connection(file_db)
    tags = {}

    def put(tag, **options):
        tags[tag] = queue.put(operator.add, tag, '', **options)
    put('a0')
    thread = threading.Thread(target=put, args=('c0',))  # another stripe
    thread.start()
    thread.join()
    put('a1')
    put('b0', priority=5)
    put('b1', priority=5)
    put('later', priority=5, begin_after=now() + HOUR)
    setup.transaction_manager.commit()
    oids = {job._p_oid: tag for tag, job in tags.items()}
    setup.close()
    connection, fresh = other_connection(file_db)
    connection.cacheMinimize()  # the pool may hand back setup's connection
    try:
        front = fresh.front_oids(10, now())
        assert [oids[oid] for oid in front] == ['b0', 'b1', 'a0', 'c0', 'a1']
        assert [oids[oid] for oid in fresh.front_oids(3, now())] == [
            'b0', 'b1', 'a0']
        ghosts = [connection.get(oid) for oid in front]
        assert all(job._p_changed is None for job in ghosts)  # not loaded
        assert [oids[fresh.claim()._p_oid] for _ in front] == [
            oids[oid] for oid in front]
        assert fresh.front_oids(10, now()) == []
    finally:
        connection.transaction_manager.abort()
        connection.close()
