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

import itertools
from typing import Iterable, Optional

from ZODB.POSException import POSKeyError
from ZODB.utils import p64

from .. import clock
from ..safetext import bound, quote
from ..failure import Failure
from ..job import Job
from . import add_admin_view
from .format import (TRACEBACK_LIMIT, ParameterError, job_id, not_found,
                     param_choice, param_datetime, param_int, parse_oid)
from .reports import (COMPLETED_STATES, STATES, TIME_FIELDS, Selection,
                      Window, completed_jobs, count_jobs, describe,
                      dispatcher_status, iter_jobs, select, short_repr,
                      statistics)
from .status import running_dispatcher

#: ``/db/jobs`` answers at most this many jobs unless ``count`` says
#: otherwise: a queue of a million pending jobs must not become a 50 MB
#: response.
DEFAULT_COUNT = 1000
#: The most ``count`` may ask for (more is a 400): with ``display=details``
#: that is a few megabytes, each message and repr being clipped.
MAX_COUNT = 5000
#: How ``/db/jobs`` shows each job.
DISPLAYS = ('ids', 'repr', 'details')


# -- parameters -----------------------------------------------------------

def param_states(request, allowed: Iterable[str] = STATES,
                 default: Optional[Iterable[str]] = None) -> frozenset:
    """Every ``state`` value, repeated or comma-separated; unknown → 400."""
    allowed = tuple(allowed)
    found = [part.strip() for value in request.params.getall('state')
             for part in value.split(',') if part.strip()]
    for state in found:
        if state not in allowed:
            raise ParameterError('state=%s is unknown; expected one of %s'
                                 % (quote(state), ', '.join(allowed)))
    return frozenset(found or (allowed if default is None else default))


def param_uuid(request) -> Optional[str]:
    """A dispatcher UUID; ``THIS`` is this process's dispatcher."""
    raw = request.params.get('uuid', '').strip()
    if not raw:
        return None
    if raw.upper() == 'THIS':
        return str(running_dispatcher(request).UUID)
    return raw


def selection(request) -> Selection:
    """The queues, dispatchers, agents and time window the request asks
    for; bad values are a 400, unknown names a 404."""
    window = Window(since=param_datetime(request, 'since'),
                    before=param_datetime(request, 'before'),
                    at=param_datetime(request, 'at'),
                    field=param_choice(request, 'time', TIME_FIELDS))
    queue = request.params.get('queue')  # '' is the default queue's name
    return select(request.async_queues, queue=queue,
                  uuid=param_uuid(request),
                  agent=request.params.get('agent', '').strip() or None,
                  window=window,
                  callable=request.params.get('callable', '').strip() or None)


def stored_job(connection, oid: int) -> Job:
    """The job with this oid in ``connection``'s database; a 404 naming
    what is there instead.  Every admin view, action and ``pzcasync``
    command finds a job by oid here."""
    where = 'database %r' % connection.db().database_name
    if oid >= 2 ** 64:
        raise not_found('no object 0x%x in %s: oids have 64 bits'
                        % (oid, where))
    try:
        found = connection.get(p64(oid))
    except (POSKeyError, KeyError):
        raise not_found('no object 0x%x in %s' % (oid, where))
    if not isinstance(found, Job):
        raise not_found('object 0x%x in %s is a %s, not a job'
                        % (oid, where, type(found).__name__))
    return found


def load_job(request) -> Job:
    """The job named by the route's oid (and ``database``): a malformed
    oid is a 400, anything that is not a stored job a 404."""
    oid = parse_oid(request.matchdict['oid'])
    connection = request.async_queues._p_jar
    name = request.params.get('database')
    if name:
        databases = connection.db().databases
        if name not in databases:
            raise not_found('no database %s; the databases are %s'
                            % (quote(name),
                               ', '.join(map(repr, sorted(databases)))))
        connection = connection.get_connection(name)
    return stored_job(connection, oid)


# -- views ----------------------------------------------------------------

def uuids(request) -> list:
    """The UUIDs of the activated dispatchers, in any queue."""
    found = set()
    for queue in request.async_queues.values():
        found.update(uuid for uuid, registration in queue.dispatchers.items()
                     if registration.activated)
    return sorted(found)


def status(request) -> dict:
    return dispatcher_status(selection(request))


def jobs(request) -> list:
    chosen = selection(request)
    states = param_states(request)
    display = param_choice(request, 'display', DISPLAYS) or 'ids'
    count = param_int(request, 'count', minimum=1,
                      maximum=MAX_COUNT) or DEFAULT_COUNT
    now = clock.utcnow()
    show = {'ids': job_id, 'repr': short_repr,
            'details': lambda job: describe(job, now)}[display]
    return [show(job) for job in
            itertools.islice(iter_jobs(chosen, states), count)]


def count(request) -> int:
    return count_jobs(selection(request), param_states(request))


def jobstats(request) -> dict:
    chosen = selection(request)
    return statistics(iter_jobs(chosen, param_states(request)),
                      clock.utcnow())


def job(request) -> dict:
    return describe(load_job(request))


def traceback(request) -> dict:
    found = load_job(request)
    failure = found.result
    if not isinstance(failure, Failure):
        raise not_found('job 0x%x has no traceback: it did not fail (its '
                        'status is %s)' % (job_id(found)[0],
                                           describe(found)['status']))
    message, cut = bound(failure.message, TRACEBACK_LIMIT)
    text, omitted = bound(failure.getTraceback(), TRACEBACK_LIMIT)
    return {'id': job_id(found), 'type': failure.type_name,
            'message': message, 'traceback': text,
            'omitted characters': cut + omitted}


def nextpending(request) -> dict:
    """The pending job that will be claimed first; ``at`` makes it the
    first one due by then."""
    for found in iter_jobs(selection(request), ['pending']):
        return describe(found)
    raise not_found('no pending job matches')


def lastcompleted(request) -> dict:
    """The job completed last; ``state=failed`` the one that failed last."""
    chosen = selection(request)
    states = param_states(request, COMPLETED_STATES, default=['completed'])
    which = next(iter(states)) if len(states) == 1 else 'completed'
    for found in completed_jobs(chosen, which):
        return describe(found)
    raise not_found('no %s job matches' % which)


def includeme(config) -> None:
    for view, name in [(uuids, 'db_uuids'), (status, 'db_status'),
                       (jobs, 'db_jobs'), (count, 'db_count'),
                       (jobstats, 'db_jobstats'), (job, 'db_job'),
                       (traceback, 'db_traceback'),
                       (nextpending, 'db_nextpending'),
                       (lastcompleted, 'db_lastcompleted')]:
        add_admin_view(config, view, name, request_method='GET')
