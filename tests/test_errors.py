"""The status exceptions and value checks live in leaf modules (errors.py,
checks.py) under their old public names in job.py: stored records name
them there, and keep loading and matching."""
import pickle

from pyramid_zcasync import checks, errors, job, lifecycle
from pyramid_zcasync.failure import Failure

OLD_CANCELLED = ('pyramid_zcasync.job.JobCancelled', 'Exception',
                 'BaseException')


def test_the_old_import_paths_name_the_same_objects():
    assert job.JobCancelled is errors.JobCancelled
    assert job.BadStatusError is errors.BadStatusError
    assert job.check_time_limit is checks.check_time_limit
    assert job.check_priority is checks.check_priority
    assert (job.MIN_PRIORITY, job.MAX_PRIORITY) == (-100, 100)
    assert lifecycle.RETRY_COUNTS == 'pyramid_zcasync.retry'


def test_a_new_failure_names_the_classes_as_old_records_do():
    failure = Failure.from_exception(errors.JobCancelled('cancelled'))
    assert failure.type_names == OLD_CANCELLED
    illegal = Failure.from_exception(lifecycle.IllegalTransition('no'))
    assert 'pyramid_zcasync.job.BadStatusError' in illegal.type_names


def test_an_old_failure_record_still_loads_and_matches():
    stored = pickle.dumps(Failure(OLD_CANCELLED, 'cancelled', 'tb'))
    loaded = pickle.loads(stored)
    assert loaded.check(job.JobCancelled) is job.JobCancelled
    assert loaded.check(errors.JobCancelled) is errors.JobCancelled


def test_pickled_exceptions_name_job_py():
    stored = pickle.dumps(errors.JobCancelled('gone'), protocol=0)
    assert b'pyramid_zcasync.job' in stored
    assert b'pyramid_zcasync.errors' not in stored
    assert isinstance(pickle.loads(stored), job.JobCancelled)
    # A pickle written before errors.py existed, naming job.py's class.
    old = (b'cpyramid_zcasync.job\nBadStatusError\n'
           b'p0\n(Vstale\np1\ntp2\nRp3\n.')
    assert isinstance(pickle.loads(old), errors.BadStatusError)


def test_a_waiting_job_s_callback_is_stored_by_its_old_name():
    outer = job.Job(print)
    callback = outer._resolver()
    assert callback.callable is job._resolve_outer
    assert callback.args == [outer]
    assert job._resolve_outer.__module__ == 'pyramid_zcasync.job'
