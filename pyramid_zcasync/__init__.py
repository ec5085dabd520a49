"""pyramid_zcasync: durable, transactional background jobs in ZODB.

``config.include('pyramid_zcasync')`` in a Pyramid app; without Pyramid,
``install_queues`` and ``dispatcher.start``.
"""
from . import interfaces  # noqa: F401  registers the IQueue(root) adapter
from .composite import parallel, serial
from .config import includeme
from .install import install_queues
from .job import Job

__all__ = ['Job', 'includeme', 'install_queues', 'parallel', 'serial']
