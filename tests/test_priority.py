"""Priorities: claims take the highest priority first, then the earliest
due, then the first queued, without scanning the queue."""
import operator

import pytest
import transaction
from ZODB.POSException import ConflictError

import BTrees.Length
import BTrees.OOBTree

from pyramid_zcasync import layout
from pyramid_zcasync import Job, clock, keys
from pyramid_zcasync.interfaces import ASSIGNED, COMPLETED, NEW, PENDING
from pyramid_zcasync.job import BadStatusError, MAX_PRIORITY, MIN_PRIORITY
from pyramid_zcasync.keys import FLOOR
from pyramid_zcasync.quota import floor_tree
from queuetools import HOUR, MINUTE, now, other_connection





def job(tag, priority=None):
    made = Job(operator.add, tag, '')
    if priority is not None:
        made.priority = priority
    return made


def tags(jobs):
    return [j.args[0] for j in jobs]


def claim_all(queue, when=None):
    claimed = []
    while True:
        one = queue.claim(now=when)
        if one is None:
            return claimed
        claimed.append(one)


class CountingLoads:
    """Counts the objects a connection loads from its storage."""

    def __init__(self, conn):
        self.oids = []
        self._storage = conn._storage
        self._original = conn._storage.load
        conn._storage.load = self._load

    def _load(self, oid, *args):
        self.oids.append(oid)
        return self._original(oid, *args)

    def __len__(self):
        return len(self.oids)


# -- the attribute and put's argument --------------------------------------

def test_priority_defaults_to_zero_and_is_stored_only_when_set(queue):
    plain = queue.put(operator.add, 1, 1)
    assert plain.priority == 0
    assert '_priority' not in plain.__dict__
    zero = queue.put(operator.add, 1, 1, priority=0)
    assert '_priority' not in zero.__dict__
    high = queue.put(operator.add, 1, 1, priority=5)
    assert high.priority == 5 and high.__dict__['_priority'] == 5
    own = Job(operator.add, 1, 1)
    own.priority = -3
    assert queue.put(own).priority == -3  # put keeps the job's own
    assert queue.put(job('x', 2), priority=7).priority == 7
    transaction.commit()


@pytest.mark.parametrize('value, error, text', [
    ('3', TypeError, "priority must be an integer (higher runs first), "
                     "got '3' (str)"),
    (2.5, TypeError, 'priority must be an integer'),
    (True, TypeError, 'got True (bool)'),
    (MAX_PRIORITY + 1, ValueError,
     'priority must be from %d to %d, got %d'
     % (MIN_PRIORITY, MAX_PRIORITY, MAX_PRIORITY + 1)),
    (MIN_PRIORITY - 1, ValueError, 'got %d' % (MIN_PRIORITY - 1)),
])
def test_bad_priority_is_refused_naming_it(queue, value, error, text):
    with pytest.raises(error) as info:
        queue.put(operator.add, 1, 1, priority=value)
    assert text in str(info.value)
    assert len(queue) == 0 and list(queue) == []
    with pytest.raises(error, match='priority'):
        Job(operator.add).priority = value


def test_priority_of_a_queued_job_cannot_change(queue):
    queued = queue.put(operator.add, 1, 1, priority=1)
    with pytest.raises(BadStatusError, match='set priority'):
        queued.priority = 2
    assert queued.priority == 1 and queue.claim() is queued


def test_the_extreme_priorities_are_allowed(queue):
    low = queue.put(operator.add, 1, 1, priority=MIN_PRIORITY)
    high = queue.put(operator.add, 2, 2, priority=MAX_PRIORITY)
    assert claim_all(queue) == [high, low]


def test_put_takes_a_time_limit(queue):
    limited = queue.put(operator.add, 1, 1, time_limit=2)
    assert limited.time_limit == 2.0
    with pytest.raises(ValueError, match='time_limit'):
        queue.put(operator.add, 1, 1, time_limit=0)
    assert len(queue) == 1


# -- claim order -------------------------------------------------------------

def test_claims_take_the_highest_priority_first_then_fifo(queue):
    queue.put(job('low-1', -1))
    queue.put(job('zero-1'))
    queue.put(job('high-1', 10))
    queue.put(job('zero-2', 0))
    queue.put(job('high-2', 10))
    queue.put(job('mid', 3))
    queue.put(job('low-2', -1))
    order = ['high-1', 'high-2', 'mid', 'zero-1', 'zero-2', 'low-1', 'low-2']
    assert tags(queue) == order
    assert [queue[i].args[0] for i in range(7)] == order
    assert queue[-1].args[0] == 'low-2' and len(queue) == 7
    assert tags(claim_all(queue)) == order
    assert len(queue) == 0


def test_priority_comes_before_due_time(queue):
    start = now()
    early_low = queue.put(job('early-low', -1), begin_after=start - HOUR)
    later_high = queue.put(job('later-high', 1), begin_after=start + HOUR)
    later_zero = queue.put(job('later-zero'), begin_after=start + 2 * HOUR)
    soon_high = queue.put(job('soon-high', 1), begin_after=start + MINUTE)
    # a high priority not yet due does not hold back lower ones
    assert queue.claim() is early_low
    assert queue.claim() is None
    # once due, the higher priority goes first, earliest due first
    when = start + 3 * HOUR
    assert claim_all(queue, when) == [soon_high, later_high, later_zero]


def test_order_is_priority_then_due_then_fifo(queue):
    start = now() + HOUR
    a = queue.put(job('a', 2), begin_after=start + 2 * MINUTE)
    b = queue.put(job('b', 2), begin_after=start + MINUTE)
    c = queue.put(job('c', 2), begin_after=start + MINUTE)
    d = queue.put(job('d', 5), begin_after=start + 3 * MINUTE)
    e = queue.put(job('e'), begin_after=start)
    assert list(queue) == [d, b, c, a, e]
    assert claim_all(queue, start + HOUR) == [d, b, c, a, e]


def test_put_back_goes_to_the_front_of_its_priority(queue):
    high = queue.put(job('high', 1))
    first = queue.put(job('first'))
    back = queue.putBack(job('back'))
    low = queue.put(job('low', -1))
    low_back = queue.putBack(job('low-back', -1))
    assert list(queue) == [high, back, first, low_back, low]
    assert claim_all(queue) == [high, back, first, low_back, low]


def test_put_back_goes_before_all_lanes_of_its_priority(queue):
    queue.quotas.create('mail', 5)
    mail = Job(operator.add, 'mail', '')
    mail.quota_names = ('mail',)
    queue.put(mail)
    plain = queue.put(job('plain'))
    back = queue.putBack(job('back'))
    assert list(queue) == [back, mail, plain]
    assert claim_all(queue) == [back, mail, plain]


def test_requeue_keeps_the_priority_at_the_front_of_its_level(queue):
    queue.put(job('high', 1))
    retried = queue.put(job('retried', 1))
    queue.put(job('zero'))
    assert queue.claim().args[0] == 'high'
    assert queue.claim() is retried
    queue.put(job('high-later', 1))
    queue.requeue(retried)
    assert retried.status == PENDING and retried.priority == 1
    assert tags(queue) == ['retried', 'high-later', 'zero']
    assert queue.claim() is retried
    later = now() + HOUR
    queue.requeue(retried, begin_after=later)
    assert tags(claim_all(queue)) == ['high-later', 'zero']
    assert queue.claim(now=later) is retried


def test_pull_remove_and_contains_across_priorities(queue):
    jobs = [queue.put(job(p, p)) for p in (0, 3, -2, 3, 1)]
    assert tags(queue) == [3, 3, 1, 0, -2]
    assert queue.pull(1) is jobs[3]
    assert queue.pull(-1) is jobs[2]
    assert jobs[3].status == NEW and jobs[3].queue is None
    assert jobs[3] not in queue and jobs[1] in queue
    queue.remove(jobs[4])
    assert jobs[4] not in queue
    with pytest.raises(LookupError, match='not pending'):
        queue.remove(jobs[4])
    assert list(queue) == [jobs[1], jobs[0]] and len(queue) == 2
    # pulled jobs can be queued again, at another priority
    jobs[3].priority = -1
    queue.put(jobs[3])
    assert list(queue) == [jobs[1], jobs[0], jobs[3]]


def test_next_due_looks_at_every_priority(queue):
    start = now()
    queue.put(job('low', -1), begin_after=start + 2 * HOUR)
    assert queue.next_due(start) == start + 2 * HOUR
    queue.put(job('high', 4), begin_after=start + HOUR)
    assert queue.next_due(start) == start + HOUR
    queue.put(job('zero'), begin_after=start + 3 * HOUR)
    assert queue.next_due(start) == start + HOUR
    assert queue.next_due(start + HOUR) == start + 2 * HOUR
    assert queue.next_due(start + 3 * HOUR) is None


def test_expired_jobs_of_any_priority_fail(queue):
    high = queue.put(job('high', 2), begin_by=MINUTE)
    low = queue.put(job('low', -2), begin_by=MINUTE)
    fresh = queue.put(job('fresh', -5))
    assert queue.claim(now=now() + HOUR) is fresh
    for expired in (high, low):
        assert expired.status == COMPLETED
        assert expired.result.check(TimeoutError)
    assert len(queue) == 0 and list(queue) == []


def as_stored_before_lanes(queue):
    """Make ``queue`` look stored before lanes and stripes: one tree,
    ``_pending``, and the class defaults for the rest."""
    del queue._stripes
    queue._pending = floor_tree()
    queue._length = BTrees.Length.Length()
    assert "_lanes" not in queue.__dict__ and queue._stripes is None


def put_as_before(queue, tree, made, micros):
    """Put ``made`` in an unstriped ``tree`` as before stripes: any low
    bits in its key."""
    made._key = keys.make(micros, 0x12345677)
    tree[made._key] = made
    queue._length.change(1)
    made.queue = queue
    made._status = PENDING
    return made


def test_a_queue_stored_before_priorities_keeps_working(queue):
    """Old queues have only ``_pending`` (and may hold quota jobs in it):
    upgraded (as install_queues does), their jobs are in their lanes."""
    queue.quotas.create('mail', 1)
    as_stored_before_lanes(queue)
    start = clock.to_micros(now())
    old_plain = put_as_before(queue, queue._pending, job('old-plain'), start)
    old_mail = Job(operator.add, 'old-mail', '')
    old_mail.quota_names = ('mail',)
    put_as_before(queue, queue._pending, old_mail, start - 1)
    assert layout.upgrade(queue)
    assert not layout.needs_upgrade(queue)
    assert list(queue) == [old_mail, old_plain]
    new_plain = queue.put(job('new-plain'))
    high = queue.put(job('high', 1))
    assert '_pending' not in queue.__dict__
    assert old_mail in queue and old_plain in queue
    assert claim_all(queue) == [high, old_mail, old_plain, new_plain]
    blocked = Job(operator.add, 'blocked', '')
    blocked.quota_names = ('mail',)
    queue.put(blocked)  # the quota is full: old_mail holds it
    assert queue.claim() is None
    old_mail()
    assert queue.claim() is blocked
    # an old quota job requeued goes to a striped lane, and is found there
    queue.requeue(old_mail)
    assert queue._stripe(0, ('mail',), keys.stripe_of(old_mail._key)).get(
        old_mail._key) is old_mail
    assert old_mail in queue
    transaction.commit()


def test_a_queue_stored_before_stripes_still_claims_in_order(queue):
    """Unstriped lanes of a stored queue are one more tree of their lane:
    old and new jobs of a priority are claimed by due time together."""
    queue.quotas.create('mail', 10)
    as_stored_before_lanes(queue)
    queue._lanes = BTrees.OOBTree.OOBTree()
    old_high = queue._lanes[(-2, ())] = floor_tree()
    old_mail = queue._lanes[(0, ('mail',))] = floor_tree()
    start = clock.to_micros(now() + HOUR)  # keyed by begin_after
    expected = []
    for i in range(0, 6, 2):  # the old jobs, before the upgrade
        when = start + 10 * i
        expected.append(put_as_before(queue, old_high, job('h%d' % i, 2),
                                      when))
        mailed = job('m%d' % i)
        mailed.quota_names = ('mail',)
        expected.append(put_as_before(queue, old_mail, mailed, when))
        expected.append(put_as_before(queue, queue._pending,
                                      job('p%d' % i), when + 1))
    assert layout.upgrade(queue)
    for i in range(1, 6, 2):  # new jobs due between the old ones
        when = start + 10 * i
        due = clock.from_micros(when)
        expected.append(queue.put(job('h%d' % i, 2), begin_after=due))
        mailed = job('m%d' % i)
        mailed.quota_names = ('mail',)
        expected.append(queue.put(mailed, begin_after=due))
        expected.append(queue.put(job('p%d' % i),
                                  begin_after=clock.from_micros(when + 1)))
    expected.sort(key=lambda j: j._key)  # by due time
    highs = [j for j in expected if j.priority == 2]
    rest = [j for j in expected if j.priority == 0]
    assert list(queue) == highs + rest
    assert all(j in queue for j in expected)
    assert tags(claim_all(queue, clock.from_micros(start + 100))
                ) == tags(highs + rest)
    assert len(queue) == 0


def test_claims_take_the_order_across_stripes(queue):
    """Jobs of one lane put by different threads sit in different trees;
    claims still take them by due time, then as queued."""
    import threading
    start = now() + HOUR  # due later: keyed by begin_after, not put time
    put = []

    def producer(offset):
        for i in range(5):
            due = start + MINUTE * (2 * i + offset)
            put.append(queue.put(job('%d-%d' % (offset, i)),
                                 begin_after=due))
            put.append(queue.put(job('same-%d-%d' % (offset, i)),
                                 begin_after=start))
    threads = [threading.Thread(target=producer, args=(offset,))
               for offset in (0, 1)]
    for thread in threads:
        thread.start()
        thread.join()
    stripes = {keys.stripe_of(j._key) for j in put}
    assert len(stripes) == 2
    # all 'same' jobs are due at ``start``: first queued, first claimed
    expected = sorted(put, key=lambda j: (j.begin_after, put.index(j)))
    assert list(queue) == expected
    assert claim_all(queue, start + HOUR) == expected


def test_a_pending_job_whose_quota_names_changed_is_still_found(queue):
    queue.quotas.create('a', 5)
    moved = Job(operator.add, 1, 1)
    moved.quota_names = ('a',)
    queue.put(moved)
    moved.quota_names = ()
    assert moved in queue
    queue.remove(moved)
    assert len(queue) == 0 and moved.status == NEW


# -- costs -------------------------------------------------------------------

def test_claims_load_neither_future_nor_lower_priority_jobs(db, conn, queue):
    later = now() + HOUR
    for i in range(3000):
        queue.put(operator.add, i, 0)  # due, priority 0
        queue.put(operator.add, i, 1, priority=-1)  # due, lower
        queue.put(operator.add, i, 2, priority=5, begin_after=later)
    wanted = [queue.put(operator.add, 'due', i, priority=2)
              for i in range(3)]
    transaction.commit()

    other, fresh = other_connection(db)
    try:
        fresh._p_activate()
        loads = CountingLoads(other)
        claimed = [fresh.claim() for _ in range(3)]
        assert [j._p_oid for j in claimed] == [j._p_oid for j in wanted]
        assert 0 < len(loads) < 40, len(loads)
        loaded = set(loads.oids)
        # not one of the lower or future jobs was loaded
        lower = [j._p_oid for _, names, trees in fresh._all_lanes()
                 if not names for tree in trees
                 for j in tree.values(min=FLOOR, excludemin=True)
                 if j.priority == -1][:50]
        assert not loaded.intersection(lower)
        assert len(fresh) == 9000
        # the next claim takes priority 0, still without loading much
        before = len(loads)
        assert fresh.claim().args == [0, 0]
        assert len(loads) - before < 20
    finally:
        other.transaction_manager.abort()
        other.close()


# -- concurrency --------------------------------------------------------------

@pytest.mark.parametrize('consumer_first', [False, True])
def test_producer_and_consumer_of_one_priority_do_not_conflict(
        file_db, consumer_first):
    setup, setup_queue = other_connection(file_db)
    for i in range(3):
        setup_queue.put(operator.add, i, 0, priority=4)
    setup.transaction_manager.commit()
    setup.close()

    producer, producer_queue = other_connection(file_db)
    consumer, consumer_queue = other_connection(file_db)
    try:
        added = producer_queue.put(operator.add, 'new', '', priority=4)
        claimed = consumer_queue.claim()
        assert claimed.args == [0, 0]
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
        assert len(check_queue) == 3
        assert list(check_queue)[-1]._p_oid == added._p_oid
        assert check.get(claimed._p_oid).status == ASSIGNED
    finally:
        check.close()


def test_two_claims_at_different_priorities_commit_together(file_db):
    setup, setup_queue = other_connection(file_db)
    setup_queue.put(operator.add, 'high', '', priority=3)
    setup_queue.put(operator.add, 'low', '', priority=-3)
    setup.transaction_manager.commit()
    setup.close()
    first, first_queue = other_connection(file_db)
    second, second_queue = other_connection(file_db)
    try:
        assert first_queue.claim().args[0] == 'high'
        assert second_queue.claim(
            lambda j: j.args[0] == 'low').args[0] == 'low'
        first.transaction_manager.commit()
        second.transaction_manager.commit()
    finally:
        first.close()
        second.close()


def test_two_producers_opening_one_new_priority_one_retries(file_db):
    first, first_queue = other_connection(file_db)
    second, second_queue = other_connection(file_db)
    try:
        first_queue.put(operator.add, 1, 1, priority=9)
        second_queue.put(operator.add, 2, 2, priority=9)
        first.transaction_manager.commit()
        with pytest.raises(ConflictError):
            second.transaction_manager.commit()
        second.transaction_manager.abort()
        second_queue.put(operator.add, 2, 2, priority=9)  # the retry
        second.transaction_manager.commit()
        assert tags(second_queue) == [1, 2]
    finally:
        first.close()
        second.close()
