"""OpenTelemetry tracing (pyramid_zcasync.tracing): a put span inside the
current trace, its context stored with the job, and a run span linked to
it, seen through the SDK's in-memory exporter with a real dispatcher.

Each test gives the extension its own TracerProvider: the global one is
never set, so nothing leaks between tests."""
import importlib.util
import sys

import pytest
import transaction
from pyramid.path import DottedNameResolver

import jobs
from pyramid_zcasync import dispatcher as dispatcher_module
from pyramid_zcasync import extensions
from pyramid_zcasync.job import Job
from pyramid_zcasync.retry import RETRY_COUNTS
from pyramid_zcasync.testing import tear_down_dispatcher, wait_for_result

otel = pytest.importorskip('opentelemetry.sdk.trace')
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa
    InMemorySpanExporter)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from pyramid_zcasync import tracing  # noqa: E402


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    provider = otel.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def traced(file_db, provider):
    """The file database with a Tracing extension reporting to
    ``provider``."""
    extensions.add(file_db, tracing.Tracing(tracer_provider=provider))
    return file_db


@pytest.fixture
def db(file_db):
    """The file database under conftest's ``conn`` and ``queue``: the
    runs need a real dispatcher."""
    return file_db


@pytest.fixture
def start_dispatcher(file_db, tmp_path):
    started = []

    def start():
        started.append(dispatcher_module.start(
            file_db, uuid_file=str(tmp_path / 'uuid.txt'), poll_interval=0.1,
            install_signal_handlers=False))
    yield start
    for dispatcher in started:
        tear_down_dispatcher(dispatcher)


def spans(exporter, prefix):
    return [s for s in exporter.get_finished_spans()
            if s.name.startswith(prefix)]


def only_span(exporter, prefix):
    found = spans(exporter, prefix)
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def put_in_request(provider, queue, func, *args):
    """``queue.put`` inside a span standing for the request's."""
    with provider.get_tracer('test').start_as_current_span('request') as req:
        job = queue.put(func, *args)
    transaction.commit()
    return job, req


def oid_of(job):
    return int.from_bytes(job._p_oid, 'big')


# -- puts -----------------------------------------------------------------

def test_a_put_is_a_span_inside_the_requests_trace(traced, provider,
                                                   exporter, queue):
    job, request = put_in_request(provider, queue, jobs.multiply, 6, 7)
    put = only_span(exporter, 'zcasync put ')
    assert put.name == 'zcasync put jobs.multiply'
    assert put.kind is SpanKind.PRODUCER
    assert put.parent.span_id == request.get_span_context().span_id
    assert put.context.trace_id == request.get_span_context().trace_id
    assert put.attributes[tracing.QUEUE] == ''
    assert put.attributes[tracing.CALLABLE] == 'jobs.multiply'
    # Its W3C context is stored with the job, and committed with it.
    carrier = job.annotations[tracing.CONTEXT_KEY]
    assert carrier['traceparent'].startswith('00-%032x-%016x-' % (
        put.context.trace_id, put.context.span_id))


def test_without_a_recording_tracer_nothing_is_stored(file_db, queue):
    from opentelemetry.trace import NoOpTracerProvider
    extensions.add(file_db, tracing.Tracing(
        tracer_provider=NoOpTracerProvider()))
    job = queue.put(jobs.multiply, 1, 2)
    assert tracing.CONTEXT_KEY not in job.annotations


# -- runs with a real dispatcher --------------------------------------------

def test_a_run_is_a_span_linked_to_its_put(traced, provider, exporter,
                                           queue, start_dispatcher):
    job, request = put_in_request(provider, queue, jobs.multiply, 6, 7)
    start_dispatcher()
    assert wait_for_result(job) == 42
    put = only_span(exporter, 'zcasync put ')
    run = only_span(exporter, 'zcasync run ')
    assert run.name == 'zcasync run jobs.multiply'
    assert run.kind is SpanKind.CONSUMER
    assert [link.context.span_id for link in run.links] == [
        put.context.span_id]
    assert run.links[0].context.trace_id == put.context.trace_id
    # A trace of its own: the request was over long ago.
    assert run.parent is None
    assert run.context.trace_id != request.get_span_context().trace_id
    assert dict(run.attributes) == {
        tracing.JOB_ID: oid_of(job), tracing.QUEUE: '',
        tracing.CALLABLE: 'jobs.multiply', tracing.ATTEMPT: 1,
        tracing.OUTCOME: tracing.SUCCEEDED}
    assert run.status.status_code is StatusCode.UNSET


def test_a_failing_run_has_an_error_status_and_the_exception(
        traced, provider, exporter, queue, start_dispatcher):
    job, _ = put_in_request(provider, queue, jobs.divide, 1, 0)
    start_dispatcher()
    failure = wait_for_result(job)
    # The exception went on unchanged: the job failed as it would have.
    assert failure.check(ZeroDivisionError)
    run = only_span(exporter, 'zcasync run ')
    assert run.status.status_code is StatusCode.ERROR
    assert 'ZeroDivisionError' in run.status.description
    assert run.attributes[tracing.OUTCOME] == tracing.FAILED
    [event] = run.events
    assert event.name == 'exception'
    assert event.attributes['exception.type'] == 'ZeroDivisionError'


def test_a_job_put_outside_any_span_runs_and_is_traced(
        traced, exporter, queue, start_dispatcher):
    job = queue.put(jobs.multiply, 2, 3)
    transaction.commit()
    start_dispatcher()
    assert wait_for_result(job) == 6
    put = only_span(exporter, 'zcasync put ')
    assert put.parent is None  # the put started a trace of its own
    run = only_span(exporter, 'zcasync run ')
    assert run.links[0].context.span_id == put.context.span_id
    assert run.attributes[tracing.JOB_ID] == oid_of(job)


def test_a_job_put_before_tracing_was_enabled_runs_unlinked(
        file_db, provider, exporter, queue, start_dispatcher):
    job = queue.put(jobs.multiply, 3, 4)
    transaction.commit()
    extensions.add(file_db, tracing.Tracing(tracer_provider=provider))
    start_dispatcher()
    assert wait_for_result(job) == 12
    run = only_span(exporter, 'zcasync run ')
    assert list(run.links) == []
    assert run.attributes[tracing.OUTCOME] == tracing.SUCCEEDED
    assert tracing.CONTEXT_KEY not in job.annotations


def test_a_callbacks_run_links_to_the_put_of_its_job(
        traced, provider, exporter, queue, start_dispatcher):
    with provider.get_tracer('test').start_as_current_span('request'):
        job = queue.put(jobs.multiply, 2, 5)
        callback = job.addCallback(Job(jobs.multiply, 3))
    transaction.commit()
    start_dispatcher()
    assert wait_for_result(job) == 10
    assert wait_for_result(callback) == 30
    put = only_span(exporter, 'zcasync put ')
    runs = {s.attributes[tracing.JOB_ID]: s
            for s in spans(exporter, 'zcasync run ')}
    assert set(runs) == {oid_of(job), oid_of(callback)}
    linked = runs[oid_of(callback)].links
    assert [link.context.span_id for link in linked] == [put.context.span_id]


# -- the pieces on their own ------------------------------------------------

def test_a_broken_stored_context_gives_no_link(provider, exporter):
    extension = tracing.Tracing(tracer_provider=provider)
    for stored in ({'traceparent': 'garbage'}, 'not a mapping', {}):
        job = Job(jobs.multiply, 1, 1)
        job.annotations[tracing.CONTEXT_KEY] = stored
        with extension.around_run(job):
            pass
    for run in spans(exporter, 'zcasync run '):
        assert list(run.links) == []
        assert tracing.QUEUE not in run.attributes  # not run by a runner


def test_the_attempt_counts_the_recorded_failures():
    job = Job(jobs.multiply, 1, 1)
    assert tracing.attempt_of(job) == 1
    assert job._annotations is None  # reading did not create them
    job.annotations[RETRY_COUNTS] = {'other': 2, 'conflict': 1}
    job.annotations[RETRY_COUNTS + '.interruptions'] = 1
    assert tracing.attempt_of(job) == 5


def test_callable_names_are_dotted_and_never_a_repr():
    class Callable:
        def __call__(self):
            pass

        def method(self):
            pass
    here = __name__ + '.test_callable_names_are_dotted_and_never_a_repr.'
    assert tracing.callable_name(jobs.multiply) == 'jobs.multiply'
    assert tracing.callable_name(Callable().method) == (
        here + '<locals>.Callable.method')
    assert tracing.callable_name(Callable()) == here + '<locals>.Callable'


def test_the_setting_names_the_extension():
    found = extensions.from_setting('pyramid_zcasync.tracing:Tracing',
                                    DottedNameResolver().resolve,
                                    {'zcasync.extensions': '...'})
    assert [type(e) for e in found] == [tracing.Tracing]


def test_without_opentelemetry_the_package_imports_and_tracing_says_why(
        monkeypatch):
    for name in list(sys.modules):
        if name == 'opentelemetry' or name.startswith('opentelemetry.'):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, 'opentelemetry', None)
    spec = importlib.util.find_spec('pyramid_zcasync.tracing')
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)  # a copy, imported without it
    with pytest.raises(ImportError, match=r"pyramid_zcasync\[otel\]"):
        fresh.Tracing()
