"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables.

``OTEL_TRACES_EXPORTER`` picks the exporter: ``otlp`` (OTLP/gRPC, endpoint from
``OTEL_EXPORTER_OTLP_ENDPOINT``), ``console`` (stderr, one JSON object per line, like
the logs) or ``none`` (default: spans are still created so trace ids propagate and
appear in logs). ``OTEL_SERVICE_NAME`` overrides the service name; every span carries
``service.version``. Context is propagated with W3C Trace Context on every gRPC hop:
the CareChain call interceptors (server: :mod:`carechain.runtime.server`, client:
:mod:`carechain.client.channels`) start one span per call on each side with
:func:`server_span` / :func:`client_span`, named after the full method without the leading
slash (``carechain.records.v1.RecordsService/PutRecord``), with the OpenTelemetry RPC
attributes ``rpc.system`` and ``rpc.grpc.status_code`` only (the name holds service and
method; no peer addresses, no payloads). They replace the generic gRPC instrumentation, which cost
about an eighth of the stack's time per call (a wrapped servicer context, a second interceptor layer,
attributes parsed from the peer string on every call).

Without an exporter (``none``, the default) nothing would ever read a span's name, attributes, events or
timing, so the tracers hand out non-recording spans that carry only a context (:class:`_UnexportedTracer`):
a span id of their own, the parent's trace id, flags and state (a new trace id, sampled, at a root). Trace
ids still propagate on every hop and appear in log lines; an SDK span costs ~15 us to start and end, and a
write makes a few dozen (one per call on each side, per batch, per SQLite statement). Once a span processor
is added (an exporter, or a test's in-memory one) spans are recorded as the SDK records them.

An OTLP export gives up after ``EXPORT_TIMEOUT_SECONDS`` (unless
``OTEL_EXPORTER_OTLP_TIMEOUT`` / ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`` say otherwise), so a
process whose collector is unreachable still stops within seconds of SIGTERM.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

import carechain

if TYPE_CHECKING:
    import grpc
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

# The OpenTelemetry SDK is imported when first used, not at import: it costs
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


class _UnexportedTracer(trace.Tracer):
    """An SDK tracer that, while its provider has no span processor, starts non-recording spans.

    Such a span is a context only (see the module docstring): what the SDK would have recorded had nowhere
    to go. With a processor the SDK tracer starts every span, as without this class.
    """

    def __init__(self, tracer: trace.Tracer, provider: Any) -> None:
        self._tracer = tracer
        self._provider = provider

    def start_span(self, name: str, context: otel_context.Context | None = None,
                   kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None, links: Any = (),
                   start_time: int | None = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> trace.Span:
        """The SDK's span when spans are processed; else a context-only child of context's (or the current) span."""
        provider = self._provider
        if provider.exporting:
            return self._tracer.start_span(name, context, kind, attributes, links, start_time, record_exception,
                                           set_status_on_exception)
        parent = trace.get_current_span(context).get_span_context()
        ids = provider.id_generator
        if parent.is_valid:
            trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        else:  # a root: sampled, as the SDK's default sampler (parent-based, always on) decides
            trace_id, flags, state = ids.generate_trace_id(), _SAMPLED, None
        return NonRecordingSpan(SpanContext(trace_id, ids.generate_span_id(), is_remote=False, trace_flags=flags,
                                            trace_state=state))

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, context: otel_context.Context | None = None,
                              kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None, links: Any = (),
                              start_time: int | None = None, record_exception: bool = True,
                              set_status_on_exception: bool = True, end_on_exit: bool = True) -> Iterator[trace.Span]:
        """:meth:`start_span`, made current for the block (ended on exit unless end_on_exit is False)."""
        span = self.start_span(name, context, kind, attributes, links, start_time, record_exception,
                               set_status_on_exception)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                            set_status_on_exception=set_status_on_exception) as current:
            yield current


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


@functools.lru_cache(maxsize=1)
def _provider_class() -> type[TracerProvider]:
    """The SDK's TracerProvider, knowing whether it has a span processor; its tracers are :class:`_UnexportedTracer`."""
    from opentelemetry.sdk.trace import TracerProvider

    class Provider(TracerProvider):
        exporting = False  # set for good by the first span processor added

        def add_span_processor(self, span_processor: Any) -> None:
            super().add_span_processor(span_processor)
            self.exporting = True

        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            return _UnexportedTracer(super().get_tracer(*args, **kwargs), self)

    return Provider


def configure_tracing(service: str) -> TracerProvider:
    """Install the global tracer provider for this process (once)."""
    global _provider
    if _provider is not None:
        return _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = _provider_class()(resource=Resource.create(resource_attributes(service)))
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


_RPC_TRACER = trace.get_tracer("carechain.rpc", carechain.__version__)  # follows the global provider


@functools.lru_cache(maxsize=1024)
def _rpc_attributes(full_method: str) -> tuple[str, dict[str, str]]:
    """Span name and attributes of a method ("/pkg.Service/Method"), built once per method."""
    # rpc.service and rpc.method would repeat the span's name: each attribute costs on every span.
    return full_method.lstrip("/"), {"rpc.system": "grpc"}


class RpcSpan:
    """The span of one gRPC call on one side; :meth:`finish` ends it with the call's status code."""

    __slots__ = ("span", "_token")

    def __init__(self, span: trace.Span, token: object | None) -> None:
        self.span = span
        self._token = token

    def record_failure(self, exc: BaseException) -> None:
        """Note that the handler raised exc: only its type (its message may hold request values)."""
        if self.span.is_recording():
            self.span.add_event("exception", {"exception.type": type(exc).__name__})

    def finish(self, code: grpc.StatusCode | None) -> None:
        """End the span with code (None: OK) and detach it if it was made current."""
        span = self.span
        if span.is_recording():
            value = 0 if code is None else code.value[0]
            span.set_attribute("rpc.grpc.status_code", value)
            if value:
                span.set_status(Status(StatusCode.ERROR, code.name))  # type: ignore[union-attr]
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


class _MetadataGetter:
    """Reads W3C headers out of gRPC invocation metadata (a sequence of (key, value) pairs)."""

    def get(self, carrier: Iterable[tuple[str, Any]], key: str) -> list[str] | None:
        values = [str(value) for name, value in carrier if name == key]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, Any]]) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _MetadataGetter()


def server_span(full_method: str, metadata: Iterable[tuple[str, Any]]) -> RpcSpan:
    """Start the SERVER span of a call, child of the caller's W3C context in metadata, and make it current."""
    name, attributes = _rpc_attributes(full_method)
    parent = propagate.extract(metadata, getter=_GETTER)  # type: ignore[arg-type]
    span = _RPC_TRACER.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
    return RpcSpan(span, otel_context.attach(trace.set_span_in_context(span, parent)))


def client_span(full_method: str) -> tuple[RpcSpan, list[tuple[str, str]]]:
    """Start the CLIENT span of an outgoing call; returns it and the W3C metadata to send with the call.

    The span is not made current (nothing in this process runs under it); it ends with :meth:`RpcSpan.finish`.
    """
    name, attributes = _rpc_attributes(full_method)
    span = _RPC_TRACER.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    carrier: dict[str, str] = {}
    if span.get_span_context().is_valid:
        propagate.inject(carrier, context=trace.set_span_in_context(span))
    return RpcSpan(span, None), list(carrier.items())


_HTTP_TRACER = trace.get_tracer("carechain.http", carechain.__version__)


class HttpSpan(RpcSpan):
    """The SERVER span of one HTTP request (the FHIR REST gateway); :meth:`finish_http` ends it."""

    __slots__ = ()

    def finish_http(self, status: int) -> None:
        """End the span with the response's HTTP status (5xx marks it failed, as OpenTelemetry's HTTP rules say)."""
        span = self.span
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


def http_server_span(method: str, route: str, headers: Iterable[tuple[str, str]]) -> HttpSpan:
    """Start the SERVER span of an HTTP request, child of the caller's W3C context in headers, and make it current.

    Named ``<METHOD> <route template>`` (``GET /{type}/{id}``: never the path itself, which holds ids), with
    ``http.request.method`` and ``http.route`` only. The gRPC calls made while serving it are its children
    (their :func:`client_span` starts under the current span).
    """
    parent = propagate.extract(list(headers), getter=_GETTER)  # type: ignore[arg-type]
    span = _HTTP_TRACER.start_span(f"{method} {route}", context=parent, kind=SpanKind.SERVER,
                                   attributes={"http.request.method": method, "http.route": route})
    return HttpSpan(span, otel_context.attach(trace.set_span_in_context(span, parent)))


def current_trace_id() -> str:
    """Hex trace id of the current span, or empty string."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def shutdown_tracing() -> None:
    """Flush and stop exporters."""
    if _provider is not None:
        _provider.shutdown()
