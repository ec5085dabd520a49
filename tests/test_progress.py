"""Issue 20, item 5: ``local.set_progress`` inside a job, committed at once
and shown while the job runs: in ``/db/jobs/{oid}``, on the dashboard (a
bar) and by ``pzcasync job``.

The end-to-end tests run a real dispatcher on a FileStorage (the app of
test_dashboard) with a job that says how far it got and then waits for a
file to disappear.
"""
import datetime
import re

import pytest
import transaction

import jobs
from pyramid_zcasync import Job, local
from pyramid_zcasync.agent import Agent
from pyramid_zcasync.group import GroupRunner
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.retry import NeverRetry
from pyramid_zcasync.runner import Runner
from pyramid_zcasync.scripts import cli
from pyramid_zcasync.testing import (wait_for_result, wait_for_start,
                                     wait_until)

from test_dashboard import (ADMIN, DASHBOARD, made, oid,  # noqa: F401
                            running)
from test_security import NASTY, SHOWN, assert_no_raw

ISO_Z = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$')
HOSTILE = '<script>alert(1)</script>"onmouseover="x' + NASTY


# -- in a job, and out of one ---------------------------------------------

def set_in_unsaved_job(fraction, message=''):
    """set_progress inside a job run without a database: the progress
    goes straight into the job's annotations."""
    job = Job(len, ())
    with local.running(job):
        local.set_progress(fraction, message)
    return local.get_progress(job)


def test_outside_a_job_it_raises_like_set_live_annotation():
    with pytest.raises(RuntimeError, match='set_progress is only available '
                                           'inside a running job'):
        local.set_progress(0.5)


@pytest.mark.parametrize('fraction, error, shown', [
    (True, TypeError, 'True'),
    ('0.5', TypeError, "'0.5'"),
    (None, TypeError, 'None'),
    (float('nan'), ValueError, 'nan'),
    (-0.01, ValueError, '-0.01'),
    (1.5, ValueError, '1.5'),
    (float('inf'), ValueError, 'inf'),
    (10 ** 400, ValueError, '1000'),
])
def test_a_bad_fraction_is_refused_naming_it(fraction, error, shown):
    with pytest.raises(error) as raised:
        set_in_unsaved_job(fraction)
    assert 'fraction' in str(raised.value)
    assert 'not ' + shown in str(raised.value)


def test_a_message_must_be_text_and_is_clipped():
    with pytest.raises(TypeError, match='message must be a str, not 42'):
        set_in_unsaved_job(0.5, 42)
    said = set_in_unsaved_job(1, 'x' * 10_000)
    assert len(said.message) == local.PROGRESS_MESSAGE_LIMIT
    assert said.message.endswith('\u2026')


def test_the_bounds_and_whole_percents():
    assert set_in_unsaved_job(0).percent == 0
    said = set_in_unsaved_job(1, 'done')
    assert (said.fraction, said.message, said.percent) == (1.0, 'done', 100)
    assert isinstance(said.fraction, float)
    assert said.at.tzinfo is not None
    assert set_in_unsaved_job(0.999).percent == 99  # not done yet


def test_jobs_without_progress_and_foreign_values_read_as_none():
    job = Job(len, ())
    assert local.get_progress(job) is None
    assert job._annotations is None  # reading created nothing
    job.annotations[local.PROGRESS_KEY] = 'someone else wrote this'
    assert local.get_progress(job) is None


# -- committed at once: survives the abort, and groups run it alone ----------

@pytest.fixture
def claimed(db):
    """``claim(func, *args)``: a job put and claimed by an agent of a
    registered dispatcher, ready for a Runner or a GroupRunner."""
    connection = db.open()
    queue = IQueue(connection.root())
    registration = queue.dispatchers.register('progress-test')
    agent = registration.add(Agent('main', 10))
    registration.activate()
    transaction.commit()

    def claim(func, *args):
        job = queue.put(func, *args)
        job.retry_policy_factory = NeverRetry
        transaction.commit()
        assert agent.claimJob() is job
        transaction.commit()
        return job
    yield db, connection, claim
    transaction.abort()
    connection.close()


def test_progress_survives_the_jobs_own_abort(claimed):
    db, connection, claim = claimed
    job = claim(jobs.progress_then_fail, 'a quarter')
    Runner(db, 'progress-test').run(job._p_oid)
    connection.transaction_manager.begin()
    assert job.result.type_name.endswith('ValueError')
    said = local.get_progress(job)
    assert (said.fraction, said.message) == (0.25, 'a quarter')


def test_a_grouped_job_setting_progress_is_run_alone(claimed, tmp_path):
    db, connection, claim = claimed
    job = claim(jobs.progress_and_hold, str(tmp_path / 'no-hold'), 'grouped')
    outcomes = dict(GroupRunner(Runner(db, 'progress-test')).run(
        [job._p_oid]))
    assert set(outcomes) == {job._p_oid}
    connection.transaction_manager.begin()
    assert job.result == 'done'
    said = local.get_progress(job)
    assert (said.fraction, said.message) == (0.5, 'grouped')


# -- seen while the job runs ----------------------------------------------

def job_json(client, job):
    return client.get('/_async/db/jobs/%d' % oid(job), headers=ADMIN).json


def pzcasync_job(app, job):
    """What ``pzcasync CONFIG.ini job OID`` prints, run in this process
    (the app holds the FileStorage's lock)."""
    args = cli.make_parser().parse_args(['app.ini', 'job', str(oid(job))])
    args.json = False
    return cli.execute(app.registry, args)


def hold_with_progress(running, tmp_path, message):
    """A job that said ``message`` at half way and now waits: its JSON
    as soon as the progress shows in it."""
    app, client, model = running
    hold = tmp_path / 'hold'
    hold.touch()
    job = model.put(jobs.progress_and_hold, str(hold), message)
    wait_for_start(job, 10)
    info = wait_until(lambda: 'progress' in job_json(client, job)
                      and job_json(client, job), 10, 'the progress to show')
    return job, hold, info


def test_the_views_and_pzcasync_show_it_while_the_job_runs(running,
                                                           tmp_path):
    app, client, model = running
    job, hold, info = hold_with_progress(running, tmp_path, 'half')
    try:
        assert info['status'] == 'active'
        progress = info['progress']
        assert (progress['fraction'], progress['message']) == (0.5, 'half')
        assert ISO_Z.match(progress['at'])
        at = datetime.datetime.fromisoformat(progress['at'][:-1])
        assert abs(datetime.datetime.utcnow() - at).total_seconds() < 60

        out = pzcasync_job(app, job)
        assert re.search(r'^progress: +50% half \(at \d{4}-\d\d-\d\d '
                         r'\d\d:\d\d:\d\dZ\)$', out, re.M), out

        page = client.get(DASHBOARD, headers=ADMIN).text
        assert 'role="progressbar"' in page
        assert 'aria-valuenow="50"' in page
        assert 'style="width:50%"' in page
        assert '<span class="msg">half</span>' in page
    finally:
        hold.unlink()
    assert wait_for_result(job, 10) == 'done'
    # Kept after the end: it is what the job said last.
    assert job_json(client, job)['progress']['message'] == 'half'
    assert 'role="progressbar"' not in client.get(DASHBOARD,
                                                  headers=ADMIN).text


def test_a_job_that_never_said_has_no_progress(running):
    """Absent, not null: the answer for such a job stays as it was."""
    app, client, model = running
    job = model.put(jobs.multiply, 6, 7)
    assert wait_for_result(job, 10) == 42
    assert 'progress' not in job_json(client, job)
    assert 'progress' not in pzcasync_job(app, job)


def test_a_hostile_message_is_inert_everywhere(running, tmp_path):
    app, client, model = running
    job, hold, info = hold_with_progress(running, tmp_path, HOSTILE)
    try:
        assert info['progress']['message'] == HOSTILE  # JSON encodes it
        body = client.get('/_async/db/jobs/%d' % oid(job),
                          headers=ADMIN).body
        assert not any(c.encode() in body for c in ('\x1b', '\u202e'))

        page = client.get(DASHBOARD, headers=ADMIN).text
        assert 'role="progressbar"' in page
        assert '<script>alert' not in page and '"onmouseover' not in page
        assert '&lt;script&gt;alert(1)&lt;/script&gt;&quot;onmouseover=' \
            '&quot;x' + SHOWN in page
        assert_no_raw(page)

        out = pzcasync_job(app, job)
        assert SHOWN in out
        assert_no_raw(out)
    finally:
        hold.unlink()
    assert wait_for_result(job, 10) == 'done'



def progress_in_callback(path, result):
    """A callback saying how far it got; it notes each run in a file (a
    re-run after a conflict leaves no trace in the database)."""
    with open(path, 'a') as notes:
        notes.write('ran\n')
    local.set_progress(0.5, 'half way')
    return result


def test_a_callback_sets_progress_and_runs_once(dispatcher, fs_db, tmp_path):
    notes = tmp_path / 'notes.txt'
    connection = fs_db.open()
    try:
        job = IQueue(connection.root()).put(jobs.multiply, 6, 7)
        callback = job.addCallback(Job(progress_in_callback, str(notes)))
        transaction.commit()
        assert wait_for_result(callback) == 42
        said = local.get_progress(callback)
        assert (said.fraction, said.message) == (0.5, 'half way')
        assert notes.read_text() == 'ran\n'  # not twice: no conflict
    finally:
        transaction.abort()
        connection.close()
