"""A poll that waited out an outage (its loads blocked while the storage
server was away) decided at its start that no ping was due; by the time
it claims, its own registration has been silent longer than the death
interval, and claims refuse to take jobs for a dead registration.  It
pings then after all (seen once in ten runs of the chaos test that kills
the ZEO server: "claims nothing: the registration is dead")."""
import time

import transaction

from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import IQueue

import jobs

PING = 0.2
DEATH = 0.5


def test_a_poll_that_waited_past_a_ping_still_pings_and_claims(fs_db):
    dispatcher = dispatcher_module.Dispatcher(
        fs_db, 'u', ping_interval=PING, ping_death_interval=DEATH)
    poller = dispatcher.poller
    try:
        assert poller.poll_once() is not None  # registered, pinged
        with fs_db.transaction() as conn:
            oid = IQueue(conn.root()).put(jobs.append_to, [], 'x')._p_oid
        registration = poller.registration

        def waiting_registration(queue, activate=False):
            found = registration(queue, activate)
            time.sleep(DEATH + PING)  # the server was away meanwhile
            with fs_db.transaction() as conn:  # a sibling commits again
                conn.root()['tick'] = time.time()
            return found
        poller.registration = waiting_registration
        outcome = poller.poll_once()
        assert outcome is not None
        assert [claimed_oid for _, _, claimed_oid in outcome.claimed] == [
            oid]
    finally:
        poller.close()
        transaction.abort()
