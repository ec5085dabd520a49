"""What the demo's one HTML page shows, for ``templates/page.jinja2``.

The page is rendered by pyramid_jinja2, as any Pyramid app would render
it (``config.include('pyramid_jinja2')`` in :func:`..demo.configure`),
with autoescaping on, so a job's text cannot inject markup; the inline
script writes with ``textContent`` only, and gets the one URL it needs
as JSON.  The script polls ``/jobs/{oid}`` for jobs not completed yet;
without JavaScript a ``<meta refresh>`` reloads.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Tuple

from pyramid.renderers import render as render_template

from .form import LABELS
from .jobs import KINDS

#: The page's template.
TEMPLATE = 'pyramid_zcasync.demo:templates/page.jinja2'


@dataclasses.dataclass(frozen=True)
class AdminLinks:
    """Links to the admin views (for a visitor, ``dashboard`` and
    ``status`` lead through the login form, so that they arrive)."""
    logged_in: bool
    dashboard: str
    status: str
    status_path: str
    logout: str


@dataclasses.dataclass(frozen=True)
class Row:
    """One recent job: ``result`` is None until it is done, ``failure``
    its type, message and traceback if it failed."""
    oid: int
    done: int
    call: str
    classes: str
    status: str
    begin_after: str
    result: Optional[str]
    failure: Optional[Dict[str, str]]


def row(info: Dict[str, Any], highlight: Optional[int]) -> Row:
    failed = info['failure'] is not None
    classes = [name for name, wanted in (
        ('completed', info['done'] and not failed),
        ('failed', info['done'] and failed),
        ('highlight', info['oid'] == highlight)) if wanted]
    result = repr(info['result']) if info['done'] and not failed else None
    return Row(info['oid'], int(info['done']), info['call'],
               ' '.join(classes), info['status'],
               (info['begin_after'] or '')[:19].replace('T', ' '), result,
               info['failure'])


def kinds() -> List[Tuple[str, str]]:
    """The form's job kinds: (value, label)."""
    return [(value, label) for value, (_, label) in KINDS.items()]


def render(request: Any, *, action: str, job_url: str, csrf_token: str,
           values: Dict[str, Any], jobs: Iterable[Dict[str, Any]],
           dispatcher: str, admin: AdminLinks, error: Optional[str] = None,
           highlight: Optional[int] = None) -> str:
    """The page: the form filled with ``values``, then the jobs."""
    jobs = list(jobs)
    return str(render_template(TEMPLATE, dict(
        action=action, job_url=job_url, csrf_token=csrf_token,
        values=values, labels=LABELS, kinds=kinds(), dispatcher=dispatcher,
        admin=admin, error=error,
        rows=[row(info, highlight) for info in jobs],
        # Without JavaScript, reload while a job is unfinished (only then:
        # a reload would lose what is being typed in the form).
        refresh=any(not info['done'] for info in jobs)), request=request))
