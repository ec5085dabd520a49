"""The Pyramid app's context inside its jobs.

A job put from a view should be able to use what the view could: the
registry (settings, utilities) through ``get_current_registry()``, and
URL generation.  The dispatcher started by ``includeme`` runs each job
with the app's registry pushed on Pyramid's thread-local stack, and
``pyramid_zcasync.local.get_request()`` builds a request at
``zcasync.app_url`` for ``route_url`` and friends.  Without Pyramid (a
dispatcher started by hand) there is no such context.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

from pyramid.interfaces import IRequestFactory
from pyramid.request import Request, apply_request_extensions
from pyramid.threadlocal import manager

from . import aio, local
from .extensions import Extension

# A coroutine job runs in the event loop's thread: Pyramid's thread-local
# registry and request must be current there too while it runs.
aio.carry(manager)

#: Where generated URLs point when ``zcasync.app_url`` is not set.
DEFAULT_APP_URL = 'http://localhost'


class PyramidContext(Extension):
    """An extension (see extensions.py) that config.py adds for each app."""

    def __init__(self, registry: Any, app_url: Optional[str] = None):
        self.registry = registry
        self.app_url = app_url or DEFAULT_APP_URL

    @contextlib.contextmanager
    def around_run(self, job: Any) -> Iterator[dict]:
        """The app's registry is current while ``job`` runs, and the job's
        request (made when first asked for) with it."""
        frame = {'registry': self.registry, 'request': None}

        def make() -> Request:
            request = frame['request'] = self.make_request()
            return request

        manager.push(frame)
        local.offer_request(make)
        try:
            yield frame
        finally:
            manager.pop()

    def make_request(self) -> Request:
        """A request at the app's URL, with the app's request methods, for
        URL generation; it serves no HTTP and has no transaction of its
        own (use ``local.get_queue()`` inside jobs, not
        ``request.async_queue``)."""
        factory = self.registry.queryUtility(IRequestFactory, default=Request)
        request = factory.blank('/', base_url=self.app_url)
        request.registry = self.registry
        apply_request_extensions(request)
        return request
