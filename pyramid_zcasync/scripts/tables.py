"""How ``pzcasync`` shows the admin views' data to a person: aligned
columns and ``name: value`` lines, UTC times to the second, durations as
``1h 2m 3.5s``.  Kept apart from :mod:`.cli` so that the command stays
the commands, and so that ``--json`` and these texts start from the very
same data.

Every value from a job is untrusted: a cell is escaped whole (a control
character, a line break or a right-to-left override cannot reach the
terminal or break a row), a failure message is clipped as the reports
clip it, and a traceback keeps only its line breaks and tabs.
"""
from __future__ import annotations

import argparse
import datetime
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .. import clock, local
from ..failure import Failure
from ..safetext import KEEP_LINES, clip, escape
from ..views.format import MESSAGE_LIMIT
from ..views.changes import (ChangeInfo, ChangesInfo, TouchedInfo,
                             TrialInfo, UndoneInfo)
from ..views.results import (Changed, Controlled, EventInfo, JobInfo,
                             JobStats, ProgressInfo, Status, TracebackInfo)

#: The command line, for the hints a text gives (None in tests).
Args = Optional[argparse.Namespace]

#: Column separator of the tables.
GAP = '  '
#: Shown for a missing value (None) in a table or a field.
NONE = '-'


def text(value: Any) -> str:
    """One value, short and readable."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, datetime.datetime):
        value = value.astimezone(clock.UTC).replace(microsecond=0)
        return value.strftime('%Y-%m-%d %H:%M:%SZ')
    if isinstance(value, datetime.timedelta):
        return duration(value)
    if isinstance(value, Failure):
        return escape('%s: %s' % (value.type_name,
                                  clip(value.message, MESSAGE_LIMIT)))
    if isinstance(value, (list, tuple)):
        return ', '.join(text(item) for item in value) or NONE
    if isinstance(value, dict):
        return ', '.join('%s=%s' % (key, text(item))
                         for key, item in value.items()) or NONE
    return escape(str(value))


def duration(delta: datetime.timedelta) -> str:
    sign = '-' if delta < datetime.timedelta(0) else ''
    delta = abs(delta)
    minutes, whole = divmod(delta.seconds, 60)
    hours, minutes = divmod(minutes, 60)
    seconds = whole + delta.microseconds / 1e6
    parts = ['%dd' % delta.days if delta.days else '',
             '%dh' % hours if hours else '',
             '%dm' % minutes if minutes else '',
             ('%.3gs' % seconds) if seconds or not (delta.days or hours
                                                    or minutes) else '']
    return sign + ' '.join(part for part in parts if part)


def queue_name(name: str) -> str:
    """Queue names quoted, so the default queue ``''`` is visible."""
    return repr(name)


def oid(job_id: Any) -> str:
    """A job id ``[oid, database]``: the oid (pzcasync's OID argument)."""
    if isinstance(job_id, (list, tuple)) and job_id:
        return str(job_id[0])
    return text(job_id)


def columns(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An aligned table, the last column unpadded."""
    cells = [list(headers)] + [[text(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return '\n'.join(
        GAP.join(cell.ljust(width) for cell, width in zip(row, widths))
        .rstrip() for row in cells)


def fields(pairs: Iterable[tuple]) -> str:
    """``name: value`` lines, the values aligned."""
    pairs = [(str(name), text(value)) for name, value in pairs]
    width = max((len(name) for name, _ in pairs), default=0) + 1
    return '\n'.join(('%s:' % name).ljust(width) + ' ' + value
                     for name, value in pairs)


# -- one renderer per command: (data, args) -> text ------------------------

def scalar(data: Any, args: Args = None) -> str:
    return text(data)


def lines(data: Sequence[Any], args: Args = None) -> str:
    return '\n'.join(text(item) for item in data)


def status(data: Status, args: Args = None) -> str:
    rows: List[List[Any]] = []
    quotas: List[List[Any]] = []
    for name, queue in sorted(data.items()):
        for quota, info in sorted(queue['quotas'].items()):
            quotas.append([queue_name(name), quota, info['size'],
                           info['len']])
        dispatchers = queue['dispatchers']
        if not dispatchers:
            rows.append([queue_name(name), queue['len']] + [None] * 8)
        for uuid, reg in sorted(dispatchers.items()):
            agents: List[Tuple[Optional[str], Dict[str, Any]]] = [
                (agent, dict(info))
                for agent, info in sorted(reg['agents'].items())]
            for agent, cells in agents or [(None, {})]:
                rows.append([queue_name(name), queue['len'], uuid,
                             reg['last ping'], reg['since ping'],
                             bool(reg['dead']), agent, cells.get('size'),
                             cells.get('len'), cells.get('completed')])
    out = columns(['QUEUE', 'PENDING', 'DISPATCHER', 'LAST PING',
                   'SINCE PING', 'DEAD', 'AGENT', 'SIZE', 'HELD',
                   'COMPLETED'], rows)
    if quotas:
        out += '\n\n' + columns(['QUEUE', 'QUOTA', 'SIZE', 'ACTIVE'], quotas)
    controls = [[queue_name(name), 'paused' if queue.get('paused') else
                 'running', ', '.join('%s=%d' % item for item in sorted(
                     queue.get('scaled', {}).items())) or None]
                for name, queue in sorted(data.items())
                if queue.get('paused') or queue.get('scaled')]
    if controls:
        out += '\n\n' + columns(['QUEUE', 'CLAIMS', 'SCALED'], controls)
    return out


def controlled(data: Controlled, args: Args = None) -> str:
    """What ``pause``, ``resume`` or ``scale`` did."""
    name = queue_name(data['queue'])
    if data['done'] == 'scaled':
        return ('agent %r of queue %s scaled to %s: every dispatcher applies '
                'it at its next poll' % (data['agent'], name, data['size']))
    return 'queue %s %s: every dispatcher applies it at its next poll' % (
        name, data['done'])


def outcome(info: JobInfo) -> str:
    """completed → succeeded or failed, as the ``state`` filter says."""
    if info['status'] == 'completed':
        return 'failed' if info['failed'] else 'succeeded'
    return info['status']


def jobs(data: Sequence[JobInfo], args: Args = None) -> str:
    rows = [[oid(info['id']), outcome(info), queue_name(info['queue'])
             if info['queue'] is not None else None, info['callable'],
             info['begin after'], info['active start'], info['active end'],
             (info['dispatcher'] or '')[:8] or None] for info in data]
    return columns(['OID', 'STATUS', 'QUEUE', 'CALLABLE', 'BEGIN AFTER',
                    'STARTED', 'ENDED', 'DISPATCHER'], rows)


#: The job's fields in reading order; what describe adds later follows.
JOB_FIELDS = ('status', 'callable', 'args', 'kwargs', 'queue', 'agent',
              'dispatcher', 'begin after', 'begin by', 'active start',
              'active end', 'initial callbacks end', 'wait', 'active',
              'progress', 'result', 'failure', 'retry policy', 'quota names',
              'callbacks', 'parent', 'waiting for', 'annotations')
#: Fields given only where they have a value (a job's progress, and only
#: by ``pzcasync job``): left out when absent rather than shown as unset.
DETAIL_FIELDS = ('progress',)


def job(info: JobInfo, args: Args = None) -> str:
    pairs: List[Tuple[str, Any]] = [('oid', oid(info['id'])),
                                    ('database', repr(info['id'][1]))]
    fields_of: Dict[str, Any] = dict(info)  # describe may add fields
    for name in JOB_FIELDS + tuple(sorted(set(info) - set(JOB_FIELDS) - {
            'id', 'repr', 'failed'} - LIFE_LOG)):
        if name in fields_of or name not in DETAIL_FIELDS:
            pairs.append((name, job_field(name, fields_of.get(name), info)))
    out = fields(pairs)
    if info.get('failed'):
        out += '\n(its traceback: pzcasync %s traceback %s)' % (
            getattr(args, 'config_uri', 'CONFIG.ini'), oid(info['id']))
    if 'events' in fields_of:  # the job command's view of one job
        out += '\n\n' + life_log(fields_of['events'],
                                 fields_of.get('events dropped', 0))
    return out


def job_field(name: str, value: Any, info: JobInfo) -> Any:
    """One field's value as ``pzcasync job`` shows it."""
    if name == 'status':
        return outcome(info)
    if name == 'queue' and value is not None:
        return queue_name(value)
    if name == 'callbacks':
        return [oid(item) for item in value or ()] or None
    if name in ('parent', 'waiting for'):
        return oid(value) if value else None
    if name == 'progress' and value:
        return progress(value)
    return value


def progress(info: ProgressInfo) -> str:
    """``40% copying (at 2026-01-02 03:04:05Z)``; :func:`text` escapes
    it whole, the job's message with it."""
    percent = local.Progress(**info).percent
    message = ' ' + info['message'] if info['message'] else ''
    return '%d%%%s (at %s)' % (percent, message, text(info['at']))


#: The keys of a job's life log (the job command's JobDetail).
LIFE_LOG = {'events', 'events dropped'}


def life_log(events: Sequence[EventInfo], dropped: int) -> str:
    """A job's events, a row each, times to the millisecond (a job's
    moves are often within one second); a line says where some were
    dropped (after the first)."""
    rows: List[List[Any]] = [
        [precise(event['at']), event['from'], event['to'],
         event['dispatcher'], event['attempt'], event['detail']]
        for event in events]
    if dropped:
        rows.insert(1, ['(%d more)' % dropped] + [''] * 5)
    return columns(['AT', 'FROM', 'TO', 'DISPATCHER', 'ATTEMPT', 'DETAIL'],
                   rows)


def precise(value: datetime.datetime) -> str:
    value = value.astimezone(clock.UTC)
    return value.strftime('%Y-%m-%d %H:%M:%S.') + \
        '%03dZ' % (value.microsecond // 1000)


def traceback(data: TracebackInfo, args: Args = None) -> str:
    return escape('job %s failed with %s: %s\n\n%s' % (
        oid(data['id']), data['type'], data['message'],
        data['traceback'].rstrip('\n')), KEEP_LINES)


def jobstats(data: JobStats, args: Args = None) -> str:
    pairs: List[Tuple[str, Any]] = []
    for name, value in data.items():
        if isinstance(value, dict):  # {'duration': ..., 'job': id}
            pairs.append((name, '%s (job %s)' % (text(value['duration']),
                                                 oid(value['job']))))
        else:
            pairs.append((name, value))
    return fields(pairs)


def changed(data: Changed, args: Args = None) -> str:
    info = data['job']
    if data['done'] == 'cancelled' and info['status'] in ('assigned',
                                                          'active'):
        return ('job %s asked to stop: its dispatcher interrupts it within '
                'a second (status %s)' % (oid(info['id']), info['status']))
    if data['done'] == 'cancelled':
        return ('job %s cancelled: out of its queue, it will not run (its '
                'status is now %s)' % (oid(info['id']), info['status']))
    return 'job %s retried: pending again in queue %s' % (
        oid(info['id']), queue_name(info['queue'] or ''))


def change_rows(found: Sequence[ChangeInfo], more: int) -> str:
    table = columns(['DATABASE', 'OID', 'CLASS', 'PATH', 'CREATED'], [
        [c['database'], c['oid'], c['class'], c['path'],
         c['created'] or None] for c in found]) if found else \
        'nothing changed in the database'
    return table + ('\nand %d more' % more if more else '')


def changes(data: ChangesInfo, args: Args = None) -> str:
    if not data['recorded']:
        return ('no record: the job did not succeed yet, or ran without '
                'the change recorder (zcasync.extensions = '
                'pyramid_zcasync.changes.ChangeRecorder)')
    return change_rows(data['changes'], data['more'])


def touched(data: TouchedInfo, args: Args = None) -> str:
    if not data['jobs']:
        return 'no recorded job changed it'
    return columns(['JOB', 'STATUS', 'CALLABLE'], [
        [job['oid'], job['status'], job['callable']]
        for job in data['jobs']])


def trial(data: TrialInfo, args: Args = None) -> str:
    head = fields([
        (data['kind'], 'succeeded' if data['succeeded'] else 'failed'),
        ('job', data['job']), ('read', data['source']),
        ('result', data['result']),
        ('committed', 'nothing: the copy was thrown away')])
    trace = '\n' + escape(data['traceback'], KEEP_LINES) \
        if data['traceback'] else ''
    return head + trace + '\n' + change_rows(data['changes'], data['more'])


def undone(data: UndoneInfo, args: Args = None) -> str:
    left = data['left_created']
    return ('undone: job %d; reverted to their state before its run:\n'
            % data['job'] + change_rows(data['reverted'], 0)
            + ('\n%d objects it created are left, unreferenced' % left
               if left else ''))
