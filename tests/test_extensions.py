"""The extension chain (pyramid_zcasync.extensions) on its own: scoping
by database, hook fan-out, which hooks may refuse and which are only
logged, and the ``zcasync.extensions`` setting's errors.  Extensions
wired into put and run are tested end to end with the queue."""
import contextlib
import logging

import pytest
import ZODB

from pyramid_zcasync import extensions
from pyramid_zcasync.extensions import Extension, Extensions


class Recorder(Extension):

    def __init__(self, name='r', seen=None):
        self.name = name
        self.seen = [] if seen is None else seen

    def before_put(self, queue, job):
        self.seen.append((self.name, 'before_put', job))

    @contextlib.contextmanager
    def around_run(self, job):
        self.seen.append((self.name, 'enter', job))
        yield
        self.seen.append((self.name, 'exit', job))

    def after_run(self, run):
        self.seen.append((self.name, 'after_run', run))


class Broken(Extension):

    def after_run(self, run):
        raise RuntimeError('exporter down')

    def before_put(self, queue, job):
        raise ValueError('refused: quota of the tenant used up')


@pytest.fixture
def db():
    database = ZODB.DB(None)
    yield database
    database.close()


def test_extensions_belong_to_their_database(db):
    other = ZODB.DB(None)
    try:
        recorder = Recorder()
        extensions.add(db, recorder)
        assert list(extensions.of(db)) == [recorder]
        assert len(extensions.of(other)) == 0
        assert len(extensions.of(None)) == 0
        extensions.add(db, recorder)  # twice: still once
        assert list(extensions.of(db)) == [recorder]
        extensions.remove(db, recorder)
        assert len(extensions.of(db)) == 0
    finally:
        other.close()


def test_hooks_run_in_order_and_around_run_nests(db):
    seen = []
    first, second = Recorder('a', seen), Recorder('b', seen)
    chain = Extensions([first, second])
    chain.before_put('queue', 'job')
    with chain.around_run('job'):
        seen.append(('call',))
    chain.after_run(REPORT)
    assert seen == [
        ('a', 'before_put', 'job'), ('b', 'before_put', 'job'),
        ('a', 'enter', 'job'), ('b', 'enter', 'job'), ('call',),
        ('b', 'exit', 'job'), ('a', 'exit', 'job'),
        ('a', 'after_run', REPORT), ('b', 'after_run', REPORT)]


def test_only_overridden_hooks_are_called():
    recorder = Recorder()
    chain = Extensions([recorder])
    assert chain.having('before_put') == (recorder,)
    assert chain.having('after_poll') == ()


def test_before_put_may_refuse_but_after_hooks_are_only_logged(caplog):
    seen = []
    chain = Extensions([Broken(), Recorder(seen=seen)])
    with pytest.raises(ValueError, match='quota of the tenant'):
        chain.before_put('queue', 'job')
    with caplog.at_level(logging.ERROR, 'pyramid_zcasync.extensions'):
        chain.after_run(REPORT)
    # The broken one is logged by name, and the next one still ran.
    assert 'exporter down' in caplog.text
    assert 'after_run' in caplog.text
    assert ('r', 'after_run', REPORT) in seen


REPORT = extensions.RunReport(
    job_id=1, database='', queue='', agent='main', dispatcher='u',
    status='completed-status', failed=False, result='42')


def test_add_refuses_what_is_not_an_extension(db):
    with pytest.raises(TypeError, match="must be an instance .*got 'x'"):
        extensions.add(db, 'x')


class NeedsSettings(Extension):
    def __init__(self, settings):
        self.settings = settings


def _resolve(name):
    import importlib
    module, _, attribute = name.partition(':')
    return getattr(importlib.import_module(module), attribute)


def test_setting_names_classes_taking_settings_or_nothing():
    found = extensions.from_setting(
        'tests.test_extensions:NeedsSettings\n tests.test_extensions:Recorder',
        _resolve, {'a': 1})
    # (pytest may import this file under another module name: compare
    # the classes by name.)
    assert [type(e).__name__ for e in found] == ['NeedsSettings', 'Recorder']
    assert found[0].settings == {'a': 1}


def test_setting_errors_name_the_value():
    with pytest.raises(ValueError, match=r"zcasync.extensions: cannot "
                       r"import 'tests.nowhere:X'"):
        extensions.from_setting('tests.nowhere:X', _resolve, {})
    with pytest.raises(ValueError, match=r"'logging:getLogger' gave "
                       r"<RootLogger root.*not a pyramid_zcasync.extensions"):
        extensions.from_setting('logging:getLogger', _resolve, {})


# -- wired into a real dispatcher --------------------------------------

def test_a_dispatcher_tells_its_databases_extensions_it_started_polled_and_stopped(tmp_path):
    import ZODB.FileStorage
    from pyramid_zcasync import dispatcher
    from pyramid_zcasync.install import install_queues

    class Watcher(Extension):
        def __init__(self):
            self.seen = []

        def dispatcher_activated(self, d):
            self.seen.append(('activated', d.UUID))

        def after_poll(self, d, claimed):
            self.seen.append(('poll', claimed))

        def dispatcher_deactivated(self, d):
            self.seen.append(('deactivated', d.UUID))

    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    watcher = Watcher()
    extensions.add(db, watcher)
    install_queues(db)
    d = dispatcher.start(db, uuid='0' * 32, poll_interval=0.05,
                         install_signal_handlers=False)
    try:
        import time
        deadline = time.monotonic() + 10
        while ('poll', 0) not in watcher.seen and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        d.stop()
        db.close()
    assert watcher.seen[0] == ('activated', '0' * 32)
    assert ('poll', 0) in watcher.seen
    assert watcher.seen[-1] == ('deactivated', '0' * 32)


# -- in a Pyramid app: put hooks, run reports, the setting --------------

class Counting(Extension):
    """What a user's extension named by ``zcasync.extensions`` sees."""

    def __init__(self, settings):
        self.tag = settings.get('counting.tag')
        self.before, self.after, self.runs, self.failures = [], [], [], []

    def before_put(self, queue, job):
        if job.args and job.args[0] == 'refuse me':
            raise ValueError('refused by the %s extension' % self.tag)
        self.before.append(job.args)

    def after_put(self, queue, job):
        self.after.append(job.args)

    def after_run(self, run):
        self.runs.append(run)

    def on_failure(self, run):
        self.failures.append(run)


def _app(tmp_path, **extra):
    from pyramid.config import Configurator
    settings = {'zodbconn.uri': 'file://%s/Data.fs' % tmp_path,
                'zcasync.uuid_file': str(tmp_path / 'uuid.txt'),
                'zcasync.dispatcher': 'true',
                'zcasync.poll_interval': '0.5',
                'counting.tag': 'tenant'}
    settings.update(extra)
    with Configurator(settings=settings) as config:
        config.include('pyramid_zcasync')
        return config.make_wsgi_app()


def _counting(app):
    db = app.registry._zodb_databases['']
    found = [e for e in extensions.of(db)
             if type(e).__name__ == 'Counting']
    assert len(found) == 1
    return found[0]


def test_an_apps_extension_sees_puts_commits_and_runs(tmp_path):
    import transaction
    import jobs
    from pyramid_zcasync.config import close_databases
    from pyramid_zcasync.interfaces import COMPLETED, IQueue
    from pyramid_zcasync.testing import wait_for_result, wait_until

    app = _app(tmp_path, **{
        'zcasync.extensions': 'tests.test_extensions.Counting'})
    counting = _counting(app)
    connection = app.registry._zodb_databases[''].open()
    try:
        queue = IQueue(connection.root())
        # An aborted put: before_put saw it, after_put never does.
        queue.put(jobs.multiply, 1, 1)
        transaction.abort()
        # A refused put raises, and queues nothing.
        with pytest.raises(ValueError, match='refused by the tenant'):
            queue.put(jobs.multiply, 'refuse me', 2)
        assert len(queue) == 0
        good = queue.put(jobs.multiply, 6, 7)
        bad = queue.put(jobs.divide, 1, 0)
        assert counting.after == []  # not committed yet
        transaction.commit()
        assert counting.after == [[6, 7], [1, 0]]
        assert counting.before == [[1, 1], [6, 7], [1, 0]]
        assert wait_for_result(good) == 42
        wait_for_result(bad)
        wait_until(lambda: len(counting.runs) == 2, 10, 'two run reports')
    finally:
        transaction.abort()
        connection.close()
        close_databases(app.registry)
    by_result = {run.result: run for run in counting.runs}
    assert by_result['42'].failed is False
    assert by_result['42'].status == COMPLETED
    assert by_result['42'].queue == ''
    assert by_result['42'].job_id == int.from_bytes(good._p_oid, 'big')
    assert by_result['42'].runtime is not None
    assert [run.job_id for run in counting.failures] == [
        int.from_bytes(bad._p_oid, 'big')]
    assert 'ZeroDivisionError' in counting.failures[0].result


def test_a_bad_extension_setting_is_refused_by_name(tmp_path):
    from pyramid.exceptions import ConfigurationError
    with pytest.raises(ConfigurationError, match=r"zcasync.extensions: "
                       r"cannot import 'tests.test_extensions.Nowhere'"):
        _app(tmp_path, **{
            'zcasync.extensions': 'tests.test_extensions.Nowhere'})
