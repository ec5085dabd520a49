"""What the admin pages show, computed: escaping, small formats, and the
values of the pieces every section uses (a job's label, a time, a pill, an
action button with its CSRF token).  The markup of those pieces is in
``templates/macros.jinja2``; the pages are rendered by :mod:`.pages`.

Every value put in a page goes through :func:`e` (the templates'
``finalize``): HTML-escaped, and its control and bidi characters made
visible (a job's text must not reorder the page with U+202E).
"""
from __future__ import annotations

import dataclasses
import datetime
import html
from typing import Any, Dict, List, Optional, Tuple

from pyramid.csrf import get_csrf_token
from pyramid.interfaces import IDefaultCSRFOptions
from pyramid.response import Response

from .. import clock
from ..failure import Failure
from ..interfaces import CALLBACKS, COMPLETED
from ..safetext import KEEP_LINES, clip, escape
from . import route_name

__all__ = ['clip']  # the sections clip with it too


def e(value: Any) -> str:
    return html.escape(escape(str(value), KEEP_LINES), quote=True)


# -- small formats --------------------------------------------------------

def status_word(job: Any) -> str:
    """What a job's state is called for people: a completed job
    ``succeeded`` or ``failed`` (zc.async's COMPLETED with a failure for
    a result is a state of the machine, not a word for a reader)."""
    if is_failed(job):
        return 'failed'
    if job.status == COMPLETED:
        return 'succeeded'
    return job.status.replace('-status', '')


def state_phrase(job: Any) -> str:
    """``it succeeded``, ``it failed``, ``it is pending``: for messages."""
    word = status_word(job)
    return 'it ' + word if word in ('failed', 'succeeded') else 'it is ' + word


def short_uuid(uuid: str) -> str:
    return uuid[:8]


def oid_of(job: Any) -> Optional[int]:
    oid = getattr(job, '_p_oid', None)
    return int.from_bytes(oid, 'big') if oid else None


@dataclasses.dataclass(frozen=True)
class JobLabel:
    """A job as the page names it: ``0x2a``, its database in the title."""
    oid: Optional[int]
    database: str = ''

    @property
    def text(self) -> str:
        return 'unsaved' if self.oid is None else '0x%x' % self.oid

    @property
    def title(self) -> str:
        return '' if self.oid is None else 'oid %d in database %r' % (
            self.oid, self.database)


def job_label(job: Any) -> JobLabel:
    oid = oid_of(job)
    if oid is None:
        return JobLabel(None)
    return JobLabel(oid, job._p_jar.db().database_name if job._p_jar else '')


def call_text(job: Any) -> str:
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


def readable_call(job: Any) -> str:
    """:func:`call_text`, or why the job cannot be read (its callable's
    module is gone, say): a listing shows the other jobs anyway."""
    try:
        return call_text(job)
    except Exception as exc:
        return 'unreadable: %s' % exc


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


@dataclasses.dataclass(frozen=True)
class When:
    """A time: ISO-8601 for machines, short and relative for people."""
    iso: str
    shown: str
    ago: str


def when(moment: Optional[datetime.datetime],
         now: datetime.datetime) -> Optional[When]:
    """None (shown as a dash) when there is no time."""
    if moment is None:
        return None
    utc = moment.astimezone(clock.UTC)
    shown = utc.strftime('%H:%M:%S') if abs(now - utc) < datetime.timedelta(
        hours=20) else utc.strftime('%Y-%m-%d %H:%M')
    return When(utc.replace(tzinfo=None).isoformat() + 'Z', shown,
                ago(utc, now))


@dataclasses.dataclass(frozen=True)
class Pill:
    """A state word in a coloured pill: ``kind`` is ok, bad, warn or idle."""
    text: str
    kind: str


def is_failed(job: Any) -> bool:
    return (job.status in (CALLBACKS, COMPLETED)
            and isinstance(job.result, Failure))


def job_url(request: Any, oid: Optional[int]) -> str:
    """The page of the job with this oid (:mod:`.jobpage`)."""
    return request.route_path(route_name('job_page'), oid=oid)


def jobs_url(request: Any) -> str:
    """The job pages' common prefix: the listings' templates append an
    oid to it (``macros.jinja2``'s ``job_ref``)."""
    return request.route_path(route_name('job_page'), oid='')


# -- forms ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Button:
    """An action's form: POSTed to ``url`` with the CSRF token and
    ``fields``; disabled (no form) when the app can make no token."""
    action: str
    url: str
    label: str
    kind: str
    fields: Tuple[Tuple[str, str], ...]
    confirm: Optional[str]
    busy: str
    enabled: bool


class Forms:
    """The action buttons, with the CSRF token when the app can make one."""

    def __init__(self, request: Any) -> None:
        self.request = request
        options = request.registry.queryUtility(IDefaultCSRFOptions)
        self.field = getattr(options, 'token', None) or 'csrf_token'
        try:
            self.token: Optional[str] = get_csrf_token(request)
        except Exception:  # no session factory nor CSRF storage policy
            self.token = None

    def button(self, action: str, fields: Dict[str, Any], label: str,
               kind: str = '', confirm: Optional[str] = None,
               busy: Optional[str] = None) -> Button:
        hidden: List[Tuple[str, str]] = []
        if self.token is not None:
            hidden = [(self.field, self.token)] + [
                (name, str(value)) for name, value in fields.items()]
        return Button(action, self.request.route_path(route_name(action)),
                      label, kind, tuple(hidden), confirm,
                      busy or label + '\u2026', self.token is not None)


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
