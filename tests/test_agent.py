"""Agents: a dispatcher's job slots in a queue, and their history."""
import datetime
import operator
import time

import pytest
import transaction

from pyramid_zcasync.agent import TRIM_SLACK, Agent, CompletedHistory
from pyramid_zcasync.interfaces import ASSIGNED, COMPLETED, PENDING, IQueue

UTC = datetime.timezone.utc


def only_strings(job):
    return isinstance(job.args[0], str)


def newest_first(agent, now=None):
    """A chooser: the most recently queued job, claimed the public way."""
    jobs = list(agent.queue)
    if not jobs:
        return None
    return agent.queue.claim(lambda job: job is jobs[-1], now=now)


@pytest.fixture
def registration(queue):
    registration = queue.dispatchers.register('u1')
    registration.activate()
    return registration


def test_agent_claims_for_its_dispatcher(queue, registration):
    agent = registration.add(Agent('main', 3))
    assert agent.queue is queue
    assert agent.UUID == 'u1'
    assert agent.parent is registration and registration['main'] is agent
    job = queue.put(operator.add, 1, 2)
    assert agent.claimJob() is job
    assert job.status == ASSIGNED
    assert job.assignerUUID == 'u1'
    assert job.agent is agent
    assert list(agent) == [job] and job in agent and len(agent) == 1
    transaction.commit()


def test_agent_size_limits_claims(queue, registration):
    agent = registration.add(Agent('main', 2))
    jobs = [queue.put(operator.add, i, 0) for i in range(3)]
    assert agent.claimJob() is jobs[0]
    assert agent.claimJob() is jobs[1]
    assert agent.available == 0
    assert agent.claimJob() is None
    assert jobs[2].status == PENDING
    jobs[0]()  # a job ending frees its slot
    assert agent.available == 1
    assert agent.claimJob() is jobs[2]


def test_agent_filter_and_chooser(queue, registration):
    strings = registration.add(Agent('strings', 5, filter=only_strings))
    newest = registration.add(Agent('newest', 5, chooser=newest_first))
    number = queue.put(operator.add, 1, 1)
    text = queue.put(operator.add, 'a', 'b')
    last = queue.put(operator.add, 2, 2)
    assert strings.claimJob() is text
    assert strings.claimJob() is None
    assert newest.claimJob() is last
    assert last.agent is newest and last.assignerUUID == 'u1'
    assert list(queue) == [number]
    transaction.commit()  # filters and choosers are stored


def test_duplicate_agent_name_is_refused(registration):
    registration.add(Agent('main'))
    with pytest.raises(KeyError, match="already has an agent 'main'"):
        registration.add(Agent('main'))


def test_agent_with_jobs_cannot_be_removed(queue, registration):
    agent = registration.add(Agent('main'))
    queue.put(operator.add, 1, 1)
    job = agent.claimJob()
    with pytest.raises(ValueError, match="agent 'main' still has 1 jobs"):
        del registration['main']
    job()
    del registration['main']
    assert 'main' not in registration


@pytest.mark.parametrize('size, error', [(-1, ValueError), ('3', TypeError)])
def test_bad_agent_size_is_refused_naming_it(size, error):
    with pytest.raises(error, match="agent 'main' size.*%r" % (size,)):
        Agent('main', size)


def test_completed_jobs_enter_the_history(queue, registration):
    agent = registration.add(Agent('main', 3))
    jobs = [queue.put(operator.add, i, 0) for i in range(3)]
    for _ in jobs:
        agent.claimJob()()
    assert len(agent) == 0
    assert len(agent.completed) == 3
    assert list(agent.completed) == jobs[::-1]  # newest first
    assert agent.completed.first() is jobs[-1]
    assert all(job.status == COMPLETED for job in agent.completed)
    transaction.commit()


def test_history_is_bounded_by_count(queue, registration):
    agent = registration.add(Agent('main', 1))
    agent.completed.max_size = 3
    jobs = []
    for i in range(3 + TRIM_SLACK):
        jobs.append(queue.put(operator.add, i, 0))
        agent.claimJob()()
    # trimmed in batches: a little over the limit is tolerated ...
    assert len(agent.completed) == 3 + TRIM_SLACK
    jobs.append(queue.put(operator.add, 'one more', 0))
    agent.claimJob()()
    # ... and past it, back to the newest max_size
    assert len(agent.completed) == 3
    assert list(agent.completed) == jobs[:-4:-1]


def test_history_is_bounded_by_age(queue, registration):
    history = CompletedHistory(max_age=datetime.timedelta(days=7))
    start = datetime.datetime(2030, 1, 1, tzinfo=UTC)

    def complete(value, ended):
        job = queue.put(operator.add, value, 0)
        queue.claim()
        job()
        job.active_end = ended
        history.add(job, now=ended)
        return job
    old = complete(1, start)
    new = complete(2, start + datetime.timedelta(days=6))
    assert list(history) == [new, old]
    assert list(history.since(start + datetime.timedelta(days=1))) == [new]
    # 7 days and a bit later, the next completion trims the old one
    newest = complete(3, start + datetime.timedelta(days=7, hours=2))
    assert list(history) == [newest, new]
    history.trim(start + datetime.timedelta(days=14))
    assert list(history) == [newest]
    assert len(history) == 1


def test_history_of_empty_agent(registration):
    agent = registration.add(Agent('main'))
    assert agent.completed.first() is None
    assert list(agent.completed) == []


def test_claim_and_completion_in_two_connections_both_commit(file_db):
    """A dispatcher's poll claims while a worker commits a result: both
    change the agent's active jobs, and neither may conflict."""
    from pyramid_zcasync.interfaces import IQueue

    def connect():
        manager = transaction.TransactionManager()
        return manager, file_db.open(transaction_manager=manager)
    manager, setup = connect()
    queue = IQueue(setup.root())
    registration = queue.dispatchers.register('u1')
    registration.add(Agent('main', 3))
    registration.activate()
    first = queue.put(operator.add, 1, 1)
    registration['main'].claimJob()
    queue.put(operator.add, 2, 2)
    queue.put(operator.add, 3, 3)
    manager.commit()
    setup.close()

    worker_tm, worker = connect()
    poll_tm, poll = connect()
    try:
        job = worker.get(first._p_oid)
        job()  # the worker's transaction: result, slot freed
        claimed = IQueue(poll.root()).dispatchers['u1']['main'].claimJob()
        assert claimed is not None
        worker_tm.commit()
        poll_tm.commit()
    finally:
        worker.close()
        poll.close()

    check_tm, check = connect()
    try:
        agent = IQueue(check.root()).dispatchers['u1']['main']
        assert [j.args[0] for j in agent] == [2]
        assert [j.args[0] for j in agent.completed] == [1]
        assert len(IQueue(check.root())) == 1
    finally:
        check.close()


def test_two_jobs_of_an_agent_with_a_full_history_finish_together(file_db):
    """Both results commit: finishing does not make them both delete the
    same oldest history entry (one would conflict and run again)."""
    from pyramid_zcasync.interfaces import IQueue
    manager = transaction.TransactionManager()
    setup = file_db.open(transaction_manager=manager)
    queue = IQueue(setup.root())
    registration = queue.dispatchers.register('u1')
    agent = registration.add(Agent('main', 3))
    registration.activate()
    agent.completed.max_size = 20
    for i in range(20 + TRIM_SLACK // 2):
        queue.put(operator.add, i, 0)
        agent.claimJob()()
    first = queue.put(operator.add, 'first', '')
    second = queue.put(operator.add, 'second', '')
    agent.claimJob()
    agent.claimJob()
    manager.commit()
    setup.close()

    managers = [transaction.TransactionManager() for _ in range(2)]
    conns = [file_db.open(transaction_manager=m) for m in managers]
    try:
        conns[0].get(first._p_oid)()
        conns[1].get(second._p_oid)()
        for m in managers:
            m.commit()
    finally:
        for c in conns:
            c.close()
    check = file_db.open(transaction_manager=manager)
    try:
        agent = IQueue(check.root()).dispatchers['u1']['main']
        assert [j.args[0] for j in list(agent.completed)[:2]] == [
            'second', 'first']
        assert len(agent) == 0
    finally:
        check.close()


def test_a_deactivated_registration_claims_nothing(queue, registration,
                                                   caplog):
    agent = registration.add(Agent('main', 3))
    job = queue.put(operator.add, 1, 2)
    registration.deactivate()
    with caplog.at_level('INFO', logger='pyramid_zcasync.trace'):
        assert agent.claimJob() is None
    assert job.status == PENDING and list(queue) == [job]
    assert 'deactivated' in caplog.text
    registration.activate()
    assert agent.claimJob() is job


def test_a_dead_registration_claims_nothing(db, caplog):
    """Dead as its siblings judge it: silent longer than its death
    interval, in database time."""
    connection = db.open()
    queue = IQueue(connection.root())
    registration = queue.dispatchers.register(
        'u1', ping_death_interval=datetime.timedelta(seconds=0.05))
    agent = registration.add(Agent('main', 3))
    registration.activate()
    transaction.commit()
    time.sleep(0.1)
    job = queue.put(operator.add, 1, 2)
    transaction.commit()  # the database's time moves on; no ping came
    assert registration.dead
    with caplog.at_level('INFO', logger='pyramid_zcasync.trace'):
        assert agent.claimJob() is None
    assert job.status == PENDING
    assert 'dead' in caplog.text
    registration.ping()
    transaction.commit()
    assert agent.claimJob() is job
    transaction.commit()
    connection.close()


def oldest_pending(agent):
    """A zc.async chooser: it takes the agent alone."""
    return agent.queue.claim()


def test_a_zc_async_chooser_takes_the_agent_alone(queue, registration):
    agent = registration.add(Agent('zc', 2, chooser=oldest_pending))
    first = queue.put(operator.add, 1, 1)
    queue.put(operator.add, 2, 2)
    assert agent.claimJob() is first
    assert first.agent is agent and first.assignerUUID == 'u1'
    transaction.commit()


def wants_two_things(agent, queue):
    return None


@pytest.mark.parametrize('bad', [wants_two_things, lambda: None, 42])
def test_a_chooser_of_another_signature_is_refused_when_assigned(bad):
    with pytest.raises(TypeError, match=r'chooser\(agent\)'):
        Agent('main', 3, chooser=bad)
    agent = Agent('main', 3)
    with pytest.raises(TypeError, match=r'chooser\(agent\)'):
        agent.chooser = bad
    assert agent.chooser is None


def test_chooser_and_filter_are_exclusive():
    with pytest.raises(ValueError, match='both chooser and filter'):
        Agent('main', 3, chooser=oldest_pending, filter=only_strings)
    chosen = Agent('chosen', 3, chooser=oldest_pending)
    with pytest.raises(ValueError, match='both chooser and filter'):
        chosen.filter = only_strings
    filtered = Agent('filtered', 3, filter=only_strings)
    with pytest.raises(ValueError, match='both chooser and filter'):
        filtered.chooser = oldest_pending
    filtered.filter = None
    filtered.chooser = oldest_pending  # one at a time is fine
    assert (filtered.chooser, filtered.filter) == (oldest_pending, None)


def test_an_agent_stored_before_the_checks_keeps_its_chooser_and_filter():
    state = Agent('old', 3).__getstate__()
    state['chooser'] = state.pop('_chooser', None) or newest_first
    state['filter'] = state.pop('_filter', None)
    old = Agent.__new__(Agent)
    old.__setstate__(state)
    assert (old.chooser, old.filter) == (newest_first, None)
    assert old._chooser_takes_now  # ours took now=
