"""Rate limits: a quota may bound how many of its jobs start per time
window, exactly, across processes sharing the database."""
import datetime
import operator

import pytest
import transaction
from ZODB.POSException import ConflictError

from pyramid_zcasync import Job
from pyramid_zcasync.interfaces import ASSIGNED, PENDING, IQueue
from pyramid_zcasync.quota import Quota
from queuetools import HOUR, now, other_connection

SECOND = datetime.timedelta(seconds=1)




def quota_job(tag, *names):
    job = Job(operator.add, tag, '')
    job.quota_names = names
    return job


def put_many(queue, count, *names, **put_args):
    return [queue.put(quota_job(i, *names), **put_args)
            for i in range(count)]


# -- creating ----------------------------------------------------------------

def test_create_a_rate_limited_quota(queue):
    api = queue.quotas.create('api', rate=(10, 60))
    assert api.rate == (10, 60)
    assert api.size is None and not api.filled  # rate only: no size bound
    both = queue.quotas.create('both', 2, rate=(5, datetime.timedelta(
        minutes=1)))
    assert both.size == 2 and both.rate == (5, 60.0)
    plain = queue.quotas.create('plain')
    assert plain.size == 1 and plain.rate is None  # as before rates
    assert queue.quotas.create('sized', 3).rate is None
    assert 'rate 10/60s' in repr(api) and '0/-' in repr(api)
    transaction.commit()


@pytest.mark.parametrize('rate, error, text', [
    (10, TypeError, "quota 'api' rate must be (starts, seconds), e.g. "
                    "(10, 60) for 10 starts a minute, got 10"),
    ('10/60', TypeError, "rate must be (starts, seconds)"),
    ((10,), TypeError, 'got (10,)'),
    ((10, 60, 1), TypeError, 'got (10, 60, 1)'),
    ({10: 60}, TypeError, 'got {10: 60}'),
    (('10', 60), TypeError,
     "quota 'api' rate starts must be an integer, got '10' (str)"),
    ((2.5, 60), TypeError, 'starts must be an integer, got 2.5'),
    ((True, 60), TypeError, 'got True'),
    ((0, 60), ValueError, "quota 'api' rate starts must be 1 or more, got 0"),
    ((-3, 60), ValueError, 'got -3'),
    ((10, '60'), TypeError, "quota 'api' rate seconds must be a number or "
                            "a timedelta, got '60' (str)"),
    ((10, 0), ValueError, "quota 'api' rate seconds must be a finite time "
                          "of at least 1 microsecond, got 0"),
    ((10, -60), ValueError, 'got -60'),
    ((10, float('inf')), ValueError, 'got inf'),
    ((10, float('nan')), ValueError, 'got nan'),
    ((10, datetime.timedelta(0)), ValueError, 'got 0.0'),
])
def test_bad_rate_is_refused_naming_it(queue, rate, error, text):
    with pytest.raises(error) as info:
        queue.quotas.create('api', rate=rate)
    assert text in str(info.value)
    assert 'api' not in queue.quotas


def test_a_quota_limiting_nothing_is_refused(queue):
    with pytest.raises(ValueError, match="quota 'x' limits nothing"):
        queue.quotas.create('x', None)
    assert 'x' not in queue.quotas


def test_bad_size_with_a_rate_is_refused_naming_it(queue):
    with pytest.raises(TypeError, match="quota 'api' size must be an "
                                        "integer, got '3'"):
        queue.quotas.create('api', '3', rate=(1, 1))


def test_rate_can_be_changed_and_is_checked(queue):
    api = queue.quotas.create('api', rate=(10, 60))
    api.rate = (2, 1)
    assert api.rate == (2, 1)
    with pytest.raises(ValueError, match="quota 'api' rate starts"):
        api.rate = (0, 1)
    assert api.rate == (2, 1)
    api.rate = None
    assert api.rate is None


# -- claiming -----------------------------------------------------------------

def test_three_per_ten_seconds_the_fourth_waits_for_the_window(queue):
    queue.quotas.create('api', rate=(3, 10))
    jobs = put_many(queue, 5, 'api')
    api = queue.quotas['api']
    t0 = now()
    assert queue.claim(now=t0) is jobs[0]
    assert queue.claim(now=t0 + SECOND) is jobs[1]
    assert api.next_allowed(t0 + SECOND) is None  # one start left
    assert queue.claim(now=t0 + 2 * SECOND) is jobs[2]
    # three starts in the window: the fourth waits
    assert queue.claim(now=t0 + 3 * SECOND) is None
    assert queue.claim(now=t0 + 9.999 * SECOND) is None
    assert jobs[3].status == PENDING
    assert api.next_allowed(t0 + 3 * SECOND) == t0 + 10 * SECOND
    assert api.recent_starts(t0 + 3 * SECOND) == [
        t0, t0 + SECOND, t0 + 2 * SECOND]
    assert queue.next_due(t0 + 3 * SECOND) == t0 + 10 * SECOND
    # the window slides: the first start leaves it at t0 + 10 s
    assert queue.claim(now=t0 + 10 * SECOND) is jobs[3]
    assert jobs[3].status == ASSIGNED
    assert queue.claim(now=t0 + 10.5 * SECOND) is None  # t0+1 still in
    assert queue.next_due(t0 + 10.5 * SECOND) == t0 + 11 * SECOND
    assert queue.claim(now=t0 + 11 * SECOND) is jobs[4]
    # none pending: nothing to wake for
    assert queue.next_due(t0 + 12 * SECOND) is None
    # the record never holds more than the rate's starts
    assert len(api._starts) == 3
    transaction.commit()


def test_rate_counts_starts_not_running_jobs(queue):
    queue.quotas.create('api', rate=(2, 60))
    jobs = put_many(queue, 3, 'api')
    t0 = now()
    first = queue.claim(now=t0)
    first()  # it ends at once: its start still counts
    assert queue.claim(now=t0) is jobs[1]
    assert queue.claim(now=t0) is None
    assert queue.claim(now=t0 + 60 * SECOND) is jobs[2]


def test_a_retried_job_starts_again(queue):
    queue.quotas.create('api', rate=(2, 60))
    jobs = put_many(queue, 2, 'api')
    t0 = now()
    assert queue.claim(now=t0) is jobs[0]
    queue.requeue(jobs[0])
    assert queue.claim(now=t0) is jobs[0]
    assert queue.claim(now=t0) is None  # two starts already
    assert jobs[1].status == PENDING


def test_size_and_rate_together(queue):
    queue.quotas.create('both', 1, rate=(2, 60))
    jobs = put_many(queue, 3, 'both')
    t0 = now()
    assert queue.claim(now=t0) is jobs[0]
    assert queue.claim(now=t0) is None  # size
    jobs[0]()
    assert queue.claim(now=t0) is jobs[1]
    jobs[1]()
    assert queue.claim(now=t0) is None  # rate
    assert queue.claim(now=t0 + 60 * SECOND) is jobs[2]


def test_a_job_in_two_quotas_needs_both_rates(queue):
    queue.quotas.create('a', rate=(1, 10))
    queue.quotas.create('b', rate=(5, 60))
    ab = put_many(queue, 2, 'a', 'b')
    t0 = now()
    assert queue.claim(now=t0) is ab[0]
    assert queue.quotas['b'].recent_starts(t0) == [t0]
    assert queue.claim(now=t0 + 10 * SECOND) is ab[1]


def test_jobs_held_by_their_rate_do_not_block_others(queue):
    queue.quotas.create('api', rate=(1, 60))
    queue.quotas.create('mail', 1)
    api = put_many(queue, 3, 'api')
    free = queue.put(quota_job('free'))
    mail = queue.put(quota_job('mail', 'mail'))
    later = queue.put(quota_job('later'))
    t0 = now()
    assert queue.claim(now=t0) is api[0]
    assert queue.claim(now=t0) is free
    assert queue.claim(now=t0) is mail
    assert queue.claim(now=t0) is later
    assert queue.claim(now=t0) is None
    assert len(queue) == 2
    assert queue.claim(now=t0 + 60 * SECOND) is api[1]


def test_a_higher_priority_held_by_its_rate_lets_lower_ones_run(queue):
    queue.quotas.create('api', rate=(1, 60))
    urgent = put_many(queue, 2, 'api', priority=5)
    low = queue.put(quota_job('low'), priority=-5)
    t0 = now()
    assert queue.claim(now=t0) is urgent[0]
    assert queue.claim(now=t0) is low
    assert queue.claim(now=t0 + 60 * SECOND) is urgent[1]


def test_removing_a_rate_quota_releases_its_jobs(queue):
    queue.quotas.create('api', rate=(1, 60))
    jobs = put_many(queue, 2, 'api')
    t0 = now()
    assert queue.claim(now=t0) is jobs[0]
    jobs[0]()
    assert queue.claim(now=t0) is None
    queue.quotas.remove('api')
    assert queue.claim(now=t0) is jobs[1]


def test_a_quota_stored_before_rates_keeps_working(queue):
    quota = queue.quotas.create('old', 2)
    for name in ('_rate', '_starts', '_acquired'):
        quota.__dict__.pop(name, None)
    assert quota.rate is None and quota.next_allowed() is None
    jobs = put_many(queue, 3, 'old')
    assert queue.claim() is jobs[0] and queue.claim() is jobs[1]
    assert queue.claim() is None
    quota.rate = (5, 60)  # a rate can be added later
    jobs[0]()
    assert queue.claim() is jobs[2]
    assert len(quota.recent_starts()) == 1
    transaction.commit()


def test_quota_objects_on_their_own(queue):
    quota = Quota('q', None, rate=(2, 1))
    assert quota.allows(0)
    quota.acquire(Job(operator.add), 0)
    quota.acquire(Job(operator.add), 10)
    assert not quota.allows(999_999) and quota.allows(1_000_000)
    assert quota._next_allowed_micros(500) == 1_000_000
    # a lowered rate needs the window to lose more starts
    quota.rate = (1, 1)
    assert quota._next_allowed_micros(500) == 1_000_010


# -- costs --------------------------------------------------------------------

def test_held_jobs_are_not_loaded_by_claims(db, conn, queue):
    queue.quotas.create('api', rate=(1, HOUR))
    put_many(queue, 5000, 'api')
    queue.quotas['api'].acquire(Job(operator.add), None)  # window used up
    free = [queue.put(quota_job('free-%d' % i)) for i in range(3)]
    transaction.commit()
    t0 = now()

    other, fresh = other_connection(db)
    try:
        fresh._p_activate()
        loads = []
        original = other._storage.load

        def counting_load(oid, *args):
            loads.append(oid)
            return original(oid, *args)
        other._storage.load = counting_load
        claimed = [fresh.claim(now=t0 + SECOND) for _ in range(3)]
        assert [j._p_oid for j in claimed] == [j._p_oid for j in free]
        assert fresh.claim(now=t0 + SECOND) is None
        assert 0 < len(loads) < 40, len(loads)
        assert len(fresh) == 5000
    finally:
        other.transaction_manager.abort()
        other.close()


# -- across processes ---------------------------------------------------------

def test_two_connections_never_exceed_the_rate_one_conflicts(db, conn, queue):
    queue.quotas.create('api', rate=(1, 60))
    put_many(queue, 2, 'api')
    transaction.commit()
    first, first_queue = other_connection(db)
    second, second_queue = other_connection(db)
    try:
        # different filters: they claim different jobs, and would both
        # commit if the quota's record did not make them conflict
        one = first_queue.claim(lambda job: job.args[0] == 0)
        two = second_queue.claim(lambda job: job.args[0] == 1)
        assert one is not None and two is not None
        first.transaction_manager.commit()
        with pytest.raises(ConflictError):
            second.transaction_manager.commit()
        second.transaction_manager.abort()
        # the retry sees the first start and waits for the window
        assert second_queue.claim(lambda job: job.args[0] == 1) is None
        assert len(second_queue.quotas['api'].recent_starts()) == 1
    finally:
        first.close()
        second.close()


def test_two_connections_never_exceed_the_size_one_conflicts(db, conn,
                                                             queue):
    queue.quotas.create('one', 1)
    put_many(queue, 2, 'one')
    transaction.commit()
    first, first_queue = other_connection(db)
    second, second_queue = other_connection(db)
    try:
        assert first_queue.claim(lambda job: job.args[0] == 0) is not None
        assert second_queue.claim(lambda job: job.args[0] == 1) is not None
        first.transaction_manager.commit()
        with pytest.raises(ConflictError):
            second.transaction_manager.commit()
        second.transaction_manager.abort()
        assert second_queue.claim() is None
        assert len(second_queue.quotas['one']) == 1
    finally:
        first.close()
        second.close()


def test_racing_claimers_start_no_more_than_the_rate(file_db):
    """Two connections claim in turn-interleaved transactions, retrying on
    conflict, as two dispatchers would: the window never holds more."""
    setup, setup_queue = other_connection(file_db)
    setup_queue.quotas.create('api', rate=(3, 10))
    put_many(setup_queue, 20, 'api')
    setup.transaction_manager.commit()
    setup.close()
    t0 = now()
    sides = [other_connection(file_db) for _ in range(2)]
    started, conflicts = [], 0
    try:
        for step in range(40):
            when = t0 + step * 0.5 * SECOND
            claims = []
            for conn, side_queue in sides:
                side_queue._p_jar.sync()
                job = side_queue.claim(now=when)
                claims.append((conn, job))
            for conn, job in claims:
                try:
                    conn.transaction_manager.commit()
                except ConflictError:
                    conn.transaction_manager.abort()
                    conflicts += 1
                    continue
                if job is not None:
                    started.append(when)
    finally:
        for conn, _ in sides:
            conn.transaction_manager.abort()
            conn.close()
    assert conflicts > 0
    assert len(started) >= 6  # the rate was used, not just refused
    for index, when in enumerate(started):
        in_window = [t for t in started[:index + 1]
                     if when - t < 10 * SECOND]
        assert len(in_window) <= 3, (index, started)


# -- with a running dispatcher ----------------------------------------------

def test_a_dispatcher_starts_held_jobs_when_the_window_reopens(tmp_path):
    """The dispatcher polls every 5 s, but wakes when the window reopens
    (``Queue.next_due`` includes it): the third job starts ~1 s after the
    first, not at the next poll."""
    import ZODB

    import pyramid_zcasync
    from pyramid_zcasync import dispatcher as dispatcher_module
    from pyramid_zcasync.testing import (get_poll, tear_down_dispatcher,
                                         wait_for_result)
    db = ZODB.DB(str(tmp_path / 'Data.fs'))
    pyramid_zcasync.install_queues(db)
    conn = db.open()
    slow_poller = None
    try:
        queue = IQueue(conn.root())
        queue.quotas.create('api', rate=(2, 1))
        transaction.commit()
        slow_poller = dispatcher_module.start(
            db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=5,
            install_signal_handlers=False)
        get_poll(slow_poller, 0)
        jobs = []
        for i in range(3):
            job = Job(operator.mul, i, 7)
            job.quota_names = ('api',)
            jobs.append(queue.put(job))
        transaction.commit()
        assert [wait_for_result(job, seconds=4) for job in jobs] == [
            0, 7, 14]
        # active_start is stamped a little after the claim (the start
        # the rate counts): the lower bound allows for that
        starts = sorted(job.active_start for job in jobs)
        gap = starts[2] - starts[0]
        assert 0.8 * SECOND <= gap < 2.5 * SECOND, gap
    finally:
        if slow_poller is not None:
            tear_down_dispatcher(slow_poller)
        transaction.abort()
        conn.close()
        db.close()
