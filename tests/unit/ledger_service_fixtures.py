"""A real ledger service (in-process gRPC, embedded backends) and service-authenticated stubs, for followers' tests."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from ledger_fixtures import CHAIN, Kind, Net

from carechain.core.layout import audience, write_public_key
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.ledger.server import build
from carechain.ledger.v1 import ledger_pb2_grpc
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import LedgerSettings
from carechain.runtime.server import RunningService, start_service


@contextmanager
def ledger_service(root: pathlib.Path, net: Net) -> Iterator[RunningService]:
    """One validator (quorum 1) under root, serving on a free port until the block ends."""
    trust_dir = root / "trust"
    for principal_id, key in net.trust.keys.items():
        write_public_key(trust_dir / f"{principal_id}.pub", key)
    net.ledger.save(root / "svc-ledger.pem")
    settings = LedgerSettings(
        listen_address="127.0.0.1:0", data_dir=root / "ledger", signing_key_file=root / "svc-ledger.pem",
        trust_dir=trust_dir, chain_id=CHAIN, block_max_wait_ms=1, shutdown_grace_seconds=0,
    )
    register_fn, closers = build(settings)
    running = start_service("ledger", settings, register_fn, closers)
    try:
        yield running
    finally:
        running.stop()


class ServiceStub:
    """A LedgerService stub calling as a service (svc-consent by default), counting calls per method."""

    def __init__(self, channel: grpc.Channel, net: Net, service: str = "svc-consent") -> None:
        self._stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        caller = Caller(service, Kind.PRINCIPAL_KIND_SERVICE)
        token = issue_token(net.identity, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("ledger")), 600)[0]
        self._metadata = [("authorization", f"Bearer {token}")]
        self.calls: dict[str, int] = {}
        self.block_heights: list[int] = []
        self.requests: list[tuple[str, object]] = []

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)

        def call(request, timeout: float | None = None, **_: object):
            self.calls[name] = self.calls.get(name, 0) + 1
            self.requests.append((name, request))
            if name == "GetBlock":
                self.block_heights.append(request.height)
            return method(request, metadata=self._metadata, timeout=timeout)

        return call


__all__ = ["CHAIN", "ServiceStub", "ledger_service"]
