"""Channels and stubs for calling CareChain services.

Every channel carries the OpenTelemetry client interceptor (W3C context on
every hop) and, when a token source is given, the caller's bearer token for the
target service. Peer failures that mean "down" surface as
:class:`carechain.errors.Unavailable` naming the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import grpcext as otel_grpcext

from carechain.auth import TokenSource, bearer_interceptor
from carechain.balancing import LoadBalancing, channel_options
from carechain.crypto import Signer
from carechain.errors import Unavailable
from carechain.network import audience
from carechain.telemetry import grpc_client_interceptor
from carechain.tls import ClientTLS

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Peers are restarted in place (rolling upgrades, crashes): reconnect within a second or two
    # instead of gRPC's default backoff of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
#: Name TLS checks for a multi-address failover target (see :func:`open_channel`).
MULTI_ADDRESS_TLS_NAME = "localhost"


def open_channel(
    address: str, service: str, tokens: TokenSource | None = None, tls: ClientTLS | None = None,
    load_balancing: LoadBalancing = "pick_first",
) -> grpc.Channel:
    """A traced channel to service at address: TLS when tls is given, authenticated when tokens is.

    address may list several servers of one service for failover, e.g. the
    ledger validators ``ipv4:127.0.0.1:7103,127.0.0.1:7113`` (gRPC's pick_first
    moves to the next one when the current one goes away). With TLS such a
    target has no single host name: the servers' certificates must then name
    :data:`MULTI_ADDRESS_TLS_NAME` (the local network issues them so).
    load_balancing ``round_robin`` spreads calls over every address the target
    resolves to (carechain.balancing).
    """
    if tls is None:
        channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS + channel_options(load_balancing))
    else:
        options = list(_CHANNEL_OPTIONS) + channel_options(load_balancing)
        if address.startswith(("ipv4:", "ipv6:")) and "," in address:
            options.append(("grpc.ssl_target_name_override", MULTI_ADDRESS_TLS_NAME))
        channel = grpc.secure_channel(address, tls.credentials(), options=options)
    # The OpenTelemetry interceptor is not a grpc.*ClientInterceptor: it needs its own wrapper.
    traced = otel_grpcext.intercept_channel(channel, grpc_client_interceptor())
    if tokens is None:
        return traced
    return grpc.intercept_channel(traced, bearer_interceptor(tokens, audience(service)))


class PeerStub:
    """Wraps a generated stub: default deadline, and Unavailable naming the peer when it is down."""

    def __init__(self, service: str, stub: Any, timeout: float) -> None:
        self._service = service
        self._stub = stub
        self._timeout = timeout

    def __getattr__(self, method: str) -> Any:
        target = getattr(self._stub, method)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self._timeout)
            try:
                result = target(request, **kwargs)
            except grpc.RpcError as exc:
                raise self._translate(exc) from exc
            if isinstance(result, Iterator):
                return self._stream(result)
            return result

        return call

    def _stream(self, responses: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from responses
        except grpc.RpcError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: grpc.RpcError) -> Exception:
        code = exc.code() if hasattr(exc, "code") else None
        if code in _DOWN:
            details = exc.details() if hasattr(exc, "details") else ""
            return Unavailable(f"{self._service} service", details or str(code))
        return exc


class Peers:
    """Lazily opened, reused stubs for the other services, authenticated as this service."""

    def __init__(self, settings: Any, tokens: TokenSource, owned_channels: tuple[grpc.Channel, ...] = ()) -> None:
        self._settings = settings
        self._tokens = tokens
        self._tls = ClientTLS.from_settings(settings)
        self._stubs: dict[str, PeerStub] = {}
        # Channels to close with the peers (e.g. the one the token source authenticates over).
        self._channels: list[grpc.Channel] = list(owned_channels)

    def _stub(self, service: str, stub_class: Any) -> PeerStub:
        if service not in self._stubs:
            channel = open_channel(getattr(self._settings, f"{service}_address"), service, self._tokens, self._tls,
                                   getattr(self._settings, "peer_load_balancing", "pick_first"))
            self._channels.append(channel)
            self._stubs[service] = PeerStub(service, stub_class(channel), self._settings.rpc_timeout_seconds)
        return self._stubs[service]

    @property
    def identity(self) -> Any:
        from carechain.identity.v1 import identity_pb2_grpc

        return self._stub("identity", identity_pb2_grpc.IdentityServiceStub)

    @property
    def storage(self) -> Any:
        from carechain.storage.v1 import storage_pb2_grpc

        return self._stub("storage", storage_pb2_grpc.StorageServiceStub)

    @property
    def ledger(self) -> Any:
        from carechain.ledger.v1 import ledger_pb2_grpc

        return self._stub("ledger", ledger_pb2_grpc.LedgerServiceStub)

    @property
    def consent(self) -> Any:
        from carechain.consent.v1 import consent_pb2_grpc

        return self._stub("consent", consent_pb2_grpc.ConsentServiceStub)

    @property
    def audit(self) -> Any:
        from carechain.audit.v1 import audit_pb2_grpc

        return self._stub("audit", audit_pb2_grpc.AuditServiceStub)

    def close(self) -> None:
        """Close every channel."""
        for channel in self._channels:
            channel.close()


def service_peers(settings: Any, signer: Signer) -> Peers:
    """Stubs for the other services, authenticated as this service with tokens from identity."""
    identity = open_channel(settings.identity_address, "identity", tls=ClientTLS.from_settings(settings),
                            load_balancing=getattr(settings, "peer_load_balancing", "pick_first"))
    return Peers(settings, TokenSource.for_signer(identity, signer), owned_channels=(identity,))
