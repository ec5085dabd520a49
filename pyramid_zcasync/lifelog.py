"""A job's life log: each change of its status, when, on which
dispatcher, at which attempt, and why.

``lifecycle._move`` records every change here, so the log is complete
whoever moved the job.  It is written on the hot path of every job
(thousands a second), in the transaction that moves it anyway, so it is
kept cheap: one plain tuple attribute on the job, replaced on each change
(no persistent object of its own, no extra record to store), each event a
tuple of a time in microseconds, the two statuses as small numbers, the
dispatcher's UUID (the same string as the job's, stored once), the
attempt and a short text: some 30 bytes an event.  It is
bounded: the first event (the put, usually) and the last
:data:`LIMIT` are kept, and the job counts those it dropped between.

A detail can carry a job's exception message, untrusted text: it is
clipped here, and escaped by whatever shows it (safetext.py).
"""
from __future__ import annotations

import datetime
from typing import Any, List, NamedTuple, Optional, Tuple

from . import clock
from .annotated import annotation
from .errors import JobCancelled
from .failure import Failure
from .interfaces import (ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW,
                         PENDING)
from .retry import RETRY_COUNTS
from .safetext import clip

#: How many of the latest events a job keeps, besides its first.
LIMIT = 50
#: Longest exception message a detail keeps.
MESSAGE_LIMIT = 120

#: What a job stores per event: (microseconds since the epoch, code of
#: the status before, of the status after, dispatcher UUID or None,
#: attempt, detail).
Stored = Tuple[int, int, int, Optional[str], int, str]
#: The statuses by their stored codes: stored in jobs, so only ever
#: appended to, never reordered.
CODED = (NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED)
_CODES = {status: code for code, status in enumerate(CODED)}


class Event(NamedTuple):
    """One change of a job's status, as readers see it."""
    at: datetime.datetime
    before: str
    after: str
    dispatcher: Optional[str]
    attempt: int
    detail: str


def record(job: Any, before: str, after: str, detail: str) -> None:
    """Add the move ``before`` -> ``after`` to ``job``'s log.

    An attempt begins when the job is queued (or called in place): its
    number is read from the retry counts then, and every later move
    until the next queueing belongs to it.  (The counts themselves are
    ahead of that: a worker stores the count of a failure before it
    records the failure.)"""
    events: Tuple[Stored, ...] = job._events
    if events and after != PENDING:
        attempt = events[-1][4]
    else:
        attempt = attempt_of(job)
    event: Stored = (clock.to_micros(clock.utcnow()), _CODES[before],
                     _CODES[after], job.assignerUUID, attempt, detail)
    if len(events) > LIMIT:
        job._events_dropped += 1
        job._events = events[:1] + events[2:] + (event,)
    else:
        job._events = events + (event,)


def name_dispatcher(job: Any, uuid: str) -> None:
    """The job's last event happened on dispatcher ``uuid``: a claim is
    made by a queue, and the agent that took it is known just after."""
    events: Tuple[Stored, ...] = job._events
    if events and events[-1][3] is None:
        last = events[-1]
        job._events = events[:-1] + (last[:3] + (uuid,) + last[4:],)


def attempt_of(job: Any) -> int:
    """Which attempt the job is about to make: 1, plus the failed
    attempts and the interruptions its retry policy recorded in it.
    Cheap on a job never retried: it has no annotations.  Retries a
    worker makes in place after a conflict are not recorded in the job
    until it commits, so they repeat the number."""
    counts = annotation(job, RETRY_COUNTS) or {}
    failed = sum(n for n in counts.values() if isinstance(n, int))
    interrupted = annotation(job, RETRY_COUNTS + '.interruptions', 0)
    return 1 + failed + (interrupted if isinstance(interrupted, int) else 0)


def outcome(result: Any) -> str:
    """The detail of a job ending with ``result``: 'finished', or which
    exception failed it (its type and the start of its message)."""
    if not isinstance(result, Failure):
        return 'finished'
    message = clip(result.message.split('\n', 1)[0], MESSAGE_LIMIT)
    if result.check(JobCancelled):
        return 'cancelled' if message == 'cancelled' else \
            'cancelled: %s' % message
    return 'failed: %s: %s' % (result.type_name, message)


def events(job: Any) -> List[Event]:
    """``job``'s log, oldest first (the events dropped are missing
    between the first and the second: :func:`dropped` says how many)."""
    return [Event(clock.from_micros(at), CODED[before], CODED[after],
                  dispatcher, attempt, detail)
            for at, before, after, dispatcher, attempt, detail
            in job._events]


def dropped(job: Any) -> int:
    """How many events the job's log dropped to stay bounded."""
    return int(job._events_dropped)
