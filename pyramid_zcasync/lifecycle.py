"""A job's life: every change of its status, and the one way to free what
it holds.

The statuses (interfaces.py) and the moves between them (TRANSITIONS)::

             put            claim            start
      NEW ────────> PENDING ──────> ASSIGNED ──────> ACTIVE
       ^ <─unqueue──┘  │               │                │
       │               │ cancel,       │ fail           │ finish, fail
       │               │ expire        │                │
       │               v               v                v
       │        CALLBACKS (callbacks pending), else COMPLETED
       │               │
       │               └──finish_callbacks──> COMPLETED
       │
       ├── requeue (a retry, recovery): ASSIGNED or ACTIVE -> NEW -> PENDING
       ├── retry_failed: COMPLETED (failed) -> NEW -> PENDING
       └── woken (deps.py): PENDING waiting, out of the lanes -> PENDING

A job's path through a dispatcher, naming the functions here:
``put`` (Queue.put) → ``claim`` (Queue.claim, from an agent's chooser) →
``take_slot`` (Agent.claimJob) → ``start`` (its own transaction) →
``finish`` (the call and its result, one transaction), or ``requeue`` when
its retry policy wants a later attempt → each callback, then
``finish_callbacks`` (COMPLETED) → ``release_finished`` (slot and quotas,
in a short transaction of their own).  A job called in place (``job()``)
goes ``start`` → ``finish_in_place``.  ``recover`` takes the jobs of a
dispatcher that went away; ``fail``, ``cancel`` and ``expire`` end jobs
that will not run.

``_move`` is the only place a status is written: it checks the move
against :data:`TRANSITIONS` and names the job, the from- and to-status
when the move is not allowed, and records the move, with a detail its
caller gives, in the job's life log (lifelog.py).  ``release`` is the
only place a job's agent slot and quotas are freed.

Unique keys (``put(..., unique_key=...)``): a put finding its queue's
job of that key not completed returns that job and queues nothing.  The
key is freed by ``_move`` when the job becomes COMPLETED, whichever way
(finished, failed, cancelled, expired; a job with callbacks when the
last one ran), in the transaction that completes it, and by ``unqueue``
(a pulled job is queued no more).  A job requeued for a retry or by
recovery keeps its key: it has not completed.  ``retry_failed`` takes
the key again, and refuses while another job holds it; a waiting job
holds its key.  The index of keys is unique.py's.  Queue storage (which
tree holds a pending job) is queue.py's; this says what happens to jobs.
"""
from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, FrozenSet, Optional, TypeVar, cast

import zope.event

from . import cancels, clock, deps, lifelog, puthooks, unique
from .checks import check_time_limit
from .errors import BadStatusError, JobCancelled
from .failure import Failure
from .interfaces import (ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW, PENDING,
                         IJob, JobQueued)
from .retry import RETRY_COUNTS
from .shapes import AgentShape, JobShape, QueueShape

#: A job of whatever class the caller has (job.Job): the functions that
#: return the job they were given return it with its own type.
J = TypeVar('J', bound=JobShape)

#: status -> the statuses that may follow it.
TRANSITIONS: Dict[str, FrozenSet[str]] = {
    # put; called in place; cancelled before it was queued
    NEW: frozenset({PENDING, ACTIVE, CALLBACKS, COMPLETED}),
    # unqueued (pull, remove); claimed; cancelled or expired; woken by
    # its prerequisites (deps.py: from waiting into its lane)
    PENDING: frozenset({NEW, ASSIGNED, CALLBACKS, COMPLETED, PENDING}),
    # started; requeued (recovery, a retry); failed before it started
    ASSIGNED: frozenset({ACTIVE, NEW, CALLBACKS, COMPLETED}),
    # finished (or failed); requeued for a later attempt
    ACTIVE: frozenset({CALLBACKS, COMPLETED, NEW}),
    CALLBACKS: frozenset({COMPLETED}),
    # a new attempt: retry_failed (a failed job), requeue
    COMPLETED: frozenset({NEW}),
}

#: The annotation keeping the failure of the attempt before a retry.
FAILED_BEFORE = 'pyramid_zcasync.failed_before'
# RETRY_COUNTS, the annotation where retry policies keep their counts, is
# retry.py's (imported above, and so still importable from here).


class IllegalTransition(BadStatusError):
    """A status change that the lifecycle does not allow."""


def _move(job: JobShape, status: str, detail: str = '',
          settle: bool = True) -> None:
    """Write ``job``'s status, if allowed; log it (``settle``: finish)."""
    current = job._status
    if status not in TRANSITIONS[current]:
        raise IllegalTransition('%r cannot go from %s to %s'
                                % (job, current, status))
    job._status = status
    lifelog.record(job, current, status, detail)
    deps.forget(job)  # if it waited: it is woken, fails or is cancelled
    if status == COMPLETED:
        unique.free(job)
        if settle:
            _settle_dependents(job)


def _settle_dependents(job: JobShape) -> None:
    """Queue or fail each job waiting for ``job``, or decide in a job of
    its own once this commits (settle_waiting; deps.py says why)."""
    for dependent in deps.released_by(job):
        if not settle_waiting(dependent):
            dependent.queue.put(settle_waiting, dependent)


def settle_waiting(job: JobShape) -> bool:
    """Queue a waiting ``job`` whose prerequisites all succeeded, or fail
    it if one failed; whether it waits no more."""
    failed, waiting = deps.verdict(job)
    if failed is not None:
        _fail_out_of_queue(job, deps.failure_of(failed))
    elif deps.is_waiting(job) and not waiting:
        queue, now = job.queue, clock.utcnow()
        due = clock.to_micros(max(job.begin_after or now, now))
        _enqueue(queue, job, due, 'prerequisites done')
        puthooks.after_commit(queue, job)()
    return not deps.is_waiting(job)


# -- into and out of a queue --------------------------------------------

def put(queue: QueueShape, job: J,
        begin_after: Optional[datetime.datetime] = None,
        begin_by: Optional[Any] = None, priority: Optional[int] = None,
        time_limit: Optional[float] = None,
        unique_key: Optional[str] = None, after: Any = None) -> J:
    """Queue a NEW job, due at ``begin_after`` (now by default); or, if
    the queue holds a job of its unique key (``unique_key``, else the
    job's own) that has not completed, return that one instead (whatever
    ``after``, the jobs to wait for, that one was put with)."""
    prerequisites = deps.check_after(queue, job, after)
    key = unique.key_to_hold(job, unique_key)
    holder = _holder_instead(queue, job, key, 'put')
    if holder is not None:
        return cast(J, holder)  # one of this queue's jobs: a job.Job
    queue.quotas.check_names(job.quota_names)
    if priority is not None:
        job.priority = priority
    if time_limit is not None:
        job.time_limit = check_time_limit(time_limit)
    if begin_after is not None:
        job.begin_after = begin_after
    if begin_by is not None:
        job.begin_by = begin_by
    now = clock.utcnow()
    if job.begin_after is None:
        job.begin_after = now
    if deps.unfinished(prerequisites) or deps.first_failed(prerequisites):
        _put_after(queue, job, key, prerequisites)
    else:
        _queue_new(queue, job, key,
                   clock.to_micros(max(job.begin_after, now)), 'put')
    return job


def _put_after(queue: QueueShape, job: JobShape, key: Optional[str],
               prerequisites: tuple[JobShape, ...]) -> None:
    """Put a job waiting for unfinished ``prerequisites``; if one failed
    already, it completes at once with DependencyFailed, unqueued."""
    failed = deps.first_failed(prerequisites)
    job.queue = queue
    queue._p_jar.add(job)  # an oid now, as a queued job has
    if failed is not None:
        _fail_out_of_queue(job, deps.failure_of(failed))
        return
    announce = puthooks.before_put(queue, job)
    unique.hold(queue, job, key)
    waiting = deps.unfinished(prerequisites)
    _move(job, PENDING, 'put, waiting for %d jobs' % len(waiting))
    deps.hold(queue, job, waiting)
    announce()


def put_back(queue: QueueShape, job: J) -> J:
    """Queue a NEW job in front of every pending job of its priority
    (or return the job holding its unique key, as ``put``)."""
    key = unique.key_to_hold(job, None)
    holder = _holder_instead(queue, job, key, 'put back')
    if holder is not None:
        return cast(J, holder)
    queue.quotas.check_names(job.quota_names)
    _queue_new(queue, job, key, queue._front_micros(job.priority),
               'put back')
    return job


def _holder_instead(queue: QueueShape, job: JobShape, key: Optional[str],
                    doing: str) -> Optional[JobShape]:
    """The job to return instead of queueing ``job``: the queue's job
    holding its unique key, not completed; or None.  Only a NEW job may
    be queued."""
    if job._status != NEW:
        raise BadStatusError('cannot %s %r: only new jobs can be queued'
                             % (doing, job))
    return unique.holder(queue, key)


def _queue_new(queue: QueueShape, job: JobShape, key: Optional[str],
               micros: int, detail: str) -> None:
    """Queue a NEW job due at ``micros``, holding ``key``, once the
    extensions' ``before_put`` let it."""
    announce = puthooks.before_put(queue, job)
    unique.hold(queue, job, key)
    _enqueue(queue, job, micros, detail)
    announce()


def _enqueue(queue: QueueShape, job: JobShape, micros: int,
             detail: str) -> None:
    queue._insert(job, micros)
    job.queue = queue
    _move(job, PENDING, detail)
    zope.event.notify(JobQueued(job, queue))


def unqueue(queue: QueueShape, job: JobShape) -> None:
    """Take a pending job out of ``queue``: NEW again, in no queue, its
    unique key free (putting it again takes it again)."""
    queue._take(job)
    unique.free(job)
    _move(job, NEW, 'unqueued')
    job.queue = None


def claim(queue: QueueShape, filter: Optional[Callable[[Any], bool]] = None,
          now: Optional[datetime.datetime] = None) -> Optional[JobShape]:
    """The next job ``filter`` and the quotas allow, ASSIGNED, its quotas
    acquired; expired jobs are failed first (see Queue.claim).  ``filter``
    takes the queue's own jobs (job.Job)."""
    now = clock.aware_utc(now, 'now') or clock.utcnow()
    now_micros = clock.to_micros(now)
    expire(queue, now_micros)
    found = queue._claimable(filter, now, now_micros)
    if found is None:
        return None
    job, tree = found
    queue._take(job, tree)
    queue.quotas.acquire(job, now)
    _move(job, ASSIGNED, 'claimed')
    return job


def take_slot(agent: AgentShape, job: JobShape) -> None:
    """A claimed job now holds a slot of ``agent``."""
    job.assignerUUID = agent.UUID
    lifelog.name_dispatcher(job, agent.UUID)
    job.agent = agent
    agent._active[job._key] = job


def expire(queue: QueueShape, now_micros: int) -> int:
    """Fail the pending jobs whose ``begin_by`` passed; how many."""
    expired = queue._expired(now_micros)
    for job in expired:
        deadline = cast(datetime.datetime, job.begin_by)  # it has one
        queue._take(job)
        _fail_out_of_queue(job, TimeoutError(
            'job %r was not started by its begin_by deadline %s'
            % (job, deadline.isoformat())))
    return len(expired)


# -- running --------------------------------------------------------------

def start(job: JobShape, now: Optional[datetime.datetime] = None) -> None:
    """The call starts (ASSIGNED, or NEW when called in place)."""
    if job._status not in (NEW, ASSIGNED):
        raise BadStatusError('cannot start a job with status %s'
                             % job._status)
    _move(job, ACTIVE, 'started')
    job.active_start = now or clock.utcnow()


def finish(job: JobShape, result: Any, inline_callbacks: bool = False,
           settle: bool = False) -> None:
    """Record what the call returned; frees nothing and, unless ``settle``,
    settles no job waiting for it (the dispatcher does both in a short
    transaction of its own, so that a job's transaction writes nothing
    shared with other jobs and a conflict there never makes a job run
    again: ``release_finished``; deps.py).

    A returned job is waited for: this one completes when it does,
    without holding a dispatcher slot meanwhile.  ``inline_callbacks``
    runs the callbacks here, in this transaction."""
    # A job.Job (which this module cannot import), asked of its class: a
    # persistent result that is a ghost stays unloaded.
    if IJob.implementedBy(type(result)):
        _wait_for(job, result)
        return
    job._result = result
    job.active_end = clock.utcnow()
    _move(job, CALLBACKS if job.callbacks else COMPLETED,
          lifelog.outcome(result), settle)
    if inline_callbacks:
        run_callbacks_inline(job)


def finish_in_place(job: JobShape, result: Any,
                    inline_callbacks: bool = False) -> None:
    """``finish``, freeing the slot and quotas at once once the job is
    done with them: for jobs that end outside a dispatcher's run."""
    finish(job, result, inline_callbacks, settle=True)
    if _done_with_slot(job):
        release(job)


def _done_with_slot(job: JobShape) -> bool:
    """Completed, or waiting for a job it returned: the slot and quotas
    are held for nothing (with callbacks pending they are kept, so that
    recovery finds a job whose worker died before its callbacks ran)."""
    return job._status == COMPLETED or job.waiting_for is not None


def _wait_for(outer: JobShape, inner: JobShape) -> None:
    if inner is outer:
        raise BadStatusError('a job cannot wait for itself')
    outer.waiting_for = inner
    inner.addCallback(outer._resolver())


def inner_finished(outer: JobShape, result: Any) -> None:
    """The job ``outer`` waited for has its result: so has ``outer``."""
    outer.waiting_for = None
    finish_in_place(outer, result)
    hand_off_callbacks(outer)


# -- callbacks ------------------------------------------------------------

def run_callbacks_inline(job: JobShape) -> None:
    for callback in job.pending_callbacks():
        callback(job._result)
    finish_callbacks(job)


def hand_off_callbacks(job: JobShape) -> None:
    """Queue the pending callbacks of a job no worker runs (or run them
    here, without a queue), and complete it."""
    if job._status != CALLBACKS:
        return
    for callback in job.pending_callbacks():
        start_late_callback(job, callback)
    finish_callbacks(job)


def start_late_callback(job: JobShape, callback: JobShape) -> None:
    """A callback of a job that has its result already: through the
    job's queue when it has one, else called here."""
    if job.queue is not None:
        callback.args = list(callback.args) + [job._result]
        job.queue.put(callback)
    else:
        callback(job._result)


def finish_callbacks(job: JobShape) -> None:
    """COMPLETED once no callback is pending; the slot and quotas go."""
    if job._status == CALLBACKS and not job.pending_callbacks():
        _move(job, COMPLETED, 'callbacks done')
        job.initial_callbacks_end = clock.utcnow()
        release(job)


# -- freeing --------------------------------------------------------------

def release(job: JobShape, agent: Optional[AgentShape] = None) -> None:
    """Free what a job held while it ran: its quotas, and its slot in
    ``agent`` (by default its own: a group unassigns its jobs first);
    a job with its result enters the agent's history.  Harmless when
    done already: a BTree's ``pop`` of a missing key writes nothing, and
    the history gets the job only from the call that freed its slot."""
    queue = job.queue
    if job._status == COMPLETED:
        _settle_dependents(job)  # if finish left them: see deps.py
    if queue is not None and job.quota_names:
        queue.quotas.release(job)
    agent = agent if agent is not None else job.agent
    if agent is None:
        return
    held = agent._active.pop(job._key, None) is not None
    if job.agent is not None:  # a write would pickle the job again
        job.agent = None
    if held and job._status in (CALLBACKS, COMPLETED):
        agent.completed.add(job)  # once: only when its slot was freed


def release_finished(job: JobShape, uuid: Optional[str]) -> None:
    """Free the slot and quotas of a job dispatcher ``uuid`` ran, once it
    is done with them; nothing if they were freed already, or a sibling
    recovered the job meanwhile."""
    agent = job.agent
    if agent is None or agent.UUID != uuid or job.queue is None:
        return
    if _done_with_slot(job):
        release(job)


# -- again, or never ------------------------------------------------------

def requeue(job: JobShape, begin_after: Optional[datetime.datetime] = None,
            detail: str = 'requeued for retry') -> None:
    """Queue an assigned or started job again (a retry, or its dispatcher
    went away, which ``detail`` says): NEW again, then queued at the
    front of its priority, or due at ``begin_after``."""
    queue = job.queue
    release(job)
    _move(job, NEW, detail)
    job.assignerUUID = None
    job.active_start = None
    if begin_after is None:
        # At the front, even if one of its quotas was removed meanwhile.
        micros = queue._front_micros(job.priority)
    else:
        due = cast(datetime.datetime,  # not None: begin_after is not
                   clock.aware_utc(begin_after, 'begin_after'))
        job._begin_after = due
        micros = clock.to_micros(due)
    _enqueue(queue, job, micros, 'queued again')


def recover(job: JobShape, detail: str = 'recovered') -> None:
    """A job whose dispatcher went away (``detail`` says how) and that
    had not started (or had its result already): queued again, or its
    callbacks handed to the queue.  A started one is its retry policy's
    (registry.recover_job)."""
    if job._status == ASSIGNED:
        requeue(job, detail=detail)  # never started: nothing to undo
        return
    release(job)
    hand_off_callbacks(job)


def retry_failed(queue: QueueShape, job: J) -> J:
    """Run a failed job again (an operator's decision): same job, new
    attempt, at the back of the queue.  Its callbacks already saw the
    failure and are not run again."""
    if job._status != COMPLETED or not isinstance(job._result, Failure):
        raise BadStatusError('only a failed job can be retried; %r has '
                             'status %s' % (job, job._status))
    unique.refuse_if_held(queue, job)
    if job.agent is not None:
        # Its slot, which a slow group leaves for the next poll to free:
        # freed now, or the agent would keep it (keyed by the key that
        # the put below changes) for good.
        release(job)
    job.annotations[FAILED_BEFORE] = job._result
    # A new attempt: the retry counts of the last one do not limit it.
    job.annotations.pop(RETRY_COUNTS, None)
    job._result = None
    cancels.done(job)  # a request it ended by must not stop the new try
    _move(job, NEW, 'retried by request')
    job.assignerUUID = None
    job.active_start = job.active_end = None
    job._begin_after = job._begin_by = None
    job.queue = None
    return cast(J, queue.put(job))  # the job itself (Queue.put)


def fail(job: JobShape, exc: Optional[BaseException] = None) -> None:
    """End a job that will not run (deadline passed, given up)."""
    if job._status in (CALLBACKS, COMPLETED):
        raise BadStatusError('cannot fail a job with status %s'
                             % job._status)
    if job._status == PENDING and job.queue is not None and \
            not deps.is_waiting(job):  # a waiting job is in no lane
        # Out of the pending jobs, but still of this queue, so that its
        # callbacks are queued rather than run in the caller's
        # transaction (unqueue would forget the queue).
        job.queue._take(job)
    if exc is None:
        exc = RuntimeError('job failed without running')
    _fail_out_of_queue(job, exc)


def _fail_out_of_queue(job: JobShape, exc: BaseException) -> None:
    finish_in_place(job, Failure.from_exception(exc))
    hand_off_callbacks(job)


def cancel(job: JobShape, reason: str = 'cancelled') -> None:
    """Cancel a job that has not completed; its callbacks see a
    JobCancelled failure.  Not started (NEW, PENDING): it completes at
    once.  Claimed or running: the request is recorded for the dispatcher
    running it, which stops it (cancels.py); later, it is refused."""
    if job._status in (NEW, PENDING):
        fail(job, JobCancelled(reason))
    else:
        cancels.request(job, reason)
