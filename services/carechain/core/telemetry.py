"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables.

``OTEL_TRACES_EXPORTER`` picks the exporter: ``otlp`` (OTLP/gRPC, endpoint from
``OTEL_EXPORTER_OTLP_ENDPOINT``), ``console`` (stderr, one JSON object per line, like
the logs) or ``none`` (default: spans are still created so trace ids propagate and
appear in logs). ``OTEL_SERVICE_NAME`` overrides the service name; every span carries
``service.version``. Context is propagated with W3C Trace Context on every gRPC hop
by the gRPC instrumentation interceptors; their spans are named after the full
method without the leading slash (``carechain.records.v1.RecordsService/PutRecord``).

An OTLP export gives up after ``EXPORT_TIMEOUT_SECONDS`` (unless
``OTEL_EXPORTER_OTLP_TIMEOUT`` / ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`` say otherwise), so a
process whose collector is unreachable still stops within seconds of SIGTERM.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

import carechain

if TYPE_CHECKING:
    import grpc
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

# The OpenTelemetry SDK and gRPC instrumentation are imported when first used, not at import: they cost
# ~150 ms, and a partner client importing the SDK should not pay it before it opens a channel.
_provider: TracerProvider | None = None

#: Seconds one OTLP export (with its retries) may take; also bounds the flush at shutdown.
EXPORT_TIMEOUT_SECONDS = 2.0
_TIMEOUT_VARIABLES = ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")


def resource_attributes(service: str) -> dict[str, str]:
    """service.name (``OTEL_SERVICE_NAME`` or carechain-<service>) and service.version of this process."""
    return {"service.name": os.environ.get("OTEL_SERVICE_NAME", f"carechain-{service}"),
            "service.version": carechain.__version__}


def span_json_line(span: ReadableSpan) -> str:
    """A finished span as one JSON line (the console exporter's format; log files stay one object per line)."""
    return span.to_json(indent=None) + "\n"


def _strip_leading_slash() -> Any:
    """A span processor renaming "/pkg.Service/Method" spans (gRPC instrumentation) to "pkg.Service/Method"."""
    from opentelemetry.sdk.trace import SpanProcessor

    class StripLeadingSlash(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if span.name.startswith("/"):
                span.update_name(span.name[1:])

    return StripLeadingSlash()


def configure_tracing(service: str) -> TracerProvider:
    """Install the global tracer provider for this process (once)."""
    global _provider
    if _provider is not None:
        return _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create(resource_attributes(service)))
    provider.add_span_processor(_strip_leading_slash())  # first: exporters see the final name
    for name in (os.environ.get("OTEL_TRACES_EXPORTER") or "none").split(","):
        name = name.strip().lower()
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            timeout = None if any(os.environ.get(v) for v in _TIMEOUT_VARIABLES) else EXPORT_TIMEOUT_SECONDS
            provider.add_span_processor(BatchSpanProcessor(
                OTLPSpanExporter(timeout=timeout), export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr,
                                                                               formatter=span_json_line)))
        elif name not in ("none", ""):
            raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r} (use otlp, console or none)")
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def grpc_server_interceptor() -> grpc.ServerInterceptor:
    """Interceptor that starts a server span per call from the caller's W3C context.

    It uses the global provider, so it may be created before configure_tracing runs.
    """
    from opentelemetry.instrumentation.grpc import server_interceptor

    return server_interceptor()


def grpc_client_interceptor() -> grpc.UnaryUnaryClientInterceptor:
    """Interceptor that starts a client span per call and injects W3C context (global provider)."""
    from opentelemetry.instrumentation.grpc import client_interceptor

    return client_interceptor()


def current_trace_id() -> str:
    """Hex trace id of the current span, or empty string."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def shutdown_tracing() -> None:
    """Flush and stop exporters."""
    if _provider is not None:
        _provider.shutdown()
