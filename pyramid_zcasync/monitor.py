"""What a dispatcher tells about itself: status, polls, jobs, statistics.

The methods of zc.async's dispatcher monitor, kept apart from the
dispatcher's work; the admin views and the tests read them.
"""
from __future__ import annotations

import datetime
import threading
from typing import Dict, Optional

from .history import Poll, statistics

STOPPED = 'STOPPED'
STARTING = 'STARTING'
RUNNING = 'RUNNING'
STUCK = 'STUCK'


class Monitor:
    """Mixed into Dispatcher; reads its ``activated``, ``polls``,
    ``jobs``, ``clock``, ``poll_interval``, ``UUID`` and ``db``."""

    storage_trouble: Dict[str, str]

    def report_storage(self, exc: Optional[BaseException]) -> None:
        """What a worker (or the poll) found committing: ``exc`` when the
        storage could not (server away, disk full), None when it did;
        /health says down while any worker's or the poll's last commit
        could not."""
        who = threading.current_thread().name
        if exc is None:
            self.storage_trouble.pop(who, None)
        else:
            self.storage_trouble[who] = str(exc)

    @property
    def status(self) -> str:
        if self.activated is None:
            return STOPPED
        last = self.polls.first()
        if last is None:
            return STARTING
        limit = datetime.timedelta(seconds=self.poll_interval * 2 + 5)
        return STUCK if self.clock.utcnow() - last.utc_timestamp > limit \
            else RUNNING

    def getStatusInfo(self) -> dict:
        now = self.clock.utcnow()
        last = self.polls.first()
        return {
            'poll interval': datetime.timedelta(seconds=self.poll_interval),
            'status': self.status,
            'time since last poll': (now - last.utc_timestamp
                                     if last is not None else None),
            'uptime': now - self.activated if self.activated else None,
            'uuid': self.UUID,
        }

    def getJobInfo(self, oid: int, database_name: Optional[str] = None
                   ) -> dict:
        job_id = (oid, database_name or self.db.database_name)
        info = self.jobs.get(job_id)
        if info is None:
            raise ValueError('job %r is not in the history of dispatcher %s'
                             % (job_id, self.UUID))
        return info

    def getActiveJobIds(self, queue: Optional[str] = None,
                        agent: Optional[str] = None) -> list:
        return self.jobs.active_ids(queue, agent)

    def getPollInfo(self, at=None, before=None) -> Optional[Poll]:
        found = self.polls.select(at=at, before=before, count=1)
        return found[0] if found else None

    def iterPolls(self, at=None, before=None, since=None, count=None):
        return iter(self.polls.select(at, before, since, count))

    def getStatistics(self, at=None, before=None, since=None,
                      queue=None, agent=None) -> dict:
        until = at or (before - datetime.timedelta(microseconds=1)
                       if before else self.clock.utcnow())
        since = since or (self.activated or until)
        entries = [e for e in self.jobs.values()
                   if (queue is None or e.get('queue') == queue)
                   and (agent is None or e.get('agent') == agent)]
        return statistics(entries, since, until)
