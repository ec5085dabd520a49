"""The dashboard's sections: what it reads of the model, and how it
shows queues, dispatchers, periodic jobs, failures and throughput."""
from __future__ import annotations

import datetime
import itertools
from typing import Iterable, Optional

from .. import clock
from .. import dispatcher as dispatcher_module
from .. import periodic
from ..failure import Failure
from ..interfaces import CALLBACKS, COMPLETED
from . import route_name
from .html import (Forms, ago, call_text, clip, e, is_failed, job_ref,
                   oid_of, pill, queue_label, short_uuid, status_name, took,
                   when_html)

#: Pending jobs shown per queue.
NEXT_PENDING = 5
#: Completed and failed jobs shown.
RECENT_COMPLETED = 10
RECENT_FAILED = 10
#: Newest history entries per agent searched for failures.
FAILED_SCAN = 300
#: Minutes in the throughput chart.
THROUGHPUT_MINUTES = 15
#: Up to this many completions in the chart's window, each job is read to
#: tell failures apart; above it the chart shows totals only.
THROUGHPUT_DETAIL = 5000
#: Seconds between refreshes.
REFRESH_SECONDS = 5


# -- reading the model ----------------------------------------------------

def registrations(queues) -> dict:
    """uuid -> [(queue name, registration)], over every queue."""
    found: dict = {}
    for name, queue in sorted(queues.items()):
        for uuid, registration in queue.dispatchers.items():
            found.setdefault(uuid, []).append((name, registration))
    return found


def agents(queues) -> Iterable:
    for name, queue in sorted(queues.items()):
        for registration in queue.dispatchers.values():
            for agent in registration.values():
                yield name, registration, agent


def recent_jobs(queues, count: int, scan: int, wanted) -> list:
    """The newest ``count`` jobs of the agents' histories that ``wanted``
    accepts, newest first, each once (a retried job is in a history
    twice), looking at ``scan`` entries per agent at most."""
    candidates = []
    for name, registration, agent in agents(queues):
        for job in itertools.islice(iter(agent.completed), scan):
            end = job.active_end
            if end is not None and wanted(job):
                candidates.append((end, oid_of(job), name, job))
    candidates.sort(key=lambda item: item[0], reverse=True)
    seen, found = set(), []
    for end, oid, name, job in candidates:
        if oid in seen:
            continue
        seen.add(oid)
        found.append((name, job))
        if len(found) == count:
            break
    return found


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
            for job in history.since(start):
                end = job.active_end
                if end is None or not isinstance(job.result, Failure):
                    continue
                index = (clock.to_micros(end) - start_micros) // 60000000
                if 0 <= index < minutes:
                    failed[index] += 1
        # A retried job is in its history once per run, but only its
        # last result is kept: never more failures than completions.
        failed = [min(f, t) for f, t in zip(failed, totals)]
    return {'start': start, 'totals': totals, 'failed': failed}


# -- sections -------------------------------------------------------------

def me_html(request, now: datetime.datetime) -> str:
    running = getattr(request.registry, 'zcasync_dispatcher', None) \
        or dispatcher_module.get()
    if running is None:
        return ('<span>This process runs no dispatcher</span>'
                '<span class="muted">(zcasync.dispatcher is off)</span>')
    info = running.getStatusInfo()
    status = info['status']
    kind = {'RUNNING': 'ok', 'STOPPED': 'bad', 'STUCK': 'bad'}.get(
        status, 'warn')
    parts = ['<span>This process&rsquo;s dispatcher %s</span>'
             % pill(status, kind),
             '<span class="mono" title="%s">%s</span>'
             % (e(info['uuid']), e(short_uuid(info['uuid'])))]
    if info['uptime'] is not None:
        parts.append('<span>up <strong>%s</strong></span>'
                     % e(took(info['uptime'])))
    since_poll = info['time since last poll']
    parts.append('<span>last poll <strong>%s</strong></span>'
                 % e('never' if since_poll is None
                     else took(since_poll) + ' ago'))
    parts.append('<span>polls every %s</span>'
                 % e(took(info['poll interval'])))
    if running.activated is not None:
        stats = running.getStatistics()
        parts.append('<span><strong>%d</strong> ok, <strong>%d</strong> '
                     'failed since start</span>'
                     % (stats['successful'], stats['failed']))
    return ''.join(parts)


def flash_html(request) -> str:
    params = request.params
    done = params.get('done')
    job = params.get('job', '')
    try:
        job_text = '0x%x' % int(job)
    except ValueError:
        job_text = ''
    messages = {
        'cancelled': 'Job %s was cancelled: it left its queue and will '
                     'not run.' % job_text,
        'retried': 'Job %s was queued again; it runs in its turn.'
                   % job_text,
    }
    if done == 'requeued':
        try:
            count = int(params.get('count', '0'))
        except ValueError:
            count = 0
        message = ('Dispatcher %s was deactivated; %d unfinished job%s '
                   'handed to %s retry polic%s.'
                   % (clip(params.get('uuid', ''), 40), count,
                      '' if count == 1 else 's', 'its' if count == 1
                      else 'their', 'y' if count == 1 else 'ies'))
    elif done in messages:
        message = messages[done]
    else:
        return ''
    return ('<div class="flash ok" role="status"><span>%s</span>'
            '<a href="%s">dismiss</a></div>'
            % (e(message), e(request.route_path(route_name('dashboard')))))


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


def queues_html(queues, forms: Forms, now) -> str:
    blocks = []
    for name, queue in sorted(queues.items()):
        size = len(queue)
        rows = []
        for job in itertools.islice(iter(queue), NEXT_PENDING):
            oid = oid_of(job)
            try:
                call = e(call_text(job))
                due = when_html(job.begin_after, now)
            except Exception as exc:  # an unreadable job: say so
                call = '<span class="err">unreadable: %s</span>' % e(exc)
                due = ''
            rows.append(
                '<tr><td>%s</td><td class="call">%s</td><td>%s</td>'
                '<td class="act">%s</td></tr>'
                % (job_ref(job), call, due, forms.button(
                    'cancel', {'job': oid}, 'Cancel', 'danger',
                    confirm='Cancel job 0x%x? It will not run.' % oid,
                    busy='Cancelling\u2026')))
        title = ('<h3>%s %s</h3>'
                 % (queue_label(name),
                    pill('%d pending' % size, 'warn' if size else 'idle')))
        if rows:
            table = ('<table><thead><tr><th>Job</th><th>Call</th>'
                     '<th class="nowrap">Due</th><th></th></tr></thead>'
                     '<tbody>%s</tbody></table>' % ''.join(rows))
            if size > len(rows):
                table += ('<div class="more">and %d more</div>'
                          % (size - len(rows)))
        else:
            table = '<div class="empty">Nothing pending.</div>'
        blocks.append(title + table)
    return ('<section class="card"><h2>Queues <span class="count">%d</span>'
            '</h2>%s</section>' % (len(queues), ''.join(blocks)))


def dispatchers_html(queues, regs: dict, forms: Forms, request, now) -> str:
    running = getattr(request.registry, 'zcasync_dispatcher', None)
    mine = running.UUID if running is not None else None
    db_now = None
    for queue in queues.values():
        db_now = queue.dispatchers.database_now()
        break
    blocks = []

    def order(item):
        uuid, entries = item
        registration = entries[0][1]
        return (uuid != mine, registration.activated is None, uuid)
    for uuid, entries in sorted(regs.items(), key=order):
        first = entries[0][1]
        activated = first.activated
        dead = activated is not None and any(
            r.is_dead(db_now) for _, r in entries)
        last_ping = max((r.last_ping for _, r in entries
                         if r.last_ping is not None), default=None)
        if activated is None:
            state = pill('stopped', 'idle')
        elif dead:
            state = pill('dead', 'bad')
        else:
            state = pill('alive', 'ok')
        head = ['<span class="mono" title="dispatcher UUID">%s</span>'
                % e(uuid), state]
        if uuid == mine:
            head.append('<span class="tag">this process</span>')
        if dead:
            head.append(forms.button(
                'requeue', {'uuid': uuid}, 'Re-queue its jobs', 'primary',
                confirm='Deactivate dispatcher %s and hand its jobs back to '
                        'their queues?' % uuid, busy='Re-queuing\u2026'))
        facts = ['activated %s' % (when_html(activated, now)
                                  if activated else '<span>\u2014</span>'),
                 'last ping %s' % when_html(last_ping, now),
                 'declared dead after %s silent'
                 % e(took(first.ping_death_interval))]
        rows = []
        for queue_name, registration in entries:
            for agent in registration.values():
                active = list(agent)
                size = agent.size
                share = min(len(active) / size, 1) if size else 0
                meter = ('<span class="meter%s"><span style="width:%d%%">'
                         '</span></span>%d / %d'
                         % (' full' if size and len(active) >= size else '',
                            round(share * 100), len(active), size))
                jobs = []
                for job in active:
                    try:
                        jobs.append('<div>%s <span class="call">%s</span> %s'
                                    ' <span class="muted">%s</span>'
                                    '</div>' % (
                                        job_ref(job), e(call_text(job)),
                                        pill(status_name(job.status), 'warn'),
                                        e('started ' + ago(job.active_start,
                                                           now))
                                        if job.active_start else
                                        'not started'))
                    except Exception as exc:
                        jobs.append('<div>%s <span class="err">unreadable: '
                                    '%s</span></div>' % (job_ref(job),
                                                         e(exc)))
                rows.append('<tr><td>%s</td><td>%s</td><td class="nowrap">'
                            '%s</td><td>%s</td></tr>' % (
                                queue_label(queue_name), e(agent.name),
                                meter, ''.join(jobs) or
                                '<span class="muted">idle</span>'))
        table = ('<table><thead><tr><th>Queue</th><th>Agent</th>'
                 '<th>Busy</th><th>Active jobs</th></tr></thead><tbody>%s'
                 '</tbody></table>' % ''.join(rows)) if rows else \
            '<div class="empty">No agents.</div>'
        blocks.append('<div class="dispatcher%s"><div class="head">%s</div>'
                      '<div class="facts">%s</div>%s</div>'
                      % (' dead' if dead else '', ''.join(head),
                         ''.join('<span>%s</span>' % f for f in facts),
                         table))
    if not blocks:
        blocks.append('<div class="empty">No dispatcher has registered '
                      'yet.</div>')
    return ('<section class="card"><h2>Dispatchers <span class="count">%d'
            '</span></h2>%s</section>' % (len(regs), ''.join(blocks)))


def failed_html(queues, forms: Forms, now) -> str:
    found = recent_jobs(queues, RECENT_FAILED, FAILED_SCAN, is_failed)
    rows = []
    for queue_name, job in found:
        oid = oid_of(job)
        failure = job.result
        try:
            call = e(call_text(job))
        except Exception as exc:
            call = '<span class="err">unreadable: %s</span>' % e(exc)
        rows.append(
            '<tr><td>%s</td><td class="call">%s</td><td>%s</td>'
            '<td class="msg"><span class="err">%s</span>: %s'
            '<details data-key="tb-%d"><summary>Traceback</summary>'
            '<pre class="tb">%s</pre></details></td><td class="act">%s</td>'
            '</tr>' % (
                job_ref(job), call, when_html(job.active_end, now),
                e(failure.type_name), e(clip(failure.message, 300)), oid,
                e(failure.getTraceback()),
                forms.button('retry', {'job': oid}, 'Retry', 'primary',
                             busy='Retrying\u2026')
                if job.status == COMPLETED else
                '<span class="muted">callbacks running</span>'))
    if rows:
        body = ('<table><thead><tr><th>Job</th><th>Call</th><th>Failed</th>'
                '<th>Error</th><th></th></tr></thead><tbody>%s</tbody>'
                '</table>' % ''.join(rows))
    else:
        body = '<div class="empty">No recent failures.</div>'
    return ('<section class="card failures"><h2>Recent failures '
            '<span class="count">'
            '%d shown</span></h2>%s</section>' % (len(rows), body))


def completed_html(queues, now) -> str:
    found = recent_jobs(queues, RECENT_COMPLETED, RECENT_COMPLETED,
                        lambda job: job.status in (CALLBACKS, COMPLETED))
    rows = []
    for queue_name, job in found:
        try:
            call = e(call_text(job))
            if isinstance(job.result, Failure):
                outcome = '<span class="err">%s</span>' % e(
                    job.result.type_name)
            else:
                outcome = '<span class="call">%s</span>' % e(
                    clip(repr(job.result), 80))
        except Exception as exc:
            call, outcome = '<span class="err">unreadable</span>', e(exc)
        duration = (job.active_end - job.active_start
                    if job.active_start and job.active_end else None)
        rows.append('<tr><td>%s</td><td class="call">%s</td><td>%s</td>'
                    '<td>%s</td><td class="nowrap">%s</td><td>%s</td></tr>'
                    % (job_ref(job), call, queue_label(queue_name),
                       when_html(job.active_end, now), e(took(duration)),
                       outcome))
    if rows:
        body = ('<table><thead><tr><th>Job</th><th>Call</th><th>Queue</th>'
                '<th>Ended</th><th>Took</th><th>Result</th></tr></thead>'
                '<tbody>%s</tbody></table>' % ''.join(rows))
    else:
        body = '<div class="empty">Nothing completed yet.</div>'
    return ('<section class="card"><h2>Recently completed <span class='
            '"count">%d shown</span></h2>%s</section>' % (len(rows), body))


def periodic_html(queues, now) -> str:
    """The schedules of ``periodic``: when each runs next and how its
    last run went."""
    rows = []
    for queue_name, queue in sorted(queues.items()):
        for name, schedule in periodic.schedules(queue).items():
            job = schedule.last_job
            if job is None:
                state = ''
            elif is_failed(job):
                state = pill('failed', 'bad')
            else:
                state = pill(status_name(job.status),
                             'ok' if job.status == COMPLETED else 'warn')
            cron = '<span class="mono">%s</span>' % e(schedule.cron)
            if schedule.timezone != 'UTC':
                cron += ' <span class="muted">%s</span>' % e(schedule.timezone)
            error = ('<div class="err">%s</div>' % e(clip(schedule.error, 200))
                     if schedule.error else '')
            rows.append('<tr><td>%s%s</td><td>%s</td><td>%s</td><td>%s</td>'
                        '<td>%s</td><td>%s %s</td></tr>' % (
                            e(name), error, queue_label(queue_name), cron,
                            e(schedule.missed),
                            when_html(schedule.next, now),
                            when_html(schedule.last, now), state))
    if rows:
        body = ('<table><thead><tr><th>Name</th><th>Queue</th><th>Cron</th>'
                '<th>Missed</th><th>Next run</th><th>Last run</th></tr>'
                '</thead><tbody>%s</tbody></table>' % ''.join(rows))
    else:
        body = '<div class="empty">No periodic jobs.</div>'
    return ('<section class="card"><h2>Periodic jobs <span class="count">%d'
            '</span></h2>%s</section>' % (len(rows), body))
