"""The newest transaction of a database, as cheaply as its storage allows.

The dispatcher looks every few milliseconds (``WATCH_INTERVAL``) and polls
the queues when the answer changes, so a job put by another process starts
without waiting for a poll interval.

* FileStorage, MappingStorage and ZEO: ``storage.lastTransaction()`` is a
  local read, and ZEO's server pushes every commit to its clients.
* RelStorage (an ``IMVCCStorage``): the database's own storage object only
  learns of new transactions when *it* polls, and ZODB connections poll
  their own instances, never it: its ``lastTransaction()`` stays where it
  was (it missed this process's commits, too).  A storage instance of our
  own polls instead: ``poll_invalidations()`` is one short indexed query
  (about 1 ms on PostgreSQL), the one every connection makes at the start
  of a transaction.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

from ZODB.interfaces import IMVCCStorage

trace = logging.getLogger('pyramid_zcasync.trace')

#: Seconds to leave a storage alone after a look failed (server away),
#: instead of reconnecting every few milliseconds.
RETRY_AFTER = 1.0


class LastTransaction:
    """``latest()``: the id of the newest committed transaction.

    Not thread-safe: one thread (the dispatcher's reactor) calls it.
    """

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.mvcc = IMVCCStorage.providedBy(storage)
        self._instance: Any = None
        self._quiet_until = 0.0

    def latest(self) -> Optional[bytes]:
        if not self.mvcc:
            return self.storage.lastTransaction()
        if time.monotonic() < self._quiet_until:
            return None
        try:
            if self._instance is None:
                self._instance = self.storage.new_instance()
            self._instance.poll_invalidations()
            return self._instance.lastTransaction()
        except Exception:
            trace.debug('cannot read the last transaction of %r',
                        self.storage, exc_info=True)
            self._quiet_until = time.monotonic() + RETRY_AFTER
            self.close()
            return None

    def close(self) -> None:
        """Release our storage instance (its database connection)."""
        instance, self._instance = self._instance, None
        if instance is not None:
            try:
                instance.release()
            except Exception:
                trace.debug('releasing %r failed', instance, exc_info=True)
