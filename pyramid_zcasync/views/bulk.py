"""Bulk actions on the jobs selected in the search results: retry the
failed ones, cancel those not completed.

Each job gets exactly the checks of its single action
(:func:`.actions.retry_job`, :func:`.actions.cancel_job`): a job that
fails them is refused with the reason, the others are done, all in the
request's one transaction.  A refusal is rolled back to a savepoint, so
that whatever a check did before refusing is not kept.  At most
:data:`MAX_SELECTED` jobs a request: more is refused whole, nothing done
(a form of thousands of ids is not a click but a script, and one
transaction moving them all would conflict with every dispatcher).

The answer is a page, not a redirect: its message lists which jobs were
refused and why, which a link's query must not be trusted to say (see
:mod:`.flash`).  CSRF and the admin permission are checked as for every
action.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Optional
from urllib.parse import parse_qsl

from pyramid.response import Response

from ..job import Job
from ..safetext import quote
from . import add_admin_view, route_name
from .actions import ActionError, cancel_job, csrf_checked, retry_job
from .format import ParameterError, parse_oid
from .html import JobLabel, job_label, job_url
from .pages import page
from .queries import stored_job

#: The most jobs one bulk request may name.
MAX_SELECTED = 100
#: The search form's fields kept in the link back to the search.
FORM_FIELDS = ('job', 'callable', 'state', 'queue', 'time', 'from', 'to')


@dataclasses.dataclass(frozen=True)
class Done:
    """A job the action was applied to, linked to its page."""
    job: JobLabel
    url: str


@dataclasses.dataclass(frozen=True)
class Refused:
    """A selected job left as it was: as the form named it (a job's
    label, or the value posted when it names no job) and why."""
    name: str
    url: Optional[str]
    reason: str


@dataclasses.dataclass(frozen=True)
class BulkOutcome:
    verb: str  # retried, cancelled
    done: List[Done]
    refused: List[Refused]

    @property
    def message(self) -> str:
        return '%s %d of %d selected job(s).' % (
            self.verb.capitalize(), len(self.done),
            len(self.done) + len(self.refused))


def selected(request: Any) -> List[str]:
    """The ``job`` values posted, each once; none or too many is a 400
    before anything is done."""
    values = list(dict.fromkeys(value.strip()
                                for value in request.POST.getall('job')))
    if not values:
        raise ActionError('no job selected: tick the jobs to act on')
    if len(values) > MAX_SELECTED:
        raise ActionError('%d jobs selected: at most %d per request; '
                          'nothing was done' % (len(values), MAX_SELECTED))
    return values


def apply_to_selected(request: Any, act: Callable[[Job], None],
                      verb: str) -> BulkOutcome:
    """``act`` on each selected job, keeping the refusals apart."""
    connection = request.async_queues._p_jar
    done: List[Done] = []
    refused: List[Refused] = []
    for value in selected(request):
        try:
            job = stored_job(connection, parse_oid(value))
        except ParameterError as exc:
            refused.append(Refused(quote(value), None, exc.message))
            continue
        label = job_label(job)
        url = job_url(request, label.oid)
        savepoint = request.tm.savepoint(optimistic=True)
        try:
            act(job)
        except ParameterError as exc:
            savepoint.rollback()
            refused.append(Refused(label.text, url, exc.message))
        else:
            done.append(Done(label, url))
    return BulkOutcome(verb, done, refused)


def back_to_search(request: Any) -> Optional[str]:
    """The search the form was posted from (its ``back`` field): only the
    search's own fields, re-encoded, on our own route.  None when it was
    posted from the dashboard."""
    if 'back' not in request.POST:
        return None
    kept = [(name, value) for name, value in parse_qsl(request.POST['back'])
            if name in FORM_FIELDS]
    return request.route_path(route_name('search'), _query=kept)


def outcome_page(request: Any, outcome: BulkOutcome) -> Response:
    dashboard = request.route_path(route_name('dashboard'))
    return page('bulk.jinja2', title='%s \u00b7 background jobs'
                % outcome.verb.capitalize(), outcome=outcome,
                flash=outcome.message, back=back_to_search(request),
                search=None, dashboard_url=dashboard)


def retry_selected(request: Any) -> Response:
    """Run the selected failed jobs again, each at the back of its queue."""
    return outcome_page(request,
                        apply_to_selected(request, retry_job, 'retried'))


def cancel_selected(request: Any) -> Response:
    """Cancel the selected jobs that have not completed."""
    return outcome_page(request,
                        apply_to_selected(request, cancel_job, 'cancelled'))


def includeme(config: Any) -> None:
    for view, name in ((retry_selected, 'retry_selected'),
                       (cancel_selected, 'cancel_selected')):
        add_admin_view(config, csrf_checked(view), name,
                       request_method='POST', require_csrf=False,
                       renderer=None)
