"""The demo in a real browser (Debian's chromium through playwright),
served by a real ``pserve development.ini``, as a newcomer sees it: a job
that fails reads "failed" once the page's script updates its row; the
page's dashboard link leads through the login form to the dashboard;
logging out closes it again."""
import re

import pytest

from test_dashboard_browser import browser, expect, pytestmark  # noqa: F401
from test_demo import processes, pserved, site  # noqa: F401

#: development.ini's, which README's first paragraph gives.
PASSWORD = 'dev-only-admin'


@pytest.fixture
def served(pserved):
    return 'http://127.0.0.1:%d' % pserved[1]


def test_failed_job_then_login_to_the_dashboard(served, browser):
    context = browser.new_context()
    page = context.new_page()
    problems = []
    page.on('pageerror', lambda error: problems.append(str(error)))
    page.set_default_timeout(15000)
    try:
        page.goto(served + '/')
        page.select_option('select[name=kind]', 'fail')
        # Due in a second: the page shows it pending, its script then
        # updates the row.
        page.fill('input[name=delay]', '1')
        page.get_by_role('button', name='Queue the job').click()
        row = page.locator('tr.highlight')
        expect(row.locator('.status')).to_have_text('failed')
        expect(row).to_have_class(re.compile(r'(^|\s)failed(\s|$)'))
        expect(row).not_to_have_class(re.compile('completed'))
        expect(row.locator('.result')).to_contain_text('ValueError')

        page.get_by_role('link', name='admin dashboard').click()
        expect(page.locator('h1')).to_have_text('Log in')
        page.fill('input[name=password]', 'wrong')
        page.get_by_role('button', name='Log in').click()
        expect(page.locator('.error')).to_contain_text('Wrong user or '
                                                       'password')
        page.fill('input[name=password]', PASSWORD)
        page.get_by_role('button', name='Log in').click()
        page.wait_for_url(served + '/_async/')
        expect(page.locator('#me')).to_contain_text('RUNNING')

        page.goto(served + '/')
        expect(page.locator('nav.admin')).to_contain_text(
            'Logged in as admin')
        page.get_by_role('button', name='Log out').click()
        # (page.request shares the page's cookies; navigating to a 401
        # would be headless chromium's basic-auth error page.)
        expect(page.locator('nav.admin')).to_contain_text('log in as')
        assert page.request.get(served + '/_async/status').status == 401
        assert problems == []
    finally:
        context.close()
