"""What a job changed (changes.py), recorded by a real dispatcher on
FileStorage, and which jobs touched an object."""
import datetime

import pytest
import transaction
from ZODB.utils import u64

import apptree
from pyramid_zcasync import changes, extensions
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import wait_for_annotation, wait_for_result
# The dashboard tests' app fixture and helpers (a fixture must be imported).
from test_dashboard import ADMIN, made, token_of  # noqa: F401

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


# -- the views --------------------------------------------------------------

@pytest.fixture
def web(made):
    """The dashboard tests' app, with the recorder, its site made."""
    import webtest
    from test_dashboard import Model
    app = made(**{'zcasync.extensions':
                  'pyramid_zcasync.changes.ChangeRecorder'})
    model = Model(app)
    apptree.make_site(model.connection.db())
    yield webtest.TestApp(app), model
    model.close()



def test_the_changes_and_touched_views(web):
    client, model = web
    model.sync()
    item = model.connection.root()['site']['docs']['a']
    job = model.put(apptree.set_value, item, 8)
    wait_for_result(job)
    job_oid = u64(job._p_oid)
    found = client.get('/_async/db/jobs/%d/changes' % job_oid,
                       headers=ADMIN).json
    assert found['recorded'] and found['more'] == 0
    assert [(c['class'], c['path'], c['created'])
            for c in found['changes']] == [('apptree.Item', '/docs/a', False)]
    by_path = client.get('/_async/db/touched', {'path': '/docs/a'},
                         headers=ADMIN).json
    assert by_path['jobs'] == [{'oid': job_oid, 'status': 'succeeded',
                                'callable': 'apptree.set_value'}]
    by_oid = client.get('/_async/db/touched',
                        {'oid': '0x%x' % u64(item._p_oid)}, headers=ADMIN)
    assert by_oid.json['jobs'] == by_path['jobs']
    both = client.get('/_async/db/touched', {'oid': '1', 'path': '/'},
                      headers=ADMIN, status=400)
    assert 'give one of oid' in both.json['error']
    client.get('/_async/db/touched', {'path': '/docs/a'}, status=403)


def test_a_dry_run_asks_for_confirmation_and_commits_nothing(web):
    client, model = web
    model.sync()
    docs = model.connection.root()['site']['docs']
    job = model.put(apptree.add_item, docs, '<b>new</b>', 1,
                    begin_after=datetime.datetime.now(
                        datetime.timezone.utc) + datetime.timedelta(days=1))
    storage = model.connection.db().storage
    tid = storage.lastTransaction()
    fields = {'oid': str(u64(job._p_oid))}
    client.post('/_async/actions/dryrun', fields, headers=ADMIN, status=400)
    token = token_of(client)
    fields['csrf_token'] = token
    asked = client.post('/_async/actions/dryrun', fields, headers=ADMIN,
                        status=400)
    assert 'RE-RUNS' in asked.json['error']
    page = client.post('/_async/actions/dryrun', fields,
                       headers=dict(ADMIN, Accept='text/html'))
    assert 'RE-RUNS' in page.text and 'name="confirm" value="yes"' in \
        page.text
    fields['confirm'] = 'yes'
    done = client.post('/_async/actions/dryrun', fields, headers=ADMIN).json
    assert done['succeeded'] and done['result'] == "'<b>new</b>'"
    assert {c['path'] for c in done['changes']} == {'/docs',
                                                    '/docs/<b>new</b>'}
    shown = client.post('/_async/actions/dryrun', fields,
                        headers=dict(ADMIN, Accept='text/html'))
    assert '/docs/&lt;b&gt;new&lt;/b&gt;' in shown.text
    assert '<b>new' not in shown.text
    refused = client.post('/_async/actions/replay', fields, headers=ADMIN,
                          status=409)
    assert 'completed job' in refused.json['error']
    assert storage.lastTransaction() == tid
    model.sync()
    assert '<b>new</b>' not in docs
