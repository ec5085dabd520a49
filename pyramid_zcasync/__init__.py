"""pyramid_zcasync: durable, transactional background jobs in ZODB.

``config.include('pyramid_zcasync')`` in a Pyramid app; without Pyramid,
``install_queues`` and ``dispatcher.start``.
"""
from . import interfaces  # noqa: F401  registers the IQueue(root) adapter
from .composite import parallel, serial
from .install import install_queues
from .job import Job

__all__ = ['Job', 'install_queues', 'parallel', 'serial']
