"""Periodic jobs: cron schedules stored in ZODB, enqueued exactly once.

A :class:`Schedule` lives in its queue (``queue.schedules``, a BTree made
on first use, so existing databases keep working) and knows its next
occurrence.  Each dispatcher poll calls :func:`enqueue_due`, which puts
one job per due schedule and moves its ``next`` on, in the poll's own
transaction.  Two dispatchers doing so at once both write the Schedule:
ZODB commits one and raises ConflictError in the other, whose retried
poll finds the occurrence taken.  So each occurrence is enqueued exactly
once however many processes run, with no lock and no leader.

Cron expressions are croniter's (5 fields; a 6th for seconds, a 7th for
the year; ``H`` hashed by the schedule's name), read in the schedule's
time zone (UTC unless told).  After downtime, ``missed='once'`` runs the
latest missed occurrence once; ``missed='skip'`` runs it only if it is at
most ``grace`` (:data:`GRACE`) old.  Importing this module loads neither
Pyramid nor Twisted; the ``config.add_periodic_job`` directive lives in
:mod:`.periodic_config`.
"""
from __future__ import annotations

import datetime
import logging
import zoneinfo
from typing import Any, Callable, Dict, Optional

import BTrees.OOBTree
import persistent
import ZODB.broken
from croniter import CroniterError, croniter
from transaction.interfaces import TransientError

from . import clock, local, process, transact
from .annotated import annotation
from .interfaces import KEY
from .job import Job, _check_storable

log = logging.getLogger('pyramid_zcasync.events')

ONCE = 'once'
SKIP = 'skip'
#: The missed-run policies.
MISSED_POLICIES = (ONCE, SKIP)
#: Under ``skip``, an occurrence at most this old still runs: a poll is
#: never exactly on time, and a busy dispatcher may be seconds late.
GRACE = datetime.timedelta(seconds=60)
#: ``job.annotations`` key telling a periodic job its schedule and
#: occurrence (see :func:`occurrence`).
ANNOTATION = 'pyramid_zcasync.periodic'


def _after(cron: str, name: str, timezone: str, when: datetime.datetime,
           prev: bool = False) -> datetime.datetime:
    """The first occurrence strictly after ``when`` (before, with
    ``prev``), as aware UTC; croniter does the cron arithmetic."""
    try:  # UTC needs no time zone database
        zone = clock.UTC if timezone == 'UTC' else zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError('unknown time zone %r for periodic job %r; expected '
                         'an IANA name such as UTC or Europe/Paris'
                         % (timezone, name)) from None
    found = croniter(cron, when.astimezone(zone), hash_id=name.encode())
    found = found.get_prev(datetime.datetime) if prev \
        else found.get_next(datetime.datetime)
    return found.astimezone(clock.UTC)


def check_schedule(name: str, cron: str, missed: str = ONCE,
                   timezone: str = 'UTC') -> None:
    """Refuse a bad declaration when it is made, naming the bad value,
    rather than in a dispatcher's poll later."""
    if not isinstance(name, str) or not name:
        raise ValueError('a periodic job needs a non-empty string name, got '
                         '%r' % (name,))
    if missed not in MISSED_POLICIES:
        raise ValueError('periodic job %r: missed=%r; expected one of %s'
                         % (name, missed, ', '.join(MISSED_POLICIES)))
    if not isinstance(cron, str):
        raise ValueError('periodic job %r: the cron expression must be a '
                         'string such as "*/5 * * * *", got %r' % (name, cron))
    try:
        _after(cron, name, timezone, clock.utcnow())
    except CroniterError as exc:
        raise ValueError('periodic job %r: bad cron expression %r: %s'
                         % (name, cron, exc)) from None


class _Call(persistent.Persistent):
    """The callable and its arguments in a record of their own, loaded
    only to put a job: the timing is read at every poll."""

    def __init__(self, func: Callable, args: tuple):
        self.callable = func
        self.args = tuple(args)


class Schedule(persistent.Persistent):
    """A named cron schedule of one call in one queue."""

    #: The next occurrence (aware UTC); None: off after an error.
    next = clock.Moment('next')
    #: The occurrence of the last job put (aware UTC), None before any.
    last = clock.Moment('last')
    #: The last job put, for its status.
    last_job = None
    #: ``'TypeName: message'`` of the last failure to enqueue, or None.
    error = None
    #: Declared by ``config.add_periodic_job`` (so removed once no longer
    #: declared), not by :func:`add_schedule`.
    declared = False
    grace = GRACE

    def __init__(self, name: str, call: _Call, cron: str, missed: str,
                 timezone: str, now: datetime.datetime):
        self.name = name
        self.call = call
        self.cron = cron
        self.missed = missed
        self.timezone = timezone
        self.next = _after(cron, name, timezone, now)

    def __repr__(self) -> str:
        return '<Schedule %r %r next=%s>' % (self.name, self.cron, self.next)

    @property
    def callable(self) -> Callable:
        return self.call.callable

    @property
    def args(self) -> tuple:
        return self.call.args

    def _fire(self, queue: Any, now: datetime.datetime) -> Optional[Job]:
        following = _after(self.cron, self.name, self.timezone, now)
        latest = max(self.next, _after(self.cron, self.name, self.timezone,
                                       following, prev=True))
        job = None
        if self.missed == ONCE or now - latest <= self.grace:
            func = self.call.callable
            if isinstance(func, type) and issubclass(func, ZODB.broken.Broken):
                raise ImportError('cannot import %s.%s' % (
                    func.__module__, func.__name__))
            job = queue.put(func, *self.call.args)
            if queue._p_jar is not None:
                # An oid now: the same poll may claim the job, and the
                # dispatcher hands claimed jobs to its workers by oid.
                queue._p_jar.add(job)
            job.annotations[ANNOTATION] = {'schedule': self.name,
                                           'occurrence': latest}
            self.last, self.last_job = latest, job
        else:
            log.info('periodic job %r: skipping the occurrence of %s, '
                     'missed by %s', self.name, latest, now - latest)
        self.next = following
        _set(self, error=None)
        return job

    def _failed(self, exc: Exception, now: datetime.datetime) -> None:
        log.error('periodic job %r could not be enqueued; trying again at '
                  'its next occurrence', self.name, exc_info=exc)
        self.error = '%s: %s' % (type(exc).__name__, exc)
        try:
            self.next = _after(self.cron, self.name, self.timezone, now)
        except Exception:
            self.next = None  # off until declared again


def schedules(queue: Any) -> Any:
    """The queue's schedules by name (an empty dict if it never had one)."""
    return getattr(queue, 'schedules', None) or {}


def occurrence(job: Optional[Job] = None) -> Optional[datetime.datetime]:
    """The occurrence (aware UTC) a periodic job was put for; by default
    the running job's.  None for a job no schedule put."""
    job = job if job is not None else local.get_job()
    found = annotation(job, ANNOTATION)
    return found['occurrence'] if found else None


# -- the dispatcher's side ------------------------------------------------

def enqueue_due(queue: Any, now: Optional[datetime.datetime] = None) -> list:
    """Put one job per due schedule and advance it, in the current
    transaction; return the jobs.  A schedule that fails (its callable
    no longer imports, say) is rolled back to a savepoint, logged and
    moved to its next occurrence: it cannot break the poll."""
    found = schedules(queue)
    if not found:
        return []
    now = clock.aware_utc(now, 'now') or clock.utcnow()
    put = []
    for schedule in found.values():
        if schedule.next is None or schedule.next > now:
            continue
        jar = queue._p_jar
        savepoint = jar.transaction_manager.savepoint() if jar else None
        try:
            job = schedule._fire(queue, now)
        except TransientError:
            raise  # a conflict: the whole poll is retried
        except Exception as exc:
            if savepoint is not None:
                savepoint.rollback()
            schedule._failed(exc, now)
            continue
        if job is not None:
            put.append(job)
    return put


def next_due(queue: Any) -> Optional[datetime.datetime]:
    """The earliest next occurrence in ``queue``, so the dispatcher wakes
    for it instead of at its next poll."""
    return min((s.next for s in schedules(queue).values()
                if s.next is not None), default=None)


# -- declaring ------------------------------------------------------------

def add_schedule(queue: Any, name: str, callable: Callable, *args: Any,
                 cron: str, missed: str = ONCE, timezone: str = 'UTC',
                 now: Optional[datetime.datetime] = None) -> Schedule:
    """Create or update the schedule ``name`` of ``queue``, in the current
    transaction.  Declaring the same thing again writes nothing; a new
    cron expression or time zone recomputes ``next`` from ``now``."""
    return _declare(queue, name, callable, args, cron, missed, timezone,
                    now, declared=False)


def _declare(queue: Any, name: str, func: Callable, args: tuple, cron: str,
             missed: str, timezone: str,
             now: Optional[datetime.datetime], declared: bool) -> Schedule:
    check_schedule(name, cron, missed, timezone)
    _check_storable(func)
    now = clock.aware_utc(now, 'now') or clock.utcnow()
    tree = getattr(queue, 'schedules', None)
    if tree is None:
        tree = queue.schedules = BTrees.OOBTree.OOBTree()
    schedule = tree.get(name)
    if schedule is None:
        schedule = tree[name] = Schedule(name, _Call(func, args), cron,
                                         missed, timezone, now)
        schedule.declared = declared
        _wake_after_commit(queue)
        return schedule
    changed = _set(schedule, missed=missed, declared=declared)
    if schedule.call.callable != func or schedule.call.args != tuple(args):
        schedule.call = _Call(func, args)
        changed = True
    if _set(schedule, cron=cron, timezone=timezone) or schedule.next is None:
        schedule.next = _after(cron, name, timezone, now)
        schedule.error = None
        changed = True
    if changed:
        _wake_after_commit(queue)
    return schedule


def _set(obj: Any, **values: Any) -> bool:
    """Assign only what differs: an unchanged declaration writes nothing,
    so processes starting together do not conflict over it."""
    changed = [key for key, value in values.items()
               if getattr(obj, key) != value]
    for key in changed:
        setattr(obj, key, values[key])
    return bool(changed)


def remove_schedule(queue: Any, name: str) -> Schedule:
    """Remove and return the schedule ``name``; a job it put still runs."""
    tree = schedules(queue)
    if name not in tree:
        raise KeyError('no periodic job %r in queue %r; it has %s'
                       % (name, queue.name, sorted(tree) or 'none'))
    return tree.pop(name)


def _wake_after_commit(queue: Any) -> None:
    """A new or changed schedule may be due before the next poll."""
    if queue._p_jar is not None:
        process.wake_after_commit(queue._p_jar.transaction_manager.get())


def record_declared(db: Any, declared: Dict[tuple, dict],
                    now: Optional[datetime.datetime] = None) -> None:
    """Make ``db``'s schedules match the declarations, ``{(queue, name):
    {func, args, cron, missed, timezone}}``: add or update each, and
    remove those once declared and no longer (schedules made with
    :func:`add_schedule` are left alone).  Processes starting together
    conflict here, and the losers retry."""
    def record(connection: Any) -> None:
        queues = connection.root()[KEY]
        for (queue_name, name), found in sorted(declared.items()):
            _declare(queues[queue_name], name, found['func'], found['args'],
                     found['cron'], found['missed'], found['timezone'], now,
                     declared=True)
        for queue_name, queue in queues.items():
            tree = schedules(queue)
            for name in [n for n, s in tree.items() if s.declared
                         and (queue_name, n) not in declared]:
                log.info('periodic job %r in queue %r is no longer '
                         'declared: removed', name, queue_name)
                del tree[name]
    transact.write(db, record)


def includeme(config: Any) -> None:
    """``config.include('pyramid_zcasync.periodic')``, the include path
    of before the directive moved: named, not imported, so this module
    still loads no Pyramid (and nothing that imports it back)."""
    config.include('pyramid_zcasync.periodic_config')
