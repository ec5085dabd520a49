"""A queue of many pending jobs: the admin views read counters and the
first few jobs, never every job; claims leave the BTree nodes alone.

Counted in objects loaded from the storage and records changed, not in
time: a modest queue shows whether the cost grows with its size.
"""
import operator

import BTrees.OOBTree
import transaction
import webtest

from pyramid_zcasync import keys
from pyramid_zcasync.config import close_databases
from pyramid_zcasync.interfaces import IQueue
from adminapp import ADMIN, make_admin_app

PENDING = 3000
#: Far below PENDING: what a page may load besides the jobs it shows.
MOST_LOADS = 300


class LoadCounter:
    """Objects every connection of ``db`` loads (through ``loadBefore``)."""

    def __init__(self, db):
        self.count = 0
        storage = db.storage
        for name in ('load', 'loadBefore'):
            setattr(storage, name, self._counting(getattr(storage, name)))

    def _counting(self, method):
        def counted(*args):
            self.count += 1
            return method(*args)
        return counted


def _fill(db, count):
    conn = db.open()
    queue = IQueue(conn.root())
    for i in range(count):
        queue.put(operator.add, i, 1)
    transaction.commit()
    conn.close()


def test_the_views_of_a_big_queue_load_a_bounded_number_of_objects(
        tmp_path):
    app = make_admin_app(tmp_path)
    try:
        db = app.registry._zodb_databases['']
        _fill(db, PENDING)
        db.cacheMinimize()
        loads = LoadCounter(db)
        client = webtest.TestApp(app)
        assert client.get('/_async/db/count', headers=ADMIN).json == PENDING
        assert loads.count < MOST_LOADS
        loads.count = 0
        page = client.get('/_async/', headers=ADMIN)
        assert str(PENDING) in page.text
        assert loads.count < MOST_LOADS
    finally:
        close_databases(app.registry)


def _front_tree(count):
    tree = BTrees.OOBTree.OOBTree()
    tree[keys.FLOOR] = None
    for i in range(count):
        tree[keys.make(1000 + i, 0)] = i
    return tree


def test_removing_from_the_front_rewrites_a_node_once_per_bucket():
    db = __import__('ZODB').DB(None)
    conn = db.open()
    conn.root()['tree'] = _front_tree(600)
    transaction.commit()
    tree = conn.root()['tree']
    node_changes = 0
    for i in range(600):
        assert keys.remove(tree, keys.make(1000 + i, 0)) == i
        node_changes += bool(tree._p_changed)
        transaction.commit()
    assert list(tree.items()) == [(keys.FLOOR, None)]
    # 600 jobs fill about 40 buckets: about one node change for each.
    assert node_changes < 600 // 10
    db.close()


def test_remove_keeps_the_floor_first_and_the_other_keys():
    tree = _front_tree(200)
    for i in range(0, 200, 2):
        keys.remove(tree, keys.make(1000 + i, 0))
    assert tree.minKey() == keys.FLOOR
    assert list(tree.values())[1:] == list(range(1, 200, 2))

