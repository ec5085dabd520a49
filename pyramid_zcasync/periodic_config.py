"""``config.add_periodic_job``: periodic jobs declared by a Pyramid app.

The schedules themselves (periodic.py) know nothing of Pyramid; this is
the directive that declares them, checked when it is made and recorded
in the database when the app is created, so each process starting the
app makes the stored schedules match its declarations.  Included by
``config.include('pyramid_zcasync')``.
"""
from __future__ import annotations

from typing import Any, Optional

from pyramid.events import ApplicationCreated
from pyramid.exceptions import ConfigurationError

from .config import queue_database
from .job import _check_storable
from .periodic import ONCE, check_schedule, record_declared


def add_periodic_job(config: Any, callable: Any, *args: Any,
                     cron: str = '*/5 * * * *', name: Optional[str] = None,
                     queue: str = '', missed: str = ONCE,
                     timezone: str = 'UTC') -> None:
    """The ``config.add_periodic_job`` directive: the schedule is recorded
    in the database when the app is created.  ``callable`` may be a
    dotted name; ``name`` defaults to its dotted name.  Two declarations
    of one name in one queue conflict, as Pyramid directives do."""
    func = config.maybe_dotted(callable)
    if name is None:
        name = '%s.%s' % (getattr(func, '__module__', '?'),
                          getattr(func, '__qualname__', repr(func)))
    check_schedule(name, cron, missed, timezone)
    _check_storable(func)
    registry = config.registry

    def register() -> None:
        settings = getattr(registry, 'zcasync_settings', None)
        known = {''} | set(settings.queues if settings else ())
        if queue not in known:
            raise ConfigurationError(
                'add_periodic_job(name=%r): no queue %r; zcasync.queues '
                'installs %s' % (name, queue, sorted(known)))
        registry.zcasync_periodic[(queue, name)] = dict(
            func=func, args=args, cron=cron, missed=missed,
            timezone=timezone)
    config.action(('pyramid_zcasync.periodic', queue, name), register)


def _record_at_start(event: Any) -> None:
    registry = event.app.registry
    record_declared(queue_database(registry), registry.zcasync_periodic)


def includeme(config: Any) -> None:
    """Done by ``config.include('pyramid_zcasync')``; once is enough."""
    if getattr(config.registry, 'zcasync_periodic', None) is not None:
        return
    config.registry.zcasync_periodic = {}
    config.add_directive('add_periodic_job', add_periodic_job)
    config.add_subscriber(_record_at_start, ApplicationCreated)
