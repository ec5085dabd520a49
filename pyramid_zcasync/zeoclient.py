"""A ZEO client quirk worked around for dispatchers, and the commits of
other clients that its server pushes, heard as they arrive."""
from __future__ import annotations

import logging
import threading
from typing import (Any, Callable, List, Optional, Sequence, Set, Tuple,
                    cast)

from ZODB.utils import p64, u64, z64

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
#: ``listener(tid, oids)``: the same, with the objects it changed.
Listener = Callable[[bytes, Sequence[bytes]], None]

#: A pushed commit changing more objects than this is not prefetched: a
#: put changes three or four, a bigger transaction is someone's bulk work
#: whose objects a poll may never read.
PREFETCH_MOST = 16
#: The most objects prefetched for one poll, from all commits pushed
#: since the one before.
PREFETCH_PER_POLL = 64


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
    return _listen(storage, lambda tid, oids: callback(tid))


class PushedObjects:
    """The objects other clients' small commits changed since the last
    :meth:`prefetch`, which asks the server for all of them at once.

    A poll woken by a put reads what the put changed: the stripe's
    bucket, the lane's counter, the new job.  Each is a cache miss (the
    push invalidated it, the job is new) and, loaded one by one, a round
    trip each to the server.  ``prefetch()`` at the start of the poll
    sends every request before the first load waits: the poll waits for
    about one round trip instead of one per object (ZEO collapses a load
    of an object being prefetched into the prefetch's request)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._oids: Set[bytes] = set()
        #: The newest pushed transaction: the storage's own last
        #: transaction is set only after the listeners are told.
        self._tid = z64

    def add(self, tid: bytes, oids: Sequence[bytes]) -> None:
        """Note a pushed commit (in ZEO's I/O thread)."""
        with self._lock:
            self._tid = max(self._tid, tid)
            if len(oids) <= PREFETCH_MOST and \
                    len(self._oids) < PREFETCH_PER_POLL:
                self._oids.update(oids)

    def prefetch(self) -> int:
        """Ask the server for the noted objects as of the newest
        transaction (not from ZEO's I/O thread: ZEO before 6 waits for
        the answers); how many were asked for."""
        with self._lock:
            oids, self._oids = self._oids, set()
            pushed = self._tid
        if not oids:
            return 0
        # As of the newest transaction, as the poll's connection will
        # load them (a prefetch for another one would not be shared).
        last = max(pushed, self.storage.lastTransaction() or z64)
        try:
            self.storage.prefetch(list(oids), p64(u64(last) + 1))
        except Exception:  # a server away: the poll's loads will say so
            log.debug('prefetching %d objects failed', len(oids),
                      exc_info=True)
            return 0
        return len(oids)


def pushed_objects(storage: Any
                   ) -> Optional[Tuple[PushedObjects, Callable[[], None]]]:
    """Note the objects that other clients' commits change, for a
    prefetch (see :class:`PushedObjects`), and what stops noting them;
    None when ``storage`` is no ZEO client or cannot prefetch."""
    if not hasattr(storage, 'prefetch'):
        return None
    pushed = PushedObjects(storage)
    stop = _listen(storage, pushed.add)
    if stop is None:
        return None
    return pushed, stop


def _listen(storage: Any, listener: Listener
            ) -> Optional[Callable[[], None]]:
    listeners = _listeners_of(storage)
    if listeners is None:
        return None
    listeners.append(listener)

    def stop() -> None:
        if listener in listeners:
            listeners.remove(listener)
    return stop


def _listeners_of(storage: Any) -> Optional[List[Listener]]:
    """The listeners hooked into ``storage``'s invalidations, hooking
    them on first use; None for a storage that is not a ZEO client."""
    existing = getattr(storage, '_zcasync_commit_listeners', None)
    if existing is not None:
        return cast(List[Listener], existing)
    invalidate = getattr(storage, 'invalidateTransaction', None)
    if invalidate is None or not hasattr(storage, 'notify_connected'):
        return None
    listeners: List[Listener] = []

    def invalidate_then_tell(tid: bytes, oids: Any) -> Any:
        result = invalidate(tid, oids)
        # A copy: a dispatcher stopping meanwhile changes the list.
        for listener in tuple(listeners):
            try:
                listener(tid, oids)
            except Exception:
                log.exception('a commit callback failed (%r)', listener)
        return result
    storage._zcasync_commit_listeners = listeners
    storage.invalidateTransaction = invalidate_then_tell
    return listeners
