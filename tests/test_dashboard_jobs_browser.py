"""The job search, a job's page and the bulk retry in a real browser
(Debian's chromium through playwright): an admin searches the failures of
one callable, opens one to read its life log and traceback, then ticks
both and retries them, and sees them succeed; on the dashboard, ticks
two pending jobs (the page stops refreshing meanwhile) and cancels
them."""
import re

import pytest

import jobs
from pyramid_zcasync.interfaces import COMPLETED
from pyramid_zcasync.testing import wait_for_result
from test_dashboard import later, oid
# (pytestmark: skipped where playwright or chromium is absent)
from test_dashboard_browser import (browser, pytestmark,  # noqa: F401
                                    served)


@pytest.fixture
def page(served, browser):
    app, base, model = served
    context = browser.new_context(viewport={'width': 1360, 'height': 900})
    context.add_cookies([{'name': 'admin', 'value': 'yes',
                          'url': base + '/'}])
    opened = context.new_page()
    opened.set_default_timeout(15000)
    problems = []
    opened.on('console', lambda message: problems.append(message.text)
              if message.type == 'error' else None)
    opened.on('pageerror', lambda error: problems.append(str(error)))
    try:
        yield opened, base, model, problems
    finally:
        context.close()


def test_search_open_a_job_and_bulk_retry_two(page, tmp_path):
    from playwright.sync_api import expect
    browser_page, base, model, problems = page
    flag = tmp_path / 'broken'
    flag.write_text('the cause of the failure')
    broken = [model.put(jobs.fail_while_flag, str(flag)) for _ in range(2)]
    others = [model.put(jobs.multiply, 6, 7), model.put(jobs.divide, 1, 0)]
    for job in broken + others:
        wait_for_result(job)

    # search from the dashboard: by callable and status
    browser_page.goto(base + '/_async/')
    browser_page.get_by_label('Callable contains').fill('FAIL_WHILE')
    browser_page.get_by_label('Status').select_option('failed')
    browser_page.get_by_role('button', name='Search').click()
    browser_page.wait_for_url(re.compile(r'/_async/search\?'))
    rows = browser_page.locator('section.results tbody tr')
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text('jobs.fail_while_flag')
    expect(rows.first).to_contain_text('failed')
    browser_page.screenshot(path=str(tmp_path / 'found.png'), full_page=True)

    # a job's page: its life log and its traceback
    browser_page.get_by_role('link', name='0x%x' % oid(broken[0])).click()
    browser_page.wait_for_url(re.compile(r'/_async/jobs/%d$'
                                         % oid(broken[0])))
    expect(browser_page.locator('#events table')).to_contain_text(
        'active \u2192 completed')
    expect(browser_page.locator('#outcome pre.tb')).to_contain_text(
        'in fail_while_flag')
    expect(browser_page.locator('#outcome')).to_contain_text('the flag file')
    expect(browser_page.get_by_role('button', name='Retry')).to_be_visible()
    browser_page.screenshot(path=str(tmp_path / 'job.png'), full_page=True)

    # back to the results: tick both, retry them
    browser_page.go_back()
    flag.unlink()  # the operator fixed the cause
    for job in broken:
        browser_page.get_by_label('select job 0x%x' % oid(job)).check()
    browser_page.get_by_role('button', name='Retry selected').click()
    expect(browser_page.locator('.flash')).to_contain_text(
        'Retried 2 of 2 selected job(s).')
    for job in broken:
        assert wait_for_result(job) == 'recovered'

    # they ran again: their pages say so
    browser_page.get_by_role('link', name='0x%x' % oid(broken[1])).click()
    expect(browser_page.locator('h2.job-head')).to_contain_text('succeeded')
    expect(browser_page.locator('#outcome')).to_contain_text("'recovered'")
    expect(browser_page.locator('#events')).to_contain_text(
        'completed \u2192 new')
    assert problems == []


def test_select_pending_jobs_on_the_dashboard_and_cancel_them(page):
    from playwright.sync_api import expect
    browser_page, base, model, problems = page
    waiting = [model.put(jobs.multiply, n, 2, begin_after=later())
               for n in range(3)]
    browser_page.on('dialog', lambda dialog: dialog.accept())
    browser_page.goto(base + '/_async/')
    for job in waiting[:2]:
        browser_page.get_by_label('select job 0x%x' % oid(job)).check()
    # a refresh now would drop the ticks: the page waits (every 5 s)
    updated = browser_page.locator('#updated').inner_text()
    browser_page.wait_for_timeout(6000)
    expect(browser_page.locator('#updated')).to_have_text(updated)
    browser_page.get_by_role('button', name='Cancel selected').click()
    expect(browser_page.locator('.flash')).to_contain_text(
        'Cancelled 2 of 2 selected job(s).')
    model.sync()
    assert [job.status == COMPLETED for job in waiting] == [True, True,
                                                            False]
    assert problems == []
