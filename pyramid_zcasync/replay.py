"""Dry runs and replays: a job called in a throw-away copy of the data.

A **dry run** calls a pending job on the current data, to see what it
would change before it runs.  A **replay** calls a completed job (a
failed one, usually) on the data as its attempt saw it, to debug it.
Both open every database of the job's multi-database as of a fixed
transaction, through :class:`FrozenStorage` (read-only, answering every
load as of that point, so it never moves), under a ZODB ``DemoStorage``
that takes the job's writes in memory.  The job is called there in a
transaction of its own, what it changed is noted as the recorder notes
a run (changes.py), and the transaction is aborted and the copies
closed: nothing reaches the real databases, whose last transaction is
unchanged.

Both RE-RUN THE JOB'S CODE: what it does outside ZODB (mail sent, files
written, HTTP calls) happens again.  That is why the command line wants
``--yes`` and the dashboard a confirmation.  The call happens in the
caller's thread (the request, the command), without the job's time
limit: replay jobs that end.

Where a replay reads from, best first: what the failed attempt read (the
recorder keeps it after a failure), what the last successful run read
(kept with its changes), else the data just before the job's last
transaction (its failure or result being recorded), the same timestamp
for every database.
"""
from __future__ import annotations

import contextlib
import dataclasses
import reprlib
from typing import Any, Dict, Iterator, Optional, Tuple

import transaction
import ZODB
import ZODB.DemoStorage
from ZODB.interfaces import IMVCCStorage
from ZODB.POSException import POSKeyError, ReadOnlyError
from ZODB.utils import maxtid, p64, u64

from . import changes, local
from .failure import Failure
from .interfaces import COMPLETED, PENDING
from .runner import settle
from .safetext import bound, clip

#: Longest result repr and traceback kept in a trial's outcome.
RESULT_LIMIT = 500
TRACEBACK_LIMIT = 8000
#: How long a replayed job's Deferred result is waited for.
SETTLE_SECONDS = 60.0


class Refused(ValueError):
    """The job cannot be dry run or replayed; the message says why."""


class FrozenStorage:
    """A read-only view of ``base`` as it was before transaction
    ``before``: what DemoStorage needs beneath it, a base that does not
    change while the job runs over it.  Closing it leaves ``base`` open."""

    def __init__(self, base: Any, before: bytes) -> None:
        self.base = base
        self.before = before
        self.__name__ = 'Frozen(%s before 0x%x)' % (base.getName(),
                                                     u64(before))

    def getName(self) -> str:
        return self.__name__

    def sortKey(self) -> str:
        return self.__name__

    def lastTransaction(self) -> bytes:
        return p64(u64(self.before) - 1)

    def loadBefore(self, oid: bytes, tid: bytes
                   ) -> Optional[Tuple[bytes, bytes, Optional[bytes]]]:
        found = self.base.loadBefore(oid, min(tid, self.before))
        if found is None:
            return None
        data, start, end = found
        # A revision replaced after our point is current here.
        return data, start, None if end is None or end >= self.before \
            else end

    def load(self, oid: bytes, version: str = '') -> Tuple[bytes, bytes]:
        found = self.loadBefore(oid, maxtid)
        if found is None:
            raise POSKeyError(oid)
        return found[0], found[1]

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes:
        return bytes(self.base.loadSerial(oid, serial))

    def loadBlob(self, oid: bytes, serial: bytes) -> str:
        return str(self.base.loadBlob(oid, serial))

    def getTid(self, oid: bytes) -> bytes:
        return self.load(oid)[1]

    def isReadOnly(self) -> bool:
        return True

    def supportsUndo(self) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def getSize(self) -> int:
        return 0

    def registerDB(self, db: Any) -> None:
        """Invalidations are for storages that change."""

    def close(self) -> None:
        """The base belongs to the real database: left open."""

    def new_oid(self) -> bytes:
        raise ReadOnlyError()

    def tpc_begin(self, *args: Any) -> None:
        raise ReadOnlyError()


# -- the throw-away copy -------------------------------------------------

@contextlib.contextmanager
def readable(storage: Any) -> Iterator[Any]:
    """What loads can be asked of: the storage itself, or for a storage
    whose connections each need an instance of their own (RelStorage),
    such an instance, released on leaving."""
    if not IMVCCStorage.providedBy(storage):
        yield storage
        return
    instance = storage.new_instance()
    try:
        instance.poll_invalidations()
        yield instance
    finally:
        instance.release()


@contextlib.contextmanager
def sandbox(db: Any, read_before: Dict[str, int]
            ) -> Iterator[Tuple[Any, changes.ReadPoint]]:
    """A connection to a throw-away copy of ``db``'s multi-database, each
    database as of before its tid in ``read_before`` (default: its last
    transaction, as a new connection sees it), and the tids used; its
    transaction is aborted and every copy closed on leaving."""
    copies: Dict[str, Any] = {}
    used: Dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(close_all, copies)
        for name, real in db.databases.items():
            base = stack.enter_context(readable(real.storage))
            point = read_before.get(name) or \
                u64(base.lastTransaction()) + 1
            used[name] = point
            frozen = FrozenStorage(base, p64(point))
            ZODB.DB(ZODB.DemoStorage.DemoStorage(
                        base=frozen, close_base_on_close=False),
                    database_name=name, databases=copies)
        manager = transaction.TransactionManager()
        connection = copies[db.database_name].open(
            transaction_manager=manager)
        try:
            yield connection, tuple(sorted(used.items()))
        finally:
            manager.abort()
            connection.close()


def close_all(copies: Dict[str, Any]) -> None:
    for copy in copies.values():
        copy.close()


# -- trials ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Trial:
    """What a dry run or a replay came to."""
    #: 'dryrun' or 'replay'.
    kind: str
    job: int
    #: Database -> the tid the copy was read before, and why that one.
    read_before: changes.ReadPoint
    source: str
    succeeded: bool
    #: repr of the result (clipped), or the traceback (middle cut).
    result: str
    traceback: str
    changes: Tuple[changes.Change, ...]
    more: int


def dry_run(job: Any) -> Trial:
    """Call the pending ``job`` on the current data; nothing is kept."""
    if job.status != PENDING:
        raise Refused('a dry run is for a pending job; this one is %s '
                      '(replay a completed one)' % job.status)
    return _trial('dryrun', job, (), 'the current data')


def replay(job: Any) -> Trial:
    """Call the completed ``job`` on the data its attempt read."""
    if job.status != COMPLETED:
        raise Refused('a replay is for a completed job (failed, usually); '
                      'this one is %s (dry run a pending one)' % job.status)
    point, source = replay_point(job)
    for name, db in sorted(job._p_jar.db().databases.items()):
        if getattr(db.storage, 'keep_history', True) is False:
            raise Refused(
                'database %r keeps no history (a history-free RelStorage): '
                'there is no past data to replay on; configure keep-history '
                'true to replay, or dry run pending jobs instead' % name)
    return _trial('replay', job, point, source)


def replay_point(job: Any) -> Tuple[changes.ReadPoint, str]:
    """Where to read from to replay ``job``, and why (module doc)."""
    if isinstance(job.result, Failure):
        seen = changes.seen_by_failure(job)
        if seen:
            return seen, 'the data its failed attempt read'
    recorded = changes.of(job)
    if recorded.recorded and recorded.read_before:
        return recorded.read_before, 'the data its last run read'
    last = u64(job._p_serial)
    return (tuple((name, last) for name in sorted(job._p_jar.db().databases)),
            'the data just before its last transaction (no record of what '
            'it read: the change recorder was not registered)')


def _trial(kind: str, job: Any, point: changes.ReadPoint, source: str
           ) -> Trial:
    db = job._p_jar.db()
    with sandbox(db, dict(point)) as (connection, used):
        copy = connection.get(job._p_oid)
        outcome = _call(copy, connection.db())
        listed, more = changes.changes_between(
            {}, changes.registered(changes.connections_of(connection)),
            changes.own_keys(copy))
    return Trial(kind, u64(job._p_oid), used, source, *outcome,
                 tuple(listed), more)


def _call(job: Any, db: Any) -> Tuple[bool, str, str]:
    """(succeeded, result repr, traceback) of one call of ``job``."""
    try:
        with local.running(job, db):
            result = settle(job.invoke(), SETTLE_SECONDS)
    except Exception as exc:
        failure = Failure.from_exception(exc)
        text, _ = bound(failure.getTraceback(), TRACEBACK_LIMIT)
        return False, clip(repr(failure), RESULT_LIMIT), text
    return True, clip(reprlib.repr(result), RESULT_LIMIT), ''
