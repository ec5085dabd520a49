"""The failure record: what a user reads from a failed job's result."""
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import transaction
import ZODB
import ZODB.FileStorage

import pyramid_zcasync
from pyramid_zcasync.failure import Failure, JobFailure


class AppError(ValueError):
    """An application exception the reading process cannot import."""


def failure_of(exc):
    try:
        raise exc
    except BaseException as caught:
        return Failure.from_exception(caught)


def test_type_name_message_and_traceback():
    failure = failure_of(AppError('disk is full'))
    assert failure.type_name == '%s.AppError' % __name__
    assert failure.message == 'disk is full'
    assert failure.getErrorMessage() == 'disk is full'
    text = failure.getTraceback()
    assert 'Traceback (most recent call last)' in text
    assert 'in failure_of' in text
    assert 'AppError: disk is full' in text
    assert repr(failure) == '<Failure %s.AppError: disk is full>' % __name__


def test_builtin_type_names_are_unqualified():
    failure = failure_of(ZeroDivisionError('division by zero'))
    assert failure.type_name == 'ZeroDivisionError'
    assert 'ArithmeticError' in failure.type_names
    assert 'Exception' in failure.type_names


def test_check_by_class_and_base_class_and_name():
    failure = failure_of(AppError('x'))
    assert failure.check(KeyError) is None
    assert failure.check(AppError) is AppError
    assert failure.check(KeyError, ValueError) is ValueError
    assert failure.check(Exception) is Exception
    assert failure.check('ValueError') == 'ValueError'
    assert failure.check('%s.AppError' % __name__) == '%s.AppError' % __name__
    assert failure.check('AppError') is None  # names are qualified


def test_trap_returns_the_match_or_raises_for_others():
    failure = failure_of(AppError('boom'))
    assert failure.trap(KeyError, ValueError) is ValueError
    with pytest.raises(JobFailure) as info:
        failure.trap(KeyError, TypeError)
    assert info.value.failure is failure
    assert 'AppError: boom' in str(info.value)


def test_message_of_exception_whose_str_raises():
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError('no str for you')
    failure = Failure.from_exception(Unprintable(1, 2))
    assert failure.message == '(1, 2)'


def test_pickle_round_trip_in_process_equal_and_hashable():
    failure = failure_of(AppError('kept'))
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(failure, protocol))
        assert copy == failure
        assert hash(copy) == hash(failure)
        assert copy.check(ValueError) is ValueError
        assert copy.getTraceback() == failure.getTraceback()
    assert failure != failure_of(AppError('other'))


READER = textwrap.dedent('''
    import sys
    sys.modules['twisted'] = None      # any import of twisted now fails
    import ZODB, ZODB.FileStorage
    db = ZODB.DB(ZODB.FileStorage.FileStorage(sys.argv[1], read_only=True))
    conn = db.open()
    root = conn.root()
    for failure in (root['failure'], conn.get(bytes.fromhex(sys.argv[2])).result):
        print(failure.type_name)
        print(failure.message)
        print(failure.check('ValueError'), failure.check(ZeroDivisionError))
        print('Traceback' in failure.getTraceback())
    print(sorted(m for m, mod in sys.modules.items()
                 if m.startswith('twisted') and mod is not None))
    print(sorted(m for m in sys.modules if m.startswith('test')))
    db.close()
''')


def test_stored_failure_unpickles_where_twisted_and_the_app_are_absent(
        tmp_path):
    import operator
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    try:
        conn = db.open()
        conn.root()['failure'] = failure_of(AppError('stored'))
        job = pyramid_zcasync.Job(operator.truediv, 1, 0)
        conn.root()['job'] = job
        job()
        transaction.commit()
        oid = job._p_oid
        conn.close()
    finally:
        db.close()
    package_parent = os.path.dirname(os.path.dirname(pyramid_zcasync.__file__))
    env = dict(os.environ, PYTHONPATH=package_parent)
    out = subprocess.run(
        [sys.executable, '-c', READER, path, oid.hex()], env=env,
        cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        '%s.AppError' % __name__, 'stored', 'ValueError None', 'True',
        'ZeroDivisionError', 'division by zero',
        "None <class 'ZeroDivisionError'>", 'True',
        '[]', '[]']
