"""Shared server bootstrap for the six services.

Every service gets: access control (every RPC admitted by its service's access
table, :mod:`carechain.runtime.access`; a handler that was not guarded is refused), JSON
logs, OpenTelemetry tracing, Prometheus metrics (:mod:`carechain.runtime.metrics`), gRPC health
(``grpc.health.v1``) and reflection, errors mapped to gRPC status codes, and a
graceful stop on SIGTERM/SIGINT (health NOT_SERVING first, then stop with a
grace period so in-flight calls finish).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from carechain.client.balancing import server_options
from carechain.client.channels import MAX_MESSAGE_BYTES
from carechain.core.errors import CareChainError, PermissionDenied
from carechain.core.telemetry import configure_tracing, grpc_server_interceptor, shutdown_tracing
from carechain.runtime import metrics
from carechain.runtime.access import AccessTable, guard, is_guarded
from carechain.runtime.auth import Authenticator
from carechain.runtime.config import ServiceSettings
from carechain.runtime.logs import configure_logging
from carechain.runtime.tls import server_credentials

log = logging.getLogger("carechain.runtime.server")

# Registers servicers on the server and returns their full service names.
Register = Callable[[grpc.Server], Iterable[str]]


def _abort_with(context: grpc.ServicerContext, exc: BaseException) -> None:
    """Turn a domain or peer error into the right gRPC status; re-raise anything else."""
    if isinstance(exc, CareChainError):
        log.info("request refused", extra={"grpc_code": exc.code.name, "reason": exc.message})
        context.abort(exc.code, exc.message)
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        # A peer refused the call: pass its status through unchanged.
        context.abort(exc.code(), exc.details() or "")
    log.exception("unexpected error")
    raise exc


_OPEN_PREFIXES = ("/grpc.health", "/grpc.reflection")


def _unguarded(behavior: Any) -> Any:
    """Deny by default: a handler not wrapped by carechain.runtime.access.guard is never run."""

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        raise PermissionDenied("this RPC has no access table: denied by default")

    return refuse


class CallInterceptor(grpc.ServerInterceptor):
    """Logs every call (method, status, duration; never payloads) and maps errors to statuses.

    :class:`CareChainError` and peer ``RpcError`` raised by handlers become the right
    gRPC status; anything else is logged and becomes INTERNAL. Every method except
    health and reflection must have been registered through
    :func:`carechain.runtime.access.guard`; any other handler is refused (PERMISSION_DENIED).
    """

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        open_method = method.startswith(_OPEN_PREFIXES)

        def unary(behavior: Any) -> Any:
            if not (open_method or is_guarded(behavior)):
                behavior = _unguarded(behavior)

            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.monotonic()
                try:
                    return behavior(request, context)
                except Exception as exc:  # noqa: BLE001 - re-raised unless mapped
                    _abort_with(context, exc)
                finally:
                    _log_call(method, context, started)

            return wrapped

        def streaming(behavior: Any) -> Any:
            if not (open_method or is_guarded(behavior)):
                behavior = _unguarded(behavior)

            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started = time.monotonic()
                try:
                    yield from behavior(request, context)
                except Exception as exc:  # noqa: BLE001 - re-raised unless mapped
                    _abort_with(context, exc)
                finally:
                    _log_call(method, context, started)

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
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kwargs)


def _log_call(method: str, context: grpc.ServicerContext, started: float) -> None:
    if method.startswith(_OPEN_PREFIXES):
        return
    code = context.code() if hasattr(context, "code") else None
    seconds = time.monotonic() - started
    labels = {"rpc_method": method.lstrip("/"), "grpc_code": getattr(code, "name", None) or "OK"}
    metrics.RPC_CALLS.add(1, labels)
    metrics.RPC_DURATION.record(seconds, labels)
    log.info(
        "rpc",
        extra={
            "rpc_method": method,
            "grpc_code": labels["grpc_code"],
            "duration_ms": round(seconds * 1000, 2),
        },
    )


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


def start_service(
    name: str,
    settings: ServiceSettings,
    register: Register,
    on_stop: Iterable[Callable[[], None]] = (),
) -> RunningService:
    """Build and start a service's gRPC server with health, reflection and interceptors."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix=name),
        interceptors=[grpc_server_interceptor(), CallInterceptor()],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *server_options(settings),  # connection ageing: callers reconnect and reach new replicas
        ],
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
