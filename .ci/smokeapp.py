"""The app README's "Install into your own app" builds, as .ci/wheel_smoke.py
serves it from the installed wheel: a cookiecutter-style app factory that
includes pyramid_zcasync, a view that queues a job and answers its oid, a
view that shows a job by its oid, and a security policy and session
factory for the admin views (granted here to a header, for the test)."""
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPNotFound
from pyramid.security import Allowed, Denied
from pyramid.session import SignedCookieSessionFactory
from pyramid.view import view_config
from ZODB.utils import p64, u64

from pyramid_zcasync import Job


def square(number):
    """The job: a module-level function, imported again by the worker."""
    return number * number


class AdminPolicy:
    def identity(self, request):
        return 'admin' if request.headers.get('X-Smoke-Admin') == 'yes' \
            else None

    def authenticated_userid(self, request):
        return self.identity(request)

    def permits(self, request, context, permission):
        if permission == 'zcasync.admin' and self.identity(request):
            return Allowed('admin')
        return Denied('not an admin')


@view_config(route_name='queue', request_method='POST', renderer='json')
def queue(request):
    job = request.async_queue.put(square, int(request.POST['number']))
    return {'oid': u64(job._p_oid)}


@view_config(route_name='job', renderer='json')
def job(request):
    found = request.async_queues._p_jar.get(p64(int(request.matchdict['oid'])))
    if not isinstance(found, Job):   # an oid can name any object
        raise HTTPNotFound()
    return {'status': found.status, 'result': found.result}


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.set_session_factory(
            SignedCookieSessionFactory(settings['smoke.secret']))
        config.set_security_policy(AdminPolicy())
        config.include('pyramid_zcasync')
        config.add_route('queue', '/queue')
        config.add_route('job', '/job/{oid}')
        config.scan(__name__)
    return config.make_wsgi_app()
