"""The batching blob client (carechain.storage.blob_client) against the in-process storage service."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
from collections.abc import Iterator

import grpc
import pytest

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, NetworkLayout, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.batch_items import ItemRpcError
from carechain.runtime.config import StorageSettings
from carechain.runtime.server import start_service
from carechain.storage.blob_client import SMALL_BLOB_BYTES, BlobClient
from carechain.storage.server import build
from carechain.storage.v1 import storage_pb2_grpc

RECORDS = Caller("svc-records", common_pb2.PrincipalKind.PRINCIPAL_KIND_SERVICE)


class _AsRecords:
    """The storage stub, every call carrying the records service's token (as runtime.peers does)."""

    def __init__(self, stub: storage_pb2_grpc.StorageServiceStub, token: str) -> None:
        self._stub, self._metadata = stub, [("authorization", f"Bearer {token}")]
        self.calls: list[str] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self._stub, name)

        def call(request):  # type: ignore[no-untyped-def]
            self.calls.append(name)
            return method(request, metadata=self._metadata)

        return call


@pytest.fixture
def stub(tmp_path: pathlib.Path) -> Iterator[_AsRecords]:
    layout = NetworkLayout(tmp_path / "net")
    layout.ensure()
    identity = Ed25519Signer.from_file(TOKEN_ISSUER_ID, layout.key_file(TOKEN_ISSUER_ID))
    settings = StorageSettings(listen_address="127.0.0.1:0", data_dir=layout.service_dir("storage"),
                               trust_dir=layout.trust_dir, shutdown_grace_seconds=0)
    register, closers = build(settings)
    running = start_service("storage", settings, register, closers)
    channel = grpc.insecure_channel(running.address)
    token = issue_token(identity, ACCESS_TOKEN_TYPE, caller_claims(RECORDS, audience("storage")), 60)[0]
    try:
        yield _AsRecords(storage_pb2_grpc.StorageServiceStub(channel), token)
    finally:
        channel.close()
        running.stop()


def test_concurrent_small_blobs_round_trip_through_the_batch_calls(stub: _AsRecords) -> None:
    client = BlobClient(lambda: stub)
    blobs = [os.urandom(2048 + i) for i in range(30)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        refs = list(pool.map(lambda b: client.put(b, hashlib.sha256(b).hexdigest()), blobs))
        read = list(pool.map(lambda r: client.get(r.sha256, r.size), refs))

    assert [r.sha256 for r in refs] == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert read == blobs
    assert set(stub.calls) == {"PutBlobs", "GetBlobs"}


def test_large_blobs_stream_and_a_refused_item_raises_as_the_single_call_does(stub: _AsRecords) -> None:
    client = BlobClient(lambda: stub)
    large = os.urandom(SMALL_BLOB_BYTES + 1)
    ref = client.put(large)
    assert client.get(ref.sha256, ref.size) == large
    assert stub.calls == ["PutBlob", "GetBlob"]

    with pytest.raises(ItemRpcError) as lost:
        client.put(b"abc", hashlib.sha256(b"abd").hexdigest())
    assert lost.value.code() == grpc.StatusCode.DATA_LOSS
    with pytest.raises(grpc.RpcError) as missing:
        client.get("0" * 64, 10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_blob_larger_than_its_size_said_is_streamed_instead(stub: _AsRecords) -> None:
    client = BlobClient(lambda: stub)
    large = os.urandom(1024 * 1024 + 1)  # over what a batch returns
    ref = client.put(large)
    assert client.get(ref.sha256, 10) == large
    assert stub.calls == ["PutBlob", "GetBlobs", "GetBlob"]
