"""A dispatcher-only process for end-to-end tests.

    python worker.py STORAGE UUID_FILE [poll ping death] [--agent-size N]
                     [--history-size N] [--log PATH] [--clock-offset S]

STORAGE is ``file:PATH``, ``zeo:PORT`` or ``pg:URI`` (RelStorage's zodburi
URI, ``postgres://USER@HOST:PORT/DBNAME?keep_history=false``).  Prints
``ready`` once the dispatcher runs, then waits for a signal; SIGINT/SIGTERM
stop it cleanly.  ``--agent-size`` sets the size of the agent ``main``
(default 3); ``--history-size`` the completed jobs each agent keeps
(default: the dispatcher's); ``--log`` writes pyramid_zcasync's and ZEO's
log records (INFO and up) to PATH, to see afterwards what a worker went
through, and SIGUSR1 then writes every thread's stack to PATH.stacks
(where a worker is blocked); ``--clock-offset`` sets this process's clock
S seconds off, as another machine's may be.
"""
import argparse
import datetime
import faulthandler
import logging
import signal
import sys

import ZODB

import pyramid_zcasync
from pyramid_zcasync import clock, dispatcher, process


def open_db(spec):
    kind, _, where = spec.partition(':')
    if kind == 'file':
        return ZODB.DB(where)
    if kind == 'pg':  # pg:postgres://USER@HOST:PORT/DB?keep_history=false
        from dbtools import open_uri
        return open_uri(where)
    import ZEO
    return ZEO.DB(('127.0.0.1', int(where)), wait_timeout=30)


class SkewedClock(clock.Clock):
    """The machine's clock, ``offset`` seconds off: another machine's."""

    def __init__(self, offset):
        self.offset = datetime.timedelta(seconds=offset)

    def utcnow(self):
        return super().utcnow() + self.offset


def skew_clock(offset):
    """Everything of pyramid_zcasync in this process reads a clock that
    is ``offset`` seconds off (what the database's corrects)."""
    clock.default_clock.local = SkewedClock(offset)


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument('storage')
    parser.add_argument('uuid_file')
    parser.add_argument('timing', nargs='*', type=float,
                        help='poll ping death (seconds)')
    parser.add_argument('--agent-size', type=int, default=3)
    parser.add_argument('--history-size', type=int)
    parser.add_argument('--log')
    parser.add_argument('--clock-offset', type=float, default=0.0,
                        help='seconds this process\'s clock is off (the '
                        'chaos tests\' clock skew)')
    args = parser.parse_args(argv)
    if args.timing and len(args.timing) != 3:
        parser.error('timing is: poll ping death')
    return args


def log_to(path):
    """Log records to ``path``; stacks to ``path``.stacks on SIGUSR1."""
    logging.basicConfig(
        filename=path, level=logging.INFO,
        format='%(asctime)s %(process)d %(threadName)s %(name)s '
               '%(levelname)s %(message)s')
    stacks = open(path + '.stacks', 'a')  # open for the process's life
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)


def main(argv):
    args = parse(argv)
    poll, ping, death = args.timing or (0.2, 0.5, 2)
    if args.log:
        log_to(args.log)
    if args.clock_offset:
        skew_clock(args.clock_offset)
    db = open_db(args.storage)
    pyramid_zcasync.install_queues(db)
    try:
        dispatcher.start(db, uuid_file=args.uuid_file, poll_interval=poll,
                         ping_interval=ping, ping_death_interval=death,
                         agent_size=args.agent_size,
                         history_size=args.history_size)
        # Inside the try: a SIGTERM that arrives as soon as the parent
        # reads "ready" must still end with "stopped" and exit status 0.
        print('ready', flush=True)
        process.wait_for_signal()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        db.close()
        print('stopped', flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
