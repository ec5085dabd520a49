"""The seed scenario (zc.async's "Configuration with Zope 3") on Python 3,
without Pyramid, in a process of its own because it ends with SIGINT.

    python seed_scenario.py single|two|two-from-main|two-job-in-main DIR

``two`` starts the dispatcher from the queues' database, ``two-from-main``
from the main one (as zc.async does, from the main database's
DatabaseOpened event), and ``two-job-in-main`` also keeps the job on an
object of the main database in the transaction that queues it.

Prints one JSON object of what a user would look at.
"""
import json
import operator
import os
import signal
import sys

import persistent.mapping
import transaction
import ZODB
import ZODB.FileStorage

import pyramid_zcasync
import pyramid_zcasync.dispatcher
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import get_poll, wait_for_result


def open_databases(kind, directory):
    main = ZODB.FileStorage.FileStorage(os.path.join(directory, 'main.fs'))
    if kind == 'single':
        db = ZODB.DB(main)
        pyramid_zcasync.install_queues(db)
        return db, db
    databases = {}
    db = ZODB.DB(main, databases=databases, database_name='main')
    ZODB.DB(ZODB.FileStorage.FileStorage(os.path.join(directory, 'async.fs')),
            databases=databases, database_name='async')
    pyramid_zcasync.install_queues(db, database_name='async')
    return db, databases['async']


def main(kind, directory):
    os.environ['ZC_ASYNC_UUID'] = os.path.join(directory, 'uuid.txt')
    db, queue_db = open_databases(kind, directory)
    dispatcher = pyramid_zcasync.dispatcher.start(
        db if kind.startswith('two-') else queue_db, poll_interval=0.5)
    seen = {'poll0': get_poll(dispatcher, 0),
            'activated': bool(dispatcher.activated)}

    conn = db.open()
    root = conn.root()
    queue = IQueue(root)
    job = queue.put(pyramid_zcasync.Job(operator.mul, 21, 2))
    if kind == 'two-job-in-main':
        root['order'] = persistent.mapping.PersistentMapping(job=job)
    transaction.commit()
    seen['result'] = wait_for_result(job)
    seen['queue_database'] = queue._p_jar.db().database_name
    if kind == 'two-job-in-main':
        transaction.begin()
        seen['result_from_main'] = root['order']['job'].result
    status = dispatcher.getStatusInfo()
    seen['status_keys'] = sorted(status)
    seen['status'] = status['status']
    seen['uuid_matches_file'] = status['uuid'] == pyramid_zcasync.instance \
        .read_uuid(os.environ['ZC_ASYNC_UUID'])

    try:
        os.kill(os.getpid(), signal.SIGINT)
        seen['keyboard_interrupt'] = False
    except KeyboardInterrupt:
        seen['keyboard_interrupt'] = True
    seen['dispatcher_activated_after_sigint'] = bool(dispatcher.activated)
    transaction.begin()  # sync
    seen['db_activated_after_sigint'] = bool(
        queue.dispatchers[status['uuid']].activated)
    db.close()
    print(json.dumps(seen, sort_keys=True))


if __name__ == '__main__':
    import pyramid_zcasync.instance  # noqa: F401
    main(*sys.argv[1:])
