"""Job functions for the periodic-job tests: importable by the test
process and by the worker subprocesses (tests/ is on their PYTHONPATH)."""
import os
import time

from pyramid_zcasync import local, periodic


def record(runs):
    """Count this run under its occurrence: a value above 1 means an
    occurrence ran twice.  Also note which process ran it."""
    key = periodic.occurrence().isoformat()
    runs[key] = runs.get(key, 0) + 1
    local.get_job().annotations['pid'] = os.getpid()
    return key


def tick():
    return 'tick'


def tock(*args):
    return args


def record_when(runs):
    """Note each occurrence with the machine's (unskewed) time it ran."""
    runs[periodic.occurrence().isoformat()] = time.time()
