"""What a job changed, which jobs touched an object, dry runs and
replays: the questions (typed, shared with ``pzcasync``) and their views.

- ``GET /db/jobs/{oid}/changes``: the objects the job's last successful
  run changed (:func:`pyramid_zcasync.changes.of`);
- ``GET /db/touched?oid=OID[&database=NAME]`` or ``?path=/a/b``: the
  latest jobs whose runs changed that object, newest first;
- ``POST /actions/dryrun`` (a pending job, on the current data) and
  ``POST /actions/replay`` (a completed one, on the data its attempt
  read), with ``oid`` and ``confirm=yes``: both RE-RUN THE JOB'S CODE in
  a throw-away copy of the database (replay.py), so without ``confirm``
  a browser gets a page asking to confirm, and JSON a 400 saying why.
  Nothing is committed to the real database either way.

Both need the change recorder (``pyramid_zcasync.changes.ChangeRecorder``
in ``zcasync.extensions``) for what runs changed; dry runs and replays
work without it (a replay then reads the data just before the job's last
transaction).  Every text from a job or an object (class names, paths,
results, tracebacks) is escaped where shown.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict

from pyramid.response import Response

from .. import changes, replay, undo
from ..safetext import clip, quote
from . import add_admin_view, route_name
from .actions import check_csrf, refusal, wants_html
from .format import ParameterError, parse_oid
from .html import Forms
from .pages import page
from .queries import JobRef, find_job, read_ref, stored_job
from .reports import callable_name, outcome

#: The routes of this module: name suffix -> pattern under the prefix.
ROUTES = (
    ('db_changes', '/db/jobs/{oid}/changes'),
    ('db_touched', '/db/touched'),
    ('dryrun', '/actions/dryrun'),
    ('replay', '/actions/replay'),
    ('undo', '/actions/undo'),
)
#: What re-running a job means, said wherever one is asked for.
WARNING = ('This RE-RUNS the job\'s code in a throw-away copy of the '
           'database: nothing it changes in the database is kept, but '
           'whatever it does outside it (mail, files, HTTP calls) happens '
           'again.')


#: One changed object ('class' is a keyword, hence this spelling).
ChangeInfo = TypedDict('ChangeInfo', {
    'database': str, 'oid': int, 'class': str, 'path': Optional[str],
    'created': bool})


class ChangesInfo(TypedDict):
    job: int
    recorded: bool
    changes: List[ChangeInfo]
    more: int
    read_before: Dict[str, str]


class TouchingJob(TypedDict):
    oid: int
    callable: Optional[str]
    status: str


class TouchedInfo(TypedDict):
    key: str
    jobs: List[TouchingJob]


class TrialInfo(TypedDict):
    kind: str
    job: int
    read_before: Dict[str, str]
    source: str
    succeeded: bool
    result: str
    traceback: str
    changes: List[ChangeInfo]
    more: int


# -- the questions ------------------------------------------------------

def change_info(change: changes.Change) -> ChangeInfo:
    return {'database': change.database, 'oid': change.oid,
            'class': change.class_name, 'path': change.path or None,
            'created': change.created}


def point_info(point: changes.ReadPoint) -> Dict[str, str]:
    """Database -> the tid (hex) its data was read before."""
    return {name: '0x%016x' % tid for name, tid in point}


def job_changes(queues: Any, ref: JobRef) -> ChangesInfo:
    return changes_info(find_job(queues, ref))


def changes_info(job: Any) -> ChangesInfo:
    """What ``job``'s last successful run changed (also the job page's)."""
    found = changes.of(job)
    return {'job': int.from_bytes(job._p_oid, 'big'),
            'recorded': found.recorded,
            'changes': [change_info(c) for c in found.changes],
            'more': found.more, 'read_before': point_info(found.read_before)}


def touched_key(queues: Any, oid: Optional[str], path: Optional[str],
                database: Optional[str]) -> str:
    """The index key for ``oid`` (in ``database``, by default the
    queues') or ``path``: exactly one of them."""
    if (oid is None) == (path is None):
        raise ParameterError('give one of oid (an object\'s oid, decimal '
                             'or 0x hex) and path (/a/b)')
    if path is not None:
        if not path.startswith('/'):
            raise ParameterError('path %s must start with /' % quote(path))
        return changes.path_key(path.rstrip('/') or '/')
    name = database or queues._p_jar.db().database_name
    return changes.oid_key(name, parse_oid(oid or ''))


def touching_job(queues: Any, oid: int) -> TouchingJob:
    try:
        job = stored_job(queues._p_jar, oid)
    except ParameterError:  # removed since: say so, do not fail the list
        return {'oid': oid, 'callable': None, 'status': 'gone'}
    return {'oid': oid, 'callable': callable_name(job.callable),
            'status': outcome(job)}


def touched(queues: Any, key: str) -> TouchedInfo:
    """The latest jobs (at most changes.TOUCHED_LIMIT) recorded as
    changing the object of ``key``, newest first."""
    return {'key': key, 'jobs': [
        touching_job(queues, oid)
        for oid in changes.touched(queues._p_jar, key)]}


def trial(queues: Any, ref: JobRef, kind: str) -> TrialInfo:
    """A dry run (``dryrun``) or replay (``replay``) of the job; a job
    that cannot be tried is a 400 saying why."""
    job = find_job(queues, ref)
    try:
        done = replay.dry_run(job) if kind == 'dryrun' else \
            replay.replay(job)
    except replay.Refused as exc:
        raise ParameterError(str(exc), 409) from None
    return {'kind': done.kind, 'job': done.job,
            'read_before': point_info(done.read_before),
            'source': done.source, 'succeeded': done.succeeded,
            'result': done.result, 'traceback': done.traceback,
            'changes': [change_info(c) for c in done.changes],
            'more': done.more}


class UndoneInfo(TypedDict):
    job: int
    reverted: List[ChangeInfo]
    left_created: int


def undo_run(queues: Any, ref: JobRef, who: str) -> UndoneInfo:
    """Revert what the job's last run changed, in the caller's
    transaction (it commits); refused (409) with the reason."""
    try:
        done = undo.undo(find_job(queues, ref), who)
    except undo.Refused as exc:
        raise ParameterError('cannot undo: %s' % exc, 409) from None
    return {'job': ref.oid,
            'reverted': [change_info(c) for c in done.reverted],
            'left_created': done.left_created}


# -- views ------------------------------------------------------------------

def job_changes_view(request: Any) -> ChangesInfo:
    return job_changes(request.async_queues, read_ref(
        request.matchdict['oid'], request.params.get('database')))


def touched_view(request: Any) -> TouchedInfo:
    params = request.params
    return touched(request.async_queues, touched_key(
        request.async_queues, params.get('oid'), params.get('path'),
        params.get('database')))


def trial_view(kind: str) -> Any:
    def view(request: Any) -> Response:
        check_csrf(request)
        ref = read_ref(request.params.get('oid', ''),
                       request.params.get('database'))
        if request.params.get('confirm') != 'yes':
            return unconfirmed(request, kind, ref)
        try:
            info = trial(request.async_queues, ref, kind)
        except ParameterError as exc:
            return error(request, exc)
        if wants_html(request):
            return html('trial.jinja2', request, info=info,
                        title='%s of job %s' % (info['kind'], info['job']))
        return Response(json_body=info)
    return view


def undo_view(request: Any) -> Response:
    """Undo, admin only (as every view here) and CSRF-checked; the
    request's transaction commits it (a refusal changes nothing)."""
    check_csrf(request)
    ref = read_ref(request.params.get('oid', ''),
                   request.params.get('database'))
    who = clip(str(request.authenticated_userid or 'an admin'), 40)
    try:
        info = undo_run(request.async_queues, ref, 'admin %s' % who)
    except ParameterError as exc:
        return error(request, exc)
    if wants_html(request):
        return html('undone.jinja2', request, info=info,
                    title='Undone: job %s' % info['job'])
    return Response(json_body=info)


def unconfirmed(request: Any, kind: str, ref: JobRef) -> Response:
    if wants_html(request):
        button = Forms(request).button(
            kind, {'oid': ref.oid, 'database': ref.database or '',
                   'confirm': 'yes'}, 'Yes, run it in a copy')
        return html('confirm.jinja2', request, kind=kind, oid=ref.oid,
                    warning=WARNING, button=button,
                    title='%s of job %s?' % (kind, ref.oid))
    return error(request, ParameterError(
        WARNING + ' Send confirm=yes to go ahead.'))


def error(request: Any, exc: ParameterError) -> Response:
    return refusal(request, exc.status, exc.message)


def html(template: str, request: Any, status: int = 200, **values: Any
         ) -> Response:
    """A page of the admin's frame (templates/page.jinja2), escaped as
    every admin page is."""
    return page(template, status=status, title='%s \u00b7 background jobs'
                % values.pop('title'), search=None,
                dashboard_url=dashboard_url(request), **values)


def dashboard_url(request: Any) -> str:
    return str(request.route_path(route_name('dashboard')))


def includeme(config: Any) -> None:
    prefix = config.registry.zcasync_settings.route_prefix
    for name, pattern in ROUTES:
        config.add_route(route_name(name), prefix + pattern)
    add_admin_view(config, job_changes_view, 'db_changes',
                   request_method='GET')
    add_admin_view(config, touched_view, 'db_touched', request_method='GET')
    for kind in ('dryrun', 'replay'):
        add_admin_view(config, trial_view(kind), kind, request_method='POST',
                       require_csrf=False, renderer=None)
    add_admin_view(config, undo_view, 'undo', request_method='POST',
                   require_csrf=False, renderer=None)
