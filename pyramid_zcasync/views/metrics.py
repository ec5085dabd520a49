"""``/metrics``: Prometheus text exposition, protected like every admin view.

Each app gets its own :class:`prometheus_client.CollectorRegistry` (the
global default one would mix two apps in one process, and tests), and one
collector: queue contents read at scrape time from a fresh connection on
the queue database (cluster-wide: every dispatcher's agents), and the
counters of this process's runs, which :class:`JobTotals`, an extension,
counts as each run is reported.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Iterator, Optional, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client import generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from pyramid.response import Response

from .. import dispatcher as dispatcher_module
from .. import extensions, transact
from ..config import queue_database
from ..interfaces import ACTIVE, ASSIGNED, CALLBACKS, KEY
from . import add_admin_view

log = logging.getLogger('pyramid_zcasync.trace')

#: Pick-up latency bucket bounds in seconds: 1 ms .. 10 s.
PICKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                  0.5, 1.0, 2.5, 5.0, 10.0)
#: Job status -> ``state`` label of the jobs held by agents.
AGENT_STATES = {ASSIGNED: 'assigned', ACTIVE: 'active',
                CALLBACKS: 'callbacks'}
STATES = ('pending',) + tuple(AGENT_STATES.values())


class JobTotals(extensions.Extension):
    """Running totals of the runs this process's dispatcher finished, per
    queue: an extension (extensions.py) counting each run as it is
    reported, so a scrape reads counters, never the database or the
    dispatcher's bounded history, and counts each run once however
    often it is scraped.  A job retried counts each of its runs, as in
    the dashboard and /jobstats.
    """

    def __init__(self, buckets: Tuple[float, ...] = PICKUP_BUCKETS):
        self.buckets = buckets
        self.completed: Dict[str, int] = {}
        self.failed: Dict[str, int] = {}
        #: queue -> [count per bucket (not cumulative) + overflow, sum]
        self.pickup: Dict[str, list] = {}
        self._lock = threading.Lock()

    def after_run(self, run: extensions.RunReport) -> None:
        with self._lock:
            self._count(run.queue, run.failed, run.pickup)

    def _count(self, queue: str, failed: bool, pickup: Optional[float]
               ) -> None:
        self.completed[queue] = self.completed.get(queue, 0) + 1
        if failed:
            self.failed[queue] = self.failed.get(queue, 0) + 1
        if pickup is None:
            return  # e.g. a crashed worker: no start time was recorded
        counts = self.pickup.setdefault(
            queue, [[0] * (len(self.buckets) + 1), 0.0])
        index = next((i for i, bound in enumerate(self.buckets)
                      if pickup <= bound), len(self.buckets))
        counts[0][index] += 1
        counts[1] += pickup

    def families(self) -> Iterator[Metric]:
        with self._lock:
            completed = CounterMetricFamily(
                'zcasync_jobs_completed',
                'Jobs this process\'s dispatcher finished (succeeded or '
                'failed), by queue.', labels=['queue'])
            failed = CounterMetricFamily(
                'zcasync_jobs_failed',
                'Jobs this process\'s dispatcher finished with a failure, '
                'by queue (a subset of zcasync_jobs_completed_total).',
                labels=['queue'])
            for queue, count in sorted(self.completed.items()):
                completed.add_metric([queue], count)
                failed.add_metric([queue], self.failed.get(queue, 0))
            pickup = HistogramMetricFamily(
                'zcasync_job_pickup_seconds',
                'Seconds from when a job was due (put, or its begin_after) '
                'until this process\'s dispatcher started it, by queue.',
                labels=['queue'])
            for queue, (counts, total) in sorted(self.pickup.items()):
                cumulative, buckets = 0, []
                for bound, count in zip(self.buckets + (float('inf'),),
                                        counts):
                    cumulative += count
                    buckets.append((_bound(bound), cumulative))
                pickup.add_metric([queue], buckets, total)
        return iter([completed, failed, pickup])


def _bound(bound: float) -> str:
    return '+Inf' if bound == float('inf') else repr(float(bound))


class ZcasyncCollector:
    """Yields every ``zcasync_`` metric of one app: the queues' contents
    read at scrape time, the counters from ``totals``."""

    def __init__(self, registry: Any, totals: JobTotals) -> None:
        self.registry = registry  # the Pyramid registry, not Prometheus'
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        yield from self._database_families()
        running = getattr(self.registry, 'zcasync_dispatcher', None)
        if running is not None:
            up = GaugeMetricFamily(
                'zcasync_dispatcher_up',
                '1 when this process\'s dispatcher is RUNNING (polling on '
                'time), else 0; absent when this process runs none.',
                labels=['uuid'])
            up.add_metric([running.UUID],
                          int(running.status == dispatcher_module.RUNNING))
            yield up
        yield from self.totals.families()

    def _database_families(self) -> Iterator[Metric]:
        database_up = GaugeMetricFamily(
            'zcasync_database_up',
            '1 when the queue database answered this scrape, else 0 (and '
            'the queue metrics are missing).')
        try:
            counts, agent_sizes = read_queues(queue_database(self.registry))
        except Exception:
            log.exception('metrics: reading the queues failed')
            database_up.add_metric([], 0)
            yield database_up
            return
        database_up.add_metric([], 1)
        yield database_up
        jobs = GaugeMetricFamily(
            'zcasync_jobs',
            'Jobs in the database by queue and state: pending in the queue '
            '(due or scheduled), or assigned/active/callbacks in the agents '
            'of any dispatcher.', labels=['queue', 'state'])
        pending = GaugeMetricFamily(
            'zcasync_queue_pending',
            'Jobs waiting in each queue, including those scheduled for '
            'later (begin_after in the future).', labels=['queue'])
        paused = GaugeMetricFamily(
            'zcasync_queue_paused',
            '1 while a queue is paused (no dispatcher claims its jobs), '
            'else 0.', labels=['queue'])
        sizes = GaugeMetricFamily(
            'zcasync_agent_size',
            'Slots of each agent of a queue: the size set at run time '
            '(pzcasync scale), else the largest any dispatcher has.',
            labels=['queue', 'agent'])
        for queue, by_state in sorted(counts.items()):
            for state in STATES:
                jobs.add_metric([queue, state], by_state[state])
            pending.add_metric([queue], by_state['pending'])
            paused.add_metric([queue], by_state['paused'])
        for (queue, agent), size in sorted(agent_sizes.items()):
            sizes.add_metric([queue, agent], size)
        yield jobs
        yield pending
        yield paused
        yield sizes


#: A queue's name -> its counts by state, and ``paused`` (1 or 0).
Counts = Dict[str, Dict[str, int]]
#: (queue name, agent name) -> the agent's size.
AgentSizes = Dict[Tuple[str, str], int]


def read_queue_counts(db: Any) -> Counts:
    """``{queue: {state: count}}`` read in a connection of its own, so a
    scrape never joins (or conflicts with) the request's transaction."""
    return read_queues(db)[0]


def read_queues(db: Any) -> Tuple[Counts, AgentSizes]:
    """The counts, and the agents' sizes, in one read."""
    return transact.read(db, _count_states)


def _count_states(connection: Any) -> Tuple[Counts, AgentSizes]:
    counts: Counts = {}
    sizes: AgentSizes = {}
    queues = connection.root().get(KEY) or {}
    for name, queue in queues.items():
        by_state = counts[name] = dict.fromkeys(STATES, 0)
        by_state['pending'] = len(queue)
        by_state['paused'] = int(queue.paused)
        for registration in queue.dispatchers.values():
            for agent in registration.values():
                _note_size(sizes, queue, name, agent)
                for job in agent:
                    state = AGENT_STATES.get(job.status)
                    if state is not None:
                        by_state[state] += 1
    return counts, sizes


def _note_size(sizes: AgentSizes, queue: Any, name: str, agent: Any) -> None:
    """The size ``scale`` set wins: dispatchers take it at their next
    poll, and stopped ones keep the size they stopped with."""
    scaled = queue.dispatchers.size_of(agent.name)
    key = (name, agent.name)
    sizes[key] = scaled if scaled is not None else max(
        sizes.get(key, 0), agent.size)


def metrics_registry(registry: Any) -> CollectorRegistry:
    """This app's Prometheus registry (made by ``includeme``)."""
    return registry.zcasync_metrics


def metrics(request: Any) -> Response:
    """The exposition; a Response, so the admin JSON renderer is skipped."""
    response = Response(generate_latest(metrics_registry(request.registry)))
    response.headers['Content-Type'] = CONTENT_TYPE_LATEST
    response.cache_control = 'no-store'
    return response


def includeme(config: Any) -> None:
    totals = JobTotals()
    extensions.add(queue_database(config.registry), totals)
    prometheus = CollectorRegistry(auto_describe=False)
    prometheus.register(ZcasyncCollector(config.registry, totals))
    config.registry.zcasync_metrics = prometheus
    add_admin_view(config, metrics, 'metrics', request_method='GET')
