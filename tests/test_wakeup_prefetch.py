"""A poll woken by another process's put asks the ZEO server for what the
put changed all at once (zeoclient.PushedObjects), instead of loading
each object in a round trip of its own."""
import ZODB.FileStorage
from persistent.mapping import PersistentMapping
from ZODB.utils import p64, u64

from dbtools import read, write
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync import wakeup, zeoclient
from test_wakeup import wait_until


def cached_now(storage, oid):
    """Whether ZEO's client cache holds ``oid`` as of the newest
    transaction (a load would not ask the server)."""
    before = p64(u64(storage.lastTransaction()) + 1)
    return storage._cache.loadBefore(oid, before) is not None


def test_objects_a_pushed_commit_changed_are_prefetched(zeo_server):
    listening, other = zeo_server.db(), zeo_server.db()
    write(other, lambda root: root.__setitem__('box', PersistentMapping()))
    # The push reaches the other client a moment after the commit returns.
    wait_until(lambda: listening.storage.lastTransaction()
               == other.storage.lastTransaction(), what='the first push')

    def load_box(root):
        box = root['box']
        len(box)  # loaded, not a ghost
        return box._p_oid
    box_oid = read(listening, load_box)
    assert cached_now(listening.storage, box_oid)
    pushed, stop = zeoclient.pushed_objects(listening.storage)
    try:
        seen = listening.storage.lastTransaction()
        write(other, lambda root: root['box'].__setitem__('x', 1))
        wait_until(lambda: listening.storage.lastTransaction() != seen,
                   what='the push')
        assert not cached_now(listening.storage, box_oid)  # invalidated
        assert pushed.prefetch() == 1
        wait_until(lambda: cached_now(listening.storage, box_oid),
                   what='the prefetch')
        assert pushed.prefetch() == 0  # each commit's objects once
    finally:
        stop()
    listening.close()
    other.close()


def test_big_commits_and_stopped_notes_prefetch_nothing(zeo_server):
    listening, other = zeo_server.db(), zeo_server.db()
    pushed, stop = zeoclient.pushed_objects(listening.storage)

    def many(root):
        for key in range(zeoclient.PREFETCH_MOST + 1):
            root[key] = PersistentMapping()
    seen = listening.storage.lastTransaction()
    write(other, many)
    wait_until(lambda: listening.storage.lastTransaction() != seen,
               what='the push')
    assert pushed.prefetch() == 0
    stop()
    seen = listening.storage.lastTransaction()
    write(other, lambda root: root.__setitem__('y', 1))
    wait_until(lambda: listening.storage.lastTransaction() != seen,
               what='the push')
    assert pushed.prefetch() == 0
    listening.close()
    other.close()


def test_storages_that_push_nothing_prefetch_nothing(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'D.fs')))
    assert zeoclient.pushed_objects(db.storage) is None
    subscription = wakeup.listen(db, print)
    assert subscription.prefetch() == 0
    subscription.close()
    db.close()


def test_a_zeo_subscription_prefetches_and_stops_noting(zeo_server):
    listening, other = zeo_server.db(), zeo_server.db()
    subscription = wakeup.listen(listening, lambda tid: None)
    assert subscription.kind == 'zeo'
    seen = listening.storage.lastTransaction()
    write(other, lambda root: root.__setitem__('z', PersistentMapping()))
    wait_until(lambda: listening.storage.lastTransaction() != seen,
               what='the push')
    assert subscription.prefetch() == 2  # the root and the new mapping
    subscription.close()
    assert listening.storage._zcasync_commit_listeners == []
    listening.close()
    other.close()


def test_each_poll_prefetches_first(fs_db):
    dispatcher = dispatcher_module.Dispatcher(fs_db, 'u')
    order = []

    class Pushed:
        def prefetch(self):
            order.append('prefetch')
            return 0
    dispatcher.pushed = Pushed()
    dispatcher._poll_once = lambda: order.append('poll')
    dispatcher._poll()
    assert order == ['prefetch', 'poll']
