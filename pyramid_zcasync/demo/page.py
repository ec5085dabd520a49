"""The demo's one HTML page, from ``string.Template`` and ``html.escape``.

No template engine: the demo must run on the add-on's own dependencies,
and a page this small reads well as one template.  Every value is escaped
here, and the inline script writes with ``textContent`` only, so a job's
message cannot inject markup.  The script polls ``/jobs/{oid}`` for jobs
not completed yet; without JavaScript a ``<meta refresh>`` reloads.
"""
from __future__ import annotations

import json
from html import escape
from string import Template
from typing import Iterable, Optional

from .form import LABELS
from .jobs import KINDS

PAGE = Template('''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>pyramid_zcasync demo</title>
$refresh
<style>
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; }
table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #ccc; padding: .3em; text-align: left;
         vertical-align: top; }
.error { background: #fdd; border: 1px solid #c00; padding: .5em; }
.failure, .failed { color: #a00; } .completed { color: #070; }
.highlight { background: #ffc; } pre { font-size: .8em; }
</style></head><body>
<h1>pyramid_zcasync demo</h1>
<p>$dispatcher</p>
<nav class="admin">$admin</nav>
$error
<form id="queue" method="post" action="$action">
<input type="hidden" name="csrf_token" value="$csrf_token">
<label>${label_kind} <select name="kind">$kinds</select></label>
<label>${label_a} <input name="a" value="$a" size="8"></label>
<label>${label_b} <input name="b" value="$b" size="8"></label>
<label>${label_delay} <input name="delay" value="$delay" size="4"></label>
<button type="submit">Queue the job</button>
</form>
<p>The job is committed with this request's transaction, then run by the
dispatcher thread; the table updates as it moves on.</p>
<h2>Recent jobs</h2>
<table><thead><tr><th>oid</th><th>call</th><th>status</th>
<th>begins after (UTC)</th><th>result</th></tr></thead>
<tbody>$rows</tbody></table>
<script>
(function () {
  var url = $job_url;
  function show(row, job) {
    row.querySelector(".status").textContent = job.status;
    var cell = row.querySelector(".result");
    cell.textContent = "";
    if (job.failure) {
      var summary = document.createElement("span");
      summary.className = "failure";
      summary.textContent = job.failure.type + ": " + job.failure.message;
      var details = document.createElement("details");
      var pre = document.createElement("pre");
      pre.textContent = job.failure.traceback;
      details.appendChild(document.createElement("summary")).textContent =
        "traceback";
      details.appendChild(pre);
      cell.appendChild(summary);
      cell.appendChild(details);
    } else if (job.done) {
      cell.textContent = JSON.stringify(job.result);
    }
    if (job.done) {
      row.dataset.done = "1";
      row.classList.add(job.failure ? "failed" : "completed");
    }
  }
  function poll() {
    var rows = document.querySelectorAll("tr[data-done='0']");
    rows.forEach(function (row) {
      fetch(url.replace("OID", row.dataset.oid),
            {headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (job) { if (job) { show(row, job); } })
        .catch(function () {});
    });
    if (rows.length) { setTimeout(poll, 1000); }
  }
  setTimeout(poll, 500);
})();
</script>
</body></html>
''')

#: The admin links for the admin, logged in.
ADMIN_IN = Template(
    '<p>Logged in as <code>admin</code>: the <a href="$dashboard">admin '
    'dashboard</a> (queues, dispatchers, failures) and '
    '<a href="$status">$status_path</a> (this dispatcher, as JSON). '
    '<form id="logout" method="post" action="$logout" '
    'style="display:inline">'
    '<input type="hidden" name="csrf_token" value="$csrf_token">'
    '<button type="submit">Log out</button></form></p>')
#: The same links for a visitor: they lead through the login form.
ADMIN_OUT = Template(
    '<p>Admin views (log in as <code>admin</code>, password: the '
    '<code>demo.admin_password</code> setting): the <a href="$dashboard">'
    'admin dashboard</a> and <a href="$status">$status_path</a>.</p>')

REFRESH = '<noscript><meta http-equiv="refresh" content="3"></noscript>'

ROW = Template('<tr id="job-$oid" data-oid="$oid" data-done="$done"$cls>'
               '<td>$oid</td><td><code>$call</code></td>'
               '<td class="status">$status</td><td>$begin_after</td>'
               '<td class="result">$result</td></tr>')

FAILURE = Template('<span class="failure">$type: $message</span>'
                   '<details><summary>traceback</summary>'
                   '<pre>$traceback</pre></details>')


def _js_string(text: str) -> str:
    """A JavaScript string literal that cannot close the script element."""
    return json.dumps(text).replace('<', '\\u003c')


def _result_html(info: dict) -> str:
    failure = info['failure']
    if failure:
        return FAILURE.substitute({k: escape(v) for k, v in failure.items()})
    if not info['done']:
        return ''
    return escape(repr(info['result']))


def _row(info: dict, highlight: Optional[int]) -> str:
    failed = info['failure'] is not None
    classes = [name for name, wanted in (
        ('completed', info['done'] and not failed),
        ('failed', info['done'] and failed),
        ('highlight', info['oid'] == highlight)) if wanted]
    begin_after = (info['begin_after'] or '')[:19].replace('T', ' ')
    return ROW.substitute(
        oid=info['oid'], done=int(info['done']), call=escape(info['call']),
        cls=' class="%s"' % ' '.join(classes) if classes else '',
        status=escape(info['status']), begin_after=escape(begin_after),
        result=_result_html(info))


def _kinds(selected: str) -> str:
    return ''.join(
        '<option value="%s"%s>%s</option>' % (
            escape(value), ' selected' if value == selected else '',
            escape(label))
        for value, (_, label) in KINDS.items())


def admin_links(*, logged_in: bool, dashboard: str, status: str,
                status_path: str, logout: str, csrf_token: str) -> str:
    """Links to the admin views (for a visitor, ``dashboard`` and
    ``status`` lead through the login form, so that they arrive)."""
    template = ADMIN_IN if logged_in else ADMIN_OUT
    return template.substitute(
        dashboard=escape(dashboard), status=escape(status),
        status_path=escape(status_path), logout=escape(logout),
        csrf_token=escape(csrf_token))


def render(*, action: str, job_url: str, csrf_token: str, values: dict,
           jobs: Iterable[dict], dispatcher: str, admin: str,
           error: Optional[str] = None,
           highlight: Optional[int] = None) -> str:
    """The page: the form filled with ``values``, then the jobs;
    ``admin`` is :func:`admin_links`' HTML."""
    jobs = list(jobs)
    rows = ''.join(_row(info, highlight) for info in jobs)
    # Without JavaScript, reload while a job is unfinished (only then: a
    # reload would lose what is being typed in the form).
    running = any(not info['done'] for info in jobs)
    return PAGE.substitute(
        action=escape(action), job_url=_js_string(job_url),
        csrf_token=escape(csrf_token), dispatcher=escape(dispatcher),
        admin=admin,
        refresh=REFRESH if running else '',
        error=('<p class="error">%s</p>' % escape(error)) if error else '',
        kinds=_kinds(values['kind']),
        a=escape(values['a']), b=escape(values['b']),
        delay=escape(values['delay']),
        rows=rows or '<tr><td colspan="5">No jobs yet.</td></tr>',
        **{'label_' + name: escape(label) for name, label in LABELS.items()})
