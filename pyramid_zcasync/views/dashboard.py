"""The HTML dashboard at the prefix root (``/_async/``).

Server-rendered from the request's own ZODB connection, with
:class:`string.Template` pages under ``templates/`` and small functions
here that escape every value with :func:`html.escape`.  Nothing is loaded
from elsewhere (no CDN, fonts or scripts): it works offline.  A little
inline script refreshes the page every few seconds by fetching it again
and swapping its live part, keeping open tracebacks open, and skips a
refresh while a form is being submitted or an input has the focus;
without script a ``<noscript>`` meta refresh does it.

The POST actions (cancel, retry, re-queue) live in :mod:`.actions`; the
forms here carry the CSRF token, which needs a session factory or a CSRF
storage policy in the app.  Without one the page still renders, with
the actions disabled and a note saying why.
"""
from __future__ import annotations

import secrets

from pyramid.response import Response

from .. import clock
from . import add_admin_view
from .html import Forms, e, secure, template
from .chart import chart_html, stats_html, throughput
from .flash import flash_html
from .sections import (REFRESH_SECONDS, completed_html, dispatchers_html,
                       failed_html, me_html, periodic_html, queues_html,
                       registrations)


# -- the view -------------------------------------------------------------

def dashboard(request):
    now = clock.utcnow()
    queues = request.async_queues
    forms = Forms(request)
    regs = registrations(queues)
    chart = throughput(queues, now)
    body = []
    if forms.token is None:
        body.append('<div class="warnbox">Actions are disabled: the app has '
                    'no session factory nor CSRF storage policy, so these '
                    'forms cannot carry a CSRF token.</div>')
    body.append(stats_html(queues, regs, chart, now))
    body.append('<div class="grid">%s%s</div>' % (
        chart_html(chart), queues_html(queues, forms, now)))
    body.append(dispatchers_html(queues, regs, forms, request, now))
    body.append(periodic_html(queues, now))
    body.append(failed_html(queues, forms, now, request))
    body.append(completed_html(queues, now))
    nonce = secrets.token_urlsafe(16)
    page = template('dashboard.html').substitute(
        title='Background jobs \u00b7 pyramid_zcasync',
        refresh=REFRESH_SECONDS, nonce=nonce, me=me_html(request, now),
        generated='updated %s UTC' % now.strftime('%H:%M:%S'),
        flash=flash_html(request), body='\n'.join(body),
        csrf_meta='' if forms.token is None else
        '<meta name="csrf-token" content="%s">\n' % e(forms.token))
    response = Response(page, content_type='text/html', charset='utf-8')
    secure(response, nonce)
    return response


def includeme(config) -> None:
    for name in ('dashboard', 'dashboard_bare'):
        add_admin_view(config, dashboard, name, request_method='GET',
                       renderer=None)
    config.include('pyramid_zcasync.views.actions')
