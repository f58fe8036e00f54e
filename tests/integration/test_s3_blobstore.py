"""The S3 blob store against a real MinIO: multipart uploads, Object Lock, changed objects, faults.

The behaviour shared with the local store is in tests/contract/test_blobstore_contract.py;
these are the S3-specific guarantees.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import pathlib
from collections.abc import Iterator

import pytest
from minio.commonconfig import COMPLIANCE, GOVERNANCE
from minio.error import S3Error
from minio.retention import Retention
from servers_minio import minio_binary, new_bucket_name, object_versions, s3_store

from carechain.core.errors import DataLoss, FailedPrecondition, NotFound, Unavailable
from carechain.dev.backends.minio import MinioServer
from carechain.storage.s3_blobstore import BLOBS_PREFIX, INCOMING_PREFIX, MIN_PART_BYTES, S3BlobStore

pytest_plugins = ["servers_minio"]  # one session-scoped MinIO shared by every module

CHUNK = 64 * 1024
MULTIPART_SIZE = 2 * MIN_PART_BYTES + 12345  # three parts of the smallest size S3 allows


def chunks(data: bytes, size: int = 1024 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def store_on(server: MinioServer, bucket: str | None = None, lock_days: int = 0) -> S3BlobStore:
    return s3_store(server, bucket or new_bucket_name(), chunk_bytes=CHUNK, part_bytes=MIN_PART_BYTES,
                    object_lock_days=lock_days)


def incomplete_uploads(server: MinioServer, bucket: str) -> list[str]:
    # minio-py has no public ListMultipartUploads; the test looks behind the store with it.
    result = server.client()._list_multipart_uploads(bucket)
    return [upload.object_name for upload in result.uploads]


def test_multipart_blob_round_trips_and_leaves_only_its_address(minio_server: MinioServer) -> None:
    store = store_on(minio_server)
    data = os.urandom(MULTIPART_SIZE)

    ref = store.put(chunks(data), expected_sha256=hashlib.sha256(data).hexdigest())

    assert ref.size == len(data)
    assert b"".join(store.open(ref.sha256)) == data
    assert object_versions(minio_server, store.bucket) == [BLOBS_PREFIX + ref.sha256]
    assert incomplete_uploads(minio_server, store.bucket) == []


def test_multipart_blob_with_wrong_expected_hash_stores_nothing(minio_server: MinioServer) -> None:
    store = store_on(minio_server)
    data = os.urandom(MULTIPART_SIZE)
    wrong = hashlib.sha256(b"another blob").hexdigest()

    with pytest.raises(DataLoss, match="nothing stored"):
        store.put(chunks(data), expected_sha256=wrong)

    assert not store.exists(hashlib.sha256(data).hexdigest())
    assert object_versions(minio_server, store.bucket) == []


def test_upload_broken_after_some_parts_stores_nothing(minio_server: MinioServer) -> None:
    store = store_on(minio_server)

    def broken() -> Iterator[bytes]:
        yield os.urandom(MIN_PART_BYTES)
        yield os.urandom(MIN_PART_BYTES)  # the first part is on the server by now
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put(broken())

    assert object_versions(minio_server, store.bucket) == []
    assert incomplete_uploads(minio_server, store.bucket) == []


def test_object_changed_behind_the_store_is_data_loss_not_wrong_bytes(minio_server: MinioServer) -> None:
    store = store_on(minio_server)
    data = os.urandom(5 * CHUNK)
    ref = store.put(chunks(data))
    changed = bytearray(data)
    changed[CHUNK] ^= 0xFF  # same size, one byte different, early in the blob
    minio_server.client().put_object(store.bucket, BLOBS_PREFIX + ref.sha256, io.BytesIO(changed), len(changed))

    received = bytearray()
    with pytest.raises(DataLoss, match=ref.sha256):
        for chunk in store.open(ref.sha256):
            received += chunk
    assert len(received) < len(data)
    assert store.stat(ref.sha256) == len(data)  # still there: the store reports the damage, it does not hide it


def test_object_lock_bucket_keeps_every_blob_under_compliance_retention(minio_server: MinioServer) -> None:
    store = store_on(minio_server, lock_days=1)
    data = os.urandom(1000)
    ref = store.put(chunks(data))
    client = minio_server.client()
    name = BLOBS_PREFIX + ref.sha256
    stored = client.stat_object(store.bucket, name)

    retention = client.get_object_retention(store.bucket, name, version_id=stored.version_id)
    assert retention is not None and retention.mode == COMPLIANCE
    assert retention.retain_until_date > datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=23)

    with pytest.raises(S3Error):  # a stored version cannot be deleted ...
        client.remove_object(store.bucket, name, version_id=stored.version_id)
    with pytest.raises(S3Error):  # ... nor its retention shortened or weakened
        client.set_object_retention(
            store.bucket, name, Retention(GOVERNANCE, datetime.datetime.now(datetime.UTC) + datetime.timedelta(1)),
            version_id=stored.version_id,
        )

    # "Overwriting" only stacks a newer version on top; the locked bytes stay intact and readable.
    client.put_object(store.bucket, name, io.BytesIO(b"forged"), 6)
    with pytest.raises(DataLoss):
        b"".join(store.open(ref.sha256))
    original = client.get_object(store.bucket, name, version_id=stored.version_id)
    try:
        assert original.read() == data
    finally:
        original.close()
        original.release_conn()


def test_object_lock_re_put_of_a_stored_blob_is_idempotent(minio_server: MinioServer) -> None:
    store = store_on(minio_server, lock_days=1)
    data = os.urandom(MULTIPART_SIZE)

    first = store.put(chunks(data))
    second = store.put(chunks(data, 300_000))

    assert first == second
    assert object_versions(minio_server, store.bucket) == [BLOBS_PREFIX + first.sha256]
    assert b"".join(store.open(first.sha256)) == data


def test_object_lock_setting_on_a_bucket_without_lock_is_refused(minio_server: MinioServer) -> None:
    bucket = new_bucket_name()
    minio_server.client().make_bucket(bucket)

    with pytest.raises(FailedPrecondition, match="Object Lock"):
        store_on(minio_server, bucket, lock_days=30).put([b"x"])


def test_store_creates_its_bucket_and_temporaries_expire(minio_server: MinioServer) -> None:
    store = store_on(minio_server)
    assert not minio_server.client().bucket_exists(store.bucket)

    store.put([b"first blob"])

    assert minio_server.client().bucket_exists(store.bucket)
    rules = minio_server.client().get_bucket_lifecycle(store.bucket).rules
    assert [rule.rule_filter.prefix for rule in rules] == [INCOMING_PREFIX]


@pytest.fixture
def own_minio(tmp_path: pathlib.Path) -> Iterator[MinioServer]:
    """A MinIO this test may stop and restart without disturbing the session's server."""
    with MinioServer(tmp_path / "minio", minio_binary()) as server:
        yield server


@pytest.mark.timeout(60)
def test_minio_down_is_unavailable_naming_s3_and_reads_work_after_restart(own_minio: MinioServer) -> None:
    store = store_on(own_minio)
    data = os.urandom(3 * CHUNK)
    ref = store.put(chunks(data))

    own_minio.stop()
    calls = [
        lambda: store.stat(ref.sha256),
        lambda: store.exists(ref.sha256),
        lambda: store.open(ref.sha256),
        lambda: store.put(chunks(os.urandom(100))),
    ]
    for call in calls:
        with pytest.raises(Unavailable, match="^s3 unavailable: cannot connect") as down:
            call()
        assert down.value.backend == "s3"

    own_minio.start()
    assert b"".join(store.open(ref.sha256)) == data
    assert store.put(chunks(data)) == ref


@pytest.mark.timeout(60)
def test_store_made_while_minio_is_down_works_once_it_is_up(own_minio: MinioServer) -> None:
    own_minio.stop()
    store = store_on(own_minio)
    with pytest.raises(Unavailable, match="s3"):
        store.put([b"ciphertext"])

    own_minio.start()
    ref = store.put([b"ciphertext"])
    assert b"".join(store.open(ref.sha256)) == b"ciphertext"
    with pytest.raises(NotFound):
        store.stat(hashlib.sha256(b"other").hexdigest())
