"""pyramid_zcasync: durable, transactional background jobs in ZODB.

``config.include('pyramid_zcasync')`` in a Pyramid app; without Pyramid,
``install_queues`` and ``dispatcher.start``.  Importing the package loads
neither Pyramid nor Twisted: a process that only reads stored jobs and
failure records needs neither.
"""
from typing import Any

from . import interfaces  # noqa: F401  registers the IQueue(root) adapter
from .composite import parallel, serial
from .install import install_queues
from .job import Job

__all__ = ['Job', 'includeme', 'install_queues', 'parallel', 'serial']


def includeme(config: Any) -> None:
    """``config.include('pyramid_zcasync')``; see :mod:`.config`."""
    from .config import includeme as include
    include(config)
