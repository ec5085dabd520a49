"""The Dispatcher: this process's job runner, one per instance UUID.

A Twisted reactor of its own (the global one cannot be restarted, and an
app may use it) runs in a daemon thread and polls the queues: it pings,
declares silent siblings dead, and lets each agent claim jobs, which a
pool of worker threads per agent runs with :class:`~.runner.Runner`.  It
polls every ``poll_interval``, and also the moment this process commits a
transaction that put a job, or the storage pushes another process's
commit (ZEO) or put (PostgreSQL, see wakeup.py): jobs start in
milliseconds.

The Dispatcher is the process-facing part: the instance lock, the
reactor thread, start, stop and wake.  A poll's transaction is the
Poller's (poller.py), running the claimed jobs the Executor's
(executor.py), and what the dispatcher reports about itself the
Monitor's (monitor.py).  Its watch of the database also stops the jobs
it runs that someone cancelled (cancelwatch.py).
"""
from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

from twisted.internet import selectreactor, task

from . import clock as clock_module
from . import extensions, process, retry, wakeup
from .cancelwatch import CancelWatch, RunningCalls
from .clock import Clock
from .executor import Executor
from .history import JobHistory, Poll, Polls
from .install import queue_database
from .instance import ENV_VAR, InstanceLock, read_uuid, resolve_uuid_file
from .monitor import RUNNING, STARTING, STOPPED, STUCK, Monitor
from .options import DEFAULTS, DispatcherOptions
from .poller import Outcome, Poller
from .runner import Runner
from .process import get, stop_all
from .safetext import install_log_filter
from .watch import LastTransaction
from .zeoclient import forget_prefetched_oids_on_reconnect

log = logging.getLogger('pyramid_zcasync.events')

T = TypeVar('T')

#: Seconds running jobs get to finish when the dispatcher stops.
STOP_GRACE = 5.0
#: Seconds between looks at the storage's last transaction (see
#: Dispatcher._watch_database): the cross-process pick-up latency where
#: the storage pushes nothing, and behind the push where it does.
WATCH_INTERVAL = 0.02
#: The least seconds between two polls woken by pushed commits.
PUSH_SPACING = 0.02
#: Seconds a pooled ZODB connection may stay unused before it is closed:
#: what it collects meanwhile (the oid of every object committed) is
#: about this many seconds of the database's traffic.
IDLE_CONNECTION = 10
#: Seconds before a poll whose commit conflicted is tried again.
CONFLICT_RETRY = 0.01


def start(db: Any, uuid: Optional[str] = None,
          poll_interval: Optional[float] = None,
          uuid_file: Optional[str] = None,
          options: Optional[DispatcherOptions] = None,
          clock: Optional[Clock] = None,
          **overrides: Any) -> Dispatcher:
    """Start this process's dispatcher on ``db`` and return it.

    The UUID comes from ``uuid``, else the file ``uuid_file``, else the
    file named by ``$ZC_ASYNC_UUID``.  With a file, an exclusive OS lock
    refuses a second live process with the same UUID.  ``options`` (see
    options.py) says how it polls; keyword arguments named after its
    fields (``poll_interval``, ``agent_size``, ``ping_interval``,
    ``ping_death_interval``, ``history_size``, ``history_age``,
    ``install_signal_handlers``) override them.  ``clock`` is the
    dispatcher's; what is entered around each job comes from the
    database's extensions (extensions.py).

    ``db`` may be any database of a multi-database whose root refers to
    the queues (zc.async starts from the main one): the dispatcher works
    in the database that holds them.
    """
    options = (options or DEFAULTS).replace(poll_interval=poll_interval,
                                            **overrides)
    db = queue_database(db)
    install_log_filter()  # job text in the events log, also without Pyramid
    lock = None
    if uuid is None:
        path = resolve_uuid_file(uuid_file)
        uuid = read_uuid(path)
        lock = InstanceLock(path)
        lock.acquire(uuid)
    forget_prefetched_oids_on_reconnect(db.storage)
    _bound_idle_connections(db)
    try:
        dispatcher = Dispatcher(db, str(uuid), options, clock=clock)
        dispatcher.start(lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if options.install_signal_handlers:
        process.install_exit_handlers(STOP_GRACE)
    return dispatcher


def _bound_idle_connections(db: Any) -> None:
    """Close pooled connections idle for more than IDLE_CONNECTION seconds.

    Worker threads each open connections, but once jobs run in groups one
    connection does all the work and ZODB's pool keeps handing back the
    last one closed; the others stay in the pool collecting the oid of
    every committed object (+170 bytes a job, measured over 100,000 jobs).
    """
    pool = getattr(db, 'pool', None)
    if pool is not None and pool.getTimeout() > IDLE_CONNECTION:
        pool.setTimeout(IDLE_CONNECTION)


class WakeOnPut(extensions.Extension):
    """Polls as soon as a put of this process into the dispatcher's
    database commits: the job starts in milliseconds, not at the next
    poll or database watch."""

    def __init__(self, dispatcher: 'Dispatcher') -> None:
        self.dispatcher = dispatcher

    def after_put(self, queue: Any, job: Any) -> None:
        self.dispatcher.wake()


class Dispatcher:
    """One instance UUID's dispatcher: its reactor thread polls with a
    Poller and hands the claimed jobs to an Executor."""

    def __init__(self, db: Any, uuid: str,
                 options: Optional[DispatcherOptions] = None, *,
                 clock: Optional[Clock] = None,
                 **overrides: Any) -> None:
        self.options = (options or DEFAULTS).replace(**overrides)
        self.db = db
        self.UUID = uuid
        self.poll_interval = float(self.options.poll_interval)
        self.clock: Clock = clock or clock_module.default_clock
        self.activated: Optional[datetime.datetime] = None
        self.reactor: Any = None
        self.thread: Optional[threading.Thread] = None
        #: What the dispatcher tells about itself (monitor.py).
        self.monitor = Monitor(self)
        #: Serialises this process's transactions on shared bookkeeping
        #: (claims, agent slots, history): no conflicts among our threads.
        #: Not re-entrant: a group's lease is let go by another thread
        #: than the one that took it (lease.py).
        self._bookkeeping = threading.Lock()
        #: The calls of its jobs running now, which a cancel interrupts;
        #: the runners register them (runner.py).
        self.running_calls = RunningCalls()
        self._cancel_watch = CancelWatch(db, self.running_calls,
                                         self._later)
        #: Runs what the polls claim (executor.py).
        self.executor = Executor(self)
        #: Does the polls' transactions (poller.py).
        self.poller = Poller(db, uuid, self.clock, self.options,
                             self.monitor, self.executor)
        self._lock: Optional[InstanceLock] = None
        self._wake_pending = False
        self._wake_lock = threading.Lock()
        self._stopping = False
        #: Held while claimed jobs are handed to the executor, which is
        #: done outside the bookkeeping lock: stop() waits for a hand-over
        #: under way, and later ones see it stopping.
        self._handing_over = threading.Lock()
        self._seen_tid: Optional[bytes] = None
        self._last_transaction = LastTransaction(db.storage)
        self._due_call: Any = None
        self._wake_on_put = WakeOnPut(self)
        #: Where other processes' commits are pushed from (wakeup.py).
        self.pushed: Optional[wakeup.Subscription] = None
        self._push_quiet_until = 0.0
        self._push_deferred = False

    def __repr__(self) -> str:
        return '<Dispatcher %s %s>' % (self.UUID, self.status)

    # -- life ---------------------------------------------------------

    def start(self, lock: Optional[InstanceLock] = None) -> None:
        process.register(self)
        try:
            self._transact(self.poller.activate_all)
        except BaseException:
            process.unregister(self)
            raise
        self._lock = lock
        self.activated = self.clock.utcnow()
        self.reactor = selectreactor.SelectReactor()
        self._loop = self._every(self.poll_interval, self._poll)
        self._watch = self._every(WATCH_INTERVAL, self._watch_database)
        self.thread = threading.Thread(
            target=self.reactor.run, kwargs={'installSignalHandlers': False},
            name='zcasync-reactor-%s' % self.UUID[:8], daemon=True)
        # Told before the first poll can run, so extensions see a
        # dispatcher's life in order: activated, polls, deactivated.
        extensions.add(self.db, self._wake_on_put)
        wakeup.announce_puts(self.db)
        extensions.of(self.db).dispatcher_activated(self)
        self.thread.start()
        self.pushed = wakeup.listen(self.db, self._committed_elsewhere)
        log.info('dispatcher %s started (poll every %s s)', self.UUID,
                 self.poll_interval)

    def _every(self, seconds: float, call: Callable[[], None]
               ) -> task.LoopingCall:
        loop = task.LoopingCall(call)
        loop.clock = self.reactor
        self.reactor.callWhenRunning(loop.start, seconds)
        return loop

    def stop(self, timeout: float = 10) -> None:
        """Stop polling, let running jobs finish briefly, deactivate."""
        if self._stopping or self.activated is None:
            return
        self._stopping = True
        extensions.remove(self.db, self._wake_on_put)
        if self.pushed is not None:
            self.pushed.close()
        self.reactor.callFromThread(self._stop_loop)
        with self._handing_over:
            pass  # a hand-over under way ends; the next sees _stopping
        self.executor.stop(min(STOP_GRACE, timeout))
        try:
            self._transact(self.poller.deactivate_all)
        except Exception:
            log.exception('dispatcher %s could not deactivate in the '
                          'database', self.UUID)
        self.reactor.callFromThread(self.reactor.stop)
        assert self.thread is not None
        self.thread.join(timeout)
        self.poller.close()
        if self._lock is not None:
            self._lock.release()
        self.activated = None
        process.unregister(self)
        log.info('dispatcher %s stopped', self.UUID)
        extensions.of(self.db).dispatcher_deactivated(self)

    def _stop_loop(self) -> None:
        for loop in (self._loop, self._watch):
            if loop.running:
                loop.stop()
        self._last_transaction.close()

    def _transact(self, work: Callable[[Any], T]) -> T:
        """A one-off bookkeeping transaction (activation, deactivation),
        under the lock the polls hold: they never conflict with it."""
        with self._bookkeeping:
            return Runner(self.db, self.UUID, self.clock).transact(work)

    def _watch_database(self) -> None:
        """Poll when another process committed, not a poll interval later.

        Where the storage pushes commits (ZEO) or puts (PostgreSQL), the
        push wakes the dispatcher first (``_committed_elsewhere``); this
        look is the fallback behind it, and the only way elsewhere.  The
        newest transaction is a local read for FileStorage and ZEO and
        one short query for RelStorage (see watch.py); a change since the
        last look, ours or another process's, means a put may be
        waiting.  Transactions of this process that put a job wake the
        dispatcher at once anyway.  A change may be a cancel of a job
        running here, too.
        """
        try:
            latest = self._last_transaction.latest()
        except Exception:  # a storage without it, or away: polls remain
            return
        if latest is not None and latest != self._seen_tid:
            self._seen_tid = latest
            self.wake()
        self._cancel_watch.look(latest)

    def _committed_elsewhere(self, tid: Optional[bytes]) -> None:
        """Another process committed (``tid``, when the push says which):
        poll now, in the storage's thread that tells (do little here).

        At most once per PUSH_SPACING, though: while other processes
        commit hundreds of times a second (their dispatchers' own work),
        a poll for each would cost more than it finds.  A commit pushed
        meanwhile gets one poll at the end of the spacing.  A commit
        pushed with its ``tid`` is marked seen, so that the watch of the
        last transaction does not poll for it again.
        """
        if tid is not None:
            self._seen_tid = tid
        if self._stopping or self.reactor is None:
            return
        now = time.monotonic()
        if now >= self._push_quiet_until:
            self._push_quiet_until = now + PUSH_SPACING
            self.wake()
        elif not self._push_deferred:
            self._push_deferred = True
            self.reactor.callFromThread(
                self._later, self._push_quiet_until - now,
                self._deferred_push)

    def _deferred_push(self) -> None:
        self._push_deferred = False
        self._push_quiet_until = time.monotonic() + PUSH_SPACING
        self._poll()

    def _later(self, seconds: float, call: Callable[..., Any],
               *args: Any) -> Any:
        """``call(*args)`` on the reactor thread in ``seconds``."""
        return self.reactor.callLater(seconds, call, *args)

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
                if self.pushed is not None:
                    self.pushed.prefetch()
                outcome = self._poll_once()
            if outcome is not None:
                self._hand_over(outcome)
        except Exception as exc:
            log.exception('dispatcher %s: poll failed', self.UUID)
            self.poller.abort()
            if retry.is_disconnected(exc):
                self.report_storage(exc)

    def _poll_once(self) -> Optional[Outcome]:
        """One poll (the caller holds the bookkeeping lock), then what it
        asks for: a retry, or a wake-up when something is due; None when
        it conflicted."""
        outcome = self.poller.poll_once()
        if outcome is None:
            self.reactor.callLater(CONFLICT_RETRY, self._poll)
            return None
        if outcome.shift and self.activated is not None:
            self.activated += outcome.shift
        self._wake_at(outcome)
        return outcome

    def _hand_over(self, outcome: Outcome) -> None:
        """Give the poll's claimed jobs to the executor, once the poll has
        let go of the bookkeeping lock: a group takes that lock before its
        first job, and a worker woken under it only waited.  A dispatcher
        stopping meanwhile keeps them: they stay ASSIGNED to it until its
        deactivation frees them, as jobs its workers never started."""
        with self._handing_over:
            if self._stopping:
                return
            submit = self.executor.submit
            for queue_name, agent, oid in outcome.claimed:
                submit(queue_name, agent, oid, outcome.poll_key)
        extensions.of(self.db).after_poll(self, len(outcome.claimed))

    def _wake_at(self, outcome: Outcome) -> None:
        """Poll when the next scheduled job is due, not up to a poll
        interval later."""
        if outcome.due is None:
            return
        delay = (outcome.due - outcome.now).total_seconds()
        if delay >= self.poll_interval:
            return
        call = self._due_call
        if call is not None and call.active():
            if call.getTime() <= self.reactor.seconds() + delay:
                return
            call.cancel()
        self._due_call = self.reactor.callLater(max(delay, 0), self._poll)

    # -- what other parts read (the records are the Monitor's) --------

    @property
    def polls(self) -> Polls:
        return self.monitor.polls

    @property
    def jobs(self) -> JobHistory:
        return self.monitor.jobs

    @property
    def storage_trouble(self) -> Dict[str, str]:
        return self.monitor.storage_trouble

    def report_storage(self, exc: Optional[BaseException]) -> None:
        self.monitor.report_storage(exc)

    @property
    def status(self) -> str:
        return self.monitor.status

    def getStatusInfo(self) -> dict:
        return self.monitor.getStatusInfo()

    def getJobInfo(self, oid: int, database_name: Optional[str] = None
                   ) -> dict:
        return self.monitor.getJobInfo(oid, database_name)

    def getActiveJobIds(self, queue: Optional[str] = None,
                        agent: Optional[str] = None) -> list:
        return self.monitor.getActiveJobIds(queue, agent)

    def getPollInfo(self, at: Any = None, before: Any = None
                    ) -> Optional[Poll]:
        return self.monitor.getPollInfo(at, before)

    def iterPolls(self, at: Any = None, before: Any = None, since: Any = None,
                  count: Optional[int] = None) -> Iterator[Poll]:
        return self.monitor.iterPolls(at, before, since, count)

    def getStatistics(self, at: Optional[datetime.datetime] = None,
                      before: Optional[datetime.datetime] = None,
                      since: Optional[datetime.datetime] = None,
                      queue: Optional[str] = None,
                      agent: Optional[str] = None) -> dict:
        return self.monitor.getStatistics(at, before, since, queue, agent)


__all__ = ['get', 'start', 'stop_all', 'Dispatcher', 'DispatcherOptions',
           'ENV_VAR', 'STOPPED', 'STARTING', 'RUNNING', 'STUCK']
