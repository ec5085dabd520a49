"""A job of a Pyramid app runs with the app's registry and can make URLs."""
import transaction
from pyramid.config import Configurator

import jobs
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import wait_for_result


def make_app(tmp_path, **extra):
    settings = {'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
                'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
                'zcasync.dispatcher': 'true', 'zcasync.poll_interval': '0.5',
                'custom.setting': 'from the ini'}
    settings.update(extra)
    with Configurator(settings=settings) as config:
        config.include('pyramid_zcasync')
        config.add_route('home', '/hello/{name}')
        return config.make_wsgi_app()


def run(app, func):
    connection = app.registry._zodb_databases[''].open()
    job = IQueue(connection.root()).put(func)
    transaction.commit()
    try:
        return wait_for_result(job)
    finally:
        connection.close()


def test_a_job_sees_its_apps_registry_and_makes_urls(tmp_path):
    app = make_app(tmp_path, **{'zcasync.app_url': 'https://example.com/app'})
    try:
        assert run(app, jobs.pyramid_context) == (
            'from the ini', 'https://example.com/app/hello/ann', True)
    finally:
        close_databases(app.registry)


def test_without_app_url_urls_point_at_localhost(tmp_path):
    app = make_app(tmp_path)
    try:
        assert run(app, jobs.pyramid_context)[1] == \
            'http://localhost/hello/ann'
    finally:
        close_databases(app.registry)


def test_outside_a_job_there_is_no_request():
    from pyramid_zcasync import local
    assert local.get_request() is None
