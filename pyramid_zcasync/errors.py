"""The exceptions of a job's status, apart from job.py so that
lifecycle.py (which job.py builds on) can raise them without importing it.

Their public home stays :mod:`pyramid_zcasync.job`: failure records store
an exception by its dotted class name (failure.py), and records stored
before this module existed name ``pyramid_zcasync.job.JobCancelled``.
Declaring that module as theirs keeps new records naming them the same
way, so ``Failure.check(JobCancelled)`` matches old and new records alike
(job.py imports them, which keeps that name importable).
"""
from typing import Any, Optional

_PUBLIC_MODULE = 'pyramid_zcasync.job'

#: The job attribute holding the reason of a cancel requested while the
#: job was claimed or running (lifecycle.cancel writes it, the runners
#: and the dispatcher's watch read it).  Absent on jobs stored before.
CANCEL_REQUEST = 'cancel_requested'


class BadStatusError(Exception):
    """A job was asked to do something its current status forbids."""


class JobCancelled(Exception):
    """The job was cancelled: before it started, or interrupted while it
    ran (then its attempt's transaction was aborted).  Its failure
    record; no retry policy retries it."""


BadStatusError.__module__ = JobCancelled.__module__ = _PUBLIC_MODULE


def cancel_reason(job: Any) -> Optional[str]:
    """Why a cancel of ``job`` was requested while it was claimed or
    running, as ``job``'s connection sees it; None if none was."""
    reason = getattr(job, CANCEL_REQUEST, None)
    return reason if isinstance(reason, str) else None


class DependencyFailed(Exception):
    """A prerequisite of the job (``put(..., after=...)``) failed, was
    cancelled or expired, so the job completed without running: its
    failure record names the prerequisite and that one's failure."""
