"""How a dispatcher hears of a job put by another process as it commits.

Each storage that can push offers its own way: a ZEO server sends every
commit to its other clients (zeoclient.on_invalidations), and on
RelStorage-PostgreSQL a put sends NOTIFY, which a listening connection
hears (pgnotify.py).  :func:`listen` subscribes a dispatcher to what its
database's storage offers; :func:`announce_puts` makes the puts of this
process send what the other processes listen for (on PostgreSQL; ZEO
needs nothing).  A storage offering neither (FileStorage: one process)
is left to the dispatcher's watch of the last transaction and its polls,
which also remain behind the push, for what it might miss (a server
away, a notification lost).  Over ZEO the push also names the objects
the commit changed: the next poll asks for them all at once before it
reads them (:meth:`Subscription.prefetch`).
"""
from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional

from . import extensions, pgnotify, zeoclient

#: ``on_commit(tid)``: another process committed; ``tid`` is its
#: transaction when known (ZEO), None when not (PostgreSQL).
OnCommit = Callable[[Optional[bytes]], None]

_announcing = threading.Lock()


class Subscription:
    """What :func:`listen` set up; ``close()`` undoes it."""

    def __init__(self, kind: str, stops: List[Callable[[], None]],
                 listener: Optional[pgnotify.Listener] = None,
                 pushed: Optional[zeoclient.PushedObjects] = None) -> None:
        #: 'zeo', 'postgresql' or 'none': what pushes commits here.
        self.kind = kind
        #: The PostgreSQL listener, if any (its state, for tests).
        self.listener = listener
        self._pushed = pushed
        self._stops = stops

    def prefetch(self) -> int:
        """Before a poll: ask the server at once for the objects that
        pushed commits changed since the last poll (ZEO), which the poll
        would otherwise load one round trip each; how many were asked
        for."""
        if self._pushed is None:
            return 0
        return self._pushed.prefetch()

    def close(self) -> None:
        stops, self._stops = self._stops, []
        for stop in stops:
            stop()

    def __repr__(self) -> str:
        return '<wake-up subscription: %s>' % self.kind


def listen(db: Any, on_commit: OnCommit) -> Subscription:
    """Call ``on_commit`` when another process commits to ``db`` (ZEO)
    or puts a job into it (PostgreSQL), from a thread of the storage's
    or of our own: it must be quick and thread-safe."""
    # Noted before ``on_commit`` is told: the poll it starts prefetches.
    noting = zeoclient.pushed_objects(db.storage)
    stop = zeoclient.on_invalidations(db.storage, on_commit)
    if stop is not None:
        if noting is None:
            return Subscription('zeo', [stop])
        pushed, stop_noting = noting
        return Subscription('zeo', [stop, stop_noting], pushed=pushed)
    dsn = pgnotify.postgresql_dsn(db.storage)
    if dsn is not None:
        listener = pgnotify.Listener(dsn, lambda: on_commit(None))
        return Subscription('postgresql', [listener.close], listener)
    return Subscription('none', [])


def announce_puts(db: Any) -> Optional[pgnotify.NotifyOnPut]:
    """Make this process's puts into ``db`` wake the dispatchers of other
    processes, where the storage needs it (RelStorage on PostgreSQL);
    return the extension doing it, or None.  Calling it again for the
    same database returns the extension already added."""
    with _announcing:
        for member in extensions.of(db):
            if isinstance(member, pgnotify.NotifyOnPut):
                return member
        dsn = pgnotify.postgresql_dsn(db.storage)
        if dsn is None:
            return None
        announcer = pgnotify.NotifyOnPut(dsn)
        extensions.add(db, announcer)
        return announcer
