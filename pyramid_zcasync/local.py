"""What a running job can ask about itself, from its own thread.

The runner sets these for the duration of a call; outside a job they
return None (and ``set_live_annotation`` raises).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Optional, Tuple

from . import extensions, transact

_state = threading.local()


class NeedsOwnTransaction(Exception):
    """Raised inside a group-committed job that asks for something only a
    job in its own transaction can do; the job is then run alone."""


@contextlib.contextmanager
def running(job: Any, db: Any = None, dispatcher: Any = None,
            grouped: bool = False) -> Iterator[None]:
    """What the runner enters around a job's call: the job is current in
    this thread, and the extensions of its database are entered around
    it (e.g. the Pyramid app's context, context.py)."""
    previous = getattr(_state, 'current', None)
    _state.current = (job, db, dispatcher)
    _state.grouped = grouped
    _state.request = _state.make_request = None
    try:
        with extensions.of(db).around_run(job):
            yield
    finally:
        _state.current = previous
        _state.grouped = False
        _state.request = _state.make_request = None


def offer_request(make: Callable[[], Any]) -> None:
    """How ``get_request`` makes the running job's request: offered by an
    extension around the run (the Pyramid app's, context.py), so this
    module needs no Pyramid."""
    _state.make_request = make


def get_request() -> Any:
    """Inside a job of a Pyramid app: a request at ``zcasync.app_url`` for
    URL generation (``get_request().route_url('home')``); made once per
    job, and made current for Pyramid's thread-locals.  None elsewhere."""
    request = getattr(_state, 'request', None)
    if request is None:
        make = getattr(_state, 'make_request', None)
        if make is None or get_job() is None:
            return None
        request = _state.request = make()
    return request


def _current() -> Tuple[Any, Any, Any]:
    return getattr(_state, 'current', None) or (None, None, None)


def get_job() -> Any:
    """The job being run in this thread, in the runner's connection."""
    return _current()[0]


def get_queue() -> Any:
    """The queue of the running job; a callback's is its parent's."""
    job = get_job()
    while job is not None and job.queue is None:
        job = job.parent
    return None if job is None else job.queue


def get_dispatcher() -> Any:
    return _current()[2]


def set_live_annotation(name: str, value: Any) -> None:
    """Store ``job.annotations[name] = value`` and commit it at once, in a
    transaction of its own, so others see it while the job still runs
    (the job's own transaction commits only at its end)."""
    job, db, _ = _current()
    if job is None:
        raise RuntimeError('set_live_annotation is only available inside '
                           'a running job')
    if db is None or job._p_oid is None:
        job.annotations[name] = value
        return
    if getattr(_state, 'grouped', False):
        raise NeedsOwnTransaction('set_live_annotation')
    oid = job._p_oid

    def annotate(connection: Any) -> None:
        connection.get(oid).annotations[name] = value
    transact.write(db, annotate, attempts=1)


def get_live_annotation(job: Any, name: str,
                        default: Optional[Any] = None) -> Any:
    """Read an annotation as last committed, not as this connection saw it.

    Read through a connection of its own, as zc.async does: syncing the
    job's connection would abort whatever the caller (often a running
    job, waiting for another's progress) has changed so far.
    """
    jar = job._p_jar
    if jar is None or job._p_oid is None:
        return job.annotations.get(name, default)
    oid = job._p_oid

    def read(connection: Any) -> Any:
        value = connection.get(oid).annotations.get(name, default)
        activate = getattr(value, '_p_activate', None)
        if activate is not None:
            activate()  # loaded before its connection closes
        return value
    return transact.read(jar.db(), read)
