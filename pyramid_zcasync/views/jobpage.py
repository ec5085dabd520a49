"""A page per job (``/_async/jobs/{oid}``): its call, status and times,
its result or failure with the traceback, its progress, the log of its
life, its callbacks and related jobs, and the actions its status allows.

The page is a list of sections, each computed by one small function of
:data:`SECTIONS` from a :class:`Seen` (the job, the request, its forms,
the time) and shown by its own template, ``templates/job/NAME.jinja2``,
which gets the :class:`Section` as ``section``.  A feature adds a
section with one function and one template, and :func:`add_section`.
A function answers None to leave its section out for that job.

Everything shown of the job is its author's input: bounded here (the
lists by :data:`.reports.LIST_LIMIT`, reprs by :data:`.reports.REPR_LIMIT`,
the traceback by :data:`.recent.TRACEBACK_SHOWN`) and escaped by the
templates.
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Callable, List, Optional, Tuple

from pyramid.response import Response
from ZODB.POSException import ConflictError

from .. import changes, clock, deps
from ..failure import Failure
from ..interfaces import (ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW,
                          PENDING)
from ..job import Job, _resolve_outer
from ..lifelog import dropped
from . import add_admin_view, route_name
from .format import ParameterError
from .html import (Button, Forms, JobLabel, Pill, When, clip, job_label,
                   job_url, readable_call, short_uuid, took, when)
from .pages import error_page, page
from .queries import events, find_job, read_ref, search_time
from .recent import MESSAGE_SHOWN, Traceback, traceback
from .reports import (REPR_LIMIT, callable_name, first_of,
                      retry_policy_name, short_repr)
from .search import search_form, status_pill
from .sections import ProgressBar, progress_bar
from .changes import changes_info


@dataclasses.dataclass(frozen=True)
class Seen:
    """What a section function reads: the job, and the means to link to
    other jobs and to make action buttons."""
    job: Job
    request: Any
    forms: Forms
    now: datetime.datetime

    def link(self, other: Any) -> Optional['JobLink']:
        """Another job, named and linked; None for no job."""
        if other is None:
            return None
        label = job_label(other)
        return JobLink(label, job_url(self.request, label.oid)
                       if label.oid is not None else None,
                       readable_call(other), status_pill(other))


@dataclasses.dataclass(frozen=True)
class JobLink:
    job: JobLabel
    url: Optional[str]
    call: str
    status: Pill


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of the page: ``templates/job/{name}.jinja2`` shows
    ``value`` under ``title``."""
    name: str
    title: str
    value: Any


SectionFunction = Callable[[Seen], Optional[Section]]


# -- the sections ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Call:
    name: str
    args: List[str]
    kwargs: List[Tuple[str, str]]


def call_section(seen: Seen) -> Section:
    job = seen.job
    return Section('call', 'Call', Call(
        callable_name(job.callable), first_of(job.args, short_repr),
        keyword_arguments(job.kwargs)))


def keyword_arguments(kwargs: Any) -> List[Tuple[str, str]]:
    """(name, repr) of the first :data:`.reports.LIST_LIMIT` by name,
    then ('... N more', '') if there are more."""
    shown = first_of(sorted(kwargs.items()), lambda item: (
        str(item[0])[:REPR_LIMIT], short_repr(item[1])))
    return [item if isinstance(item, tuple) else (item, '')
            for item in shown]


@dataclasses.dataclass(frozen=True)
class Status:
    pill: Pill
    queue: Optional[str]
    put: Optional[When]
    due: Optional[When]
    begin_by: Optional[When]
    started: Optional[When]
    ended: Optional[When]
    took: str
    attempt: Optional[int]
    dispatcher: Optional[str]
    agent: Optional[str]
    retry_policy: Optional[str]
    unique_key: Optional[str]


def status_section(seen: Seen) -> Section:
    job, now = seen.job, seen.now
    logged = job.events
    ran = (job.active_end - job.active_start
           if job.active_start and job.active_end else None)
    return Section('status', 'Status', Status(
        status_pill(job), getattr(job.queue, 'name', None),
        when(search_time(job, 'put'), now), when(job.begin_after, now),
        when(job.begin_by, now), when(job.active_start, now),
        when(job.active_end, now), took(ran),
        logged[-1].attempt if logged else None, job.assignerUUID,
        getattr(job.agent, 'name', None), retry_policy_name(job),
        job.unique_key))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the call gave: a result's repr, or a failure."""
    result: Optional[str]
    failure_type: Optional[str]
    message: Optional[str]
    traceback: Optional[Traceback]


def outcome_section(seen: Seen) -> Optional[Section]:
    """Left out until the call returned."""
    job = seen.job
    if job.status not in (CALLBACKS, COMPLETED):
        return None
    failure = job.result
    if isinstance(failure, Failure):
        return Section('outcome', 'Failure', Outcome(
            None, failure.type_name, clip(failure.message, MESSAGE_SHOWN),
            traceback(seen.request, job, failure)))
    return Section('outcome', 'Result',
                   Outcome(short_repr(job.result, 2000), None, None, None))


def progress_section(seen: Seen) -> Optional[Section]:
    """Left out when the job never said how far it got."""
    bar: Optional[ProgressBar] = progress_bar(seen.job, seen.now)
    return None if bar is None else Section('progress', 'Progress', bar)


@dataclasses.dataclass(frozen=True)
class EventRow:
    at: When
    moved: str
    dispatcher: Optional[str]
    attempt: int
    detail: str


@dataclasses.dataclass(frozen=True)
class LifeLog:
    rows: List[EventRow]
    dropped: int  # events left out between the first and the latest


def events_section(seen: Seen) -> Section:
    rows = [EventRow(when(event['at'], seen.now) or When('', '', ''),
                     '%s \u2192 %s' % (event['from'], event['to']),
                     short_uuid(event['dispatcher'])
                     if event['dispatcher'] else None,
                     event['attempt'], event['detail'])
            for event in events(seen.job)]
    return Section('events', 'Life log', LifeLog(rows, dropped(seen.job)))


def callbacks_section(seen: Seen) -> Section:
    callbacks = seen.job.callbacks
    return Section('callbacks', 'Callbacks', first_of(callbacks, seen.link))


@dataclasses.dataclass(frozen=True)
class Related:
    parent: Optional[JobLink]  # the job whose result this one receives
    waiting_for: Optional[JobLink]  # the job this one returned
    outer: Optional[JobLink]  # the job that returned this one
    after: List[Any]  # prerequisites not succeeded yet (links; "... N more")


def related_section(seen: Seen) -> Optional[Section]:
    """Left out for a job with no parent, outer job, inner one nor
    prerequisite it waits for."""
    job = seen.job
    related = Related(seen.link(job.parent), seen.link(job.waiting_for),
                      seen.link(outer_job(job)),
                      first_of(deps.waiting_for(job), seen.link))
    if related == Related(None, None, None, []):
        return None
    return Section('related', 'Related jobs', related)


def outer_job(job: Job) -> Optional[Job]:
    """The job that returned ``job`` and took its result for its own: it
    waits through a callback of ``job`` calling ``_resolve_outer``."""
    for callback in job.callbacks:
        if callback.callable is _resolve_outer and callback.args:
            outer: Job = callback.args[0]
            return outer
    return None


def changes_section(seen: Seen) -> Optional[Section]:
    """What its last successful run changed (changes.py records it);
    left out until the job completed."""
    if seen.job.status != COMPLETED:
        return None
    return Section('changes', 'What its run changed',
                   changes_info(seen.job))


def actions_section(seen: Seen) -> Optional[Section]:
    """The actions the job's status allows; left out when none does."""
    buttons = [button for button in (
        cancel_button(seen), retry_button(seen), requeue_button(seen),
        trial_button(seen), undo_button(seen)) if button is not None]
    return Section('actions', 'Actions', buttons) if buttons else None


def trial_button(seen: Seen) -> Optional[Button]:
    """A dry run of a job not started, a replay of a failed one against
    the data its attempt read: both in a throw-away copy of the data,
    after a confirmation page (they run the job's code again)."""
    status, oid = seen.job.status, job_label(seen.job).oid
    if status in (NEW, PENDING):
        return seen.forms.button('dryrun', {'oid': oid}, 'Dry run', '')
    if status == COMPLETED and isinstance(seen.job.result, Failure):
        return seen.forms.button('replay', {'oid': oid}, 'Replay (dry run)',
                                 '')
    return None


def undo_button(seen: Seen) -> Optional[Button]:
    """Offered when a run's changes were recorded; undo.py refuses, saying
    why, when later transactions changed the same objects."""
    if seen.job.status != COMPLETED or not changes.of(seen.job).recorded:
        return None
    return seen.forms.button(
        'undo', {'oid': job_label(seen.job).oid}, 'Undo its changes',
        'danger', confirm='Put back what this run changed?',
        busy='Undoing\u2026')


def cancel_button(seen: Seen) -> Optional[Button]:
    if seen.job.status == COMPLETED:
        return None
    label = job_label(seen.job)
    return seen.forms.button('cancel', {'job': label.oid}, 'Cancel',
                             'danger', confirm='Cancel job %s?' % label.text,
                             busy='Cancelling\u2026')


def retry_button(seen: Seen) -> Optional[Button]:
    job = seen.job
    if job.status != COMPLETED or not isinstance(job.result, Failure):
        return None
    return seen.forms.button('retry', {'job': job_label(job).oid}, 'Retry',
                             'primary', busy='Retrying\u2026')


def requeue_button(seen: Seen) -> Optional[Button]:
    """Offered when the dispatcher holding the job is dead."""
    job = seen.job
    queue, uuid = job.queue, job.assignerUUID
    if job.status not in (ASSIGNED, ACTIVE) or queue is None or not uuid:
        return None
    registrations = queue.dispatchers
    if uuid not in registrations or not registrations[uuid].is_dead(
            registrations.database_now()):
        return None
    return seen.forms.button(
        'requeue', {'uuid': uuid}, 'Re-queue the jobs of its dead '
        'dispatcher', 'primary', busy='Re-queuing\u2026')


#: The page's sections, in order.
SECTIONS: List[SectionFunction] = [
    call_section, status_section, outcome_section, progress_section,
    events_section, callbacks_section, related_section, changes_section,
    actions_section]


def add_section(function: SectionFunction,
                before: Optional[SectionFunction] = None) -> None:
    """Show ``function``'s section on every job's page: before the
    section of ``before``, or last; once, however often it is added."""
    if function in SECTIONS:
        return
    SECTIONS.insert(SECTIONS.index(before) if before in SECTIONS
                    else len(SECTIONS), function)


def sections(seen: Seen) -> List[Section]:
    """The sections the job has; one that cannot be read (its callable's
    class is gone from the code, say) says so, and the others are shown:
    that page is where an admin goes to find out what is wrong."""
    shown: List[Section] = []
    for make in SECTIONS:
        try:
            section = make(seen)
        except ConflictError:
            raise
        except Exception as exc:
            section = Section('unreadable', 'Unreadable', '%s: %s' % (
                type(exc).__name__, exc))
        if section is not None:
            shown.append(section)
    return shown


# -- the view -------------------------------------------------------------

def job_page(request: Any) -> Response:
    """The job's page; a malformed oid is a 400 page naming it, a job that
    is not there a 404."""
    dashboard = request.route_path(route_name('dashboard'))
    try:
        job = find_job(request.async_queues, read_ref(
            request.matchdict['oid'], request.GET.get('database')))
    except ParameterError as exc:
        return error_page(exc.status, exc.message, dashboard)
    seen = Seen(job, request, Forms(request), clock.utcnow())
    label = job_label(job)
    return page('job.jinja2', title='Job %s \u00b7 background jobs'
                % label.text, job=label, pill=status_pill(job),
                sections=sections(seen),
                search=search_form(request, filled=False),
                dashboard_url=dashboard)


def includeme(config: Any) -> None:
    add_admin_view(config, job_page, 'job_page', request_method='GET',
                   renderer=None)
