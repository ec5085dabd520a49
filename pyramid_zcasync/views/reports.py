"""The database reports behind ``/db/*``: which jobs are where, filtered,
and how a job looks in JSON.

Kept apart from the views so that a view is only its parameters, and the
dashboard can ask for the same selections.  Jobs are found where the model
keeps them, never by scanning the database: pending jobs in their queue
(in claim order), assigned, active and callbacks jobs in the agent that
claimed them, completed jobs in the *bounded* history of the agent that
ran them (7 days or 10000 jobs per agent by default).  So a job completed
without an agent (its ``begin_by`` passed while it was pending) is in no
report but ``/db/jobs/{oid}``.
"""
from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import heapq
import itertools
import types
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional,
                    Tuple)

from .. import clock, deps
from ..safetext import quote
from ..failure import Failure
from ..interfaces import ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW, PENDING
from ..job import Job
from .format import job_id, not_found
from .results import DispatcherStatus, JobInfo, JobStats, Status

#: The short status names zc.async's monitor used.
STATUS_NAMES = {NEW: 'new', PENDING: 'pending', ASSIGNED: 'assigned',
                ACTIVE: 'active', CALLBACKS: 'callbacks',
                COMPLETED: 'completed'}
#: The ``state`` filter's values; succeeded and failed split completed.
STATES = ('pending', 'assigned', 'active', 'callbacks', 'completed',
          'succeeded', 'failed')
COMPLETED_STATES = ('completed', 'succeeded', 'failed')
#: States found in the agents, and the job status each stands for.
HELD_STATES = {'assigned': ASSIGNED, 'active': ACTIVE,
               'callbacks': CALLBACKS}
#: Job attributes the ``time`` parameter may name for since/before/at.
TIME_FIELDS = ('begin_after', 'active_start', 'active_end',
               'initial_callbacks_end')
#: By default a job is dated by what matters in its state: when it is
#: due while it waits, when it started while it runs, when it ended after.
DEFAULT_TIME = {PENDING: 'begin_after', ASSIGNED: 'begin_after',
                ACTIVE: 'active_start', CALLBACKS: 'active_end',
                COMPLETED: 'active_end'}
#: Longest repr of an argument or result in a job's description: a job
#: may hold megabytes, a report must stay small.
REPR_LIMIT = 200
#: Most arguments, callbacks and annotation names a job's view lists; a
#: last entry says how many more there are.
LIST_LIMIT = 50


@dataclasses.dataclass
class Window:
    """Time bounds on a job: ``since`` and ``at`` inclusive, ``before``
    exclusive, on ``field`` (or the state's default time)."""
    since: Optional[datetime.datetime] = None
    before: Optional[datetime.datetime] = None
    at: Optional[datetime.datetime] = None
    field: Optional[str] = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.since, self.before, self.at))

    def admits(self, job: Job) -> bool:
        if not self:
            return True
        name = self.field or DEFAULT_TIME.get(job.status, 'begin_after')
        when = getattr(job, name, None)
        return when is not None and (
            (self.since is None or when >= self.since)
            and (self.before is None or when < self.before)
            and (self.at is None or when <= self.at))


@dataclasses.dataclass
class Selection:
    """Where to look (queues; dispatchers and agents by name) and which
    jobs to keep (time window, callable glob)."""
    queues: list
    uuid: Optional[str] = None
    agent: Optional[str] = None
    window: Window = dataclasses.field(default_factory=Window)
    callable: Optional[str] = None

    def registrations(self, queue: Any) -> List[Any]:
        return [r for r in queue.dispatchers.values()
                if self.uuid is None or r.UUID == self.uuid]

    def agents_of(self, registration: Any) -> List[Any]:
        return [a for a in registration.values()
                if self.agent is None or a.name == self.agent]

    def agents(self) -> list:
        return [agent for queue in self.queues
                for reg in self.registrations(queue)
                for agent in self.agents_of(reg)]

    @property
    def restricted(self) -> bool:
        """An agent or dispatcher filter: pending jobs are then those one
        of the selected agents could claim (as in zc.async)."""
        return self.uuid is not None or self.agent is not None

    def keeps(self, job: Job) -> bool:
        return self.window.admits(job) and (
            self.callable is None or callable_matches(self.callable, job))


def select(queues: Any, queue: Optional[str] = None,
           uuid: Optional[str] = None,
           agent: Optional[str] = None, window: Optional[Window] = None,
           callable: Optional[str] = None) -> Selection:
    """A Selection; an unknown queue, dispatcher or agent is a 404 (a
    typo would otherwise look like an empty report)."""
    if queue is None:
        chosen = [queues[name] for name in sorted(queues)]
    elif queue in queues:
        chosen = [queues[queue]]
    else:
        raise not_found('no queue %s; the queues are %s'
                        % (quote(queue), ', '.join(map(repr, sorted(queues)))))
    found = Selection(chosen, uuid, agent, window or Window(), callable)
    where = 'queue %s' % quote(queue) if queue is not None else 'any queue'
    registrations = [r for q in chosen for r in found.registrations(q)]
    if uuid is not None and not registrations:
        raise not_found('no dispatcher %s is registered in %s'
                        % (quote(uuid), where))
    if agent is not None and not found.agents():
        raise not_found('no agent %s in %s%s' % (
            quote(agent), where,
            '' if uuid is None else ' of dispatcher %s' % quote(uuid)))
    return found


# -- finding jobs ---------------------------------------------------------

def pending_jobs(selection: Selection) -> Iterator[Job]:
    """Pending jobs in claim order (due time), across the queues; under
    an agent or dispatcher filter, those its agents in that queue could
    claim (by their filters; quotas and running state aside)."""
    sources = []
    for queue in selection.queues:
        agents = None
        if selection.restricted:
            agents = [agent for reg in selection.registrations(queue)
                      for agent in selection.agents_of(reg)]
            if not agents:
                continue
        sources.append(_pending_in(queue, selection, agents))
    # Each queue lists its jobs in claim order: priority, then due time;
    # the jobs waiting for prerequisites come after: none can be claimed.
    claimable = heapq.merge(*sources, key=lambda job: (-job.priority,
                                                       job._key))
    if selection.restricted:
        return claimable
    return itertools.chain(claimable, (
        job for queue in selection.queues
        for job in deps.waiting_jobs(queue) if selection.keeps(job)))


def _pending_in(queue: Any, selection: Selection,
                agents: Optional[list]) -> Iterator[Job]:
    return (job for job in queue
            if selection.keeps(job) and _claimable(job, agents))


def _claimable(job: Job, agents: Optional[list]) -> bool:
    if agents is None:
        return True
    for agent in agents:
        try:
            if agent.filter is None or agent.filter(job):
                return True
        except Exception:  # a broken filter claims nothing, here too
            continue
    return False


def held_jobs(selection: Selection, statuses: Iterable[str]) -> List[Job]:
    """Jobs in the selected agents with these statuses, oldest start first
    (an agent holds at most ``size`` jobs: sorting is cheap)."""
    statuses = set(statuses)
    found = [job for agent in selection.agents() for job in agent
             if job.status in statuses and selection.keeps(job)]
    return sorted(found, key=lambda job: (
        job.active_start or job.begin_after or clock.EPOCH))


def completed_jobs(selection: Selection, which: str = 'completed'
                   ) -> Iterator[Job]:
    """Completed jobs of the selected agents' histories, newest first,
    each once: ``which`` is completed, succeeded or failed."""
    sources = [_history(agent, selection) for agent in selection.agents()]
    seen = set()
    for job in heapq.merge(*sources, key=_ended, reverse=True):
        if job._p_oid in seen:
            continue
        seen.add(job._p_oid)
        if job.status != COMPLETED:
            continue  # retried since: reported where it is now
        if which != 'completed' and (which == 'failed') != failed(job):
            continue
        if selection.keeps(job):
            yield job


def _history(agent: Any, selection: Selection) -> Iterator[Job]:
    since = selection.window.since
    if since is not None and selection.window.field in (None, 'active_end'):
        return reversed(list(agent.completed.since(since)))
    return iter(agent.completed)


def _ended(job: Job) -> datetime.datetime:
    return job.active_end or clock.EPOCH


def iter_jobs(selection: Selection, states: Iterable[str]) -> Iterator[Job]:
    """Pending (claim order), then held (by start), then completed
    (newest first)."""
    states = set(states)
    parts: list = []
    if 'pending' in states:
        parts.append(pending_jobs(selection))
    held = [HELD_STATES[s] for s in HELD_STATES if s in states]
    if held:
        parts.append(held_jobs(selection, held))
    done = states & set(COMPLETED_STATES)
    if done:
        which = done.pop() if len(done) == 1 else 'completed'
        parts.append(completed_jobs(selection, which))
    return itertools.chain(*parts)


def count_jobs(selection: Selection, states: Iterable[str]) -> int:
    """Like ``len(list(iter_jobs(...)))``; unfiltered pending jobs are
    counted by the queues' lengths, without loading a million jobs."""
    states = set(states)
    total = 0
    if 'pending' in states and not (selection.restricted or selection.window
                                    or selection.callable):
        total = sum(len(queue) + deps.waiting_count(queue)
                    for queue in selection.queues)
        states.discard('pending')
    return total + sum(1 for _ in iter_jobs(selection, states))


# -- describing jobs ------------------------------------------------------

def failed(job: Job) -> bool:
    return isinstance(job.result, Failure)


def outcome(job: Job) -> str:
    """The status name, completed split into succeeded and failed."""
    if job.status == COMPLETED:
        return 'failed' if failed(job) else 'succeeded'
    return STATUS_NAMES.get(job.status, str(job.status))


def short_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a repr that raises must not break a report
        text = '<%s; repr failed: %s>' % (type(value).__name__, exc)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def callable_name(func: Any) -> str:
    """Dotted name of a job's callable (a bound method: its class's)."""
    if isinstance(func, types.MethodType):
        owner = func.__self__
        cls = owner if isinstance(owner, type) else type(owner)
        return '%s.%s.%s' % (cls.__module__, cls.__qualname__,
                             func.__name__)
    name = getattr(func, '__qualname__', None)
    if not isinstance(name, str):
        return short_repr(func)
    module = getattr(func, '__module__', None)
    return '%s.%s' % (module, name) if module else name


def callable_matches(pattern: str, job: Job) -> bool:
    """zc.async's ``callable`` filter: a glob on the dotted name, or on
    the last part of it when the pattern has no dot."""
    name = callable_name(job.callable)
    if '.' not in pattern:
        name = name.rsplit('.', 1)[-1]
    return fnmatch.fnmatchcase(name, pattern)


def reference(job: Any) -> Optional[List[Any]]:
    """The id of a related job, or None (not stored yet, or no job)."""
    if job is None or getattr(job, '_p_jar', None) is None:
        return None
    return job_id(job)


def durations(job: Job, now: datetime.datetime) -> tuple:
    """(wait, active): due to start (or to now), start to end (or now)."""
    start, due = job.active_start, job.begin_after
    wait = None if due is None else (start or now) - due
    active = None if start is None else (job.active_end or now) - start
    return wait, active


def retry_policy_name(job: Job) -> Optional[str]:
    try:
        policy = job.getRetryPolicy()
    except Exception as exc:  # a broken factory is worth showing, not a 500
        return 'error: %s' % short_repr(exc)
    cls = type(policy)
    return '%s.%s' % (cls.__module__, cls.__qualname__)


def describe(job: Job, now: Optional[datetime.datetime] = None
             ) -> JobInfo:
    """Everything the job view shows; datetimes and durations are left
    to the JSON renderer."""
    now = now or clock.utcnow()
    wait, active = durations(job, now)
    is_failure = failed(job)
    has_result = job.status in (CALLBACKS, COMPLETED) and not is_failure
    # Not job.annotations: that property creates the BTree, a write.
    annotations = getattr(job, '_annotations', None)
    return {
        'id': job_id(job),
        'repr': short_repr(job),
        'status': STATUS_NAMES.get(job.status, str(job.status)),
        'callable': callable_name(job.callable),
        'args': first_of(job.args, short_repr),
        'kwargs': {str(k)[:REPR_LIMIT]: short_repr(v) for k, v in
                   itertools.islice(job.kwargs.items(), LIST_LIMIT)},
        'begin after': job.begin_after,
        'begin by': job.begin_by,
        'active start': job.active_start,
        'active end': job.active_end,
        'initial callbacks end': job.initial_callbacks_end,
        'wait': wait,
        'active': active,
        'failed': is_failure,
        'result': short_repr(job.result) if has_result else None,
        'failure': job.result if is_failure else None,
        'dispatcher': job.assignerUUID,
        'queue': getattr(job.queue, 'name', None),
        'agent': getattr(job.agent, 'name', None),
        'quota names': list(job.quota_names),
        'retry policy': retry_policy_name(job),
        'callbacks': first_of(job.callbacks, reference),
        'parent': reference(job.parent),
        'waiting for': reference(job.waiting_for),
        'annotations': first_of(annotations.keys(),
                                lambda key: str(key)[:REPR_LIMIT])
        if annotations is not None else [],
    }


def first_of(items: Any, show: Callable[[Any], Any]) -> List[Any]:
    """``show`` of the first LIST_LIMIT items, then how many were left
    out: a job is anyone's input, and its view is one answer."""
    shown = [show(item) for item in itertools.islice(items, LIST_LIMIT)]
    if len(shown) == LIST_LIMIT:
        left = len(items) - LIST_LIMIT
        if left > 0:
            shown.append('... %d more' % left)
    return shown


def statistics(jobs: Iterable[Job], now: datetime.datetime) -> JobStats:
    """zc.async's jobstats: counts by state, and the jobs that waited and
    ran longest and shortest (zc.async's "shortest" kept the longest)."""
    counts: Dict[str, int] = dict.fromkeys(
        ('pending', 'assigned', 'active', 'callbacks', 'succeeded',
         'failed'), 0)
    extremes: Dict[str, Tuple[datetime.timedelta, Job]] = {}
    for job in jobs:
        name = outcome(job)
        counts[name] = counts.get(name, 0) + 1
        for label, value in zip(('wait', 'active'), durations(job, now)):
            if value is None:
                continue
            for kind, better in (('longest', value.__gt__),
                                 ('shortest', value.__lt__)):
                key = '%s %s' % (kind, label)
                if key not in extremes or better(extremes[key][0]):
                    extremes[key] = (value, job)
    stats: JobStats = dict(counts)
    for key in ('longest wait', 'shortest wait', 'longest active',
                'shortest active'):
        found = extremes.get(key)
        stats[key] = None if found is None else {
            'duration': found[0], 'job': job_id(found[1])}
    return stats


def dispatcher_status(selection: Selection,
                      now: Optional[datetime.datetime] = None) -> Status:
    """zc.async's ``asyncdb status``: per queue, its length and quotas,
    and its activated dispatchers with their pings and agents."""
    now = now or clock.utcnow()
    report: Status = {}
    for queue in selection.queues:
        dispatchers: Dict[str, DispatcherStatus] = {}
        for reg in selection.registrations(queue):
            if not reg.activated:
                continue
            last = reg.last_ping
            dispatchers[reg.UUID] = {
                'activated': reg.activated,
                'last ping': last,
                'since ping': None if last is None else now - last,
                'dead': reg.dead,
                'ping interval': reg.ping_interval,
                'ping death interval': reg.ping_death_interval,
                'agents': {agent.name: {
                    'size': agent.size, 'len': len(agent),
                    'completed': len(agent.completed),
                    'filter': _name_or_none(agent.filter),
                    'chooser': _name_or_none(agent.chooser),
                } for agent in selection.agents_of(reg)},
            }
        report[queue.name] = {
            'len': len(queue),
            'quotas': {q.name: {'size': q.size, 'len': len(q)}
                       for q in queue.quotas.values()},
            'dispatchers': dispatchers,
        }
    return report


def _name_or_none(func: Any) -> Optional[str]:
    return None if func is None else callable_name(func)
