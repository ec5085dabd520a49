"""A dispatcher-only process for end-to-end tests.

    python worker.py STORAGE UUID_FILE [poll ping death]

STORAGE is ``file:PATH`` or ``zeo:PORT``.  Prints ``ready`` once the
dispatcher runs, then waits for a signal; SIGINT/SIGTERM stop it cleanly.
"""
import signal
import sys

import ZODB

import pyramid_zcasync
from pyramid_zcasync import dispatcher


def open_db(spec):
    kind, _, where = spec.partition(':')
    if kind == 'file':
        return ZODB.DB(where)
    import ZEO
    return ZEO.DB(('127.0.0.1', int(where)), wait_timeout=30)


def main(argv):
    storage, uuid_file = argv[:2]
    poll, ping, death = (float(x) for x in (argv[2:5] or (0.2, 0.5, 2)))
    db = open_db(storage)
    pyramid_zcasync.install_queues(db)
    dispatcher.start(db, uuid_file=uuid_file, poll_interval=poll,
                     ping_interval=ping, ping_death_interval=death)
    print('ready', flush=True)
    try:
        while True:
            signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        db.close()
        print('stopped', flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
