"""What a job changed, and a replay of a failure, from its page in a real
browser (Debian's chromium through playwright): an admin opens a job that
changed an object of the app and sees its path; opens a failed job,
presses "Replay (dry run)", confirms, and reads the replay's traceback;
the database's last transaction is the same afterwards."""
import re

import pytest
from ZODB.utils import p64, u64

import apptree
from pyramid_zcasync.testing import wait_for_result
from test_dashboard import make_app, oid
# (pytestmark: skipped where playwright or chromium is absent)
from test_dashboard_browser import browser, pytestmark  # noqa: F401
from test_dashboard_browser import serving

RECORDER = {'zcasync.extensions': 'pyramid_zcasync.changes.ChangeRecorder'}


@pytest.fixture
def served(tmp_path):
    """The dashboard tests' app with the change recorder and a site of
    locatable objects, served by waitress on a free local port."""
    with serving(make_app(tmp_path, **RECORDER)) as (app, base, model):
        apptree.make_site(model.connection.db())
        model.sync()
        yield base, model


@pytest.fixture
def page(served, browser):
    base, model = served
    context = browser.new_context(viewport={'width': 1360, 'height': 900})
    context.add_cookies([{'name': 'admin', 'value': 'yes',
                          'url': base + '/'}])
    opened = context.new_page()
    opened.set_default_timeout(15000)
    try:
        yield opened, base, model
    finally:
        context.close()


def test_a_jobs_changes_and_the_replay_of_a_failure(page, tmp_path):
    from playwright.sync_api import expect
    browser_page, base, model = page
    docs = model.connection.root()['site']['docs']
    changed = model.put(apptree.set_value, docs['a'], 8)
    failed = model.put(apptree.set_then_fail, docs['b'], 9)
    for job in (changed, failed):
        wait_for_result(job)

    browser_page.goto(base + '/_async/jobs/%d' % oid(changed))
    table = browser_page.locator('#changes table.changes')
    expect(table).to_contain_text('/docs/a')
    expect(table).to_contain_text('apptree.Item')
    expect(browser_page.get_by_role('button', name='Undo its changes')
           ).to_be_visible()

    storage = model.connection.db().storage
    before = storage.lastTransaction()
    browser_page.goto(base + '/_async/jobs/%d' % oid(failed))
    expect(browser_page.locator('#changes')).to_contain_text('Not recorded')
    browser_page.get_by_role('button', name='Replay (dry run)').click()
    browser_page.wait_for_url(re.compile(r'/_async/actions/replay$'))
    expect(browser_page.locator('.warning')).to_contain_text('RE-RUNS')
    browser_page.get_by_role('button', name='Yes, run it in a copy').click()
    trial = browser_page.locator('section.trial')
    expect(trial).to_contain_text('replay of job %d: failed' % oid(failed))
    expect(trial).to_contain_text('nothing was committed')
    expect(trial.locator('pre.traceback')).to_contain_text(
        'failed after setting 9')
    expect(trial.locator('table.changes')).to_contain_text('/docs/b')
    browser_page.screenshot(path=str(tmp_path / 'replay.png'), full_page=True)
    # Nothing reached the database: the dispatcher's pings may have
    # committed since, but no transaction wrote the app's objects.
    app_oids = {docs._p_oid, docs['a']._p_oid, docs['b']._p_oid}
    assert not written_since(storage, before) & app_oids
    model.sync()
    assert docs['b'].value == 2  # as before the failed attempt


def written_since(storage, tid):
    """The oids the transactions committed after ``tid`` wrote."""
    after = p64(u64(tid) + 1)
    return {record.oid for transaction in storage.iterator(after)
            for record in transaction}
