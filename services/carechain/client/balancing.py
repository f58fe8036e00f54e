"""Spreading calls over a service's replicas: the client's load-balancing policy and server connection ageing.

gRPC keeps one long-lived HTTP/2 connection per channel. Through a Kubernetes ClusterIP Service
(balanced per *connection* by kube-proxy) with gRPC's default ``pick_first`` policy, every call of
a caller goes to the one pod its connection reached, and replicas an autoscaler adds later get no
traffic from callers that are already connected. Two remedies, used together by the Helm chart:

- ``round_robin`` on the caller (``CARECHAIN_PEER_LOAD_BALANCING``): the channel connects to every
  address its target resolves to (``dns:///`` a headless Service: one address per ready pod; or an
  ``ipv4:`` list) and spreads calls over them, call by call.
- connection ageing on the server (``CARECHAIN_MAX_CONNECTION_AGE_SECONDS``): the server ends each
  connection after that age (HTTP/2 GOAWAY, in-flight calls get ``..._GRACE_SECONDS`` to finish),
  so callers reconnect and re-resolve: through a ClusterIP Service the new connection may reach a
  new pod, and a ``dns:///`` target learns the pods added since. Long-lived streams (audit's
  ``StreamEvents``) end with UNAVAILABLE at that point; callers resume from their last cursor.
"""

from __future__ import annotations

import json
from typing import Any, Literal

LoadBalancing = Literal["pick_first", "round_robin"]


def channel_options(load_balancing: LoadBalancing) -> list[tuple[str, Any]]:
    """Channel options selecting the load-balancing policy (``pick_first`` is gRPC's default)."""
    if load_balancing == "pick_first":
        return []
    service_config = {"loadBalancingConfig": [{load_balancing: {}}]}
    # The policy is ours, not whatever a DNS TXT record might announce.
    return [("grpc.service_config", json.dumps(service_config)), ("grpc.service_config_disable_resolution", 1)]


def server_options(settings: Any) -> list[tuple[str, Any]]:
    """Server options for connection ageing per settings.max_connection_age_seconds (0 = never)."""
    age = float(getattr(settings, "max_connection_age_seconds", 0))
    if age <= 0:
        return []
    grace = float(getattr(settings, "max_connection_age_grace_seconds", 0))
    # gRPC adds +-10% jitter to the age, so callers that connected together do not all reconnect together.
    return [("grpc.max_connection_age_ms", int(age * 1000)), ("grpc.max_connection_age_grace_ms", int(grace * 1000))]
