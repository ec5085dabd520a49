"""The HTML dashboard at the prefix root (``/_async/``).

Server-rendered from the request's own ZODB connection: the modules
here compute what the page shows (:mod:`.sections`, :mod:`.recent`,
:mod:`.chart`, :mod:`.flash`), and the Jinja2 templates under
``templates/`` lay it out, escaping every value (:mod:`.pages`).
Nothing is loaded from elsewhere (no CDN, fonts or scripts): it works
offline.  A little inline script refreshes the page every few seconds by
fetching it again and swapping its live part, keeping open tracebacks
open, and skips a refresh while a form is being submitted or an input
has the focus; without script a ``<noscript>`` meta refresh does it.

The POST actions (cancel, retry, re-queue) live in :mod:`.actions`; the
forms here carry the CSRF token, which needs a session factory or a CSRF
storage policy in the app.  Without one the page still renders, with
the actions disabled and a note saying why.
"""
from __future__ import annotations

import secrets
from typing import Any

from pyramid.response import Response

from .. import clock
from . import add_admin_view, route_name
from .chart import chart, stat_cards, throughput
from .flash import flash_message
from .html import Forms, jobs_url
from .pages import page
from .recent import completed_rows, failed_rows
from .search import bulk_form, search_form
from .sections import (REFRESH_SECONDS, dispatcher_blocks, me,
                       periodic_rows, queue_blocks, registrations)


# -- the view -------------------------------------------------------------

def dashboard(request: Any) -> Response:
    now = clock.utcnow()
    queues = request.async_queues
    forms = Forms(request)
    regs = registrations(queues)
    counted = throughput(queues, now)
    return page(
        'dashboard.jinja2', nonce=secrets.token_urlsafe(16),
        title='Background jobs \u00b7 pyramid_zcasync',
        refresh=REFRESH_SECONDS, csrf_token=forms.token,
        generated='updated %s UTC' % now.strftime('%H:%M:%S'),
        me=me(request), flash=flash_message(request),
        search=search_form(request, filled=False), jobs_url=jobs_url(request),
        dismiss=request.route_path(route_name('dashboard')),
        cards=stat_cards(queues, regs, counted), chart=chart(counted),
        queues=queue_blocks(queues, forms, now),
        dispatchers=dispatcher_blocks(queues, regs, forms, request, now),
        periodic=periodic_rows(queues, now),
        failures=failed_rows(queues, forms, now, request),
        bulk=bulk_form(request, forms),
        completed=completed_rows(queues, now))


def includeme(config: Any) -> None:
    for name in ('dashboard', 'dashboard_bare'):
        add_admin_view(config, dashboard, name, request_method='GET',
                       renderer=None)
    config.include('pyramid_zcasync.views.actions')
