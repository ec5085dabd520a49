"""The HTML dashboard and its POST actions (cancel, retry, re-queue), on a
real app: FileStorage, the dispatcher running, a session factory for the
CSRF token and a tiny security policy granting the admin permission."""
import datetime
import re
import time

import pytest
import transaction
import webtest
from pyramid.config import Configurator
from pyramid.session import SignedCookieSessionFactory

import jobs
from pyramid_zcasync import clock
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.failure import Failure
from pyramid_zcasync.job import JobCancelled
from pyramid_zcasync.interfaces import COMPLETED, NEW, PENDING, IQueue
from pyramid_zcasync.testing import get_poll, wait_for_result, wait_until
from adminapp import HeaderPolicy as AdminPolicy

ADMIN = {'X-Admin': 'yes'}
DASHBOARD = '/_async/'
TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def make_app(tmp_path, policy=True, session=True, csrf_options=None,
             **extra):
    settings = {
        'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
        'zcasync.dispatcher': 'true',
        'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
        'zcasync.poll_interval': '0.5',
    }
    settings.update(extra)
    with Configurator(settings=settings) as config:
        if session:
            config.set_session_factory(
                SignedCookieSessionFactory('dashboard tests'))
        if policy:
            config.set_security_policy(AdminPolicy())
        if csrf_options:
            config.set_default_csrf_options(**csrf_options)
        config.include('pyramid_zcasync')
        return config.make_wsgi_app()


class Model:
    """The test's own view of the database, in its own transactions (the
    requests run theirs on the thread's default manager)."""

    def __init__(self, app):
        self.manager = transaction.TransactionManager()
        self.connection = app.registry._zodb_databases[''].open(
            transaction_manager=self.manager)

    @property
    def queue(self):
        self.manager.begin()
        return IQueue(self.connection.root())

    def put(self, func, *args, **kwargs):
        job = self.queue.put(func, *args, **kwargs)
        self.manager.commit()
        return job

    def sync(self):
        self.manager.begin()

    def close(self):
        self.manager.abort()
        self.connection.close()


def oid(job):
    return int.from_bytes(job._p_oid, 'big')


def later(hours=1):
    return clock.utcnow() + datetime.timedelta(hours=hours)


def make_dead_dispatcher(model, uuid='0badd00d-dead-4ead-8ead-00000000dead'):
    """A sibling that claimed a job, then went silent: its registration is
    active, but its last ping is older than its death interval."""
    queue = model.queue
    due = later(0.5)  # before the tests' other pending jobs: claimed first
    job = queue.put(jobs.multiply, 6, 7, begin_after=due)
    registration = queue.dispatchers.register(
        uuid, ping_interval=datetime.timedelta(seconds=0.05),
        ping_death_interval=datetime.timedelta(seconds=0.2))
    registration.add(Agent('main', 2))
    registration.activate()
    assert registration['main'].claimJob(
        now=due + datetime.timedelta(minutes=1)) is job
    model.manager.commit()
    time.sleep(0.4)
    # Death is judged in database time: let a later commit move it on.
    model.connection.root()['dashboard test tick'] = time.time()
    model.manager.commit()
    model.sync()
    assert registration.dead
    return uuid, registration, job


@pytest.fixture
def made(tmp_path):
    made = []

    def make(**kwargs):
        app = make_app(tmp_path, **kwargs)
        made.append(app)
        return app
    yield make
    for app in made:
        close_databases(app.registry)


@pytest.fixture
def running(made):
    app = made()
    get_poll(app.registry.zcasync_dispatcher, 0)
    model = Model(app)
    yield app, webtest.TestApp(app), model
    model.close()


def token_of(client, headers=ADMIN):
    page = client.get(DASHBOARD, headers=headers)
    return TOKEN.search(page.text).group(1)


def run(model, func, *args):
    job = model.put(func, *args)
    wait_for_result(job)
    return job


# -- the page -------------------------------------------------------------

def test_the_dashboard_shows_queues_dispatchers_and_jobs(running, tmp_path):
    app, client, model = running
    done = run(model, jobs.multiply, 6, 7)
    failed = run(model, jobs.divide, 1, 0)
    assert isinstance(failed.result, Failure)
    pending = model.put(jobs.multiply, 2, 2, begin_after=later())
    uuid = app.registry.zcasync_dispatcher.UUID

    page = client.get(DASHBOARD, headers=ADMIN)
    assert page.content_type == 'text/html'
    text = page.text
    # this process's dispatcher, and its registration with its agent
    assert 'RUNNING' in text and uuid in text and 'this process' in text
    assert '>alive<' in text and 'main' in text
    # the queue, its pending job and a Cancel button for it
    assert '1 pending' in text
    assert '0x%x' % oid(pending) in text
    assert 'jobs.multiply(2, 2)' in text
    assert re.search(r'name="job" value="%d"><button class="btn danger" '
                     r'type="submit" data-action="cancel"' % oid(pending),
                     text)
    # the completed job with its result, the failed one with its traceback
    # in <details> and a Retry button
    assert '0x%x' % oid(done) in text and '42' in text
    assert 'ZeroDivisionError</span>: division by zero' in text
    assert re.search(r'<details data-key="tb-%d"><summary>Traceback</summary>'
                     r'<pre class="tb">Traceback \(most recent call last\):'
                     % oid(failed), text)
    assert 'in divide' in text
    assert re.search(r'name="job" value="%d"><button class="btn primary" '
                     r'type="submit" data-action="retry"' % oid(failed), text)
    # throughput: an inline SVG chart, two completions this minute
    assert '<svg viewBox=' in text
    assert re.search(r'UTC: 2 completed, 1 failed</title>', text)
    # self-contained, refreshing, and not to be framed
    assert '://' not in text
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' \
        in text
    assert "frame-ancestors 'none'" in page.headers['Content-Security-Policy']
    assert page.headers['Cache-Control'] == 'no-store'
    nonce = re.search(r'<script nonce="([^"]+)">', text).group(1)
    assert "'nonce-%s'" % nonce in page.headers['Content-Security-Policy']
    # and the bare prefix is the same page
    assert 'Recent failures' in client.get('/_async', headers=ADMIN).text


def test_an_empty_dashboard_says_so(running):
    app, client, model = running
    text = client.get(DASHBOARD, headers=ADMIN).text
    assert 'Nothing pending.' in text
    assert 'No recent failures.' in text
    assert 'Nothing completed yet.' in text


def test_everything_shown_is_escaped(running):
    app, client, model = running
    run(model, jobs.multiply, '<b>x</b>', 2)
    model.put(jobs.multiply, '<script>alert(1)</script>', 2,
              begin_after=later())
    text = client.get(DASHBOARD, headers=ADMIN).text
    assert '<b>' not in text and '<script>alert' not in text
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in text
    assert '&#x27;&lt;b&gt;x&lt;/b&gt;&lt;b&gt;x&lt;/b&gt;&#x27;' in text
    # the message after an action is made of server-side facts: a link
    # naming no real job or stopped dispatcher shows none
    for forged in ({'done': 'requeued', 'count': '1', 'uuid': '<i>me</i>'},
                   {'done': 'anything you like'},
                   {'done': 'cancelled', 'job': '<b>'}):
        page = client.get(DASHBOARD, forged, headers=ADMIN).text
        assert 'class="flash' not in page, forged


# -- cancel ---------------------------------------------------------------

def test_cancel_a_pending_job(running):
    app, client, model = running
    job = model.put(jobs.multiply, 2, 2, begin_after=later())
    token = token_of(client)
    response = client.post('/_async/actions/cancel',
                           {'csrf_token': token, 'job': str(oid(job))},
                           headers=ADMIN, status=303)
    assert response.location.startswith('http://localhost/_async/?')
    page = response.follow(headers=ADMIN)
    assert 'Job 0x%x was cancelled' % oid(job) in page.text
    assert 'Nothing pending.' in page.text
    model.sync()
    # A state one can find and name: completed, with a JobCancelled failure.
    assert job.status == COMPLETED and job.result.check(JobCancelled)
    assert len(model.queue) == 0

    again = client.post('/_async/actions/cancel',
                        {'csrf_token': token, 'job': str(oid(job))},
                        headers=ADMIN, status=400)
    assert again.json == {'error': 'job 0x%x is not pending or running '
                                   '(it failed): only a pending or running '
                                   'job can be cancelled' % oid(job)}


def test_cancel_refuses_unknown_and_malformed_jobs(running):
    app, client, model = running
    token = token_of(client)
    unknown = client.post('/_async/actions/cancel',
                          {'csrf_token': token, 'job': '987654321'},
                          headers=ADMIN, status=404)
    assert 'no object 0x3ade68b1 in database' in unknown.json['error']
    root = client.post('/_async/actions/cancel',
                       {'csrf_token': token, 'job': '0'},
                       headers=ADMIN, status=404)  # the root: not a job
    assert 'object 0x0 in database' in root.json['error']
    bad = client.post('/_async/actions/cancel',
                      {'csrf_token': token, 'job': 'banana'},
                      headers=ADMIN, status=400)
    assert "'banana' is not a job id" in bad.json['error']
    missing = client.post('/_async/actions/cancel', {'csrf_token': token},
                          headers=ADMIN, status=400)
    assert "missing parameter 'job'" in missing.json['error']
    huge = client.post('/_async/actions/cancel',
                       {'csrf_token': token, 'job': str(2 ** 70)},
                       headers=ADMIN, status=404)
    assert 'oids have 64 bits' in huge.json['error']


def test_a_browser_gets_an_html_error_with_a_way_back(running):
    app, client, model = running
    token = token_of(client)
    response = client.post(
        '/_async/actions/cancel', {'csrf_token': token, 'job': '987654'},
        headers=dict(ADMIN, Accept='text/html,application/xhtml+xml,'
                     'application/xml;q=0.9,*/*;q=0.8'),
        status=404)
    assert response.content_type == 'text/html'
    assert '404 Not Found' in response.text
    assert 'no object 0xf1206 in database' in response.text
    assert 'href="/_async/"' in response.text


# -- retry ----------------------------------------------------------------

def test_retry_a_failed_job(running, tmp_path):
    app, client, model = running
    flag = tmp_path / 'broken'
    flag.write_text('the cause of the failure')
    job = run(model, jobs.fail_while_flag, str(flag))
    assert job.result.type_name == 'RuntimeError'
    flag.unlink()  # the operator fixes the cause, then retries
    token = token_of(client)
    response = client.post('/_async/actions/retry',
                           {'csrf_token': token, 'job': '0x%x' % oid(job)},
                           headers=ADMIN, status=303)
    assert 'Job 0x%x was queued again' % oid(job) in response.follow(
        headers=ADMIN).text
    assert wait_for_result(job) == 'recovered'
    text = client.get(DASHBOARD, headers=ADMIN).text
    assert 'No recent failures.' in text  # its failure was undone
    assert '&#x27;recovered&#x27;' in text

    again = client.post('/_async/actions/retry',
                        {'csrf_token': token, 'job': str(oid(job))},
                        headers=ADMIN, status=400)
    assert again.json['error'] == (
        'job 0x%x has not failed (it succeeded): only a failed job can be '
        'retried' % oid(job))
    model.sync()
    assert job.status == COMPLETED and job.result == 'recovered'


def test_retry_refuses_a_pending_job(running):
    app, client, model = running
    job = model.put(jobs.multiply, 2, 2, begin_after=later())
    response = client.post(
        '/_async/actions/retry',
        {'csrf_token': token_of(client), 'job': str(oid(job))},
        headers=ADMIN, status=400)
    assert 'it is pending' in response.json['error']
    model.sync()
    assert job.status == PENDING


# -- requeue --------------------------------------------------------------

def test_requeue_the_jobs_of_a_dead_dispatcher(running):
    app, client, model = running
    uuid, registration, job = make_dead_dispatcher(model)
    page = client.get(DASHBOARD, headers=ADMIN)
    assert '>dead<' in page.text
    assert re.search(r'name="uuid" value="%s"><button class="btn primary" '
                     r'type="submit" data-action="requeue"' % uuid, page.text)
    token = TOKEN.search(page.text).group(1)
    response = client.post('/_async/actions/requeue',
                           {'csrf_token': token, 'uuid': uuid},
                           headers=ADMIN, status=303)
    assert ('Dispatcher %s was deactivated; its unfinished jobs were handed '
            'to their retry policies.' % uuid) in response.follow(
                headers=ADMIN).text
    model.sync()
    assert registration.activated is None
    assert job.status == PENDING and job in model.queue
    assert len(registration['main']) == 0

    stopped = client.post('/_async/actions/requeue',
                          {'csrf_token': token, 'uuid': uuid},
                          headers=ADMIN, status=400)
    assert 'is not active' in stopped.json['error']


def test_requeue_refuses_a_live_or_unknown_dispatcher(running):
    app, client, model = running
    uuid = app.registry.zcasync_dispatcher.UUID
    token = token_of(client)
    alive = client.post('/_async/actions/requeue',
                        {'csrf_token': token, 'uuid': uuid},
                        headers=ADMIN, status=400)
    assert alive.json['error'].startswith('dispatcher %s is alive' % uuid)
    model.sync()
    assert model.queue.dispatchers[uuid].activated is not None
    unknown = client.post('/_async/actions/requeue',
                          {'csrf_token': token, 'uuid': 'nobody'},
                          headers=ADMIN, status=404)
    assert unknown.json['error'] == 'there is no dispatcher nobody in any ' \
        'queue'


# -- CSRF and permissions ---------------------------------------------------

def test_actions_without_a_valid_token_change_nothing(running):
    app, client, model = running
    pending = model.put(jobs.multiply, 2, 2, begin_after=later())
    failed = run(model, jobs.divide, 1, 0)
    uuid, registration, held = make_dead_dispatcher(model)
    token_of(client)  # the session exists, with a token
    for bad in ({}, {'csrf_token': 'forged'}):
        for path, params in [('cancel', {'job': str(oid(pending))}),
                             ('retry', {'job': str(oid(failed))}),
                             ('requeue', {'uuid': uuid})]:
            params = dict(params, **bad)
            response = client.post('/_async/actions/' + path, params,
                                   headers=ADMIN, status=400)
            assert 'CSRF' in response.text
    model.sync()
    assert pending.status == PENDING
    assert isinstance(failed.result, Failure)
    assert registration.activated is not None and held in registration['main']


def test_the_token_may_come_in_the_header(running):
    app, client, model = running
    job = model.put(jobs.multiply, 2, 2, begin_after=later())
    client.post('/_async/actions/cancel', {'job': str(oid(job))},
                headers=dict(ADMIN, **{'X-CSRF-Token': token_of(client)}),
                status=303)


def test_actions_and_page_refuse_non_admins(running):
    app, client, model = running
    pending = model.put(jobs.multiply, 2, 2, begin_after=later())
    failed = run(model, jobs.divide, 1, 0)
    uuid, registration, held = make_dead_dispatcher(model)
    token = token_of(client)  # a valid token in this session...
    client.get(DASHBOARD, status=403)  # ...but no admin from here on
    client.get('/_async', status=403)
    for path, params in [('cancel', {'job': str(oid(pending))}),
                         ('retry', {'job': str(oid(failed))}),
                         ('requeue', {'uuid': uuid})]:
        client.post('/_async/actions/' + path,
                    dict(params, csrf_token=token), status=403)
    model.sync()
    assert pending.status == PENDING
    assert isinstance(failed.result, Failure)
    assert registration.activated is not None


def test_no_security_policy_means_403_even_with_a_token(made):
    app = made(policy=False)
    model = Model(app)
    try:
        pending = model.put(jobs.multiply, 2, 2, begin_after=later())
        client = webtest.TestApp(app)
        page = client.get(DASHBOARD, headers=ADMIN, status=403)
        assert 'pending' not in page.text
        # with or without a token: a 403, not a CSRF refusal
        for path in ('cancel', 'retry', 'requeue'):
            for params in ({}, {'csrf_token': 'x', 'job': str(oid(pending)),
                                'uuid': 'x'}):
                client.post('/_async/actions/' + path, params,
                            headers=ADMIN, status=403)
        model.sync()
        assert pending.status == PENDING
    finally:
        model.close()


def test_without_a_session_the_page_renders_and_actions_refuse(made):
    app = made(session=False)
    get_poll(app.registry.zcasync_dispatcher, 0)
    model = Model(app)
    try:
        pending = model.put(jobs.multiply, 2, 2, begin_after=later())
        client = webtest.TestApp(app)
        text = client.get(DASHBOARD, headers=ADMIN).text
        assert 'Actions are disabled' in text
        assert 'csrf_token' not in text
        assert '<button class="btn danger" type="button" disabled' in text
        response = client.post('/_async/actions/cancel',
                               {'job': str(oid(pending))}, headers=ADMIN,
                               status=400)
        assert 'no session factory' in response.text
        model.sync()
        assert pending.status == PENDING
    finally:
        model.close()


def test_the_apps_csrf_options_are_followed(made):
    """An app requiring CSRF everywhere, with its own token name."""
    app = made(csrf_options={'require_csrf': True, 'token': 'tok'})
    get_poll(app.registry.zcasync_dispatcher, 0)
    model = Model(app)
    try:
        pending = model.put(jobs.multiply, 2, 2, begin_after=later())
        client = webtest.TestApp(app)
        text = client.get(DASHBOARD, headers=ADMIN).text
        token = re.search(r'name="tok" value="([^"]+)"', text).group(1)
        client.post('/_async/actions/cancel', {'job': str(oid(pending))},
                    headers=ADMIN, status=400)
        client.post('/_async/actions/cancel',
                    {'tok': token, 'job': str(oid(pending))},
                    headers=ADMIN, status=303)
        model.sync()
        assert pending.status == COMPLETED  # cancelled
    finally:
        model.close()


def test_actions_are_post_only(running):
    app, client, model = running
    job = model.put(jobs.multiply, 2, 2, begin_after=later())
    token = token_of(client)
    client.get('/_async/actions/cancel',
               {'csrf_token': token, 'job': str(oid(job))}, headers=ADMIN,
               status=404)
    model.sync()
    assert job.status == PENDING


def test_a_retried_job_that_fails_again_counts_the_same_everywhere(running):
    """Two failed runs of one job: the header, /jobstats, /metrics and
    the chart all say 2 (they said 1, 1, 2 and 2)."""
    app, client, model = running
    job = run(model, jobs.divide, 1, 0)
    model.queue.retry_failed(job)
    model.manager.commit()
    wait_for_result(job)
    dispatcher = app.registry.zcasync_dispatcher
    wait_until(lambda: not dispatcher.getStatistics()['unknown'], 5,
               'the second run in the dispatcher history')
    page = client.get(DASHBOARD, headers=ADMIN).text
    assert re.search(r'<strong>0</strong> ok, <strong>2</strong> failed '
                     'since start', page), dispatcher.jobs.values()
    assert re.search(r'<div class="n">2</div><div class="l">failed, \d+ '
                     'min</div>', page)
    stats = client.get('/_async/jobstats', headers=ADMIN).json
    assert (stats['failed'], stats['successful']) == (2, 0)
    metrics = client.get('/_async/metrics', headers=ADMIN).text
    assert 'zcasync_jobs_failed_total{queue=""} 2.0' in metrics
