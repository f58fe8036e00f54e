"""Channels for calling CareChain services, from partner clients and from services alike.

Every channel carries one client interceptor: a CLIENT span per call whose W3C context goes with
the call (:func:`carechain.core.telemetry.client_span`) and, when a token source is given, the
caller's bearer token for the target service (fetched once per audience and expiry window,
:class:`carechain.client.auth.TokenSource`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from carechain.client.auth import TokenSource
from carechain.client.balancing import LoadBalancing, channel_options
from carechain.client.tls import ClientTLS
from carechain.core.layout import audience
from carechain.core.telemetry import RpcSpan, client_span

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
    resolves to (:mod:`carechain.client.balancing`).
    """
    return intercept(plain_channel(address, tls, load_balancing), service, tokens)


def plain_channel(address: str, tls: ClientTLS | None = None, load_balancing: LoadBalancing = "pick_first"
                  ) -> grpc.Channel:
    """The connection of :func:`open_channel` without its interceptor (wrap it with :func:`intercept`)."""
    if tls is None:
        return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS + channel_options(load_balancing))
    options = list(_CHANNEL_OPTIONS) + channel_options(load_balancing)
    if address.startswith(("ipv4:", "ipv6:")) and "," in address:
        options.append(("grpc.ssl_target_name_override", MULTI_ADDRESS_TLS_NAME))
    return grpc.secure_channel(address, tls.credentials(), options=options)


def intercept(channel: grpc.Channel, service: str, tokens: TokenSource | None = None) -> grpc.Channel:
    """channel with CareChain's client interceptor: traced calls, bearer tokens for service when tokens is given.

    Several intercepted views of one channel share its connection (e.g. one with tokens, one without).
    """
    return grpc.intercept_channel(channel, _CallInterceptor(tokens, audience(service)))


class _CallInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Starts a CLIENT span per call, sends its W3C context and the caller's bearer token with the call."""

    def __init__(self, tokens: TokenSource | None, target_audience: str) -> None:
        self._tokens = tokens
        self._audience = target_audience

    def _start(self, details: grpc.ClientCallDetails) -> tuple[RpcSpan, grpc.ClientCallDetails]:
        span, trace_metadata = client_span(details.method)
        metadata = [*(details.metadata or ()), *trace_metadata]
        if self._tokens is not None:
            try:
                metadata.append(("authorization", self._tokens.authorization(self._audience)))
            except BaseException:
                span.finish(grpc.StatusCode.UNAUTHENTICATED)
                raise
        return span, _CallDetails(details.method, details.timeout, metadata, details.credentials,
                                  details.wait_for_ready, details.compression)

    def _call(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        span, details = self._start(details)
        try:
            call = continuation(details, request)
        except BaseException:
            span.finish(grpc.StatusCode.UNKNOWN)
            raise
        # Ends the span when the call is done: at once for a finished unary call, at the end of a stream.
        call.add_done_callback(lambda done: span.finish(_code(done)))
        return call

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return self._call(continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return self._call(continuation, client_call_details, request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return self._call(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return self._call(continuation, client_call_details, request_iterator)


def _code(call: Any) -> grpc.StatusCode | None:
    """The status a finished call ended with (None: OK)."""
    try:
        code = call.code()
    except Exception:  # noqa: BLE001 - a call that could not even start
        return grpc.StatusCode.UNKNOWN
    return None if code == grpc.StatusCode.OK else code


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: list | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None
