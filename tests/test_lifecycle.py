"""lifecycle: the transition table, and freeing a slot and quotas once."""
import operator

import BTrees.Length
import pytest
import transaction
import ZODB
import ZODB.FileStorage

import pyramid_zcasync
from pyramid_zcasync import lifecycle
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.interfaces import (ACTIVE, ASSIGNED, CALLBACKS,
                                        COMPLETED, NEW, PENDING, STATUSES,
                                        IQueue)
from pyramid_zcasync.job import BadStatusError, Job
from pyramid_zcasync.quota import floor_tree

LEGAL = sorted((before, after) for before, afters
               in lifecycle.TRANSITIONS.items() for after in afters)
ILLEGAL = [(NEW, ASSIGNED), (PENDING, ACTIVE), (CALLBACKS, NEW),
           (COMPLETED, ACTIVE), (COMPLETED, PENDING), (ACTIVE, ASSIGNED)]


def test_every_status_has_a_row_and_the_table_names_known_statuses():
    assert set(lifecycle.TRANSITIONS) == set(STATUSES)
    for afters in lifecycle.TRANSITIONS.values():
        assert afters <= set(STATUSES)


@pytest.mark.parametrize('before, after', LEGAL)
def test_each_legal_transition_is_made(before, after):
    job = Job(operator.add, 1, 1)
    job._status = before
    lifecycle._move(job, after)
    assert job.status == after


@pytest.mark.parametrize('before, after', ILLEGAL)
def test_illegal_transitions_are_refused_naming_job_and_statuses(
        before, after):
    job = Job(operator.add, 1, 1)
    job._status = before
    with pytest.raises(lifecycle.IllegalTransition) as raised:
        lifecycle._move(job, after)
    message = str(raised.value)
    assert 'add' in message and before in message and after in message
    assert isinstance(raised.value, BadStatusError)
    assert job.status == before


def test_a_job_walks_its_path_through_the_functions(queue):
    job = Job(operator.add, 20, 22)
    lifecycle.put(queue, job)
    assert job.status == PENDING
    assert lifecycle.claim(queue) is job and job.status == ASSIGNED
    lifecycle.start(job)
    assert job.status == ACTIVE
    lifecycle.finish(job, job.invoke())
    assert (job.status, job.result) == (COMPLETED, 42)


def test_a_completed_job_cannot_start_again(queue):
    job = queue.put(operator.add, 1, 1)
    queue.claim()
    job()
    with pytest.raises(BadStatusError):
        lifecycle.start(job)


@pytest.fixture
def held(queue):
    """A claimed job of a size-1 quota, in an agent's slot."""
    queue.quotas.create('mail', 1)
    registration = queue.dispatchers.register('d1')
    registration.activate()
    agent = registration.add(Agent('main', 3))
    job = Job(operator.add, 1, 1)
    job.quota_names = ('mail',)
    queue.put(job)
    assert agent.claimJob() is job
    return queue, agent, job


def test_release_frees_slot_and_quotas_exactly_once(held):
    queue, agent, job = held
    quota = queue.quotas['mail']
    assert job in agent and job in quota and job.agent is agent
    lifecycle.start(job)
    lifecycle.finish(job, job.invoke())
    lifecycle.release(job)
    assert job not in agent and job not in quota and job.agent is None
    assert list(agent.completed) == [job]
    lifecycle.release(job)  # again: nothing more is freed or recorded
    lifecycle.release(job, agent)
    assert list(agent.completed) == [job] and len(agent) == 0
    assert len(quota) == 0


def test_release_finished_waits_for_the_result(held):
    queue, agent, job = held
    lifecycle.start(job)
    lifecycle.release_finished(job, 'd1')
    assert job in agent  # still running: kept
    lifecycle.finish(job, 2)
    lifecycle.release_finished(job, 'another dispatcher')
    assert job in agent  # not ours
    lifecycle.release_finished(job, 'd1')
    assert job not in agent and job not in queue.quotas['mail']


def test_a_requeued_job_holds_nothing(held):
    queue, agent, job = held
    lifecycle.start(job)
    lifecycle.requeue(job)
    assert job.status == PENDING and job in queue
    assert job not in agent and job not in queue.quotas['mail']
    assert job.assignerUUID is None and job.agent is None


def test_recovery_requeues_an_unstarted_job(held):
    queue, agent, job = held
    lifecycle.recover(job)
    assert job.status == PENDING and job not in agent


def test_cancel_asks_a_started_job_to_stop_and_ends_a_pending_one(queue):
    job = queue.put(operator.add, 1, 1)
    lifecycle.cancel(job, 'not wanted')
    assert job.status == COMPLETED and job not in queue
    assert 'not wanted' in job.result.message
    with pytest.raises(BadStatusError, match='it has completed already'):
        lifecycle.cancel(job)
    started = queue.put(operator.add, 1, 1)
    queue.claim()
    lifecycle.start(started)
    lifecycle.cancel(started, 'stop it')  # its dispatcher stops it
    assert started.status == ACTIVE
    assert started.cancel_requested == 'stop it'


def test_install_upgrades_a_database_of_the_old_layout_and_its_jobs_run(
        tmp_path):
    """A queue stored before lanes, stripes and striped deadlines (built
    here by hand) is upgraded by install_queues; its jobs then run."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    try:
        pyramid_zcasync.install_queues(db)
        conn = db.open()
        queue = IQueue(conn.root())
        jobs = [queue.put(operator.mul, i, 10) for i in range(3)]
        old_pending, old_length = floor_tree(), BTrees.Length.Length()
        for job in jobs:  # into the one tree of the old layout
            queue._take(job)
            old_pending[job._key] = job
            old_length.change(1)
        del queue._stripes, queue._deadline_stripes
        queue._pending, queue._length = old_pending, old_length
        queue._deadlines = floor_tree()
        transaction.commit()
        conn.close()

        pyramid_zcasync.install_queues(db)

        conn = db.open()
        queue = IQueue(conn.root())
        assert not set(queue.__dict__) & {'_pending', '_length',
                                           '_deadlines'}
        assert len(queue) == 3
        results = []
        while True:
            job = queue.claim()
            if job is None:
                break
            results.append(job())
        assert results == [0, 10, 20]
        transaction.commit()
        conn.close()
    finally:
        transaction.abort()
        db.close()
