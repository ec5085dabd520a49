"""Job functions for end-to-end tests: importable by the test process and
by the worker subprocesses (tests/ is on their PYTHONPATH)."""
import os
import time

from pyramid_zcasync import local


def record_run(log_path, job_name, hold_path=None, seconds=60):
    """Append start/end lines to a file shared by every process, so a test
    can tell how often and how concurrently a job really ran; while the
    file ``hold_path`` exists (at most ``seconds``), the job keeps running.
    """
    with open(log_path, 'a') as stream:
        stream.write('start %s %d %.6f\n' % (job_name, os.getpid(),
                                              time.time()))
    local.set_live_annotation('started_by', os.getpid())
    deadline = time.monotonic() + seconds
    while hold_path and os.path.exists(hold_path) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(log_path, 'a') as stream:
        stream.write('end %s %d %.6f\n' % (job_name, os.getpid(),
                                            time.time()))
    return os.getpid()


def runs(log_path, job_name):
    """[(event, pid, time)] for ``job_name`` from the shared log."""
    if not os.path.exists(log_path):
        return []
    found = []
    with open(log_path) as stream:
        for line in stream:
            event, name, pid, when = line.split()
            if name == job_name:
                found.append((event, int(pid), float(when)))
    return found


def append_to(tree, key):
    """Touches only ZODB: the insert exists once if the job committed once."""
    tree[key] = tree.get(key, 0) + 1
    return key


def report_local():
    """What a running job sees of itself."""
    job = local.get_job()
    dispatcher = local.get_dispatcher()
    return (job._p_oid, local.get_queue().name,
            dispatcher.UUID if dispatcher else None)


def annotate_and_hold(hold_path, seconds=10):
    local.set_live_annotation('progress', 'half way')
    deadline = time.monotonic() + seconds
    while os.path.exists(hold_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return 'done'


class WorkerKiller(BaseException):
    """Not an Exception: escapes the runner, as a dying thread would."""


def kill_worker():
    raise WorkerKiller('the worker thread dies here')


def divide(a, b):
    return a / b


def remember(tree, key, value):
    tree[key] = value


def multiply(a, b):
    return a * b


def fail_while_flag(flag_path):
    """Fails while the file ``flag_path`` exists, then succeeds: a job an
    operator retries once the cause is fixed (the dashboard's Retry)."""
    if os.path.exists(flag_path):
        raise RuntimeError('the flag file %s is still there' % flag_path)
    return 'recovered'


# -- for tests/test_reliability.py ----------------------------------------

def note(log_path, line):
    """Append one line to a file shared by every process."""
    with open(log_path, 'a') as stream:
        stream.write(line + '\n')


def notes(log_path):
    if not os.path.exists(log_path):
        return []
    with open(log_path) as stream:
        return stream.read().split()


def append_with_pid(tree, pids, key, seconds=0.0, times=None):
    """``append_to`` that also stores which process committed it (and
    when, in ``times``); sleeps ``seconds`` first, so that a test can
    catch jobs running."""
    if seconds:
        time.sleep(seconds)
    tree[key] = tree.get(key, 0) + 1
    pids[key] = os.getpid()
    if times is not None:
        times[key] = time.time()
    return key


def raise_conflict(log_path, name):
    """Raises ConflictError on every attempt, noting each one."""
    from ZODB.POSException import ConflictError
    note(log_path, '%s:%d' % (name, os.getpid()))
    raise ConflictError('%s conflicts on purpose' % name)


def write_contended(mapping, log_path, name, seconds):
    """Read, wait, write the same non-resolving object others write: the
    commit conflicts while someone else keeps writing it meanwhile."""
    note(log_path, '%s:%d' % (name, os.getpid()))
    value = mapping.get('job', 0)
    time.sleep(seconds)
    mapping['job'] = value + 1
    return value + 1


def fail_with(log_path, name, message):
    note(log_path, '%s:%d' % (name, os.getpid()))
    raise ValueError(message)


def failing_callback(log_path, name, result):
    note(log_path, '%s:%d' % (name, os.getpid()))
    raise RuntimeError('callback %s refused %r' % (name, result))


def noting_callback(log_path, name, result):
    note(log_path, '%s:%d' % (name, os.getpid()))
    return 'saw %r' % (result,)


def describe_failure(failure):
    """An errback for ``addCallbacks``: what it was told, as text."""
    return 'handled %s: %s' % (failure.type_name, failure.message)


def pyramid_context():
    """What a job of a Pyramid app sees of its app."""
    from pyramid.threadlocal import get_current_registry, get_current_request
    registry = get_current_registry()
    request = local.get_request()
    return (registry.settings.get('custom.setting'),
            request.route_url('home', name='ann') if request else None,
            get_current_request() is request)


def busy_for(seconds):
    """Pure Python work: interruptible between bytecodes."""
    import time as _time
    deadline = _time.monotonic() + seconds
    count = 0
    while _time.monotonic() < deadline:
        count += 1
    return count


def noop():
    return None


def append_when_released(tree, pids, key, hold_path, times=None, seconds=30):
    """``append_with_pid`` once the file ``hold_path`` is gone (at most
    ``seconds``): a job a test can keep running as long as it needs."""
    deadline = time.monotonic() + seconds
    while os.path.exists(hold_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return append_with_pid(tree, pids, key, 0.0, times)


def remember_start(tree, key):
    """When the job started (time.time()), for pick-up latency."""
    tree[key] = time.time()
    return key


def progress_and_hold(hold_path, message='half', fraction=0.5, seconds=30):
    """Says how far it got (local.set_progress), then runs while the file
    ``hold_path`` exists (at most ``seconds``)."""
    local.set_progress(fraction, message)
    deadline = time.monotonic() + seconds
    while os.path.exists(hold_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return 'done'


def progress_then_fail(message):
    """Says how far it got, then fails: its own transaction aborts."""
    local.set_progress(0.25, message)
    raise ValueError('failed after saying %s' % message)
