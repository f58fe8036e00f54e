"""Outgoing calls: every peer call's deadline is derived from the served caller's, through every hop."""

from __future__ import annotations

import pathlib
import threading
import time

import grpc
import pytest
from runtime_fixtures import RECORDS, SHA, TRUST, bearer, storage_server

from carechain.core.errors import Unavailable
from carechain.core.layout import audience
from carechain.runtime.auth import Authenticator
from carechain.runtime.peers import DEADLINE_MARGIN_SECONDS, PeerStub, caller_time_remaining
from carechain.storage.file_blobstore import LocalBlobStore
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

CONFIGURED_TIMEOUT = 10.0


class DeadlineRecordingStore(LocalBlobStore):
    """The last hop's backend: notes the time its served call has left, then works until that runs out."""

    def __init__(self, directory: pathlib.Path) -> None:
        super().__init__(directory)
        self.remaining: list[float] = []
        self.finished = threading.Event()

    def stat(self, sha256: str) -> int:
        remaining = caller_time_remaining()
        assert remaining is not None, "the interceptor did not make the served call current"
        self.remaining.append(remaining)
        time.sleep(remaining + 0.2)  # a slow backend: still busy when the deadline passes
        self.finished.set()
        return 4


class Relay(storage_pb2_grpc.StorageServiceServicer):
    """A service whose StatBlob asks the next service (as records), the way the gateway calls its peers."""

    def __init__(self, next_address: str) -> None:
        self._auth = Authenticator(TRUST, audience("storage"))
        self._channel = grpc.insecure_channel(next_address)
        self._next = PeerStub("next", storage_pb2_grpc.StorageServiceStub(self._channel), CONFIGURED_TIMEOUT)
        self.remaining: list[float] = []

    def StatBlob(self, request, context):  # noqa: N802 - gRPC method name
        self.remaining.append(caller_time_remaining() or 0.0)
        return self._next.StatBlob(request, metadata=bearer(RECORDS, "storage"))


def test_a_short_caller_deadline_holds_through_two_hops(tmp_path: pathlib.Path) -> None:
    last = DeadlineRecordingStore(tmp_path / "c")
    with storage_server(tmp_path / "c", last) as (c, _), \
            storage_server(tmp_path / "b", servicer=(b := Relay(c.address))) as (b_running, _), \
            storage_server(tmp_path / "a", servicer=(a := Relay(b_running.address))) as (_, channel):
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stub.StatBlob(storage_pb2.StatBlobRequest(sha256=SHA), metadata=bearer(RECORDS, "storage"), timeout=1.0)
        elapsed = time.monotonic() - started
        # The caller's deadline, not the configured 10 s, bounds every hop: each keeps a margin back.
        assert elapsed < 5.0  # far under the configured 10 s, with room for a loaded machine
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        [at_a], [at_b], [at_c] = a.remaining, b.remaining, last.remaining
        assert at_a <= 1.05  # the server reckons the deadline from when the call reached it: a few ms late
        assert at_b <= at_a - DEADLINE_MARGIN_SECONDS + 0.01
        assert at_c <= at_b - DEADLINE_MARGIN_SECONDS + 0.01
        assert at_c < 1.0 - 2 * DEADLINE_MARGIN_SECONDS + 0.01
        assert last.finished.wait(5)


def test_a_peer_that_times_out_on_its_own_deadline_is_unavailable(tmp_path: pathlib.Path) -> None:
    # Outside a served call (a background task) the configured timeout applies, and a peer that does not
    # answer in time is "down", named.
    last = DeadlineRecordingStore(tmp_path / "c")
    with storage_server(tmp_path / "c", last) as (_, channel):
        peer = PeerStub("storage", storage_pb2_grpc.StorageServiceStub(channel), timeout=0.5)
        assert caller_time_remaining() is None  # not serving a call here
        with pytest.raises(Unavailable, match="storage service unavailable"):
            peer.StatBlob(storage_pb2.StatBlobRequest(sha256=SHA), metadata=bearer(RECORDS, "storage"))
        assert 0.3 < last.remaining[0] <= 0.5
        assert last.finished.wait(5)


def test_no_time_left_fails_before_calling(tmp_path: pathlib.Path) -> None:
    last = DeadlineRecordingStore(tmp_path / "c")

    class Spent(Relay):
        def StatBlob(self, request, context):  # noqa: N802 - gRPC method name
            time.sleep(0.3)  # the caller's 0.3 s are used up here
            return super().StatBlob(request, context)

    with storage_server(tmp_path / "c", last) as (c, _), \
            storage_server(tmp_path / "a", servicer=Spent(c.address)) as (_, channel):
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.StatBlob(storage_pb2.StatBlobRequest(sha256=SHA), metadata=bearer(RECORDS, "storage"), timeout=0.3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert last.remaining == [], "the next service was called although the caller had no time left"
