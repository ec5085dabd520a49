"""The Dispatcher: this process's job runner, one per instance UUID.

A Twisted reactor of its own (the global one cannot be restarted, and an
app may use it) runs in a daemon thread and polls the queues: it pings,
declares silent siblings dead, and lets each agent claim jobs, which a
pool of worker threads per agent runs with :class:`~.runner.Runner`.  It
polls every ``poll_interval`` and also the moment this process commits a
transaction that put a job, so local jobs start in milliseconds.
"""
from __future__ import annotations

import datetime
import logging
import threading
from typing import Dict, Optional

import transaction
from twisted.internet import selectreactor, task
from ZODB.POSException import ConflictError

from . import clock as clock_module
from . import periodic, retry, running
from .running import get, stop_all
from .agent import Agent
from .executor import Executor
from .history import JobHistory, Poll, Polls
from .install import queue_database
from .safetext import install_log_filter
from .instance import (ENV_VAR, InstanceLock, read_uuid, resolve_uuid_file)
from .interfaces import ACTIVE, ASSIGNED, CALLBACKS, KEY
from .monitor import RUNNING, STARTING, STOPPED, STUCK, Monitor
from .registry import recover_job
from .runner import Runner
from .watch import LastTransaction
from .zeoclient import forget_prefetched_oids_on_reconnect

log = logging.getLogger('pyramid_zcasync.events')
trace = logging.getLogger('pyramid_zcasync.trace')

#: Seconds running jobs get to finish when the dispatcher stops.
STOP_GRACE = 5.0
#: Seconds between looks at the storage's last transaction (see
#: Dispatcher._watch_database): the cross-process pick-up latency.
WATCH_INTERVAL = 0.02
#: Seconds a pooled ZODB connection may stay unused before it is closed:
#: what it collects meanwhile (the oid of every object committed) is
#: about this many seconds of the database's traffic.
IDLE_CONNECTION = 10
def start(db, uuid: Optional[str] = None, poll_interval: float = 5,
          uuid_file: Optional[str] = None, **options) -> 'Dispatcher':
    """Start this process's dispatcher on ``db`` and return it.

    The UUID comes from ``uuid``, else the file ``uuid_file``, else the
    file named by ``$ZC_ASYNC_UUID``.  With a file, an exclusive OS lock
    refuses a second live process with the same UUID.  ``options``:
    ``agent_size``, ``ping_interval``, ``ping_death_interval`` (seconds),
    ``install_signal_handlers`` (default True), ``clock``, ``job_context``
    (see context.py), ``history_size`` and ``history_age`` (seconds): the
    bounds of each agent's history of completed jobs.

    ``db`` may be any database of a multi-database whose root refers to
    the queues (zc.async starts from the main one): the dispatcher works
    in the database that holds them.
    """
    db = queue_database(db)
    install_log_filter()  # job text in the events log, also without Pyramid
    lock = None
    if uuid is None:
        path = resolve_uuid_file(uuid_file)
        uuid = read_uuid(path)
        lock = InstanceLock(path)
        lock.acquire(uuid)
    install_signal_handlers = options.pop('install_signal_handlers', True)
    forget_prefetched_oids_on_reconnect(db.storage)
    _bound_idle_connections(db)
    try:
        dispatcher = Dispatcher(db, str(uuid), poll_interval, **options)
        dispatcher.start(lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if install_signal_handlers:
        running.install_exit_handlers(STOP_GRACE)
    return dispatcher


def _bound_idle_connections(db) -> None:
    """Close pooled connections idle for more than IDLE_CONNECTION seconds.

    Worker threads each open connections, but once jobs run in groups one
    connection does all the work and ZODB's pool keeps handing back the
    last one closed; the others stay in the pool collecting the oid of
    every committed object (+170 bytes a job, measured over 100,000 jobs).
    """
    pool = getattr(db, 'pool', None)
    if pool is not None and pool.getTimeout() > IDLE_CONNECTION:
        pool.setTimeout(IDLE_CONNECTION)


class Dispatcher(Monitor):

    def __init__(self, db, uuid: str, poll_interval: float = 5,
                 agent_size: int = 3, ping_interval: float = 30,
                 ping_death_interval: float = 60, clock=None,
                 job_context=None, history_size: Optional[int] = None,
                 history_age: Optional[float] = None):
        if poll_interval <= 0:
            raise ValueError('poll_interval must be positive, got %r'
                             % (poll_interval,))
        self.db = db
        self.UUID = uuid
        self.poll_interval = float(poll_interval)
        self.agent_size = agent_size
        self.ping_interval = datetime.timedelta(seconds=ping_interval)
        self.ping_death_interval = datetime.timedelta(
            seconds=ping_death_interval)
        self.clock = clock or clock_module.default_clock
        #: Entered around each job (see context.py): the Pyramid app's.
        self.job_context = job_context
        self.history_size = history_size
        self.history_age = None if history_age is None else \
            datetime.timedelta(seconds=history_age)
        self.activated: Optional[datetime.datetime] = None
        self.reactor = None
        self.thread: Optional[threading.Thread] = None
        self.polls = Polls()
        self.jobs = JobHistory()
        #: Runs what the polls claim (executor.py).
        self.executor = Executor(self)
        #: Serialises this process's transactions on shared bookkeeping
        #: (claims, agent slots, history): no conflicts among our threads.
        self._bookkeeping = threading.RLock()
        self._lock: Optional[InstanceLock] = None
        self._wake_pending = False
        self._wake_lock = threading.Lock()
        self._last_ping: Optional[datetime.datetime] = None
        #: Database time since which our pings went through without a
        #: gap: siblings' silence is counted from then at the earliest.
        self._watching_since: Optional[datetime.datetime] = None
        self._stopping = False
        self._seen_tid = None
        self._last_transaction = LastTransaction(db.storage)
        #: ZEO and RelStorage load many objects in one round trip;
        #: FileStorage has nothing to gain.
        self._prefetches = hasattr(db.storage, 'prefetch')
        #: Why the storage could not commit, by thread (report_storage).
        self.storage_trouble: Dict[str, str] = {}
        #: Claims of a poll whose commit failed: if the storage server
        #: committed it and its answer was lost, the jobs are ours.
        self._unsure_claims: list = []
        self._manager = transaction.TransactionManager()
        self._connection = None

    def __repr__(self):
        return '<Dispatcher %s %s>' % (self.UUID, self.status)

    # -- life ---------------------------------------------------------

    def start(self, lock: Optional[InstanceLock] = None) -> None:
        running.register(self)
        try:
            self._activate_all()
        except BaseException:
            running.unregister(self)
            raise
        self._lock = lock
        self.activated = self.clock.utcnow()
        self.reactor = selectreactor.SelectReactor()
        self._loop = task.LoopingCall(self._poll)
        self._loop.clock = self.reactor
        self.reactor.callWhenRunning(self._loop.start, self.poll_interval)
        self._watch = task.LoopingCall(self._watch_database)
        self._watch.clock = self.reactor
        self.reactor.callWhenRunning(self._watch.start, WATCH_INTERVAL)
        self.thread = threading.Thread(
            target=self.reactor.run, kwargs={'installSignalHandlers': False},
            name='zcasync-reactor-%s' % self.UUID[:8], daemon=True)
        self.thread.start()
        log.info('dispatcher %s started (poll every %s s)', self.UUID,
                 self.poll_interval)

    def stop(self, timeout: float = 10) -> None:
        """Stop polling, let running jobs finish briefly, deactivate."""
        if self._stopping or self.activated is None:
            return
        self._stopping = True
        self.reactor.callFromThread(self._stop_loop)
        self.executor.stop(min(STOP_GRACE, timeout))
        try:
            self._deactivate_all()
        except Exception:
            log.exception('dispatcher %s could not deactivate in the '
                          'database', self.UUID)
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(timeout)
        if self._connection is not None:
            retry.abort(self._manager)
            self._connection.close()
            self._connection = None
        if self._lock is not None:
            self._lock.release()
        self.activated = None
        running.unregister(self)
        log.info('dispatcher %s stopped', self.UUID)

    def _stop_loop(self) -> None:
        for loop in (self._loop, self._watch):
            if loop.running:
                loop.stop()
        self._last_transaction.close()

    def _watch_database(self) -> None:
        """Poll when another process committed, not a poll interval later.

        The newest transaction is a local read for FileStorage and ZEO
        (whose server pushes invalidations) and one short query for
        RelStorage (see watch.py); a change since the last look, ours or
        another process's, means a put may be waiting.  Transactions of
        this process that put a job wake the dispatcher at once anyway.
        """
        try:
            latest = self._last_transaction.latest()
        except Exception:  # a storage without it, or away: polls remain
            return
        if latest is not None and latest != self._seen_tid:
            self._seen_tid = latest
            self.wake()

    def _transact(self, work):
        with self._bookkeeping:
            return Runner(self.db, self.UUID, self.clock).transact(work)

    def _activate_all(self) -> None:
        def activate(connection):
            for queue in _queues(connection).values():
                self._registration(queue, activate=True)
        self._transact(activate)

    def _deactivate_all(self) -> None:
        def deactivate(connection):
            for queue in _queues(connection).values():
                registration = queue.dispatchers.get(self.UUID)
                if registration is not None and registration.activated:
                    registration.deactivate()
        self._transact(deactivate)

    def _registration(self, queue, activate: bool = False):
        registration = queue.dispatchers.get(self.UUID)
        if registration is None:
            registration = queue.dispatchers.register(
                self.UUID, ping_interval=self.ping_interval,
                ping_death_interval=self.ping_death_interval)
        if 'main' not in registration:
            registration.add(Agent('main', self.agent_size))
        if activate:
            for agent in registration.values():
                agent.completed.configure(self.history_size, self.history_age)
        if activate or not registration.activated:
            if not activate:
                log.warning('dispatcher %s found itself deactivated in '
                            'queue %r (declared dead?); reactivating',
                            self.UUID, queue.name)
            registration.ping_interval = self.ping_interval
            registration.ping_death_interval = self.ping_death_interval
            registration.activate(self.clock.utcnow())
        return registration

    # -- polling ------------------------------------------------------

    def wake(self) -> None:
        """Poll as soon as possible (from any thread); wakes coalesce."""
        if self._stopping or self.reactor is None:
            return
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        self.reactor.callFromThread(self._woken)

    def _woken(self) -> None:
        with self._wake_lock:
            self._wake_pending = False
        self._poll()

    def _poll(self) -> None:
        try:
            with self._bookkeeping:
                # Checked under the lock stop() takes to deactivate: a poll
                # let through before would reactivate the dispatcher after
                # it, and claim jobs that nobody runs.
                if self._stopping:
                    return
                self._poll_once()
        except Exception as exc:
            log.exception('dispatcher %s: poll failed', self.UUID)
            retry.abort(self._manager)
            if retry.is_disconnected(exc):
                self.report_storage(exc)

    def _poll_once(self) -> None:
        if self._connection is None:
            self._connection = self.db.open(transaction_manager=self._manager)
        self._manager.begin()
        now = self.clock.utcnow()
        poll = Poll(self.polls.total, now)
        claimed = []
        due = None
        ping_due = (self._last_ping is None
                    or now - self._last_ping >= self.ping_interval)
        judge = ping_due and self._connected_throughout(now)
        registration = None
        for name, queue in sorted(_queues(self._connection).items()):
            registration = self._registration(queue)
            periodic.enqueue_due(queue, now)
            if ping_due:
                registration.ping(now)
            if judge:
                queue.dispatchers.deactivate_dead(
                    exclude=self.UUID, watched_since=self._watching_since)
            poll[name] = {agent.name: self._claim(agent, claimed)
                          for agent in registration.values()}
            due = _earliest(due, queue.next_due(now))
            due = _earliest(due, periodic.next_due(queue))
        self._adopt_unsure_claims(claimed)
        local_now = getattr(self.clock, 'local_now', None)
        before = local_now() if local_now is not None else None
        try:
            self._manager.commit()
        except ConflictError as exc:
            # A conflict is raised at vote, before anything is stored: no
            # claim of this poll can have been committed.
            retry.abort(self._manager)
            trace.info('dispatcher %s: poll conflicted, retrying', self.UUID)
            _mark_error(poll, exc)
            self.polls.add(poll)
            self.reactor.callLater(0.01, self._poll)
            return
        except Exception:
            self._unsure_claims = claimed
            raise
        self._unsure_claims = []
        self.report_storage(None)
        if ping_due and before is not None and registration is not None:
            # Our ping was stamped by the storage's clock: set ours by it,
            # and the times we read from ours with it (a ping 3 minutes in
            # the future would stop our pings for 3 minutes).
            shift = self.clock.observe(registration.last_ping, before,
                                       local_now())
            if shift:
                now += shift
                self.activated = self.activated and self.activated + shift
        if ping_due:
            if not self._connected_throughout(now):
                # Back after a gap (or just started): siblings' silence
                # counts from this commit on (database time).
                self._watching_since = None if registration is None \
                    else registration.last_ping
            self._last_ping = now
        self.polls.add(poll)
        self._wake_at(due, now)
        for queue_name, agent, oid in claimed:
            self.executor.submit(queue_name, agent, oid, poll.key)

    def _adopt_unsure_claims(self, claimed: list) -> None:
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

    def _connected_throughout(self, now) -> bool:
        """Whether our own pings went through lately (not after an outage
        of the storage server, or a stall of this process): only then
        may we judge siblings, and their silence counts from when we came
        back (``_watching_since``)."""
        return (self._last_ping is not None
                and now - self._last_ping <= 2 * self.ping_interval)

    def _wake_at(self, due, now) -> None:
        """Poll when the next scheduled job is due, not up to a poll
        interval later."""
        if due is None:
            return
        delay = (due - now).total_seconds()
        if delay >= self.poll_interval:
            return
        call = getattr(self, '_due_call', None)
        if call is not None and call.active():
            if call.getTime() <= self.reactor.seconds() + delay:
                return
            call.cancel()
        self._due_call = self.reactor.callLater(max(delay, 0), self._poll)

    def _claim(self, agent, claimed: list) -> dict:
        # Active jobs from this process's own record: loading each of the
        # agent's jobs at every poll would cost more than the claims.
        active = self.jobs.active_ids(agent.queue.name, agent.name,
                                      started=False)
        info = {'active jobs': active,
                'error': None, 'len': 0, 'new jobs': [], 'size': agent.size}
        limit = self.executor.claim_limit(agent)
        try:
            self.executor.release_finished(agent)
            self._prefetch_claims(agent, limit)
            while True:
                job = agent.claimJob(limit=limit)
                if job is None:
                    break
                if job._p_oid is None:  # put earlier in this very poll
                    agent._p_jar.add(job)
                info['new jobs'].append(_job_id(job))
                claimed.append((agent.queue.name, agent, job._p_oid))
        except Exception as exc:
            log.exception('agent %r failed to claim', agent.name)
            info['error'] = '%s: %s' % (type(exc).__name__, exc)
        info['len'] = len(agent)
        return info

    def _prefetch_claims(self, agent, limit: int) -> None:
        """Ask the server for the jobs the claims are about to read, all
        at once, when more than one will be claimed."""
        count = limit - len(agent)
        if self._prefetches and count > 1:
            # Jobs put in this very transaction (periodic ones) are not
            # stored yet: the server would answer POSKeyError.
            added = getattr(agent._p_jar, '_added', {})
            agent._p_jar.prefetch(
                [oid for oid in agent.queue.front_oids(
                    count, self.clock.utcnow()) if oid not in added])

    # -- running ------------------------------------------------------

    def _job_id(self, oid: bytes) -> tuple:
        return (_oid_int(oid), self.db.database_name)

    def _worker_crashed(self, items, exc) -> None:
        """A worker died inside a job: never leave it ACTIVE forever."""
        def recover(connection):
            for oid, _ in items:
                job = connection.get(oid)
                if job.status in (ASSIGNED, ACTIVE, CALLBACKS) and \
                        job.assignerUUID == self.UUID:
                    recover_job(job, 'lost its worker (%s)'
                                % type(exc).__name__)
        # Waits out a lost storage server (a group commit raises
        # ClientDisconnected when it goes away): a job left ASSIGNED to a
        # live dispatcher is never run.  The lock is not held meanwhile.
        Runner(self.db, self.UUID, self.clock).bookkeep(
            recover, lock=self._bookkeeping)
        for oid, _ in items:
            self.jobs.record(self._job_id(oid), completed=self.clock.utcnow(),
                             failed=True, result='worker crashed: %r' % (exc,))
        self.wake()


def _earliest(first, second):
    if first is None or second is None:
        return first or second
    return min(first, second)


def _queues(connection):
    return connection.root().get(KEY) or {}


def _job_id(job) -> tuple:
    return (_oid_int(job._p_oid), job._p_jar.db().database_name)


def _oid_int(oid: bytes) -> int:
    return int.from_bytes(oid, 'big')


def _mark_error(poll: Poll, exc: Exception) -> None:
    for agents in poll.values():
        for info in agents.values():
            info['error'] = '%s: %s' % (type(exc).__name__, exc)


__all__ = ['get', 'start', 'stop_all', 'Dispatcher', 'ENV_VAR', 'STOPPED',
           'STARTING', 'RUNNING', 'STUCK']

