"""/_async/metrics: Prometheus exposition of real jobs run by the real
dispatcher, protected, and counting each completion once."""
import datetime
import operator
import time

import pytest
import transaction
import webtest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from pyramid.config import Configurator

import jobs
from pyramid_zcasync import clock
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import get_poll, wait_for_result, wait_for_start
from pyramid_zcasync.extensions import RunReport
from pyramid_zcasync.views.metrics import JobTotals
from adminapp import HeaderPolicy

ADMIN = {'X-Admin': 'yes'}


@pytest.fixture
def app(tmp_path):
    settings = {
        'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
        'zcasync.dispatcher': 'true',
        'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
        'zcasync.poll_interval': '0.5',
    }
    with Configurator(settings=settings) as config:
        config.set_security_policy(HeaderPolicy())
        config.include('pyramid_zcasync')
        made = config.make_wsgi_app()
    try:
        get_poll(made.registry.zcasync_dispatcher, 0)  # RUNNING from now
        yield made
    finally:
        close_databases(made.registry)


def put(app, func, *args, **options):
    connection = app.registry._zodb_databases[''].open()
    job = IQueue(connection.root()).put(func, *args, **options)
    transaction.commit()
    return job


def wait_in_history(app, job, seconds=6):
    """The dispatcher records the outcome just after the job's commit."""
    dispatcher = app.registry.zcasync_dispatcher
    job_id = (int.from_bytes(job._p_oid, 'big'),
              dispatcher.db.database_name)
    deadline = time.monotonic() + seconds
    while not (dispatcher.jobs.get(job_id) or {}).get('completed'):
        assert time.monotonic() < deadline, 'no outcome for %r' % job
        time.sleep(0.01)


def scrape(client):
    response = client.get('/_async/metrics', headers=ADMIN)
    assert response.headers['Content-Type'] == CONTENT_TYPE_LATEST
    found = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith('zcasync_') and family.documentation
        for sample in family.samples:
            key = (sample.name,) + tuple(sorted(sample.labels.items()))
            found[key] = sample.value
    return found


def test_metrics_of_real_jobs(app, tmp_path):
    client = webtest.TestApp(app)
    later = clock.utcnow() + datetime.timedelta(hours=1)
    put(app, operator.mul, 2, 3, begin_after=later)
    put(app, operator.mul, 4, 5, begin_after=later)
    done = [put(app, operator.mul, 6, 7), put(app, operator.mul, 8, 9),
            put(app, operator.truediv, 1, 0)]
    for job in done:
        wait_for_result(job)
        wait_in_history(app, job)
    hold = tmp_path / 'hold'
    hold.write_text('')
    held = put(app, jobs.annotate_and_hold, str(hold))
    wait_for_start(held)

    found = scrape(client)
    assert found[('zcasync_queue_pending', ('queue', ''))] == 2
    assert found[('zcasync_jobs', ('queue', ''), ('state', 'pending'))] == 2
    assert found[('zcasync_jobs', ('queue', ''), ('state', 'active'))] == 1
    assert found[('zcasync_jobs', ('queue', ''), ('state', 'assigned'))] == 0
    assert found[('zcasync_jobs_completed_total', ('queue', ''))] == 3
    assert found[('zcasync_jobs_failed_total', ('queue', ''))] == 1
    assert found[('zcasync_job_pickup_seconds_count', ('queue', ''))] == 3
    assert found[('zcasync_job_pickup_seconds_bucket', ('le', '+Inf'),
                  ('queue', ''))] == 3
    assert found[('zcasync_job_pickup_seconds_sum', ('queue', ''))] >= 0
    uuid = app.registry.zcasync_dispatcher.UUID
    assert found[('zcasync_dispatcher_up', ('uuid', uuid))] == 1
    assert found[('zcasync_database_up',)] == 1

    hold.unlink()
    wait_for_result(held)
    wait_in_history(app, held)
    again, third = scrape(client), scrape(client)
    assert again == third  # scraping changes nothing
    assert again[('zcasync_jobs_completed_total', ('queue', ''))] == 4
    assert again[('zcasync_jobs_failed_total', ('queue', ''))] == 1
    assert again[('zcasync_job_pickup_seconds_count', ('queue', ''))] == 4
    assert again[('zcasync_jobs', ('queue', ''), ('state', 'active'))] == 0


def test_metrics_need_the_admin_permission(app):
    client = webtest.TestApp(app)
    for headers in ({}, {'X-Admin': 'no'}):
        response = client.get('/_async/metrics', headers=headers, status=403)
        assert 'zcasync_' not in response.text
    client.get('/_async/metrics', headers=ADMIN, status=200)


def test_totals_count_each_reported_run_once():
    """Runs are counted as they are reported (a retried job's every run),
    not re-read from the bounded history at each scrape."""
    totals = JobTotals()

    def run(job_id, failed, pickup, queue='q'):
        totals.after_run(RunReport(
            job_id=job_id, database='', queue=queue, agent='main',
            dispatcher='u', status='completed-status', failed=failed,
            result='', pickup=pickup))

    run(1, False, 0.002)
    run(2, True, 20.0)
    run(2, False, 0.5)  # the same job, run again
    run(3, False, None, queue='other')  # no start time known
    assert totals.completed == {'q': 3, 'other': 1}
    assert totals.failed == {'q': 1}
    counts, total = totals.pickup['q']
    assert sum(counts) == 3 and counts[-1] == 1  # 20 s: above 10 s
    assert total == pytest.approx(20.502)
    assert 'other' not in totals.pickup
