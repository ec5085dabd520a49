"""Retry policies: what to do when a job's call or commit fails, or when
its dispatcher goes away while it runs.

Each hook answers with a *decision*:

- ``False``: give up; the failure becomes the job's result (always for
  a JobCancelled: the runner does not even ask);
- ``True``: try again at once;
- a ``datetime.timedelta``: try again after that delay (a conflict's is
  a short random one).  The runner
  closes its ZODB connection before waiting (zc.async slept holding it).

The runner keeps ``data_cache`` across attempts (their transactions are
aborted, so the job cannot remember) and calls ``updateData`` in the
transaction that finally commits, which stores the counts in the job's
annotations for everyone to see.
"""
from __future__ import annotations

import datetime
import errno
import logging
import random
from typing import Any, Optional, Union

from ZODB.POSException import ConflictError

from .annotated import annotation
from .errors import JobCancelled
from .failure import Failure

#: The annotation where retry policies keep their counts (lifecycle.py
#: clears it for a new attempt; it imports it from here).
RETRY_COUNTS = 'pyramid_zcasync.retry'

log = logging.getLogger('pyramid_zcasync.trace')

Decision = Union[bool, datetime.timedelta, datetime.datetime]

#: Retries due within this long are waited for by the worker (its ZODB
#: connection closed meanwhile): the short random pauses after a
#: conflict.  A later one puts the job back in its queue, due then, and
#: frees its slot for other jobs.
PAUSE_IN_PLACE = datetime.timedelta(seconds=1)

#: ZEO's ClientDisconnected, by name: ZEO is an optional dependency.
CLIENT_DISCONNECTED = 'ZEO.Exceptions.ClientDisconnected'
#: What a storage raises when its server went away, by name (each is an
#: optional dependency, and a failure record keeps only names): ZEO's,
#: and what RelStorage lets through from its database drivers when
#: PostgreSQL restarts or a connection is cut (its drivers'
#: ``disconnected_exceptions``: the DB-API OperationalError and
#: InterfaceError, and its own ReplicaClosedException).
DISCONNECTED = (
    CLIENT_DISCONNECTED,
    'pyramid_zcasync.retry.StorageFull',
    'relstorage.adapters.interfaces.ReplicaClosedException',
    'psycopg2.OperationalError',
    'psycopg2.InterfaceError',
    'psycopg.OperationalError',
    'psycopg.InterfaceError',
    'pg8000.exceptions.OperationalError',
    'pg8000.exceptions.InterfaceError',
)
#: The longest pause before the second attempt of a job that conflicted;
#: it doubles for each later attempt, up to ``CONFLICT_PAUSE_MAX``.
CONFLICT_PAUSE = datetime.timedelta(milliseconds=25)
CONFLICT_PAUSE_MAX = datetime.timedelta(seconds=1)
#: First wait after losing the storage server.
BACKOFF_START = datetime.timedelta(seconds=5)
#: Longest wait between attempts to reach the storage server.
BACKOFF_MAX = datetime.timedelta(seconds=60)


def conflict_pause(attempt: int) -> datetime.timedelta:
    """A random pause before ``attempt`` (2, 3, ...) of a job that
    conflicted: up to 25 ms, 50 ms, 100 ms... (1 s at most).

    Retrying at once meets the same writer again where its lock is still
    held: RelStorage takes PostgreSQL's read-current row locks NOWAIT, so
    two processes whose jobs write the same BTrees could exhaust the five
    attempts within milliseconds.  A random pause (the connection is
    closed meanwhile) spreads the retries of the jobs that collided."""
    doublings = min(max(attempt - 2, 0), 10)  # past the cap already
    ceiling = min(CONFLICT_PAUSE * 2 ** doublings, CONFLICT_PAUSE_MAX)
    return ceiling * random.random()


def backoff(attempt: int, start: datetime.timedelta = BACKOFF_START,
            maximum: datetime.timedelta = BACKOFF_MAX) -> datetime.timedelta:
    """5 s, 10 s, 20 s, 40 s, then 60 s for ``attempt`` 1, 2, 3, 4, 5…

    Capped before multiplying: "forever" means any number of attempts,
    and 5 s·2^n overflows a timedelta after about 45 doublings."""
    delay = start
    for _ in range(max(attempt - 1, 0)):
        if delay >= maximum:
            break
        delay *= 2
    return min(delay, maximum)


class RetryPolicy:
    """Counts attempts per kind of error; subclasses set the limits.

    ``None`` as a limit means forever; 0 means never.
    """

    #: Attempts allowed in all for a job raising ConflictError.
    conflict_attempts: Optional[int] = None
    #: Attempts in all for other errors of the call itself.
    other_job_attempts = 0
    #: Attempts in all for other errors raised by the commit.
    other_commit_attempts = 0
    #: Times a job may be re-queued after its dispatcher went away.
    max_interruptions: Optional[int] = None
    #: Retry when the storage server went away (ZEO's ClientDisconnected,
    #: RelStorage's lost database connection) at all, always with back-off.
    retry_disconnected = True

    #: The job annotation keeping the counts (a new attempt of a failed
    #: job, lifecycle.retry_failed, starts without them).
    key = RETRY_COUNTS

    def __init__(self, job: Any):
        #: The job this policy decides for (zc.async's name).
        self.parent = job

    def _count(self, data_cache: dict, kind: str) -> int:
        counts = data_cache.setdefault(self.key, {})
        counts[kind] = counts.get(kind, 0) + 1
        return counts[kind]

    def _decide(self, failure: Failure, data_cache: dict,
                other_attempts: Optional[int]) -> Decision:
        if failure.check(JobCancelled):
            return False  # someone wanted it stopped: never again
        if failure.check(*DISCONNECTED):
            if not self.retry_disconnected:
                return False
            return backoff(self._count(data_cache, 'disconnected'))
        if failure.check(ConflictError):
            attempts = self._count(data_cache, 'conflict') + 1
            if not _within(attempts, self.conflict_attempts):
                return False
            return conflict_pause(attempts)
        attempts = self._count(data_cache, 'other') + 1
        if _within(attempts, other_attempts):
            return backoff(attempts - 1)
        return False

    def jobError(self, failure: Failure, data_cache: dict) -> Decision:
        return self._decide(failure, data_cache, self.other_job_attempts)

    def commitError(self, failure: Failure, data_cache: dict) -> Decision:
        decision = self._decide(failure, data_cache,
                                self.other_commit_attempts)
        if decision is False and not failure.check(ConflictError):
            log.error('commit of %r failed for good: %s',
                      self.parent, failure)
        return decision

    def interrupted(self) -> Decision:
        """Called in the recovering transaction: counts are stored now."""
        annotations = self.parent.annotations
        count = annotations.get(self.key + '.interruptions', 0) + 1
        annotations[self.key + '.interruptions'] = count
        return _within(count, self.max_interruptions)

    def updateData(self, data_cache: dict) -> None:
        counts = data_cache.get(self.key)
        if counts:
            self.parent.annotations[self.key] = dict(counts)


def check_decision(decision: Any, hook: str, policy: RetryPolicy
                   ) -> Decision:
    """``decision`` if it is one; else False (give up), logged, naming
    it: a policy answering None must not retry at once forever."""
    if isinstance(decision, (bool, datetime.timedelta)):
        return decision
    if isinstance(decision, datetime.datetime) and \
            decision.utcoffset() is not None:
        return decision
    log.error('%s.%s returned %r; expected True, False, a timedelta or a '
              'timezone-aware datetime: giving up', type(policy).__name__,
              hook, decision)
    return False


def retry_due(decision: Decision, now: datetime.datetime
              ) -> Optional[datetime.datetime]:
    """When a retry is due if the job should wait for it in its queue
    (a datetime, or a delay longer than PAUSE_IN_PLACE); None when the
    worker retries itself (at once, or after a short pause)."""
    if isinstance(decision, datetime.datetime):
        return decision
    if isinstance(decision, datetime.timedelta) and \
            decision > PAUSE_IN_PLACE:
        return now + decision
    return None


def seed_counts(data_cache: dict, job: Any) -> None:
    """Start ``data_cache`` from the counts a job stored when it was
    last put back for a retry: limits count attempts in all."""
    stored = annotation(job, RetryPolicy.key)
    if stored:
        counts = data_cache.setdefault(RetryPolicy.key, {})
        for kind, count in stored.items():
            counts[kind] = max(counts.get(kind, 0), count)


def disconnected(data_cache: dict) -> datetime.timedelta:
    """The wait after the storage server was away where no policy could
    be asked (loading the job itself failed); shares the policies' count,
    so the back-off goes on from where the job's own failures left it."""
    counts = data_cache.setdefault(RetryPolicy.key, {})
    counts['disconnected'] = counts.get('disconnected', 0) + 1
    return backoff(counts['disconnected'])


#: What a full disk (or quota) under a FileStorage raises at commit.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class StorageFull(OSError):
    """A commit failed because the storage's disk is full: like a lost
    server, nothing can be committed until it is fixed, so it is waited
    out with back-off instead of failing the job (its failure could not
    be committed either)."""


def as_storage_full(exc: BaseException) -> BaseException:
    """``exc`` as a StorageFull if it says the disk is full (what retry
    policies and failure records can tell by name), else ``exc``."""
    if isinstance(exc, OSError) and not isinstance(exc, StorageFull) \
            and exc.errno in DISK_FULL:
        full = StorageFull(exc.errno, exc.strerror)
        full.__cause__ = exc
        return full
    return exc


def is_disconnected(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage cannot commit for now: its server
    went away (ZEO's ClientDisconnected, a RelStorage driver's
    disconnection) or its disk is full."""
    exc = as_storage_full(exc)
    return any('%s.%s' % (c.__module__, c.__qualname__) in DISCONNECTED
               for c in type(exc).__mro__)


def abort(manager: Any) -> None:
    """Abort ``manager``'s transaction even while the storage server is
    away: RelStorage asks its server for invalidations as a transaction
    ends, so the abort itself raises the disconnection the caller is
    handling.  The transaction is over either way (its resources were
    aborted and it is freed); the next ``begin`` polls again."""
    try:
        manager.abort()
    except Exception as exc:
        if not is_disconnected(exc):
            raise
        log.debug('abort while the storage server is away: %s', exc)


def _within(count: int, limit: Optional[int]) -> bool:
    return limit is None or count <= limit


class RetryCommonFourTimes(RetryPolicy):
    """The default for jobs: ConflictError up to 5 attempts in all
    (after a short random pause each), a lost storage server forever
    with back-off, interruptions 9 times, any other error fails the job
    at once."""

    conflict_attempts = 5
    max_interruptions = 9


class RetryCommonForever(RetryPolicy):
    """The default for callbacks, which must run for their job to finish:
    conflicts and disconnection forever, interruptions forever, other
    commit errors up to 5 attempts; errors raised by the call fail it."""

    conflict_attempts = None
    other_commit_attempts = 5
    max_interruptions = None


class NeverRetry(RetryPolicy):
    """For jobs with side effects that must not be repeated."""

    conflict_attempts = 1
    max_interruptions = 0
    retry_disconnected = False
