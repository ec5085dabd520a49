"""tests/worker.py, with the dispatcher's watch of the last transaction
slowed to PUSHWORKER_WATCH seconds: a job it picks up sooner than that
(and sooner than its poll interval) was pushed to it (ZEO invalidations,
PostgreSQL notifications).  Same arguments as worker.py."""
import sys

import worker
from pyramid_zcasync import dispatcher

WATCH = 5.0

if __name__ == '__main__':
    dispatcher.WATCH_INTERVAL = WATCH
    worker.main(sys.argv[1:])
