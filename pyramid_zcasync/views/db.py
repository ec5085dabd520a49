"""The database reports: zc.async's ``asyncdb`` monitor commands as JSON.

Unlike the ``async`` views (this process's dispatcher and its memory),
these read the queues in the request's own connection, so they show every
dispatcher's work and answer without a dispatcher in this process.  They
only read: nothing here may write in a GET (pyramid_tm commits it).

Parameters, shared by the job reports:

- ``state`` (repeat it, or comma-separate): pending, assigned, active,
  callbacks, completed, succeeded, failed; by default all of them;
- ``queue`` (exact name; ``queue=`` is the default queue ``''``),
  ``uuid`` (a dispatcher's, or ``THIS``), ``agent`` (an agent name):
  unknown ones are a 404; with ``uuid`` or ``agent`` the pending jobs are
  those a selected agent's filter accepts;
- ``since``, ``at`` (inclusive), ``before`` (exclusive): ISO-8601 dates,
  on the job's ``time`` field, by default the one its state makes
  interesting (due while pending or assigned, start while active, end
  after that);
- ``callable``: a glob on the callable's dotted name (on its last part
  when the glob has no dot).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

from . import add_admin_view
from . import queries
from .queries import JobRef, JobSelection
# Where they were before the queries module; tests and apps import them.
from .queries import (DEFAULT_COUNT, DISPLAYS, MAX_COUNT,  # noqa: F401
                      stored_job)
from .reports import COMPLETED_STATES, STATES
from .results import JobInfo, JobStats, ListedJob, Status, TracebackInfo
from .status import running_dispatcher


# -- the questions a request asks -----------------------------------------

def selection(request: Any, states: Optional[Sequence[str]] = STATES,
              default_states: Optional[Sequence[str]] = None
              ) -> JobSelection:
    """The queues, dispatchers, agents, time window and states the request
    asks for (``states`` those the view accepts, None: no state filter);
    bad values are a 400, unknown names a 404 when the query runs."""
    return queries.read_selection(
        request.params, lambda: str(running_dispatcher(request).UUID),
        states, default_states)


def job_ref(request: Any) -> JobRef:
    """The job named by the route's oid (and ``database``)."""
    return queries.read_ref(request.matchdict['oid'],
                            request.params.get('database'))


def load_job(request: Any) -> Any:
    """The job named by the route's oid (and ``database``): a malformed
    oid is a 400, anything that is not a stored job a 404."""
    return queries.find_job(request.async_queues, job_ref(request))


# -- views ----------------------------------------------------------------

def uuids(request: Any) -> List[str]:
    """The UUIDs of the activated dispatchers, in any queue."""
    return queries.uuids(request.async_queues)


def status(request: Any) -> Status:
    return queries.status(request.async_queues, selection(request, None))


def jobs(request: Any) -> List[ListedJob]:
    listing = queries.read_listing(request.params, selection(request))
    return queries.jobs(request.async_queues, listing)


def count(request: Any) -> int:
    return queries.count(request.async_queues, selection(request))


def jobstats(request: Any) -> JobStats:
    return queries.jobstats(request.async_queues, selection(request))


def job(request: Any) -> JobInfo:
    return queries.job(request.async_queues, job_ref(request))


def traceback(request: Any) -> TracebackInfo:
    return queries.traceback(request.async_queues, job_ref(request))


def nextpending(request: Any) -> JobInfo:
    """The pending job that will be claimed first; ``at`` makes it the
    first one due by then."""
    return queries.next_pending(request.async_queues,
                                selection(request, None))


def lastcompleted(request: Any) -> JobInfo:
    """The job completed last; ``state=failed`` the one that failed last."""
    return queries.last_completed(
        request.async_queues,
        selection(request, COMPLETED_STATES, ['completed']))


def includeme(config: Any) -> None:
    for view, name in [(uuids, 'db_uuids'), (status, 'db_status'),
                       (jobs, 'db_jobs'), (count, 'db_count'),
                       (jobstats, 'db_jobstats'), (job, 'db_job'),
                       (traceback, 'db_traceback'),
                       (nextpending, 'db_nextpending'),
                       (lastcompleted, 'db_lastcompleted')]:
        add_admin_view(config, view, name, request_method='GET')
