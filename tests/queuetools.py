"""Small helpers shared by the queue, priority and rate-limit tests."""
import datetime

import transaction

from pyramid_zcasync.interfaces import IQueue

UTC = datetime.timezone.utc
HOUR = datetime.timedelta(hours=1)
MINUTE = datetime.timedelta(minutes=1)


def now():
    return datetime.datetime.now(UTC)


def other_connection(db):
    """A connection with a transaction manager of its own."""
    manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=manager)
    return conn, IQueue(conn.root())
