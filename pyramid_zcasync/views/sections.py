"""The dashboard's sections: what it reads of the model, and how it
shows queues, dispatchers, periodic jobs, failures and completed jobs
(the numbers and the chart are in :mod:`.chart`, the message after an
action in :mod:`.flash`)."""
from __future__ import annotations

import datetime
import itertools
from typing import Iterable

from .. import dispatcher as dispatcher_module
from .. import periodic
from ..failure import Failure
from ..interfaces import CALLBACKS, COMPLETED
from ..safetext import bound
from . import route_name
from .flash import AT_LEAST_ONCE
from .html import (Forms, ago, call_text, clip, e, is_failed, job_ref,
                   oid_of, pill, queue_label, short_uuid, status_word, took,
                   when_html)

#: Pending jobs shown per queue.
NEXT_PENDING = 5
#: Completed and failed jobs shown.
RECENT_COMPLETED = 10
RECENT_FAILED = 10
#: Longest failure message and traceback shown on the page.
MESSAGE_SHOWN = 300
TRACEBACK_SHOWN = 4000
#: Newest history entries per agent searched for failures.
FAILED_SCAN = 300
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
                        'their queues? %s' % (uuid, AT_LEAST_ONCE),
                busy='Re-queuing\u2026'))
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
                                        pill(status_word(job), 'warn'),
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


def traceback_html(request, job, failure) -> str:
    """The traceback, its middle cut beyond :data:`TRACEBACK_SHOWN`
    characters with a link to the whole one (a job may fail with
    megabytes, and the page is fetched again every few seconds)."""
    text, omitted = bound(failure.getTraceback(), TRACEBACK_SHOWN)
    shown = '<pre class="tb">%s</pre>' % e(text)
    if not omitted:
        return shown
    url = request.route_path(
        route_name('db_traceback'), oid=oid_of(job),
        _query={'database': job._p_jar.db().database_name})
    return shown + ('<a href="%s">the whole traceback</a> (%d more '
                    'characters, JSON)' % (e(url), omitted))


def failed_html(queues, forms: Forms, now, request) -> str:
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
            '%s</details></td><td class="act">%s</td>'
            '</tr>' % (
                job_ref(job), call, when_html(job.active_end, now),
                e(failure.type_name), e(clip(failure.message, MESSAGE_SHOWN)),
                oid, traceback_html(request, job, failure),
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
                outcome = '%s <span class="err">%s</span>' % (
                    pill('failed', 'bad'), e(job.result.type_name))
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
                state = pill(status_word(job),
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
