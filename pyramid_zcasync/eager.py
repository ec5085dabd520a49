"""Eager mode: each job runs in this process as soon as its put commits.

For users' unit tests: a WebTest request whose view puts a job returns
after the job ran, so the test sees its effects without a dispatcher,
threads or waiting.  The job goes the way a dispatcher's job goes
(claimed from its queue with its quotas, run by :class:`~.runner.Runner`
in transactions of its own, its retry policy asked, its callbacks run,
its quotas freed, the extensions told), only never in another thread.

Where eager mode differs from a dispatcher, on purpose:

- Nothing waits.  A job put with ``begin_after`` in the future runs at
  once, and a retry its policy wants later runs at once too: the policy
  decides *whether* and *how often*, as with a dispatcher, not when.
  (Jobs whose ``begin_by`` passes before that time are expired by the
  claim, as a dispatcher would at that time.)
- A job no quota lets start now stays pending: nothing would retry it.
- There is no agent, so no agent history and no dispatcher registration:
  the jobs' ``assignerUUID`` is :data:`EAGER_UUID`.
- A job that puts another job (or whose callback does) sees that one run
  after its own run finished, not inside it: the runs of one thread are
  a queue, never nested, however deep the chain.

The run happens in the ``after_put`` hook, that is inside the putter's
commit (its after-commit hook), in the putter's thread; the job gets a
connection and transactions of its own, never the putter's finished one.
"""
from __future__ import annotations

import collections
import datetime
import logging
import threading
from typing import Any, Deque, Optional

from . import clock, deps, extensions, lifecycle
from .install import queue_database
from .interfaces import COMPLETED, PENDING
from .runner import Runner

log = logging.getLogger('pyramid_zcasync.events')

#: What eager runs write as the job's assignerUUID (no dispatcher's UUID).
EAGER_UUID = 'eager'
#: The agent name the extensions' run reports give for eager runs.
EAGER_AGENT = 'eager'


class EagerRun(extensions.Extension):
    """The extension running each put job of its database at once."""

    def __init__(self, db: Any) -> None:
        self.db = db
        #: Per thread: the oids waiting for the run in progress to end.
        self._local = threading.local()

    def __repr__(self) -> str:
        return '<EagerRun of %r>' % (getattr(self.db, 'database_name', '?'),)

    def after_put(self, queue: Any, job: Any) -> None:
        oid = job._p_oid  # no load: the putter's transaction is over
        waiting: Optional[Deque[bytes]] = getattr(self._local, 'waiting',
                                                  None)
        if waiting is not None:
            waiting.append(oid)  # put by a job running here: after it
            return
        self._run_all(oid)

    def _run_all(self, first: bytes) -> None:
        """``first``, then every job put meanwhile in this thread."""
        waiting: Deque[bytes] = collections.deque([first])
        self._local.waiting = waiting
        try:
            while waiting:
                oid = waiting.popleft()
                try:
                    run_job(self.db, oid)
                except Exception:
                    log.exception('eager run of job %r failed', oid)
        finally:
            self._local.waiting = None


def run_job(db: Any, oid: bytes) -> None:
    """Run the pending job ``oid`` of ``db`` now, as often as its retry
    policy asks; nothing if it is not pending (run, cancelled, pulled)."""
    runner = Runner(db, EAGER_UUID)
    while True:
        queue_name = runner.bookkeep(lambda conn: _claim(conn.get(oid)))
        if queue_name is None:
            return
        runner.run(oid)
        runner.bookkeep(lambda conn: _release_if_done(conn.get(oid)))
        _report(db, oid, queue_name, runner.outcome)


def _claim(job: Any) -> Optional[str]:
    """Claim ``job`` itself from its queue (quotas acquired), now even
    if it is due later; its queue's name, or None when it cannot start."""
    queue = job.queue
    if job.status != PENDING or queue is None or deps.is_waiting(job):
        return None  # (a waiting job runs when its prerequisites woke it)
    now = clock.utcnow()
    due: Optional[datetime.datetime] = job.begin_after
    claimed = queue.claim(lambda candidate: candidate is job,
                          now=max(now, due) if due is not None else now)
    if claimed is None:
        log.warning('eager mode: %r cannot start now (its quotas are full '
                    'or it expired); it stays pending', job)
        return None
    claimed.assignerUUID = EAGER_UUID
    return str(queue.name)


def _release_if_done(job: Any) -> None:
    """Free the quotas of a job done with them.  A dispatcher's run frees
    them with its agent slot, which an eager job does not have."""
    if job.status == COMPLETED or job.waiting_for is not None:
        lifecycle.release(job)


def _report(db: Any, oid: bytes, queue_name: str,
            outcome: Optional[dict]) -> None:
    """Tell the extensions how the run went, as a dispatcher does."""
    chain = extensions.of(db)
    if outcome is None or not chain.wants_run_reports:
        return
    chain.after_run(extensions.RunReport(
        job_id=int.from_bytes(oid, 'big'), database=db.database_name,
        queue=queue_name, agent=EAGER_AGENT, dispatcher=EAGER_UUID,
        status=outcome['status'], failed=bool(outcome.get('failed')),
        result=outcome.get('result', ''), pickup=outcome.get('pickup'),
        runtime=outcome.get('runtime')))


def enable(db: Any) -> EagerRun:
    """Run the jobs put into ``db``'s queues eagerly from now on, in this
    process; ``db`` may be any database of a multi-database."""
    eager = EagerRun(queue_database(db))
    extensions.add(eager.db, eager)
    return eager


def disable(eager: EagerRun) -> None:
    """Stop running ``eager``'s jobs at their puts."""
    extensions.remove(eager.db, eager)
