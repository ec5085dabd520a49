"""One poll of a dispatcher: a single transaction over every queue.

In it the dispatcher keeps its registration active, puts the periodic
jobs that are due, pings, declares silent siblings dead, gives its agents
the sizes set at run time (``queue.dispatchers.scale``), and lets each
of its agents claim jobs (prefetching them from ZEO or RelStorage in one
round trip).  Nothing is claimed from a paused queue, but its periodic
jobs are still put when due, to wait pending until it is resumed.  The Poller knows nothing of threads or the reactor: the
Dispatcher calls :meth:`Poller.poll_once` under its bookkeeping lock and
schedules what the outcome says (a retry, a wake-up when something is
due, the claimed jobs for the Executor).
"""
from __future__ import annotations

import datetime
import logging
from typing import Any, Iterator, List, NamedTuple, Optional, Tuple

import transaction
from ZODB.POSException import ConflictError

from . import lifecycle, periodic, retry
from .agent import Agent
from .clock import Clock
from .executor import Executor
from .history import Poll
from .interfaces import ASSIGNED, KEY
from .monitor import Monitor, spoils_poll
from .options import DispatcherOptions

log = logging.getLogger('pyramid_zcasync.events')
trace = logging.getLogger('pyramid_zcasync.trace')

#: A claimed job: its queue's name, its agent and its oid.
Claim = Tuple[str, Any, bytes]
#: The fewest new jobs an agent claims in a poll after conflicts.
FEWEST_CLAIMS = 4
#: Claims per poll from which no cap is kept (back to the agent's limit).
UNCAPPED = 1024


class ClaimBudget:
    """How many new jobs a poll claims per agent: all it may hold, until
    a poll conflicts; then half as many as that poll claimed, doubling
    again with each poll that commits.

    A poll that claims many jobs is a long transaction: web-style
    producers commit puts meanwhile, into the same pending trees (their
    last buckets, which are the first ones too while few jobs wait), and
    a bucket split or emptied on both sides is a conflict.  All claims of
    a conflicted poll are thrown away, and the next poll, behind by more,
    claimed more: on a busy process most claims were wasted.  Halving
    bounds the waste; doubling returns to big claims when puts stop."""

    def __init__(self) -> None:
        self.cap: Optional[int] = None

    def limit(self, agent: Any, limit: int) -> int:
        """The most jobs ``agent`` may hold once this poll has claimed."""
        if self.cap is None:
            return limit
        return min(limit, len(agent) + self.cap)

    def conflicted(self, claimed: int) -> None:
        self.cap = max(FEWEST_CLAIMS, min(self.cap or UNCAPPED, claimed) // 2)

    def committed(self) -> None:
        if self.cap is not None:
            self.cap *= 2
            if self.cap >= UNCAPPED:
                self.cap = None


class Outcome(NamedTuple):
    """What a committed poll asks of its dispatcher."""

    #: Jobs claimed, for the Executor.
    claimed: List[Claim]
    #: The poll's key in the dispatcher's poll history.
    poll_key: int
    #: When the next scheduled job or periodic occurrence is due.
    due: Optional[datetime.datetime]
    #: The poll's time, corrected by the database's clock.
    now: datetime.datetime
    #: How far our clock was set by the database's, if at all.
    shift: Optional[datetime.timedelta]


class Poller:
    """The poll transactions of one dispatcher, in a connection kept open
    between polls (its cache makes a poll cheap)."""

    def __init__(self, db: Any, uuid: str, clock: Clock,
                 options: DispatcherOptions, monitor: Monitor,
                 executor: Executor) -> None:
        self.db = db
        self.UUID = uuid
        self.clock = clock
        self.options = options
        self.ping_interval = options.ping_every
        self.ping_death_interval = options.silence_limit
        self.history_max_age = options.history_max_age
        self.monitor = monitor
        self.executor = executor
        self.last_ping: Optional[datetime.datetime] = None
        #: Database time since which our pings went through without a
        #: gap: siblings' silence is counted from then at the earliest.
        self.watching_since: Optional[datetime.datetime] = None
        #: ZEO and RelStorage load many objects in one round trip;
        #: FileStorage has nothing to gain.
        self.prefetches = hasattr(db.storage, 'prefetch')
        #: Claims of a poll whose commit failed: if the storage server
        #: committed it and its answer was lost, the jobs are ours.
        self._unsure_claims: List[Claim] = []
        self._manager = transaction.TransactionManager()
        self._connection: Any = None
        self.budget = ClaimBudget()

    # -- the registration ---------------------------------------------

    def activate_all(self, connection: Any) -> None:
        for queue in queues(connection).values():
            self.registration(queue, activate=True)

    def deactivate_all(self, connection: Any) -> None:
        for queue in queues(connection).values():
            registration = queue.dispatchers.get(self.UUID)
            if registration is not None and registration.activated:
                registration.deactivate()

    def registration(self, queue: Any, activate: bool = False) -> Any:
        """Our registration in ``queue``, made, configured and active."""
        registration = queue.dispatchers.get(self.UUID)
        if registration is None:
            registration = queue.dispatchers.register(
                self.UUID, ping_interval=self.ping_interval,
                ping_death_interval=self.ping_death_interval)
        if 'main' not in registration:
            size = queue.dispatchers.size_of('main')
            registration.add(Agent('main', self.options.agent_size
                                   if size is None else size))
        if activate:
            for agent in registration.values():
                agent.completed.configure(self.options.history_size,
                                          self.history_max_age)
        if activate or not registration.activated:
            if not activate:
                log.warning('dispatcher %s found itself deactivated in '
                            'queue %r (declared dead?); reactivating',
                            self.UUID, queue.name)
            registration.ping_interval = self.ping_interval
            registration.ping_death_interval = self.ping_death_interval
            registration.activate(self.clock.utcnow())
        return registration

    # -- a poll -------------------------------------------------------

    def poll_once(self) -> Optional[Outcome]:
        """Poll and commit; None when it conflicted (nothing of it was
        stored: poll again soon)."""
        if self._connection is None:
            self._connection = self.db.open(transaction_manager=self._manager)
        self._manager.begin()
        now = self.clock.utcnow()
        poll = Poll(self.monitor.polls.total, now)
        claimed: List[Claim] = []
        ping_due = (self.last_ping is None
                    or now - self.last_ping >= self.ping_interval)
        try:
            due, registration, ping_due = self._poll_queues(
                poll, claimed, now, ping_due)
        except ConflictError as exc:  # read in the middle of a claim
            self._conflicted(poll, claimed, exc)
            return None
        self._adopt_unsure_claims(claimed)
        before = self._local_now()
        if not self._commit(poll, claimed):
            return None
        shift = None
        if ping_due:
            shift = self._pinged(registration, now, before)
            now += shift or datetime.timedelta(0)
        self.monitor.polls.add(poll)
        return Outcome(claimed, poll.key, due, now, shift)

    def _poll_queues(self, poll: Poll, claimed: List[Claim],
                     now: datetime.datetime, ping_due: bool
                     ) -> Tuple[Optional[datetime.datetime], Any, bool]:
        """Ping, judge, put periodic jobs and claim in every queue; when
        the next job is due, our last registration, and whether we
        pinged."""
        judge = ping_due and self.connected_throughout(now)
        due = registration = None
        for name, queue in sorted(queues(self._connection).items()):
            registration = self.registration(queue)
            ping_due = ping_due or self._ping_overdue()
            periodic.enqueue_due(queue, now)
            if ping_due:
                registration.ping(now)
            if judge:
                queue.dispatchers.deactivate_dead(
                    exclude=self.UUID, watched_since=self.watching_since)
            follow_sizes(queue, registration)
            poll[name] = {agent.name: self._claim(agent, claimed)
                          for agent in registration.values()}
            if not queue.paused and not _all_deferred(poll[name]):
                # (paused: its due jobs must not wake us; deferred: the
                # poll after a batch ends asks, without reading the trees
                # each put changed meanwhile, one round trip each)
                due = _earliest(due, queue.next_due(now))
            due = _earliest(due, periodic.next_due(queue))
        return due, registration, ping_due

    def _ping_overdue(self) -> bool:
        """Whether a ping that was not due when this poll began is due by
        now: the poll waited (its loads, for a storage server away) a
        ping interval or more.  Not pinging then, its registration would
        look dead to its own claims (silent through the outage), and they
        would claim nothing."""
        return self.last_ping is not None and (
            self.clock.utcnow() - self.last_ping >= self.ping_interval)

    def _local_now(self) -> Optional[datetime.datetime]:
        """The local time, when the clock follows the database's."""
        local_now = getattr(self.clock, 'local_now', None)
        return local_now() if local_now is not None else None

    def _commit(self, poll: Poll, claimed: List[Claim]) -> bool:
        try:
            self._manager.commit()
        except ConflictError as exc:
            # A conflict is raised at vote, before anything is stored: no
            # claim of this poll can have been committed.
            self._conflicted(poll, claimed, exc)
            return False
        except Exception:
            self._unsure_claims = claimed
            raise
        self._unsure_claims = []
        self.budget.committed()
        self.monitor.report_storage(None)
        return True

    def _conflicted(self, poll: Poll, claimed: List[Claim],
                    exc: ConflictError) -> None:
        retry.abort(self._manager)
        self.budget.conflicted(len(claimed))
        trace.info('dispatcher %s: poll conflicted, retrying', self.UUID)
        _mark_error(poll, exc)
        self.monitor.polls.add(poll)

    def _pinged(self, registration: Any, now: datetime.datetime,
                before: Optional[datetime.datetime]
                ) -> Optional[datetime.timedelta]:
        """Note a committed ping; the shift of our clock it revealed."""
        shift = None
        after = self._local_now()
        if before is not None and after is not None \
                and registration is not None:
            # Our ping was stamped by the storage's clock: set ours by it,
            # and the times we read from ours with it (a ping 3 minutes in
            # the future would stop our pings for 3 minutes).
            shift = self.clock.observe(  # type: ignore[attr-defined]
                registration.last_ping, before, after) or None
            if shift:
                now += shift
        if not self.connected_throughout(now):
            # Back after a gap (or just started): siblings' silence
            # counts from this commit on (database time).
            self.watching_since = None if registration is None \
                else registration.last_ping
        self.last_ping = now
        return shift

    def abort(self) -> None:
        """After a failed poll: the next one begins afresh."""
        retry.abort(self._manager)

    def close(self) -> None:
        if self._connection is not None:
            retry.abort(self._manager)
            self._connection.close()
            self._connection = None

    def connected_throughout(self, now: datetime.datetime) -> bool:
        """Whether our own pings went through lately (not after an outage
        of the storage server, or a stall of this process): only then
        may we judge siblings, and their silence counts from when we came
        back (``watching_since``)."""
        return (self.last_ping is not None
                and now - self.last_ping <= 2 * self.ping_interval)

    def _adopt_unsure_claims(self, claimed: List[Claim]) -> None:
        """Run the jobs claimed by a poll whose commit raised, if the
        database says they are assigned to us after all: ZEO can commit
        and then lose the server before answering (ClientDisconnected
        from tpc_finish), and nobody else runs a live dispatcher's jobs."""
        known = {oid for _, _, oid in claimed}
        for queue_name, agent, oid in self._unsure_claims:
            job = self._connection.get(oid)
            if oid not in known and job.status == ASSIGNED and \
                    job.assignerUUID == self.UUID:
                log.warning('dispatcher %s: %r was claimed by a poll whose '
                            'commit seemed to fail; running it', self.UUID,
                            job)
                claimed.append((queue_name, agent, oid))
                known.add(oid)

    # -- claims -------------------------------------------------------

    def _claim(self, agent: Any, claimed: List[Claim]) -> dict:
        # Active jobs from this process's own record: loading each of the
        # agent's jobs at every poll would cost more than the claims.
        active = self.monitor.jobs.active_ids(agent.queue.name, agent.name,
                                              started=False)
        info = {'active jobs': active,
                'error': None, 'len': 0, 'new jobs': [], 'size': agent.size}
        limit = self.budget.limit(agent, self.executor.claim_limit(agent))
        try:
            self.executor.follow_size(agent)
            self.executor.release_finished(agent)
            if agent.queue.paused:
                info['paused'] = True
                return info
            if self.executor.defers_claims(agent):
                info['deferred'] = True  # until a batch ends: see there
                return info
            self.prefetch_claims(agent, limit)
            for job in claim_ahead(agent, limit):
                if job._p_oid is None:  # put earlier in this very poll
                    agent._p_jar.add(job)
                info['new jobs'].append(_job_id(job))
                claimed.append((agent.queue.name, agent, job._p_oid))
        except Exception as exc:
            if spoils_poll(exc):
                # A storage error can come in the middle of one claim,
                # after its job left the pending tree and before it was
                # ASSIGNED: committing that leaves a PENDING job no claim
                # ever sees.  The whole poll is thrown away instead.
                raise
            log.exception('agent %r failed to claim', agent.name)
            info['error'] = '%s: %s' % (type(exc).__name__, exc)
        info['len'] = len(agent)
        return info

    def prefetch_claims(self, agent: Any, limit: int) -> None:
        """Ask the server for the jobs the claims are about to read, all
        at once, when more than one will be claimed."""
        count = limit - len(agent)
        if self.prefetches and count > 1:
            # Jobs put in this very transaction (periodic ones) are not
            # stored yet: the server would answer POSKeyError.
            added = getattr(agent._p_jar, '_added', {})
            agent._p_jar.prefetch(
                [oid for oid in agent.queue.front_oids(
                    count, self.clock.utcnow()) if oid not in added])


def claim_ahead(agent: Any, limit: int) -> Iterator[Any]:
    """The jobs ``agent`` claims in this poll, up to ``limit`` held.

    ``Agent.claimJob`` asks, at every claim, whether the registration
    may claim at all; its "dead" verdict reads the storage's last
    transaction, which takes the storage's lock, the one a producer's
    commit holds through its fsync: with jobs trickling in, each claim
    of a poll waited for a put.  Within one poll transaction the answer
    cannot change (the poll pinged, or the registration is as dead as
    at its first claim), so it is asked once, by the first claim."""
    job = agent.claimJob(limit=limit)
    while job is not None:
        yield job
        if len(agent) >= limit:
            return
        job = agent._choose(None)
        if job is not None:
            lifecycle.take_slot(agent, job)


def follow_sizes(queue: Any, registration: Any) -> None:
    """Give our agents the sizes set by ``scale`` (written only where
    they differ: only this dispatcher writes its agents)."""
    for agent in registration.values():
        size = queue.dispatchers.size_of(agent.name)
        if size is not None:
            agent.resize(size)


def queues(connection: Any) -> Any:
    """The Queues mapping of ``connection``'s database (empty if none)."""
    return connection.root().get(KEY) or {}


def _earliest(first: Optional[datetime.datetime],
              second: Optional[datetime.datetime]
              ) -> Optional[datetime.datetime]:
    if first is None or second is None:
        return first or second
    return min(first, second)


def _all_deferred(infos: dict) -> bool:
    """Whether every agent of a queue left its claims to a later poll."""
    return bool(infos) and all(info.get('deferred') for info in
                               infos.values())


def _job_id(job: Any) -> tuple:
    return (int.from_bytes(job._p_oid, 'big'),
            job._p_jar.db().database_name)


def _mark_error(poll: Poll, exc: Exception) -> None:
    for agents in poll.values():
        for info in agents.values():
            info['error'] = '%s: %s' % (type(exc).__name__, exc)
