"""The dashboard in a real browser (Debian's chromium through playwright):
an admin sees a failed job's traceback, retries it and sees it complete.
It also saves a screenshot of the dashboard: to the test's temporary
directory, or, with ZCASYNC_SCREENSHOT=docs/dashboard.png, over the one
shown in the README (so that a test run leaves the checkout as it was)."""
import contextlib
import datetime
import os
import re
import threading
import time

import pytest
import waitress

import jobs
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.interfaces import ACTIVE, ASSIGNED
from pyramid_zcasync.testing import get_poll, wait_for_result
from test_dashboard import Model, later, make_app, make_dead_dispatcher, oid

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu',
                 '--disable-background-networking',
                 '--disable-component-update', '--disable-sync',
                 '--no-first-run']
#: Where to save the screenshot shown in the README, when asked to.
SCREENSHOT = os.environ.get('ZCASYNC_SCREENSHOT')

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None,
                       reason='playwright is not installed '
                              '(pip install playwright)'),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason='%s is absent (apt-get install chromium)'
                              % CHROMIUM),
]


def wait_for_claim(model, job, seconds=6):
    """Until a dispatcher took ``job`` (ASSIGNED, or ACTIVE if its start
    was committed apart from its result)."""
    deadline = time.monotonic() + seconds
    while True:
        model.sync()
        if job.status in (ASSIGNED, ACTIVE):
            return
        assert time.monotonic() < deadline, '%r was not claimed' % (job,)
        time.sleep(0.01)


@pytest.fixture
def served(tmp_path):
    """The app on a free local port, served by waitress in a thread."""
    with serving(make_app(tmp_path)) as (app, base, model):
        yield app, base, model


@contextlib.contextmanager
def serving(app):
    """``app`` (its dispatcher polled once) served by waitress in a thread
    on a free local port: (app, its base URL, a Model); all closed after."""
    get_poll(app.registry.zcasync_dispatcher, 0)
    server = waitress.create_server(app, host='127.0.0.1', port=0,
                                    threads=4)
    thread = threading.Thread(target=server.run, daemon=True,
                              name='waitress')
    thread.start()
    model = Model(app)
    try:
        yield app, 'http://127.0.0.1:%s' % server.effective_port, model
    finally:
        model.close()
        stop_server(server, thread)
        close_databases(app.registry)


def stop_server(server, thread):
    """Close waitress's sockets from its own loop (closing them from here
    would pull them from under its select), then its worker threads."""
    def close_all():
        for channel in list(server._map.values()):
            channel.close()
    server.trigger.pull_trigger(close_all)
    thread.join(5)
    server.task_dispatcher.shutdown()
    assert not thread.is_alive(), 'waitress did not stop'


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_admin_sees_a_traceback_retries_and_sees_it_complete(
        served, browser, tmp_path):
    app, base, model = served
    flag = tmp_path / 'broken'
    flag.write_text('the cause of the failure')
    hold = tmp_path / 'hold'
    hold.write_text('keep the report running')
    # Real work for the page: results, two failures, a running job, jobs
    # waiting for later, and a sibling dispatcher that died with a job.
    done = [model.put(jobs.multiply, n, 7) for n in range(1, 9)]
    crash = model.put(jobs.divide, 1, 0)
    broken = model.put(jobs.fail_while_flag, str(flag))
    for job in done + [crash, broken]:
        wait_for_result(job)
    held = model.put(jobs.annotate_and_hold, str(hold), 45)
    wait_for_claim(model, held)
    make_dead_dispatcher(model)
    for hours in (1, 2, 6):
        model.put(jobs.multiply, hours, 60,
                  begin_after=later(hours) + datetime.timedelta(minutes=7))

    context = browser.new_context(viewport={'width': 1360, 'height': 900},
                                  device_scale_factor=1)
    context.add_cookies([{'name': 'admin', 'value': 'yes',
                          'url': base + '/'}])
    page = context.new_page()
    problems = []
    page.on('console', lambda message: problems.append(message.text)
            if message.type == 'error' else None)
    page.on('pageerror', lambda error: problems.append(str(error)))
    page.set_default_timeout(15000)
    try:
        page.goto(base + '/_async/')
        expect(page.locator('#me')).to_contain_text('RUNNING')
        row = page.locator('tr', has=page.locator(
            'details[data-key="tb-%d"]' % oid(broken)))
        expect(row).to_contain_text('RuntimeError')
        traceback = row.locator('pre.tb')
        expect(traceback).to_be_hidden()
        row.locator('summary').click()
        expect(traceback).to_be_visible()
        expect(traceback).to_contain_text('Traceback (most recent call last)')
        expect(traceback).to_contain_text('in fail_while_flag')
        expect(traceback).to_contain_text('the flag file')
        # An open traceback stays open through the page's own refresh.
        updated = page.locator('#updated').inner_text()
        expect(page.locator('#updated')).not_to_have_text(updated,
                                                          timeout=12000)
        expect(traceback).to_be_visible()
        shot = page.screenshot(path=SCREENSHOT or None, full_page=True)
        assert shot[:8] == b'\x89PNG\r\n\x1a\n' and len(shot) > 10000

        flag.unlink()  # the operator fixes the cause, then retries
        # (pausing the refresh, so the button is not swapped mid-click)
        page.locator('#autorefresh').uncheck()
        row.get_by_role('button', name='Retry').click()
        page.wait_for_url(re.compile(r'/_async/(\?.*)?$'))
        expect(page.locator('.flash')).to_contain_text(
            'Job 0x%x was queued again' % oid(broken))
        assert wait_for_result(broken) == 'recovered'
        # The page may have been rendered while it ran: its own refresh
        # (every 5 s) shows the result.
        completed = page.locator('section', has=page.locator(
            'h2', has_text='Recently completed'))
        expect(completed.locator('tr', has_text='0x%x' % oid(broken))
               ).to_contain_text("'recovered'", timeout=15000)
        expect(page.locator('details[data-key="tb-%d"]' % oid(broken))
               ).to_have_count(0)
        expect(page.locator('details[data-key="tb-%d"]' % oid(crash))
               ).to_have_count(1)
        assert problems == []
    finally:
        hold.unlink()
        context.close()
