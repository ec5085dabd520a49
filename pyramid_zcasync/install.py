"""Creating the queues mapping in a database, once, idempotently."""
from __future__ import annotations

from typing import Iterable, Optional

import transaction

from .interfaces import KEY
from .queue import Queue, Queues


def install_queues(db, queues: Iterable[str] = ('',),
                   database_name: Optional[str] = None) -> list:
    """Make sure ``root[KEY]`` holds a Queues with the named queues.

    With ``database_name`` the Queues live in that database of ``db``'s
    multi-database, and the main root refers to them.  The Queues are
    committed in their own database first: a cross-database reference to
    a new object raises InvalidObjectReference.  Returns the names of
    the queues created now.
    """
    names = _check_names(queues)
    target = _database(db, database_name)
    created = _ensure_queues(target, names)
    if target is not db:
        _link_main_root(db, target)
    return created


def queue_database(db):
    """The database of ``db``'s multi-database whose root holds the
    queues: ``db`` itself, or the one its root's queues mapping lives in.

    zc.async starts its dispatcher from the main database of a two-
    database set-up; jobs must then be loaded through the connection of
    the queues' database: an oid means nothing in another one (loading
    it from the main database fails, or finds an unrelated object).
    """
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        queues = connection.root().get(KEY)
        jar = getattr(queues, '_p_jar', None)
        return db if jar is None else jar.db()
    finally:
        manager.abort()
        connection.close()


def _check_names(queues) -> list:
    if isinstance(queues, str):
        queues = [queues]
    names = list(queues)
    for name in names:
        if not isinstance(name, str):
            raise TypeError('queue names must be strings, got %r' % (name,))
    return names


def _database(db, database_name):
    if database_name is None or database_name == db.database_name:
        return db
    try:
        return db.databases[database_name]
    except KeyError:
        raise KeyError('no database named %r; known: %s' % (
            database_name, sorted(db.databases))) from None


#: Attempts of an install transaction: processes starting together on a
#: fresh database race to create the root entry, and the losers retry.
ATTEMPTS = 5


def _ensure_queues(db, names) -> list:
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        for attempt in manager.attempts(ATTEMPTS):
            with attempt:
                root = connection.root()
                queues = root.get(KEY)
                if queues is None:
                    queues = root[KEY] = Queues()
                created = [name for name in names if name not in queues]
                for name in created:
                    queues[name] = Queue(name)
        return created
    finally:
        connection.close()


def _link_main_root(main_db, queues_db) -> None:
    manager = transaction.TransactionManager()
    connection = main_db.open(transaction_manager=manager)
    try:
        for attempt in manager.attempts(ATTEMPTS):
            with attempt:
                root = connection.root()
                queues = connection.get_connection(
                    queues_db.database_name).root()[KEY]
                if root.get(KEY) is not queues:
                    root[KEY] = queues
    finally:
        connection.close()
