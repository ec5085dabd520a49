"""A group's lease on the bookkeeping lock (lease.py): held for the
block, let go by the watcher when the group's current job stalls, kept
once the group begins its commit; one watcher thread for all leases."""
import threading

import pytest

from pyramid_zcasync.lease import Leases
from pyramid_zcasync.testing import wait_until


class Job:
    """``running_for`` of a group whose current job the test times."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
def leases():
    made = Leases(threading.Lock(), stall=0.02)
    yield made
    made.close()


def watchers():
    """Watcher threads alive (other tests' may still be ending: compare
    with at most, not exactly)."""
    return [t for t in threading.enumerate() if t.name == 'zcasync-lease']


def test_the_lock_is_held_for_the_block_and_free_after(leases):
    with leases.lease(Job()):
        assert leases.lock.locked()
        assert not leases.lock.acquire(blocking=False)
    assert not leases.lock.locked()


def test_a_stalled_job_lets_the_lock_go_while_the_group_still_runs(leases):
    job = Job()
    with leases.lease(job) as lease:
        job.seconds = 1.0  # past the stall
        wait_until(lambda: not leases.lock.locked(), 5,
                   'the watcher to let the lock go')
        assert not lease.keep()  # too late: the group commits alone
        # Another thread (a poll) can take the lock meanwhile.
        assert leases.lock.acquire(timeout=1)
        leases.lock.release()
    # The block's end released nothing more (a second release would
    # raise, or free a lock someone else holds).
    assert not leases.lock.locked()


def test_a_kept_lease_holds_the_lock_to_the_end_even_if_slow(leases):
    job = Job()
    with leases.lease(job) as lease:
        assert lease.keep()
        job.seconds = 1.0
        for _ in range(5):  # several stall windows
            assert not leases.lock.acquire(timeout=0.02)
        assert lease.keep()
    assert not leases.lock.locked()


def test_a_job_within_the_window_keeps_its_lease(leases):
    job = Job()
    job.seconds = 0.001
    with leases.lease(job) as lease:
        assert not leases.lock.acquire(timeout=0.1)
        assert lease.keep()


def test_leases_of_two_workers_take_turns(leases):
    order = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first():
        with leases.lease(Job()) as lease:
            order.append('first in')
            first_in.set()
            release_first.wait(5)
            assert lease.keep()
            order.append('first out')

    def second():
        first_in.wait(5)
        with leases.lease(Job()):
            order.append('second in')

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_in.wait(5)
    release_first.set()
    for thread in threads:
        thread.join(5)
    assert order == ['first in', 'first out', 'second in']


def test_one_watcher_serves_every_lease_and_ends_when_closed():
    leases = Leases(threading.Lock(), stall=0.02)
    before = len(watchers())
    others = {thread.ident for thread in watchers()}
    seen = set()
    for _ in range(20):
        with leases.lease(Job()) as lease:
            lease.keep()
            seen.update(thread.ident for thread in watchers())
    assert len(seen - others) == 1  # not a thread per lease
    leases.close()
    wait_until(lambda: len(watchers()) <= before, 5,
               'the watcher to end once closed')
    # A lease after close still works, stalls included.
    job = Job()
    with leases.lease(job) as lease:
        job.seconds = 1.0
        wait_until(lambda: not leases.lock.locked(), 5,
                   'the lock to be let go after close')
        assert not lease.keep()
    wait_until(lambda: len(watchers()) <= before, 5,
               'the watcher to end again')
