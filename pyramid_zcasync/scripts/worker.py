"""``pzcasync-worker CONFIG.ini [name=value ...]``: a process that runs
jobs and serves no HTTP.

For deployments that keep web processes and job processes apart: the web
processes set ``zcasync.dispatcher = false`` (or run elsewhere) and any
number of workers, each with its own UUID file, run the jobs against the
same ZEO or RelStorage databases.  The worker loads the *app* from the
ini file (not just the settings), so its databases and pyramid_zcasync
settings are exactly those the app's own ``includeme`` sets up; it forces
the dispatcher on whatever ``zcasync.dispatcher`` and the program-name
rule say, since running it is the worker's only purpose.

It logs through the ini's logging configuration, waits for SIGTERM or
SIGINT, then stops the dispatcher (running jobs get
:data:`~pyramid_zcasync.dispatcher.STOP_GRACE` seconds; longer ones are
handed back to their queue, to run again from the start; its registration
shows ``activated`` false), closes the databases, and exits 0.  A second
signal while it stops exits at once (status 128 + the signal's number):
the jobs still running are recovered when the worker starts again, or by
a live sibling.  A missing ini file or a bad setting is one line on
stderr and exit status 2; a FileStorage another process holds, or a twin
process with the same UUID, exit status 1.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any, Optional, Sequence

from .. import process
from ..dispatcher import STOP_GRACE
from .common import (ScriptError, bootstrap, check_ini, close_app,
                     parse_options, setup_logging)

PROGRAM = 'pzcasync-worker'

log = logging.getLogger('pyramid_zcasync.events')

#: Hint added to the error when the ini's FileStorage is held elsewhere.
LOCKED_HINT = ('; a worker beside a web process needs a database server: '
               'ZEO (pzcasync-zeo, see production.ini) or RelStorage')


class _Stop(BaseException):
    """Raised by our signal handler to end the wait (not an Exception, so
    that nothing on the way swallows it)."""


class StopSignal:
    """SIGTERM/SIGINT → stop.  Installed before the app loads, so that a
    signal during start-up is remembered and honoured once the app is up
    (start-up is never cut in the middle), and again once it is up, over
    the dispatcher's own handler: the worker then stops the dispatcher
    itself, after saying so, and the log reads in the order things
    happen.  During the wait it raises :class:`_Stop` to end it; a second
    signal exits at once."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.waiting = False

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) != signal.SIG_IGN:
                # as Python and the dispatcher do: ignored stays ignored
                signal.signal(signum, self.handle)

    def handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and not self.waiting:
            log.warning('%s: %s again: exiting now; jobs still running are '
                        'recovered at the next start', PROGRAM,
                        signal.Signals(signum).name)
            raise SystemExit(128 + signum)
        if self.received is None:
            self.received = signum
        if self.waiting:
            self.waiting = False
            raise _Stop()

    def wait(self) -> int:
        """Until a signal came (at once if one already did): its number."""
        try:
            self.waiting = True
            process.wait_for_signal(lambda: self.received is not None)
        except _Stop:
            pass
        finally:
            self.waiting = False
        assert self.received is not None  # what ended the wait
        return self.received


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description='Run the pyramid_zcasync dispatcher of the app in '
        'CONFIG.ini, without serving HTTP, until SIGTERM or SIGINT.')
    parser.add_argument(
        'config_uri', metavar='CONFIG.ini',
        help='the app\'s ini file (FILE.ini or FILE.ini#app_name)')
    parser.add_argument(
        'variables', nargs='*', metavar='name=value',
        help='variables for the ini file, as for pserve')
    return parser


def run(config_uri: str, variables: Sequence[str]) -> int:
    check_ini(config_uri)
    options = parse_options(variables)
    setup_logging(config_uri, options)
    stopper = StopSignal()
    stopper.install()
    env = bootstrap(config_uri, options, dispatcher=True,
                    locked_hint=LOCKED_HINT)
    try:
        registry = env['registry']
        dispatcher = getattr(registry, 'zcasync_dispatcher', None)
        if dispatcher is None:  # pragma: no cover - config.py starts it
            raise ScriptError('%s: no dispatcher started' % config_uri, 2)
        stopper.install()  # over the dispatcher's handler: see StopSignal
        print('%s: dispatcher %s running in process %d; SIGTERM or SIGINT '
              'stops it' % (PROGRAM, dispatcher.UUID, os.getpid()),
              file=sys.stderr, flush=True)
        received = stopper.wait()
        log.info('%s: %s: stopping dispatcher %s (running jobs get %g s; '
                 'a second signal exits at once)', PROGRAM,
                 signal.Signals(received).name, dispatcher.UUID,
                 STOP_GRACE)
    finally:
        close_app(env)
    print('%s: stopped' % PROGRAM, file=sys.stderr, flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return run(args.config_uri, args.variables)
    except ScriptError as exc:
        print('%s: error: %s' % (PROGRAM, exc.message), file=sys.stderr)
        return exc.status


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
