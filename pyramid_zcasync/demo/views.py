"""The demo's views: the page, the form's POST, one job as JSON.

The POST puts the job with ``request.async_queue``, in the request's
transaction: pyramid_tm commits it with the response, and the dispatcher
is woken by that commit.  So the redirect is *returned*, never raised (a
raised HTTP exception makes pyramid_tm abort, and the job would be lost),
and bad input is refused before anything is put.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import datetime

from pyramid.csrf import get_csrf_token
from pyramid.exceptions import BadCSRFToken
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response

from .. import dispatcher as dispatcher_module
from . import form, page, recent
from .jobs import KINDS


def wants_json(request: Any) -> bool:
    offers = request.accept.acceptable_offers(['text/html',
                                               'application/json'])
    return bool(offers) and offers[0][0] == 'application/json'


def _dispatcher_line() -> str:
    running = dispatcher_module.get()
    if running is None:
        return ('No dispatcher runs in this process (zcasync.dispatcher is '
                'off, or ZCASYNC_DISPATCHER=0): jobs wait in the queue until '
                'one runs.')
    return ('Dispatcher %s is running here: it polls every %g s, and at '
            'once when this process commits a job.'
            % (running.UUID, running.poll_interval))


def _job_number(text: str) -> Optional[int]:
    """A job id typed in a URL, or None: ASCII digits, at most 20 (an oid
    has 64 bits).  ``isdigit`` alone lets '²' through, and ``int`` of
    4,301 digits raises: both were 500s for anyone."""
    if 0 < len(text) <= 20 and text.isascii() and text.isdigit():
        return int(text)
    return None


def _highlight(request: Any) -> Optional[int]:
    return _job_number(request.GET.get('job', ''))


def _admin_links(request: Any) -> page.AdminLinks:
    dashboard = request.route_path('zcasync.dashboard')
    status = request.route_path('zcasync.status')
    logged_in = request.authenticated_userid is not None
    if not logged_in:
        dashboard, status = (
            request.route_path('login', _query={'came_from': path})
            for path in (dashboard, status))
    return page.AdminLinks(
        logged_in=logged_in, dashboard=dashboard, status=status,
        status_path=request.route_path('zcasync.status'),
        logout=request.route_path('logout'))


def _page(request: Any, values: Dict[str, Any], error: Optional[str] = None,
          status: int = 200) -> Response:
    csrf_token = get_csrf_token(request)
    body = page.render(
        request, action=request.route_path('home'),
        job_url=request.route_path('job', oid='OID'),
        csrf_token=csrf_token, values=values,
        jobs=[recent.describe(job) for job in recent.newest_first(request)],
        dispatcher=_dispatcher_line(), error=error,
        admin=_admin_links(request),
        highlight=_highlight(request))
    return Response(body, status=status, content_type='text/html',
                    charset='utf-8')


def home(request: Any) -> Response:
    return _page(request, dict(form.DEFAULTS))


def enqueue(request: Any) -> Any:
    """Check the form, put the job, redirect to the page (303, so a reload
    does not post again); JSON clients get the job's oid instead."""
    try:
        order = form.parse(request.POST)
    except form.BadInput as bad:
        if wants_json(request):
            return _json_error(request, 400, str(bad))
        return _page(request, form.echo(request.POST), error=str(bad),
                     status=400)
    begin_after = None
    if order.delay:
        begin_after = (datetime.datetime.now(datetime.timezone.utc)
                       + datetime.timedelta(seconds=order.delay))
    function = KINDS[order.kind][0]
    job = request.async_queue.put(function, order.a, order.b,
                                  begin_after=begin_after)
    oid = recent.remember(request, job)
    if wants_json(request):
        request.response.status = 201
        return {'oid': oid, 'url': request.route_url('job', oid=oid)}
    return HTTPSeeOther(location=request.route_url('home',
                                                   _query={'job': oid}))


def _json_error(request: Any, status: int, message: str) -> Response:
    return Response(json_body={'error': message}, status=status)


def job_json(request: Any) -> Any:
    text = request.matchdict['oid']
    number = _job_number(text)
    if number is None:
        return _json_error(request, 400, '%r is not a job id (a whole '
                           'number, at most 20 digits)'
                           % text[:form.QUOTE_LENGTH])
    job = recent.lookup(request, number)
    if job is None:
        return _json_error(request, 404, 'no job %s among the %d recent '
                           'jobs of this demo' % (text, recent.LIMIT))
    return recent.describe(job)


def bad_csrf(exc: Any, request: Any) -> Response:
    """A clear 400 instead of Pyramid's bare one; pyramid_tm aborts the
    request's transaction, so nothing was queued."""
    message = ('The form was refused: its CSRF token is missing or does not '
               "match this browser's session (the session cookie may have "
               'expired, or demo.secret changed). Nothing was queued; '
               'reload the page and submit again.')
    if wants_json(request):
        return _json_error(request, 400, message)
    return _page(request, form.echo(request.POST), error=message, status=400)


def includeme(config: Any) -> None:
    config.add_route('home', '/')
    config.add_route('job', '/jobs/{oid}')
    config.add_view(home, route_name='home', request_method='GET')
    config.add_view(enqueue, route_name='home', request_method='POST',
                    renderer='json')
    config.add_view(job_json, route_name='job', request_method='GET',
                    renderer='json')
    config.add_view(bad_csrf, context=BadCSRFToken)
