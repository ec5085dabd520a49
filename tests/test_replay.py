"""Dry runs and replays (replay.py) on FileStorage and over a real ZEO
server: the job sees the data it should, its outcome and changes are
reported, and nothing is committed to the real database."""
import datetime

import pytest
import transaction
from ZODB.utils import u64

import apptree
from pyramid_zcasync import changes, extensions, replay
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import PENDING, IQueue
from pyramid_zcasync.testing import (tear_down_dispatcher, wait_for_annotation,
                                     wait_for_result)

LATER = datetime.timedelta(days=1)


@pytest.fixture(params=['file', 'zeo'])
def real_db(request, tmp_path):
    """A database with the queues, the site and the change recorder,
    served by a dispatcher of this process: FileStorage, or ZEO."""
    import pyramid_zcasync
    if request.param == 'file':
        import ZODB
        db = ZODB.DB(str(tmp_path / 'Data.fs'))
    else:
        server = request.getfixturevalue('zeo_server')
        db = server.db()
    pyramid_zcasync.install_queues(db)
    recorder = changes.ChangeRecorder()
    extensions.add(db, recorder)
    started = dispatcher_module.start(
        db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.2,
        install_signal_handlers=False)
    yield db
    tear_down_dispatcher(started)
    transaction.abort()
    db.close()


@pytest.fixture
def connection(real_db):
    opened = real_db.open()
    yield opened
    transaction.abort()
    opened.close()


def item_a(connection):
    site = connection.root().get('site')
    if site is None:
        apptree.make_site(connection.db())
        transaction.abort()
        site = connection.root()['site']
    return site['docs']['a']


def put(connection, func, *args, **options):
    job = IQueue(connection.root()).put(func, *args, **options)
    transaction.commit()
    return job


def last_tid(db):
    return db.storage.lastTransaction()


def test_replay_sees_the_data_the_failed_attempt_saw(real_db, connection):
    item = item_a(connection)
    failed = put(connection, apptree.fail_unless_value, item, 5)
    wait_for_result(failed)
    assert 'value is 1, not 5' in failed.result.getErrorMessage()
    wait_for_annotation(failed, changes.SEEN_KEY)
    fixed = put(connection, apptree.set_value, item, 5)
    wait_for_result(fixed)
    tid = last_tid(real_db)

    trial = replay.replay(failed)
    assert trial.kind == 'replay' and not trial.succeeded
    assert trial.source == 'the data its failed attempt read'
    assert 'value is 1, not 5' in trial.traceback
    assert 'ValueError' in trial.result
    assert last_tid(real_db) == tid
    transaction.abort()
    assert item.value == 5


def test_replay_reports_what_the_failed_call_changed(real_db, connection):
    item = item_a(connection)
    failed = put(connection, apptree.set_then_fail, item, 9)
    wait_for_result(failed)
    wait_for_annotation(failed, changes.SEEN_KEY)
    tid = last_tid(real_db)
    trial = replay.replay(failed)
    assert [(c.path, c.oid) for c in trial.changes] == [
        ('/docs/a', u64(item._p_oid))]
    assert last_tid(real_db) == tid
    transaction.abort()
    assert item.value == 1


def test_dry_run_on_the_current_data_commits_nothing(real_db, connection):
    item = item_a(connection)
    pending = put(connection, apptree.fail_unless_value, item, 1,
                  begin_after=datetime.datetime.now(
                      datetime.timezone.utc) + LATER)
    tid = last_tid(real_db)
    trial = replay.dry_run(pending)
    assert trial.succeeded and trial.result == '2' and trial.traceback == ''
    assert [c.path for c in trial.changes] == ['/docs/a']
    assert trial.source == 'the current data'
    assert dict(trial.read_before)[real_db.database_name] == u64(tid) + 1
    assert last_tid(real_db) == tid
    transaction.abort()
    assert item.value == 1 and pending.status == PENDING


def test_what_can_be_tried(real_db, connection):
    item = item_a(connection)
    done = put(connection, apptree.set_value, item, 3)
    wait_for_result(done)
    with pytest.raises(replay.Refused, match='pending job; this one is'):
        replay.dry_run(done)
    # a successful run replays on what it read: the value before it
    trial = replay.replay(done)
    assert trial.succeeded and trial.source == 'the data its last run read'
    pending = put(connection, apptree.set_value, item, 4,
                  begin_after=datetime.datetime.now(
                      datetime.timezone.utc) + LATER)
    with pytest.raises(replay.Refused, match='completed job'):
        replay.replay(pending)


def test_frozen_storage_does_not_move(real_db, connection):
    item = item_a(connection)
    before = u64(last_tid(real_db)) + 1
    item.value = 11
    transaction.commit()
    frozen = replay.FrozenStorage(real_db.storage, replay.p64(before))
    data, serial = frozen.load(item._p_oid)
    assert u64(serial) < before
    assert frozen.lastTransaction() == replay.p64(before - 1)
    assert frozen.isReadOnly()
    with pytest.raises(replay.ReadOnlyError):
        frozen.new_oid()


# -- pzcasync changes / touched / dryrun / replay ----------------------------

def pzcasync(ini, *args):
    """``pzcasync INI ARGS...`` with tests/ importable (the jobs' module)."""
    import os
    import subprocess
    from test_scripts import CLI, clean_env
    env = clean_env()
    env['PYTHONPATH'] = os.pathsep.join(
        [os.path.dirname(apptree.__file__), env.get('PYTHONPATH', '')])
    done = subprocess.run(CLI + [ini] + list(args), capture_output=True,
                          text=True, env=env, timeout=120)
    return done.returncode, done.stdout, done.stderr


def last_file_tid(path):
    import ZODB.FileStorage
    storage = ZODB.FileStorage.FileStorage(path, read_only=True)
    try:
        return storage.lastTransaction()
    finally:
        storage.close()


def test_the_commands(tmp_path):
    import json
    import ZODB
    import pyramid_zcasync
    from test_scripts import make_site
    ini = make_site(tmp_path)  # development.ini: the recorder is on
    assert 'pyramid_zcasync.changes.ChangeRecorder' in open(ini).read()
    # named as the app names it: the records name the databases
    db = ZODB.DB(str(tmp_path / 'var' / 'Data.fs'), database_name='')
    pyramid_zcasync.install_queues(db)
    extensions.add(db, changes.ChangeRecorder())
    started = dispatcher_module.start(
        db, uuid_file=str(tmp_path / 'uuid2.txt'), poll_interval=0.2,
        install_signal_handlers=False)
    try:
        connection = db.open()
        item = item_a(connection)
        done = put(connection, apptree.set_value, item, 5)
        failed = put(connection, apptree.set_then_fail, item, 9)
        pending = put(connection, apptree.set_value, item, 6,
                      begin_after=datetime.datetime.now(
                          datetime.timezone.utc) + LATER)
        wait_for_result(done)
        wait_for_result(failed)
        wait_for_annotation(failed, changes.SEEN_KEY)
        oids = [str(u64(job._p_oid)) for job in (done, failed, pending)]
        transaction.abort()
        connection.close()
    finally:
        tear_down_dispatcher(started)
        db.close()
    path = str(tmp_path / 'var' / 'Data.fs')
    code, out, err = pzcasync(ini, 'changes', oids[0])
    # (the app's first start commits its setup: from now on, nothing)
    tid = last_file_tid(path)
    assert code == 0 and 'apptree.Item' in out and '/docs/a' in out, err
    code, out, err = pzcasync(ini, 'touched', '--path', '/docs/a', '--json')
    assert code == 0, err
    assert [job['oid'] for job in json.loads(out)['jobs']] == [int(oids[0])]
    code, out, err = pzcasync(ini, 'dryrun', oids[2])
    assert code == 2 and 'RE-RUNS' in err and out == ''
    code, out, err = pzcasync(ini, 'dryrun', oids[2], '--yes')
    assert code == 0 and 'succeeded' in out and '/docs/a' in out, err
    code, out, err = pzcasync(ini, 'replay', oids[1], '--yes', '--json')
    assert code == 0, err
    replayed = json.loads(out)
    assert not replayed['succeeded'] and 'failed after setting 9' in \
        replayed['traceback']
    assert [c['path'] for c in replayed['changes']] == ['/docs/a']
    code, out, err = pzcasync(ini, 'replay', oids[2], '--yes')
    assert code == 1 and 'completed job' in err
    # nothing was committed by the dry run and the replay
    assert last_file_tid(path) == tid
    db = ZODB.DB(path)
    try:
        with db.transaction() as connection:
            assert connection.root()['site']['docs']['a'].value == 5
    finally:
        db.close()
    # pzcasync undo commits: the run's change is reverted
    code, out, err = pzcasync(ini, 'undo', oids[0])
    assert code == 0 and 'undone: job %s' % oids[0] in out, err
    code, out, err = pzcasync(ini, 'undo', oids[0])
    assert code == 1 and 'undone already' in err
    db = ZODB.DB(path)
    try:
        with db.transaction() as connection:
            assert connection.root()['site']['docs']['a'].value == 1
    finally:
        db.close()
