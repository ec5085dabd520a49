"""A dispatcher's memory of its polls and jobs: bounded, newest first.

Kept in process memory (not ZODB): it is what this dispatcher saw, for
the monitor views, and it must not grow with uptime.
"""
from __future__ import annotations

import collections
import datetime
import threading
from typing import Any, Iterator, Optional

from . import clock

#: Polls remembered (at 5 s each, a bit over an hour).
POLL_HISTORY = 800
#: Jobs remembered by oid.
JOB_HISTORY = 10000
#: Earlier runs of one job remembered (a job retried runs again).
EARLIER_RUNS = 10
#: What is kept of a finished run when its job is claimed again.
RUN_KEYS = ('started', 'completed', 'failed', 'pickup', 'runtime', 'status',
            'result')


class Poll(dict):
    """``{queue name: {agent name: info}}``, plus when and which."""

    def __init__(self, key: int, utc_timestamp: datetime.datetime,
                 data: Optional[dict] = None):
        super().__init__(data or {})
        self.key = key
        self.utc_timestamp = utc_timestamp


class Polls:
    """Bounded history of polls; ``first()`` is the newest."""

    def __init__(self, size: int = POLL_HISTORY):
        self._polls: collections.deque = collections.deque(maxlen=size)
        #: Polls ever made, so waiting for "the next poll" always works.
        self.total = 0
        self._lock = threading.Lock()

    def add(self, poll: Poll) -> None:
        with self._lock:
            self._polls.appendleft(poll)
            self.total += 1

    def first(self) -> Optional[Poll]:
        with self._lock:
            return self._polls[0] if self._polls else None

    def __len__(self) -> int:
        return len(self._polls)

    def __iter__(self) -> Iterator[Poll]:
        with self._lock:
            return iter(list(self._polls))

    def select(self, at: Optional[datetime.datetime] = None,
               before: Optional[datetime.datetime] = None,
               since: Optional[datetime.datetime] = None,
               count: Optional[int] = None) -> list:
        """Polls newest first, ``at``/``before`` an upper time bound
        (inclusive/exclusive), ``since`` a lower one."""
        selected = []
        for poll in self:
            when = poll.utc_timestamp
            if at is not None and when > at:
                continue
            if before is not None and when >= before:
                continue
            if since is not None and when < since:
                break
            selected.append(poll)
            if count is not None and len(selected) >= count:
                break
        return selected


class JobHistory:
    """What this dispatcher did with each job, by job id, bounded."""

    def __init__(self, size: int = JOB_HISTORY):
        self.size = size
        self._jobs: collections.OrderedDict = collections.OrderedDict()
        #: Claimed and not completed: what polls ask for, kept apart so
        #: they need not walk the whole history.
        self._open: dict = {}
        self._lock = threading.Lock()

    def record(self, job_id: tuple, **info: Any) -> dict:
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                entry = self._jobs[job_id] = {}
                while len(self._jobs) > self.size:
                    self._open.pop(self._jobs.popitem(last=False)[0], None)
            if 'claimed' in info and 'completed' in entry:
                _keep_earlier_run(entry)  # claimed again: a retry
            entry.update(info)
            if 'completed' in info:
                self._open.pop(job_id, None)
            elif 'claimed' in info:
                self._open[job_id] = entry
            return dict(entry)

    def get(self, job_id: tuple) -> Optional[dict]:
        with self._lock:
            entry = self._jobs.get(job_id)
            return None if entry is None else dict(entry)

    def __len__(self) -> int:
        return len(self._jobs)

    def values(self) -> list:
        with self._lock:
            return [dict(entry) for entry in self._jobs.values()]

    def active_ids(self, queue: Optional[str] = None,
                   agent: Optional[str] = None, started: bool = True
                   ) -> list:
        """Ids of the jobs claimed and not completed (``started``: and
        started), oldest claim first."""
        with self._lock:
            return [job_id for job_id, e in self._open.items()
                    if (e.get('started') or not started)
                    and (queue is None or e.get('queue') == queue)
                    and (agent is None or e.get('agent') == agent)]


def _keep_earlier_run(entry: dict) -> None:
    """Move the finished run out of ``entry`` before the next begins: a
    run counts once in the statistics, as in /metrics and the chart."""
    run = {key: entry.pop(key) for key in RUN_KEYS if key in entry}
    earlier = entry.setdefault('earlier runs', [])
    earlier.append(run)
    del earlier[:-EARLIER_RUNS]


def runs(entry: dict) -> list:
    """Each run of an entry's job that this dispatcher saw, oldest first
    (the entry itself is the latest)."""
    return entry.get('earlier runs', []) + [entry]


def statistics(entries: list, since: datetime.datetime,
               until: datetime.datetime) -> dict:
    """Counts and durations of the runs that started in [since, until];
    a job retried counts once per run."""
    started = [e for entry in entries for e in runs(entry)
               if e.get('started') and since <= e['started'] <= until]
    done = [e for e in started if e.get('completed')]
    succeeded = [e for e in done if not e.get('failed')]
    failed = [e for e in done if e.get('failed')]
    stats = {
        'statistics start': since,
        'statistics end': until,
        'started': len(started),
        'successful': len(succeeded),
        'failed': len(failed),
        'unknown': len(started) - len(done),
    }
    for name, group in (('successful', succeeded), ('failed', failed)):
        durations = sorted(_duration(e) for e in group)
        if durations:
            stats['shortest ' + name] = durations[0]
            stats['longest ' + name] = durations[-1]
            stats['average ' + name] = (sum(durations, datetime.timedelta())
                                        / len(durations))
    return stats


def _duration(entry: dict) -> datetime.timedelta:
    return entry['completed'] - entry['started']


def now() -> datetime.datetime:
    return clock.utcnow()
