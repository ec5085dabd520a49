"""Concurrent puts of one process take turns in a stripe: a transaction
starting to put avoids the stripes of the others still putting, and waits
a little for one when all are taken (keys.local_stripe)."""
import operator
import threading
import time

import transaction

from pyramid_zcasync import keys
from pyramid_zcasync.interfaces import IQueue


def _put_in_thread(db, stripe=None, commit=False):
    """Put one job from a new thread (drawing ``stripe`` first if given);
    returns the job's stripe and the thread's transaction manager."""
    found = {}

    def put():
        if stripe is not None:
            keys._local.stripe = stripe
        manager = transaction.TransactionManager()
        conn = db.open(transaction_manager=manager)
        job = IQueue(conn.root()).put(operator.add, 1, 2)
        found['stripe'] = keys.stripe_of(job._key)
        if commit:
            manager.commit()
        else:
            manager.abort()
        conn.close()
    thread = threading.Thread(target=put)
    thread.start()
    thread.join()
    return found['stripe']


def test_a_put_avoids_the_stripe_of_an_open_transaction(mapping_db):
    conn = mapping_db.open()
    try:
        mine = IQueue(conn.root()).put(operator.add, 0, 0)
        taken = keys.stripe_of(mine._key)
        assert _put_in_thread(mapping_db, stripe=taken) != taken
        transaction.abort()  # the stripe is free again
        assert _put_in_thread(mapping_db, stripe=taken) == taken
    finally:
        transaction.abort()
        conn.close()


def test_a_committed_put_frees_its_stripe(mapping_db):
    conn = mapping_db.open()
    try:
        mine = IQueue(conn.root()).put(operator.add, 0, 0)
        taken = keys.stripe_of(mine._key)
        transaction.commit()
        assert _put_in_thread(mapping_db, stripe=taken, commit=True) == taken
    finally:
        conn.close()


def _all_stripes_taken():
    """Fake open transactions of other threads in every stripe."""
    fakes = [keys._Put(stripe, -1) for stripe in range(keys.STRIPES)]
    with keys._freed:
        for number, fake in enumerate(fakes):
            keys._puts[-1 - number] = fake
    return fakes


def _forget(fakes):
    with keys._freed:
        for number in range(len(fakes)):
            keys._puts.pop(-1 - number, None)


def test_with_every_stripe_taken_a_put_waits_then_shares(monkeypatch):
    monkeypatch.setattr(keys, 'STRIPE_WAIT', 0.05)
    fakes = _all_stripes_taken()
    try:
        started = time.monotonic()
        stripe = keys.local_stripe()
        assert time.monotonic() - started >= 0.04
        assert stripe == keys._local.stripe  # its own, shared
    finally:
        _forget(fakes)


def test_a_stripe_freed_meanwhile_ends_the_wait(monkeypatch):
    monkeypatch.setattr(keys, 'STRIPE_WAIT', 10.0)
    fakes = _all_stripes_taken()
    got = []
    try:
        waiter = threading.Thread(target=lambda: got.append(
            keys.local_stripe()))
        started = time.monotonic()
        waiter.start()
        time.sleep(0.05)
        keys._aborted(fakes[3])  # its transaction ends
        waiter.join(5)
        assert got == [3]
        assert time.monotonic() - started < 5
    finally:
        _forget(fakes)
