"""The dashboard's sections: what it reads of the model for the queues,
the dispatchers, this process's dispatcher and the periodic jobs, as
values for ``templates/*.jinja2`` (failures and completed jobs are in
:mod:`.recent`, the numbers and the chart in :mod:`.chart`, the message
after an action in :mod:`.flash`)."""
from __future__ import annotations

import dataclasses
import datetime
import itertools
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .. import dispatcher as dispatcher_module
from .. import local, periodic
from ..interfaces import COMPLETED
from .flash import AT_LEAST_ONCE
from .html import (Button, Forms, JobLabel, Pill, When, ago, call_text, clip,
                   is_failed, job_label, oid_of, short_uuid, status_word,
                   took, when)
from .pages import render

#: Pending jobs shown per queue.
NEXT_PENDING = 5
#: Seconds between refreshes.
REFRESH_SECONDS = 5


# -- reading the model ----------------------------------------------------

#: A dispatcher's registrations: (queue name, registration), by queue.
Entries = List[Tuple[str, Any]]


def registrations(queues: Any) -> Dict[str, Entries]:
    """uuid -> [(queue name, registration)], over every queue."""
    found: Dict[str, Entries] = {}
    for name, queue in sorted(queues.items()):
        for uuid, registration in queue.dispatchers.items():
            found.setdefault(uuid, []).append((name, registration))
    return found


def agents(queues: Any) -> Iterator[Tuple[str, Any, Any]]:
    for name, queue in sorted(queues.items()):
        for registration in queue.dispatchers.values():
            for agent in registration.values():
                yield name, registration, agent


def recent_jobs(queues: Any, count: int, scan: int,
                wanted: Callable[[Any], bool]) -> List[Tuple[str, Any]]:
    """The newest ``count`` jobs of the agents' histories that ``wanted``
    accepts, newest first, each once (a retried job is in a history
    twice), looking at ``scan`` entries per agent at most."""
    candidates: List[Tuple[datetime.datetime, Optional[int], str, Any]] = []
    for name, registration, agent in agents(queues):
        for job in itertools.islice(iter(agent.completed), scan):
            end = job.active_end
            if end is not None and wanted(job):
                candidates.append((end, oid_of(job), name, job))
    candidates.sort(key=lambda item: item[0], reverse=True)
    seen: set = set()
    found: List[Tuple[str, Any]] = []
    for end, oid, name, job in candidates:
        if oid in seen:
            continue
        seen.add(oid)
        found.append((name, job))
        if len(found) == count:
            break
    return found



# -- this process's dispatcher --------------------------------------------

@dataclasses.dataclass(frozen=True)
class Me:
    """This process's dispatcher, in the page's header."""
    status: Pill
    uuid: str
    short_uuid: str
    uptime: Optional[str]
    last_poll: str
    poll_every: str
    succeeded: Optional[int]  # None: not activated (no statistics)
    failed: Optional[int]


def me(request: Any) -> Optional[Me]:
    """None when this process runs no dispatcher."""
    running = getattr(request.registry, 'zcasync_dispatcher', None) \
        or dispatcher_module.get()
    if running is None:
        return None
    info = running.getStatusInfo()
    status = info['status']
    since_poll = info['time since last poll']
    succeeded = failed = None
    if running.activated is not None:
        stats = running.getStatistics()
        succeeded, failed = stats['successful'], stats['failed']
    return Me(
        status=Pill(status, {'RUNNING': 'ok', 'STOPPED': 'bad',
                             'STUCK': 'bad'}.get(status, 'warn')),
        uuid=str(info['uuid']), short_uuid=short_uuid(str(info['uuid'])),
        uptime=None if info['uptime'] is None else took(info['uptime']),
        last_poll='never' if since_poll is None else took(since_poll) +
        ' ago', poll_every=took(info['poll interval']),
        succeeded=succeeded, failed=failed)


# -- queues ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PendingRow:
    job: JobLabel
    call: str
    due: Optional[When]
    unreadable: Optional[str]  # why the job could not be read
    cancel: Button


@dataclasses.dataclass(frozen=True)
class QueueBlock:
    name: str
    size: int
    rows: List[PendingRow]
    paused: bool
    control: Button  # pause, or resume when paused

    @property
    def more(self) -> int:
        return self.size - len(self.rows)

    @property
    def pill(self) -> Pill:
        return Pill('%d pending' % self.size, 'warn' if self.size else 'idle')


def control_button(name: str, paused: bool, forms: Forms) -> Button:
    label = repr(name) if name else 'the default queue'
    if paused:
        return forms.button('resume', {'queue': name}, 'Resume', 'primary',
                            busy='Resuming\u2026')
    return forms.button('pause', {'queue': name}, 'Pause', '',
                        confirm='Pause %s? Dispatchers stop claiming its '
                        'jobs; the jobs running finish.' % label,
                        busy='Pausing\u2026')


def pending_row(job: Any, forms: Forms, now: datetime.datetime
                ) -> PendingRow:
    label = job_label(job)
    cancel = forms.button('cancel', {'job': oid_of(job)}, 'Cancel', 'danger',
                          confirm='Cancel job %s? It will not run.'
                          % label.text, busy='Cancelling\u2026')
    try:
        return PendingRow(label, call_text(job), when(job.begin_after, now),
                          None, cancel)
    except Exception as exc:  # an unreadable job: say so
        return PendingRow(label, '', None, str(exc), cancel)


def queue_blocks(queues: Any, forms: Forms, now: datetime.datetime
                 ) -> List[QueueBlock]:
    return [QueueBlock(name, len(queue), [
        pending_row(job, forms, now)
        for job in itertools.islice(iter(queue), NEXT_PENDING)],
        queue.paused, control_button(name, queue.paused, forms))
        for name, queue in sorted(queues.items())]


# -- dispatchers ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ProgressBar:
    """What a running job said of its progress (``local.set_progress``);
    the message is the job's text, escaped like every value."""
    percent: int
    message: str
    said: str  # how long ago


@dataclasses.dataclass(frozen=True)
class ActiveJob:
    job: JobLabel
    call: str
    status: Pill
    started: str
    unreadable: Optional[str]
    progress: Optional[ProgressBar] = None


def progress_bar(job: Any, now: datetime.datetime) -> Optional[ProgressBar]:
    said = local.get_progress(job)
    if said is None:
        return None
    return ProgressBar(said.percent, said.message, ago(said.at, now))


@dataclasses.dataclass(frozen=True)
class AgentRow:
    queue: str
    name: str
    active: List[ActiveJob]
    size: int
    scale: Button  # its form takes the new size too

    @property
    def full(self) -> bool:
        return bool(self.size) and len(self.active) >= self.size

    @property
    def percent(self) -> int:
        share = min(len(self.active) / self.size, 1) if self.size else 0
        return round(share * 100)


@dataclasses.dataclass(frozen=True)
class DispatcherBlock:
    uuid: str
    state: Pill
    mine: bool
    dead: bool
    requeue: Optional[Button]
    activated: Optional[When]
    last_ping: Optional[When]
    death_after: str
    agents: List[AgentRow]


def active_job(job: Any, now: datetime.datetime) -> ActiveJob:
    try:
        started = ('started ' + ago(job.active_start, now)
                   if job.active_start else 'not started')
        return ActiveJob(job_label(job), call_text(job),
                         Pill(status_word(job), 'warn'), started, None,
                         progress_bar(job, now))
    except Exception as exc:
        return ActiveJob(job_label(job), '', Pill('', ''), '', str(exc))


def dispatcher_block(uuid: str, entries: Entries, mine: Optional[str],
                     db_now: Any, forms: Forms, now: datetime.datetime
                     ) -> DispatcherBlock:
    first = entries[0][1]
    activated = first.activated
    dead = activated is not None and any(
        r.is_dead(db_now) for _, r in entries)
    last_ping = max((r.last_ping for _, r in entries
                     if r.last_ping is not None), default=None)
    if activated is None:
        state = Pill('stopped', 'idle')
    elif dead:
        state = Pill('dead', 'bad')
    else:
        state = Pill('alive', 'ok')
    requeue = forms.button(
        'requeue', {'uuid': uuid}, 'Re-queue its jobs', 'primary',
        confirm='Deactivate dispatcher %s and hand its jobs back to '
                'their queues? %s' % (uuid, AT_LEAST_ONCE),
        busy='Re-queuing\u2026') if dead else None
    rows = [AgentRow(queue_name, agent.name,
                     [active_job(job, now) for job in list(agent)],
                     agent.size, forms.button(
                         'scale', {'queue': queue_name, 'agent': agent.name},
                         'Set', busy='Setting\u2026'))
            for queue_name, registration in entries
            for agent in registration.values()]
    return DispatcherBlock(
        uuid, state, uuid == mine, dead, requeue,
        when(activated, now) if activated else None,
        when(last_ping, now), took(first.ping_death_interval), rows)


def dispatcher_blocks(queues: Any, regs: Dict[str, Entries], forms: Forms,
                      request: Any, now: datetime.datetime
                      ) -> List[DispatcherBlock]:
    """This process's dispatcher first, then the active ones."""
    running = getattr(request.registry, 'zcasync_dispatcher', None)
    mine = running.UUID if running is not None else None
    db_now = None
    for queue in queues.values():
        db_now = queue.dispatchers.database_now()
        break

    def order(item: Tuple[str, Entries]) -> Tuple[bool, bool, str]:
        uuid, entries = item
        return (uuid != mine, entries[0][1].activated is None, uuid)
    return [dispatcher_block(uuid, entries, mine, db_now, forms, now)
            for uuid, entries in sorted(regs.items(), key=order)]


# -- periodic jobs --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PeriodicRow:
    name: str
    error: Optional[str]
    queue: str
    cron: str
    timezone: Optional[str]  # None: UTC
    missed: Any
    next: Optional[When]
    last: Optional[When]
    state: Optional[Pill]  # how its last job went, if it ran


def last_run_state(job: Any) -> Optional[Pill]:
    if job is None:
        return None
    if is_failed(job):
        return Pill('failed', 'bad')
    return Pill(status_word(job), 'ok' if job.status == COMPLETED else 'warn')


def periodic_rows(queues: Any, now: datetime.datetime) -> List[PeriodicRow]:
    """The schedules of ``periodic``: when each runs next and how its
    last run went."""
    return [PeriodicRow(
        name, clip(schedule.error, 200) if schedule.error else None,
        queue_name, schedule.cron,
        schedule.timezone if schedule.timezone != 'UTC' else None,
        schedule.missed, when(schedule.next, now), when(schedule.last, now),
        last_run_state(schedule.last_job))
        for queue_name, queue in sorted(queues.items())
        for name, schedule in periodic.schedules(queue).items()]


def periodic_html(queues: Any, now: datetime.datetime) -> str:
    """The periodic jobs' section alone."""
    return render('periodic.jinja2', periodic=periodic_rows(queues, now))
