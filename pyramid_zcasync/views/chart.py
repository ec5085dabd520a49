"""The dashboard's numbers: the cards at the top (pending, running,
completed, failed, dispatchers) and the throughput chart, read from the
agents' histories by completion time, without loading every job."""
from __future__ import annotations

import datetime
from typing import Optional

from .. import clock
from .html import e
from .sections import agents

#: Minutes in the throughput chart.
THROUGHPUT_MINUTES = 15
#: Up to this many completions in the chart's window, each job is read to
#: tell failures apart; above it the chart shows totals only.
THROUGHPUT_DETAIL = 5000


def completion_micros(history, since: datetime.datetime) -> list:
    """When each job of an agent's history completed, at or after
    ``since`` (read from the history's keys: no job is loaded)."""
    return history.end_times(since)


def throughput(queues, now: datetime.datetime,
               minutes: int = THROUGHPUT_MINUTES) -> dict:
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
    failed: Optional[list] = None
    if sum(totals) <= THROUGHPUT_DETAIL:
        failed = [0] * minutes
        for history in histories:
            # Each run that failed, at its own end: a job retried is in
            # its history once per run (as in /metrics and /jobstats).
            for micros in history.failed_end_times(start):
                index = (micros - start_micros) // 60000000
                if 0 <= index < minutes:
                    failed[index] += 1
    return {'start': start, 'totals': totals, 'failed': failed}


def stats_html(queues, regs, chart, now) -> str:
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
    done = sum(chart['totals'])
    failed = sum(chart['failed']) if chart['failed'] is not None else None
    cards = [
        ('', pending, 'pending jobs'),
        ('', '%d<span class="muted" style="font-size:15px"> / %d</span>'
         % (running, capacity), 'running / slots'),
        ('ok', done, 'completed, %d min' % THROUGHPUT_MINUTES),
        ('bad' if failed else '', '\u2014' if failed is None else failed,
         'failed, %d min' % THROUGHPUT_MINUTES),
        ('bad' if dead else '', '%d<span class="muted" style="font-size:15px">'
         '%s</span>' % (alive, ' + %d dead' % dead if dead else ''),
         'dispatchers alive'),
    ]
    return '<div class="stats">%s</div>' % ''.join(
        '<div class="stat %s"><div class="n">%s</div><div class="l">%s</div>'
        '</div>' % (kind, value, e(label)) for kind, value, label in cards)


def chart_html(chart: dict) -> str:
    totals, failed = chart['totals'], chart['failed']
    minutes = len(totals)
    width, height, left, bottom, top = 420, 150, 30, 20, 10
    plot_w, plot_h = width - left - 6, height - bottom - top
    peak = max(totals) if totals else 0
    scale_max = _nice_ceiling(peak)
    slot = plot_w / minutes
    bar_w = slot * 0.72
    parts = ['<svg viewBox="0 0 %d %d" role="img" aria-label="Jobs completed '
             'per minute over the last %d minutes">' % (width, height,
                                                        minutes)]
    for fraction in (0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        parts.append('<line class="grid-line" x1="%d" x2="%d" y1="%.1f" '
                     'y2="%.1f"/>' % (left, width - 6, y, y))
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>'
                     % (left - 5, y + 3.5, _short_number(
                         scale_max * fraction)))
    base = top + plot_h
    parts.append('<line class="axis" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>'
                 % (left, width - 6, base, base))
    parts.append('<text x="%d" y="%.1f" text-anchor="end">0</text>'
                 % (left - 5, base + 3.5))
    for index, total in enumerate(totals):
        minute = chart['start'] + datetime.timedelta(minutes=index)
        x = left + slot * index + (slot - bar_w) / 2
        bad = failed[index] if failed is not None else 0
        label = '%s UTC: %d completed%s' % (
            minute.strftime('%H:%M'), total,
            ', %d failed' % bad if failed is not None else '')
        h_total = plot_h * total / scale_max if scale_max else 0
        h_bad = plot_h * bad / scale_max if scale_max else 0
        parts.append('<g><title>%s</title>' % e(label))
        parts.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" '
                     'fill="transparent"/>' % (x, top, bar_w, plot_h))
        if total:
            parts.append('<rect class="bar" x="%.1f" y="%.1f" width="%.1f" '
                         'height="%.1f" rx="2"/>'
                         % (x, base - h_total, bar_w, max(h_total, 1.5)))
        if bad:
            parts.append('<rect class="bar failed" x="%.1f" y="%.1f" '
                         'width="%.1f" height="%.1f" rx="2"/>'
                         % (x, base - h_bad, bar_w, max(h_bad, 1.5)))
        parts.append('</g>')
        back = minutes - 1 - index
        if back % 5 == 0:
            text = 'now' if back == 0 else '\u2212%d min' % back
            parts.append('<text x="%.1f" y="%d" text-anchor="middle">%s'
                         '</text>' % (x + bar_w / 2, height - 5, text))
    parts.append('</svg>')
    legend = ['<span><i></i>completed</span>']
    if failed is not None:
        legend.append('<span><i class="failed"></i>of which failed</span>')
    else:
        legend.append('<span>(too many to tell failures apart)</span>')
    legend.append('<span>peak %d/min</span>' % peak)
    return ('<section class="card chart"><h2>Throughput <span class="count">'
            'jobs per minute, last %d minutes</span></h2>%s'
            '<div class="legend">%s</div></section>'
            % (minutes, ''.join(parts), ''.join(legend)))


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
