"""The dashboard's job search (``/_async/search``): a GET form, so that a
search is a link to keep or send, and its results with check boxes for
the bulk actions of :mod:`.bulk`.

The question and the scan are :class:`.queries.JobSearch` and
:func:`.queries.search` (the command line may ask the same); this module
only reads the form, lays out the answer and says when a cap cut the
scan short.  A job id jumps to that job's page (:mod:`.jobpage`).
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any, List, Optional, Tuple
from urllib.parse import urlencode

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response

from .. import clock
from . import add_admin_view, route_name
from .bulk import FORM_FIELDS, MAX_SELECTED
from .format import ParameterError
from .html import (Forms, JobLabel, Pill, When, job_label, job_url, oid_of,
                   readable_call, status_word, when)
from .pages import page
from .queries import (ANY_QUEUE, SEARCH_TIMES, SearchResult, read_job_id,
                      read_search, search, search_time)
from .reports import STATES

#: The colour of each status word in a listing.
PILL_KINDS = {'failed': 'bad', 'succeeded': 'ok', 'pending': 'idle'}


@dataclasses.dataclass(frozen=True)
class SearchForm:
    """The search form as the person filled it in (their words, escaped
    when shown), with the choices it offers."""
    url: str
    job: str
    callable: str
    state: str
    queue: Optional[str]  # None: any queue
    time: str
    start: str
    end: str
    queues: List[str]
    states: Tuple[str, ...] = STATES
    times: Tuple[str, ...] = SEARCH_TIMES


def search_form(request: Any, filled: bool = True) -> SearchForm:
    """The form, filled with the request's parameters unless ``filled``
    is false (the dashboard's parameters are not a search)."""
    params = request.GET if filled else {}
    queue = params.get('queue')
    return SearchForm(
        url=request.route_path(route_name('search')),
        job=params.get('job', ''), callable=params.get('callable', ''),
        state=params.get('state', ''),
        queue=None if queue is None or queue == ANY_QUEUE else queue,
        time=params.get('time', '') or 'put', start=params.get('from', ''),
        end=params.get('to', ''), queues=sorted(request.async_queues))


def status_pill(job: Any) -> Pill:
    word = status_word(job)
    return Pill(word, PILL_KINDS.get(word, 'warn'))


@dataclasses.dataclass(frozen=True)
class FoundRow:
    """One job found: what identifies it, and when it was put, started
    and completed."""
    job: JobLabel
    url: str
    call: str
    status: Pill
    queue: Optional[str]
    put: Optional[When]
    started: Optional[When]
    ended: Optional[When]


def found_row(request: Any, job: Any, now: datetime.datetime) -> FoundRow:
    return FoundRow(job_label(job), job_url(request, oid_of(job)),
                    readable_call(job), status_pill(job),
                    getattr(job.queue, 'name', None),
                    when(search_time(job, 'put'), now),
                    when(job.active_start, now), when(job.active_end, now))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the results' heading says: how many, and which cap cut the
    search short (the person should narrow it)."""
    shown: int
    examined: int
    scan_capped: bool
    shown_capped: bool
    examine_cap: int
    show_cap: int


def outcome(result: SearchResult) -> Outcome:
    return Outcome(len(result.jobs), result.examined, result.scan_capped,
                   result.shown_capped, result.question.examine,
                   result.question.show)


@dataclasses.dataclass(frozen=True)
class BulkForm:
    """The form around the results: the CSRF token, where the two bulk
    buttons post, and the search to come back to."""
    enabled: bool
    fields: Tuple[Tuple[str, str], ...]
    retry_url: str
    cancel_url: str
    cap: int = MAX_SELECTED


def bulk_form(request: Any, forms: Forms, back: Optional[str] = None
              ) -> BulkForm:
    """``back`` is the search to return to (its query string), if the
    form is on the search's page."""
    fields: Tuple[Tuple[str, str], ...] = ()
    if forms.token is not None:
        fields = ((forms.field, forms.token),)
        if back is not None:
            fields += (('back', back),)
    return BulkForm(forms.token is not None, fields,
                    request.route_path(route_name('retry_selected')),
                    request.route_path(route_name('cancel_selected')))


def search_query(request: Any) -> str:
    """The search's own fields of the request's query string."""
    return urlencode([(name, value) for name, value in request.GET.items()
                      if name in FORM_FIELDS])


# -- the view -------------------------------------------------------------

def search_page(request: Any) -> Response:
    """The results of the search the query string asks for; a job id goes
    to that job's page; a bad value is a 400 page naming it."""
    try:
        oid = read_job_id(request.GET)
        if oid is not None:
            return HTTPSeeOther(location=job_url(request, oid))
        question = read_search(request.GET)
        result = search(request.async_queues, question)
    except ParameterError as exc:
        return results_page(request, None, exc.message, exc.status)
    return results_page(request, result, None, 200)


def results_page(request: Any, result: Optional[SearchResult],
                 error: Optional[str], status: int) -> Response:
    now = clock.utcnow()
    rows = [] if result is None else [
        found_row(request, job, now) for job in result.jobs]
    return page('search.jinja2', status=status,
                title='Search \u00b7 background jobs',
                search=search_form(request), error=error, rows=rows,
                outcome=None if result is None else outcome(result),
                bulk=bulk_form(request, Forms(request),
                               search_query(request)),
                dashboard_url=request.route_path(route_name('dashboard')))


def includeme(config: Any) -> None:
    add_admin_view(config, search_page, 'search', request_method='GET',
                   renderer=None)

