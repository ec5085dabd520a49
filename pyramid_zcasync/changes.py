"""What a job's run changed, and which jobs touched an object.

Every run commits as one ZODB transaction, so the objects it changed are
the ones its connections hold registered as modified when its call
returns.  :class:`ChangeRecorder`, an extension, notes them around each
run: on entering ``around_run`` it remembers what is already registered
(a group commit's earlier jobs were savepointed, so usually nothing), on
leaving it keeps what the call added, and writes that onto the job in
the run's own transaction.  A failed attempt is rolled back with
everything else, so it records nothing: it changed nothing.

It costs one pass over the modified objects per run (one set
difference), and a few index entries per changed object; apps that do
not want it do not register it (setting ``zcasync.extensions =
pyramid_zcasync.changes.ChangeRecorder``, or ``extensions.add``).

What is recorded, bounded by :data:`LIMIT` per run (the rest counted):
each changed object's database, oid, class and, when it is locatable
through Pyramid's ``__parent__``/``__name__``, its path; objects the
call added to a connection are marked created (objects only reachable
from a changed one are stored at commit, after the call: they are not
listed).  The package's own bookkeeping (jobs, queues, agents...) is
left out; a job that puts jobs also changes the queue's BTree buckets,
which are listed as the BTrees they are, without a path.

The same run also adds its job to a bounded index per queue database
(:data:`INDEX_KEY` in its root): changed object (by oid, and by path)
-> the last :data:`TOUCHED_LIMIT` jobs.  And it keeps, for replays
(replay.py), the transaction each database was read at: in the change
record when the run succeeds, and in the job's annotations, written in a
small transaction of its own after a failed attempt (failures are rare;
the annotations' BTree is what live annotations write, so the job's own
transactions never conflict with it).
"""
from __future__ import annotations

import collections
import contextlib
import threading
from typing import (Any, ContextManager, Dict, Iterable, Iterator, List, NamedTuple,
                    Optional, Set, Tuple)

import BTrees.OOBTree
from ZODB.utils import p64, u64, z64

from . import extensions, transact
from .annotated import annotation

#: Most changed objects recorded per run; more are only counted.
LIMIT = 200
#: Most jobs the index keeps per changed object, the latest.
TOUCHED_LIMIT = 20
#: Deepest ``__parent__`` chain followed to make a path.
PATH_DEPTH = 64
#: The job attribute holding the record of its last successful run.
ATTRIBUTE = '_zcasync_changes'
#: The annotation holding what a failed attempt read (see module doc).
SEEN_KEY = 'pyramid_zcasync.seen'
#: The root key of the index of touched objects, in the queue database.
INDEX_KEY = 'pyramid_zcasync.touched'
#: Classes from these modules are the package's bookkeeping.
BOOKKEEPING = ('pyramid_zcasync.', 'zc.async.')
#: ... except the demo app's, which are an app's own objects.
NOT_BOOKKEEPING = ('pyramid_zcasync.demo.',)
#: Read tids kept in memory for attempts not reported yet.
PENDING_LIMIT = 1000

#: Database name -> the transaction id it was read before (exclusive).
ReadPoint = Tuple[Tuple[str, int], ...]


class Change(NamedTuple):
    """One object a run changed."""
    database: str
    oid: int
    class_name: str
    #: ``/a/b`` when locatable; '' when not.
    path: str
    created: bool


class Changes(NamedTuple):
    """What a job's last successful run changed: ``recorded`` is False
    for a job run without the recorder (or not run yet)."""
    recorded: bool
    changes: Tuple[Change, ...] = ()
    #: Changed objects beyond LIMIT, not listed.
    more: int = 0
    #: Where each database was read from, for a replay.
    read_before: ReadPoint = ()


NOT_RECORDED = Changes(False)


def of(job: Any) -> Changes:
    """What ``job``'s last successful run changed, as it stored it."""
    stored = getattr(job, ATTRIBUTE, None)
    if not (isinstance(stored, tuple) and len(stored) == 3):
        return NOT_RECORDED
    entries, more, read_before = stored
    return Changes(True, tuple(Change(*entry) for entry in entries), more,
                   tuple(read_before))


def seen_by_failure(job: Any) -> ReadPoint:
    """Where the last failed attempt read each database; () if unknown."""
    value = annotation(job, SEEN_KEY)
    return tuple(value) if isinstance(value, tuple) else ()


# -- watching connections ------------------------------------------------

def connections_of(jar: Any) -> Dict[str, Any]:
    """Every connection of ``jar``'s multi-database opened so far."""
    found = getattr(jar, 'connections', None)
    return dict(found) if found else {jar.db().database_name: jar}


def registered(connections: Dict[str, Any]) -> Dict[Tuple[str, bytes], Any]:
    """(database, oid) -> object, of what the connections will write:
    modified objects, and objects added explicitly (new ones)."""
    found: Dict[Tuple[str, bytes], Any] = {}
    for name, connection in connections.items():
        for obj in getattr(connection, '_registered_objects', ()):
            if obj._p_oid is not None:
                found[(name, obj._p_oid)] = obj
        for oid, obj in getattr(connection, '_added', {}).items():
            found[(name, oid)] = obj
    return found


def read_point(connections: Dict[str, Any]) -> ReadPoint:
    """Each connection's snapshot: the tid its reads are before."""
    points = []
    for name, connection in sorted(connections.items()):
        start = getattr(connection._storage, '_start', None)
        if start is None:
            start = p64(u64(connection.db().storage.lastTransaction()) + 1)
        points.append((name, u64(start)))
    return tuple(points)


def is_bookkeeping(obj: Any) -> bool:
    module = type(obj).__module__ + '.'
    return module.startswith(BOOKKEEPING) and \
        not module.startswith(NOT_BOOKKEEPING)


def path_of(obj: Any) -> str:
    """``/a/b`` by ``__name__`` up the ``__parent__`` chain to an object
    with no parent; '' when the chain is missing or too deep."""
    names: List[str] = []
    current = obj
    for _ in range(PATH_DEPTH):
        try:
            parent = current.__parent__
            name = current.__name__
        except AttributeError:
            return ''
        if parent is None:
            return '/' + '/'.join(reversed(names))
        if not isinstance(name, str):
            return ''
        names.append(name)
        current = parent
    return ''


def describe(database: str, obj: Any) -> Change:
    cls = type(obj)
    return Change(database, u64(obj._p_oid),
                  '%s.%s' % (cls.__module__, cls.__qualname__),
                  path_of(obj), obj._p_serial == z64)


def own_keys(job: Any) -> Set[Tuple[str, bytes]]:
    """The job's own records (itself, its annotations): written by the
    runner and by live annotations, not by what the job does."""
    name = job._p_jar.db().database_name
    own = {(name, job._p_oid)}
    annotations_oid = getattr(getattr(job, '_annotations', None),
                              '_p_oid', None)
    if annotations_oid is not None:
        own.add((name, annotations_oid))
    return own


def changes_between(before: Dict[Tuple[str, bytes], Any],
                    after: Dict[Tuple[str, bytes], Any],
                    skip: Set[Tuple[str, bytes]]) -> Tuple[List[Change], int]:
    """The changes registered in ``after`` and not ``before`` nor in
    ``skip``, the bookkeeping left out: the first LIMIT and how many
    more."""
    listed: List[Change] = []
    more = 0
    for key in sorted(after.keys() - before.keys() - skip):
        obj = after[key]
        if is_bookkeeping(obj):
            continue
        if len(listed) < LIMIT:
            listed.append(describe(key[0], obj))
        else:
            more += 1
    return listed, more


# -- the index of touched objects ---------------------------------------

def oid_key(database: str, oid: int) -> str:
    return 'oid %s %d' % (database, oid)


def path_key(path: str) -> str:
    return 'path ' + path


def index_of(connection: Any, create: bool = False) -> Any:
    root = connection.root()
    index = root.get(INDEX_KEY)
    if index is None and create:
        index = root[INDEX_KEY] = BTrees.OOBTree.OOBTree()
    return index


def install_index(db: Any) -> None:
    """Create the index in ``db`` if missing, in its own transaction, so
    the runs' transactions never race to create it."""
    def create(connection: Any) -> None:
        index_of(connection, create=True)
    transact.write(db, create)


def note_touched(index: Any, job_oid: int, changes: Iterable[Change]
                 ) -> None:
    """Add the job to each changed object's entries (by oid and path)."""
    for change in changes:
        keys = [oid_key(change.database, change.oid)]
        if change.path:
            keys.append(path_key(change.path))
        for key in keys:
            jobs = tuple(j for j in index.get(key, ()) if j != job_oid)
            index[key] = (jobs + (job_oid,))[-TOUCHED_LIMIT:]


def touched(queues_connection: Any, key: str) -> Tuple[int, ...]:
    """The job oids last recorded for ``key`` (oid_key or path_key),
    newest first."""
    index = index_of(queues_connection)
    if index is None:
        return ()
    return tuple(reversed(index.get(key, ())))


# -- the extension ------------------------------------------------------

class ChangeRecorder(extensions.Extension):
    """Records what each run changed; see the module's docstring."""

    def __init__(self) -> None:
        self._read: 'collections.OrderedDict[Tuple[str, int], ' \
            'Tuple[Any, ReadPoint]]' = collections.OrderedDict()
        self._lock = threading.Lock()

    def dispatcher_activated(self, dispatcher: Any) -> None:
        install_index(dispatcher.db)

    def around_run(self, job: Any) -> ContextManager[Any]:
        return self._recording(job)

    @contextlib.contextmanager
    def _recording(self, job: Any) -> Iterator[None]:
        jar = job._p_jar
        if jar is None or job._p_oid is None:
            yield
            return
        connections = connections_of(jar)
        point = read_point(connections)
        self._remember(jar.db(), u64(job._p_oid), point)
        before = registered(connections)
        yield
        self._record(job, jar, before, point)

    def _record(self, job: Any, jar: Any,
                before: Dict[Tuple[str, bytes], Any],
                point: ReadPoint) -> None:
        after = registered(connections_of(jar))
        listed, more = changes_between(before, after, own_keys(job))
        setattr(job, ATTRIBUTE, (tuple(tuple(c) for c in listed), more,
                                 point))
        if listed:
            note_touched(index_of(jar, create=True), u64(job._p_oid),
                         listed)

    def _remember(self, db: Any, oid: int, point: ReadPoint) -> None:
        with self._lock:
            self._read[(db.database_name, oid)] = (db, point)
            while len(self._read) > PENDING_LIMIT:
                self._read.popitem(last=False)

    def _forget(self, database: str, oid: int
                ) -> Optional[Tuple[Any, ReadPoint]]:
        with self._lock:
            return self._read.pop((database, oid), None)

    def after_run(self, run: extensions.RunReport) -> None:
        if not run.failed:
            self._forget(run.database, run.job_id)

    def on_failure(self, run: extensions.RunReport) -> None:
        remembered = self._forget(run.database, run.job_id)
        if remembered is None:
            return
        db, point = remembered
        oid = p64(run.job_id)

        def keep(connection: Any) -> None:
            connection.get(oid).annotations[SEEN_KEY] = point
        transact.write(db, keep)
