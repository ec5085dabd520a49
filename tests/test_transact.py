"""Private transactions (pyramid_zcasync.transact): they neither join nor
disturb the caller's transaction, and a write retries its conflicts."""
import transaction
import ZODB
import ZODB.POSException

from pyramid_zcasync import transact


def test_write_commits_without_touching_the_callers_transaction():
    db = ZODB.DB(None)
    outer = db.open()  # the caller's connection, thread-local manager
    outer.root()['mine'] = 'uncommitted'
    try:
        assert transact.write(db, lambda c: c.root().setdefault('x', 1)) == 1
        assert transact.read(db, lambda c: c.root().get('x')) == 1
        # The caller's change is still there, still uncommitted.
        assert outer.root()['mine'] == 'uncommitted'
        assert transact.read(db, lambda c: 'mine' in c.root()) is False
    finally:
        transaction.abort()
        outer.close()
        db.close()


def test_read_never_commits_what_work_changed():
    db = ZODB.DB(None)
    try:
        transact.read(db, lambda c: c.root().__setitem__('x', 1))
        assert transact.read(db, lambda c: 'x' in c.root()) is False
    finally:
        db.close()


def test_write_retries_a_conflict_with_fresh_state():
    db = ZODB.DB(None)
    calls = []

    def work(connection):
        calls.append(connection.root().get('n', 0))
        if len(calls) == 1:
            raise ZODB.POSException.ConflictError('racing process')
        connection.root()['n'] = calls[-1] + 1
        return len(calls)

    try:
        assert transact.write(db, work) == 2
        assert transact.read(db, lambda c: c.root()['n']) == 1
    finally:
        db.close()


def test_write_gives_up_after_its_attempts():
    db = ZODB.DB(None)

    def work(connection):
        raise ZODB.POSException.ConflictError('always')

    try:
        try:
            transact.write(db, work, attempts=3)
        except ZODB.POSException.ConflictError:
            pass
        else:
            raise AssertionError('a conflict on every attempt must surface')
    finally:
        db.close()
