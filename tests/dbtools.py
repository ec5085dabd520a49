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


def put_concurrently(db, threads, transactions, work, attempts=5):
    """``threads`` producers, each on a connection of its own, committing
    ``transactions`` transactions of ``work(root)``, each tried up to
    ``attempts`` times while it raises ConflictError (as pyramid_retry
    would): (committed, given up, the ConflictErrors, seconds)."""
    import threading
    import time
    from ZODB.POSException import ConflictError
    lock = threading.Lock()
    committed, given_up, conflicts = [0], [0], []

    def produce():
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        try:
            for _ in range(transactions):
                for _ in range(attempts):
                    try:
                        with manager:
                            work(connection.root())
                        with lock:
                            committed[0] += 1
                        break
                    except ConflictError as exc:
                        with lock:
                            conflicts.append(exc)
                else:
                    with lock:
                        given_up[0] += 1
        finally:
            connection.close()
    producers = [threading.Thread(target=produce) for _ in range(threads)]
    started = time.monotonic()
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join(600)
    return committed[0], given_up[0], conflicts, time.monotonic() - started
