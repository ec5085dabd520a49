"""Executor.defers_claims: while an agent's jobs are short and some it
claimed still wait to start, polls leave its claims to the poll after a
batch ends (one commit for what came meanwhile, not one per put)."""
import threading
import time

import pytest

from pyramid_zcasync import executor as executor_module
from pyramid_zcasync.clock import default_clock
from pyramid_zcasync.executor import Executor
from pyramid_zcasync.history import JobHistory

KEY = ('', 'main')


class Host:
    """The little of a dispatcher an Executor uses here."""

    def __init__(self):
        self.db = type('DB', (), {'database_name': 'unnamed'})()
        self.UUID = 'd1'
        self.clock = default_clock
        self._bookkeeping = threading.Lock()
        self.jobs = JobHistory()

    def wake(self):
        pass


class Agent:
    name = 'main'
    size = 1
    queue = type('Queue', (), {'name': ''})()


@pytest.fixture
def executor(monkeypatch):
    """An Executor whose workers hold every batch until released."""
    release = threading.Event()
    ex = Executor(Host())
    monkeypatch.setattr(ex, '_run_batch',
                        lambda key, batch: release.wait(5))
    yield ex
    release.set()
    ex.stop(5)


def claim(ex, number):
    oid = number.to_bytes(8, 'big')
    ex.submit('', Agent(), oid, poll_key=1)
    return ex.job_id(oid)


def test_a_fast_agent_defers_while_a_claimed_job_waits(executor):
    executor._note_runtime(KEY, 0.001)
    assert not executor.defers_claims(Agent())   # nothing claimed yet
    claim(executor, 1)
    assert executor.defers_claims(Agent())


def test_no_deferral_once_every_claimed_job_started(executor):
    executor._note_runtime(KEY, 0.001)
    job_id = claim(executor, 1)
    executor._jobs.record(job_id, started=default_clock.utcnow())
    assert not executor.defers_claims(Agent())


def test_slow_jobs_never_defer(executor):
    executor._note_runtime(KEY, 1.0)
    claim(executor, 1)
    assert not executor.defers_claims(Agent())


def test_deferral_ends_after_claim_deferral(executor, monkeypatch):
    """A job held up longer (behind a slow one, or dropped by a stop)
    does not hold back claims for good."""
    executor._note_runtime(KEY, 0.001)
    claim(executor, 1)
    later = time.monotonic() + executor_module.CLAIM_DEFERRAL
    monkeypatch.setattr(executor_module.time, 'monotonic', lambda: later)
    assert not executor.defers_claims(Agent())


def test_no_deferral_while_idle_workers_outnumber_the_waiting_jobs(executor):
    """Jobs claimed now would start at once on a worker left idle."""
    executor._note_runtime(KEY, 0.001)
    claim(executor, 1)
    executor.follow_size(type('Agent', (Agent,), {'size': 3})())
    assert not executor.defers_claims(Agent())
