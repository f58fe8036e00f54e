"""Channels for calling CareChain services, from partner clients and from services alike.

Every channel carries the OpenTelemetry client interceptor (W3C context on every hop) and, when a token
source is given, the caller's bearer token for the target service.
"""

from __future__ import annotations

import grpc

from carechain.client.auth import TokenSource, bearer_interceptor
from carechain.client.balancing import LoadBalancing, channel_options
from carechain.client.tls import ClientTLS
from carechain.core.layout import audience
from carechain.core.telemetry import grpc_client_interceptor

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
    if tls is None:
        channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS + channel_options(load_balancing))
    else:
        options = list(_CHANNEL_OPTIONS) + channel_options(load_balancing)
        if address.startswith(("ipv4:", "ipv6:")) and "," in address:
            options.append(("grpc.ssl_target_name_override", MULTI_ADDRESS_TLS_NAME))
        channel = grpc.secure_channel(address, tls.credentials(), options=options)
    # The OpenTelemetry interceptor is not a grpc.*ClientInterceptor: it needs its own wrapper.
    from opentelemetry.instrumentation.grpc import grpcext as otel_grpcext

    traced = otel_grpcext.intercept_channel(channel, grpc_client_interceptor())
    if tokens is None:
        return traced
    return grpc.intercept_channel(traced, bearer_interceptor(tokens, audience(service)))
