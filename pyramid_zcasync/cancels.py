"""Cancelling a job that was claimed or is running: the request on the
job, and the failure it ends with.

A job not started yet is simply failed (``lifecycle.cancel``).  One that
a dispatcher claimed or runs cannot be ended by the canceller: its
worker holds it, maybe in another process.  So the cancel is a request,
written on the job in the canceller's transaction:

1. ``request`` stores the reason on the job (``errors.CANCEL_REQUEST``)
   and logs 'cancel requested' in its life log.
2. The dispatcher running the job sees the commit through its watch of
   the database (``cancelwatch.CancelWatch``), asks the job to stop
   (``local.cancel_requested()`` turns true) and, after a short grace,
   interrupts its thread with JobCancelled (``timelimit.Interruptible``).
3. The runner aborts the attempt's transaction and records the failure
   of ``cancelled`` in a fresh one, then ``done``; the retry policy is
   not asked.  Callbacks run and see the failure.

A job that finished before the request committed has simply finished:
the request writes the job, so the one of the two transactions that
commits second conflicts.  If the canceller's is second, its retry finds
the job completed and is refused; if the job's is second, its retry
finds the request and ends the job cancelled, its effects never
committed.  Any ending of an attempt asked to stop (a result, an
exception) is JobCancelled: the request committed first.
"""
from __future__ import annotations

from types import TracebackType
from typing import Optional

from . import lifelog
from .errors import CANCEL_REQUEST, BadStatusError, JobCancelled, \
    cancel_reason
from .failure import Failure
from .interfaces import ACTIVE, ASSIGNED, CALLBACKS, COMPLETED
from .safetext import clip
from .shapes import JobShape


def request(job: JobShape, reason: str) -> None:
    """Ask the dispatcher holding a claimed or running job to stop it.
    Asked again, the first reason stays and nothing is written."""
    if job._status not in (ASSIGNED, ACTIVE) or job.waiting_for is not None:
        raise BadStatusError('cannot cancel %r: %s' % (job, _why_not(job)))
    if cancel_reason(job) is not None:
        return
    setattr(job, CANCEL_REQUEST, reason)
    lifelog.record(job, job._status, job._status, 'cancel requested: %s'
                   % clip(reason, lifelog.MESSAGE_LIMIT))


def _why_not(job: JobShape) -> str:
    if job._status == CALLBACKS:
        return ('its call finished already and its callbacks are running; '
                'only a job whose call has not finished can be cancelled')
    if job._status == COMPLETED:
        return 'it has completed already'
    return ('it waits for the job it returned, %r: cancel that one'
            % (job.waiting_for,))


def cancelled(reason: Optional[str],
              interrupted: Optional[TracebackType] = None) -> Failure:
    """The failure of a job whose cancel request was fulfilled
    (``interrupted``: where its call was stopped, shown in the
    traceback)."""
    exc = JobCancelled(reason or 'cancelled')
    return Failure.from_exception(exc.with_traceback(interrupted))


def done(job: JobShape) -> None:
    """Forget a fulfilled request (the failure keeps its reason), so
    that a new attempt of the job (``retry_failed``) is not cancelled by
    it again.  Writes nothing when there is none."""
    if cancel_reason(job) is not None:
        setattr(job, CANCEL_REQUEST, None)
