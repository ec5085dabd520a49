"""Group commit: short jobs run back to back in one transaction."""
import operator

import BTrees.OOBTree
import pytest
import transaction

import jobs
from pyramid_zcasync import local
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.failure import Failure
from pyramid_zcasync import group as group_module
from pyramid_zcasync.group import GroupRunner
from pyramid_zcasync.interfaces import COMPLETED, IQueue
from pyramid_zcasync.retry import NeverRetry
from pyramid_zcasync.runner import Runner

UUID = 'group-test'


def annotate_live(value):
    local.set_live_annotation('note', value)
    return value


def write_shared(tree, key):
    tree[key] = tree.get(key, 0) + 1
    return key


@pytest.fixture
def setup(db):
    connection = db.open()
    queue = IQueue(connection.root())
    registration = queue.dispatchers.register(UUID)
    registration.add(Agent('main', 100))
    registration.activate()
    transaction.commit()
    yield db, connection, queue, registration['main']
    transaction.abort()
    connection.close()


def claim_all(queue, agent, *calls):
    put = [queue.put(*call) if not hasattr(call, 'status') else queue.put(call)
           for call in calls]
    transaction.commit()
    for _ in put:
        assert agent.claimJob(limit=100) is not None
    transaction.commit()
    return put


def sync(connection):
    connection.transaction_manager.begin()


def test_a_group_commits_once_and_releases_every_job(setup, monkeypatch):
    monkeypatch.setattr(group_module, 'GROUP_WINDOW', 60.0)  # a slow machine
    db, connection, queue, agent = setup
    put = claim_all(queue, agent, *[(operator.mul, n, 2) for n in range(10)])
    before = db.lastTransaction()
    done, alone, rest, conflicts = GroupRunner(Runner(db, UUID)).run_group(
        [job._p_oid for job in put])
    assert (alone, rest, conflicts) == ([], [], 0)
    assert [outcome['result'] for _, outcome in done] == [
        repr(n * 2) for n in range(10)]
    sync(connection)
    assert [job.result for job in put] == [n * 2 for n in range(10)]
    assert all(job.status == COMPLETED and job.agent is None for job in put)
    assert len(agent) == 0 and len(agent.completed) == 10
    assert len(set(job._p_serial for job in put)) == 1  # one transaction
    assert put[0]._p_serial > before


def test_a_failing_job_is_rolled_back_alone(setup):
    db, connection, queue, agent = setup
    tree = connection.root()['tree'] = BTrees.OOBTree.OOBTree()
    transaction.commit()
    put = claim_all(queue, agent, (write_shared, tree, 'a'),
                    (jobs.divide, 1, 0), (write_shared, tree, 'b'))
    done, alone, rest, conflicts = GroupRunner(Runner(db, UUID)).run_group(
        [job._p_oid for job in put])
    assert alone == [] and len(done) == 3
    sync(connection)
    assert dict(tree) == {'a': 1, 'b': 1}
    assert isinstance(put[1].result, Failure)
    assert put[1].result.check(ZeroDivisionError)
    assert [job.status for job in put] == [COMPLETED] * 3


def test_jobs_the_group_cannot_take_run_alone(setup):
    db, connection, queue, agent = setup
    never = queue.put(operator.add, 1, 1)
    never.retry_policy_factory = NeverRetry
    with_callback = queue.put(operator.add, 2, 2)
    with_callback.addCallback(operator.neg)
    live = queue.put(annotate_live, 'hello')
    plain = queue.put(operator.add, 3, 3)
    transaction.commit()
    for _ in range(4):
        agent.claimJob(limit=100)
    transaction.commit()
    oids = [j._p_oid for j in (never, with_callback, live, plain)]
    outcomes = dict(GroupRunner(Runner(db, UUID)).run(oids))
    assert set(outcomes) == set(oids)
    sync(connection)
    assert never.result == 2 and with_callback.result == 4
    assert with_callback.callbacks[0].result == -4
    assert live.result == 'hello' and live.annotations['note'] == 'hello'
    assert plain.result == 6
    assert len(agent) == 0


def test_a_conflicting_group_reruns_each_job_alone(setup):
    db, connection, queue, agent = setup
    tree = connection.root()['tree'] = BTrees.OOBTree.OOBTree()
    transaction.commit()
    put = claim_all(queue, agent, (write_shared, tree, 'x'),
                    (write_shared, tree, 'y'))
    runner = Runner(db, UUID)
    group = GroupRunner(runner)
    real = group._run_one
    calls = []

    def conflict_once(job, txn):
        calls.append(job)
        ok = real(job, txn)
        if len(calls) == 2:  # another connection writes the same key
            other_manager = transaction.TransactionManager()
            other = db.open(transaction_manager=other_manager)
            other.root()['tree']['x'] = 100
            other_manager.commit()
            other.close()
        return ok
    group._run_one = conflict_once
    done, alone, rest, conflicts = group.run_group([job._p_oid for job in put])
    assert done == [] and rest == [] and conflicts == 1
    assert alone == [job._p_oid for job in put]
    for oid in alone:
        runner.run(oid)
    sync(connection)
    assert dict(tree) == {'x': 101, 'y': 1}  # each write committed once
    assert [job.status for job in put] == [COMPLETED, COMPLETED]


def test_jobs_no_longer_ours_are_not_run(setup):
    db, connection, queue, agent = setup
    (job,) = claim_all(queue, agent, (operator.mul, 2, 3))
    job.assignerUUID = 'someone-else'
    transaction.commit()
    done, alone, rest, conflicts = GroupRunner(Runner(db, UUID)).run_group(
        [job._p_oid])
    assert done == [] and alone == [job._p_oid]
    Runner(db, UUID).run(job._p_oid)
    sync(connection)
    assert job.status != COMPLETED  # the Runner refused too


def test_a_group_stops_taking_jobs_when_its_window_is_over(setup, monkeypatch):
    monkeypatch.setattr(group_module, 'GROUP_WINDOW', 0.0)
    db, connection, queue, agent = setup
    put = claim_all(queue, agent, *[(operator.mul, n, 3) for n in range(4)])
    oids = [job._p_oid for job in put]
    done, alone, rest, conflicts = GroupRunner(Runner(db, UUID)).run_group(oids)
    assert [oid for oid, _ in done] == oids[:1]  # one job, then the window
    assert alone == [] and rest == oids[1:]
    outcomes = GroupRunner(Runner(db, UUID)).run(rest)
    assert [oid for oid, _ in outcomes] == oids[1:]
    sync(connection)
    assert [job.result for job in put] == [0, 3, 6, 9]


def test_a_conflicting_group_counts_as_one_of_five_attempts(setup, tmp_path):
    db, connection, queue, agent = setup
    log = str(tmp_path / 'attempts.log')
    (job,) = claim_all(queue, agent, (jobs.raise_conflict, log, 'job'))
    GroupRunner(Runner(db, UUID)).run([job._p_oid])
    sync(connection)
    assert job.result.check('ZODB.POSException.ConflictError')
    assert len(jobs.notes(log)) == 5  # 1 in the group, 4 alone
