"""Dispatcher registrations in a queue: activation, pings, death, recovery.

Death is judged in *database time*: the timestamps of the transactions
that wrote each ping (``_p_serial``), which the storage server assigns
monotonically.  A sibling whose clock is skewed therefore cannot make a
live dispatcher look dead (zc.async compared wall clocks, and double-ran
jobs when they drifted).  The ping lives in an object of its own so that
pinging never conflicts with claims.
"""
from __future__ import annotations

import datetime
import logging
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import BTrees.OOBTree
import persistent
import zope.event
from persistent.timestamp import TimeStamp

from . import clock, lifecycle, retry
from .agent import Agent
from .interfaces import ACTIVE, DispatcherActivated, DispatcherDeactivated
from .job import Job
from .quota import check_size

log = logging.getLogger('pyramid_zcasync.events')

#: Default seconds between a dispatcher's pings.
PING_INTERVAL = datetime.timedelta(seconds=30)
#: Default silence after which siblings declare a dispatcher dead.
PING_DEATH_INTERVAL = datetime.timedelta(seconds=60)


class JobInterrupted(Exception):
    """The dispatcher running a job died or stopped before it finished."""


def database_time(obj: Any) -> Optional[datetime.datetime]:
    """When the transaction that last wrote ``obj`` committed (UTC)."""
    serial = getattr(obj, '_p_serial', None)
    if not serial or serial == b'\0' * 8:
        return None
    return datetime.datetime.fromtimestamp(TimeStamp(serial).timeTime(),
                                           clock.UTC)


class Ping(persistent.Persistent):
    """The last ping, alone in its object so it conflicts with nothing."""

    def __init__(self) -> None:
        self.value: Optional[datetime.datetime] = None

    def touch(self, now: datetime.datetime) -> None:
        self.value = now

    @property
    def when(self) -> Optional[datetime.datetime]:
        """Database time of the last ping, or the local one if unsaved."""
        return database_time(self) or self.value


class DispatcherAgent(persistent.Persistent):
    """One dispatcher's registration in one queue, and its agents."""

    def __init__(self, uuid: str,
                 ping_interval: datetime.timedelta = PING_INTERVAL,
                 ping_death_interval: datetime.timedelta = (
                     PING_DEATH_INTERVAL)):
        self.UUID = str(uuid)
        #: The DispatcherAgents holding it (see ``registrations``).
        self.parent: Any = None
        self.activated: Optional[datetime.datetime] = None
        self.ping_interval = ping_interval
        self.ping_death_interval = ping_death_interval
        self._agents = BTrees.OOBTree.OOBTree()
        self._ping = Ping()

    def __repr__(self) -> str:
        return '<DispatcherAgent %s %s>' % (
            self.UUID, 'activated' if self.activated else 'inactive')

    # -- agents -------------------------------------------------------

    def __getitem__(self, name: str) -> Agent:
        return self._agents[name]

    def get(self, name: str, default: Optional[Agent] = None
            ) -> Optional[Agent]:
        return self._agents.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents.keys())

    def __len__(self) -> int:
        return len(self._agents)

    def values(self) -> Iterable[Agent]:
        return self._agents.values()

    @property
    def registrations(self) -> 'DispatcherAgents':
        """The registrations of the queue this one belongs to."""
        return self.parent

    def add(self, agent: Agent) -> Agent:
        if agent.name in self._agents:
            raise KeyError('dispatcher %s already has an agent %r'
                           % (self.UUID, agent.name))
        agent.parent = self
        self._agents[agent.name] = agent
        return agent

    def __delitem__(self, name: str) -> None:
        agent = self._agents[name]
        if len(agent):
            raise ValueError('agent %r still has %d jobs' % (name, len(agent)))
        del self._agents[name]

    # -- life ---------------------------------------------------------

    @property
    def last_ping(self) -> Optional[datetime.datetime]:
        return self._ping.when

    def ping(self, now: Optional[datetime.datetime] = None) -> None:
        self._ping.touch(now or clock.utcnow())

    def is_dead(self, now: datetime.datetime,
                watched_since: Optional[datetime.datetime] = None) -> bool:
        """Activated, but silent for longer than ``ping_death_interval``
        at database time ``now``; silent, that is, since its last ping or
        since ``watched_since`` (when the judge itself could see the
        database again), whichever is later."""
        last = self.last_ping
        if not self.activated or last is None:
            return False
        if self._ping._p_changed:
            return False  # pinged in this very transaction (not stored yet)
        if watched_since is not None:
            last = max(last, watched_since)
        return now - last > self.ping_death_interval

    @property
    def dead(self) -> bool:
        return self.is_dead(self.parent.database_now())

    def activate(self, now: Optional[datetime.datetime] = None) -> None:
        """Mark running; the caller has made sure no live twin exists."""
        now = now or clock.utcnow()
        if self.activated:
            self.recover_jobs(reason='restarted')
        self.activated = now
        self.ping(now)
        zope.event.notify(DispatcherActivated(self.parent, self.UUID))

    def deactivate(self, reason: str = 'stopped') -> None:
        """Mark stopped and hand its unfinished jobs to their policies."""
        self.recover_jobs(reason=reason)
        self.activated = None
        zope.event.notify(DispatcherDeactivated(self.parent, self.UUID))

    def recover_jobs(self, reason: str) -> int:
        count = 0
        for agent in self._agents.values():
            for job in agent:
                recover_job(job, reason)
                count += 1
        if count:
            log.warning('dispatcher %s %s: recovered %d unfinished job(s)',
                        self.UUID, reason, count)
        return count


def recover_job(job: Job, reason: str) -> None:
    """Decide the fate of a job whose dispatcher went away: one that may
    have started is its retry policy's to requeue or fail; any other goes
    back to its queue or finishes its callbacks (lifecycle.recover)."""
    detail = 'recovered: dispatcher %s %s' % (job.assignerUUID, reason)
    if job.status != ACTIVE:
        lifecycle.recover(job, detail)
        return
    policy = job.getRetryPolicy()
    decision = retry.check_decision(policy.interrupted(), 'interrupted',
                                    policy)
    if decision is False:
        lifecycle.fail(job, JobInterrupted(
            'dispatcher %s %s while %r was running'
            % (job.assignerUUID, reason, job)))
    elif decision is True:
        lifecycle.requeue(job, detail=detail)
    elif isinstance(decision, datetime.timedelta):
        lifecycle.requeue(job, clock.utcnow() + decision, detail)
    else:
        lifecycle.requeue(job, decision, detail)


class DispatcherAgents(persistent.Persistent):
    """UUID -> DispatcherAgent for one queue (``queue.dispatchers``)."""

    #: Agent name -> size set at run time (``scale``), which every
    #: dispatcher gives its agent of that name at its next poll; a class
    #: default so that registries stored before scaling load.  Replaced,
    #: never changed in place, so that assigning it marks us changed.
    _sizes: Dict[str, int] = {}

    def __init__(self, queue: Any):
        #: The Queue (see ``queue``).
        self.parent = queue
        self._registrations = BTrees.OOBTree.OOBTree()

    @property
    def queue(self) -> Any:
        return self.parent

    def register(self, uuid: Any, **intervals: datetime.timedelta
                 ) -> DispatcherAgent:
        uuid = str(uuid)
        if uuid in self._registrations:
            raise KeyError('dispatcher %s is already registered' % uuid)
        registration = DispatcherAgent(uuid, **intervals)
        registration.parent = self
        self._registrations[uuid] = registration
        return registration

    def unregister(self, uuid: Any) -> DispatcherAgent:
        registration = self[uuid]
        if registration.activated:
            raise ValueError('dispatcher %s is active; deactivate it before '
                             'unregistering' % uuid)
        for agent in registration.values():
            if len(agent):
                raise ValueError('dispatcher %s still has jobs' % uuid)
        del self._registrations[str(uuid)]
        return registration

    def __getitem__(self, uuid: Any) -> DispatcherAgent:
        return self._registrations[str(uuid)]

    def get(self, uuid: Any, default: Optional[DispatcherAgent] = None
            ) -> Optional[DispatcherAgent]:
        return self._registrations.get(str(uuid), default)

    def __contains__(self, uuid: object) -> bool:
        return str(uuid) in self._registrations

    def __iter__(self) -> Iterator[str]:
        return iter(self._registrations.keys())

    def __len__(self) -> int:
        return len(self._registrations)

    def values(self) -> Iterable[DispatcherAgent]:
        return self._registrations.values()

    def items(self) -> Iterable[Tuple[str, DispatcherAgent]]:
        return self._registrations.items()

    # -- sizes set at run time ---------------------------------------

    def scale(self, agent_name: str, size: int) -> None:
        """Give every dispatcher's agent ``agent_name`` in this queue
        ``size`` slots, from their next poll on (dispatchers registering
        later too), whatever size their own settings ask for."""
        size = check_size(size, 'agent %r size' % agent_name)
        if self._sizes.get(agent_name) != size:
            self._sizes = {**self._sizes, agent_name: size}

    def size_of(self, agent_name: str) -> Optional[int]:
        """The size ``scale`` set for ``agent_name``, or None."""
        return self._sizes.get(agent_name)

    def scaled(self) -> Dict[str, int]:
        """Agent name -> the size ``scale`` set (a copy)."""
        return dict(self._sizes)

    def agent_names(self) -> List[str]:
        """The names of the agents of every registration, sorted."""
        return sorted({name for registration in self.values()
                       for name in registration})

    def database_now(self) -> datetime.datetime:
        """The newest transaction time this connection knows of."""
        jar = self._p_jar
        if jar is None:
            return clock.utcnow()
        # The connection's storage: RelStorage gives each connection an
        # instance of its own, which polls; the database's storage object
        # never does, so its lastTransaction() stays where it was when
        # the database opened (dead siblings were never found).  For
        # other storages both answer the same.
        storage = getattr(jar, '_storage', None)
        if storage is None:  # (not "or": a storage may have a length)
            storage = jar.db().storage
        tid = storage.lastTransaction()
        if not tid or tid == b'\0' * 8:
            return clock.utcnow()
        return datetime.datetime.fromtimestamp(TimeStamp(tid).timeTime(),
                                               clock.UTC)

    def find_dead(self, now: Optional[datetime.datetime] = None,
                  watched_since: Optional[datetime.datetime] = None) -> list:
        now = now or self.database_now()
        return [r for r in self._registrations.values()
                if r.is_dead(now, watched_since)]

    def deactivate_dead(self, now: Optional[datetime.datetime] = None,
                        exclude: Optional[str] = None,
                        watched_since: Optional[datetime.datetime] = None
                        ) -> list:
        """Deactivate every dead sibling; return their UUIDs.

        ``watched_since``: database time from which the caller has seen
        the database without a gap.  After an outage of the storage
        server every process reconnects in its own time (over ZEO,
        seconds apart): a sibling gets its whole death interval after the
        judge came back, or live dispatchers are declared dead."""
        now = now or self.database_now()
        found = []
        for registration in self.find_dead(now, watched_since):
            if registration.UUID == exclude:
                continue
            # Every figure of the judgement: a false death (a stale view
            # of the ping, a judge that was away) is read from this line.
            log.warning('dispatcher %s is dead (last ping %s, database time '
                        'now %s, watched since %s, death interval %s); '
                        'deactivating', registration.UUID,
                        registration.last_ping, now, watched_since,
                        registration.ping_death_interval)
            registration.deactivate(reason='died')
            found.append(registration.UUID)
        return found
