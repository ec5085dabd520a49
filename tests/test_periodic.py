"""Periodic jobs: schedule arithmetic with an injected ``now``, missed-run
policies, idempotent declaration, a real dispatcher running a schedule
every second, two dispatcher processes over ZEO racing for the same
occurrences, and the ``config.add_periodic_job`` directive."""
import datetime
import logging
import sys
import time

import BTrees.OOBTree
import pytest
import transaction
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationConflictError, ConfigurationError
from ZODB.POSException import ConflictError

import periodic_jobs
import pyramid_zcasync
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync import periodic
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.interfaces import COMPLETED, IQueue, KEY
from pyramid_zcasync.periodic import (add_schedule, enqueue_due, next_due,
                                      remove_schedule, schedules)
from pyramid_zcasync.queue import Queue
from pyramid_zcasync.testing import tear_down_dispatcher, wait_until
from dbtools import read

UTC = datetime.timezone.utc


def at(hour, minute, second=0, micro=0, day=1):
    return datetime.datetime(2024, 1, day, hour, minute, second, micro,
                             tzinfo=UTC)


@pytest.fixture
def queue(mapping_db):
    connection = mapping_db.open()
    yield IQueue(connection.root())
    transaction.abort()
    connection.close()


# -- arithmetic, with now injected ----------------------------------------

def test_a_new_schedule_is_next_due_at_its_first_future_occurrence(queue):
    schedule = add_schedule(queue, 'five', periodic_jobs.tick,
                            cron='*/5 * * * *', now=at(0, 3, 20))
    assert schedule.next == at(0, 5)
    assert schedule.last is None and schedule.last_job is None
    assert next_due(queue) == at(0, 5)
    add_schedule(queue, 'hourly', periodic_jobs.tick, cron='0 * * * *',
                 now=at(0, 3, 20))
    assert next_due(queue) == at(0, 5)
    assert sorted(schedules(queue)) == ['five', 'hourly']


def test_due_schedules_put_one_job_each_and_move_on(queue):
    schedule = add_schedule(queue, 'five', periodic_jobs.tock, 1, 'a',
                            cron='*/5 * * * *', now=at(0, 3))
    assert enqueue_due(queue, at(0, 4, 59, 999999)) == []
    assert len(queue) == 0
    [job] = enqueue_due(queue, at(0, 5, 0, 1500))
    assert (job.callable, job.args) == (periodic_jobs.tock, [1, 'a'])
    assert job in queue
    assert periodic.occurrence(job) == at(0, 5)
    assert schedule.last == at(0, 5) and schedule.last_job is job
    assert schedule.next == at(0, 10)
    assert enqueue_due(queue, at(0, 5, 3)) == []  # taken: not twice
    [job] = enqueue_due(queue, at(0, 10))  # exactly on time counts
    assert periodic.occurrence(job) == at(0, 10)
    assert schedule.next == at(0, 15)
    assert periodic.occurrence(queue.put(periodic_jobs.tick)) is None


def test_seconds_field_is_the_sixth(queue):
    schedule = add_schedule(queue, 'second', periodic_jobs.tick,
                            cron='* * * * * *', now=at(0, 0, 0, 400000))
    assert schedule.next == at(0, 0, 1)
    assert len(enqueue_due(queue, at(0, 0, 1, 2000))) == 1
    assert schedule.next == at(0, 0, 2)
    add_schedule(queue, 'even', periodic_jobs.tick, cron='* * * * * */2',
                 now=at(0, 0, 0, 400000))
    assert schedules(queue)['even'].next == at(0, 0, 2)


def test_missed_once_runs_the_latest_missed_occurrence_once(queue):
    schedule = add_schedule(queue, 'five', periodic_jobs.tick,
                            cron='*/5 * * * *', now=at(0, 3))
    # Down from 00:04 to 03:07: 38 occurrences missed, one run.
    [job] = enqueue_due(queue, at(3, 7, 30))
    assert periodic.occurrence(job) == at(3, 5)
    assert schedule.last == at(3, 5)
    assert schedule.next == at(3, 10)
    assert enqueue_due(queue, at(3, 9)) == []
    assert len(queue) == 1


def test_missed_skip_skips_to_the_next_future_occurrence(queue):
    schedule = add_schedule(queue, 'daily', periodic_jobs.tick,
                            cron='0 0 * * *', missed='skip',
                            now=at(23, 0, day=1))
    assert schedule.next == at(0, 0, day=2)
    # Down over midnight, back at 00:30: the 00:00 run is skipped.
    assert enqueue_due(queue, at(0, 30, day=2)) == []
    assert schedule.next == at(0, 0, day=3)
    assert schedule.last is None and len(queue) == 0
    # On time, give or take the grace, it runs.
    [job] = enqueue_due(queue, at(0, 0, 45, day=3))
    assert periodic.occurrence(job) == at(0, 0, day=3)
    assert schedule.next == at(0, 0, day=4)


def test_skip_grace_can_be_set_per_schedule(queue):
    schedule = add_schedule(queue, 'five', periodic_jobs.tick,
                            cron='*/5 * * * *', missed='skip', now=at(0, 3))
    schedule.grace = datetime.timedelta(seconds=1)
    assert enqueue_due(queue, at(0, 5, 2)) == []
    assert len(enqueue_due(queue, at(0, 10, 0, 500000))) == 1


def test_time_zone_of_the_cron_expression(queue):
    july = datetime.datetime(2024, 7, 1, tzinfo=UTC)
    paris = add_schedule(queue, 'paris', periodic_jobs.tick, cron='0 9 * * *',
                         timezone='Europe/Paris', now=july)
    assert paris.next == datetime.datetime(2024, 7, 1, 7, tzinfo=UTC)
    utc = add_schedule(queue, 'utc', periodic_jobs.tick, cron='0 9 * * *',
                       now=july)
    assert utc.next == datetime.datetime(2024, 7, 1, 9, tzinfo=UTC)


def test_declaring_again_is_idempotent_and_writes_nothing(mapping_db):
    manager = transaction.TransactionManager()
    connection = mapping_db.open(transaction_manager=manager)
    queue = IQueue(connection.root())
    with manager:
        add_schedule(queue, 'five', periodic_jobs.tock, 1,
                     cron='*/5 * * * *', now=at(0, 3))
    schedule = schedules(queue)['five']
    serials = (schedule._p_serial, schedule.call._p_serial,
               schedules(queue)._p_serial)
    with manager:
        again = add_schedule(queue, 'five', periodic_jobs.tock, 1,
                             cron='*/5 * * * *', now=at(0, 4))
        assert not connection._registered_objects
    assert again is schedule and len(schedules(queue)) == 1
    assert (schedule._p_serial, schedule.call._p_serial,
            schedules(queue)._p_serial) == serials
    assert schedule.next == at(0, 5)
    # The policy or the arguments change; next does not.
    with manager:
        add_schedule(queue, 'five', periodic_jobs.tock, 2,
                     cron='*/5 * * * *', missed='skip', now=at(0, 4))
    assert (schedule.missed, schedule.args) == ('skip', (2,))
    assert schedule.next == at(0, 5)
    # A new cron expression recomputes next from now.
    with manager:
        add_schedule(queue, 'five', periodic_jobs.tock, 2, cron='0 * * * *',
                     missed='skip', now=at(0, 4))
    assert schedule.next == at(1, 0) and schedule.cron == '0 * * * *'
    assert len(schedules(queue)) == 1
    connection.close()


def test_remove_schedule(queue):
    add_schedule(queue, 'five', periodic_jobs.tick, cron='*/5 * * * *',
                 now=at(0, 3))
    removed = remove_schedule(queue, 'five')
    assert removed.name == 'five' and 'five' not in schedules(queue)
    assert next_due(queue) is None and enqueue_due(queue, at(1, 0)) == []
    with pytest.raises(KeyError, match="no periodic job 'five' in queue ''"):
        remove_schedule(queue, 'five')


@pytest.mark.parametrize('cron, message', [
    ('*/5 * * *', 'Exactly 5, 6 or 7 columns'),
    ('61 * * * *', 'out of range'),
    ('every five minutes', 'columns'),
    ('0 0 30 2 *', 'failed to find next date'),
])
def test_bad_cron_expression_is_a_clear_value_error(queue, cron, message):
    with pytest.raises(ValueError) as info:
        add_schedule(queue, 'bad', periodic_jobs.tick, cron=cron)
    text = str(info.value)
    assert "periodic job 'bad': bad cron expression %r" % cron in text
    assert message in text
    assert 'bad' not in schedules(queue)


@pytest.mark.parametrize('kwargs, message', [
    (dict(cron=5), 'must be a string'),
    (dict(cron='* * * * *', missed='all'), "missed='all'; expected one of"),
    (dict(cron='* * * * *', timezone='Mars/Olympus'),
     "unknown time zone 'Mars/Olympus'"),
])
def test_bad_declarations_name_the_bad_value(queue, kwargs, message):
    with pytest.raises(ValueError, match=message):
        add_schedule(queue, 'bad', periodic_jobs.tick, **kwargs)


def test_unstorable_callable_is_refused_when_declared(queue):
    with pytest.raises(ValueError, match='lambdas'):
        add_schedule(queue, 'bad', lambda: None, cron='* * * * *')


def test_a_failing_schedule_does_not_stop_the_others(queue, monkeypatch,
                                                     caplog):
    add_schedule(queue, 'bad', periodic_jobs.tock, 'boom', cron='*/5 * * * *',
                 now=at(0, 3))
    add_schedule(queue, 'good', periodic_jobs.tock, 'ok', cron='*/5 * * * *',
                 now=at(0, 3))
    real_put = Queue.put

    def put(self, func, *args, **kwargs):
        if args == ('boom',):
            real_put(self, periodic_jobs.tick)  # half done, rolled back
            raise RuntimeError('cannot put this one')
        return real_put(self, func, *args, **kwargs)
    monkeypatch.setattr(Queue, 'put', put)
    transaction.commit()
    with caplog.at_level(logging.ERROR, 'pyramid_zcasync.events'):
        [job] = enqueue_due(queue, at(0, 5, 1))
    assert job.args == ['ok'] and len(queue) == 1
    bad = schedules(queue)['bad']
    assert bad.error == 'RuntimeError: cannot put this one'
    assert bad.next == at(0, 10) and bad.last is None
    assert "periodic job 'bad' could not be enqueued" in caplog.text
    monkeypatch.setattr(Queue, 'put', real_put)
    enqueue_due(queue, at(0, 10, 1))
    assert bad.error is None and bad.last == at(0, 10)


def test_a_callable_that_no_longer_imports_is_an_error_not_a_run(
        mapping_db, tmp_path, monkeypatch):
    (tmp_path / 'gone_module.py').write_text('def f():\n    return 1\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_module
    manager = transaction.TransactionManager()
    connection = mapping_db.open(transaction_manager=manager)
    with manager:
        add_schedule(IQueue(connection.root()), 'gone', gone_module.f,
                     cron='*/5 * * * *', now=at(0, 3))
    connection.close()
    (tmp_path / 'gone_module.py').unlink()
    monkeypatch.delitem(sys.modules, 'gone_module')
    mapping_db.cacheMinimize()
    connection = mapping_db.open(transaction_manager=manager)
    queue = IQueue(connection.root())
    with manager:  # ZODB loads a Broken class for the missing function
        assert enqueue_due(queue, at(0, 5, 1)) == [] and len(queue) == 0
    schedule = schedules(queue)['gone']
    assert schedule.error == 'ImportError: cannot import gone_module.f'
    assert schedule.next == at(0, 10)
    connection.close()


def test_two_connections_enqueueing_at_once_conflict_and_one_wins(
        mapping_db):
    def open_queue():
        manager = transaction.TransactionManager()
        connection = mapping_db.open(transaction_manager=manager)
        return manager, connection, IQueue(connection.root())
    m1, c1, q1 = open_queue()
    with m1:
        add_schedule(q1, 'five', periodic_jobs.tick, cron='*/5 * * * *',
                     now=at(0, 3))
    m2, c2, q2 = open_queue()
    m1.begin()
    m2.begin()
    assert len(enqueue_due(q1, at(0, 5, 1))) == 1
    assert len(enqueue_due(q2, at(0, 5, 1))) == 1
    m1.commit()
    with pytest.raises(ConflictError):
        m2.commit()
    m2.abort()
    m2.begin()
    assert enqueue_due(q2, at(0, 5, 1)) == []  # the retried poll
    assert len(q2) == 1
    m2.abort()
    c1.close()
    c2.close()


# -- a real dispatcher ----------------------------------------------------

def test_dispatcher_runs_a_schedule_every_second(fs_db, tmp_path):
    # A 5 s poll: runs a second apart prove the dispatcher wakes for the
    # next occurrence instead of waiting for its poll.
    dispatcher = dispatcher_module.start(
        fs_db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=5,
        install_signal_handlers=False)
    try:
        manager = transaction.TransactionManager()
        connection = fs_db.open(transaction_manager=manager)
        with manager:
            root = connection.root()
            runs = root['runs'] = BTrees.OOBTree.OOBTree()
            add_schedule(IQueue(root), 'tick', periodic_jobs.record, runs,
                         cron='* * * * * *')
        started = time.monotonic()
        wait_until(lambda: read(fs_db, lambda r: len(r['runs'])) >= 3, 4.5,
                   'three runs')
        assert time.monotonic() - started < 4.5
        found = read(fs_db, lambda r: dict(r['runs']))
        assert set(found.values()) == {1}
        times = sorted(datetime.datetime.fromisoformat(k) for k in found)
        assert all(b - a == datetime.timedelta(seconds=1)
                   for a, b in zip(times, times[1:]))
        schedule = read(fs_db, lambda r: (lambda s: (s.last, s.last_job and
                                                     s.last_job.status))(
            schedules(IQueue(r))['tick']))
        assert schedule[0] >= times[-1]
        connection.close()
    finally:
        tear_down_dispatcher(dispatcher)


def test_two_dispatcher_processes_run_each_occurrence_once(
        tmp_path, zeo_server, workers):
    db = zeo_server.db()
    pyramid_zcasync.install_queues(db)
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    storage = 'zeo:%d' % zeo_server.port
    a = workers(storage, tmp_path / 'a.txt', (0.1, 0.5, 5))
    b = workers(storage, tmp_path / 'b.txt', (0.1, 0.5, 5))
    assert (a.first_line, b.first_line) == ('ready', 'ready')
    with manager:
        root = connection.root()
        runs = root['runs'] = BTrees.OOBTree.OOBTree()
        # Every second, and the two clocks agree to the millisecond: both
        # dispatchers find each occurrence due at nearly the same time.
        add_schedule(IQueue(root), 'tick', periodic_jobs.record, runs,
                     cron='* * * * * *')
    wait_until(lambda: read(db, lambda r: len(r['runs'])) >= 5, 10,
               'five occurrences')
    a.stop()
    b.stop()
    found = read(db, lambda r: dict(r['runs']))
    assert len(found) >= 5
    assert set(found.values()) == {1}, found
    queue_info = read(db, lambda r: (len(IQueue(r)), sorted(
        IQueue(r).dispatchers)))
    assert len(queue_info[1]) == 2
    connection.close()
    db.close()


# -- the Pyramid directive ------------------------------------------------

def make_app(tmp_path, declare, **extra):
    settings = {
        'zodbconn.uri': 'file://%s/Data.fs' % tmp_path if tmp_path
        else 'memory://',
        'zcasync.queues': "'' reports",
    }
    settings.update(extra)
    with Configurator(settings=settings) as config:
        config.include('pyramid_zcasync')
        config.include('pyramid_zcasync.periodic')
        declare(config)
    return config.make_wsgi_app()


def app_schedules(app):
    from pyramid_zcasync.config import queue_database
    db = queue_database(app.registry)
    return read(db, lambda root: {
        (queue_name, name): (s.cron, s.missed, s.next, s.callable, s.args,
                             s.declared)
        for queue_name, queue in root[KEY].items()
        for name, s in schedules(queue).items()})


def test_directive_records_schedules_at_app_start(tmp_path):
    def declare(config):
        config.add_periodic_job('periodic_jobs:tick', cron='*/5 * * * *')
        config.add_periodic_job(periodic_jobs.tock, 1, 2, cron='0 3 * * *',
                                name='nightly', queue='reports',
                                missed='skip')
    app = make_app(tmp_path, declare)
    try:
        found = app_schedules(app)
    finally:
        close_databases(app.registry)
    assert sorted(found) == [('', 'periodic_jobs.tick'),
                             ('reports', 'nightly')]
    cron, missed, next_, func, args, declared = found[('', 'periodic_jobs.tick')]
    assert (cron, missed, func, args, declared) == (
        '*/5 * * * *', 'once', periodic_jobs.tick, (), True)
    assert next_.minute % 5 == 0 and next_ > datetime.datetime.now(UTC)
    assert found[('reports', 'nightly')][:2] == ('0 3 * * *', 'skip')
    assert found[('reports', 'nightly')][4] == (1, 2)


def test_restarting_updates_and_prunes_declared_schedules(tmp_path):
    def first(config):
        config.add_periodic_job(periodic_jobs.tick, cron='*/5 * * * *',
                                name='tick')
        config.add_periodic_job(periodic_jobs.tock, cron='0 3 * * *',
                                name='gone-later')
    app = make_app(tmp_path, first)
    db = app.registry._zodb_databases['']
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    with manager:  # made through the API: start-up leaves it alone
        add_schedule(IQueue(connection.root()), 'by-hand',
                     periodic_jobs.tick, cron='0 * * * *')
    connection.close()
    before = app_schedules(app)
    close_databases(app.registry)

    app = make_app(tmp_path, first)  # same declarations: nothing changes
    assert app_schedules(app) == before
    close_databases(app.registry)

    def second(config):
        config.add_periodic_job(periodic_jobs.tick, cron='0 0 * * *',
                                name='tick')
    app = make_app(tmp_path, second)
    try:
        after = app_schedules(app)
    finally:
        close_databases(app.registry)
    assert sorted(after) == [('', 'by-hand'), ('', 'tick')]
    assert after[('', 'tick')][0] == '0 0 * * *'
    next_ = after[('', 'tick')][2]
    assert (next_.hour, next_.minute) == (0, 0)
    assert after[('', 'by-hand')][5] is False


def test_directive_refuses_bad_values_at_the_call():
    # In memory: an app that fails to configure leaves its databases open.
    def bad_cron(config):
        config.add_periodic_job(periodic_jobs.tick, cron='*/5 * * *')
    with pytest.raises(ValueError, match=r"periodic job 'periodic_jobs.tick'"
                       r": bad cron expression '\*/5 \* \* \*'"):
        make_app(None, bad_cron)

    def unknown_queue(config):
        config.add_periodic_job(periodic_jobs.tick, queue='nope')
    with pytest.raises(ConfigurationError, match="no queue 'nope'"):
        make_app(None, unknown_queue)

    def twice(config):
        config.add_periodic_job(periodic_jobs.tick, name='same')
        config.add_periodic_job(periodic_jobs.tock, name='same')
    with pytest.raises(ConfigurationConflictError):
        make_app(None, twice)


def test_dispatcher_of_the_app_runs_declared_jobs(tmp_path):
    def declare(config):
        config.add_periodic_job(periodic_jobs.tick, cron='* * * * * *',
                                name='tick')
    app = make_app(tmp_path, declare, **{
        'zcasync.dispatcher': 'true',
        'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
        'zcasync.poll_interval': '5'})
    try:
        db = app.registry._zodb_databases['']

        def last_status(root):
            job = schedules(IQueue(root))['tick'].last_job
            return job is not None and job.status == COMPLETED and job.result
        assert wait_until(lambda: read(db, last_status), 3,
                          'a declared job to run') == 'tick'
    finally:
        close_databases(app.registry)


# -- the dashboard --------------------------------------------------------

def test_dashboard_shows_next_and_last_run(queue):
    from pyramid_zcasync.views.sections import periodic_html
    queues = queue._p_jar.root()[KEY]
    assert 'No periodic jobs.' in periodic_html(queues, at(0, 0))
    add_schedule(queue, 'five <min>', periodic_jobs.tick, cron='*/5 * * * *',
                 now=at(0, 3))
    add_schedule(queue, 'paris', periodic_jobs.tick, cron='0 9 * * *',
                 timezone='Europe/Paris', now=at(0, 3))
    enqueue_due(queue, at(0, 5, 1))
    schedules(queue)['paris'].error = 'ImportError: no module <x>'
    page = periodic_html(queues, at(0, 6))
    assert 'Periodic jobs <span class="count">2</span>' in page
    assert 'five &lt;min&gt;' in page and '*/5 * * * *' in page
    assert 'Europe/Paris' in page and 'no module &lt;x&gt;' in page
    assert 'datetime="2024-01-01T00:10:00Z"' in page  # next run
    assert 'datetime="2024-01-01T00:05:00Z"' in page  # last run
    assert 'pending' in page  # the last job's status
