"""OpenTelemetry tracing of jobs: a span for each put, one for each run.

An extension (extensions.py), enabled with the setting
``zcasync.extensions = pyramid_zcasync.tracing:Tracing`` or
``extensions.add(db, Tracing())``; it needs the ``otel`` extra
(``pip install pyramid_zcasync[otel]``), imported only when a
``Tracing`` is made, so the package works without it.

A put is a short ``zcasync put <callable>`` span inside whatever span
is current (the request's, under OpenTelemetry's WSGI or Pyramid
instrumentation); its W3C trace context is stored in the job's
annotations, in the putter's transaction, so it commits with the job.

Each run (each attempt, and each callback) is a ``zcasync run
<callable>`` span *linked* to the put's span, not its child: a job may
run hours after its request ended, and several times, and a request's
trace that grows children long after it was displayed (or exported and
closed by a tail-based sampler) is misleading; OpenTelemetry's messaging
conventions link a consumer's processing to the producer for the same
reason.  The run's parent is whatever span is current in the thread
running it: none in a dispatcher's worker, so each run starts a trace of
its own; the span the caller has open when jobs run in-process.
"""
from __future__ import annotations

import contextlib
from typing import (TYPE_CHECKING, Any, Dict, Iterator, List, Mapping,
                    Optional)

from . import local
from .annotated import annotation
from .extensions import Extension
from .lifelog import attempt_of

if TYPE_CHECKING:
    from opentelemetry.trace import Link, Span, Tracer, TracerProvider

#: The job annotation holding the put's trace context (W3C headers).
CONTEXT_KEY = 'pyramid_zcasync.tracing'

#: The instrumentation scope our spans are reported under.
SCOPE = 'pyramid_zcasync'

#: Span attributes.
JOB_ID = 'zcasync.job.id'
CALLABLE = 'zcasync.job.callable'
QUEUE = 'zcasync.queue'
ATTEMPT = 'zcasync.job.attempt'
OUTCOME = 'zcasync.job.outcome'

SUCCEEDED = 'succeeded'
FAILED = 'failed'

MISSING = ("pyramid_zcasync.tracing needs OpenTelemetry: install the "
           "'otel' extra (pip install 'pyramid_zcasync[otel]')")


class Tracing(Extension):
    """Spans for puts and runs, reported to ``tracer_provider`` (the
    global one by default, as ``opentelemetry.trace`` configures it).

    Takes the app's settings as a factory named by ``zcasync.extensions``
    does; none of them is read yet.
    """

    def __init__(self, settings: Optional[Mapping[str, Any]] = None, *,
                 tracer_provider: Optional['TracerProvider'] = None) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import \
                TraceContextTextMapPropagator
        except ImportError as exc:
            raise ImportError(MISSING) from exc
        self.tracer: Tracer = trace.get_tracer(
            SCOPE, tracer_provider=tracer_provider)
        # W3C only, whatever the global propagators are: baggage (user
        # data) has no business being stored in every job.
        self.propagator = TraceContextTextMapPropagator()

    def before_put(self, queue: Any, job: Any) -> None:
        """A put span, child of the current span; its context is stored
        with the job for the runs to link to."""
        from opentelemetry.trace import SpanKind
        with self.tracer.start_as_current_span(
                'zcasync put ' + callable_name(job.callable),
                kind=SpanKind.PRODUCER,
                attributes=_put_attributes(queue, job)):
            carrier: Dict[str, str] = {}
            self.propagator.inject(carrier)
        if carrier:  # empty when no tracer records (no SDK configured)
            job.annotations[CONTEXT_KEY] = carrier

    @contextlib.contextmanager
    def around_run(self, job: Any) -> Iterator['Span']:
        """The call inside a run span linked to the put's; a raising call
        marks it ERROR, with the exception as an event, and the exception
        goes on unchanged."""
        from opentelemetry.trace import SpanKind
        with self.tracer.start_as_current_span(
                'zcasync run ' + callable_name(job.callable),
                kind=SpanKind.CONSUMER, links=self._links_to_put(job),
                attributes=_run_attributes(job)) as span:
            try:
                yield span
            except BaseException:
                span.set_attribute(OUTCOME, FAILED)
                raise
            span.set_attribute(OUTCOME, SUCCEEDED)

    def _links_to_put(self, job: Any) -> List['Link']:
        """A link to the span of the put of ``job`` (a callback: of its
        parent's); none for a job put before tracing was enabled."""
        from opentelemetry.trace import Link, get_current_span
        carrier = stored_context(job)
        if carrier is None:
            return []
        put = get_current_span(self.propagator.extract(carrier))
        context = put.get_span_context()
        return [Link(context)] if context.is_valid else []


def callable_name(func: Any) -> str:
    """The dotted name of a job's callable, for span names: few distinct
    values (never a repr, which may hold an object's state)."""
    name = getattr(func, '__qualname__', None)
    if not isinstance(name, str):
        name = type(func).__qualname__
    module = getattr(func, '__module__', None)
    return '%s.%s' % (module, name) if isinstance(module, str) else name


def stored_context(job: Any) -> Optional[Dict[str, str]]:
    """The trace context stored when ``job``, or the job it is a
    callback of, was put; None when there is none (or it is not W3C
    headers).  Reads without creating the job's annotations: a run must
    not write to the job for its tracing."""
    while job is not None:
        carrier = annotation(job, CONTEXT_KEY)
        if carrier is not None:
            return _as_headers(carrier)
        job = getattr(job, 'parent', None)
    return None


def _as_headers(carrier: Any) -> Optional[Dict[str, str]]:
    if not isinstance(carrier, Mapping):
        return None
    return {str(key): str(value) for key, value in carrier.items()}


def _job_id(job: Any) -> Dict[str, int]:
    """The job's oid as a number (the id of the views and the CLI), once
    it has one."""
    oid = getattr(job, '_p_oid', None)
    return {JOB_ID: int.from_bytes(oid, 'big')} if oid else {}


def _put_attributes(queue: Any, job: Any) -> Dict[str, Any]:
    return {CALLABLE: callable_name(job.callable),
            QUEUE: getattr(queue, 'name', ''), **_job_id(job)}


def _run_attributes(job: Any) -> Dict[str, Any]:
    attributes: Dict[str, Any] = {CALLABLE: callable_name(job.callable),
                                  ATTEMPT: attempt_of(job), **_job_id(job)}
    queue = local.get_queue() if local.get_job() is job else None
    if queue is not None:
        attributes[QUEUE] = queue.name
    return attributes
