"""Shared server bootstrap for the six services.

Every service gets: access control (every RPC admitted by its service's access
table, :mod:`carechain.runtime.access`; a handler that was not guarded is refused), JSON
logs, OpenTelemetry tracing, Prometheus metrics (:mod:`carechain.runtime.metrics`), gRPC health
(``grpc.health.v1``) and reflection, errors mapped to gRPC status codes, and a
graceful stop on SIGTERM/SIGINT (health NOT_SERVING first, then stop with a
grace period so in-flight calls finish).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from carechain.client.balancing import server_options
from carechain.client.channels import MAX_MESSAGE_BYTES
from carechain.core.errors import CareChainError, InvalidArgument, PermissionDenied
from carechain.core.telemetry import RpcSpan, configure_tracing, current_trace_id, server_span, shutdown_tracing
from carechain.runtime import metrics
from carechain.runtime.access import AccessTable, guard, is_guarded
from carechain.runtime.auth import Authenticator
from carechain.runtime.config import ServiceSettings
from carechain.runtime.logs import configure_logging
from carechain.runtime.peers import reset_serving_call, serving_call_token
from carechain.runtime.streams import (
    CallAdmission,
    StreamLimiter,
    passing_serialized,
    reset_serving_with,
    serving_with_token,
)
from carechain.runtime.tls import server_credentials

log = logging.getLogger("carechain.runtime.server")

# Registers servicers on the server and returns their full service names.
Register = Callable[[grpc.Server], Iterable[str]]


def _abort_with(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    """End the call with the status exc stands for; an unexpected exception is INTERNAL, logged once.

    Every path ends in ``context.abort`` (which raises): an exception that escaped the servicer
    would reach the client as UNKNOWN, with its message, which may hold a value from the request.
    """
    if _already_aborted(context):
        raise exc  # the handler chose the status itself
    if isinstance(exc, CareChainError) and exc.code != grpc.StatusCode.INTERNAL:
        # A client error or a backend's refusal: an expected outcome, no traceback.
        log.info("request refused", extra={"rpc_method": method, "grpc_code": exc.code.name, "reason": exc.message})
        context.abort(exc.code, exc.message)
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") and exc.code() not in _NOT_PASSED_ON:
        # A peer refused the call: pass its status through unchanged.
        context.abort(exc.code(), exc.details() or "")
    # A real bug or an unforeseen failure: one ERROR line naming the exception's type and where it was
    # raised, never its message or locals (they may hold PHI); the client gets a trace id to quote.
    frame = traceback.extract_tb(exc.__traceback__)[-1:] or [None]
    where = f"{frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno} in {frame[0].name}" if frame[0] else ""
    trace_id = current_trace_id()
    log.error("internal error", extra={"rpc_method": method, "error_type": type(exc).__name__,
                                       "error_at": where, "trace_id": trace_id})
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (trace id {trace_id})" if trace_id else "internal error")


# Statuses of a peer that are not passed on as they are: they would blame this service's caller.
_NOT_PASSED_ON = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.OK)


def _already_aborted(context: grpc.ServicerContext) -> bool:
    code = context.code() if hasattr(context, "code") else None
    return code is not None and code != grpc.StatusCode.OK


_OPEN_PREFIXES = ("/grpc.health", "/grpc.reflection")

# The largest value a uint64 request field may hold: every store (SQLite, etcd's JSON) keeps int64.
MAX_UINT64_FIELD = 2**63 - 1
_UINT64_TYPES = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)


@functools.cache
def _has_uint64(descriptor: Any, _seen: frozenset[str] = frozenset()) -> bool:
    """Whether messages of this type can hold a uint64 field, at any depth (cached per type)."""
    if descriptor.full_name in _seen:
        return False
    seen = _seen | {descriptor.full_name}
    return any(f.type in _UINT64_TYPES or (f.message_type is not None and _has_uint64(f.message_type, seen))
               for f in descriptor.fields)


def _uint64_out_of_range(message: Any, path: str = "") -> str | None:
    """The path of the first uint64 field above MAX_UINT64_FIELD in message, if any."""
    if not _has_uint64(message.DESCRIPTOR):
        return None
    for field_descriptor, value in message.ListFields():
        name = f"{path}{field_descriptor.name}"
        if field_descriptor.message_type is not None and field_descriptor.message_type.GetOptions().map_entry:
            entry = field_descriptor.message_type.fields_by_name
            items = [(f"{name}[{key!r}]", key, item) for key, item in value.items()]
            fields = (entry["key"], entry["value"])
        elif field_descriptor.is_repeated:
            items = [(f"{name}[{i}]", None, item) for i, item in enumerate(value)]
            fields = (None, field_descriptor)
        else:
            items, fields = [(name, None, value)], (None, field_descriptor)
        key_field, value_field = fields
        for item_path, key, item in items:
            if key_field is not None and key_field.type in _UINT64_TYPES and key > MAX_UINT64_FIELD:
                return item_path
            if value_field.type in _UINT64_TYPES and item > MAX_UINT64_FIELD:
                return item_path
            if value_field.message_type is not None:
                found = _uint64_out_of_range(item, f"{item_path}.")
                if found:
                    return found
    return None


def check_request_ranges(request: Any) -> None:
    """InvalidArgument naming the field when a uint64 holds more than MAX_UINT64_FIELD (no store can keep it)."""
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return
    found = _uint64_out_of_range(request)
    if found:
        raise InvalidArgument(found, f"must be at most {MAX_UINT64_FIELD}")


def _unguarded(behavior: Any) -> Any:
    """Deny by default: a handler not wrapped by carechain.runtime.access.guard is never run."""

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        raise PermissionDenied("this RPC has no access table: denied by default")

    return refuse


class CallInterceptor(grpc.ServerInterceptor):
    """Traces and logs every call (method, status, duration; never payloads) and maps errors to statuses.

    :class:`CareChainError` and peer ``RpcError`` raised by handlers (also while a stream is
    iterated) become the right gRPC status; anything else is logged once and becomes INTERNAL:
    no call ends with UNKNOWN. A request's uint64 field above :data:`MAX_UINT64_FIELD` is refused
    with INVALID_ARGUMENT naming it, before access checks. Every method except health and reflection
    must have been registered through :func:`carechain.runtime.access.guard`; any other handler is
    refused (PERMISSION_DENIED). While a handler runs, its context is the served call of
    :mod:`carechain.runtime.peers` (calls to other services inherit its deadline), the server's
    :class:`~carechain.runtime.streams.StreamLimiter` is current, and so is the call's SERVER span
    (:func:`carechain.core.telemetry.server_span`, a child of the caller's W3C context).

    The wrapped handler of each method is built once (gRPC asks the interceptor on every call).
    """

    def __init__(self, streams: StreamLimiter | None = None, admission: CallAdmission | None = None) -> None:
        self._streams = streams
        self._admission = admission
        self._handlers: dict[str, tuple[Any, Any]] = {}  # method -> (service's handler, wrapped handler)

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._handlers.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._handlers[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        open_method = method.startswith(_OPEN_PREFIXES)
        streams = self._streams
        finish = _CallRecord(method, logged=not open_method).finish
        admission = None if open_method else self._admission  # health is always answered

        def serve(behavior: Any) -> Any:
            return behavior if open_method or is_guarded(behavior) else _unguarded(behavior)

        def unary(behavior: Any) -> Any:
            behavior = serve(behavior)

            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.monotonic()
                span = server_span(method, context.invocation_metadata())
                served, limiter = set_serving(context, streams)
                admitted = False
                try:
                    if admission is not None:
                        admission.enter()
                        admitted = True
                    check_request_ranges(request)
                    return behavior(request, context)
                except Exception as exc:  # noqa: BLE001 - every exception ends in a status
                    span.record_failure(exc)
                    _abort_with(context, method, exc)
                finally:
                    if admitted:
                        admission.leave()  # type: ignore[union-attr]
                    reset_serving(served, limiter)
                    finish(context, started, span)

            return wrapped

        def streaming(behavior: Any) -> Any:
            behavior = serve(behavior)

            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started = time.monotonic()
                span = server_span(method, context.invocation_metadata())
                admitted = False
                try:
                    served, limiter = set_serving(context, streams)
                    try:
                        if admission is not None:
                            admission.enter()
                            admitted = True
                        check_request_ranges(request)
                        responses = iter(behavior(request, context))
                    finally:
                        reset_serving(served, limiter)
                    while True:
                        # Current only while the handler runs: a stream can be closed from any thread.
                        served, limiter = set_serving(context, streams)
                        try:
                            response = next(responses, _END)
                        finally:
                            reset_serving(served, limiter)
                        if response is _END:
                            return
                        yield response
                except Exception as exc:  # noqa: BLE001 - every exception ends in a status
                    span.record_failure(exc)
                    _abort_with(context, method, exc)
                finally:
                    if admitted:
                        admission.leave()  # type: ignore[union-attr]
                    finish(context, started, span)

            return wrapped

        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kwargs)
        if handler.unary_stream:
            kwargs["response_serializer"] = passing_serialized(handler.response_serializer)
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kwargs)


_END = object()


def set_serving(context: grpc.ServicerContext, streams: StreamLimiter | None) -> tuple[Any, Any]:
    """Make context the served call and streams the current limiter; the tokens to reset them with."""
    return serving_call_token(context), serving_with_token(streams)


def reset_serving(served: Any, limiter: Any) -> None:
    reset_serving_with(limiter)
    reset_serving_call(served)


class _CallRecord:
    """What every call of one method leaves behind: its span ended, its metrics, its JSON ``rpc`` log line.

    The per-method parts (label values, the log's method field) are built once; the line is built only
    when INFO is enabled. Health and reflection calls are traced but neither counted nor logged.
    """

    __slots__ = ("_method", "_metric_method", "_logged")

    def __init__(self, method: str, logged: bool) -> None:
        self._method = method
        self._metric_method = method.lstrip("/")
        self._logged = logged

    def finish(self, context: grpc.ServicerContext, started: float, span: RpcSpan) -> None:
        code = context.code() if hasattr(context, "code") else None
        if self._logged:
            seconds = time.monotonic() - started
            code_name = "OK" if code is None else code.name
            metrics.record_rpc(self._metric_method, code_name, seconds)
            if log.isEnabledFor(logging.INFO):  # while the span is current: the line carries its trace id
                log.info("rpc", extra={"rpc_method": self._method, "grpc_code": code_name,
                                       "duration_ms": round(seconds * 1000, 2)})
        span.finish(code)


@dataclass
class RunningService:
    """A started gRPC server with its health servicer."""

    name: str
    server: grpc.Server
    port: int
    health: health.HealthServicer
    grace_seconds: float
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Report NOT_SERVING, let in-flight calls finish, then release resources."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting down", extra={"grace_seconds": self.grace_seconds})
        self.health.enter_graceful_shutdown()
        self.server.stop(self.grace_seconds).wait()
        for close in self.on_stop:
            try:
                close()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.exception("error while closing")
        log.info("stopped")
        self._done.set()

    def wait(self) -> None:
        """Block until stop() has finished."""
        self._done.wait()


def register_servicer(add_servicer: Callable[[Any, grpc.Server], None], servicer: Any, table: AccessTable,
             authenticator: Authenticator) -> Register:
    """The register step of every service: add servicer behind its access table, name the service.

    add_servicer is the generated ``add_<Name>Servicer_to_server``; the service name for health and
    reflection is the table's, so the two can never disagree.
    """

    def register_on(server: grpc.Server) -> list[str]:
        add_servicer(guard(servicer, table, authenticator), server)
        return [table.full_name]

    return register_on


class ListenError(OSError):
    """A server cannot listen where its settings say; the message names the setting and the address."""


def _listen(server: grpc.Server, setting: str, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind server to address (TLS with credentials); ListenError naming setting when it cannot."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio raises "Failed to bind to address ..." (older versions returned 0)
        port = 0
    if port == 0:
        raise ListenError(f"{setting}: cannot listen on {address} (port in use, or not an address of this host)")
    return port


def stream_limiter(settings: ServiceSettings) -> StreamLimiter:
    """The server's stream caps, as configured (the per-caller cap never above the total)."""
    return StreamLimiter(settings.max_streams, min(settings.max_streams_per_caller, settings.max_streams))


def start_service(
    name: str,
    settings: ServiceSettings,
    register: Register,
    on_stop: Iterable[Callable[[], None]] = (),
) -> RunningService:
    """Build and start a service's gRPC server with health, reflection and interceptors.

    Backpressure: at most ``max_concurrent_rpcs`` calls are in the server at once besides its open
    long-lived streams; one more is refused at once with RESOURCE_EXHAUSTED instead of queueing
    without bound (:class:`~carechain.runtime.streams.CallAdmission`). Long-lived streams
    (:mod:`carechain.runtime.streams`, at most ``max_streams``) come on top: the pool has
    ``max_workers + max_streams`` threads and gRPC admits ``max_concurrent_rpcs + max_streams``
    calls, so however many streams are open, unary calls and health still have ``max_workers``
    workers and ``max_concurrent_rpcs`` slots. (The sync server holds a thread per open stream;
    threads are started only when needed.)
    """
    limiter = stream_limiter(settings)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers + limiter.max_streams, thread_name_prefix=name),
        interceptors=[CallInterceptor(limiter, CallAdmission(settings.max_concurrent_rpcs, limiter))],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *server_options(settings),  # connection ageing: callers reconnect and reach new replicas
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs + limiter.max_streams,
    )
    service_names = list(register(server))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service_name in [*service_names, ""]:
        health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    credentials = server_credentials(settings)
    port = _listen(server, "CARECHAIN_LISTEN_ADDRESS", settings.listen_address, credentials)
    closers = list(on_stop)
    if settings.health_listen_address:
        # Kubelet gRPC probes cannot speak TLS: serve health alone, in plaintext, on its own port.
        health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{name}-health"))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        _listen(health_server, "CARECHAIN_HEALTH_LISTEN_ADDRESS", settings.health_listen_address, None)
        health_server.start()
        closers.insert(0, lambda: health_server.stop(0).wait())
    server.start()
    log.info(
        "serving",
        extra={"listen_address": settings.listen_address, "port": port, "services": service_names,
               "tls": credentials is not None, "mutual_tls": settings.tls_require_client_cert},
    )
    return RunningService(name, server, port, health_servicer, settings.shutdown_grace_seconds, closers)


def run_service(
    name: str,
    settings: ServiceSettings,
    register: Register,
    on_stop: Iterable[Callable[[], None]] = (),
) -> None:
    """Run a service in this process until SIGTERM or SIGINT, then stop gracefully."""
    configure_logging(name, settings.log_level)
    configure_tracing(name)
    metrics.configure_metrics(name, settings.metrics_listen_address)
    try:
        running = start_service(name, settings, register, on_stop)
    except ListenError as exc:
        # A configuration problem, not a crash: one line naming the setting on stderr, exit status 1.
        raise SystemExit(f"{name}: {exc}") from None

    def handle_signal(signum: int, _frame: Any) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        threading.Thread(target=running.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, handle_signal)
    signal.signal(signal.SIGINT, handle_signal)
    running.wait()
    flushing = time.monotonic()
    metrics.shutdown_metrics()
    shutdown_tracing()
    # How long the exporters held up the exit (an unreachable collector must not stall a SIGTERM).
    log.info("telemetry flushed", extra={"flush_seconds": round(time.monotonic() - flushing, 3)})
