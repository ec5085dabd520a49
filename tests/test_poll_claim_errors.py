"""A storage error in the middle of a claim must not be committed.

Seen once in the RelStorage network-fault scenario (issue 19): a
connection reset while a poll's claim took a job ("Couldn't load state
for BTrees.Length.Length", then "agent 'main' failed to claim"); the
poll went on and committed, and the job stayed PENDING in no pending
tree: counted by ``len(queue)``, seen by no claim, never run.  Both
dispatchers then polled on with nothing to do.
"""
import pytest
import transaction
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError, POSKeyError

from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync import queue as queue_module
from pyramid_zcasync.interfaces import IQueue, PENDING
from pyramid_zcasync.monitor import spoils_poll

import jobs


@pytest.mark.parametrize('error, spoils', [
    (POSKeyError(b'\0' * 8), True),        # an object that cannot load
    (ConflictError(), True),               # read conflicts are storage's
    (ClientDisconnected(), True),          # ZEO's server away
    (ValueError('a filter failed'), False),  # a job's own, before a take
])
def test_which_claim_errors_fail_the_poll(error, spoils):
    assert spoils_poll(error) is spoils


class Unloadable:
    """A lane's counter whose state cannot be loaded (its server went
    away as the claim reached it)."""

    def change(self, delta):
        raise POSKeyError(b'\0' * 7 + b'\x3c')


def put_one(db):
    with db.transaction() as conn:
        return IQueue(conn.root()).put(jobs.append_to, [], 'x')._p_oid


def pending_in_a_tree(db, oid):
    with db.transaction() as conn:
        job = conn.get(oid)
        queue = IQueue(conn.root())
        return job.status, queue._tree_of(job) is not None, len(queue)


def test_a_storage_error_mid_claim_fails_the_poll(fs_db, monkeypatch):
    oid = put_one(fs_db)
    monkeypatch.setattr(queue_module.Queue, '_counter_of',
                        lambda self, tree, job: Unloadable())
    poller = dispatcher_module.Dispatcher(fs_db, 'u').poller
    try:
        with pytest.raises(POSKeyError):
            poller.poll_once()
        poller.abort()
    finally:
        poller.close()
        transaction.abort()
    # Nothing of the broken claim was stored: the job waits in its tree.
    assert pending_in_a_tree(fs_db, oid) == (PENDING, True, 1)


class Conflicting:
    """A lane's counter another transaction changed: a read conflict in
    the middle of a claim."""

    def change(self, delta):
        raise ConflictError('read conflict on the lane counter')


def test_a_conflict_mid_claim_is_a_conflicted_poll(fs_db, monkeypatch):
    oid = put_one(fs_db)
    with monkeypatch.context() as patch:
        patch.setattr(queue_module.Queue, '_counter_of',
                      lambda self, tree, job: Conflicting())
        poller = dispatcher_module.Dispatcher(fs_db, 'u').poller
        # Like a conflict at commit: nothing stored, poll again soon.
        assert poller.poll_once() is None
        assert poller.budget.cap is not None
    try:
        assert pending_in_a_tree(fs_db, oid) == (PENDING, True, 1)
        # The next poll claims it.
        outcome = poller.poll_once()
        assert [claim_oid for _, _, claim_oid in outcome.claimed] == [oid]
    finally:
        poller.close()
        transaction.abort()
