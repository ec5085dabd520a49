"""The dashboard's job search, the page of each job and the bulk actions
(issue 20, item 10), over HTTP on a real app with a running dispatcher:
filters and their errors, the caps, the pages of pending, running,
failed and succeeded jobs, bulk retry and cancel with and without CSRF,
and hostile job text shown as text."""
import datetime
import re

import pytest
import webtest

import jobs
from pyramid_zcasync import clock, local
from pyramid_zcasync.interfaces import COMPLETED, IQueue
from pyramid_zcasync.testing import wait_for_result, wait_until
from pyramid_zcasync.views import bulk, queries
from pyramid_zcasync.views import jobpage as jobpage_module
from pyramid_zcasync.views.queries import JobSearch, search

from test_dashboard import (ADMIN, made, later, oid,  # noqa: F401
                            running, token_of)
from test_security import NASTY, SHOWN, assert_no_raw, fail, failing
from test_dashboard_browser import wait_for_claim

SEARCH = '/_async/search'
HTML = dict(ADMIN, Accept='text/html')


def page_of(job):
    return '/_async/jobs/%d' % oid(job)


def found(page):
    """The oids listed in a results page, in order."""
    return [int(value) for value in
            re.findall(r'name="job" value="(\d+)"', page.text)]


def run(model, func, *args):
    job = model.put(func, *args)
    wait_for_result(job)
    return job


@pytest.fixture
def some(running):
    """Two multiplications (one done, one due later), a division by zero
    that failed, and a failure of another callable."""
    app, client, model = running
    done = run(model, jobs.multiply, 6, 7)
    crashed = run(model, jobs.divide, 1, 0)
    waiting = model.put(jobs.multiply, 2, 3, begin_after=later())
    other = fail(model, 'boom')
    return client, model, done, crashed, waiting, other


# -- search ---------------------------------------------------------------

def test_search_by_callable_any_case_status_and_queue(some):
    client, model, done, crashed, waiting, other = some
    page = client.get(SEARCH, {'callable': 'MULTIPLY'}, headers=ADMIN)
    assert page.content_type == 'text/html'
    assert set(found(page)) == {oid(done), oid(waiting)}
    assert 'jobs.multiply(6, 7)' in page.text
    assert set(found(client.get(SEARCH, {'state': 'failed'},
                                headers=ADMIN))) == {oid(crashed), oid(other)}
    assert found(client.get(SEARCH, {'state': 'failed', 'callable': 'div'},
                            headers=ADMIN)) == [oid(crashed)]
    assert found(client.get(SEARCH, {'state': 'pending'},
                            headers=ADMIN)) == [oid(waiting)]
    # the default queue is named '', '*' is any queue
    assert set(found(client.get(SEARCH, {'queue': ''}, headers=ADMIN))) == \
        set(found(client.get(SEARCH, {'queue': '*'}, headers=ADMIN))) == {
            oid(done), oid(crashed), oid(waiting), oid(other)}
    # the form keeps what was asked, and each job links to its page
    page = client.get(SEARCH, {'callable': 'multiply', 'state': 'succeeded'},
                      headers=ADMIN)
    assert 'value="multiply"' in page.text
    assert '<option value="succeeded" selected>' in page.text
    assert '<a class="oid" href="%s"' % page_of(done) in page.text
    assert 'No job matches.' in client.get(
        SEARCH, {'callable': 'nothing like it'}, headers=ADMIN).text


def test_search_by_time_range(some):
    client, model, done, crashed, waiting, other = some
    hour = datetime.timedelta(hours=1)
    now = clock.utcnow()
    iso = lambda moment: moment.isoformat().replace('+00:00', 'Z')  # noqa
    completed = found(client.get(SEARCH, {
        'time': 'completed', 'from': iso(now - hour), 'to': iso(now + hour)},
        headers=ADMIN))
    assert set(completed) == {oid(done), oid(crashed), oid(other)}
    assert found(client.get(SEARCH, {'time': 'completed',
                                     'from': iso(now + hour)},
                            headers=ADMIN)) == []
    put = found(client.get(SEARCH, {'time': 'put', 'from': iso(now - hour)},
                           headers=ADMIN))
    assert set(put) == {oid(done), oid(crashed), oid(waiting), oid(other)}
    started = found(client.get(SEARCH, {'time': 'started',
                                        'to': iso(now + hour)},
                               headers=ADMIN))
    assert oid(waiting) not in started and oid(done) in started


@pytest.mark.parametrize('params, status, message', [
    ({'from': 'yesterday'}, 400, "from=&#x27;yesterday&#x27; is not a date"),
    ({'to': '2026-13-01'}, 400, 'to=&#x27;2026-13-01&#x27; is not a date'),
    ({'from': '2026-02-01T00:00:00Z', 'to': '2026-01-01T00:00:00Z'}, 400,
     'is after to='),
    ({'time': 'lunch'}, 400, 'time=&#x27;lunch&#x27; is unknown'),
    ({'state': 'sleepy'}, 400, 'state=&#x27;sleepy&#x27; is unknown'),
    ({'queue': 'nope'}, 404, 'no queue &#x27;nope&#x27;'),
    ({'job': '0xzz'}, 400, '&#x27;0xzz&#x27; is not a job id'),
])
def test_a_bad_search_names_the_bad_value(running, params, status, message):
    app, client, model = running
    page = client.get(SEARCH, params, headers=ADMIN, status=status)
    assert page.content_type == 'text/html'
    assert message in page.text


def test_a_job_id_goes_to_the_jobs_page(some):
    client, model, done, crashed, waiting, other = some
    for asked in ('0x%x' % oid(done), str(oid(done)), ' 0X%X ' % oid(done)):
        answer = client.get(SEARCH, {'job': asked}, headers=ADMIN,
                            status=303)
        assert answer.location.endswith(page_of(done))


def test_the_search_is_capped_and_says_so(running, monkeypatch):
    app, client, model = running
    queue = model.queue
    for number in range(30):
        queue.put(jobs.multiply, number, 2, begin_after=later())
    model.manager.commit()
    monkeypatch.setattr(queries, 'SEARCH_SHOWN', 10)
    page = client.get(SEARCH, headers=ADMIN)
    assert len(found(page)) == 10
    assert 'More than 10 jobs match' in page.text
    assert 'stopped after examining' not in page.text
    monkeypatch.setattr(queries, 'SEARCH_EXAMINED', 20)
    monkeypatch.setattr(queries, 'SEARCH_SHOWN', 100)
    page = client.get(SEARCH, {'callable': 'nothing'}, headers=ADMIN)
    assert 'stopped after examining 20 jobs' in page.text
    assert '0 shown, 20 examined' in page.text
    # the query alone, as the command line would ask it
    result = search(IQueue(model.connection.root()).parent,
                    JobSearch(text='multiply', examine=30, show=5))
    assert len(result.jobs) == 5 and result.shown_capped
    assert not result.complete
    whole = search(IQueue(model.connection.root()).parent,
                   JobSearch(examine=31))
    assert whole.complete and whole.examined == 30


def test_the_defaults_are_capped():
    assert queries.SEARCH_EXAMINED == 5000 and queries.SEARCH_SHOWN == 100
    assert bulk.MAX_SELECTED == 100
    with pytest.raises(queries.ParameterError):
        JobSearch(show=0)


# -- a page per job -------------------------------------------------------

def test_the_page_of_a_pending_job(some):
    client, model, done, crashed, waiting, other = some
    page = client.get(page_of(waiting), headers=ADMIN)
    text = page.text
    assert page.content_type == 'text/html'
    assert 'Job <span class="oid"' in text and '0x%x' % oid(waiting) in text
    assert '<dd class="call">jobs.multiply</dd>' in text
    assert '<div class="call arg">2</div>' in text
    assert '<span class="pill idle">pending</span>' in text
    assert 'id="outcome"' not in text  # no result yet
    assert 'new \u2192 pending' in text  # its life log
    assert re.search(r'name="job" value="%d"><button class="btn danger" '
                     r'type="submit" data-action="cancel"' % oid(waiting),
                     text)
    assert 'data-action="retry"' not in text
    assert 'data-action="dryrun"' in text  # what would it change?
    assert 'data-action="replay"' not in text  # (a failed job's)
    assert "frame-ancestors 'none'" in page.headers['Content-Security-Policy']


def test_the_page_of_a_failed_job(some):
    client, model, done, crashed, waiting, other = some
    text = client.get(page_of(crashed), headers=ADMIN).text
    assert '<span class="pill bad">failed</span>' in text
    assert 'ZeroDivisionError' in text and 'division by zero' in text
    assert '<pre class="tb">Traceback (most recent call last):' in text
    assert 'in divide' in text
    assert 'active \u2192 completed' in text
    assert 'data-action="retry"' in text
    assert 'data-action="cancel"' not in text
    assert 'data-action="replay"' in text
    assert 'data-action="undo"' not in text  # no recorder, no record


def test_the_page_of_a_succeeded_job_and_its_callback(running):
    app, client, model = running
    queue = model.queue
    job = queue.put(jobs.multiply, 6, 7)
    callback = job.addCallback(str)
    model.manager.commit()
    wait_for_result(job)
    wait_until(lambda: model.sync() or callback.status == COMPLETED, 10,
               'the callback')
    text = client.get(page_of(job), headers=ADMIN).text
    assert '<span class="pill ok">succeeded</span>' in text
    assert '<div class="call result">42</div>' in text
    assert 'id="actions"' not in text  # nothing to do to it
    assert '<a class="oid" href="%s"' % page_of(callback) in text
    text = client.get(page_of(callback), headers=ADMIN).text
    assert 'Callback of' in text
    assert '<a class="oid" href="%s"' % page_of(job) in text
    assert "<div class=\"call result\">&#x27;42&#x27;</div>" in text


def return_a_job(*args):
    """A job's callable returning a job it queued: its result is that
    job's."""
    return local.get_queue().put(jobs.multiply, *args)


def test_the_page_of_a_job_returned_by_another_links_them(running):
    app, client, model = running
    outer = model.put(return_a_job, 6, 7)
    assert wait_for_result(outer) == 42
    text = client.get(page_of(outer), headers=ADMIN).text
    assert '<div class="call result">42</div>' in text
    found_inner = client.get(SEARCH, {'callable': 'multiply'},
                             headers=ADMIN)
    (inner,) = found(found_inner)
    text = client.get('/_async/jobs/%d' % inner, headers=ADMIN).text
    assert 'Result goes to' in text
    assert '<a class="oid" href="%s"' % page_of(outer) in text


def test_the_page_of_a_running_job_shows_its_progress(running, tmp_path):
    app, client, model = running
    hold = tmp_path / 'hold'
    hold.write_text('run')
    job = model.put(jobs.progress_and_hold, str(hold), 'half <b>way</b>')
    try:
        wait_for_claim(model, job)
        wait_until(lambda: 'role="progressbar"' in client.get(
            page_of(job), headers=ADMIN).text, 10, 'the progress')
        text = client.get(page_of(job), headers=ADMIN).text
        assert 'aria-valuenow="50"' in text
        assert 'half &lt;b&gt;way&lt;/b&gt;' in text
        assert 'pending \u2192 assigned' in text
        assert 'data-action="cancel"' in text
        assert 'Dispatcher' in text and \
            app.registry.zcasync_dispatcher.UUID in text
    finally:
        hold.unlink()
    wait_for_result(job)


@pytest.mark.parametrize('path, status, message', [
    ('/_async/jobs/987654321', 404, 'no object 0x3ade68b1'),
    ('/_async/jobs/0', 404, 'not a job'),
    ('/_async/jobs/xyz', 400, '&#x27;xyz&#x27; is not a job id'),
    ('/_async/jobs/' + '9' * 30, 404, 'oids have 64 bits'),
])
def test_an_unknown_or_malformed_job_is_a_page_naming_it(
        running, path, status, message):
    app, client, model = running
    page = client.get(path, headers=ADMIN, status=status)
    assert page.content_type == 'text/html' and message in page.text


def test_the_dashboard_links_each_job_to_its_page(some):
    client, model, done, crashed, waiting, other = some
    text = client.get('/_async/', headers=ADMIN).text
    for job in (done, crashed, waiting):
        assert '<a class="oid" href="%s"' % page_of(job) in text
    assert '<form class="search" method="get" action="/_async/search"' \
        in text


@pytest.mark.parametrize('policy, headers', [(True, {}), (False, ADMIN)])
def test_the_new_pages_need_the_admin_permission(made, policy, headers):
    """Refused without the permission, and without a security policy."""
    client = webtest.TestApp(made(policy=policy))
    for path in (SEARCH, '/_async/jobs/1'):
        client.get(path, headers=headers, status=403)
    for action in ('retry', 'cancel'):
        client.post('/_async/actions/%s-selected' % action, {'job': '1'},
                    headers=headers, status=403)


# -- bulk actions ---------------------------------------------------------

def post_bulk(client, action, oids, token, **kwargs):
    params = [('csrf_token', token)] + [('job', str(value))
                                        for value in oids]
    return client.post('/_async/actions/%s-selected' % action, params,
                       headers=HTML, **kwargs)


def test_bulk_retry_runs_the_failed_ones_and_names_the_refused(
        running, tmp_path):
    app, client, model = running
    flag = tmp_path / 'broken'
    flag.write_text('down')
    broken = [run(model, jobs.fail_while_flag, str(flag)) for _ in range(2)]
    fine = run(model, jobs.multiply, 1, 1)
    flag.unlink()
    page = post_bulk(client, 'retry', [oid(job) for job in broken] +
                     [oid(fine), '<b>bold</b>', oid(broken[0])],
                     token_of(client))
    text = page.text
    assert 'Retried 2 of 4 selected job(s).' in text
    assert 'has not failed (it succeeded): only a failed job can be ' \
        'retried' in text
    assert '&lt;b&gt;bold&lt;/b&gt;' in text and '<b>' not in text
    for job in broken:
        assert '<a class="oid" href="%s"' % page_of(job) in text
        assert wait_for_result(job) == 'recovered'
    assert fine.result == 1


def test_bulk_retry_goes_back_to_the_search(running):
    app, client, model = running
    crashed = run(model, jobs.divide, 1, 0)
    page = client.get(SEARCH, {'state': 'failed', 'callable': 'divide'},
                      headers=ADMIN)
    form = page.forms[1]  # the first is the search
    assert form.action == '/_async/actions/retry-selected'
    form['job'].checked = True
    answer = form.submit(headers=HTML)
    assert 'Retried 1 of 1 selected job(s).' in answer.text
    assert '<a href="/_async/search?state=failed&amp;callable=divide">' \
        in answer.text
    wait_for_result(crashed)


def test_bulk_cancel(running):
    app, client, model = running
    waiting = [model.put(jobs.multiply, n, 2, begin_after=later())
               for n in range(3)]
    done = run(model, jobs.multiply, 1, 1)
    page = post_bulk(client, 'cancel', [oid(job) for job in waiting[:2]] +
                     [oid(done)], token_of(client))
    assert 'Cancelled 2 of 3 selected job(s).' in page.text
    model.sync()
    assert [job.status == COMPLETED for job in waiting] == [True, True,
                                                            False]
    assert done.result == 1


def test_bulk_actions_without_csrf_or_over_the_cap_do_nothing(running):
    app, client, model = running
    crashed = run(model, jobs.divide, 1, 0)
    waiting = model.put(jobs.multiply, 2, 2, begin_after=later())
    logged = len(crashed.events)
    token = token_of(client)
    client.post('/_async/actions/retry-selected', {'job': str(oid(crashed))},
                headers=ADMIN, status=400)
    post_bulk(client, 'cancel', [oid(waiting)], 'forged', status=400)
    over = post_bulk(client, 'cancel', [oid(waiting)] + list(range(
        1000, 1000 + bulk.MAX_SELECTED)), token, status=400)
    assert '101 jobs selected: at most 100 per request; nothing was done' \
        in over.text
    nothing = post_bulk(client, 'retry', [], token, status=400)
    assert 'no job selected' in nothing.text
    model.sync()
    assert waiting.status != COMPLETED
    assert crashed.status == COMPLETED
    assert len(crashed.events) == logged  # not retried


def test_the_dashboards_pending_and_failed_jobs_can_be_selected(running):
    app, client, model = running
    crashed = run(model, jobs.divide, 1, 0)
    waiting = model.put(jobs.multiply, 2, 2, begin_after=later())
    page = client.get('/_async/', headers=ADMIN)
    text = page.text
    assert re.search(r'<input type="checkbox" name="job" value="%d" '
                     r'form="bulk-failed"' % oid(crashed), text)
    assert re.search(r'<input type="checkbox" name="job" value="%d" '
                     r'form="bulk-pending"' % oid(waiting), text)
    assert '<form id="bulk-pending" class="bulk" method="post" ' \
        'action="/_async/actions/cancel-selected"' in text
    answer = post_bulk(client, 'cancel', [oid(waiting)], token_of(client))
    assert 'Cancelled 1 of 1 selected job(s).' in answer.text
    assert '<a href="/_async/">Back to the dashboard</a>' in answer.text


# -- hostile text ---------------------------------------------------------

def test_hostile_job_text_is_shown_as_text(running):
    app, client, model = running
    script = '<script>alert(1)</script>'
    nasty = fail(model, NASTY + script)
    html_args = run(model, jobs.multiply, '<img src=x onerror=alert(2)>', 2)
    waiting = model.put(*failing(script), begin_after=later())
    pages = [client.get(SEARCH, headers=ADMIN).text,
             client.get(SEARCH, {'callable': '<script>'}, headers=ADMIN,
                        ).text,
             client.get(SEARCH, {'from': script}, headers=ADMIN,
                        status=400).text]
    pages += [client.get(page_of(job), headers=ADMIN).text
              for job in (nasty, html_args, waiting)]
    pages.append(post_bulk(client, 'retry', [oid(waiting), script],
                           token_of(client)).text)
    for text in pages:
        assert '<script>alert' not in text
        assert '<img src=x' not in text
        assert_no_raw(text)
    assert SHOWN in pages[3]
    assert '&lt;img src=x onerror=alert(2)&gt;' in pages[4]


def test_a_section_that_cannot_be_read_says_so_and_the_rest_is_shown():
    """A job whose callable cannot be loaded (its module is gone) still
    has a page: the sections that need the callable say why."""
    class Vanished(jobpage_module.Job):
        @property
        def callable(self):
            raise ModuleNotFoundError("No module named 'gone'")

    job = Vanished.__new__(Vanished)
    seen = jobpage_module.Seen(job, None, None, clock.utcnow())
    shown = jobpage_module.sections(seen)
    assert (shown[0].name, shown[0].value) == (
        'unreadable', "ModuleNotFoundError: No module named 'gone'")
    assert [section.name for section in shown[1:3]] == ['status', 'events']


def test_the_page_of_a_waiting_job_links_its_prerequisite(running):
    app, client, model = running
    first = model.put(jobs.multiply, 2, 3, begin_after=later())
    waiting = model.put(jobs.multiply, 4, 5, after=[first])
    text = client.get(page_of(waiting), headers=ADMIN).text
    assert re.search(r'<dt>Runs after</dt><dd class="after"><a class="oid" '
                     r'href="[^"]*/_async/jobs/%d"' % oid(first), text)
    assert 'Runs after' not in client.get(page_of(first), headers=ADMIN).text
