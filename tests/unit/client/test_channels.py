"""Issue 13: the client side of a call, through real in-process servers.

- One client interceptor: a CLIENT span per call whose W3C context reaches the server, so the server's
  SERVER span (and whatever it calls next) is in the same trace, its child; failures are marked.
- Tokens are fetched once per audience and expiry window, even when many threads call at once.
- One connection per peer: the token source and the stub of a service share it.
"""

from __future__ import annotations

import pathlib
import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from runtime_fixtures import IDENTITY, RECORDS, SHA, TRUST, storage_server

from carechain.client.auth import TokenSource
from carechain.client.channels import intercept, open_channel, plain_channel
from carechain.core.layout import audience
from carechain.core.telemetry import configure_tracing
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.runtime.auth import Authenticator, caller_claims
from carechain.runtime.config import ServiceSettings
from carechain.runtime.peers import Peers, PeerStub
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

STAT = "carechain.storage.v1.StorageService/StatBlob"


class CountingFetch:
    """Issues records' tokens like identity would, counting how often it is asked."""

    def __init__(self, ttl: float = 60) -> None:
        self.fetched: list[str] = []
        self._ttl = ttl
        self._lock = threading.Lock()

    def __call__(self, service_audience: str) -> tuple[str, int]:
        with self._lock:
            self.fetched.append(service_audience)
        return issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(RECORDS, service_audience), self._ttl)


class Relay(storage_pb2_grpc.StorageServiceServicer):
    """A service whose StatBlob calls the next one through a CareChain channel (as records)."""

    def __init__(self, next_address: str) -> None:
        self._auth = Authenticator(TRUST, audience("storage"))
        self.channel = open_channel(next_address, "storage", TokenSource(CountingFetch()))
        self._next = storage_pb2_grpc.StorageServiceStub(self.channel)

    def StatBlob(self, request, context):  # noqa: N802 - gRPC method name
        return self._next.StatBlob(request, timeout=10)


@pytest.fixture()
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing("unit-test").add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_a_call_through_two_services_is_one_trace_of_client_and_server_spans(tmp_path: pathlib.Path,
                                                                             spans: InMemorySpanExporter) -> None:
    with storage_server(tmp_path / "b") as (last, _), \
            storage_server(tmp_path / "a", servicer=(relay := Relay(last.address))) as (first, _), \
            open_channel(first.address, "storage", TokenSource(CountingFetch())) as channel:
        spans.clear()
        with pytest.raises(grpc.RpcError) as caught:  # the last service has no such blob
            storage_pb2_grpc.StorageServiceStub(channel).StatBlob(storage_pb2.StatBlobRequest(sha256=SHA), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        relay.channel.close()
    finished = [s for s in spans.get_finished_spans() if s.name == STAT]
    by_kind = {kind: [s for s in finished if s.kind == kind] for kind in (SpanKind.CLIENT, SpanKind.SERVER)}
    assert len(by_kind[SpanKind.CLIENT]) == 2 and len(by_kind[SpanKind.SERVER]) == 2, finished
    assert len({s.context.trace_id for s in finished}) == 1, "the hops are not one trace"
    parent_of = {s.context.span_id: s.parent.span_id if s.parent else None for s in finished}
    # client (test) -> server (first) -> client (relay) -> server (last): each the parent of the next.
    chain = [s for s in finished if s.parent is None or s.parent.span_id not in parent_of]
    assert len(chain) == 1 and chain[0].kind == SpanKind.CLIENT
    for _ in range(3):
        [child] = [s for s in finished if s.parent is not None and s.parent.span_id == chain[-1].context.span_id]
        chain.append(child)
    assert [s.kind for s in chain] == [SpanKind.CLIENT, SpanKind.SERVER] * 2
    for span in finished:
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
        assert span.status.status_code == StatusCode.ERROR
        assert set(span.attributes) == {"rpc.system", "rpc.grpc.status_code"}, "no peer addresses, no payloads"


def test_a_stream_s_client_span_ends_with_the_stream(tmp_path: pathlib.Path, spans: InMemorySpanExporter) -> None:
    with storage_server(tmp_path) as (running, _), \
            open_channel(running.address, "storage", TokenSource(CountingFetch())) as channel:
        spans.clear()
        chunks = storage_pb2_grpc.StorageServiceStub(channel).GetBlob(storage_pb2.GetBlobRequest(sha256=SHA),
                                                                     timeout=10)
        with pytest.raises(grpc.RpcError):
            list(chunks)
    [client] = [s for s in spans.get_finished_spans()
                if s.kind == SpanKind.CLIENT and s.name.endswith("/GetBlob")]
    assert client.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_concurrent_callers_share_one_token_per_audience_and_window(tmp_path: pathlib.Path) -> None:
    fetch = CountingFetch()
    tokens = TokenSource(fetch)
    with storage_server(tmp_path) as (running, _), open_channel(running.address, "storage", tokens) as channel:
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        start = threading.Barrier(16)

        def call(_: int) -> grpc.StatusCode:
            start.wait()
            try:
                stub.StatBlob(storage_pb2.StatBlobRequest(sha256=SHA), timeout=10)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        with futures.ThreadPoolExecutor(max_workers=16) as pool:
            codes = set(pool.map(call, range(64)))
    assert codes == {grpc.StatusCode.NOT_FOUND}, "every call was authenticated (and then found no blob)"
    assert fetch.fetched == [audience("storage")], "one token fetched for 64 concurrent calls"


def test_a_token_is_reused_until_its_renewal_time_then_fetched_again() -> None:
    fetch = CountingFetch(ttl=60)
    tokens = TokenSource(fetch)
    assert tokens.token(audience("storage")) == tokens.token(audience("storage"))
    assert fetch.fetched == [audience("storage")]
    # A token living less than twice the renewal margin is renewed half-way (it used to be fetched on
    # every call), and fetched anew once that time has passed.
    short = CountingFetch(ttl=0.4)
    tokens = TokenSource(short)
    first = tokens.token(audience("ledger"))
    assert tokens.token(audience("ledger")) == first and len(short.fetched) == 1
    time.sleep(0.3)
    assert tokens.token(audience("ledger")) != first and len(short.fetched) == 2


class PeerRecorder(storage_pb2_grpc.StorageServiceServicer):
    """Notes the connection (client address and port) every call came over."""

    def __init__(self) -> None:
        self._auth = Authenticator(TRUST, audience("storage"))
        self.peers: list[str] = []

    def StatBlob(self, request, context):  # noqa: N802 - gRPC method name
        self.peers.append(context.peer())
        return storage_pb2.BlobRef(sha256=request.sha256, size=1)


def test_the_token_source_and_the_stub_of_a_peer_share_one_connection(tmp_path: pathlib.Path) -> None:
    recorder = PeerRecorder()
    with storage_server(tmp_path, servicer=recorder) as (running, _):
        plain = plain_channel(running.address)
        unauthenticated = storage_pb2_grpc.StorageServiceStub(intercept(plain, "storage"))
        fetch = CountingFetch()

        def fetch_over_the_same_channel(service_audience: str) -> tuple[str, int]:
            with pytest.raises(grpc.RpcError):  # e.g. CreateChallenge: no token on this call
                unauthenticated.StatBlob(storage_pb2.StatBlobRequest(sha256=SHA), timeout=10)
            return fetch(service_audience)

        settings = ServiceSettings(storage_address="127.0.0.1:1")  # never dialled: the given channel is used
        peers = Peers(settings, TokenSource(fetch_over_the_same_channel), channels={"storage": plain})
        try:
            stub = peers._stub("storage", storage_pb2_grpc.StorageServiceStub)
            assert isinstance(stub, PeerStub)
            for _ in range(3):
                assert stub.StatBlob(storage_pb2.StatBlobRequest(sha256=SHA)).size == 1
        finally:
            peers.close()
    assert len(recorder.peers) == 3 and len(set(recorder.peers)) == 1, recorder.peers
    assert fetch.fetched == [audience("storage")]
