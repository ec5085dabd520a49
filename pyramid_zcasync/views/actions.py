"""The dashboard's POST actions: cancel a pending job, retry a failed job,
re-queue the jobs of a dead dispatcher, pause or resume a queue, scale an
agent.

Each requires the admin permission and a security policy (as every admin
view), then a valid CSRF token.  The token is checked here, in the view,
rather than with ``require_csrf=True``: Pyramid runs its CSRF check
*before* the view's decorators, so an app without a security policy
would answer 400 (bad token) instead of 403 to a POST without a token.
The check follows the app's ``config.set_default_csrf_options`` (token
and header names, origin check) when it set them.

On success the answer is a 303 redirect to the dashboard, whose query
names what was done; anyone can craft such a link, so the message shown
is built from the database alone (see :mod:`.flash`).  A bad request is
a 400, an unknown job or dispatcher a 404: an HTML page with a link back
for a browser, JSON ``{"error": …}`` otherwise; nothing is changed.
"""
from __future__ import annotations

from typing import Any, Callable

from pyramid.csrf import check_csrf_origin, check_csrf_token, get_csrf_token
from pyramid.exceptions import BadCSRFToken
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.interfaces import IDefaultCSRFOptions
from pyramid.response import Response

from ..errors import BadStatusError
from ..failure import Failure
from ..interfaces import ACTIVE, ASSIGNED, COMPLETED, PENDING
from ..job import Job
from . import add_admin_view, route_name
from .html import state_phrase, took
from .pages import error_page
from .queries import stored_job
from .format import ParameterError, parse_oid

#: Reason recorded when an admin deactivates a dead dispatcher.
REQUEUE_REASON = 'declared dead by an admin'


class ActionError(ParameterError):
    """A refused action: HTML for a browser, JSON otherwise."""


# -- checks ---------------------------------------------------------------

def check_csrf(request: Any) -> None:
    """Pyramid's CSRF checks, with the app's default options if any."""
    options = request.registry.queryUtility(IDefaultCSRFOptions)
    token = getattr(options, 'token', 'csrf_token')
    header = getattr(options, 'header', 'X-CSRF-Token')
    if options is None or options.check_origin:
        check_csrf_origin(request, raises=True, allow_no_origin=getattr(
            options, 'allow_no_origin', False))
    try:
        get_csrf_token(request)
    except Exception:  # no session factory nor CSRF storage policy
        raise BadCSRFToken(
            'The app has no session factory nor CSRF storage policy, so '
            'no CSRF token can be checked; configure one to use the '
            'dashboard actions.')
    check_csrf_token(request, token or 'csrf_token',
                     header or 'X-CSRF-Token', raises=True)


def csrf_checked(view: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def checked(request: Any) -> Any:
        check_csrf(request)
        return view(request)
    checked.__name__ = view.__name__
    checked.__doc__ = view.__doc__
    return checked


def required(request: Any, name: str, what: str) -> str:
    value = request.POST.get(name, '').strip()
    if not value:
        raise ActionError('missing parameter %r: %s' % (name, what))
    return value


def find_job(request: Any) -> Job:
    raw = required(request, 'job', 'the oid of the job')
    try:
        oid = parse_oid(raw)
        return stored_job(request.async_queues._p_jar, oid)
    except ParameterError as exc:
        raise ActionError(exc.message, exc.status)


def redirect(request: Any, **query: Any) -> HTTPSeeOther:
    return HTTPSeeOther(location=request.route_url(
        route_name('dashboard'), _query=query))


def oid_int(job: Any) -> int:
    return int.from_bytes(job._p_oid, 'big')


# -- actions --------------------------------------------------------------

def cancel_job(job: Job) -> None:
    """Cancel a pending or running job (Job.cancel): a pending one
    completes with a JobCancelled failure at once, a claimed or running
    one is asked to stop and ends so within a second.  Apart from the
    view so that ``pzcasync cancel`` makes the same checks."""
    pending = job.status == PENDING and job.queue is not None \
        and job in job.queue
    if not (pending or job.status in (ASSIGNED, ACTIVE)):
        raise ActionError(
            'job 0x%x is not pending or running (%s): only a pending or '
            'running job can be cancelled' % (oid_int(job),
                                              state_phrase(job)))
    try:
        job.cancel('cancelled by an administrator')
    except BadStatusError as exc:  # e.g. it waits for a job it returned
        raise ActionError(str(exc)) from None


def cancel(request: Any) -> HTTPSeeOther:
    """Make sure a pending job never runs."""
    job = find_job(request)
    cancel_job(job)
    return redirect(request, done='cancelled', job=oid_int(job))


def retry_job(job: Job) -> None:
    """Run a failed job again, at the back of its queue.  Apart from the
    view so that ``pzcasync retry`` makes the same checks."""
    if job.status != COMPLETED or not isinstance(job.result, Failure):
        raise ActionError(
            'job 0x%x has not failed (%s): only a failed job can be '
            'retried' % (oid_int(job), state_phrase(job)))
    queue = job.queue
    if queue is None:
        raise ActionError('job 0x%x never was in a queue: there is nowhere '
                          'to retry it' % oid_int(job))
    queue.retry_failed(job)


def retry(request: Any) -> HTTPSeeOther:
    """Run a failed job again, at the back of its queue."""
    job = find_job(request)
    retry_job(job)
    return redirect(request, done='retried', job=oid_int(job))


def requeue(request: Any) -> HTTPSeeOther:
    """Deactivate a dead dispatcher: its jobs go back to their queues
    (or fail, as their retry policies decide)."""
    uuid = required(request, 'uuid', 'the UUID of a dead dispatcher')
    queues = request.async_queues
    found = [queue.dispatchers[uuid] for name, queue in sorted(queues.items())
             if uuid in queue.dispatchers]
    if not found:
        raise ActionError('there is no dispatcher %s in any queue' % uuid,
                          404)
    now = found[0].parent.database_now()
    dead = [registration for registration in found
            if registration.is_dead(now)]
    if not dead:
        if any(registration.activated for registration in found):
            raise ActionError(
                'dispatcher %s is alive (it pinged within the last %s): '
                'only a dead dispatcher\'s jobs can be re-queued'
                % (uuid, took(found[0].ping_death_interval)))
        raise ActionError('dispatcher %s is not active: its jobs were '
                          'already handed back when it stopped' % uuid)
    count = 0
    for registration in dead:
        count += sum(len(agent) for agent in registration.values())
        registration.deactivate(reason=REQUEUE_REASON)
    return redirect(request, done='requeued', uuid=uuid, count=count)


# -- queue control --------------------------------------------------------

def find_queue(queues: Any, name: str) -> Any:
    """The queue ``name``, or a 404 naming it and the queues there are."""
    queue = queues.get(name)
    if queue is None:
        raise ActionError('there is no queue %r (the queues are: %s)' % (
            name, ', '.join(repr(known) for known in sorted(queues)) or
            'none'), 404)
    return queue


def pause_queue(queues: Any, name: str) -> None:
    """Stop claims from queue ``name`` in every dispatcher (Queue.pause).
    Apart from the view so that ``pzcasync pause`` makes the same checks."""
    find_queue(queues, name).pause()


def resume_queue(queues: Any, name: str) -> None:
    """Let every dispatcher claim from queue ``name`` again."""
    find_queue(queues, name).resume()


def parse_size(raw: Any) -> int:
    """An agent size from a form or a command line, or a 400 naming it."""
    try:
        size = int(str(raw).strip())
    except ValueError:
        size = -1
    if size < 0 or str(raw).strip() != str(size):
        raise ParameterError('bad agent size %r: a whole number, 0 or more'
                             % (raw,))
    return size


def scale_agent(queues: Any, name: str, agent: str, size: int) -> None:
    """Give agent ``agent`` of every dispatcher in queue ``name`` ``size``
    slots from their next poll (DispatcherAgents.scale); the agent must
    exist there ('main' always does: every dispatcher makes it)."""
    registrations = find_queue(queues, name).dispatchers
    known = set(registrations.agent_names()) | {'main'}
    if agent not in known:
        raise ActionError('queue %r has no agent %r (its agents are: %s)' % (
            name, agent, ', '.join(repr(a) for a in sorted(known))), 404)
    registrations.scale(agent, size)


def queue_name_of(request: Any) -> str:
    """The ``queue`` field: present, but '' is the default queue."""
    if 'queue' not in request.POST:
        raise ActionError("missing parameter 'queue': the name of a queue")
    return str(request.POST['queue'])


def pause(request: Any) -> HTTPSeeOther:
    """Stop claims from a queue; running jobs finish."""
    name = queue_name_of(request)
    pause_queue(request.async_queues, name)
    return redirect(request, done='paused', queue=name)


def resume(request: Any) -> HTTPSeeOther:
    """Let dispatchers claim from a paused queue again."""
    name = queue_name_of(request)
    resume_queue(request.async_queues, name)
    return redirect(request, done='resumed', queue=name)


def scale(request: Any) -> HTTPSeeOther:
    """Set an agent's size in every dispatcher of a queue."""
    name = queue_name_of(request)
    agent = required(request, 'agent', 'the name of an agent')
    size = parse_size(required(request, 'size', 'the new size'))
    scale_agent(request.async_queues, name, agent, size)
    return redirect(request, done='scaled', queue=name, agent=agent)


# -- errors ---------------------------------------------------------------

def action_error(exc: ActionError, request: Any) -> Response:
    return refusal(request, exc.status, exc.message)


def refusal(request: Any, status: int, message: str) -> Response:
    """An action refused: a page for a browser, JSON for a script."""
    if wants_html(request):
        return error_page(status, message,
                          request.route_path(route_name('dashboard')))
    return Response(json_body={'error': message}, status=status)


def wants_html(request: Any) -> bool:
    """Whether the client prefers a page to JSON (a browser's form)."""
    offers = request.accept.acceptable_offers(['application/json',
                                               'text/html'])
    return bool(offers) and offers[0][0] == 'text/html'


def includeme(config: Any) -> None:
    for view, name in ((cancel, 'cancel'), (retry, 'retry'),
                       (requeue, 'requeue'), (pause, 'pause'),
                       (resume, 'resume'), (scale, 'scale')):
        add_admin_view(config, csrf_checked(view), name,
                       request_method='POST', require_csrf=False,
                       renderer=None)
    config.add_view(action_error, context=ActionError)
