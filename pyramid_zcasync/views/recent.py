"""The dashboard's recent failures and recently completed jobs, read from
the agents' bounded histories, as values for ``templates/failures.jinja2``
and ``templates/completed.jinja2``."""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any, List, Optional

from ..failure import Failure
from ..interfaces import CALLBACKS, COMPLETED
from ..safetext import bound
from . import route_name
from .html import (Button, Forms, JobLabel, When, call_text, clip, is_failed,
                   job_label, oid_of, took, when)
from .sections import recent_jobs

#: Completed and failed jobs shown.
RECENT_COMPLETED = 10
RECENT_FAILED = 10
#: Longest failure message and traceback shown on the page.
MESSAGE_SHOWN = 300
TRACEBACK_SHOWN = 4000
#: Newest history entries per agent searched for failures.
FAILED_SCAN = 300


@dataclasses.dataclass(frozen=True)
class Traceback:
    """A traceback, its middle cut beyond :data:`TRACEBACK_SHOWN`
    characters, with a link to the whole one (a job may fail with
    megabytes, and the page is fetched again every few seconds)."""
    text: str
    omitted: int
    url: Optional[str]  # the whole traceback, when some was cut


@dataclasses.dataclass(frozen=True)
class FailedRow:
    job: JobLabel
    oid: Optional[int]
    call: str
    unreadable: Optional[str]
    ended: Optional[When]
    type_name: str
    message: str
    traceback: Traceback
    retry: Optional[Button]  # None while its callbacks still run


@dataclasses.dataclass(frozen=True)
class CompletedRow:
    job: JobLabel
    queue: str
    call: str
    unreadable: Optional[str]
    ended: Optional[When]
    took: str
    failure: Optional[str]  # the failure's type, if it failed
    result: str


def traceback(request: Any, job: Any, failure: Failure) -> Traceback:
    text, omitted = bound(failure.getTraceback(), TRACEBACK_SHOWN)
    url = None
    if omitted:
        url = request.route_path(
            route_name('db_traceback'), oid=oid_of(job),
            _query={'database': job._p_jar.db().database_name})
    return Traceback(text, omitted, url)


def failed_row(job: Any, forms: Forms, request: Any,
               now: datetime.datetime) -> FailedRow:
    oid = oid_of(job)
    failure = job.result
    try:
        call, unreadable = call_text(job), None
    except Exception as exc:
        call, unreadable = '', str(exc)
    retry = forms.button('retry', {'job': oid}, 'Retry', 'primary',
                         busy='Retrying\u2026') \
        if job.status == COMPLETED else None
    return FailedRow(job_label(job), oid, call, unreadable,
                     when(job.active_end, now), failure.type_name,
                     clip(failure.message, MESSAGE_SHOWN),
                     traceback(request, job, failure), retry)


def failed_rows(queues: Any, forms: Forms, now: datetime.datetime,
                request: Any) -> List[FailedRow]:
    return [failed_row(job, forms, request, now) for _, job in
            recent_jobs(queues, RECENT_FAILED, FAILED_SCAN, is_failed)]


def completed_row(queue_name: str, job: Any, now: datetime.datetime
                  ) -> CompletedRow:
    failure = None
    try:
        call, unreadable = call_text(job), None
        if isinstance(job.result, Failure):
            failure, result = job.result.type_name, ''
        else:
            result = clip(repr(job.result), 80)
    except Exception as exc:
        call, unreadable, result = '', str(exc), ''
    duration = (job.active_end - job.active_start
                if job.active_start and job.active_end else None)
    return CompletedRow(job_label(job), queue_name, call, unreadable,
                        when(job.active_end, now), took(duration), failure,
                        result)


def completed_rows(queues: Any, now: datetime.datetime
                   ) -> List[CompletedRow]:
    return [completed_row(queue_name, job, now) for queue_name, job in
            recent_jobs(queues, RECENT_COMPLETED, RECENT_COMPLETED,
                        lambda job: job.status in (CALLBACKS, COMPLETED))]
