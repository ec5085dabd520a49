"""Group commit: several short jobs in one transaction, a savepoint each.

FileStorage holds its commit lock through each fsync, so one commit per
job (or three, as zc.async did: claim, ACTIVE, result) caps throughput
far below the storage's commit rate.  A worker holding several claimed
jobs runs them back to back in one transaction and commits once.  Each
job still commits all or nothing: a job that raises is rolled back to its
savepoint before its failure is recorded, and a conflict at commit makes
every job of the group run again on its own (:class:`~.runner.Runner`),
as a conflict would have for a single job, that attempt counted.

The group frees their agent slots and quotas in the same transaction,
holding the dispatcher's bookkeeping lock meanwhile (so that the commit
conflicts with no claim of this process), unless one of its jobs turns
out slow: then the lock is let go (lease.py), so that polls, pings and
other workers need not wait for that job, and the group's transaction
writes its jobs alone; their slots are freed afterwards, as the Runner
does for a job alone (by default in a transaction of their own; the
dispatcher frees them in its next poll's, which commits anyway).

What runs here: jobs with the default retry policy and no callbacks,
still ASSIGNED to this dispatcher.  Everything else (and any job whose
error its policy wants retried) goes to the Runner, one job at a time.
The group skips the separate "ACTIVE" commit; if the process dies mid
group, recovery finds the jobs ASSIGNED and queues them again, which is
what the default policy does with interrupted jobs anyway.

A job of a group cancelled while it runs is rolled back to its savepoint
and handed to the Runner, which finds the request and ends it cancelled
without calling it again; the others of the group commit as if it had
never been there.  A job with a cancel request is never grouped.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import (Any, Callable, ContextManager, Iterable, Iterator, List,
                    NamedTuple, Optional, Tuple)

from ZODB.POSException import ConflictError

from . import lifecycle, local, retry
from .errors import cancel_reason
from .failure import Failure
from .interfaces import ASSIGNED
from .job import Job
from .runner import Runner, outcome
from .timelimit import Interruptible, call_with_limit

log = logging.getLogger('pyramid_zcasync.events')
trace = logging.getLogger('pyramid_zcasync.trace')

#: A group stops taking jobs once it has run this long (seconds), so a
#: slow job does not hold finished ones uncommitted.
GROUP_WINDOW = 0.05


def eligible(job: Job, uuid: Optional[str]) -> bool:
    return (job.status == ASSIGNED and job.assignerUUID == uuid
            and job.retry_policy_factory is None and job.parent is None
            and not job.callbacks and job.time_limit is None
            and cancel_reason(job) is None)


class GroupResult(NamedTuple):
    #: ``[(oid, outcome)]`` of the jobs the group committed.
    finished: List[Tuple[bytes, dict]]
    #: Jobs to run alone, with the Runner.
    alone: List[bytes]
    #: Jobs not reached: the group ran longer than GROUP_WINDOW.
    rest: List[bytes]
    #: Attempts the ``alone`` jobs spent already: 1 when the group's
    #: commit conflicted (it counts against their policy's limit).
    conflicts: int = 0


class GroupRunner:
    """Runs lists of claimed job oids, grouped where it is safe."""

    def __init__(self, runner: Runner,
                 free_slots: Optional[Callable[[List[bytes]], None]] = None,
                 lease: Optional[Callable[[], ContextManager]] = None):
        self.runner = runner
        #: Frees the slots and quotas of jobs a group committed without
        #: freeing them (the executor passes its own).
        self.free_slots = free_slots or self._free_slots
        #: ``lease()``: the bookkeeping lock for one group (lease.py);
        #: by default the runner's lock, held to the end.
        self.lease = lease or self._whole_lease
        #: When the job the group runs now started (monotonic seconds).
        self._job_since: Optional[float] = None

    def running_for(self) -> float:
        """Seconds the group's current job has run; 0 until the group
        starts one.  A lease judges the job by this, not by the time
        since the worker took it: the wait for the bookkeeping lock (a
        poll holds it for its round trips) is no sign of a slow job, and
        a lease let go for it leaves the group's slots to the next poll,
        which loads and writes every job of the group once more."""
        since = self._job_since
        return 0.0 if since is None else time.monotonic() - since

    def run(self, oids: List[bytes]) -> List[Tuple[bytes, Optional[dict]]]:
        """Run every job of ``oids``; ``[(oid, outcome or None)]``."""
        outcomes: List[Tuple[bytes, Optional[dict]]] = []
        pending = list(oids)
        while pending:
            result = self.run_group(pending)
            outcomes.extend(result.finished)
            for oid in result.alone:
                self.runner.run(oid, prior_conflicts=result.conflicts)
                outcomes.append((oid, self.read_outcome(oid)))
            pending = result.rest
        return outcomes

    def read_outcome(self, oid: bytes) -> Optional[dict]:
        try:
            return self.runner.transact(lambda conn: outcome(conn.get(oid)))
        except Exception:  # only for the history: never fail the worker
            trace.exception('could not read the outcome of %r', oid)
            return None

    def run_group(self, oids: Iterable[bytes]) -> GroupResult:
        """One transaction for the jobs, taken from ``oids`` one at a time
        until it runs out or the group has run GROUP_WINDOW; then their
        slots are freed."""
        with self.lease() as lease:
            result, released = self._group(oids, lease)
        if result.finished and not released:
            self.free_slots([oid for oid, _ in result.finished])
        return result

    @contextlib.contextmanager
    def _whole_lease(self) -> Iterator['_KeptLease']:
        with self.runner.lock:
            yield _KeptLease()

    def _free_slots(self, oids: List[bytes]) -> None:
        uuid = self.runner.uuid

        def free(connection: Any) -> None:
            for oid in oids:
                lifecycle.release_finished(connection.get(oid), uuid)
        self.runner.bookkeep(free, lock=self.runner.lock)

    def _group(self, oids: Iterable[bytes], lease: Any
               ) -> Tuple[GroupResult, bool]:
        """The group's transaction; and whether it freed the slots."""
        runner = self.runner
        manager = runner.manager
        connection = runner.db.open(transaction_manager=manager)
        pending = iter(oids)
        done, alone, reached = [], [], []
        started = time.monotonic()
        try:
            manager.begin()
            for oid in pending:
                reached.append(oid)
                self._job_since = time.monotonic()
                job = connection.get(oid)
                if eligible(job, runner.uuid) and \
                        self._run_one(job, manager.get()):
                    done.append((oid, job, job.agent))
                    # Unassigned before the next savepoint pickles the job,
                    # so that the commit does not pickle it a second time.
                    job.agent = None
                else:
                    alone.append(oid)
                if done and time.monotonic() - started > GROUP_WINDOW:
                    break
            released = lease.keep()
            for _, job, agent in done:
                if released:
                    # Slots and history last, once: released inside the
                    # loop, the agent's buckets would be pickled again at
                    # every savepoint.
                    lifecycle.release(job, agent)
                else:
                    job.agent = agent  # freed afterwards
            manager.commit()
            finished = [(oid, outcome(job)) for oid, job, _ in done]
        except ConflictError:
            retry.abort(manager)
            trace.info('a group of %d conflicted: each runs alone',
                       len(reached))
            return GroupResult([], reached, list(pending), conflicts=1), \
                False
        except BaseException:
            retry.abort(manager)
            raise
        finally:
            self._job_since = None
            connection.close()
        return GroupResult(finished, alone, list(pending)), released

    def _run_one(self, job: Job, txn: Any) -> bool:
        """Run ``job`` under a savepoint; False: hand it to the Runner."""
        savepoint = txn.savepoint()
        lifecycle.start(job, self.runner.clock.utcnow())
        call = self.runner.watch_call(job)
        try:
            result = self._call(job, call)
        except ConflictError:
            raise  # the whole transaction is stale: the group retries alone
        except local.NeedsOwnTransaction:
            savepoint.rollback()
            return False
        except Exception as exc:
            savepoint.rollback()
            if _cancelled(call):
                return False  # the Runner finds the request, records it
            failure = Failure.from_exception(exc)
            if job.getRetryPolicy().jobError(failure, {}) is not False:
                return False  # its policy retries: let the Runner do it
            lifecycle.start(job, self.runner.clock.utcnow())
            lifecycle.finish(job, failure)
            log.log(job.failure_log_level, '%r failed: %s', job,
                    failure.getTraceback())
            return True
        if hasattr(result, 'addBoth') or _cancelled(call):
            # A Deferred needs the Runner; so does a cancelled job.
            savepoint.rollback()
            return False
        lifecycle.finish(job, result)
        trace.debug('%r succeeded in a group', job)
        return True

    def _call(self, job: Job, call: Optional[Interruptible]) -> Any:
        """The job's call, interruptible through ``call`` by a cancel."""
        runner = self.runner
        try:
            with local.running(job, runner.db, runner.dispatcher,
                               grouped=True, stop=call):
                return call_with_limit(job.invoke, None, call=call)
        finally:
            runner.end_call(job, call)


def _cancelled(call: Optional[Interruptible]) -> bool:
    return call is not None and call.stop_asked


class _KeptLease:
    """A lease that is never let go: the lock is held to the end."""

    def keep(self) -> bool:
        return True
