"""What a job changed (changes.py), recorded by a real dispatcher on
FileStorage, and which jobs touched an object."""
import pytest
import transaction
from ZODB.utils import u64

import apptree
from pyramid_zcasync import changes, extensions
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import wait_for_annotation, wait_for_result

#: The name ZODB gives a database of its own.
DB = 'unnamed'


@pytest.fixture
def recorder(fs_db):
    """The recorder hooked into ``fs_db`` before the dispatcher starts
    (ask for it before ``dispatcher``)."""
    added = changes.ChangeRecorder()
    extensions.add(fs_db, added)
    yield added
    extensions.remove(fs_db, added)


@pytest.fixture
def site(fs_db):
    return apptree.make_site(fs_db)


@pytest.fixture
def connection(fs_db):
    opened = fs_db.open()
    yield opened
    transaction.abort()
    opened.close()


def put(connection, func, *args):
    job = IQueue(connection.root()).put(func, *args)
    transaction.commit()
    return job


def test_a_run_records_the_objects_it_changed(recorder, dispatcher, site,
                                              connection):
    item = connection.get(site['a'])
    job = put(connection, apptree.set_value, item, 5)
    assert wait_for_result(job) == 5
    found = changes.of(job)
    assert found.recorded and found.more == 0
    assert found.changes == (changes.Change(
        DB, u64(site['a']), 'apptree.Item', '/docs/a', False),)
    assert dict(found.read_before)[DB] > 0
    # the index: by oid and by path, newest first
    assert changes.touched(connection, changes.oid_key(DB, u64(
        site['a']))) == (u64(job._p_oid),)
    again = put(connection, apptree.set_value, item, 6)
    wait_for_result(again)
    assert changes.touched(connection, changes.path_key('/docs/a')) == (
        u64(again._p_oid), u64(job._p_oid))


def test_created_objects_are_marked(recorder, dispatcher, site, connection):
    docs = connection.get(site['docs'])
    job = put(connection, apptree.add_item, docs, 'c', 3)
    assert wait_for_result(job) == 'c'
    listed = {(c.class_name, c.path, c.created)
              for c in changes.of(job).changes}
    assert listed == {('apptree.Folder', '/docs', False),
                      ('apptree.Item', '/docs/c', True)}


def test_a_failed_attempt_records_nothing_but_what_it_read(
        recorder, dispatcher, site, connection):
    item = connection.get(site['a'])
    job = put(connection, apptree.set_then_fail, item, 9)
    wait_for_result(job)
    wait_for_annotation(job, changes.SEEN_KEY)
    assert changes.of(job) == changes.NOT_RECORDED
    assert item.value == 1
    seen = dict(changes.seen_by_failure(job))
    assert seen[DB] > 0
    assert changes.touched(connection, changes.path_key('/docs/a')) == ()


def test_without_the_recorder_nothing_is_recorded(dispatcher, site,
                                                  connection):
    job = put(connection, apptree.set_value, connection.get(site['a']), 4)
    wait_for_result(job)
    assert changes.of(job) == changes.NOT_RECORDED
    assert changes.touched(connection, changes.path_key('/docs/a')) == ()


def test_the_record_is_bounded(fs_db, site, connection, monkeypatch):
    monkeypatch.setattr(changes, 'LIMIT', 1)
    docs = connection.get(site['docs'])
    before = changes.registered({'': connection})
    docs['a'].value = docs['b'].value = 7
    listed, more = changes.changes_between(
        before, changes.registered({'': connection}), set())
    assert len(listed) == 1 and more == 1


def test_paths_and_bookkeeping():
    docs = apptree.Folder('docs', apptree.Folder())
    item = docs.add(apptree.Item('a'))
    assert changes.path_of(item) == '/docs/a'
    assert changes.path_of(object()) == ''
    assert changes.path_of(apptree.Item(None)) == '/'
    from pyramid_zcasync.job import Job
    assert changes.is_bookkeeping(Job(len))
    assert not changes.is_bookkeeping(item)


def test_jobs_committed_together_each_record_their_own(
        recorder, dispatcher, site, connection):
    queue = IQueue(connection.root())
    docs = connection.get(site['docs'])
    puts = [queue.put(apptree.set_value, docs[name], value)
            for name, value in (('a', 10), ('b', 20), ('a', 30))]
    transaction.commit()
    for job in puts:
        wait_for_result(job)
    assert [[c.path for c in changes.of(job).changes] for job in puts] == [
        ['/docs/a'], ['/docs/b'], ['/docs/a']]
