"""The vocabulary shared by every module: interfaces, statuses, events.

``IQueue(root)`` adapts a ZODB root to its default queue ``''``; the
adapter hook is registered when this module is imported, so it works
as soon as ``pyramid_zcasync`` is imported (no ZCML, no registry).
"""
from __future__ import annotations

from typing import Any

import zope.interface
from zope.interface.interface import adapter_hooks

#: Root key of the :class:`~pyramid_zcasync.queue.Queues` mapping.
KEY = 'pyramid_zcasync'

#: A job that has not been put in a queue yet.
NEW = 'new-status'
#: A job waiting in a queue to be claimed.
PENDING = 'pending-status'
#: A job claimed by a dispatcher's agent, not yet started.
ASSIGNED = 'assigned-status'
#: A job whose call has started (committed before the call runs).
ACTIVE = 'active-status'
#: A job with a result whose callbacks have not all run yet.
CALLBACKS = 'callback-status'
#: A job with a result and all callbacks run.
COMPLETED = 'completed-status'

STATUSES = (NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED)


class IJob(zope.interface.Interface):
    """A persistent call: callable, arguments, status and result."""

    status = zope.interface.Attribute('One of the statuses above.')
    result = zope.interface.Attribute(
        'The return value, or a failure record when the call raised.')
    begin_after = zope.interface.Attribute('Aware UTC datetime.')
    begin_by = zope.interface.Attribute('Aware UTC deadline, or None.')
    annotations = zope.interface.Attribute('Persistent mapping.')
    priority = zope.interface.Attribute('Higher runs first; default 0.')
    time_limit = zope.interface.Attribute(
        'Seconds the call may run before it fails with TimeLimitExceeded.')

    def __call__(*args: Any, **kwargs: Any) -> Any:
        """Run the job in the current transaction."""

    def addCallback(callback: Any) -> Any:
        """Run ``callback(result)`` once the job has a result."""

    def addCallbacks(success: Any = None, failure: Any = None) -> Any:
        """Run ``success(result)`` or ``failure(failure_record)``."""


class IQueue(zope.interface.Interface):
    """Pending jobs in order, and the dispatchers serving them."""

    def put(item: Any, *args: Any, begin_after: Any = None,
            begin_by: Any = None, priority: Any = None,
            time_limit: Any = None, unique_key: Any = None,
            after: Any = None, **kwargs: Any) -> Any:
        """Queue a job (or a callable and its arguments); return the job.

        Claims take the highest ``priority`` first (an int from -100 to
        100, default 0), then the earliest due, then the first queued.
        With ``unique_key`` (a non-empty string), return the queue's job
        put with that key if it has not completed, queueing nothing; the
        key is free again once that job completes.  With ``after`` (jobs
        put in this database), the job waits until they all succeeded,
        and completes with DependencyFailed, without running, if one
        failed or was cancelled.
        """

    def putBack(job: Any) -> Any:
        """Queue a job in front of all others."""

    def pull(index: int = 0) -> Any:
        """Remove and return the pending job at ``index``."""

    def remove(job: Any) -> None:
        """Remove a pending job."""

    def claim(filter: Any = None) -> Any:
        """Assign the next runnable job, or return None."""

    paused = zope.interface.Attribute(
        'True while no dispatcher claims from this queue (pause/resume).')

    # zope.interface methods name no ``self``; mypy reads them as plain
    # methods, hence the ignores.
    def pause() -> None:  # type: ignore[misc]
        """Stop every dispatcher claiming from this queue at its next
        poll; running jobs finish."""

    def resume() -> None:  # type: ignore[misc]
        """Let dispatchers claim from this queue again."""


class IQueues(zope.interface.Interface):
    """The mapping of queue names to queues stored under ``root[KEY]``."""


class IFailure(zope.interface.Interface):
    """A stable, picklable record of an exception raised by a job."""


# -- events ---------------------------------------------------------------

class JobQueued:
    """A job was put in a queue (the transaction is not committed yet)."""

    def __init__(self, job: Any, queue: Any):
        self.job = job
        self.queue = queue


class DispatcherActivated:
    """A dispatcher registered itself as running in a queue."""

    def __init__(self, queue: Any, uuid: str):
        self.queue = queue
        self.uuid = uuid


class DispatcherDeactivated:
    """A dispatcher stopped, or was found dead by a sibling."""

    def __init__(self, queue: Any, uuid: str):
        self.queue = queue
        self.uuid = uuid


def _adapt_root_to_default_queue(iface: Any, obj: Any) -> Any:
    if iface is not IQueue:
        return None
    try:
        queues = obj[KEY]
    except (KeyError, TypeError, AttributeError):
        return None
    try:
        return queues['']
    except KeyError:
        return None


if _adapt_root_to_default_queue not in adapter_hooks:
    adapter_hooks.append(_adapt_root_to_default_queue)
