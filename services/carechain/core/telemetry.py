"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables.

``OTEL_TRACES_EXPORTER`` picks the exporter: ``otlp`` (OTLP/gRPC, endpoint from
``OTEL_EXPORTER_OTLP_ENDPOINT``), ``console`` (stderr) or ``none`` (default: spans
are still created so trace ids propagate and appear in logs).
``OTEL_SERVICE_NAME`` overrides the service name. Context is propagated with
W3C Trace Context on every gRPC hop by the gRPC instrumentation interceptors.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:
    import grpc
    from opentelemetry.sdk.trace import TracerProvider

# The OpenTelemetry SDK and gRPC instrumentation are imported when first used, not at import: they cost
# ~150 ms, and a partner client importing the SDK should not pay it before it opens a channel.
_provider: TracerProvider | None = None


def configure_tracing(service: str) -> TracerProvider:
    """Install the global tracer provider for this process (once)."""
    global _provider
    if _provider is not None:
        return _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"carechain-{service}")})
    provider = TracerProvider(resource=resource)
    for name in (os.environ.get("OTEL_TRACES_EXPORTER") or "none").split(","):
        name = name.strip().lower()
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
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
