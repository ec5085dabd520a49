"""Queues stored with 8 stripes (each lane one entry of ``_stripes``: its
8 trees and one Length; 8 deadline trees) keep their pending jobs through
``install_queues``: claimed in order (priority, due time, put order),
counted, found, expired."""
import datetime
import operator

import BTrees.Length
import BTrees.OOBTree
import pyramid_zcasync
from pyramid_zcasync import Job, clock, keys, layout
from pyramid_zcasync.interfaces import COMPLETED, PENDING
from pyramid_zcasync.quota import above_floor, floor_tree
from queuetools import HOUR, MINUTE, now, other_connection

OLD_STRIPES = 8


def as_stored_with_8_stripes(queue):
    """Make ``queue``'s trees those of the 8-stripe layout, empty."""
    queue._stripes = BTrees.OOBTree.OOBTree()
    queue._deadline_stripes = tuple(floor_tree()
                                    for _ in range(OLD_STRIPES))


def put_as_stored(queue, made, micros, sequence, begin_by=None):
    """Put ``made`` as the 8-stripe code did: its key's low 3 bits name
    its tree; ``sequence`` is the rest of the tiebreak (so the 4-bit
    stripe of the key often names another tree)."""
    stripe = sequence % OLD_STRIPES
    tiebreak = sequence << 3 | stripe
    names = tuple(sorted(set(made.quota_names)))
    lane = queue._stripes.get((-made.priority, names))
    if lane is None:
        lane = queue._stripes[(-made.priority, names)] = tuple(
            floor_tree() for _ in range(OLD_STRIPES)) + (
                BTrees.Length.Length(),)
    made._key = keys.make(micros, tiebreak)
    lane[stripe][made._key] = made
    lane[OLD_STRIPES].change(1)
    if begin_by is not None:
        made.begin_by = begin_by
        made._deadline_key = keys.make(clock.to_micros(begin_by), tiebreak)
        queue._deadline_stripes[stripe][made._deadline_key] = made
    made.queue = queue
    made._status = PENDING
    return made


def job(tag, priority=0, names=()):
    made = Job(operator.add, tag, '')
    made.priority = priority
    made.quota_names = names
    return made


def stored_queue(db, start):
    """A queue in the 8-stripe layout, committed: 3 lanes, jobs in every
    old tree, some with deadlines; the jobs in claim order."""
    conn, queue = other_connection(db)
    queue.quotas.create('mail', 100)
    as_stored_with_8_stripes(queue)
    expected = []
    for i in range(24):
        micros = start + 10 * (i % 6)  # many due at the same time
        deadline = clock.from_micros(start) + HOUR if i % 5 == 0 else None
        expected.append(put_as_stored(queue, job('p%d' % i), micros, 3 * i,
                                      begin_by=deadline))
        expected.append(put_as_stored(queue, job('h%d' % i, 2), micros,
                                      3 * i + 1))
        expected.append(put_as_stored(queue, job('m%d' % i, 0, ('mail',)),
                                      micros + 1, 3 * i + 2))
    assert layout.needs_upgrade(queue)
    conn.transaction_manager.commit()
    conn.close()
    return sorted(expected, key=lambda j: (-j.priority, j._key))


def test_jobs_of_the_8_stripe_layout_are_claimed_in_order_and_counted(
        file_db):
    start = clock.to_micros(now())
    expected = stored_queue(file_db, start)
    pyramid_zcasync.install_queues(file_db)
    conn, queue = other_connection(file_db)
    try:
        assert not layout.needs_upgrade(queue)
        assert all(len(key) == 3 for key in queue._stripes.keys())
        # RelStorage locks in oid order: each counter above its tree
        assert all(tree._p_oid < counter._p_oid
                   for tree, counter in queue._stripes.values())
        assert len(queue._deadline_stripes) == keys.STRIPES
        assert len(queue) == len(expected) == 72
        assert [j.args[0] for j in queue] == [j.args[0] for j in expected]
        # new puts go after the old ones of their priority
        later = [queue.put(job('new%d' % i, priority)) for i, priority
                 in enumerate((2, 0, 2))]
        assert len(queue) == 75
        claimed = []
        while True:
            one = queue.claim(now=now() + MINUTE)
            if one is None:
                break
            claimed.append(one)
            assert len(queue) == 75 - len(claimed)
        highs = [j for j in expected if j.priority == 2] + later[::2]
        lows = [j for j in expected if j.priority == 0] + [later[1]]
        assert [j.args[0] for j in claimed] == [j.args[0]
                                                for j in highs + lows]
        assert sum(counter() for _, counter in queue._stripes.values()) == 0
        assert all(list(above_floor(tree)) == []
                   for tree in queue._deadline_stripes)
        conn.transaction_manager.commit()
    finally:
        conn.close()


def test_old_jobs_are_found_removed_and_expire_after_the_upgrade(file_db):
    start = clock.to_micros(now())
    expected = stored_queue(file_db, start)
    pyramid_zcasync.install_queues(file_db)
    conn, queue = other_connection(file_db)
    try:
        # a job whose key names a stripe it is not in now (found around)
        moved = [j for j in queue if keys.stripe_of(j._key) >= OLD_STRIPES]
        assert moved
        first = moved[0]
        assert first in queue
        queue.remove(first)
        assert first not in queue and len(queue) == 71
        with_deadline = [j for j in queue if j.begin_by is not None]
        assert with_deadline
        assert queue.claim(lambda j: False,
                           now=clock.from_micros(start) + 2 * HOUR) is None
        assert all(j.status == COMPLETED and j.result.check(TimeoutError)
                   for j in with_deadline)
        assert len(queue) == 71 - len(with_deadline)
        assert len(expected) == 72
        conn.transaction_manager.commit()
    finally:
        conn.close()


def test_a_stored_lane_meeting_stripes_made_since_moves_its_jobs(
        mapping_db):
    """A put by the new code before install_queues made a stripe of an
    old lane: the old trees' jobs are moved into the stripes of their
    keys instead, and counted there."""
    conn, queue = other_connection(mapping_db)
    as_stored_with_8_stripes(queue)
    start = clock.to_micros(now())
    old = [put_as_stored(queue, job('o%d' % i), start + i, i)
           for i in range(20)]
    queue._stripes[(0, (), 3)] = (floor_tree(), BTrees.Length.Length())
    assert layout.upgrade(queue)
    assert not layout.needs_upgrade(queue)
    assert len(queue) == 20
    assert all(queue._stripe(0, (), keys.stripe_of(j._key)).get(j._key)
               is j for j in old)
    assert list(queue) == old
    conn.transaction_manager.abort()
    conn.close()


def test_a_new_queue_makes_one_stripe_and_claims_load_only_those_made(
        mapping_db):
    conn, queue = other_connection(mapping_db)
    assert len(queue._stripes) == 1
    queue.put(operator.add, 1, 2)
    queue.put(operator.add, 3, 4, priority=3,
              begin_by=datetime.timedelta(hours=1))
    assert len(queue._stripes) == 2
    assert all(len(trees) == 1 for _, _, trees in queue._all_lanes())
    assert [j.args for j in queue] == [[3, 4], [1, 2]]
    conn.transaction_manager.abort()
    conn.close()
