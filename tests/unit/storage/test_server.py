"""The storage service through a real in-process gRPC server."""

from __future__ import annotations

import hashlib
import os
import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, NetworkLayout, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import StorageSettings
from carechain.runtime.server import start_service
from carechain.storage.server import build
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

Kind = common_pb2.PrincipalKind
Code = grpc.StatusCode
CHUNK = 1024
RECORDS = Caller("svc-records", Kind.PRINCIPAL_KIND_SERVICE)


@dataclass
class Storage:
    stub: storage_pb2_grpc.StorageServiceStub
    identity: Ed25519Signer
    blobs_dir: pathlib.Path

    def as_(self, caller: Caller) -> list[tuple[str, str]]:
        token = issue_token(self.identity, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("storage")), 60)[0]
        return [("authorization", f"Bearer {token}")]


@pytest.fixture
def storage(tmp_path: pathlib.Path) -> Iterator[Storage]:
    layout = NetworkLayout(tmp_path / "net")
    layout.ensure()
    identity = Ed25519Signer.from_file(TOKEN_ISSUER_ID, layout.key_file(TOKEN_ISSUER_ID))
    settings = StorageSettings(listen_address="127.0.0.1:0", data_dir=layout.service_dir("storage"),
                               trust_dir=layout.trust_dir, chunk_bytes=CHUNK, shutdown_grace_seconds=0)
    assert TrustBundle.load(layout.trust_dir).key(TOKEN_ISSUER_ID) == identity.public_key_bytes()
    register, closers = build(settings)
    running = start_service("storage", settings, register, closers)
    channel = grpc.insecure_channel(running.address)
    try:
        yield Storage(storage_pb2_grpc.StorageServiceStub(channel), identity, layout.service_dir("storage") / "blobs")
    finally:
        channel.close()
        running.stop()


def upload(data: bytes, expected: str = "", chunk: int = 3000) -> Iterator[storage_pb2.PutBlobRequest]:
    yield storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata(expected_sha256=expected))
    for start in range(0, len(data), chunk):
        yield storage_pb2.PutBlobRequest(chunk=data[start : start + chunk])


def put(storage: Storage, data: bytes, expected: str = "") -> storage_pb2.BlobRef:
    return storage.stub.PutBlob(upload(data, expected), metadata=storage.as_(RECORDS))


def get(storage: Storage, sha256: str) -> list[bytes]:
    request = storage_pb2.GetBlobRequest(sha256=sha256)
    return [c.data for c in storage.stub.GetBlob(request, metadata=storage.as_(RECORDS))]


def test_records_service_stores_and_reads_blobs(storage: Storage) -> None:
    data = os.urandom(10 * CHUNK + 5)

    ref = put(storage, data, hashlib.sha256(data).hexdigest())
    chunks = get(storage, ref.sha256)

    assert (ref.sha256, ref.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) == CHUNK
    stat = storage.stub.StatBlob(storage_pb2.StatBlobRequest(sha256=ref.sha256), metadata=storage.as_(RECORDS))
    assert stat == ref


@pytest.mark.parametrize("caller", [
    Caller("svc-consent", Kind.PRINCIPAL_KIND_SERVICE),
    Caller("prac-1", Kind.PRINCIPAL_KIND_PRACTITIONER, "org-1"),
    Caller("operator", Kind.PRINCIPAL_KIND_OPERATOR),
])
def test_only_the_records_service_may_call(storage: Storage, caller: Caller) -> None:
    ref = put(storage, b"ciphertext")
    calls = [
        lambda: storage.stub.PutBlob(upload(b"other"), metadata=storage.as_(caller)),
        lambda: list(storage.stub.GetBlob(storage_pb2.GetBlobRequest(sha256=ref.sha256), metadata=storage.as_(caller))),
        lambda: storage.stub.StatBlob(storage_pb2.StatBlobRequest(sha256=ref.sha256), metadata=storage.as_(caller)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as denied:
            call()
        assert denied.value.code() == Code.PERMISSION_DENIED


def test_callers_without_a_token_are_unauthenticated(storage: Storage) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        storage.stub.StatBlob(storage_pb2.StatBlobRequest(sha256="0" * 64))
    assert refused.value.code() == Code.UNAUTHENTICATED


def test_chunk_before_metadata_is_invalid(storage: Storage) -> None:
    with pytest.raises(grpc.RpcError) as invalid:
        storage.stub.PutBlob(iter([storage_pb2.PutBlobRequest(chunk=b"x")]), metadata=storage.as_(RECORDS))
    assert invalid.value.code() == Code.INVALID_ARGUMENT
    assert invalid.value.details().startswith("metadata:")


def test_second_metadata_is_invalid_and_stores_nothing(storage: Storage) -> None:
    requests = [*upload(b"abc"), storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata())]
    with pytest.raises(grpc.RpcError) as invalid:
        storage.stub.PutBlob(iter(requests), metadata=storage.as_(RECORDS))
    assert invalid.value.code() == Code.INVALID_ARGUMENT
    assert not [p for p in storage.blobs_dir.rglob("*") if p.is_file()]


def test_hash_mismatch_is_data_loss(storage: Storage) -> None:
    with pytest.raises(grpc.RpcError) as lost:
        put(storage, b"abc", hashlib.sha256(b"abd").hexdigest())
    assert lost.value.code() == Code.DATA_LOSS


def test_malformed_expected_hash_is_invalid(storage: Storage) -> None:
    with pytest.raises(grpc.RpcError) as invalid:
        put(storage, b"abc", "xyz")
    assert invalid.value.code() == Code.INVALID_ARGUMENT
    assert "expected_sha256" in invalid.value.details()


def test_tampered_blob_is_data_loss_on_read(storage: Storage) -> None:
    data = os.urandom(4 * CHUNK)
    ref = put(storage, data)
    (storage.blobs_dir / ref.sha256[:2] / ref.sha256).write_bytes(data[::-1])

    with pytest.raises(grpc.RpcError) as lost:
        get(storage, ref.sha256)
    assert lost.value.code() == Code.DATA_LOSS


def test_missing_and_malformed_addresses(storage: Storage) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        get(storage, "ab" * 32)
    assert missing.value.code() == Code.NOT_FOUND
    with pytest.raises(grpc.RpcError) as invalid:
        storage.stub.StatBlob(storage_pb2.StatBlobRequest(sha256="../etc"), metadata=storage.as_(RECORDS))
    assert invalid.value.code() == Code.INVALID_ARGUMENT
    assert invalid.value.details().startswith("sha256:")


# --- reconciler RPCs: list, delete orphans, prune uploads a crash left -------------------------

def _age(path: pathlib.Path, seconds: float) -> None:
    """Make a file look written `seconds` ago."""
    when = path.stat().st_mtime - seconds
    os.utime(path, (when, when))


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_list_blobs_pages_in_address_order_and_only_older_ones(storage: Storage) -> None:
    refs = sorted(put(storage, os.urandom(100)).sha256 for _ in range(5))
    for sha in refs[:4]:
        _age(storage.blobs_dir / sha[:2] / sha, 3600)
    listed, token = [], ""
    while True:
        page = storage.stub.ListBlobs(storage_pb2.ListBlobsRequest(
            written_before_ms=_now_ms() - 60_000, page_token=token, page_size=3), metadata=storage.as_(RECORDS))
        listed += [b.sha256 for b in page.blobs]
        token = page.next_page_token
        if not token:
            break
    assert listed == refs[:4]  # the fresh one is not a candidate


def test_delete_blob_removes_only_an_old_enough_blob(storage: Storage) -> None:
    old, fresh = put(storage, b"orphan ciphertext"), put(storage, b"in-flight ciphertext")
    _age(storage.blobs_dir / old.sha256[:2] / old.sha256, 3600)
    cutoff = _now_ms() - 60_000

    deleted = storage.stub.DeleteBlob(storage_pb2.DeleteBlobRequest(sha256=old.sha256, written_before_ms=cutoff),
                                      metadata=storage.as_(RECORDS))
    assert deleted.size == old.size
    with pytest.raises(grpc.RpcError) as again:
        storage.stub.DeleteBlob(storage_pb2.DeleteBlobRequest(sha256=old.sha256, written_before_ms=cutoff),
                                metadata=storage.as_(RECORDS))
    assert again.value.code() == Code.NOT_FOUND
    with pytest.raises(grpc.RpcError) as young:
        storage.stub.DeleteBlob(storage_pb2.DeleteBlobRequest(sha256=fresh.sha256, written_before_ms=cutoff),
                                metadata=storage.as_(RECORDS))
    assert young.value.code() == Code.FAILED_PRECONDITION
    assert get(storage, fresh.sha256) == [b"in-flight ciphertext"]


@pytest.mark.parametrize(("rpc", "request_", "field"), [
    ("ListBlobs", storage_pb2.ListBlobsRequest(), "written_before_ms"),
    ("DeleteBlob", storage_pb2.DeleteBlobRequest(sha256="ab" * 32), "written_before_ms"),
    ("PruneIncoming", storage_pb2.PruneIncomingRequest(), "created_before_ms"),
])
def test_reconciler_rpcs_need_a_time_bound(storage: Storage, rpc: str, request_, field: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        getattr(storage.stub, rpc)(request_, metadata=storage.as_(RECORDS))
    assert refused.value.code() == Code.INVALID_ARGUMENT and field in refused.value.details()


def test_prune_incoming_removes_stale_uploads_only(storage: Storage) -> None:
    incoming = storage.blobs_dir / "incoming"
    stale, current = incoming / "blob-crashed", incoming / "blob-uploading"
    stale.write_bytes(b"partial")
    current.write_bytes(b"partial")
    _age(stale, 3600)
    pruned = storage.stub.PruneIncoming(storage_pb2.PruneIncomingRequest(created_before_ms=_now_ms() - 60_000),
                                        metadata=storage.as_(RECORDS))
    assert pruned.removed == 1 and not stale.exists() and current.exists()


def test_only_records_may_delete_blobs(storage: Storage) -> None:
    other = Caller("svc-audit", Kind.PRINCIPAL_KIND_SERVICE)
    ref = put(storage, b"kept")
    with pytest.raises(grpc.RpcError) as refused:
        storage.stub.DeleteBlob(storage_pb2.DeleteBlobRequest(sha256=ref.sha256, written_before_ms=_now_ms()),
                                metadata=storage.as_(other))
    assert refused.value.code() == Code.PERMISSION_DENIED
    assert get(storage, ref.sha256) == [b"kept"]


# --- batches: PutBlobs / GetBlobs --------------------------------------------------------


def put_many(storage: Storage, items: list[tuple[bytes, str]], caller: Caller = RECORDS
             ) -> list[storage_pb2.PutBlobResult]:
    request = storage_pb2.PutBlobsRequest(items=[storage_pb2.PutBlobsItem(data=d, expected_sha256=e)
                                                 for d, e in items])
    return list(storage.stub.PutBlobs(request, metadata=storage.as_(caller)).results)


def get_many(storage: Storage, sha256s: list[str], caller: Caller = RECORDS) -> list[storage_pb2.GetBlobResult]:
    request = storage_pb2.GetBlobsRequest(sha256=sha256s)
    return list(storage.stub.GetBlobs(request, metadata=storage.as_(caller)).results)


def item_code(result: storage_pb2.PutBlobResult | storage_pb2.GetBlobResult) -> Code:
    assert result.WhichOneof("outcome") == "error", "expected this item to fail"
    return next(c for c in Code if c.value[0] == result.error.code)


def test_a_batch_of_blobs_is_stored_and_read_each_as_the_single_calls_would(storage: Storage) -> None:
    blobs = [os.urandom(4096) for _ in range(5)]
    results = put_many(storage, [
        (blobs[0], hashlib.sha256(blobs[0]).hexdigest()), (blobs[1], ""),
        (blobs[2], hashlib.sha256(b"other").hexdigest()),  # not the bytes the caller meant: nothing stored
        (blobs[3], "xyz"),  # malformed address
        (blobs[4], ""), (blobs[0], ""),  # the same blob again: idempotent
    ])

    refs = [r.ref for r in results]
    assert [(r.sha256, r.size) for r in (refs[0], refs[1], refs[4])] == [
        (hashlib.sha256(b).hexdigest(), 4096) for b in (blobs[0], blobs[1], blobs[4])]
    assert refs[5] == refs[0]
    assert item_code(results[2]) == Code.DATA_LOSS
    assert item_code(results[3]) == Code.INVALID_ARGUMENT and results[3].error.message.startswith("expected_sha256")
    assert not (storage.blobs_dir / hashlib.sha256(blobs[2]).hexdigest()[:2] / hashlib.sha256(blobs[2]).hexdigest()
                ).exists()
    assert not list((storage.blobs_dir / "incoming").iterdir()), "no temporary file is left behind"
    # Readable one by one (streamed) and in a batch.
    assert b"".join(get(storage, refs[1].sha256)) == blobs[1]
    read = get_many(storage, [refs[0].sha256, refs[4].sha256, hashlib.sha256(blobs[2]).hexdigest(), "nope"])
    assert [r.data for r in read[:2]] == [blobs[0], blobs[4]]
    assert item_code(read[2]) == Code.NOT_FOUND and item_code(read[3]) == Code.INVALID_ARGUMENT


def test_a_tampered_blob_fails_only_its_own_item(storage: Storage) -> None:
    good, bad = os.urandom(300), os.urandom(300)
    refs = [r.ref for r in put_many(storage, [(good, ""), (bad, "")])]
    path = storage.blobs_dir / refs[1].sha256[:2] / refs[1].sha256
    data = bytearray(path.read_bytes())
    data[7] ^= 1
    path.write_bytes(bytes(data))

    read = get_many(storage, [refs[0].sha256, refs[1].sha256])

    assert read[0].data == good
    assert item_code(read[1]) == Code.DATA_LOSS


def test_large_blobs_are_refused_by_the_batches_and_go_by_stream(storage: Storage) -> None:
    large = os.urandom(1024 * 1024 + 1)
    refused = put_many(storage, [(large, ""), (b"small", "")])
    assert item_code(refused[0]) == Code.INVALID_ARGUMENT and refused[1].ref.size == 5
    ref = put(storage, large)
    read = get_many(storage, [ref.sha256])
    assert item_code(read[0]) == Code.FAILED_PRECONDITION and "GetBlob" in read[0].error.message


@pytest.mark.parametrize("count", [0, 65])
def test_a_batch_holds_one_to_64_blobs(storage: Storage, count: int) -> None:
    for call in (lambda: put_many(storage, [(b"x", "")] * count), lambda: get_many(storage, ["0" * 64] * count)):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == Code.INVALID_ARGUMENT and refused.value.details().startswith("items: ")


@pytest.mark.parametrize("caller", [
    Caller("svc-consent", Kind.PRINCIPAL_KIND_SERVICE),
    Caller("prac-1", Kind.PRINCIPAL_KIND_PRACTITIONER, "org-1"),
])
def test_only_the_records_service_may_call_the_batches(storage: Storage, caller: Caller) -> None:
    ref = put(storage, b"ciphertext")
    for call in (lambda: put_many(storage, [(b"other", "")], caller), lambda: get_many(storage, [ref.sha256], caller)):
        with pytest.raises(grpc.RpcError) as denied:
            call()
        assert denied.value.code() == Code.PERMISSION_DENIED
    assert not (storage.blobs_dir / hashlib.sha256(b"other").hexdigest()[:2]).exists()
