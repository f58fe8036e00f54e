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
