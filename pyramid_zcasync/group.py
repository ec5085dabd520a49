"""Group commit: several short jobs in one transaction, a savepoint each.

FileStorage holds its commit lock through each fsync, so one commit per
job (or three, as zc.async did: claim, ACTIVE, result) caps throughput
far below the storage's commit rate.  A worker holding several claimed
jobs runs them back to back in one transaction and commits once.  Each
job still commits all or nothing: a job that raises is rolled back to its
savepoint before its failure is recorded, and a conflict at commit makes
every job of the group run again on its own (:class:`~.runner.Runner`),
as a conflict would have for a single job.

What runs here: jobs with the default retry policy and no callbacks,
still ASSIGNED to this dispatcher.  Everything else (and any job whose
error its policy wants retried) goes to the Runner, one job at a time.
The group skips the separate "ACTIVE" commit; if the process dies mid
group, recovery finds the jobs ASSIGNED and queues them again, which is
what the default policy does with interrupted jobs anyway.
"""
from __future__ import annotations

import logging
import time
from typing import List, Optional, Tuple

from ZODB.POSException import ConflictError

from . import local, retry
from .failure import Failure
from .interfaces import ASSIGNED, COMPLETED
from .runner import Runner

log = logging.getLogger('pyramid_zcasync.events')
trace = logging.getLogger('pyramid_zcasync.trace')

#: A group stops taking jobs once it has run this long (seconds), so a
#: slow job does not hold finished ones uncommitted.
GROUP_WINDOW = 0.05


def eligible(job, uuid: str) -> bool:
    return (job.status == ASSIGNED and job.assignerUUID == uuid
            and job.retry_policy_factory is None and job.parent is None
            and not job.callbacks and job.time_limit is None)


def outcome(job) -> dict:
    """What the dispatcher's history keeps of a finished job."""
    result = job.result
    pickup = None
    if job.active_start is not None and job.begin_after is not None:
        pickup = max((job.active_start - job.begin_after).total_seconds(),
                     0.0)
    runtime = None
    if job.active_start is not None and job.active_end is not None:
        runtime = (job.active_end - job.active_start).total_seconds()
    return {'status': job.status,
            'failed': job.status == COMPLETED and isinstance(result, Failure),
            'result': repr(result)[:200], 'pickup': pickup,
            'runtime': runtime}


class GroupRunner:
    """Runs lists of claimed job oids, grouped where it is safe."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def run(self, oids: List[bytes]) -> List[Tuple[bytes, Optional[dict]]]:
        """Run every job of ``oids``; ``[(oid, outcome or None)]``."""
        outcomes = []
        pending = list(oids)
        while pending:
            done, alone, pending = self.run_group(pending)
            outcomes.extend(done)
            for oid in alone:
                self.runner.run(oid)
                outcomes.append((oid, self.read_outcome(oid)))
        return outcomes

    def read_outcome(self, oid: bytes) -> Optional[dict]:
        try:
            return self.runner.transact(lambda conn: outcome(conn.get(oid)))
        except Exception:  # only for the history: never fail the worker
            trace.exception('could not read the outcome of %r', oid)
            return None

    def run_group(self, oids):
        """One transaction: ``([(oid, outcome)], oids to run alone, oids
        not reached)``."""
        with self.runner.lock:
            return self._group(oids)

    def _group(self, oids):
        runner = self.runner
        manager = runner.manager
        connection = runner.db.open(transaction_manager=manager)
        done, alone, reached = [], [], 0
        started = time.monotonic()
        try:
            manager.begin()
            for oid in oids:
                if done and time.monotonic() - started > GROUP_WINDOW:
                    break
                reached += 1
                job = connection.get(oid)
                if eligible(job, runner.uuid) and \
                        self._run_one(job, manager.get()):
                    done.append((oid, job, job.agent))
                    # Unassigned before the next savepoint pickles the job,
                    # so that the commit does not pickle it a second time.
                    job.agent = None
                else:
                    alone.append(oid)
            # Slots and history last, once: released inside the loop, the
            # agent's buckets would be pickled again at every savepoint.
            for _, job, agent in done:
                job.queue.release(job, agent)
            manager.commit()
            finished = [(oid, outcome(job)) for oid, job, _ in done]
        except ConflictError:
            retry.abort(manager)
            trace.info('a group of %d conflicted: each runs alone', reached)
            return [], oids[:reached], oids[reached:]
        except BaseException:
            retry.abort(manager)
            raise
        finally:
            connection.close()
        return finished, alone, oids[reached:]

    def _run_one(self, job, txn) -> bool:
        """Run ``job`` under a savepoint; False: hand it to the Runner."""
        savepoint = txn.savepoint()
        job.mark_active(self.runner.clock.utcnow())
        try:
            with local.running(job, self.runner.db, self.runner.dispatcher,
                               grouped=True):
                result = job.invoke()
        except ConflictError:
            raise  # the whole transaction is stale: the group retries alone
        except local.NeedsOwnTransaction:
            savepoint.rollback()
            return False
        except Exception as exc:
            savepoint.rollback()
            failure = Failure.from_exception(exc)
            if job.getRetryPolicy().jobError(failure, {}) is not False:
                return False  # its policy retries: let the Runner do it
            job.mark_active(self.runner.clock.utcnow())
            job.resolve(failure, run_callbacks=False, release=False)
            log.log(job.failure_log_level, '%r failed: %s', job,
                    failure.getTraceback())
            return True
        if hasattr(result, 'addBoth'):  # a Deferred: needs the Runner
            savepoint.rollback()
            return False
        job.resolve(result, run_callbacks=False, release=False)
        trace.debug('%r succeeded in a group', job)
        return True
