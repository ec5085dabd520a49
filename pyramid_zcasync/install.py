"""Creating the queues mapping in a database, once, idempotently, and
upgrading queues stored in older layouts (layout.py)."""
from __future__ import annotations

from typing import Any, Iterable, List, Optional

from . import layout, transact
from .interfaces import KEY
from .queue import Queue, Queues


def install_queues(db: Any, queues: Iterable[str] = ('',),
                   database_name: Optional[str] = None) -> List[str]:
    """Make sure ``root[KEY]`` holds a Queues with the named queues, every
    queue in the current layout.

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


def queue_database(db: Any) -> Any:
    """The database of ``db``'s multi-database whose root holds the
    queues: ``db`` itself, or the one its root's queues mapping lives in.

    zc.async starts its dispatcher from the main database of a two-
    database set-up; jobs must then be loaded through the connection of
    the queues' database: an oid means nothing in another one (loading
    it from the main database fails, or finds an unrelated object).
    """
    def find(connection: Any) -> Any:
        jar = getattr(connection.root().get(KEY), '_p_jar', None)
        return db if jar is None else jar.db()
    return transact.read(db, find)


def _check_names(queues: Iterable[str]) -> List[str]:
    if isinstance(queues, str):
        queues = [queues]
    names = list(queues)
    for name in names:
        if not isinstance(name, str):
            raise TypeError('queue names must be strings, got %r' % (name,))
    return names


def _database(db: Any, database_name: Optional[str]) -> Any:
    if database_name is None or database_name == db.database_name:
        return db
    try:
        return db.databases[database_name]
    except KeyError:
        raise KeyError('no database named %r; known: %s' % (
            database_name, sorted(db.databases))) from None


def _ensure_queues(db: Any, names: List[str]) -> List[str]:
    """Processes starting together on a fresh database race to create the
    root entry: the losers retry (transact.write)."""
    def ensure(connection: Any) -> List[str]:
        root = connection.root()
        queues = root.get(KEY)
        if queues is None:
            queues = root[KEY] = Queues()
        created = [name for name in names if name not in queues]
        for name in created:
            queues[name] = Queue(name)
        for queue in queues.values():
            layout.upgrade(queue)
        return created
    return transact.write(db, ensure)


def _link_main_root(main_db: Any, queues_db: Any) -> None:
    def link(connection: Any) -> None:
        root = connection.root()
        queues = connection.get_connection(
            queues_db.database_name).root()[KEY]
        if root.get(KEY) is not queues:
            root[KEY] = queues
    transact.write(main_db, link)
