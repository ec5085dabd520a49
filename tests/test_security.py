"""Issue 15, as an attacker tried it: what the admin pages, the JSON views,
``pzcasync`` and the events log show when a job's text is hostile or a
parameter overflows, and what the UUID files and settings refuse.

Jobs that fail with a chosen message are ``exec`` of a ``raise``: a
builtin, so ``pzcasync`` in a subprocess can load them too.  HTTP goes
through WebTest on an app with a running dispatcher; ``pzcasync`` and
``pzcasync-worker`` run as subprocesses on a copy of development.ini.
"""
import datetime
import logging
import os
import re
import subprocess
import sys
import time

import pytest
import transaction
import ZODB
import ZODB.FileStorage
from pyramid.exceptions import ConfigurationError

import pyramid_zcasync
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.settings import parse_settings
from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result
from pyramid_zcasync.views.db import DEFAULT_COUNT, MAX_COUNT
from pyramid_zcasync.views.status import POLLS_MAX

from test_dashboard import (ADMIN, DASHBOARD, TOKEN, made,  # noqa: F401
                            make_dead_dispatcher, oid, running)
from test_scripts import CLI, WORKER, clean_env, make_site, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Retitles and clears a terminal, turns it red, then reverses the rest.
NASTY = '\x1b]0;PWNED\x07\x1b[2J\x1b[31mRED\u202eevil'
#: What each of those characters must look like wherever it is shown.
SHOWN = '\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mRED\\u202eevil'
RAW = ('\x1b', '\x07', '\u202e')
#: A failure message as large as one public request could cause.
HUGE = 'A' * 2_000_000


def failing(message):
    """A job's callable and argument that fail with ``message``."""
    return exec, 'raise ValueError(%r)' % message


def fail(model, message):
    job = model.put(*failing(message))
    wait_for_result(job)
    return job


def assert_no_raw(text):
    for char in RAW:
        assert char not in text, repr(char)


# -- 1. overflowing input is a 400 naming the value -----------------------

@pytest.mark.parametrize('url, fragment', [
    ('/_async/db/jobs?count=99999999999999999999',
     "count='99999999999999999999' is more than the maximum, %d"
     % MAX_COUNT),
    ('/_async/db/jobs?since=0001-01-01T00:00:00%2B14:00',
     "since='0001-01-01T00:00:00+14:00' is out of range"),
    ('/_async/db/jobs?since=9999-12-31T23:59:59-23:59',
     "since='9999-12-31T23:59:59-23:59' is out of range"),
    ('/_async/jobstats?before=0001-01-01T00:00:00',
     "before='0001-01-01T00:00:00' is out of range"),
    ('/_async/db/jobstats?at=9999-12-31T23:59:59Z',
     "at='9999-12-31T23:59:59Z' is out of range"),
    ('/_async/polls?count=99999999999999999999',
     "count='99999999999999999999' is more than the maximum, %d"
     % POLLS_MAX),
    ('/_async/db/jobs/' + '1' * 4301, "'1111"),
    ('/_async/dispatcher/jobs/' + '1' * 4301, "'1111"),
])
def test_overflowing_parameters_are_a_400(running, url, fragment):
    app, client, model = running
    response = client.get(url, headers=ADMIN, status=400)
    error = response.json['error']
    assert fragment in error
    assert len(error) < 300  # the value is quoted, not echoed whole
    if 'out of range' in error:
        assert 'expected ISO-8601 UTC from 0001-01-02 to 9999-12-30' in error


# -- 2. every listing has a maximum -----------------------------------------

def test_job_listing_is_capped(running):
    app, client, model = running
    for number in range(3):
        model.put(*failing('pending %d' % number),
                  begin_after=datetime.datetime(2999, 1, 1,
                                                tzinfo=datetime.timezone.utc))
    listed = client.get('/_async/db/jobs', {'count': str(MAX_COUNT),
                                            'display': 'details'},
                        headers=ADMIN).json
    assert len(listed) == 3
    refused = client.get('/_async/db/jobs', {'count': str(MAX_COUNT + 1),
                                             'display': 'details'},
                         headers=ADMIN, status=400).json
    assert refused == {'error': "count='%d' is more than the maximum, %d"
                                % (MAX_COUNT + 1, MAX_COUNT)}
    assert len(client.get('/_async/polls', {'count': str(POLLS_MAX)},
                          headers=ADMIN).json) >= 1
    client.get('/_async/polls', {'count': str(POLLS_MAX + 1)},
               headers=ADMIN, status=400)


def test_a_jobs_own_lists_are_capped_in_its_view(running):
    """A job is anyone's input: 10,000 arguments, keyword arguments and
    annotations make a view of 50 each, saying how many more there are."""
    app, client, model = running
    job = model.put(max, *range(10000), begin_after=datetime.datetime(
        2999, 1, 1, tzinfo=datetime.timezone.utc))
    job.kwargs.update(('k%05d' % i, i) for i in range(10000))
    for i in range(10000):
        job.annotations['note %05d' % i] = i
    model.manager.commit()
    info = client.get('/_async/db/jobs/%d' % int.from_bytes(job._p_oid,
                                                             'big'),
                      headers=ADMIN).json
    assert len(info['args']) == 51 and info['args'][-1] == '... 9950 more'
    assert len(info['kwargs']) == 50
    assert len(info['annotations']) == 51
    assert info['annotations'][-1] == '... 9950 more'


# -- 3, 5. a huge or hostile failure on the pages and in the log ----------

def test_a_huge_failure_is_clipped_on_every_page(running):
    app, client, model = running
    jobs = [fail(model, HUGE) for _ in range(3)]
    page = client.get(DASHBOARD, headers=ADMIN)
    assert len(page.body) < 100_000  # three 2 MB messages
    assert 'the whole traceback' in page.text
    url = '/_async/db/jobs/%d/traceback' % oid(jobs[0])
    assert re.search('<a href="%s\\?database=[^"]*">the whole traceback'
                     % re.escape(url), page.text)

    details = client.get('/_async/db/jobs', {'display': 'details',
                                             'state': 'failed'},
                         headers=ADMIN)
    assert len(details.body) < 50_000
    assert [len(info['failure']['message']) for info in details.json] == \
        [500] * 3
    one = client.get('/_async/db/jobs/%d' % oid(jobs[0]), headers=ADMIN)
    assert len(one.json['failure']['message']) == 500

    whole = client.get(url, headers=ADMIN).json
    assert 60_000 < len(whole['traceback']) < 70_000
    assert whole['omitted characters'] > 2 * (2_000_000 - 70_000)
    # Its beginning and its end, the exception, are kept.
    assert whole['traceback'].startswith('Traceback (most recent call')
    assert whole['traceback'].rstrip().endswith('A' * 1000)
    assert '[... ' in whole['message']


def test_hostile_text_is_inert_on_the_pages_and_in_the_log(running, caplog):
    app, client, model = running
    with caplog.at_level(logging.INFO, logger='pyramid_zcasync.events'):
        job = fail(model, NASTY)
        model.put(*failing(NASTY), begin_after=datetime.datetime(
            2999, 1, 1, tzinfo=datetime.timezone.utc))
        # The log record is written after the commit that ends the job.
        deadline = time.monotonic() + 10
        while 'PWNED' not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert SHOWN in caplog.text
    assert_no_raw(caplog.text)

    page = client.get(DASHBOARD, headers=ADMIN).text
    assert SHOWN in page  # in the message and in the traceback
    assert_no_raw(page)
    for url in ('/_async/db/jobs/%d' % oid(job),
                '/_async/db/jobs/%d/traceback' % oid(job),
                '/_async/db/jobs?display=details'):
        body = client.get(url, headers=ADMIN).body
        assert b'\\u001b]0;PWNED' in body and b'\\u202e' in body
        assert not any(c.encode() in body for c in RAW)


# -- 4. a crafted link puts no words on the admin's page --------------------

def test_a_crafted_link_puts_no_words_on_the_page(running):
    app, client, model = running
    job = model.put(*failing('x'), begin_after=datetime.datetime(
        2999, 1, 1, tzinfo=datetime.timezone.utc))
    for forged in ({'done': 'requeued', 'uuid': 'Call IT at +1-555-0100 NOW',
                    'count': '4096'},
                   {'done': 'requeued', 'count': '4096', 'uuid': str(
                       app.registry.zcasync_dispatcher.UUID)},  # alive
                   {'done': 'cancelled', 'job': str(oid(job))},  # pending
                   {'done': 'retried', 'job': '987654321'},
                   {'done': 'retried', 'job': '1' * 4301}):
        page = client.get(DASHBOARD, forged, headers=ADMIN).text
        assert 'class="flash' not in page, forged
        # (Digits alone can be part of a timestamp on the page.)
        assert 'Call IT' not in page and not re.search(
            r'(?<![\d.])(555|4096)(?!\d)', page), forged


# -- 5. pzcasync: escaped output, quiet on a closed pipe --------------------

@pytest.fixture
def site(tmp_path):
    """development.ini in tmp_path, its FileStorage holding a job failed
    with NASTY, one failed with HUGE, and 100 pending jobs."""
    ini = make_site(tmp_path)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        str(tmp_path / 'var' / 'Data.fs')))
    manager = transaction.TransactionManager()
    try:
        pyramid_zcasync.install_queues(db)
        conn = db.open(transaction_manager=manager)
        seeder = dispatcher_module.start(
            db, uuid_file=str(tmp_path / 'seed-uuid.txt'), poll_interval=0.5,
            install_signal_handlers=False)
        try:
            queue = IQueue(conn.root())
            jobs = [queue.put(*failing(NASTY)), queue.put(*failing(HUGE))]
            manager.commit()
            for job in jobs:
                wait_for_result(job, 30)
        finally:
            tear_down_dispatcher(seeder)
        later = datetime.datetime(2999, 1, 1, tzinfo=datetime.timezone.utc)
        queue = IQueue(conn.root())
        for number in range(100):
            queue.put(pow, number, 2, begin_after=later)
        manager.commit()
        conn.close()
    finally:
        db.close()  # pzcasync opens the FileStorage itself
    return ini, [oid(job) for job in jobs]


def test_pzcasync_prints_no_control_characters(site):
    ini, (nasty, huge) = site
    for args in (['traceback', str(nasty)], ['job', str(nasty)],
                 ['jobs', '--state', 'failed', '--json']):
        code, out, err = run(ini, *args)
        assert code == 0, (args, err)
        assert 'PWNED' in out, args
        assert_no_raw(out)
    assert SHOWN in run(ini, 'traceback', str(nasty))[1]
    code, out, err = run(ini, 'traceback', str(huge))
    assert code == 0 and 70_000 < len(out) < 140_000
    assert 'characters omitted' in out
    code, out, err = run(ini, 'job', str(huge))
    assert code == 0 and len(out) < 5_000


def test_pzcasync_refuses_a_count_above_the_maximum(site):
    ini, _ = site
    code, out, err = run(ini, 'jobs', '--count', '100000000')
    assert (code, out) == (2, '')
    assert err.splitlines()[-1] == (
        "pzcasync: error: count='100000000' is more than the maximum, %d"
        % MAX_COUNT)
    usage = ' '.join(run(ini, 'jobs', '--help')[1].split())
    assert '--count N at most N jobs (default %d, at most %d)' % (
        DEFAULT_COUNT, MAX_COUNT) in usage


def test_pzcasync_refuses_an_unknown_state_as_a_bad_command_line(site):
    """Exit status 2, as --help says of a bad command line (issue 16)."""
    ini, _ = site
    code, out, err = run(ini, 'jobs', '--state', 'nope')
    assert (code, out) == (2, '')
    assert err.splitlines()[-1].startswith(
        "pzcasync: error: state='nope' is unknown; expected one of pending")


def test_pzcasync_piped_into_head_ends_quietly(site):
    """``pzcasync INI jobs | head -0``: the reader is gone before the
    first write (a reader leaving later is the same write error)."""
    ini, _ = site
    reader, writer = os.pipe()
    try:
        process = subprocess.Popen(CLI + [ini, 'jobs', '--state', 'pending'],
                                   stdout=writer, stderr=subprocess.PIPE,
                                   env=clean_env())
    finally:
        os.close(writer)
        os.close(reader)
    try:
        err = process.communicate(timeout=60)[1].decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert 'Traceback' not in err and 'BrokenPipe' not in err, err
    assert process.returncode == 1


# -- 6. UUID files: private, never written through a link -------------------

def start_worker(ini):
    return subprocess.run(WORKER + [ini], capture_output=True, text=True,
                          env=clean_env(), timeout=60)


def test_a_symlinked_lock_file_is_refused(tmp_path):
    ini = make_site(tmp_path)
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious\n')
    os.symlink(str(victim), str(tmp_path / 'var' / 'uuid.txt.lock'))
    result = start_worker(ini)
    assert result.returncode == 2, result
    last = result.stderr.splitlines()[-1]
    assert last.startswith('pzcasync-worker: error: ')
    assert ('the lock file %s is a symbolic link; refusing to write '
            'through it' % (tmp_path / 'var' / 'uuid.txt.lock')) in last
    assert victim.read_text() == 'precious\n'


def test_uuid_files_are_private_and_errors_keep_their_contents(tmp_path):
    ini = make_site(tmp_path)
    uuid_file = tmp_path / 'var' / 'uuid.txt'
    uuid_file.write_text('hunter2 is my password\n')
    result = start_worker(ini)
    assert result.returncode == 2, result
    last = result.stderr.splitlines()[-1]
    assert "UUID file '%s' does not hold a UUID" % uuid_file in last
    assert 'hunter2' not in result.stderr

    uuid_file.unlink()
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        str(tmp_path / 'var' / 'Data.fs')))
    try:
        pyramid_zcasync.install_queues(db)
        started = dispatcher_module.start(db, uuid_file=str(uuid_file),
                                          install_signal_handlers=False)
        try:
            for path in (uuid_file, tmp_path / 'var' / 'uuid.txt.lock'):
                assert oct(os.stat(path).st_mode & 0o777) == '0o600', path
        finally:
            tear_down_dispatcher(started)
    finally:
        db.close()


# -- 7. route_prefix is a literal path ---------------------------------------

@pytest.mark.parametrize('prefix', ['/{x}', '/admin/{name}', '/*rest',
                                    '/:x', '/a/../b', '/./x', '/a%2Fb'])
def test_route_prefix_with_a_placeholder_is_refused(prefix):
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({'zcasync.route_prefix': prefix})
    message = str(caught.value)
    assert 'zcasync.route_prefix = %r: not a URL path below the site root ' \
           'made of literal segments' % prefix in message


@pytest.mark.parametrize('prefix', ['/_async', '/admin/jobs-1', '/a.b/~c'])
def test_literal_route_prefixes_are_accepted(prefix):
    assert parse_settings({'zcasync.route_prefix': prefix}).route_prefix \
        == prefix


# -- 9. no caching, no sniffing of any admin answer -------------------------

@pytest.mark.parametrize('url, status', [
    ('/_async/status', 200), ('/_async/db/status', 200),
    ('/_async/db/jobs?count=0', 400), ('/_async/db/jobs/999999', 404),
    ('/_async/metrics', 200), ('/_async/', 200)])
def test_admin_answers_are_not_cached_nor_sniffed(running, url, status):
    app, client, model = running
    response = client.get(url, headers=ADMIN, status=status)
    assert response.headers['Cache-Control'] == 'no-store'
    assert response.headers['X-Content-Type-Options'] == 'nosniff'


# -- 10. at least once, said where an admin re-queues ------------------------

def test_requeue_says_outside_effects_may_happen_twice(running):
    app, client, model = running
    uuid, registration, job = make_dead_dispatcher(model)
    page = client.get(DASHBOARD, headers=ADMIN)
    twice = ('its changes to the database are made once, but what it did '
             'outside the database (mail, HTTP calls, files) may happen '
             'twice.')
    assert re.search(r'data-confirm="Deactivate dispatcher %s[^"]*%s"'
                     % (uuid, re.escape(twice)), page.text)
    token = TOKEN.search(page.text).group(1)
    done = client.post('/_async/actions/requeue',
                       {'csrf_token': token, 'uuid': uuid},
                       headers=ADMIN, status=303).follow(headers=ADMIN)
    flash = re.search(r'<div class="flash ok" role="status"><span>([^<]*)',
                      done.text).group(1)
    assert flash.startswith('Dispatcher %s was deactivated' % uuid)
    assert flash.endswith(twice)


def test_the_readme_states_the_guarantees_and_the_security_model():
    with open(os.path.join(ROOT, 'README.rst'), encoding='utf-8') as stream:
        readme = stream.read()
    for heading in ('Guarantees', 'Security'):
        assert '\n%s\n%s\n' % (heading, '-' * len(heading)) in readme
    assert 'at least once' in readme and 'exactly once' in readme


HOSTILE_LOG_SCRIPT = r'''
import logging, sys, transaction, ZODB
import pyramid_zcasync
from pyramid_zcasync import dispatcher
from pyramid_zcasync.interfaces import IQueue
from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
db = ZODB.DB(sys.argv[1])
pyramid_zcasync.install_queues(db)
running = dispatcher.start(db, uuid_file=sys.argv[2], poll_interval=0.2,
                           install_signal_handlers=False)
connection = db.open()
job = IQueue(connection.root()).put(
    exec, 'raise ValueError(%r)' % '\x1b]0;PWNED\x07\x1b[2J\u202eRED')
transaction.commit()
wait_for_result(job)
tear_down_dispatcher(running)
db.close()
'''


def test_the_events_log_is_escaped_without_pyramid_too(tmp_path):
    """A process that starts its dispatcher by hand (no Pyramid, so no
    admin views to install the log filter) logs job text escaped."""
    result = subprocess.run(
        [sys.executable, '-c', HOSTILE_LOG_SCRIPT, str(tmp_path / 'Data.fs'),
         str(tmp_path / 'uuid.txt')], capture_output=True, text=True,
        timeout=60)
    assert 'failed: Traceback' in result.stderr, result.stderr
    assert '\\x1b]0;PWNED' in result.stderr
    assert_no_raw(result.stderr)
