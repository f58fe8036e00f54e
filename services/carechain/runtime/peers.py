"""Channels and stubs for calling CareChain services.

Every channel carries the OpenTelemetry client interceptor (W3C context on
every hop) and, when a token source is given, the caller's bearer token for the
target service. Peer failures that mean "down" surface as
:class:`carechain.core.errors.Unavailable` naming the service.

Deadlines: a call made while serving an RPC gets the smaller of the configured
``rpc_timeout_seconds`` and the served caller's remaining time less
:data:`DEADLINE_MARGIN_SECONDS` (the interceptor of :mod:`carechain.runtime.server`
makes the served call current, :func:`serving_call_token`), so a caller's deadline holds
through every hop and no peer keeps working for a caller that has given up.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from carechain.client.auth import TokenSource
from carechain.client.channels import intercept, open_channel, plain_channel
from carechain.client.tls import ClientTLS
from carechain.core.crypto import Signer
from carechain.core.errors import CareChainError, Unavailable

_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

# Time kept back from the caller's remaining time on each hop: this service still has to answer.
DEADLINE_MARGIN_SECONDS = 0.05

# The servicer context of the RPC this thread is serving (set by the server's call interceptor).
_served: contextvars.ContextVar[grpc.ServicerContext | None] = contextvars.ContextVar("carechain_served_call",
                                                                                     default=None)


class DeadlineExceeded(CareChainError):
    """The served caller's deadline leaves no time for a call to a peer."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


def serving_call_token(context: grpc.ServicerContext) -> contextvars.Token[grpc.ServicerContext | None]:
    """Make context the served call of this thread (the call interceptor, while a handler runs)."""
    return _served.set(context)


def reset_serving_call(token: contextvars.Token[grpc.ServicerContext | None]) -> None:
    """Undo :func:`serving_call_token` (the handler returned or raised)."""
    _served.reset(token)


def caller_time_remaining() -> float | None:
    """Seconds left before the served caller's deadline (None: not serving a call, or no deadline)."""
    context = _served.get()
    if context is None:
        return None
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


def peer_timeout(configured: float) -> tuple[float, bool]:
    """The deadline for a peer call now, and whether the served caller's deadline is what bounds it.

    DeadlineExceeded when the caller's remaining time is within the margin (the answer could not reach it).
    """
    remaining = caller_time_remaining()
    if remaining is None or remaining - DEADLINE_MARGIN_SECONDS >= configured:
        return configured, False
    if remaining <= DEADLINE_MARGIN_SECONDS:
        raise DeadlineExceeded("the caller's deadline leaves no time to call other services")
    return remaining - DEADLINE_MARGIN_SECONDS, True


class PeerStub:
    """Wraps a generated stub: a deadline on every call, and Unavailable naming the peer when it is down.

    The deadline is the configured timeout, or less when the served caller has less time left
    (:func:`peer_timeout`); an explicit ``timeout=`` is capped the same way. A peer call that runs out
    of the caller's time is DEADLINE_EXCEEDED (the caller's deadline, not the peer, is the cause).
    """

    def __init__(self, service: str, stub: Any, timeout: float) -> None:
        self._service = service
        self._stub = stub
        self._timeout = timeout

    def __getattr__(self, method: str) -> Any:
        target = getattr(self._stub, method)

        def call(request: Any, **kwargs: Any) -> Any:
            timeout, caller_bound = peer_timeout(kwargs.pop("timeout", None) or self._timeout)
            try:
                result = target(request, timeout=timeout, **kwargs)
            except grpc.RpcError as exc:
                raise self._translate(exc, caller_bound) from exc
            if isinstance(result, Iterator):
                return self._stream(result, caller_bound)
            return result

        call.__name__ = method
        setattr(self, method, call)  # built once per method: later lookups find it without __getattr__
        return call

    def _stream(self, responses: Iterator[Any], caller_bound: bool) -> Iterator[Any]:
        try:
            yield from responses
        except grpc.RpcError as exc:
            raise self._translate(exc, caller_bound) from exc

    def _translate(self, exc: grpc.RpcError, caller_bound: bool = False) -> Exception:
        code = exc.code() if hasattr(exc, "code") else None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and caller_bound:
            return DeadlineExceeded(f"the caller's deadline expired while calling the {self._service} service")
        if code in _DOWN:
            details = exc.details() if hasattr(exc, "details") else ""
            return Unavailable(f"{self._service} service", details or str(code))
        return exc


class Peers:
    """Lazily opened, reused stubs for the other services, authenticated as this service.

    One channel (one connection) per peer service: the stubs of a service share it, and a channel
    given in ``channels`` (e.g. the identity channel the token source authenticates over) is reused
    for that service's stub rather than a second connection being opened.
    """

    def __init__(self, settings: Any, tokens: TokenSource, owned_channels: tuple[grpc.Channel, ...] = (),
                 channels: dict[str, grpc.Channel] | None = None) -> None:
        self._settings = settings
        self._tokens = tokens
        self._tls = ClientTLS.from_settings(settings)
        self._stubs: dict[str, PeerStub] = {}
        self._lock = threading.Lock()
        self._plain = dict(channels or {})  # service -> its plain channel (carechain.client.channels.plain_channel)
        # Channels to close with the peers (e.g. the one the token source authenticates over).
        self._channels: list[grpc.Channel] = [*owned_channels, *self._plain.values()]

    def _stub(self, service: str, stub_class: Any) -> PeerStub:
        stub = self._stubs.get(service)
        if stub is not None:
            return stub
        with self._lock:  # concurrent first calls must not open two channels
            if service not in self._stubs:
                plain = self._plain.get(service)
                if plain is not None:
                    channel = intercept(plain, service, self._tokens)
                else:
                    channel = open_channel(getattr(self._settings, f"{service}_address"), service, self._tokens,
                                           self._tls, getattr(self._settings, "peer_load_balancing", "pick_first"))
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
    """Stubs for the other services, authenticated as this service with tokens from identity.

    Tokens are obtained over the same connection the identity stub uses (one channel per peer).
    """
    identity = plain_channel(settings.identity_address, ClientTLS.from_settings(settings),
                             getattr(settings, "peer_load_balancing", "pick_first"))
    return Peers(settings, TokenSource.for_signer(intercept(identity, "identity"), signer),
                 channels={"identity": identity})
