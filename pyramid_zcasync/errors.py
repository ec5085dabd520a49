"""The exceptions of a job's status, apart from job.py so that
lifecycle.py (which job.py builds on) can raise them without importing it.

Their public home stays :mod:`pyramid_zcasync.job`: failure records store
an exception by its dotted class name (failure.py), and records stored
before this module existed name ``pyramid_zcasync.job.JobCancelled``.
Declaring that module as theirs keeps new records naming them the same
way, so ``Failure.check(JobCancelled)`` matches old and new records alike
(job.py imports them, which keeps that name importable).
"""
_PUBLIC_MODULE = 'pyramid_zcasync.job'


class BadStatusError(Exception):
    """A job was asked to do something its current status forbids."""


class JobCancelled(Exception):
    """The job was cancelled before it started: its failure record."""


BadStatusError.__module__ = JobCancelled.__module__ = _PUBLIC_MODULE


class DependencyFailed(Exception):
    """A prerequisite of the job (``put(..., after=...)``) failed, was
    cancelled or expired, so the job completed without running: its
    failure record names the prerequisite and that one's failure."""
