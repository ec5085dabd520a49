"""The database report views (/db/*): zc.async's asyncdb commands as JSON.

One app on a FileStorage holds jobs in every state, made without the
dispatcher thread (agents claim, the Runner runs, the model's own calls
mark active and record results), so every report's content is known.
"""
import datetime
import operator
import re

import pytest
import transaction
import webtest

from pyramid.config import Configurator

from pyramid_zcasync import Job
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.interfaces import KEY
from pyramid_zcasync.runner import Runner
from adminapp import HeaderPolicy

UTC = datetime.timezone.utc
ISO_Z = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$')
ADMIN = {'X-Admin': 'yes'}


def make_admin_app(directory, **extra):
    """pyramid_zcasync on a FileStorage in ``directory``, dispatcher off
    unless ``extra`` turns it on."""
    settings = {'zodbconn.uri': 'file://%s/Data.fs' % directory,
                'zcasync.uuid_file': str(directory / 'uuid.txt'),
                'zcasync.poll_interval': '0.5'}
    settings.update(extra)
    with Configurator(settings=settings) as config:
        config.set_security_policy(HeaderPolicy())
        config.include('pyramid_zcasync')
        return config.make_wsgi_app()


def fail_loudly(message):
    raise ValueError(message)


def picky_filter(job):
    """Agent u2/picky only takes additions."""
    return job.callable is operator.add


def iso(when):
    return when.astimezone(UTC).replace(tzinfo=None).isoformat() + 'Z'


class Scenario:
    """Jobs by name: oid (int), and the job's times, read after commit."""

    def __init__(self, app):
        self.app = app
        self.db = app.registry._zodb_databases['']
        self.db_name = self.db.database_name
        self.client = webtest.TestApp(app)
        self.oids = {}
        self.times = {}

    def id(self, name):
        return [self.oids[name], self.db_name]

    def get(self, path, status=200, **params):
        return self.client.get(path, params=params, headers=ADMIN,
                               status=status).json

    def build(self):
        now = datetime.datetime.now(UTC)
        conn = self.db.open()
        queues = conn.root()[KEY]
        queue, reports = queues[''], queues['reports']
        queue.quotas.create('db', 1)
        u1 = queue.dispatchers.register('u1')
        main = u1.add(Agent('main', 10))
        u1.activate()
        u2 = queue.dispatchers.register('u2')
        u2.add(Agent('picky', 2, filter=picky_filter))
        u2.activate()
        queue.dispatchers.register('u3').add(Agent('idle', 1))  # inactive
        transaction.commit()

        def claimed(name, job, **put):
            transaction.begin()  # see what the runner committed
            queue.put(job, **put)
            transaction.commit()
            assert main.claimJob() is job
            transaction.commit()
            self.oids[name] = int.from_bytes(job._p_oid, 'big')
            return job

        runner = Runner(self.db, uuid='u1')
        succeeded = claimed('succeeded', Job(operator.mul, 6, 7))
        runner.run(succeeded._p_oid)
        failed = claimed('failed', Job(fail_loudly, 'boom'))
        runner.run(failed._p_oid)
        transaction.begin()
        succeeded.annotations['note'] = 'kept'
        transaction.commit()

        callbacks = Job(operator.mul, 2, 3)
        callback = callbacks.addCallback(Job(operator.add, 1))
        claimed('callbacks', callbacks)
        callbacks.mark_active()
        callbacks.resolve(6, run_callbacks=False)
        transaction.commit()
        active = Job(operator.truediv, 1, 2)
        active.quota_names = ('db',)
        claimed('active', active)
        active.mark_active(now - datetime.timedelta(hours=1))
        transaction.commit()
        claimed('assigned', Job(operator.sub, 5, 3),
                begin_after=now - datetime.timedelta(hours=2))

        pending = queue.put(operator.add, 1, 2)
        later = queue.put(operator.mul, 3, 3,
                          begin_after=now + datetime.timedelta(days=1))
        other = reports.put(operator.neg, 5)
        transaction.commit()
        for name, job in [('pending', pending), ('later', later),
                          ('other', other),
                          ('callback', callback)]:
            self.oids[name] = int.from_bytes(job._p_oid, 'big')
        for name in ('succeeded', 'failed', 'callbacks', 'active',
                     'assigned', 'pending', 'later', 'other'):
            job = conn.get(self.oids[name].to_bytes(8, 'big'))
            self.times[name] = {
                'begin_after': job.begin_after,
                'active_start': job.active_start,
                'active_end': job.active_end}
        conn.close()
        return self


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    app = make_admin_app(tmp_path_factory.mktemp('db'),
                         **{'zcasync.queues': 'reports'})
    try:
        yield Scenario(app).build()
    finally:
        close_databases(app.registry)


# -- listing --------------------------------------------------------------

def test_uuids_are_the_activated_dispatchers(scene):
    assert scene.get('/_async/db/uuids') == ['u1', 'u2']


def test_jobs_lists_every_state_in_order(scene):
    assert scene.get('/_async/db/jobs') == [
        scene.id(name) for name in
        # pending by due time (across queues), held by start, completed
        # newest first
        ('pending', 'other', 'later', 'assigned', 'active', 'callbacks',
         'failed', 'succeeded')]


@pytest.mark.parametrize('params, names', [
    ({'state': 'pending'}, ['pending', 'other', 'later']),
    ({'state': 'assigned'}, ['assigned']),
    ({'state': 'active'}, ['active']),
    ({'state': 'callbacks'}, ['callbacks']),
    ({'state': 'completed'}, ['failed', 'succeeded']),
    ({'state': 'succeeded'}, ['succeeded']),
    ({'state': 'failed'}, ['failed']),
    ({'state': 'succeeded,failed'}, ['failed', 'succeeded']),
    # held jobs by start, or due time: 'assigned' was due 2 hours ago,
    # 'active' started 1 hour ago
    ({'state': ['assigned', 'active']}, ['assigned', 'active']),
    ({'queue': 'reports'}, ['other']),
    ({'queue': '', 'state': 'pending'}, ['pending', 'later']),
    ({'uuid': 'u2'}, ['pending']),  # what picky's filter would take
    ({'agent': 'picky', 'state': 'pending'}, ['pending']),
    ({'agent': 'main', 'state': 'pending'}, ['pending', 'later']),
    ({'uuid': 'u1', 'state': 'completed'}, ['failed', 'succeeded']),
    # u3 is stopped, but its agent (no filter) could take the default
    # queue's jobs; it holds and completed none
    ({'uuid': 'u3'}, ['pending', 'later']),
    ({'callable': 'mul'}, ['later', 'callbacks', 'succeeded']),
    ({'callable': '*.fail_*'}, ['failed']),
    ({'callable': '_operator.add'}, ['pending']),
    ({'count': '2'}, ['pending', 'other']),
])
def test_jobs_filters(scene, params, names):
    found = scene.client.get('/_async/db/jobs', params=params,
                             headers=ADMIN).json
    assert found == [scene.id(name) for name in names]


def test_jobs_time_windows(scene):
    def names(**params):
        found = scene.get('/_async/db/jobs', **params)
        return [name for name in scene.oids if scene.id(name) in found]
    first = scene.times['succeeded']['active_end']
    second = scene.times['failed']['active_end']
    assert names(state='completed', since=iso(first)) == [
        'succeeded', 'failed']
    assert names(state='completed', since=iso(second)) == ['failed']
    assert names(state='completed', before=iso(second)) == ['succeeded']
    assert names(state='completed', at=iso(first)) == ['succeeded']
    # pending jobs are dated by when they are due
    now = datetime.datetime.now(UTC)
    assert names(state='pending', at=iso(now)) == ['pending', 'other']
    # time= picks the field: only 'active' started an hour ago
    started = scene.times['active']['active_start']
    assert names(time='active_start',
                 before=iso(started + datetime.timedelta(minutes=1))) == [
        'active']
    assert names(time='begin_after',
                 before=iso(now - datetime.timedelta(hours=1))) == [
        'assigned']


def test_jobs_display(scene):
    reprs = scene.get('/_async/db/jobs', state='failed', display='repr')
    assert reprs == ['<Job 0x%x fail_loudly completed-status>'
                     % scene.oids['failed']]
    details = scene.get('/_async/db/jobs', state='assigned',
                        display='details')
    assert [d['id'] for d in details] == [scene.id('assigned')]
    assert details[0]['status'] == 'assigned'


def test_count(scene):
    assert scene.get('/_async/db/count') == 8
    assert scene.get('/_async/db/count', state='pending') == 3
    assert scene.get('/_async/db/count', state='pending', agent='picky') == 1
    assert scene.get('/_async/db/count', state='completed',
                     queue='reports') == 0
    assert scene.get('/_async/db/count', state='failed') == 1


def test_jobstats(scene):
    stats = scene.get('/_async/db/jobstats')
    assert {key: stats[key] for key in (
        'pending', 'assigned', 'active', 'callbacks', 'succeeded',
        'failed')} == {'pending': 3, 'assigned': 1, 'active': 1,
                       'callbacks': 1, 'succeeded': 1, 'failed': 1}
    # 'assigned' was due two hours ago and has not started
    assert stats['longest wait']['job'] == scene.id('assigned')
    assert stats['longest wait']['duration']['hours'] == 2
    # 'later' is due tomorrow: a negative wait
    assert stats['shortest wait']['job'] == scene.id('later')
    assert stats['shortest wait']['duration']['hours'] < 0
    assert stats['longest active']['job'] == scene.id('active')
    assert stats['longest active']['duration']['hours'] == 1
    assert stats['shortest active']['job'] in [
        scene.id(name) for name in ('succeeded', 'failed', 'callbacks')]
    only = scene.get('/_async/db/jobstats', state='failed')
    assert only['failed'] == 1 and only['succeeded'] == 0
    assert only['longest active']['job'] == scene.id('failed')
    empty = scene.get('/_async/db/jobstats', queue='reports',
                      state='completed')
    assert empty['longest wait'] is None and empty['shortest active'] is None


# -- status ---------------------------------------------------------------

def test_status(scene):
    status = scene.get('/_async/db/status')
    assert sorted(status) == ['', 'reports']
    default = status['']
    assert default['len'] == 2
    assert default['quotas'] == {'db': {'size': 1, 'len': 1}}
    assert sorted(default['dispatchers']) == ['u1', 'u2']  # u3 inactive
    u1 = default['dispatchers']['u1']
    assert u1['agents'] == {'main': {
        'size': 10, 'len': 3, 'completed': 2, 'filter': None,
        'chooser': None}}
    assert u1['dead'] is False
    assert ISO_Z.match(u1['last ping']) and ISO_Z.match(u1['activated'])
    assert u1['ping interval'] == {'seconds': 30}
    assert u1['ping death interval'] == {'minutes': 1}
    assert set(u1['since ping']) <= {'seconds', 'minutes'}
    assert default['dispatchers']['u2']['agents']['picky']['filter'] == \
        'test_views_db.picky_filter'
    assert status['reports'] == {'len': 1, 'quotas': {}, 'dispatchers': {}}


def test_status_filters(scene):
    assert list(scene.get('/_async/db/status', queue='reports')) == [
        'reports']
    by_uuid = scene.get('/_async/db/status', uuid='u2')
    assert list(by_uuid['']['dispatchers']) == ['u2']
    by_agent = scene.get('/_async/db/status', agent='picky')
    assert by_agent['']['dispatchers']['u1']['agents'] == {}
    assert list(by_agent['']['dispatchers']['u2']['agents']) == ['picky']


# -- one job --------------------------------------------------------------

def test_job_details_of_a_succeeded_job(scene):
    info = scene.get('/_async/db/jobs/%d' % scene.oids['succeeded'])
    times = scene.times['succeeded']
    assert info == {
        'id': scene.id('succeeded'),
        'repr': '<Job 0x%x mul completed-status>' % scene.oids['succeeded'],
        'status': 'completed',
        'callable': '_operator.mul',
        'args': ['6', '7'],
        'kwargs': {},
        'begin after': iso(times['begin_after']),
        'begin by': None,
        'active start': iso(times['active_start']),
        'active end': iso(times['active_end']),
        'initial callbacks end': None,
        'wait': info['wait'],
        'active': info['active'],
        'failed': False,
        'result': '42',
        'failure': None,
        'dispatcher': 'u1',
        'queue': '',
        'agent': None,  # released when it completed
        'quota names': [],
        'retry policy': 'pyramid_zcasync.retry.RetryCommonFourTimes',
        'callbacks': [],
        'parent': None,
        'waiting for': None,
        'annotations': ['note'],
        'events': info['events'],
        'events dropped': 0,
    }
    assert [(e['from'], e['to'], e['detail']) for e in info['events']][-1] \
        == ('active', 'completed', 'finished')
    assert set(info['wait']) <= {'seconds'}
    assert scene.get('/_async/db/jobs/0x%x' % scene.oids['succeeded']) == info


def test_job_details_of_failed_held_and_callback_jobs(scene):
    failed = scene.get('/_async/db/jobs/%d' % scene.oids['failed'])
    assert failed['failed'] is True and failed['result'] is None
    assert failed['failure'] == {'type': 'ValueError', 'message': 'boom'}
    assert failed['args'] == ["'boom'"]
    active = scene.get('/_async/db/jobs/%d' % scene.oids['active'])
    assert (active['status'], active['agent'], active['quota names'],
            active['dispatcher']) == ('active', 'main', ['db'], 'u1')
    assert active['active end'] is None and active['active']['hours'] == 1
    callbacks = scene.get('/_async/db/jobs/%d' % scene.oids['callbacks'])
    assert callbacks['status'] == 'callbacks'
    assert callbacks['result'] == '6'
    assert callbacks['callbacks'] == [scene.id('callback')]
    callback = scene.get('/_async/db/jobs/%d' % scene.oids['callback'])
    assert callback['parent'] == scene.id('callbacks')
    assert callback['status'] == 'new' and callback['queue'] is None
    assert callback['retry policy'] == \
        'pyramid_zcasync.retry.RetryCommonForever'
    pending = scene.get('/_async/db/jobs/%d' % scene.oids['pending'])
    assert pending['annotations'] == [] and pending['wait'] is not None


def test_long_arguments_are_truncated(tmp_path):
    app = make_admin_app(tmp_path)
    try:
        conn = app.registry._zodb_databases[''].open()
        job = conn.root()[KEY][''].put(len, 'x' * 5000)
        transaction.commit()
        oid = int.from_bytes(job._p_oid, 'big')
        conn.close()
        info = webtest.TestApp(app).get('/_async/db/jobs/%d' % oid,
                                        headers=ADMIN).json
        assert len(info['args'][0]) == 200
        assert info['args'][0].endswith('...')
    finally:
        close_databases(app.registry)


def test_traceback(scene):
    found = scene.get('/_async/db/jobs/%d/traceback' % scene.oids['failed'])
    assert found['id'] == scene.id('failed')
    assert (found['type'], found['message']) == ('ValueError', 'boom')
    assert found['traceback'].startswith('Traceback (most recent call')
    assert 'in fail_loudly' in found['traceback']
    assert found['traceback'].rstrip().endswith('ValueError: boom')


def test_nextpending(scene):
    assert scene.get('/_async/db/nextpending')['id'] == scene.id('pending')
    assert scene.get('/_async/db/nextpending', queue='reports')['id'] == \
        scene.id('other')
    assert scene.get('/_async/db/nextpending', callable='mul')['id'] == \
        scene.id('later')
    assert scene.get('/_async/db/nextpending',
                     agent='picky')['callable'] == '_operator.add'


def test_lastcompleted(scene):
    last = scene.get('/_async/db/lastcompleted')
    assert last['id'] == scene.id('failed')
    assert scene.get('/_async/db/lastcompleted',
                     state='succeeded')['id'] == scene.id('succeeded')
    assert scene.get('/_async/db/lastcompleted',
                     state='failed')['failure']['message'] == 'boom'
    before = scene.times['failed']['active_end']
    assert scene.get('/_async/db/lastcompleted',
                     before=iso(before))['id'] == scene.id('succeeded')


# -- errors ---------------------------------------------------------------

STATE_CHOICES = ('pending, assigned, active, callbacks, completed, '
                 'succeeded, failed')


@pytest.mark.parametrize('path, params, status, message', [
    ('/db/jobs', {'state': 'bogus'}, 400,
     "state='bogus' is unknown; expected one of " + STATE_CHOICES),
    ('/db/count', {'state': 'pending,nope'}, 400, "state='nope' is unknown"),
    ('/db/jobstats', {'state': 'done'}, 400, "state='done' is unknown"),
    ('/db/lastcompleted', {'state': 'pending'}, 400,
     "state='pending' is unknown; expected one of completed, succeeded, "
     "failed"),
    ('/db/jobs', {'queue': 'nope'}, 404,
     "no queue 'nope'; the queues are '', 'reports'"),
    ('/db/status', {'queue': 'nope'}, 404, "no queue 'nope'"),
    ('/db/nextpending', {'queue': 'nope'}, 404, "no queue 'nope'"),
    ('/db/jobs', {'agent': 'ghost'}, 404, "no agent 'ghost' in any queue"),
    ('/db/jobs', {'agent': 'picky', 'uuid': 'u1'}, 404,
     "no agent 'picky' in any queue of dispatcher 'u1'"),
    ('/db/jobs', {'uuid': 'u9', 'queue': ''}, 404,
     "no dispatcher 'u9' is registered in queue ''"),
    ('/db/jobs', {'uuid': 'THIS'}, 404, 'no dispatcher runs in this process'),
    ('/db/jobs', {'since': 'yesterday'}, 400,
     "since='yesterday' is not a date"),
    ('/db/count', {'before': '2026-13-45'}, 400, 'is not a date'),
    ('/db/lastcompleted', {'at': 'noon'}, 400, "at='noon' is not a date"),
    ('/db/jobs', {'time': 'lunch'}, 400,
     "time='lunch' is unknown; expected one of begin_after, active_start"),
    ('/db/jobs', {'count': '0'}, 400, "count='0' must be at least 1"),
    ('/db/jobs', {'count': 'many'}, 400, "count='many' is not an integer"),
    ('/db/jobs', {'display': 'pretty'}, 400,
     "display='pretty' is unknown; expected one of ids, repr, details"),
    ('/db/jobs/banana', {}, 400, "'banana' is not a job id"),
    ('/db/jobs/-3/traceback', {}, 400, 'is not a job id'),
    ('/db/jobs/999999', {}, 404, 'no object 0xf423f in database'),
    ('/db/jobs/%d' % 2 ** 70, {}, 404, 'oids have 64 bits'),
    ('/db/jobs/0', {}, 404, 'is a PersistentMapping, not a job'),
    ('/db/jobs/0/traceback', {}, 404, 'not a job'),
    ('/db/jobs/1', {'database': 'other'}, 404, "no database 'other'"),
    ('/db/nextpending', {'callable': 'nothing*'}, 404,
     'no pending job matches'),
    ('/db/lastcompleted', {'state': 'failed', 'queue': 'reports'}, 404,
     'no failed job matches'),
])
def test_bad_parameters_get_json_errors(scene, path, params, status, message):
    response = scene.client.get('/_async' + path, params=params,
                                headers=ADMIN, status=status)
    assert response.content_type == 'application/json'
    assert message in response.json['error']


def test_traceback_of_a_job_that_did_not_fail_is_a_404(scene):
    for name, status in [('succeeded', 'completed'), ('pending', 'pending')]:
        found = scene.get('/_async/db/jobs/%d/traceback' % scene.oids[name],
                          status=404)
        assert found['error'] == (
            'job 0x%x has no traceback: it did not fail (its status is %s)'
            % (scene.oids[name], status))


@pytest.mark.parametrize('path', [
    '/db/uuids', '/db/status', '/db/jobs', '/db/count', '/db/jobstats',
    '/db/jobs/1', '/db/jobs/1/traceback', '/db/nextpending',
    '/db/lastcompleted'])
def test_reports_are_forbidden_to_non_admins(scene, path):
    response = scene.client.get('/_async' + path, status=403)
    assert 'u1' not in response.text and 'boom' not in response.text
    scene.client.post('/_async' + path, headers=ADMIN, status=404)


def test_reports_write_nothing(scene):
    last = scene.db.lastTransaction()
    for path in ('/db/jobs?display=details', '/db/status', '/db/jobstats',
                 '/db/jobs/%d' % scene.oids['pending'], '/db/nextpending'):
        scene.client.get('/_async' + path, headers=ADMIN)
    assert scene.db.lastTransaction() == last


# -- with a dispatcher, and after a retry ----------------------------------

@pytest.fixture
def fresh(tmp_path):
    apps = []

    def make(**settings):
        app = make_admin_app(tmp_path, **settings)
        apps.append(app)
        return app, webtest.TestApp(app)
    yield make
    for app in apps:
        close_databases(app.registry)


def test_uuid_this_is_the_dispatcher_of_this_process(fresh):
    from pyramid_zcasync.interfaces import IQueue
    from pyramid_zcasync.testing import get_poll, wait_for_result
    app, client = fresh(**{'zcasync.dispatcher': 'true'})
    dispatcher = app.registry.zcasync_dispatcher
    get_poll(dispatcher, 0)
    conn = app.registry._zodb_databases[''].open()
    job = IQueue(conn.root()).put(operator.mul, 21, 2)
    transaction.commit()
    assert wait_for_result(job) == 42
    oid = int.from_bytes(job._p_oid, 'big')
    conn.close()
    uuid = str(dispatcher.UUID)
    assert client.get('/_async/db/uuids', headers=ADMIN).json == [uuid]
    last = client.get('/_async/db/lastcompleted?uuid=THIS',
                      headers=ADMIN).json
    assert (last['id'][0], last['result'], last['dispatcher']) == (
        oid, '42', uuid)
    status = client.get('/_async/db/status?uuid=this', headers=ADMIN).json
    assert list(status['']['dispatchers']) == [uuid]
    assert status['']['dispatchers'][uuid]['dead'] is False


def test_a_retried_job_is_reported_where_it_is_now_and_once(fresh):
    app, client = fresh()
    db = app.registry._zodb_databases['']
    conn = db.open()
    queue = conn.root()[KEY]['']
    registration = queue.dispatchers.register('u1')
    main = registration.add(Agent('main', 2))
    registration.activate()
    job = queue.put(fail_loudly, 'once')
    transaction.commit()
    oid = job._p_oid
    number = int.from_bytes(oid, 'big')

    def run():
        transaction.begin()
        assert main.claimJob() is job
        transaction.commit()
        Runner(db, uuid='u1').run(oid)
        transaction.begin()

    def listed(state):
        return client.get('/_async/db/jobs?state=' + state,
                          headers=ADMIN).json

    run()
    assert listed('failed') == [[number, db.database_name]]
    queue.retry_failed(job)
    transaction.commit()
    # still in the agent's history, but pending now: reported as pending
    assert listed('completed') == []
    assert listed('pending') == [[number, db.database_name]]
    info = client.get('/_async/db/jobs/%d' % number, headers=ADMIN).json
    assert 'pyramid_zcasync.failed_before' in info['annotations']
    run()
    # in the history twice, listed once
    assert len(main.completed) == 2
    assert listed('failed') == [[number, db.database_name]]
    assert client.get('/_async/db/count?state=completed',
                      headers=ADMIN).json == 1
    conn.close()
