"""Undoing what a run changed (undo.py): on FileStorage and over ZEO,
refused when changed since, undone already, or without history; the
admin action (CSRF) and ``pzcasync undo``."""
import pytest
import transaction
from ZODB.utils import u64

import apptree
from pyramid_zcasync import changes, undo
from pyramid_zcasync.testing import wait_for_result
# Fixtures shared with the replay and dashboard tests.
from test_dashboard import made  # noqa: F401
from test_replay import connection, item_a, put, real_db  # noqa: F401


def finished(connection, func, *args):
    job = put(connection, func, *args)
    wait_for_result(job)
    return job


def test_undo_reverts_the_runs_changes(real_db, connection):  # noqa: F811
    item = item_a(connection)
    docs = item.__parent__
    job = finished(connection, apptree.set_value, item, 5)
    added = finished(connection, apptree.add_item, docs, 'c', 3)
    assert item.value == 5 and 'c' in docs
    done = undo.undo(added, 'tests')
    assert [c.path for c in done.reverted] == ['/docs']
    assert done.left_created == 1
    done = undo.undo(job, 'tests')
    assert [c.path for c in done.reverted] == ['/docs/a']
    transaction.commit()
    assert item.value == 1 and 'c' not in docs
    assert job.events[-1].detail == 'changes undone by tests (1 objects)'
    with pytest.raises(undo.Refused, match='undone already'):
        undo.undo(job)


def test_undo_is_refused_when_changed_since(real_db, connection):  # noqa
    item = item_a(connection)
    first = finished(connection, apptree.set_value, item, 5)
    finished(connection, apptree.set_value, item, 6)
    with pytest.raises(undo.Refused, match='changed again after this run'):
        undo.undo(first)
    transaction.abort()
    assert item.value == 6


def test_undo_needs_a_record_and_history(real_db, connection,  # noqa: F811
                                         monkeypatch):
    item = item_a(connection)
    failed = finished(connection, apptree.set_then_fail, item, 9)
    with pytest.raises(undo.Refused, match='no record'):
        undo.undo(failed)
    job = finished(connection, apptree.set_value, item, 5)
    monkeypatch.setattr(real_db.storage, 'supportsUndo', lambda: False,
                        raising=False)
    with pytest.raises(undo.Refused, match='keeps no history'):
        undo.undo(job)


def test_the_undo_action(made, tmp_path):
    from test_changes import ADMIN, token_of
    from test_dashboard import Model
    import webtest
    app = made(**{'zcasync.extensions':
                  'pyramid_zcasync.changes.ChangeRecorder'})
    client, model = webtest.TestApp(app), Model(app)
    try:
        apptree.make_site(model.connection.db())
        model.sync()
        item = model.connection.root()['site']['docs']['a']
        job = model.put(apptree.set_value, item, 8)
        wait_for_result(job)
        fields = {'oid': str(u64(job._p_oid))}
        client.post('/_async/actions/undo', fields, headers=ADMIN,
                    status=400)  # no CSRF token
        client.post('/_async/actions/undo', fields, status=403)
        fields['csrf_token'] = token_of(client)
        done = client.post('/_async/actions/undo', fields,
                           headers=ADMIN).json
        assert [c['path'] for c in done['reverted']] == ['/docs/a']
        again = client.post('/_async/actions/undo', fields,
                            headers=dict(ADMIN, Accept='text/html'),
                            status=409)
        assert 'undone already' in again.text
        model.sync()
        assert item.value == 1
    finally:
        model.close()


def test_changes_of_an_unrecorded_job_say_so():
    assert changes.of(object()) == changes.NOT_RECORDED



def test_history_free_relstorage_refuses_replay_and_undo(pg_uri, tmp_path):
    import datetime
    import pyramid_zcasync
    from dbtools import open_uri
    from pyramid_zcasync import dispatcher as dispatcher_module
    from pyramid_zcasync import extensions, replay
    from pyramid_zcasync.testing import tear_down_dispatcher
    db = open_uri(pg_uri)
    pyramid_zcasync.install_queues(db)
    extensions.add(db, changes.ChangeRecorder())
    started = dispatcher_module.start(
        db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False)
    connection = db.open()
    try:
        item = item_a(connection)
        job = finished(connection, apptree.set_value, item, 5)
        assert changes.of(job).changes
        with pytest.raises(undo.Refused, match='keeps no history.*'
                           'keep-history true'):
            undo.undo(job)
        with pytest.raises(replay.Refused, match='keeps no history'):
            replay.replay(job)
        pending = put(connection, apptree.set_value, item, 6,
                      begin_after=datetime.datetime.now(
                          datetime.timezone.utc) + datetime.timedelta(1))
        tid = db.storage.lastTransaction()
        trial = replay.dry_run(pending)
        assert trial.succeeded and [c.path for c in trial.changes] == [
            '/docs/a']
        assert db.storage.lastTransaction() == tid
    finally:
        transaction.abort()
        connection.close()
        tear_down_dispatcher(started)
        db.close()
