"""A ZEO client quirk worked around for dispatchers."""
from __future__ import annotations

from typing import Any


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
