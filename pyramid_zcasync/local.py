"""What a running job can ask about itself, from its own thread.

The runner sets these for the duration of a call; outside a job they
return None (and ``set_live_annotation`` and ``set_progress`` raise;
``cancel_requested`` returns False).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import numbers
import reprlib
import threading
from typing import Any, Callable, Iterator, Optional, Protocol, Tuple

from . import clock, extensions, transact
from .annotated import annotation
from .errors import cancel_reason
from .safetext import clip

_state = threading.local()


class StopFlag(Protocol):
    """What the dispatcher running a call sets when the call's job was
    cancelled (timelimit.Interruptible)."""

    @property
    def stop_asked(self) -> bool: ...


class NeedsOwnTransaction(Exception):
    """Raised inside a group-committed job that asks for something only a
    job in its own transaction can do; the job is then run alone."""


@contextlib.contextmanager
def running(job: Any, db: Any = None, dispatcher: Any = None,
            grouped: bool = False, stop: Optional[StopFlag] = None
            ) -> Iterator[None]:
    """What the runner enters around a job's call: the job is current in
    this thread, and the extensions of its database are entered around
    it (e.g. the Pyramid app's context, context.py).  ``stop``: the flag
    a dispatcher watching for cancels sets (see cancel_requested)."""
    previous = getattr(_state, 'current', None)
    previous_stop = getattr(_state, 'stop', None)
    _state.current = (job, db, dispatcher)
    _state.grouped = grouped
    _state.stop = stop
    _state.request = _state.make_request = None
    try:
        with extensions.of(db).around_run(job):
            yield
    finally:
        _state.current = previous
        _state.stop = previous_stop
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


def cancel_requested() -> bool:
    """Whether the running job was asked to cancel: a long loop checks
    it and returns (or raises) to stop cleanly; the job then ends with a
    JobCancelled failure all the same, its transaction aborted.  If it
    does not stop, its dispatcher interrupts it shortly after.

    Under a dispatcher this is the flag its watch sets (cheap: ask it
    in every iteration); elsewhere the request is read as last committed
    in a connection of its own.  False outside a job."""
    job, db, _ = _current()
    if job is None:
        return False
    stop = getattr(_state, 'stop', None)
    if stop is not None:
        return stop.stop_asked
    if db is None or job._p_oid is None:
        return cancel_reason(job) is not None
    oid = job._p_oid
    return transact.read(
        db, lambda connection: cancel_reason(connection.get(oid))
        is not None)


def set_live_annotation(name: str, value: Any) -> None:
    """Store ``job.annotations[name] = value`` and commit it at once, in a
    transaction of its own, so others see it while the job still runs
    (the job's own transaction commits only at its end)."""
    _annotate_live('set_live_annotation', name, value)


def _annotate_live(caller: str, name: str, value: Any) -> None:
    """What ``set_live_annotation`` and ``set_progress`` share.  Only the
    annotations' BTree is written (the runner creates it when the job
    starts), so the job's own commit never conflicts with it; a job in a
    group has no transaction of its own to leave alone, so it is run
    alone instead."""
    job, db, _ = _current()
    if job is None:
        raise RuntimeError('%s is only available inside a running job'
                           % caller)
    if db is None or job._p_oid is None:
        job.annotations[name] = value
        return
    if getattr(_state, 'grouped', False):
        raise NeedsOwnTransaction(caller)
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


# -- progress -------------------------------------------------------------

#: The annotation holding a job's progress as ``(fraction, message, at)``:
#: a plain tuple, so that a stored record stays readable whatever becomes
#: of the classes here.
PROGRESS_KEY = 'pyramid_zcasync.progress'
#: The longest progress message kept: a job's text is shown on pages and
#: in terminals, and a progress is rewritten many times; more is clipped.
PROGRESS_MESSAGE_LIMIT = 200


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far a job said it got: ``fraction`` from 0 to 1, a ``message``
    for people (the job's own text: untrusted, shown escaped) and when
    it said so (``at``, UTC)."""
    fraction: float
    message: str
    at: datetime.datetime

    @property
    def percent(self) -> int:
        """Whole percents, rounded down: 99.9 % is not done."""
        return math.floor(self.fraction * 100)


def set_progress(fraction: float, message: str = '') -> None:
    """Say how far the running job got, committed at once like a live
    annotation: the views and ``pzcasync`` show it while the job runs.

    It is committed in a transaction of its own, so it stays when the
    job's own transaction aborts (a failed or retried attempt keeps its
    last progress until the next call says otherwise).  ``fraction`` is
    a number from 0 to 1; ``message`` is clipped to
    PROGRESS_MESSAGE_LIMIT characters.  In a group commit the job is run
    alone instead, as for ``set_live_annotation``.
    """
    progress = Progress(_checked_fraction(fraction),
                        clip(_checked_message(message),
                             PROGRESS_MESSAGE_LIMIT),
                        clock.utcnow())
    _annotate_live('set_progress', PROGRESS_KEY, dataclasses.astuple(
        progress))


def get_progress(job: Any) -> Optional[Progress]:
    """The progress ``job`` set last, as ``job``'s connection sees it
    (from another process, ``get_live_annotation(job, PROGRESS_KEY)``
    reads it as last committed); None if it never set one, as on every
    job stored before progress existed."""
    return _stored_progress(annotation(job, PROGRESS_KEY))


def _stored_progress(value: Any) -> Optional[Progress]:
    """The stored tuple as a Progress; None for anything else (a job may
    have written the key itself)."""
    if not (isinstance(value, tuple) and len(value) == 3):
        return None
    fraction, message, at = value
    if isinstance(fraction, float) and isinstance(message, str) \
            and isinstance(at, datetime.datetime):
        return Progress(fraction, message, at)
    return None


def _checked_fraction(fraction: Any) -> float:
    """A number from 0 to 1 as a float; anything else is the job's bug,
    named in the error (a bool is not a number here, nor is NaN)."""
    if isinstance(fraction, bool) or \
            not isinstance(fraction, numbers.Real):
        raise TypeError('set_progress: fraction must be a number from 0 '
                        'to 1, not %s' % reprlib.repr(fraction))
    try:
        value = float(fraction)
    except OverflowError:  # an int too large for a float
        value = math.inf
    if not 0.0 <= value <= 1.0:  # NaN fails it too
        raise ValueError('set_progress: fraction must be from 0 to 1, not '
                         '%s' % reprlib.repr(fraction))
    return value


def _checked_message(message: Any) -> str:
    if not isinstance(message, str):
        raise TypeError('set_progress: message must be a str, not %s'
                        % reprlib.repr(message))
    return message
