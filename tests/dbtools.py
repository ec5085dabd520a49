"""Opening a database by its zodburi URI, and reading and writing its
root in transactions of their own, for tests that watch what other
processes commit."""
import transaction
import ZODB


def open_uri(uri, **options):
    """What pyramid_zodbconn does with ``zodbconn.uri`` (``options``, e.g.
    ``database_name`` and ``databases``, are the DB's)."""
    import zodburi
    factory, uri_options = zodburi.resolve_uri(uri)
    return ZODB.DB(factory(), **dict(uri_options, **options))


def read(db, work):
    """``work(root)`` in a fresh connection, at the newest state."""
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        manager.begin()
        return work(connection.root())
    finally:
        manager.abort()
        connection.close()


def write(db, work):
    """``work(root)`` in a fresh connection, committed."""
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        with manager:
            return work(connection.root())
    finally:
        connection.close()
