"""Undo what a job's run changed, on a storage that keeps history.

ZODB's own undo reverts whole transactions, but a run's transaction also
holds the job's bookkeeping (and, in a group commit, other jobs' runs).
So this reverts only the objects the run changed, as the change recorder
listed them (changes.py): each is given back its state from before the
run, read from the storage's history, in the caller's transaction.

Refused, with the reason, when:

- the run has no record of its changes (not run with the recorder, not
  succeeded) or was undone already;
- the storage keeps no history (RelStorage with ``keep-history false``:
  configure ``keep-history true`` to be able to undo);
- a later transaction changed one of the objects (undoing would lose
  that change), or the history was packed away;
- the run changed more objects than it recorded (``more``).

Objects the run created are left as they are: once the objects that
referred to them are reverted nothing refers to them, and packing
removes them.  The undo is written in the job's life log.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Tuple

from ZODB.POSException import POSKeyError
from ZODB.utils import maxtid, p64, u64

from . import changes, lifelog

#: The job attribute set once its run was undone.
UNDONE = '_zcasync_undone'


class Refused(ValueError):
    """The run cannot be undone; the message says why."""


class Undone(NamedTuple):
    """What an undo reverted, and the created objects it left."""
    reverted: Tuple[changes.Change, ...]
    left_created: int


def undo(job: Any, who: str = 'an admin') -> Undone:
    """Revert the objects ``job``'s last run changed, in the current
    transaction of ``job``'s connection (the caller commits)."""
    record = changes.of(job)
    check_undoable(job, record)
    connection = job._p_jar
    planned = [(change, previous_state(connection, change, record))
               for change in record.changes if not change.created]
    for change, data in planned:
        restore(connection, change, data)
    reverted = tuple(change for change, _ in planned)
    setattr(job, UNDONE, True)
    lifelog.record(job, job.status, job.status,
                   'changes undone by %s (%d objects)' % (who,
                                                          len(reverted)))
    return Undone(reverted, len(record.changes) - len(reverted))


def check_undoable(job: Any, record: changes.Changes) -> None:
    if getattr(job, UNDONE, False):
        raise Refused('this run was undone already')
    if not record.recorded:
        raise Refused('no record of what this job changed: it has not '
                      'succeeded, or it ran without the change recorder')
    if record.more:
        raise Refused('the run changed %d objects more than it recorded: '
                      'undoing only some would leave the data half done'
                      % record.more)
    databases = job._p_jar.db().databases
    for name in {change.database for change in record.changes}:
        if name not in databases:
            raise Refused('the run changed database %r, which this app '
                          'does not open (it has %s)'
                          % (name, ', '.join(map(repr, sorted(databases)))))
        storage = job._p_jar.get_connection(name).db().storage
        if not getattr(storage, 'supportsUndo', lambda: False)():
            raise Refused(
                'database %r keeps no history (%s), so there is nothing '
                'to revert to; a RelStorage needs keep-history true'
                % (name, storage.getName()))


def previous_state(connection: Any, change: changes.Change,
                   record: changes.Changes) -> bytes:
    """The object's record from before the run, after checking that the
    run's is still its latest."""
    storage = connection.get_connection(change.database).db().storage
    oid = p64(change.oid)
    before = dict(record.read_before).get(change.database)
    try:
        found = storage.loadBefore(oid, p64(before)) if before else None
        current = storage.loadBefore(oid, maxtid)
    except POSKeyError:
        found = current = None
    if found is None or current is None:
        raise Refused('the history of %s %s is gone (packed?)'
                      % (change.class_name, describe(change)))
    data, _, replaced_by = found
    if replaced_by != current[1]:
        raise Refused('%s %s was changed again after this run (transaction '
                      '0x%016x): undoing would lose that change'
                      % (change.class_name, describe(change),
                         u64(current[1])))
    return bytes(data)


def restore(connection: Any, change: changes.Change, data: bytes) -> None:
    """Give the object the state ``data`` in this transaction."""
    own = connection.get_connection(change.database)
    obj = own.get(p64(change.oid))
    obj._p_activate()
    # The connection's reader turns references back into its objects.
    obj.__setstate__(own._reader.getState(data))
    obj._p_changed = True


def describe(change: changes.Change) -> str:
    return change.path or 'oid 0x%x' % change.oid

