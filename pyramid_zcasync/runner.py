"""Running a claimed job in transactions of its own, with its retry policy.

This is what a dispatcher's worker thread does with a job its agent
claimed: commit ACTIVE (so a sibling recovering a dead dispatcher knows
the call may have started), call it and commit the result in one
transaction (all or nothing), then run each callback in a transaction of
its own.  A failed attempt is aborted and its connection closed *before*
any back-off wait.  A job cancelled while claimed or running ends with a
JobCancelled failure, never retried (cancels.py).  Kept apart from the
dispatcher so it can be tested with a plain database and an injected
clock.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from typing import (Any, Callable, ContextManager, Dict, Optional, Tuple,
                    TypeVar, cast)

import transaction
from ZODB.POSException import ConflictError

from . import clock as clock_module
from . import cancels, lifecycle, local, retry
from .cancelwatch import RunningCalls
from .errors import JobCancelled, cancel_reason
from .failure import Failure
from .interfaces import ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW
from .job import Job
from .timelimit import Interruptible, call_with_limit

log = logging.getLogger('pyramid_zcasync.events')
trace = logging.getLogger('pyramid_zcasync.trace')

#: Attempts of a bookkeeping transaction (mark active, record a failure)
#: before the runner gives up and lets recovery deal with the job.
BOOKKEEPING_ATTEMPTS = 20

T = TypeVar('T')
#: ``load(connection)``: the job to run, or None when it is no longer ours.
Loader = Callable[[Any], Optional[Job]]


class Runner:
    """Runs jobs of one database; one per worker thread."""

    def __init__(self, db: Any, uuid: Optional[str] = None,
                 clock: Optional[clock_module.Clock] = None,
                 dispatcher: Any = None,
                 lock: Optional[ContextManager[Any]] = None):
        self.db = db
        self.uuid = uuid
        self.clock = clock or clock_module.default_clock
        self.dispatcher = dispatcher
        #: Held around transactions that write the dispatcher's shared
        #: bookkeeping (agent slots, history), so that this process's
        #: threads never conflict with each other there.
        self.lock: ContextManager[Any] = (
            lock if lock is not None else contextlib.nullcontext())
        self.manager = transaction.TransactionManager()
        #: How long the last call took (the call alone, not its commits):
        #: what tells the dispatcher whether jobs are short.
        self.call_seconds: Optional[float] = None
        #: The last job run's outcome, as its own commits left it (None:
        #: this runner did not finish it).
        self.outcome: Optional[dict] = None
        #: The dispatcher's running calls, which its cancel watch stops
        #: (None without a dispatcher: nothing watches for cancels).
        self.running_calls: Optional[RunningCalls] = getattr(
            dispatcher, 'running_calls', None)

    # -- transactions -------------------------------------------------

    def transact(self, work: Callable[[Any], T]) -> T:
        """``work(connection)`` in a committed transaction, retrying
        conflicts; the connection is closed between attempts."""
        return self._transact(work, wait_for_server=False)

    def bookkeep(self, work: Callable[[Any], T],
                 lock: Optional[ContextManager[Any]] = None) -> T:
        """Like :meth:`transact`, but waits out a lost storage server,
        with back-off, as long as it takes: a job's state must be written
        (a job left ACTIVE would never be recovered while we live).
        ``lock`` is held during each attempt, never during a wait."""
        return self._transact(work, wait_for_server=True, lock=lock)

    def _transact(self, work: Callable[[Any], T], wait_for_server: bool,
                  lock: Optional[ContextManager[Any]] = None) -> T:
        conflicts = 0
        away: Dict[str, Any] = {}
        while True:
            delay = None
            connection = None
            try:
                # Opening polls the storage too (RelStorage): it can raise
                # the disconnection this loop waits out.
                connection = self.db.open(transaction_manager=self.manager)
                with lock if lock is not None else contextlib.nullcontext():
                    self.manager.begin()
                    result = work(connection)
                    self.manager.commit()
                self.report_storage(None)
                return result
            except ConflictError:
                retry.abort(self.manager)
                conflicts += 1
                trace.debug('bookkeeping conflict, attempt %d', conflicts)
                if conflicts >= BOOKKEEPING_ATTEMPTS:
                    raise ConflictError('gave up after %d conflicting '
                                        'attempts' % conflicts)
            except BaseException as exc:
                retry.abort(self.manager)
                if not (wait_for_server and retry.is_disconnected(exc)):
                    raise
                delay = retry.disconnected(away)
                self.report_storage(exc, delay)
            finally:
                if connection is not None:
                    connection.close()
            self.wait(delay)

    def report_storage(self, exc: Optional[BaseException],
                       delay: Optional[datetime.timedelta] = None) -> None:
        """Log that the storage cannot commit (server away, disk full)
        and tell the dispatcher, whose /health then says down; ``None``:
        this worker's commits go through again."""
        if exc is not None:
            log.warning('the storage cannot commit (%s); retrying in %s',
                        exc, delay)
        report = getattr(self.dispatcher, 'report_storage', None)
        if report is not None:
            report(exc)

    def wait(self, decision: Any) -> None:
        if isinstance(decision, datetime.datetime):
            decision = decision - self.clock.utcnow()
        if isinstance(decision, datetime.timedelta):
            self.clock.sleep(max(decision.total_seconds(), 0))

    # -- a job --------------------------------------------------------

    def run(self, oid: bytes, prior_conflicts: int = 0) -> None:
        """Run the ASSIGNED job ``oid`` and then its callbacks.

        ``prior_conflicts``: attempts of this job that already ended in a
        ConflictError elsewhere (a group commit); they count against its
        policy's limit, so that "5 attempts" means 5 in all."""
        started: dict = {}
        self.outcome = None
        if not self.bookkeep(lambda conn: self._start(conn.get(oid),
                                                      started)):
            return
        if self.call(lambda conn: self._own_active(conn.get(oid)),
                     prior_conflicts=prior_conflicts) or \
                self.bookkeep(lambda conn: self._owes_callbacks(
                    conn.get(oid))):
            self.run_callbacks(oid)
        self.free_slot_and_quotas(oid)

    def free_slot_and_quotas(self, oid: bytes) -> None:
        """Free the agent slot and quotas of a job that finished (or waits
        for a job it returned); its own transaction left them alone.
        The lock is not held across a back-off wait: that would stop this
        dispatcher's polls and pings for as long as the wait lasts."""
        self.bookkeep(lambda conn: lifecycle.release_finished(
            conn.get(oid), self.uuid), lock=self.lock)

    def _start(self, job: Job, started: Optional[Dict[str, Any]] = None
               ) -> bool:
        started = {} if started is None else started
        if (job.status != ASSIGNED and job.assignerUUID == self.uuid
                and 'at' in started and job.active_start == started['at']):
            # Our last attempt committed, but the server's answer was lost
            # (ClientDisconnected in tpc_finish): it is ours, not started
            # (or cancelled, below).
            return True
        if job.status != ASSIGNED or job.assignerUUID != self.uuid:
            trace.info('%r is no longer ours to start', job)
            return False
        job.annotations  # created now so live annotations never touch job
        started['at'] = self.clock.utcnow()
        lifecycle.start(job, started['at'])
        reason = cancel_reason(job)
        if reason is not None:  # cancelled while it waited for a worker
            self._record_failure(job, cancels.cancelled(reason), {}, False)
            return True
        log.info('starting %r', job)
        return True

    def _owes_callbacks(self, job: Job) -> bool:
        """Whether the job's commit went through although it looked lost
        (the server's answer to tpc_finish never came): its callbacks are
        still ours to run, nobody else would until we die."""
        return job.status == CALLBACKS and job.assignerUUID == self.uuid

    def _own_active(self, job: Job) -> Optional[Job]:
        if job.status == ACTIVE and job.assignerUUID == self.uuid:
            return job
        trace.info('%r was taken from us (status %s); not running it',
                   job, job.status)
        return None

    def call(self, load: Loader,
             extra_args: Callable[[Job], Tuple[Any, ...]] = lambda job: (),
             inline_callbacks: bool = False,
             prior_conflicts: int = 0) -> bool:
        """Call the job ``load(connection)`` returns until it commits or
        its policy gives up; True when it got a result (or is waiting).

        ``inline_callbacks`` runs the job's own callbacks in its
        transaction: used for callbacks of callbacks, one step of a chain.
        """
        data_cache: Dict[str, Any] = {}
        if prior_conflicts:
            data_cache[retry.RetryPolicy.key] = {'conflict': prior_conflicts}
        steps = (load, extra_args, inline_callbacks)
        while True:
            try:
                outcome, value = self._attempt(steps, data_cache)
            except Exception as exc:
                # Loading the job (or its policy) failed: no policy to ask.
                if not retry.is_disconnected(exc):
                    raise
                delay = retry.disconnected(data_cache)
                self.report_storage(exc, delay)
                self.wait(delay)
                continue
            if outcome == 'gone':
                return False
            if outcome == 'done':
                self.report_storage(None)
                return True
            if outcome.check(*retry.DISCONNECTED):
                self.report_storage(outcome, value)
            if value is False:
                self.bookkeep(lambda conn: self._record_failure(
                    load(conn), outcome, data_cache, inline_callbacks))
                return True
            if self._put_back_for_retry(load, outcome, value, data_cache):
                return False
            self.wait(value)

    def _put_back_for_retry(self, load: Loader, failure: Failure,
                            decision: retry.Decision,
                            data_cache: Dict[str, Any]) -> bool:
        """Whether the job went back to its queue to wait for a later
        retry (freeing its slot) instead of being retried by this worker.
        A lost storage server is waited out here: nothing could commit."""
        if failure.check(*retry.DISCONNECTED):
            return False
        due = retry.retry_due(decision, self.clock.utcnow())
        if due is None:
            return False
        return self.bookkeep(lambda conn: _put_back(load(conn), due,
                                                    data_cache))

    def _attempt(self, steps: Tuple[Loader, Callable[[Job], Tuple[Any, ...]],
                                    bool],
                 data_cache: Dict[str, Any]) -> Tuple[Any, Any]:
        """``('gone', None)``, ``('done', None)``, or the failure and
        its policy's decision."""
        load, extra_args, inline_callbacks = steps
        connection = self.db.open(transaction_manager=self.manager)
        try:
            self.manager.begin()
            job = load(connection)
            if job is None:
                retry.abort(self.manager)
                return 'gone', None
            reason = cancel_reason(job)
            if reason is not None:  # asked before this attempt began
                retry.abort(self.manager)
                return cancels.cancelled(reason), False
            policy = job.getRetryPolicy()
            retry.seed_counts(data_cache, job)
            called = time.monotonic()
            call = self.watch_call(job)
            try:
                result = self._invoke(job, extra_args, call)
            except Exception as exc:
                self.call_seconds = time.monotonic() - called
                retry.abort(self.manager)
                failure = _failure_of(exc, call)
                _log_attempt('call', job, failure)
                if failure.check(JobCancelled):
                    return failure, False  # no policy retries a cancel
                return failure, retry.check_decision(
                    policy.jobError(failure, data_cache), 'jobError', policy)
            self.call_seconds = time.monotonic() - called
            if call is not None and call.stop_reason is not None:
                # It returned once asked to stop: the request committed
                # first, so its result must not.
                retry.abort(self.manager)
                return cancels.cancelled(call.stop_reason), False
            try:
                policy.updateData(data_cache)
                lifecycle.finish(job, result, inline_callbacks)
                self.manager.commit()
                if not inline_callbacks:  # the job, not one of its callbacks
                    self.outcome = outcome(job)
            except Exception as exc:
                retry.abort(self.manager)
                failure = Failure.from_exception(retry.as_storage_full(exc))
                _log_attempt('commit', job, failure)
                return failure, retry.check_decision(
                    policy.commitError(failure, data_cache), 'commitError',
                    policy)
            log.info('%r succeeded', job)
            return 'done', None
        finally:
            connection.close()

    def watch_call(self, job: Job) -> Optional[Interruptible]:
        """The job's call as the dispatcher's cancel watch sees it, made
        in this thread; None when no dispatcher watches.  End it with
        ``end_call``."""
        if self.running_calls is None:
            return None
        return self.running_calls.start(job._p_oid)

    def end_call(self, job: Job, call: Optional[Interruptible]) -> None:
        if call is not None and self.running_calls is not None:
            self.running_calls.end(job._p_oid, call)

    def _invoke(self, job: Job, extra_args: Callable[[Job], Tuple[Any, ...]],
                call: Optional[Interruptible]) -> Any:
        """The job's call, inside ``local.running`` and its time limit,
        interruptible through ``call`` until it ends."""
        try:
            with local.running(job, self.db, self.dispatcher, stop=call):
                return call_with_limit(
                    lambda: settle(job.invoke(*extra_args(job))),
                    job.time_limit, repr(job), call)
        finally:
            self.end_call(job, call)

    def _record_failure(self, job: Optional[Job], failure: Failure,
                        data_cache: Dict[str, Any],
                        inline_callbacks: bool) -> None:
        if job is None:
            return
        if job.status in (NEW, ASSIGNED):
            lifecycle.start(job, self.clock.utcnow())
        job.getRetryPolicy().updateData(data_cache)
        lifecycle.finish(job, failure, inline_callbacks)
        if not inline_callbacks:
            self.outcome = outcome(job)
        if failure.check(JobCancelled):
            cancels.done(job)
            log.info('%r cancelled: %s', job, failure.message)
            return
        log.log(job.failure_log_level, '%r failed: %s', job,
                failure.getTraceback())

    # -- callbacks ----------------------------------------------------

    def _next_callback_or_finish(self, job: Job) -> Optional[bytes]:
        callback_oid = _next_callback_oid_or_finish(job)
        if callback_oid is None and job.status == COMPLETED:
            self.outcome = outcome(job)
        return callback_oid

    def run_callbacks(self, oid: bytes) -> None:
        """Each callback in a transaction of its own, then COMPLETED.

        Finding no callback pending and marking the job COMPLETED happen
        in one transaction: a callback added meanwhile makes it conflict
        (Job.addCallback), and the retry finds it."""
        while True:
            callback_oid = self.bookkeep(
                lambda conn: self._next_callback_or_finish(conn.get(oid)))
            if callback_oid is None:
                break
            self.call(lambda conn: _startable_callback(conn.get(callback_oid)),
                      extra_args=_parent_result,
                      inline_callbacks=True)


def _parent_result(callback: Job) -> Tuple[Any]:
    """What a callback is called with: the result of its job."""
    return (cast(Job, callback.parent).result,)


def _put_back(job: Optional[Job], due: datetime.datetime,
              data_cache: Dict[str, Any]) -> bool:
    """Queue ``job`` again, due at ``due``, keeping its retry counts."""
    if job is None:
        return True  # taken from us meanwhile: nothing left to do here
    if job.queue is None:
        return False  # a callback: it has no queue to wait in
    job.getRetryPolicy().updateData(data_cache)
    lifecycle.requeue(job, begin_after=due)
    log.info('%r goes back to its queue for a retry at %s', job,
             due.isoformat())
    return True


def outcome(job: Job) -> Dict[str, Any]:
    """What the dispatcher's history keeps of a finished run (read in the
    transaction that finished it: a retry may follow at once)."""
    result = job.result
    pickup = None
    if job.active_start is not None and job.begin_after is not None:
        pickup = max((job.active_start - job.begin_after).total_seconds(),
                     0.0)
    runtime = None
    if job.active_start is not None and job.active_end is not None:
        runtime = (job.active_end - job.active_start).total_seconds()
    return {'status': job.status,
            'failed': job.status in (CALLBACKS, COMPLETED)
            and isinstance(result, Failure),
            'result': repr(result)[:200], 'pickup': pickup,
            'runtime': runtime}


def _next_callback_oid_or_finish(job: Job) -> Optional[bytes]:
    if job.status != CALLBACKS:
        return None  # no result yet (waiting for a job it returned), or done
    for callback in job.pending_callbacks():
        return callback._p_oid
    lifecycle.finish_callbacks(job)
    return None


def _startable_callback(callback: Job) -> Optional[Job]:
    if callback.status != NEW:
        return None
    lifecycle.start(callback)
    return callback


def settle(result: Any, timeout: Optional[float] = None) -> Any:
    """The value of a Deferred-like result (``addBoth``), waiting for it.

    A Job result is returned as is: the job waits for it without holding
    a worker.  A Deferred that fires with an exception raises it here so
    the retry policy sees it like any other error.
    """
    if isinstance(result, Job) or not hasattr(result, 'addBoth'):
        return result
    fired = threading.Event()
    box = []

    def keep(value: Any) -> None:
        box.append(value)
        fired.set()
        return None
    result.addBoth(keep)
    if not fired.wait(timeout):
        raise TimeoutError('the Deferred returned by the job did not fire')
    value = box[0]
    exception = getattr(value, 'value', None)
    if isinstance(exception, BaseException) and hasattr(value, 'trap'):
        raise exception  # a twisted Failure
    return value


def _failure_of(exc: Exception, call: Optional[Interruptible]) -> Failure:
    """The failure of a call that raised ``exc``: JobCancelled if it was
    asked to stop, whatever it raised then (the interruption, or its own
    way out after ``local.cancel_requested()``)."""
    if call is not None and call.stop_reason is not None:
        return cancels.cancelled(call.stop_reason, exc.__traceback__)
    return Failure.from_exception(exc)


def _log_attempt(what: str, job: Job, failure: Failure) -> None:
    trace.info('%s of %r raised %s', what, job, failure)
