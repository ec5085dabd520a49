"""Reading and writing a database's root in transactions of their own,
for tests that watch what other processes commit."""
import transaction


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
