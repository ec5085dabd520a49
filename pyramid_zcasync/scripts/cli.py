"""``pzcasync CONFIG.ini COMMAND [ARGS] [--json]``: the operator's view of
the job database, in the style of Pyramid's p-scripts.

It answers from the database itself, so it works with no web process
running: over ZEO or RelStorage always; on a FileStorage only while no
other process has it open (FileStorage is single-process; the error says
so).  The app is loaded from the ini file with the dispatcher forced off
(``ZCASYNC_DISPATCHER=0``), so its settings and databases are the app's
own and no job runs here.

Each command asks the admin view's question (:mod:`pyramid_zcasync.views.
queries`, or the dashboard's action) of the queues in a connection of its
own: the same selections, the same data, the same error messages.
``--json`` prints what the view answers over HTTP; without it, aligned
tables.  ``retry``, ``cancel``, ``pause``, ``resume`` and ``scale``
commit their change (again after a conflict).
An error is one line on stderr and exit status 1 (2 for a bad command
line or option value, a missing ini file or a bad setting), never a
traceback.  Everything printed is escaped (see :mod:`.tables`): a job's
text cannot drive the terminal.  Piped into ``head``, the command stops
quietly when the reader goes away.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

from ZODB.POSException import ConflictError

from .. import transact
from ..config import queue_database
from ..interfaces import KEY
from ..job import Job
from ..safetext import KEEP_LINES, escape
from ..views import actions, changes, queries
from ..views.format import ParameterError, to_json
from ..views.queries import JobListing, JobRef, JobSelection
from ..views.reports import COMPLETED_STATES, STATES, describe
from ..views.results import Changed, Controlled
from ..views.status import dispatcher_of
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


@dataclasses.dataclass
class Options:
    """The command's options, read as the views read their parameters
    (:class:`..views.format.Params`), so that a bad value is the same
    error in both."""
    args: argparse.Namespace
    registry: Any

    def get(self, name: str) -> Optional[str]:
        value = getattr(self.args, name, None)
        return None if value is None else str(value)

    def getall(self, name: str) -> List[str]:
        return list(getattr(self.args, name, None) or ())

    def this_uuid(self) -> str:
        """``--uuid THIS``: no dispatcher runs here, so always a 404."""
        return str(dispatcher_of(self.registry).UUID)

    def selection(self, states: Optional[Sequence[str]] = STATES,
                  default_states: Optional[Sequence[str]] = None
                  ) -> JobSelection:
        return queries.read_selection(self, self.this_uuid, states,
                                      default_states)

    def listing(self) -> JobListing:
        """A listing shows details unless ``--json --display`` asks for
        something else (the view's default is ids)."""
        found = queries.read_listing(self, self.selection())
        display = self.args.display if self.args.json and \
            self.args.display else 'details'
        return dataclasses.replace(found, display=display)

    def ref(self) -> JobRef:
        return queries.read_ref(self.args.oid, self.args.database)


Run = Callable[[Any, Options], Any]  # (queues, options) -> the answer


class Command(NamedTuple):
    run: Run
    render: Callable[[Any, argparse.Namespace], str]
    writes: bool = False


def change(action: Callable[[Job], None], done: str) -> Run:
    """A dashboard action (its checks, its change) on the job OID."""
    def run(queues: Any, options: Options) -> Changed:
        job = queries.find_job(queues, options.ref())
        action(job)
        return {'done': done, 'job': describe(job)}
    return run


def pause(queues: Any, options: Options) -> Controlled:
    actions.pause_queue(queues, options.args.queue_name)
    return {'done': 'paused', 'queue': options.args.queue_name,
            'agent': None, 'size': None}


def resume(queues: Any, options: Options) -> Controlled:
    actions.resume_queue(queues, options.args.queue_name)
    return {'done': 'resumed', 'queue': options.args.queue_name,
            'agent': None, 'size': None}


def scale(queues: Any, options: Options) -> Controlled:
    args = options.args
    size = actions.parse_size(args.size)
    actions.scale_agent(queues, args.queue_name, args.agent_name, size)
    return {'done': 'scaled', 'queue': args.queue_name,
            'agent': args.agent_name, 'size': size}


def trial(queues: Any, options: Options, kind: str) -> changes.TrialInfo:
    """A dry run or replay: it re-runs the job's code, so only with
    ``--yes``; it commits nothing either way."""
    if not options.args.yes:
        raise ParameterError(changes.WARNING + ' Add --yes to go ahead.')
    return changes.trial(queues, options.ref(), kind)


COMMANDS: Dict[str, Command] = {
    'status': Command(lambda q, o: queries.status(q, o.selection(None)),
                      tables.status),
    'jobs': Command(lambda q, o: queries.jobs(q, o.listing()), tables.jobs),
    'count': Command(lambda q, o: queries.count(q, o.selection()),
                     tables.scalar),
    'jobstats': Command(lambda q, o: queries.jobstats(q, o.selection()),
                        tables.jobstats),
    'job': Command(lambda q, o: queries.job(q, o.ref()), tables.job),
    'traceback': Command(lambda q, o: queries.traceback(q, o.ref()),
                         tables.traceback),
    'uuids': Command(lambda q, o: queries.uuids(q), tables.lines),
    'nextpending': Command(
        lambda q, o: queries.next_pending(q, o.selection(None)), tables.job),
    'lastcompleted': Command(
        lambda q, o: queries.last_completed(
            q, o.selection(COMPLETED_STATES, ['completed'])), tables.job),
    'retry': Command(change(actions.retry_job, 'retried'), tables.changed,
                     writes=True),
    'cancel': Command(change(actions.cancel_job, 'cancelled'), tables.changed,
                      writes=True),
    'changes': Command(lambda q, o: changes.job_changes(q, o.ref()),
                       tables.changes),
    'touched': Command(lambda q, o: changes.touched(q, changes.touched_key(
        q, o.args.oid, o.args.path, o.args.database)), tables.touched),
    'dryrun': Command(lambda q, o: trial(q, o, 'dryrun'), tables.trial),
    'replay': Command(lambda q, o: trial(q, o, 'replay'), tables.trial),
    'undo': Command(lambda q, o: changes.undo_run(q, o.ref(), PROGRAM),
                    tables.undone, writes=True),
    'pause': Command(pause, tables.controlled, writes=True),
    'resume': Command(resume, tables.controlled, writes=True),
    'scale': Command(scale, tables.controlled, writes=True),
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
    'cancel': 'cancel a pending or running job: it ends with a '
              'JobCancelled failure (a running one within a second)',
    'changes': 'what the job\'s last successful run changed '
               '(/db/jobs/OID/changes)',
    'touched': 'the latest jobs whose runs changed the object OID, or '
               'the one at --path (/db/touched)',
    'dryrun': 'run a pending job in a throw-away copy of the current '
              'data: its outcome and what it would change (re-runs its '
              'code: needs --yes)',
    'replay': 'run a completed job in a throw-away copy of the data its '
              'attempt read: its outcome and what it changed (re-runs its '
              'code: needs --yes)',
    'undo': 'revert the objects the job\'s last run changed to their '
            'state before it (history-keeping storages; refused when '
            'changed since)',
    'pause': 'stop every dispatcher claiming from QUEUE (at its next '
             'poll); running jobs finish, new ones wait',
    'resume': 'let every dispatcher claim from QUEUE again',
    'scale': 'give agent AGENT of every dispatcher in QUEUE SIZE slots '
             '(at its next poll)',
}

#: The commands taking a selection, and those also taking states.
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
        if name in ('job', 'traceback', 'retry', 'cancel', 'changes',
                    'dryrun', 'replay', 'touched', 'undo'):
            sub.add_argument('oid', metavar='OID', nargs='?' if name ==
                             'touched' else None)
            sub.add_argument('--database', metavar='NAME',
                             help='the database holding the job (for '
                             'touched: the object; default: the queues\' '
                             'database)')
        if name == 'touched':
            sub.add_argument('--path', metavar='/A/B',
                             help='the object at this path instead of OID')
        if name in ('dryrun', 'replay'):
            sub.add_argument('--yes', action='store_true',
                             help='yes, run the job\'s code again (mail, '
                             'files, calls outside the database happen '
                             'again; the database is left as it is)')
        if name in ('pause', 'resume', 'scale'):
            sub.add_argument('queue_name', metavar='QUEUE',
                             help="a queue's exact name ('' is the default "
                             'queue)')
        if name == 'scale':
            sub.add_argument('agent_name', metavar='AGENT',
                             help="an agent's name, e.g. main")
            sub.add_argument('size', metavar='SIZE',
                             help='its slots: a whole number, 0 or more')
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
                             % (queries.DEFAULT_COUNT, queries.MAX_COUNT))
            sub.add_argument('--display', choices=queries.DISPLAYS,
                             help='with --json, each job as: details '
                             '(the default here), repr, or ids (the '
                             'view\'s default)')
    return parser


def execute(registry: Any, args: argparse.Namespace) -> str:
    """Run the command in a connection of its own to the queues'
    database; the output is rendered inside it (the job's objects are
    still loaded), and a write is committed before anything is printed
    (again after a conflict)."""
    command = COMMANDS[args.command]
    options = Options(args, registry)

    def work(connection: Any) -> str:
        data = command.run(connection.root()[KEY], options)
        if args.json:
            return json.dumps(to_json(data), indent=2, sort_keys=True)
        return command.render(data, args)

    db = queue_database(registry)
    if not command.writes:
        return transact.read(db, work)
    try:
        return transact.write(db, work, attempts=ATTEMPTS)
    except ConflictError:
        raise ScriptError(
            '%s: conflicted %d times with other processes changing the '
            'same jobs; nothing was changed, try again'
            % (args.command, ATTEMPTS)) from None


def run(args: argparse.Namespace) -> int:
    check_ini(args.config_uri)
    setup_logging(args.config_uri, {})
    env = bootstrap(args.config_uri, {}, dispatcher=False,
                    locked_hint=LOCKED_HINT)
    try:
        output = execute(env['registry'], args)
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
