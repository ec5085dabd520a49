"""The demo's login form, logout, and what a visitor not logged in sees
instead of an admin view.

The form posts with the page's CSRF token (the demo requires one on every
POST), and a successful login gets a fresh token, so a token seen before
the login is worth nothing after it.  ``came_from`` brings the visitor
back where the 401 sent them from, and only to a path of this site.
"""
from __future__ import annotations

from typing import Any

from pyramid.csrf import get_csrf_token, new_csrf_token
from pyramid.httpexceptions import HTTPForbidden, HTTPSeeOther
from pyramid.renderers import render
from pyramid.response import Response
from pyramid.security import forget, remember

from .auth import ADMIN_USER, REALM
from .views import wants_json


def safe_target(request: Any, came_from: str) -> str:
    """``came_from`` if it is a path on this site, else the dashboard:
    the form must not be a way to send someone elsewhere."""
    local = came_from.startswith('/') and not came_from.startswith('//')
    if local and '\\' not in came_from and came_from.isprintable():
        return came_from
    return request.route_path('zcasync.dashboard')


def _html(request: Any, template: str, status: int, **values: Any
          ) -> Response:
    """A page of ``templates/``: the login form, or a refusal."""
    body = render('pyramid_zcasync.demo:templates/' + template, dict(
        values, home=request.route_path('home')), request=request)
    return Response(body, status=status, content_type='text/html',
                    charset='utf-8')


def _form(request: Any, came_from: str, error: str = '',
          user: str = ADMIN_USER,
          status: int = 200) -> Response:
    return _html(request, 'login.jinja2', status, title='Log in',
                 error=error, action=request.route_path('login'),
                 csrf_token=get_csrf_token(request), came_from=came_from,
                 user=user)


def login_form(request: Any) -> Response:
    return _form(request, request.GET.get('came_from', ''))


def login(request: Any) -> Response:
    """Check the credentials; on success remember the user in the session
    and go back (303) to where the visitor came from."""
    user = request.POST.get('user', '')
    password = request.POST.get('password', '')
    came_from = request.POST.get('came_from', '')
    policy = request.registry.demo_security_policy
    if not policy.check(user, password):
        return _form(request, came_from, status=403, user=user[:40],
                     error='Wrong user or password: nothing changed.')
    remember(request, ADMIN_USER)
    new_csrf_token(request)
    return HTTPSeeOther(location=safe_target(request, came_from))


def logout(request: Any) -> Response:
    forget(request)
    new_csrf_token(request)
    return HTTPSeeOther(location=request.route_url('home'))


def denied(exc: HTTPForbidden, request: Any) -> Response:
    """A visitor not logged in gets 401 with a basic-auth challenge (and a
    link to the form, for a browser whose user dismisses the prompt);
    JSON clients get a JSON error.  The admin, if ever refused, gets 403."""
    if request.authenticated_userid is not None:
        message, status = 'Forbidden, even to the demo admin.', 403
    else:
        message, status = ('This page is for the demo admin: log in '
                           'first.'), 401
    if wants_json(request):
        response = Response(json_body={'error': message}, status=status)
    else:
        login_url = request.route_path(
            'login', _query={'came_from': request.path_qs})
        response = _html(request, 'denied.jinja2', status,
                         title='Log in required' if status == 401
                         else 'Forbidden', message=message, login=login_url)
    if status == 401:
        response.headers['WWW-Authenticate'] = 'Basic realm="%s"' % REALM
    return response


def includeme(config: Any) -> None:
    config.add_route('login', '/login')
    config.add_route('logout', '/logout')
    config.add_view(login_form, route_name='login', request_method='GET')
    config.add_view(login, route_name='login', request_method='POST')
    config.add_view(logout, route_name='logout', request_method='POST')
    config.add_forbidden_view(denied)
