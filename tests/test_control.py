"""Queue control at run time: pause, resume, scale; in the model, in a
running dispatcher, across processes, from pzcasync, the dashboard and
/metrics."""
import json
import os
import re
import threading
import time

import pytest
import transaction
import webtest
import ZODB

import jobs
import pyramid_zcasync
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.interfaces import PENDING, IQueue
from pyramid_zcasync.pool import Pool
from pyramid_zcasync.queue import Queue
from pyramid_zcasync.testing import (get_poll, tear_down_dispatcher,
                                     wait_for_result, wait_until)
import test_dashboard_browser as browser_test
from test_dashboard import ADMIN, DASHBOARD, Model, made, token_of  # noqa
from test_dashboard_browser import browser, served  # noqa: F401
from test_scripts import make_site, one_error_line, output, run

HOLD_SECONDS = 30


def until(condition, what, seconds=20):
    return wait_until(condition, seconds, what)


# -- the model ------------------------------------------------------------

def test_a_queue_stored_before_pausing_loads_unpaused():
    queue = Queue()
    queue.__dict__.pop('paused', None)
    assert queue.paused is False
    queue.pause()
    assert queue.paused is True
    queue.resume()
    assert queue.paused is False


def test_a_paused_queue_is_not_claimed_from(queue):
    registration = queue.dispatchers.register('u')
    agent = registration.add(Agent('main', 2))
    registration.activate()
    job = queue.put(jobs.multiply, 2, 3)
    queue.pause()
    assert agent.claimJob() is None
    assert job.status == PENDING
    queue.resume()
    assert agent.claimJob() is job


def test_scale_checks_the_size_and_is_kept_per_agent(queue):
    dispatchers = queue.dispatchers
    assert dispatchers.size_of('main') is None
    dispatchers.scale('main', 5)
    assert dispatchers.size_of('main') == 5
    assert dispatchers.scaled() == {'main': 5}
    with pytest.raises(ValueError, match="agent 'main' size"):
        dispatchers.scale('main', -1)
    with pytest.raises(TypeError, match="'3'"):
        dispatchers.scale('main', '3')
    assert dispatchers.size_of('main') == 5


def test_a_pool_resized_up_and_down_between_tasks_counts_right():
    release = threading.Event()
    pool = Pool('t', 2, lambda batch: [release.wait(5) for _ in batch])
    try:
        pool.resize(0)
        pool.resize(3)
        assert pool.size == 3
        pool.resize(1)
        assert pool.size == 1
        until(lambda: len(pool._threads) == 1, 'two threads ended')
    finally:
        release.set()
        assert pool.stop(5)


# -- a running dispatcher -------------------------------------------------

def start(fs_db, tmp_path, **options):
    return dispatcher_module.start(
        fs_db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False, **options)


@pytest.fixture
def model(fs_db):
    connection = fs_db.open()
    yield IQueue(connection.root())
    transaction.abort()
    connection.close()


def hold(tmp_path, name):
    path = str(tmp_path / ('hold-' + name))
    open(path, 'w').close()
    return path


def started(log, name):
    return any(event == 'start' for event, _, _ in jobs.runs(log, name))


def put_held(queue, tmp_path, name):
    log = str(tmp_path / 'runs.log')
    return queue.put(jobs.record_run, log, name, hold(tmp_path, name),
                     HOLD_SECONDS)


def next_polls(dispatcher, count=2):
    """Wait until ``count`` polls after now committed."""
    first = dispatcher.monitor.polls.total
    until(lambda: dispatcher.monitor.polls.total >= first + count,
          '%d polls' % count)


def test_pause_lets_the_running_job_finish_and_holds_new_ones(
        fs_db, tmp_path, model):
    dispatcher = start(fs_db, tmp_path)
    try:
        log = str(tmp_path / 'runs.log')
        running = put_held(model, tmp_path, 'running')
        transaction.commit()
        until(lambda: started(log, 'running'), 'the job started')
        model.pause()
        transaction.commit()
        later = model.put(jobs.multiply, 6, 7)
        transaction.commit()
        os.remove(str(tmp_path / 'hold-running'))
        wait_for_result(running)
        next_polls(dispatcher, 3)
        transaction.begin()
        assert later.status == PENDING and later in model
        model.resume()
        transaction.commit()
        assert wait_for_result(later) == 42
    finally:
        tear_down_dispatcher(dispatcher)


def test_scale_up_runs_more_at_once_and_scale_down_fewer(
        fs_db, tmp_path, model):
    dispatcher = start(fs_db, tmp_path, agent_size=1)
    log = str(tmp_path / 'runs.log')
    try:
        held = [put_held(model, tmp_path, 'j%d' % i) for i in range(3)]
        transaction.commit()
        until(lambda: started(log, 'j0'), 'j0 started')
        next_polls(dispatcher)
        assert not started(log, 'j1') and not started(log, 'j2')
        model.dispatchers.scale('main', 3)
        transaction.commit()
        until(lambda: started(log, 'j1') and started(log, 'j2'),
              'j1 and j2 started')
        transaction.begin()
        registration = model.dispatchers[dispatcher.UUID]
        assert registration['main'].size == 3
        assert len(registration['main']) == 3  # all three at once
        model.dispatchers.scale('main', 1)
        transaction.commit()
        more = [put_held(model, tmp_path, name) for name in ('k0', 'k1')]
        transaction.commit()
        for name in ('j0', 'j1', 'j2', 'k0', 'k1'):
            if name == 'k0':
                until(lambda: started(log, 'k0'), 'k0 started')
                next_polls(dispatcher)
                assert not started(log, 'k1')  # one slot now
            if name == 'k1':
                until(lambda: started(log, 'k1'), 'k1 started')
            os.remove(str(tmp_path / ('hold-' + name)))
        for job in held + more:
            wait_for_result(job)
        pool = dispatcher.executor._pools[('', 'main')]
        assert pool.size == 1
    finally:
        tear_down_dispatcher(dispatcher)


def test_a_dispatcher_registering_later_takes_the_scaled_size(
        fs_db, tmp_path, model):
    model.dispatchers.scale('main', 7)
    transaction.commit()
    dispatcher = start(fs_db, tmp_path, agent_size=2)
    try:
        get_poll(dispatcher, 0)
        transaction.begin()
        assert model.dispatchers[dispatcher.UUID]['main'].size == 7
    finally:
        tear_down_dispatcher(dispatcher)


# -- two processes over ZEO -----------------------------------------------

def test_a_paused_queue_is_claimed_by_no_process(tmp_path, zeo_server,
                                                 workers):
    db = zeo_server.db()
    pyramid_zcasync.install_queues(db)
    connection = db.open()
    queue = IQueue(connection.root())
    try:
        for name in ('one', 'two'):
            worker = workers('zeo:%d' % zeo_server.port,
                             tmp_path / ('uuid-%s.txt' % name))
            assert worker.first_line == 'ready'
        until(lambda: (transaction.begin(), len(queue.dispatchers))[1] == 2,
              'both registered')
        queue.pause()
        transaction.commit()
        put = [queue.put(jobs.multiply, i, 2) for i in range(6)]
        transaction.commit()
        time.sleep(1.5)  # several polls of both (every 0.2 s)
        transaction.begin()
        assert [job.status for job in put] == [PENDING] * 6
        queue.resume()
        transaction.commit()
        assert [wait_for_result(job) for job in put] == \
            [i * 2 for i in range(6)]
    finally:
        transaction.abort()
        connection.close()
        db.close()


# -- pzcasync -------------------------------------------------------------

def test_pzcasync_pauses_resumes_and_scales(tmp_path):
    ini = make_site(tmp_path)
    db = ZODB.DB(str(tmp_path / 'var' / 'Data.fs'))
    pyramid_zcasync.install_queues(db)
    db.close()
    assert 'queue \'\' paused' in output(run(ini, 'pause', ''))
    status = json.loads(output(run(ini, 'status', '--json')))
    assert status['']['paused'] is True
    assert 'agent \'main\' of queue \'\' scaled to 4' in output(
        run(ini, 'scale', '', 'main', '4'))
    assert 'queue \'\' resumed' in output(run(ini, 'resume', ''))
    one_error_line(run(ini, 'scale', '', 'main', 'lots'), 2,
                   "bad agent size 'lots'")
    one_error_line(run(ini, 'pause', 'nope'), 1, "no queue 'nope'")
    one_error_line(run(ini, 'scale', '', 'nobody', '2'), 1,
                   "no agent 'nobody'")
    db = ZODB.DB(str(tmp_path / 'var' / 'Data.fs'))
    try:
        with db.transaction() as connection:
            queue = IQueue(connection.root())
            assert not queue.paused
            assert queue.dispatchers.scaled() == {'main': 4}
    finally:
        db.close()


# -- the dashboard and /metrics -------------------------------------------

def test_dashboard_buttons_pause_resume_and_scale(made):
    app = made()
    dispatcher = app.registry.zcasync_dispatcher
    get_poll(dispatcher, 0)
    client = webtest.TestApp(app)
    model = Model(app)
    try:
        page = client.get(DASHBOARD, headers=ADMIN)
        assert 'action="/_async/actions/pause"' in page.text
        assert 'name="size"' in page.text
        token = token_of(client)
        client.post('/_async/actions/pause', {'queue': ''}, headers=ADMIN,
                    status=400)  # no token
        done = client.post('/_async/actions/pause',
                           {'csrf_token': token, 'queue': ''},
                           headers=ADMIN, status=303)
        page = done.follow(headers=ADMIN)
        assert 'is paused' in page.text and 'actions/resume' in page.text
        assert model.queue.paused
        metrics = client.get('/_async/metrics', headers=ADMIN).text
        assert 'zcasync_queue_paused{queue=""} 1.0' in metrics
        client.post('/_async/actions/resume',
                    {'csrf_token': token, 'queue': ''}, headers=ADMIN,
                    status=303)
        assert not model.queue.paused
        client.post('/_async/actions/scale', {
            'csrf_token': token, 'queue': '', 'agent': 'main',
            'size': 'x'}, headers=ADMIN, status=400)
        client.post('/_async/actions/pause',
                    {'csrf_token': token, 'queue': 'nope'}, headers=ADMIN,
                    status=404)
        done = client.post('/_async/actions/scale', {
            'csrf_token': token, 'queue': '', 'agent': 'main',
            'size': '5'}, headers=ADMIN, status=303)
        assert '5 slot(s)' in done.follow(headers=ADMIN).text
        next_polls(dispatcher)
        model.sync()
        assert model.queue.dispatchers[dispatcher.UUID]['main'].size == 5
        metrics = client.get('/_async/metrics', headers=ADMIN).text
        assert 'zcasync_queue_paused{queue=""} 0.0' in metrics
        assert 'zcasync_agent_size{agent="main",queue=""} 5.0' in metrics
    finally:
        model.close()


@browser_test.pytestmark[0]
@browser_test.pytestmark[1]
def test_pause_and_scale_in_a_browser(served, browser):
    from playwright.sync_api import expect
    app, base, model = served
    context = browser.new_context()
    context.add_cookies([{'name': 'admin', 'value': 'yes',
                          'url': base + '/'}])
    page = context.new_page()
    page.set_default_timeout(15000)
    page.on('dialog', lambda dialog: dialog.accept())
    try:
        page.goto(base + '/_async/')
        page.locator('#autorefresh').uncheck()
        page.get_by_role('button', name='Pause').click()
        page.wait_for_url(re.compile(r'/_async/(\?.*)?$'))
        expect(page.locator('.flash')).to_contain_text('is paused')
        expect(page.locator('.pill.paused')).to_be_visible()
        model.sync()
        assert model.queue.paused
        page.locator('#autorefresh').uncheck()
        size = page.locator('input[name="size"]')
        size.fill('4')
        page.get_by_role('button', name='Set').click()
        expect(page.locator('.flash')).to_contain_text('4 slot(s)')
        page.locator('#autorefresh').uncheck()
        page.get_by_role('button', name='Resume').click()
        expect(page.locator('.flash')).to_contain_text('is running')
        model.sync()
        assert not model.queue.paused
        assert model.queue.dispatchers.size_of('main') == 4
    finally:
        context.close()
