"""Channels and stubs for calling CareChain services.

Every channel carries the OpenTelemetry client interceptor (W3C context on
every hop) and, when a token source is given, the caller's bearer token for the
target service. Peer failures that mean "down" surface as
:class:`carechain.core.errors.Unavailable` naming the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from carechain.client.auth import TokenSource
from carechain.client.channels import open_channel
from carechain.client.tls import ClientTLS
from carechain.core.crypto import Signer
from carechain.core.errors import Unavailable

_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)




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
