"""The admin questions about the job database, in one place.

The ``/db/*`` views and the ``pzcasync`` command ask the same questions
(which jobs, how many, their statistics, one job, its traceback): both
build a typed question here and call the matching query with the queues
of their own connection.  No Pyramid request is involved, so the command
opens the database and asks directly.

A question is a frozen dataclass, checked where it is built: a bad value
is a :class:`.format.ParameterError` (a 400) naming it.  Names that are
not in the database (a queue, a dispatcher, an agent, a job) are found
out when the query runs, and are a 404.  :func:`read_selection` and its
siblings build the questions from named strings (a request's parameters
or the command's options), so both give the same errors for the same
input.  The answers are the plain dictionaries of :mod:`.results`.
"""
from __future__ import annotations

import dataclasses
import datetime
import itertools
from typing import (Any, Callable, Dict, FrozenSet, List, Optional, Sequence,
                    Set)

from ZODB.POSException import POSKeyError
from ZODB.utils import p64

from .. import clock, deps, local
from ..failure import Failure
from ..job import Job
from ..lifelog import dropped
from ..safetext import bound, quote
from .format import (TRACEBACK_LIMIT, ParameterError, Params, job_id,
                     not_found, parse_choice, parse_datetime, parse_int,
                     parse_oid)
from .reports import (COMPLETED_STATES, STATES, STATUS_NAMES, TIME_FIELDS,
                      Selection, Window, callable_name, completed_jobs,
                      count_jobs, describe, dispatcher_status, iter_jobs,
                      select, short_repr, statistics)
from .results import (EventInfo, JobDetail, JobInfo, JobStats, ListedJob,
                      ProgressInfo, Status, TracebackInfo)

#: A job listing answers at most this many jobs unless ``count`` says
#: otherwise: a queue of a million pending jobs must not become a 50 MB
#: response.
DEFAULT_COUNT = 1000
#: The most ``count`` may ask for (more is a 400): with ``display=details``
#: that is a few megabytes, each message and repr being clipped.
MAX_COUNT = 5000
#: How a listing shows each job.
DISPLAYS = ('ids', 'repr', 'details')
#: ``uuid=THIS`` names the dispatcher of the asking process.
THIS = 'THIS'
#: A search examines at most this many jobs (no index exists on a job's
#: callable or times: it scans), and shows at most this many matches.
SEARCH_EXAMINED = 5000
SEARCH_SHOWN = 100
#: The times a search may bound, and how each is read from a job.
SEARCH_TIMES = ('put', 'started', 'completed')
#: ``queue=*`` (or no ``queue``) searches every queue; ``''`` is the
#: default queue's name.
ANY_QUEUE = '*'


# -- the questions --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class JobSelection:
    """Which jobs: where (a queue by exact name, ``''`` being the default
    queue; a dispatcher's UUID; an agent's name), when (``since`` and
    ``at`` inclusive, ``before`` exclusive, on ``time_field`` or the
    date the job's state makes interesting), what (a glob on the
    callable's name) and in which ``states``."""
    queue: Optional[str] = None
    uuid: Optional[str] = None
    agent: Optional[str] = None
    callable: Optional[str] = None
    since: Optional[datetime.datetime] = None
    before: Optional[datetime.datetime] = None
    at: Optional[datetime.datetime] = None
    time_field: Optional[str] = None
    states: FrozenSet[str] = frozenset(STATES)

    def __post_init__(self) -> None:
        for state in sorted(self.states):
            if state not in STATES:
                raise ParameterError('state=%s is unknown; expected one of '
                                     '%s' % (quote(state), ', '.join(STATES)))
        if self.time_field is not None and self.time_field not in \
                TIME_FIELDS:
            raise ParameterError('time=%s is unknown; expected one of %s'
                                 % (quote(self.time_field),
                                    ', '.join(TIME_FIELDS)))
        for name in ('since', 'before', 'at'):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ParameterError('%s=%s must be an aware (UTC) datetime'
                                     % (name, value.isoformat()))

    def window(self) -> Window:
        return Window(since=self.since, before=self.before, at=self.at,
                      field=self.time_field)

    def find(self, queues: Any) -> Selection:
        """Where to look in ``queues``; an unknown name is a 404."""
        return select(queues, queue=self.queue, uuid=self.uuid,
                      agent=self.agent, window=self.window(),
                      callable=self.callable)


@dataclasses.dataclass(frozen=True)
class JobListing:
    """The first ``count`` selected jobs, each shown as ``display`` says:
    ``ids``, ``repr`` or ``details``."""
    selection: JobSelection = JobSelection()
    count: int = DEFAULT_COUNT
    display: str = 'ids'

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_COUNT:
            raise ParameterError('count=%d is out of range: from 1 to %d'
                                 % (self.count, MAX_COUNT))
        if self.display not in DISPLAYS:
            raise ParameterError('display=%s is unknown; expected one of %s'
                                 % (quote(self.display), ', '.join(DISPLAYS)))


@dataclasses.dataclass(frozen=True)
class JobRef:
    """One job: its oid, in the named database (by default the queues')."""
    oid: int
    database: Optional[str] = None

    def __post_init__(self) -> None:
        if self.oid < 0:
            raise ParameterError('%d is not a job id: oids are positive'
                                 % self.oid)


@dataclasses.dataclass(frozen=True)
class JobSearch:
    """The dashboard's search: jobs whose callable's dotted name contains
    ``text`` (any case), in ``states``, in ``queue`` (None: any), whose
    ``time`` (put, started or completed) is within ``start`` and ``end``
    (both inclusive).  ``examine`` bounds the jobs scanned, ``show`` the
    matches kept."""
    text: Optional[str] = None
    states: FrozenSet[str] = frozenset(STATES)
    queue: Optional[str] = None
    time: str = 'put'
    start: Optional[datetime.datetime] = None
    end: Optional[datetime.datetime] = None
    examine: int = SEARCH_EXAMINED
    show: int = SEARCH_SHOWN

    def __post_init__(self) -> None:
        JobSelection(states=self.states)  # the same check of the states
        if self.time not in SEARCH_TIMES:
            raise ParameterError('time=%s is unknown; expected one of %s'
                                 % (quote(self.time), ', '.join(SEARCH_TIMES)))
        if self.start and self.end and self.start > self.end:
            raise ParameterError('from=%s is after to=%s: the range is empty'
                                 % (self.start.isoformat(),
                                    self.end.isoformat()))
        for name, value in (('examine', self.examine), ('show', self.show)):
            if value < 1:
                raise ParameterError('%s=%d must be at least 1'
                                     % (name, value))

    def matches(self, job: Job) -> bool:
        if self.text and self.text.lower() not in \
                callable_name(job.callable).lower():
            return False
        if self.start is None and self.end is None:
            return True
        moment = search_time(job, self.time)
        return moment is not None and (
            (self.start is None or moment >= self.start)
            and (self.end is None or moment <= self.end))


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The matches, and whether a cap cut the search short: ``examined``
    jobs were scanned; ``complete`` is false when more were left unread
    (the scan's cap) or more matched than are shown."""
    question: JobSearch
    jobs: List[Job]
    examined: int
    scan_capped: bool
    shown_capped: bool

    @property
    def complete(self) -> bool:
        return not (self.scan_capped or self.shown_capped)


def search_time(job: Job, which: str) -> Optional[datetime.datetime]:
    """When ``job`` was put (its first logged event; for records older
    than the log, when it was due), started or completed."""
    if which == 'started':
        return job.active_start
    if which == 'completed':
        return job.active_end
    logged = job.events
    return logged[0].at if logged else job.begin_after


# -- building the questions from named strings -----------------------------

def read_states(params: Params, allowed: Sequence[str] = STATES,
                default: Optional[Sequence[str]] = None) -> FrozenSet[str]:
    """Every ``state`` value, repeated or comma-separated; unknown → 400."""
    found = [part.strip() for value in params.getall('state')
             for part in value.split(',') if part.strip()]
    for state in found:
        if state not in allowed:
            raise ParameterError('state=%s is unknown; expected one of %s'
                                 % (quote(state), ', '.join(allowed)))
    return frozenset(found or (allowed if default is None else default))


def read_uuid(params: Params, this_uuid: Callable[[], str]
              ) -> Optional[str]:
    """A dispatcher UUID; ``THIS`` asks ``this_uuid`` for the one of this
    process (which raises the 404 when there is none)."""
    raw = (params.get('uuid') or '').strip()
    if not raw:
        return None
    return this_uuid() if raw.upper() == THIS else raw


def _name(params: Params, name: str) -> Optional[str]:
    return (params.get(name) or '').strip() or None


def read_selection(params: Params, this_uuid: Callable[[], str],
                   states: Optional[Sequence[str]] = STATES,
                   default_states: Optional[Sequence[str]] = None
                   ) -> JobSelection:
    """The selection ``params`` ask for.  ``states`` are those the
    question accepts; None when it takes no state filter (the ``state``
    parameter is then ignored)."""
    since = parse_datetime('since', params.get('since'))
    before = parse_datetime('before', params.get('before'))
    at = parse_datetime('at', params.get('at'))
    field = parse_choice('time', params.get('time'), TIME_FIELDS)
    uuid = read_uuid(params, this_uuid)
    chosen = frozenset(STATES) if states is None else read_states(
        params, states, default_states)
    return JobSelection(
        queue=params.get('queue'),  # '' is the default queue's name
        uuid=uuid, agent=_name(params, 'agent'),
        callable=_name(params, 'callable'), since=since, before=before,
        at=at, time_field=field, states=chosen)


def read_listing(params: Params, selection: JobSelection) -> JobListing:
    display = parse_choice('display', params.get('display'), DISPLAYS)
    count = parse_int('count', params.get('count'), minimum=1,
                      maximum=MAX_COUNT)
    return JobListing(selection, count or DEFAULT_COUNT, display or 'ids')


def read_search(params: Params) -> JobSearch:
    """The search ``params`` ask for: ``callable``, ``state`` (repeated or
    comma-separated), ``queue`` (``*`` for any), ``time`` and the range
    ``from`` .. ``to``.  The job id (``job``) is read apart: it names one
    job rather than filtering (see :func:`read_job_id`)."""
    queue = params.get('queue')
    return JobSearch(
        text=_name(params, 'callable'), states=read_states(params),
        queue=None if queue is None or queue == ANY_QUEUE else queue,
        time=parse_choice('time', params.get('time'), SEARCH_TIMES)
        or 'put', start=parse_datetime('from', params.get('from')),
        end=parse_datetime('to', params.get('to')),
        examine=SEARCH_EXAMINED, show=SEARCH_SHOWN)


def read_job_id(params: Params) -> Optional[int]:
    """The oid the ``job`` parameter names (decimal or 0x-hex), if any."""
    raw = (params.get('job') or '').strip()
    return parse_oid(raw) if raw else None


def read_ref(oid: str, database: Optional[str]) -> JobRef:
    """A job from its oid as text (decimal or 0x-hex) and a database name
    (empty: the queues')."""
    return JobRef(parse_oid(oid), database or None)


# -- finding a job --------------------------------------------------------

def stored_job(connection: Any, oid: int) -> Job:
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


def find_job(queues: Any, ref: JobRef) -> Job:
    """The job ``ref`` names, seen from the queues' connection."""
    connection = queues._p_jar
    if ref.database:
        databases = connection.db().databases
        if ref.database not in databases:
            raise not_found('no database %s; the databases are %s'
                            % (quote(ref.database),
                               ', '.join(map(repr, sorted(databases)))))
        connection = connection.get_connection(ref.database)
    return stored_job(connection, ref.oid)


# -- the queries ----------------------------------------------------------

def uuids(queues: Any) -> List[str]:
    """The UUIDs of the activated dispatchers, in any queue."""
    found: Set[str] = set()
    for queue in queues.values():
        found.update(uuid for uuid, registration in queue.dispatchers.items()
                     if registration.activated)
    return sorted(found)


def status(queues: Any, selection: JobSelection) -> Status:
    """The dispatchers' status, and each queue's run-time controls where
    set: ``paused`` (true), ``scaled`` (agent name -> size); absent when
    unset, so the answer of a queue never controlled stays as it was."""
    report = dispatcher_status(selection.find(queues))
    for name, info in report.items():
        if queues[name].paused:
            info['paused'] = True
        scaled = queues[name].dispatchers.scaled()
        if scaled:
            info['scaled'] = scaled
    return report


def jobs(queues: Any, listing: JobListing) -> List[ListedJob]:
    """Pending jobs first (in claim order), then held, then completed
    (newest first): at most ``listing.count`` of them."""
    chosen = listing.selection.find(queues)
    now = clock.utcnow()
    shows: Dict[str, Callable[[Job], ListedJob]] = {
        'ids': job_id, 'repr': short_repr,
        'details': lambda job: describe(job, now)}
    show = shows[listing.display]
    found = iter_jobs(chosen, listing.selection.states)
    return [show(job) for job in itertools.islice(found, listing.count)]


def search(queues: Any, question: JobSearch) -> SearchResult:
    """The jobs ``question`` matches, in the order of :func:`jobs` (pending
    in claim order, then held, then completed newest first), scanning at
    most ``question.examine`` of them; an unknown queue is a 404."""
    where = select(queues, queue=question.queue)
    scanned = iter_jobs(where, question.states)
    found: List[Job] = []
    examined = 0
    for examined, candidate in enumerate(
            itertools.islice(scanned, question.examine), 1):
        if question.matches(candidate):
            if len(found) == question.show:
                return SearchResult(question, found, examined, False, True)
            found.append(candidate)
    capped = examined == question.examine and next(scanned, None) is not None
    return SearchResult(question, found, examined, capped, False)


def count(queues: Any, selection: JobSelection) -> int:
    return count_jobs(selection.find(queues), selection.states)


def jobstats(queues: Any, selection: JobSelection) -> JobStats:
    chosen = selection.find(queues)
    return statistics(iter_jobs(chosen, selection.states), clock.utcnow())


def job(queues: Any, ref: JobRef) -> JobDetail:
    """One job in full: what a listing says of it, its life log, and its
    ``progress`` where it set one (absent otherwise, so that the answer
    for a job that never did stays as it was)."""
    found = find_job(queues, ref)
    detail: JobDetail = {**describe(found), 'events': events(found),
                         'events dropped': dropped(found)}
    said = local.get_progress(found)
    if said is not None:
        detail['progress'] = progress(said)
    waiting = deps.waiting_for(found)
    if waiting:
        detail['after'] = [job_id(each) for each in waiting]
    return detail


def progress(said: local.Progress) -> ProgressInfo:
    """A progress as the JSON and ``pzcasync`` give it: plain values,
    the same whatever becomes of ``local.Progress``."""
    return {'fraction': said.fraction, 'message': said.message,
            'at': said.at}


def events(job: Job) -> List[EventInfo]:
    return [{'at': event.at, 'from': status_name(event.before),
             'to': status_name(event.after), 'dispatcher': event.dispatcher,
             'attempt': event.attempt, 'detail': event.detail}
            for event in job.events]


def status_name(status: str) -> str:
    return STATUS_NAMES.get(status, status)


def traceback(queues: Any, ref: JobRef) -> TracebackInfo:
    found = find_job(queues, ref)
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


def next_pending(queues: Any, selection: JobSelection) -> JobInfo:
    """The pending job that will be claimed first; ``at`` makes it the
    first one due by then."""
    for found in iter_jobs(selection.find(queues), ['pending']):
        return describe(found)
    raise not_found('no pending job matches')


def last_completed(queues: Any, selection: JobSelection) -> JobInfo:
    """The job completed last; with the one state ``failed`` (or
    ``succeeded``), the one that failed (or succeeded) last."""
    chosen = selection.find(queues)
    states = selection.states & frozenset(COMPLETED_STATES)
    which = next(iter(states)) if len(states) == 1 else 'completed'
    for found in completed_jobs(chosen, which):
        return describe(found)
    raise not_found('no %s job matches' % which)
