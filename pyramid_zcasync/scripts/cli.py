"""``pzcasync CONFIG.ini COMMAND [ARGS] [--json]``: the operator's view of
the job database, in the style of Pyramid's p-scripts.

It answers from the database itself, so it works with no web process
running: over ZEO or RelStorage always; on a FileStorage only while no
other process has it open (FileStorage is single-process; the error says
so).  The app is loaded from the ini file with the dispatcher forced off
(``ZCASYNC_DISPATCHER=0``), so its settings and databases are the app's
own and no job runs here.

Each command is the matching admin view (:mod:`pyramid_zcasync.views.db`,
the dashboard's actions) called with a request built from the options:
the same selections, the same data, the same error messages.  ``--json``
prints what the view answers over HTTP; without it, aligned tables.
``retry`` and ``cancel`` commit their change (again after a conflict).
An error is one line on stderr and exit status 1 (2 for a bad command
line or option value, a missing ini file or a bad setting), never a
traceback.  Everything printed is escaped (see :mod:`.tables`): a job's
text cannot drive the terminal.  Piped into ``head``, the command stops
quietly when the reader goes away.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from ZODB.POSException import ConflictError

from ..safetext import KEEP_LINES, escape
from ..views import actions, db
from ..views.format import ParameterError, to_json
from ..views.reports import STATES, describe
from . import tables
from .common import ScriptError, bootstrap, check_ini, close_app, \
    setup_logging

PROGRAM = 'pzcasync'
#: Attempts of a ``retry``/``cancel`` that conflicts with a dispatcher.
ATTEMPTS = 3
#: Hint added to the error when the ini's FileStorage is held elsewhere.
LOCKED_HINT = ('; stop the process using it (pserve or pzcasync-worker), '
               'or serve the database with ZEO (pzcasync-zeo) to use '
               'pzcasync while the app runs')


class Command(NamedTuple):
    run: Callable  # (request, args) -> data: the view's answer
    render: Callable  # (data, args) -> text
    writes: bool = False


def with_oid(view: Callable) -> Callable:
    """A view of ``/db/jobs/{oid}`` called with the OID argument."""
    def run(request, args):
        request.matchdict = {'oid': args.oid}
        return view(request)
    return run


def change(action: Callable, done: str) -> Callable:
    """A dashboard action (its checks, its change) on the job OID."""
    def run(request, args):
        request.matchdict = {'oid': args.oid}
        job = db.load_job(request)
        action(job)
        return {'done': done, 'job': describe(job)}
    return run


def plain(view: Callable) -> Callable:
    return lambda request, args: view(request)


COMMANDS: Dict[str, Command] = {
    'status': Command(plain(db.status), tables.status),
    'jobs': Command(plain(db.jobs), tables.jobs),
    'count': Command(plain(db.count), tables.scalar),
    'jobstats': Command(plain(db.jobstats), tables.jobstats),
    'job': Command(with_oid(db.job), tables.job),
    'traceback': Command(with_oid(db.traceback), tables.traceback),
    'uuids': Command(plain(db.uuids), tables.lines),
    'nextpending': Command(plain(db.nextpending), tables.job),
    'lastcompleted': Command(plain(db.lastcompleted), tables.job),
    'retry': Command(change(actions.retry_job, 'retried'), tables.changed,
                     writes=True),
    'cancel': Command(change(actions.cancel_job, 'cancelled'), tables.changed,
                      writes=True),
}

HELP = {
    'status': 'queues, their quotas, and the activated dispatchers with '
              'their pings and agents (/db/status)',
    'jobs': 'the jobs, pending first, then held, then completed newest '
            'first (/db/jobs)',
    'count': 'how many jobs match (/db/count)',
    'jobstats': 'counts by state, longest and shortest waits and runs '
                '(/db/jobstats)',
    'job': 'one job in full (/db/jobs/OID)',
    'traceback': 'the traceback of a failed job (/db/jobs/OID/traceback)',
    'uuids': 'the UUIDs of the activated dispatchers (/db/uuids)',
    'nextpending': 'the pending job to be claimed next (/db/nextpending)',
    'lastcompleted': 'the job completed last (/db/lastcompleted)',
    'retry': 'run a failed job again, at the back of its queue',
    'cancel': 'cancel a pending job: it never runs, and completes with a '
              'JobCancelled failure',
}

#: Options that become the views' query parameters, by command.
SELECTING = ('status', 'jobs', 'count', 'jobstats', 'nextpending',
             'lastcompleted')
STATE_FILTERED = ('jobs', 'count', 'jobstats', 'lastcompleted')


def make_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--json', action='store_true',
                        default=argparse.SUPPRESS,
                        help='print the admin view\'s JSON instead of a '
                        'table')
    parser = argparse.ArgumentParser(
        prog=PROGRAM, parents=[common],
        description='Inspect and act on the pyramid_zcasync job database '
        'of the app in CONFIG.ini, with or without the app running.',
        epilog='OID is a job\'s oid, decimal or 0x-hex, as the tables and '
        'the admin views show it. Exit status: 0 done, 1 an error (unknown '
        'job, not failed, not pending, database locked), 2 a bad command '
        'line or configuration.')
    parser.add_argument('config_uri', metavar='CONFIG.ini',
                        help='the app\'s ini file (FILE.ini or '
                        'FILE.ini#app_name)')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND',
                                     required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, parents=[common], help=HELP[name],
                                  description=HELP[name])
        if name in ('job', 'traceback', 'retry', 'cancel'):
            sub.add_argument('oid', metavar='OID')
            sub.add_argument('--database', metavar='NAME',
                             help='the database holding the job (default: '
                             'the queues\' database)')
        if name in STATE_FILTERED:
            sub.add_argument(
                '--state', action='append', metavar='STATE',
                help='repeat or comma-separate: %s (default: all%s)'
                % (', '.join(STATES), ', completed' if name ==
                   'lastcompleted' else ''))
        if name in SELECTING:
            sub.add_argument('--queue', metavar='NAME',
                             help="a queue's exact name ('' is the "
                             'default queue)')
            sub.add_argument('--uuid', help='a dispatcher\'s UUID')
            sub.add_argument('--agent', metavar='NAME',
                             help='an agent\'s name, e.g. main')
        if name in SELECTING and name != 'status':
            sub.add_argument('--callable', metavar='GLOB',
                             help='a glob on the callable\'s dotted name')
            for bound in ('since', 'before', 'at'):
                sub.add_argument('--' + bound, metavar='DATE',
                                 help='ISO-8601 UTC, e.g. 2026-01-31T12:00Z')
        if name == 'jobs':
            sub.add_argument('--count', metavar='N',
                             help='at most N jobs (default %d, at most %d)'
                             % (db.DEFAULT_COUNT, db.MAX_COUNT))
            sub.add_argument('--display', choices=db.DISPLAYS,
                             help='with --json, each job as: details '
                             '(the default here), repr, or ids (the '
                             'view\'s default)')
    return parser


def query(args: argparse.Namespace) -> List[tuple]:
    """The view's query parameters from the command's options."""
    params = []
    for name in ('queue', 'uuid', 'agent', 'callable', 'since', 'before',
                 'at', 'count', 'database'):
        value = getattr(args, name, None)
        if value is not None:
            params.append((name, value))
    for value in getattr(args, 'state', None) or ():
        params.append(('state', value))
    if args.command == 'jobs':
        display = args.display if args.json and args.display else 'details'
        params.append(('display', display))
    return params


def make_request(args: argparse.Namespace):
    from pyramid.request import Request
    return Request.blank('/?' + urllib.parse.urlencode(query(args)))


def execute(env: dict, args: argparse.Namespace) -> str:
    """Run the command in a transaction of the request's manager; the
    output is rendered inside it (the job's objects are still loaded),
    and a write is committed before anything is printed."""
    command = COMMANDS[args.command]
    request = env['request']
    manager = request.tm
    for attempt in range(1, ATTEMPTS + 1):
        manager.begin()
        try:
            data = command.run(request, args)
            if args.json:
                output = json.dumps(to_json(data), indent=2, sort_keys=True)
            else:
                output = command.render(data, args)
            if command.writes:
                manager.commit()
            else:
                manager.abort()
            return output
        except ConflictError:
            manager.abort()
            if attempt == ATTEMPTS:
                raise ScriptError(
                    '%s: conflicted %d times with other processes '
                    'changing the same jobs; nothing was changed, try again'
                    % (args.command, ATTEMPTS)) from None
        except BaseException:
            manager.abort()
            raise
    raise AssertionError('unreachable')  # pragma: no cover


def run(args: argparse.Namespace) -> int:
    check_ini(args.config_uri)
    setup_logging(args.config_uri, {})
    env = bootstrap(args.config_uri, {}, dispatcher=False,
                    request=make_request(args), locked_hint=LOCKED_HINT)
    try:
        output = execute(env, args)
    except ParameterError as exc:
        # A bad option value (400) is a bad command line; an unknown job
        # or a refused action is a failed command.
        bad_input = exc.status == 400 and not isinstance(
            exc, actions.ActionError)
        raise ScriptError(exc.message, 2 if bad_input else 1) from None
    except ScriptError:
        raise
    except Exception as exc:
        raise ScriptError('%s failed: %s: %s' % (
            args.command, type(exc).__name__, exc)) from None
    finally:
        close_app(env)
    if output:
        return write_out(escape(output, KEEP_LINES) + '\n')
    return 0


def write_out(text: str) -> int:
    """Print ``text``; a reader that went away (``| head``) ends the
    command quietly, as it ends ``cat``, rather than in a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    args.json = getattr(args, 'json', False)
    try:
        return run(args)
    except ScriptError as exc:
        print('%s: error: %s' % (PROGRAM, escape(exc.message)),
              file=sys.stderr)
        return exc.status


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
