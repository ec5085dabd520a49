"""A ZEO client quirk worked around for dispatchers, and the commits of
other clients that its server pushes, heard as they arrive."""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, cast

log = logging.getLogger(__name__)


def forget_prefetched_oids_on_reconnect(storage: Any) -> None:
    """Work around ZEO reusing oids after a server restart.

    A ZEO ClientStorage prefetches new oids 100 at a time and keeps them
    across a reconnection, while a restarted FileStorage hands out oids
    again from the highest one *stored*.  Two clients then create objects
    with the same oid: ConflictError, or "ValueError: A different object
    already has the same oid" and later POSKeyError in the client whose
    cache that corrupted; jobs failed that way after a ZEO restart.
    Dropping the prefetched oids when the client (re)connects avoids it.
    Other storages are left alone.
    """
    prefetched = getattr(storage, '_oids', None)
    notify_connected = getattr(storage, 'notify_connected', None)
    if not isinstance(prefetched, list) or notify_connected is None or \
            getattr(notify_connected, '_zcasync_forgets_oids', False):
        return

    def forget_then_notify(conn: Any, info: Any) -> Any:
        del storage._oids[:]
        return notify_connected(conn, info)
    # Marked, so that a second call does not wrap it again.
    setattr(forget_then_notify, '_zcasync_forgets_oids', True)
    storage.notify_connected = forget_then_notify


#: ``callback(tid)``: told of a transaction another client committed.
CommitCallback = Callable[[bytes], None]


def on_invalidations(storage: Any, callback: CommitCallback
                     ) -> Optional[Callable[[], None]]:
    """Call ``callback(tid)`` each time the ZEO server reports a
    transaction committed by another client; return what stops it, or
    None when ``storage`` is no ZEO client (nothing is pushed to it).

    The server pushes every commit to its clients, which hand it to the
    database as ``storage.invalidateTransaction(tid, oids)``: hooked
    there, a dispatcher hears of another process's put as soon as the
    database does, instead of at its next look at the last transaction.
    ``callback`` runs in ZEO's I/O thread after the database took the
    invalidations in (a poll started from it sees the transaction): it
    must be quick and must not call the server.  A callback that raises
    is logged, never passed on to ZEO.
    """
    callbacks = _callbacks_of(storage)
    if callbacks is None:
        return None
    callbacks.append(callback)

    def stop() -> None:
        if callback in callbacks:
            callbacks.remove(callback)
    return stop


def _callbacks_of(storage: Any) -> Optional[List[CommitCallback]]:
    """The callbacks hooked into ``storage``'s invalidations, hooking
    them on first use; None for a storage that is not a ZEO client."""
    existing = getattr(storage, '_zcasync_commit_callbacks', None)
    if existing is not None:
        return cast(List[CommitCallback], existing)
    invalidate = getattr(storage, 'invalidateTransaction', None)
    if invalidate is None or not hasattr(storage, 'notify_connected'):
        return None
    callbacks: List[CommitCallback] = []

    def invalidate_then_tell(tid: bytes, oids: Any) -> Any:
        result = invalidate(tid, oids)
        # A copy: a dispatcher stopping meanwhile changes the list.
        for callback in tuple(callbacks):
            try:
                callback(tid)
            except Exception:
                log.exception('a commit callback failed (%r)', callback)
        return result
    storage._zcasync_commit_callbacks = callbacks
    storage.invalidateTransaction = invalidate_then_tell
    return callbacks
