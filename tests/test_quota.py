"""Quotas: at most ``size`` jobs naming a quota run at once."""
import operator

import pytest
import transaction

from pyramid_zcasync import Job
from pyramid_zcasync.interfaces import ASSIGNED, PENDING
from pyramid_zcasync.quota import Quota


def quota_job(*names):
    job = Job(operator.add, 1, 1)
    job.quota_names = names
    return job


def test_create_and_look_up(queue):
    quota = queue.quotas.create('mail', size=2)
    assert isinstance(quota, Quota)
    assert queue.quotas['mail'] is quota
    assert 'mail' in queue.quotas and list(queue.quotas) == ['mail']
    assert quota.size == 2 and len(quota) == 0 and not quota.filled
    assert queue.quotas.create('single').size == 1
    transaction.commit()


def test_duplicate_quota_is_refused(queue):
    queue.quotas.create('mail')
    with pytest.raises(KeyError, match="'mail' already exists"):
        queue.quotas.create('mail', 5)


@pytest.mark.parametrize('size, error, text', [
    (-1, ValueError, "quota 'mail' size must be zero or more, got -1"),
    ('3', TypeError, "quota 'mail' size must be an integer, got '3'"),
    (2.5, TypeError, 'got 2.5'),
    (True, TypeError, 'got True'),
])
def test_bad_size_is_refused_naming_it(queue, size, error, text):
    with pytest.raises(error) as info:
        queue.quotas.create('mail', size)
    assert text in str(info.value)
    assert 'mail' not in queue.quotas


def test_bad_name_is_refused(queue):
    with pytest.raises(ValueError, match="got ''"):
        queue.quotas.create('', 1)


def test_unknown_quota_at_put_is_refused_naming_it(queue):
    queue.quotas.create('mail')
    with pytest.raises(ValueError) as info:
        queue.put(quota_job('mail', 'sms'))
    assert "['sms']" in str(info.value)
    assert "known: ['mail']" in str(info.value)
    assert len(queue) == 0


def test_unknown_quota_at_put_back_is_refused_naming_it(queue):
    with pytest.raises(ValueError, match="'sms'"):
        queue.putBack(quota_job('sms'))
    assert len(queue) == 0
    assert queue.claim() is None


def test_unknown_quota_lookup_names_it(queue):
    with pytest.raises(KeyError, match="unknown quota 'nope'; known: none"):
        queue.quotas['nope']


def test_claims_respect_the_quota_size_and_skip_blocked_jobs(queue):
    queue.quotas.create('mail', size=2)
    mails = [queue.put(quota_job('mail')) for _ in range(3)]
    free = queue.put(Job(operator.add, 0, 0))
    assert queue.claim() is mails[0]
    assert queue.claim() is mails[1]
    assert queue.quotas['mail'].filled
    assert list(queue.quotas['mail']) == mails[:2]
    assert queue.claim() is free  # the third mail waits; others pass it
    assert queue.claim() is None
    assert mails[2].status == PENDING
    # the first mail ends: its quota place frees up
    mails[0]()
    assert len(queue.quotas['mail']) == 1
    assert queue.claim() is mails[2]
    assert mails[2].status == ASSIGNED
    transaction.commit()


def test_job_in_two_quotas_needs_room_in_both(queue):
    queue.quotas.create('a', 1)
    queue.quotas.create('b', 2)
    first = queue.put(quota_job('a'))
    both = queue.put(quota_job('a', 'b'))
    assert queue.claim() is first
    assert queue.claim() is None
    first()
    assert queue.claim() is both
    assert both in queue.quotas['a'] and both in queue.quotas['b']


def test_zero_size_quota_holds_jobs(queue):
    queue.quotas.create('paused', 0)
    queue.put(quota_job('paused'))
    assert queue.claim() is None
    queue.quotas['paused'].size = 1
    assert queue.claim() is not None


def test_remove_quota_only_when_idle(queue):
    queue.quotas.create('mail')
    job = queue.put(quota_job('mail'))
    queue.claim()
    with pytest.raises(ValueError, match="quota 'mail' still has 1 active"):
        queue.quotas.remove('mail')
    job()
    queue.quotas.remove('mail')
    assert 'mail' not in queue.quotas


def test_quota_is_shared_across_connections(db, conn, queue):
    queue.quotas.create('mail', 1)
    queue.put(quota_job('mail'))
    queue.put(quota_job('mail'))
    transaction.commit()
    assert queue.claim() is not None
    transaction.commit()
    manager = transaction.TransactionManager()
    other = db.open(transaction_manager=manager)
    try:
        from pyramid_zcasync.interfaces import IQueue
        assert IQueue(other.root()).claim() is None
    finally:
        manager.abort()
        other.close()


def test_removed_quota_no_longer_blocks_its_pending_jobs(queue):
    queue.quotas.create('mail', 0)
    job = queue.put(quota_job('mail'))
    assert queue.claim() is None
    queue.quotas.remove('mail')
    assert queue.claim() is job
    # and it can still be recovered (requeued) after its quota went away
    queue.requeue(job)
    assert job.status == PENDING
    assert queue.claim() is job
