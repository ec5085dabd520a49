"""HTML building blocks of the admin pages: templates, escaping, small
formats, and the forms carrying the CSRF token.

Every value put in a page goes through :func:`e`: HTML-escaped, and its
control and bidi characters made visible (a job's text must not reorder
the page with U+202E); pages are :class:`string.Template` files under
``templates/``.
"""
from __future__ import annotations

import datetime
import html
import os
import string
from typing import Optional

from pyramid.csrf import get_csrf_token
from pyramid.interfaces import IDefaultCSRFOptions
from pyramid.response import Response

from .. import clock
from ..failure import Failure
from ..interfaces import CALLBACKS, COMPLETED
from ..safetext import KEEP_LINES, clip, escape
from . import route_name

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         'templates')
_templates: dict = {}


def template(name: str) -> string.Template:
    found = _templates.get(name)
    if found is None:
        with open(os.path.join(TEMPLATES, name), encoding='utf-8') as stream:
            found = _templates[name] = string.Template(stream.read())
    return found


def e(value) -> str:
    return html.escape(escape(str(value), KEEP_LINES), quote=True)


# -- small formats --------------------------------------------------------

def status_word(job) -> str:
    """What a job's state is called for people: a completed job
    ``succeeded`` or ``failed`` (zc.async's COMPLETED with a failure for
    a result is a state of the machine, not a word for a reader)."""
    if is_failed(job):
        return 'failed'
    if job.status == COMPLETED:
        return 'succeeded'
    return job.status.replace('-status', '')


def state_phrase(job) -> str:
    """``it succeeded``, ``it failed``, ``it is pending``: for messages."""
    word = status_word(job)
    return 'it ' + word if word in ('failed', 'succeeded') else 'it is ' + word


def short_uuid(uuid: str) -> str:
    return uuid[:8]


def oid_of(job) -> Optional[int]:
    oid = getattr(job, '_p_oid', None)
    return int.from_bytes(oid, 'big') if oid else None


def job_ref(job) -> str:
    oid = oid_of(job)
    if oid is None:
        return '<span class="oid">unsaved</span>'
    database = job._p_jar.db().database_name if job._p_jar else ''
    return '<span class="oid" title="oid %d in database %s">0x%x</span>' % (
        oid, e(repr(database)), oid)


def call_text(job) -> str:
    func = job.callable
    name = getattr(func, '__qualname__', None) or getattr(
        func, '__name__', None) or repr(func)
    module = getattr(func, '__module__', None)
    if module and module != 'builtins':
        name = '%s.%s' % (module.rsplit('.', 1)[-1], name)
    parts = [clip(repr(arg), 40) for arg in job.args]
    parts += ['%s=%s' % (key, clip(repr(value), 40))
              for key, value in sorted(job.kwargs.items())]
    return clip('%s(%s)' % (name, ', '.join(parts)), 110)


def ago(when: Optional[datetime.datetime], now: datetime.datetime) -> str:
    if when is None:
        return 'never'
    seconds = (now - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        text = '%d ms' % (seconds * 1000)
    elif seconds < 60:
        text = '%d s' % seconds
    elif seconds < 3600:
        text = '%d min' % (seconds // 60)
    elif seconds < 86400 * 2:
        text = '%d h %d min' % (seconds // 3600, seconds % 3600 // 60)
    else:
        text = '%d days' % (seconds // 86400)
    return 'in ' + text if future else text + ' ago'


def took(delta: Optional[datetime.timedelta]) -> str:
    if delta is None:
        return ''
    seconds = delta.total_seconds()
    if seconds < 0.0005:
        return '< 1 ms'
    if seconds < 1:
        return '%d ms' % round(seconds * 1000)
    if seconds < 60:
        return '%.1f s' % seconds
    if seconds < 3600:
        return '%d min %d s' % (seconds // 60, seconds % 60)
    return '%d h %d min' % (seconds // 3600, seconds % 3600 // 60)


def when_html(when: Optional[datetime.datetime],
              now: datetime.datetime) -> str:
    if when is None:
        return '<span class="muted">\u2014</span>'
    utc = when.astimezone(clock.UTC)
    iso = utc.replace(tzinfo=None).isoformat() + 'Z'
    shown = utc.strftime('%H:%M:%S') if abs(now - utc) < datetime.timedelta(
        hours=20) else utc.strftime('%Y-%m-%d %H:%M')
    return ('<time class="when" datetime="%s" title="%s">%s '
            '<span class="ago">%s</span></time>'
            % (e(iso), e(iso), e(shown), e(ago(utc, now))))


def pill(text: str, kind: str) -> str:
    return '<span class="pill %s">%s</span>' % (kind, e(text))


def queue_label(name: str) -> str:
    return e(name) if name else '<span class="muted">(default)</span>'


def is_failed(job) -> bool:
    return (job.status in (CALLBACKS, COMPLETED)
            and isinstance(job.result, Failure))


# -- forms ----------------------------------------------------------------

class Forms:
    """The action buttons, with the CSRF token when the app can make one."""

    def __init__(self, request):
        self.request = request
        options = request.registry.queryUtility(IDefaultCSRFOptions)
        self.field = getattr(options, 'token', None) or 'csrf_token'
        try:
            self.token = get_csrf_token(request)
        except Exception:  # no session factory nor CSRF storage policy
            self.token = None

    def button(self, action: str, fields: dict, label: str,
               kind: str = '', confirm: Optional[str] = None,
               busy: Optional[str] = None) -> str:
        url = self.request.route_path(route_name(action))
        if self.token is None:
            return ('<button class="btn %s" type="button" disabled title="'
                    'Actions need a session factory or a CSRF storage '
                    'policy in the app">%s</button>' % (kind, e(label)))
        hidden = [(self.field, self.token)] + list(fields.items())
        inputs = ''.join('<input type="hidden" name="%s" value="%s">'
                         % (e(name), e(value)) for name, value in hidden)
        question = ' data-confirm="%s"' % e(confirm) if confirm else ''
        return ('<form class="inline" method="post" action="%s"%s>%s'
                '<button class="btn %s" type="submit" data-action="%s"'
                ' data-busy="%s">%s</button></form>'
                % (e(url), question, inputs, kind, e(action),
                   e(busy or label + '\u2026'), e(label)))


def secure(response: Response, nonce: Optional[str] = None) -> None:
    """No caching, no framing (the buttons must not be clickjacked), and
    scripts only from this page."""
    script = "'nonce-%s'" % nonce if nonce else "'none'"
    response.headers.update({
        'Cache-Control': 'no-store',
        'X-Frame-Options': 'DENY',
        'X-Content-Type-Options': 'nosniff',
        'Referrer-Policy': 'same-origin',
        'Content-Security-Policy': (
            "default-src 'none'; style-src 'unsafe-inline'; "
            "script-src %s; connect-src 'self'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            % script),
    })
