"""Issue 16: spans are named after the method without a leading slash, carry service.version, and the
console exporter writes one JSON object per line (carechain.core.telemetry)."""

from __future__ import annotations

import json

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import carechain
from carechain.core.telemetry import configure_tracing, span_json_line
from carechain.runtime.config import ServiceSettings
from carechain.runtime.server import start_service


def test_grpc_spans_are_named_without_a_leading_slash_and_carry_the_version(tmp_path) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("unit-test").add_span_processor(SimpleSpanProcessor(exporter))
    running = start_service("unit-test", ServiceSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0),
                            lambda server: [])
    try:
        with grpc.insecure_channel(running.address) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        running.stop()
    names = [span.name for span in exporter.get_finished_spans()]
    assert "grpc.health.v1.Health/Check" in names, names
    assert not [name for name in names if name.startswith("/")], names
    [span] = [s for s in exporter.get_finished_spans() if s.name == "grpc.health.v1.Health/Check"]
    assert span.resource.attributes["service.version"] == carechain.__version__


def test_a_console_span_is_one_json_line() -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("unit-test").add_span_processor(SimpleSpanProcessor(exporter))
    with trace.get_tracer("test").start_as_current_span("records.validate") as span:
        span.set_attribute("carechain.step", "validate")
    [finished] = [s for s in exporter.get_finished_spans() if s.name == "records.validate"]
    line = span_json_line(finished)
    assert line.endswith("\n") and "\n" not in line[:-1], "one line per span, like the JSON logs"
    decoded = json.loads(line)
    assert decoded["name"] == "records.validate"
    assert decoded["attributes"] == {"carechain.step": "validate"}


def test_without_a_span_processor_spans_carry_context_only_and_record_once_one_is_added() -> None:
    from opentelemetry import propagate

    from carechain.core.telemetry import _provider_class

    provider = _provider_class()()  # a provider of its own: the global one has processors from other tests
    tracer = provider.get_tracer("test")
    root = tracer.start_span("root")
    assert not root.is_recording()
    assert root.get_span_context().is_valid and root.get_span_context().trace_flags.sampled
    with trace.use_span(root):
        with tracer.start_as_current_span("child") as child:
            assert trace.get_current_span() is child and not child.is_recording()
            carrier: dict[str, str] = {}
            propagate.inject(carrier)  # what a client span sends downstream: the root's trace, the child's id
    assert child.get_span_context().trace_id == root.get_span_context().trace_id
    assert child.get_span_context().span_id != root.get_span_context().span_id
    assert carrier["traceparent"].split("-")[1:3] == [f"{root.get_span_context().trace_id:032x}",
                                                     f"{child.get_span_context().span_id:016x}"]
    # A caller's unsampled context stays unsampled downstream; its trace id is kept.
    unsampled = propagate.extract({"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"})
    remote_child = tracer.start_span("remote-child", context=unsampled).get_span_context()
    assert remote_child.trace_id == int("ab" * 16, 16) and not remote_child.trace_flags.sampled

    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with trace.use_span(root):
        with tracer.start_as_current_span("recorded") as recorded:
            assert recorded.is_recording()
    [finished] = exporter.get_finished_spans()
    assert finished.name == "recorded" and finished.context.trace_id == root.get_span_context().trace_id
