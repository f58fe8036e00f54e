"""The storage gRPC service with blob_backend=s3 on a real MinIO: statuses a caller sees."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
from collections.abc import Iterator

import grpc
import pytest
from servers_minio import StorageOnS3, minio_binary, new_bucket_name, storage_service_on_s3

from carechain.dev.backends.minio import MinioServer
from carechain.storage.s3_blobstore import BLOBS_PREFIX
from carechain.storage.v1 import storage_pb2

pytest_plugins = ["servers_minio"]  # one session-scoped MinIO shared by every module

CHUNK = 4096


def upload(data: bytes, expected: str = "") -> Iterator[storage_pb2.PutBlobRequest]:
    yield storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata(expected_sha256=expected))
    for start in range(0, len(data), 10_000):
        yield storage_pb2.PutBlobRequest(chunk=data[start : start + 10_000])


def put(storage: StorageOnS3, data: bytes, expected: str = "") -> storage_pb2.BlobRef:
    return storage.stub.PutBlob(upload(data, expected), metadata=storage.records_metadata())


def get(storage: StorageOnS3, sha256: str) -> bytes:
    request = storage_pb2.GetBlobRequest(sha256=sha256)
    return b"".join(c.data for c in storage.stub.GetBlob(request, metadata=storage.records_metadata()))


def stat(storage: StorageOnS3, sha256: str) -> storage_pb2.BlobRef:
    return storage.stub.StatBlob(storage_pb2.StatBlobRequest(sha256=sha256), metadata=storage.records_metadata())


def test_service_on_s3_stores_reads_and_reports_changed_objects(
    minio_server: MinioServer, tmp_path: pathlib.Path
) -> None:
    bucket = new_bucket_name()
    with storage_service_on_s3(minio_server, bucket, tmp_path, chunk_bytes=CHUNK) as storage:
        data = os.urandom(10 * CHUNK + 1)
        ref = put(storage, data, hashlib.sha256(data).hexdigest())
        assert (ref.sha256, ref.size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert get(storage, ref.sha256) == data
        assert stat(storage, ref.sha256) == ref

        with pytest.raises(grpc.RpcError) as mismatch:
            put(storage, b"other bytes", ref.sha256)
        assert mismatch.value.code() == grpc.StatusCode.DATA_LOSS

        changed = data[:-1] + bytes([data[-1] ^ 1])
        minio_server.client().put_object(bucket, BLOBS_PREFIX + ref.sha256, io.BytesIO(changed), len(changed))
        with pytest.raises(grpc.RpcError) as damaged:
            get(storage, ref.sha256)
        assert damaged.value.code() == grpc.StatusCode.DATA_LOSS

        with pytest.raises(grpc.RpcError) as missing:
            stat(storage, hashlib.sha256(b"never stored").hexdigest())
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.timeout(60)
def test_minio_down_is_unavailable_naming_s3_then_service_recovers(tmp_path: pathlib.Path) -> None:
    with MinioServer(tmp_path / "minio", minio_binary()) as server, \
            storage_service_on_s3(server, new_bucket_name(), tmp_path / "net", chunk_bytes=CHUNK) as storage:
        data = os.urandom(3 * CHUNK)
        ref = put(storage, data)

        server.stop()
        for call in (lambda: put(storage, b"new ciphertext"), lambda: get(storage, ref.sha256),
                     lambda: stat(storage, ref.sha256)):
            with pytest.raises(grpc.RpcError) as down:
                call()
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "s3" in down.value.details()

        server.start()
        assert get(storage, ref.sha256) == data
        assert put(storage, b"new ciphertext").sha256 == hashlib.sha256(b"new ciphertext").hexdigest()
