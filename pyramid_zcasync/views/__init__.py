"""The admin views under ``zcasync.route_prefix``: routes and security.

Pyramid lets every view through when the app has no security policy, so
"deny by default" is enforced here: each admin view requires
``zcasync.admin_permission`` *and* a security policy to grant it; with no
policy the answer is 403.  Only ``/health`` is public, and it tells
nothing but up or down.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from pyramid.httpexceptions import HTTPForbidden
from pyramid.interfaces import ISecurityPolicy

from ..safetext import install_log_filter
from .format import ParameterError, json_renderer

#: Route name suffix -> pattern under the prefix.
ROUTES = (
    ('dashboard', '/'),
    ('status', '/status'),
    ('poll', '/poll'),
    ('polls', '/polls'),
    ('dispatcher_jobs', '/dispatcher/jobs'),
    ('dispatcher_job', '/dispatcher/jobs/{oid}'),
    ('jobstats', '/jobstats'),
    ('utcnow', '/utcnow'),
    ('uuid', '/uuid'),
    ('db_uuids', '/db/uuids'),
    ('db_status', '/db/status'),
    ('db_jobs', '/db/jobs'),
    ('db_count', '/db/count'),
    ('db_jobstats', '/db/jobstats'),
    ('db_job', '/db/jobs/{oid}'),
    ('db_traceback', '/db/jobs/{oid}/traceback'),
    ('db_nextpending', '/db/nextpending'),
    ('db_lastcompleted', '/db/lastcompleted'),
    ('health', '/health'),
    ('metrics', '/metrics'),
    ('cancel', '/actions/cancel'),
    ('retry', '/actions/retry'),
    ('requeue', '/actions/requeue'),
    ('pause', '/actions/pause'),
    ('resume', '/actions/resume'),
    ('scale', '/actions/scale'),
    ('search', '/search'),
    ('job_page', '/jobs/{oid}'),
    ('retry_selected', '/actions/retry-selected'),
    ('cancel_selected', '/actions/cancel-selected'),
)

#: A view called as Pyramid calls a decorated view: (context, request).
View = Callable[[Any, Any], Any]

#: The renderer of the JSON admin views.
JSON_RENDERER = 'zcasync_json'
#: Headers of every admin answer, errors included: what it says about the
#: jobs must not stay in a shared or browser cache, nor be sniffed as HTML.
ADMIN_HEADERS = {'Cache-Control': 'no-store',
                 'X-Content-Type-Options': 'nosniff'}


def route_name(name: str) -> str:
    return 'zcasync.' + name


def includeme(config: Any) -> None:
    prefix = config.registry.zcasync_settings.route_prefix
    for name, pattern in ROUTES:
        config.add_route(route_name(name), prefix + pattern)
    config.add_route(route_name('dashboard_bare'), prefix)
    config.add_renderer(JSON_RENDERER, json_renderer())
    config.add_view(parameter_error, context=ParameterError,
                    renderer=JSON_RENDERER)
    # Job text reaches the events log too: escape it there (the engine's
    # loggers are set up here because every app includes these views).
    install_log_filter()
    for module in ('status', 'db', 'dashboard', 'search', 'jobpage', 'bulk',
                   'health', 'metrics', 'changes'):
        config.include('pyramid_zcasync.views.' + module)


def require_security_policy(view: View) -> View:
    """Deny when the app has no security policy (Pyramid would allow);
    mark every answer, errors too, not to be cached nor sniffed."""
    def guarded(context: Any, request: Any) -> Any:
        if request.registry.queryUtility(ISecurityPolicy) is None:
            raise HTTPForbidden()
        request.add_response_callback(_admin_headers)
        return view(context, request)
    return guarded


def _admin_headers(request: Any, response: Any) -> None:
    for name, value in ADMIN_HEADERS.items():
        response.headers[name] = value


def add_admin_view(config: Any, view: Callable[..., Any], name: str,
                   **options: Any) -> None:
    """An admin view: the admin permission, deny without a policy."""
    options.setdefault('renderer', JSON_RENDERER)
    config.add_view(
        view, route_name=route_name(name),
        permission=config.registry.zcasync_settings.admin_permission,
        decorator=require_security_policy, **options)


def parameter_error(exc: ParameterError, request: Any) -> Dict[str, str]:
    request.response.status_int = exc.status
    return {'error': exc.message}
