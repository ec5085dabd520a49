"""install_queues: one database, or the queues in a database of their own."""
import operator

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage

import pyramid_zcasync
from pyramid_zcasync.interfaces import KEY, IQueue
from pyramid_zcasync.queue import Queue, Queues


def open_two(directory=None):
    """A main database '' and an 'async' one, as pyramid_zodbconn names
    them; FileStorage when ``directory`` is given."""
    def storage(name):
        if directory is None:
            return ZODB.MappingStorage.MappingStorage()
        return ZODB.FileStorage.FileStorage(str(directory / name))
    databases = {}
    main = ZODB.DB(storage('main.fs'), databases=databases, database_name='')
    ZODB.DB(storage('async.fs'), databases=databases, database_name='async')
    return main, databases


def close_all(databases):
    transaction.abort()
    for db in list(databases.values()):
        db.close()


def test_install_is_idempotent():
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    try:
        assert pyramid_zcasync.install_queues(db) == ['']
        conn = db.open()
        queue = IQueue(conn.root())
        queue.put(operator.add, 1, 1)
        transaction.commit()
        assert pyramid_zcasync.install_queues(db) == []
        assert pyramid_zcasync.install_queues(db, ('', 'mail')) == ['mail']
        transaction.begin()
        queues = conn.root()[KEY]
        assert isinstance(queues, Queues)
        assert sorted(queues) == ['', 'mail']
        assert IQueue(conn.root()) is queue and len(queue) == 1
        assert isinstance(queues['mail'], Queue)
        assert queues['mail'].name == 'mail'
        conn.close()
    finally:
        db.close()


def test_a_single_name_may_be_a_string():
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    try:
        assert pyramid_zcasync.install_queues(db, 'mail') == ['mail']
    finally:
        db.close()


def test_bad_queue_name_is_refused_naming_it():
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    try:
        with pytest.raises(TypeError, match='got 7'):
            pyramid_zcasync.install_queues(db, ['', 7])
        conn = db.open()
        assert KEY not in conn.root()
        conn.close()
    finally:
        db.close()


def test_root_without_queues_does_not_adapt():
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    try:
        conn = db.open()
        with pytest.raises(TypeError, match='Could not adapt'):
            IQueue(conn.root())
        assert IQueue(conn.root(), None) is None
        conn.close()
    finally:
        db.close()


def test_two_databases_queues_live_in_async_and_both_roots_adapt():
    main, databases = open_two()
    try:
        assert pyramid_zcasync.install_queues(
            main, database_name='async') == ['']
        assert pyramid_zcasync.install_queues(
            main, database_name='async') == []
        conn = main.open()
        async_conn = conn.get_connection('async')
        queue = IQueue(conn.root())
        assert IQueue(async_conn.root()) is queue
        assert queue._p_jar is async_conn
        job = queue.put(operator.add, 1, 1)
        transaction.commit()
        assert job._p_jar is async_conn  # the job is stored with its queue
        conn.close()
    finally:
        close_all(databases)


def test_two_databases_survive_reopening(tmp_path):
    main, databases = open_two(tmp_path)
    try:
        pyramid_zcasync.install_queues(main, ('', 'mail'),
                                       database_name='async')
        conn = main.open()
        IQueue(conn.root()).put(operator.add, 2, 2)
        transaction.commit()
        conn.close()
    finally:
        close_all(databases)

    main, databases = open_two(tmp_path)
    try:
        assert pyramid_zcasync.install_queues(
            main, ('', 'mail'), database_name='async') == []
        conn = main.open()
        queue = IQueue(conn.root())
        assert queue._p_jar.db() is databases['async']
        assert [job.args[0] for job in queue] == [2]
        assert sorted(conn.root()[KEY]) == ['', 'mail']
        # the main root holds only a reference: the async root is the home
        async_root = conn.get_connection('async').root()
        assert async_root[KEY] is conn.root()[KEY]
        conn.close()
    finally:
        close_all(databases)


def test_unknown_database_name_is_refused_naming_it():
    main, databases = open_two()
    try:
        with pytest.raises(KeyError, match="'jobs'.*'async'"):
            pyramid_zcasync.install_queues(main, database_name='jobs')
    finally:
        close_all(databases)


def test_database_name_of_the_main_database_means_the_main_one():
    main, databases = open_two()
    try:
        assert pyramid_zcasync.install_queues(main, database_name='') == ['']
        conn = main.open()
        assert IQueue(conn.root())._p_jar is conn
        assert KEY not in conn.get_connection('async').root()
        conn.close()
    finally:
        close_all(databases)


def test_two_processes_installing_at_once_both_succeed(monkeypatch):
    """A web process and a worker starting together on a fresh database:
    the loser of the race on the root retries instead of failing."""
    from pyramid_zcasync import install
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    real_queues = install.Queues
    raced = []

    def racing_queues():
        if not raced:
            raced.append(True)
            # the other process commits its install while we build ours
            assert pyramid_zcasync.install_queues(db, ('', 'other')) == [
                '', 'other']
        return real_queues()
    monkeypatch.setattr(install, 'Queues', racing_queues)
    try:
        assert pyramid_zcasync.install_queues(db, ('', 'mine')) == ['mine']
        conn = db.open()
        assert sorted(conn.root()[KEY]) == ['', 'mine', 'other']
        conn.close()
    finally:
        db.close()
