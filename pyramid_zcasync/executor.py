"""Running the jobs a dispatcher claimed: a pool of worker threads per
agent, and the choice between running a job alone and in a group.

While an agent's recent jobs are short, its dispatcher claims ahead (up
to GROUP_SIZE jobs per slot) and its workers run them in groups, one
commit for many jobs (group.py); slow jobs are claimed one per slot and
run alone (runner.py).  Claiming ahead must not cost the concurrency an
agent's size promises: a batch takes one job while idle workers could
each have one, and hands back those waiting behind a job that turns out
slow (pool.py); a group holds the bookkeeping lock only while its jobs
are short (lease.py), and its slots are then freed by the next poll.  A
worker that dies inside a job has its jobs recovered here too.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, \
    Protocol, Tuple

from . import extensions, lifecycle
from . import group as group_module
from .clock import Clock
from .group import GroupRunner
from .history import JobHistory
from .interfaces import ACTIVE, ASSIGNED, CALLBACKS
from .lease import Leases
from .pool import Batch, Pool
from .registry import recover_job
from .runner import Runner

#: Most short jobs a worker runs in one transaction (and claims ahead).
GROUP_SIZE = 50
#: Jobs shorter than this (seconds, on average) are claimed ahead.
FAST_JOB = 0.01
#: Seconds after its last claims during which an agent's polls claim
#: nothing more while jobs it claimed wait to start (Executor.defers_claims).
CLAIM_DEFERRAL = 0.5


#: A pool's item: a job's oid, and whether it must run alone.
Item = Tuple[bytes, bool]


class Host(Protocol):
    """What an Executor uses of its dispatcher (which the runners also
    hand to the jobs, as ``local.get_dispatcher()``)."""

    db: Any
    UUID: str
    clock: Clock
    _bookkeeping: Any  # a threading.Lock (lease.py releases it)

    @property
    def jobs(self) -> JobHistory: ...

    def wake(self) -> None: ...


class Executor:
    """Runs the claimed jobs of one dispatcher."""

    def __init__(self, dispatcher: Host) -> None:
        self.dispatcher = dispatcher
        self._jobs = dispatcher.jobs
        self._clock = dispatcher.clock
        self._database_name = dispatcher.db.database_name
        self._pools: Dict[tuple, Pool] = {}
        self._job_seconds: Dict[tuple, float] = {}
        #: Jobs whose group commit conflicted: the attempt they spent.
        self._spent_conflicts: Dict[bytes, int] = {}
        #: Jobs a group committed whose slots the next poll frees, by
        #: agent key (a dict as an ordered set).
        self._unreleased: Dict[tuple, Dict[bytes, None]] = {}
        self._unreleased_lock = threading.Lock()
        self._local = threading.local()
        #: When each agent's last claimed job was handed to its pool.
        self._submitted: Dict[tuple, float] = {}
        self._leases = Leases(dispatcher._bookkeeping,
                              group_module.GROUP_WINDOW)

    def claim_limit(self, agent: Any) -> int:
        """Claim ahead only while this agent's jobs are short: then they
        are committed in groups; slow jobs are claimed one per worker, so
        idle siblings can take the rest."""
        if self._fast((agent.queue.name, agent.name)):
            return agent.size * GROUP_SIZE
        return agent.size

    def defers_claims(self, agent: Any) -> bool:
        """Whether a poll leaves this agent's claims to a later one: its
        jobs are short, and jobs it claimed wait still to start, as many
        as its idle workers or more (so they take up every idle worker).

        Jobs put one per commit wake the dispatcher at every put, and a
        poll claiming what came since (a few jobs) costs a commit of its
        own, with its records and round trips (over ZEO each stored record
        is a message of the client's IO thread).  Jobs claimed now would
        wait behind those anyway.  Each batch that ends wakes the dispatcher, and the
        last of the waiting jobs starts in a batch, so the poll after it
        claims everything that came meanwhile, in one transaction; idle
        workers (nothing waiting) are fed at once.  Bounded by
        CLAIM_DEFERRAL after the last claims: jobs held up longer (behind
        a slow one, or dropped by a stop) no longer hold back claims."""
        key = (agent.queue.name, agent.name)
        if not self._fast(key) or time.monotonic() - self._submitted.get(
                key, -CLAIM_DEFERRAL) >= CLAIM_DEFERRAL:
            return False
        claimed = self._jobs.active_ids(key[0], key[1], started=False)
        started = self._jobs.active_ids(key[0], key[1], started=True)
        waiting = len(claimed) - len(started)
        pool = self._pools.get(key)
        idle = 0 if pool is None else max(pool.size - pool.busy, 0)
        return waiting > 0 and waiting >= idle

    def follow_size(self, agent: Any) -> None:
        """Give the agent's pool as many workers as the agent has slots
        now (it may have been scaled at run time): more at once, fewer as
        their jobs end."""
        pool = self._pools.get((agent.queue.name, agent.name))
        if pool is not None and pool.size != agent.size:
            pool.resize(agent.size)

    def submit(self, queue_name: str, agent: Any, oid: bytes,
               poll_key: int) -> None:
        """Hand a job claimed (and committed) for ``agent`` to its pool."""
        key = (queue_name, agent.name)
        job_id = self.job_id(oid)
        self._jobs.record(job_id, id=job_id, queue=queue_name,
                          agent=agent.name, poll_id=poll_key, claimed=True)
        pool = self._pool(key, agent.size)
        pool.batch = GROUP_SIZE if self._fast(key) else 1
        pool.submit((oid, False))
        self._submitted[key] = time.monotonic()

    def release_finished(self, agent: Any) -> None:
        """Free, in the poll's transaction (which holds the bookkeeping
        lock and commits anyway), the slots of the agent's jobs that a
        group committed after its lease was let go (see group.py): one
        more commit for them would be one more fsync."""
        key = (agent.queue.name, agent.name)
        with self._unreleased_lock:
            oids = list(self._unreleased.get(key, ()))
        done = []
        for oid in oids:
            job = agent._p_jar.get(oid)
            if job.status == ASSIGNED and job.assignerUUID == agent.UUID:
                continue  # this poll began before the group committed
            lifecycle.release_finished(job, agent.UUID)
            done.append(oid)
        if done:
            agent._p_jar.transaction_manager.get().addAfterCommitHook(
                self._released, args=(key, done))

    def _released(self, committed: bool, key: tuple, oids: list) -> None:
        if not committed:
            return  # the next poll frees them
        with self._unreleased_lock:
            unreleased = self._unreleased.get(key, {})
            for oid in oids:
                unreleased.pop(oid, None)

    def _to_release(self, key: tuple, oids: list) -> None:
        with self._unreleased_lock:
            self._unreleased.setdefault(key, {}).update(
                dict.fromkeys(oids))

    def stop(self, timeout: float) -> None:
        for pool in list(self._pools.values()):
            pool.stop(timeout)
        self._leases.close()
        self._spent_conflicts.clear()
        self._submitted.clear()
        with self._unreleased_lock:
            # Deactivation frees them: the dispatcher stops after this.
            self._unreleased.clear()

    def _fast(self, key: tuple) -> bool:
        """Whether the agent's recent jobs were short.  Only then are
        they run in groups, which commit no separate ACTIVE state."""
        seconds = self._job_seconds.get(key)
        return seconds is not None and seconds < FAST_JOB

    def _pool(self, key: tuple, size: int) -> Pool:
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(
                '%s-%s' % key, size,
                lambda batch: self._run_batch(key, batch),
                on_crash=self.worker_crashed,
                hand_back_after=group_module.GROUP_WINDOW,
                groupable=lambda item: not item[1])
        elif pool.size != size:
            pool.resize(size)
        return pool

    # -- in a worker thread -------------------------------------------

    def _runner(self) -> Runner:
        runner = getattr(self._local, 'runner', None)
        if runner is None:
            dispatcher = self.dispatcher
            runner = self._local.runner = Runner(
                dispatcher.db, dispatcher.UUID, dispatcher.clock,
                dispatcher=dispatcher, lock=dispatcher._bookkeeping)
        return runner

    def _run_batch(self, key: tuple, batch: Batch) -> None:
        """Run a worker's batch: jobs marked alone (and every job while
        they are slow) one by one, the others as a group."""
        fast = self._fast(key)
        for oid, alone in self._starting(batch):
            if alone or not fast:
                self._run_alone(key, oid)
            else:
                self._run_group(key, oid, batch)
        self.dispatcher.wake()  # slots are free: claim the next jobs now

    def _starting(self, batch: Batch) -> Iterator[tuple]:
        """The batch's items, each noted as started when it is taken."""
        for oid, alone in batch:
            self._jobs.record(self.job_id(oid), started=self._clock.utcnow(),
                              thread=threading.get_ident())
            yield oid, alone

    def _run_alone(self, key: tuple, oid: bytes) -> None:
        runner = self._runner()
        runner.call_seconds = None
        runner.run(oid, prior_conflicts=self._spent_conflicts.pop(oid, 0))
        outcome = runner.outcome or GroupRunner(runner).read_outcome(oid)
        if outcome and runner.call_seconds is not None:
            # The call alone: the span from ACTIVE to the result also
            # holds commits, which on RelStorage or a busy ZEO make
            # every job look slow.
            outcome['runtime'] = runner.call_seconds
        self._finished(key, oid, outcome)

    def _run_group(self, key: tuple, first: bytes, batch: Batch) -> None:
        """A group of ``first`` and the rest of the batch; what it hands
        back goes first in line in the pool again."""
        oids = itertools.chain(
            [first], (oid for oid, _ in self._starting(batch)))
        runner = self._runner()
        group = GroupRunner(
            runner, free_slots=lambda done: self._to_release(key, done),
            lease=lambda: self._leases.lease(group.running_for))
        result = group.run_group(oids)
        for oid, outcome in result.finished:
            self._finished(key, oid, outcome)
        for oid in result.alone:
            if result.conflicts:
                self._spent_conflicts[oid] = result.conflicts
        handed_back = [(oid, True) for oid in result.alone] + \
            [(oid, False) for oid in result.rest]
        for oid, _ in handed_back:
            self._jobs.record(self.job_id(oid), started=None)
        self._pools[key].give_back(handed_back)

    def _finished(self, key: tuple, oid: bytes,
                  outcome: Optional[dict]) -> None:
        outcome = outcome or {}
        if 'status' in outcome:  # ours to the end: tell the extensions
            self._report(key, oid, outcome)
        self._jobs.record(self.job_id(oid), completed=self._clock.utcnow(),
                          **outcome)
        if outcome.get('runtime') is not None:
            self._note_runtime(key, outcome['runtime'])

    def _report(self, key: tuple, oid: bytes, outcome: dict) -> None:
        chain = extensions.of(self.dispatcher.db)
        if not chain.wants_run_reports:
            return
        chain.after_run(extensions.RunReport(
            job_id=int.from_bytes(oid, 'big'), database=self._database_name,
            queue=key[0], agent=key[1], dispatcher=self.dispatcher.UUID,
            status=outcome['status'], failed=bool(outcome.get('failed')),
            result=outcome.get('result', ''), pickup=outcome.get('pickup'),
            runtime=outcome.get('runtime')))

    def _note_runtime(self, key: tuple, seconds: float) -> None:
        previous = self._job_seconds.get(key)
        self._job_seconds[key] = seconds if previous is None \
            else 0.8 * previous + 0.2 * seconds

    # -- crash recovery -----------------------------------------------

    def job_id(self, oid: bytes) -> tuple:
        """A job's key in the history: its oid as a number, and its
        database's name."""
        return (int.from_bytes(oid, 'big'), self._database_name)

    def worker_crashed(self, items: List[Item], exc: BaseException) -> None:
        """A worker died inside a job: never leave it ACTIVE forever."""
        uuid = self.dispatcher.UUID

        def recover(connection: Any) -> None:
            for oid, _ in items:
                job = connection.get(oid)
                if job.status in (ASSIGNED, ACTIVE, CALLBACKS) and \
                        job.assignerUUID == uuid:
                    recover_job(job, 'lost its worker (%s)'
                                % type(exc).__name__)
        # Waits out a lost storage server (a group commit raises
        # ClientDisconnected when it goes away): a job left ASSIGNED to a
        # live dispatcher is never run.  The lock is not held meanwhile.
        dispatcher = self.dispatcher
        Runner(dispatcher.db, uuid, dispatcher.clock).bookkeep(
            recover, lock=dispatcher._bookkeeping)
        for oid, _ in items:
            self._jobs.record(self.job_id(oid), completed=self._clock.utcnow(),
                              failed=True,
                              result='worker crashed: %r' % (exc,))
        dispatcher.wake()
