"""Calls reach every replica of a service: round_robin per call, and connection ageing for new replicas.

Three replicas of the storage service listen on one port of 127.0.0.1, 127.0.0.2 and 127.0.0.3
(Linux routes all of 127/8 to loopback), each with its own blob directory, so where each PutBlob
went is visible on disk. A caller opens its channel with carechain.runtime.peers.open_channel, as the
services do.

- round_robin over the three addresses (what a ``dns:///`` headless Service name resolves to)
  spreads calls over all three; pick_first sends every call to one.
- Through a stand-in for a ClusterIP Service (a TCP proxy that, like kube-proxy, balances each new
  *connection* over the current endpoints), an existing caller's calls reach a replica added later
  only when the servers age connections (CARECHAIN_MAX_CONNECTION_AGE_SECONDS): without ageing the
  new replica never gets a call.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import pathlib
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from carechain.client.channels import open_channel
from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, NetworkLayout, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import StorageSettings
from carechain.runtime.server import RunningService, start_service
from carechain.storage.server import build
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
RECORDS = Caller("svc-records", common_pb2.PrincipalKind.PRINCIPAL_KIND_SERVICE)


def _port_free_on_every_host() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((HOSTS[0], 0))
            port = probe.getsockname()[1]
        try:
            with contextlib.ExitStack() as stack:
                for host in HOSTS[1:]:
                    sock = stack.enter_context(socket.socket())
                    sock.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on all loopback addresses")


class Replicas:
    """Storage replicas on the loopback addresses, one blob directory each."""

    def __init__(self, root: pathlib.Path, port: int, max_connection_age_seconds: float = 0.0) -> None:
        self.layout = NetworkLayout(root / "net")
        self.layout.ensure()
        self.root = root
        self.port = port
        self.age = max_connection_age_seconds
        self.identity = Ed25519Signer.from_file(TOKEN_ISSUER_ID, self.layout.key_file(TOKEN_ISSUER_ID))
        self.running: dict[str, RunningService] = {}

    def start(self, host: str) -> None:
        settings = StorageSettings(
            listen_address=f"{host}:{self.port}", data_dir=self.root / host, trust_dir=self.layout.trust_dir,
            shutdown_grace_seconds=0, max_connection_age_seconds=self.age, max_connection_age_grace_seconds=1)
        register, closers = build(settings)
        self.running[host] = start_service("storage", settings, register, closers)

    def blobs_on(self, host: str) -> int:
        blobs = self.root / host / "blobs"
        return sum(1 for path in blobs.rglob("*") if path.is_file()) if blobs.exists() else 0

    def put(self, stub: storage_pb2_grpc.StorageServiceStub, data: bytes) -> None:
        token = issue_token(self.identity, ACCESS_TOKEN_TYPE, caller_claims(RECORDS, audience("storage")), 60)[0]
        request = iter([storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata(
            expected_sha256=hashlib.sha256(data).hexdigest())), storage_pb2.PutBlobRequest(chunk=data)])
        stub.PutBlob(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)

    def stop(self) -> None:
        for running in self.running.values():
            running.stop()


@pytest.fixture
def replicas(tmp_path: pathlib.Path) -> Iterator[Replicas]:
    started = Replicas(tmp_path, _port_free_on_every_host())
    yield started
    started.stop()


def _spread(replicas: Replicas, load_balancing: str, calls: int = 30) -> list[int]:
    target = "ipv4:" + ",".join(f"{host}:{replicas.port}" for host in HOSTS)
    with open_channel(target, "storage", load_balancing=load_balancing) as channel:  # type: ignore[arg-type]
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        for _ in range(calls):
            replicas.put(stub, os.urandom(64))
    return [replicas.blobs_on(host) for host in HOSTS]


def test_round_robin_spreads_calls_over_every_replica_and_pick_first_does_not(replicas: Replicas) -> None:
    for host in HOSTS:
        replicas.start(host)
    round_robin = _spread(replicas, "round_robin")
    assert sum(round_robin) == 30 and min(round_robin) >= 8, f"calls per replica: {round_robin}"

    before = round_robin
    after = _spread(replicas, "pick_first")
    assert sorted(a - b for a, b in zip(after, before, strict=True)) == [0, 0, 30], f"{before} -> {after}"


class ClusterIP:
    """A TCP stand-in for a ClusterIP Service: each new connection goes to the next current endpoint."""

    def __init__(self) -> None:
        self.endpoints: list[tuple[str, int]] = []
        self._next = itertools.count()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            endpoints = list(self.endpoints)
            backend = socket.create_connection(endpoints[next(self._next) % len(endpoints)])
            for source, sink in ((client, backend), (backend, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def _calls_reaching_a_replica_added_later(tmp_path: pathlib.Path, age_seconds: float) -> list[int]:
    service = ClusterIP()
    replicas = Replicas(tmp_path, _port_free_on_every_host(), max_connection_age_seconds=age_seconds)
    try:
        for host in HOSTS[:2]:
            replicas.start(host)
            service.endpoints.append((host, replicas.port))
        with open_channel(service.address, "storage") as channel:  # an existing caller: pick_first
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            replicas.put(stub, os.urandom(64))
            replicas.start(HOSTS[2])  # the autoscaler adds a replica
            service.endpoints.append((HOSTS[2], replicas.port))
            deadline = time.monotonic() + 6 * max(age_seconds, 1)
            while time.monotonic() < deadline and replicas.blobs_on(HOSTS[2]) == 0:
                with contextlib.suppress(grpc.RpcError):  # a call may meet a connection being closed
                    replicas.put(stub, os.urandom(64))
                time.sleep(0.05)
        return [replicas.blobs_on(host) for host in HOSTS]
    finally:
        replicas.stop()
        service.close()


def test_connection_ageing_brings_existing_callers_to_a_replica_added_later(tmp_path: pathlib.Path) -> None:
    without = _calls_reaching_a_replica_added_later(tmp_path / "no-ageing", 0)
    assert without[2] == 0 and sum(without) > 20, f"calls per replica without ageing: {without}"

    with_ageing = _calls_reaching_a_replica_added_later(tmp_path / "ageing", 1.0)
    assert with_ageing[2] > 0, f"calls per replica with 1 s connection ageing: {with_ageing}"
