"""The dashboard's numbers: the cards at the top (pending, running,
completed, failed, dispatchers) and the throughput chart, read from the
agents' histories by completion time, without loading every job.  Here
they are counted and the chart's geometry is computed; the markup is in
``templates/stats.jinja2`` and ``templates/chart.jinja2``."""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Dict, List, Optional

from .. import clock
from .sections import Entries, agents

#: Minutes in the throughput chart.
THROUGHPUT_MINUTES = 15
#: Up to this many completions in the chart's window, each job is read to
#: tell failures apart; above it the chart shows totals only.
THROUGHPUT_DETAIL = 5000


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Completions per minute from ``start``; ``failed`` is None when
    there were too many to tell failures apart."""
    start: datetime.datetime
    totals: List[int]
    failed: Optional[List[int]]


def completion_micros(history: Any, since: datetime.datetime) -> List[int]:
    """When each job of an agent's history completed, at or after
    ``since`` (read from the history's keys: no job is loaded)."""
    return list(history.end_times(since))


def throughput(queues: Any, now: datetime.datetime,
               minutes: int = THROUGHPUT_MINUTES) -> Throughput:
    """Completions per minute over the last ``minutes`` minutes (the last
    one is the current, partial minute), failures apart when affordable."""
    start = now.replace(second=0, microsecond=0) - datetime.timedelta(
        minutes=minutes - 1)
    start_micros = clock.to_micros(start)
    totals = [0] * minutes
    histories = [agent.completed for _, _, agent in agents(queues)]
    for history in histories:
        for micros in completion_micros(history, start):
            index = (micros - start_micros) // 60000000
            if 0 <= index < minutes:
                totals[index] += 1
    failed: Optional[List[int]] = None
    if sum(totals) <= THROUGHPUT_DETAIL:
        failed = [0] * minutes
        for history in histories:
            # Each run that failed, at its own end: a job retried is in
            # its history once per run (as in /metrics and /jobstats).
            for micros in history.failed_end_times(start):
                index = (micros - start_micros) // 60000000
                if 0 <= index < minutes:
                    failed[index] += 1
    return Throughput(start, totals, failed)


@dataclasses.dataclass(frozen=True)
class Card:
    """A number at the top: ``suffix`` (None: none) is shown smaller."""
    kind: str
    number: Any
    suffix: Optional[str]
    label: str


def stat_cards(queues: Any, regs: Dict[str, Entries], chart: Throughput
               ) -> List[Card]:
    pending = sum(len(queue) for queue in queues.values())
    running = sum(len(agent) for _, _, agent in agents(queues))
    capacity = sum(agent.size for _, registration, agent in agents(queues)
                   if registration.activated)
    dead = alive = 0
    for uuid, entries in regs.items():
        registration = entries[0][1]
        if registration.activated is None:
            continue
        if any(r.dead for _, r in entries):
            dead += 1
        else:
            alive += 1
    done = sum(chart.totals)
    failed = sum(chart.failed) if chart.failed is not None else None
    return [
        Card('', pending, None, 'pending jobs'),
        Card('', running, ' / %d' % capacity, 'running / slots'),
        Card('ok', done, None, 'completed, %d min' % THROUGHPUT_MINUTES),
        Card('bad' if failed else '', '\u2014' if failed is None else failed,
             None, 'failed, %d min' % THROUGHPUT_MINUTES),
        Card('bad' if dead else '', alive,
             ' + %d dead' % dead if dead else '', 'dispatchers alive'),
    ]


@dataclasses.dataclass(frozen=True)
class Bar:
    """One minute of the chart: its slot, its bars (heights 0: none) and
    its tick label (None: none)."""
    x: float
    width: float
    title: str
    total: float
    failed: float
    tick: Optional[str]


@dataclasses.dataclass(frozen=True)
class Chart:
    """The throughput chart's geometry, in the SVG's units."""
    minutes: int
    width: int
    height: int
    left: int
    top: int
    plot_height: int
    grid: List[Any]  # (y, label) of the dashed lines
    bars: List[Bar]
    peak: int
    detailed: bool  # failures told apart

    @property
    def base(self) -> int:
        return self.top + self.plot_height


def chart(data: Throughput) -> Chart:
    totals, failed = data.totals, data.failed
    minutes = len(totals)
    width, height, left, bottom, top = 420, 150, 30, 20, 10
    plot_w, plot_h = width - left - 6, height - bottom - top
    peak = max(totals) if totals else 0
    scale_max = _nice_ceiling(peak)
    slot = plot_w / minutes
    bar_w = slot * 0.72
    grid = [(top + plot_h * (1 - fraction),
             _short_number(scale_max * fraction)) for fraction in (0.5, 1.0)]
    bars = []
    for index, total in enumerate(totals):
        minute = data.start + datetime.timedelta(minutes=index)
        bad = failed[index] if failed is not None else 0
        label = '%s UTC: %d completed%s' % (
            minute.strftime('%H:%M'), total,
            ', %d failed' % bad if failed is not None else '')
        back = minutes - 1 - index
        tick = None
        if back % 5 == 0:
            tick = 'now' if back == 0 else '\u2212%d min' % back
        bars.append(Bar(
            left + slot * index + (slot - bar_w) / 2, bar_w, label,
            plot_h * total / scale_max if scale_max else 0,
            plot_h * bad / scale_max if scale_max else 0, tick))
    return Chart(minutes, width, height, left, top, plot_h, grid, bars, peak,
                 failed is not None)


def _nice_ceiling(value: float) -> int:
    if value <= 4:
        return 4
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return int(step * magnitude)
    return int(10 * magnitude)


def _short_number(value: float) -> str:
    if value >= 1000:
        return '%gk' % (value / 1000)
    return '%g' % value
