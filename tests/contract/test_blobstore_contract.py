"""Contract suite for BlobStore implementations (content-addressed, streamed).

Every implementation must pass the same tests: the local directory store, and
the S3 store against a real MinIO (a plain bucket, and a bucket with Object Lock
where every stored object is under COMPLIANCE retention). Each implementation
brings its own way to tamper with a stored object behind the store's back.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from servers_minio import new_bucket_name, object_versions, s3_store

from carechain.core.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from carechain.storage.blobstore import MAX_BATCH_BLOB_BYTES, BlobRef, BlobStore
from carechain.storage.file_blobstore import LocalBlobStore
from carechain.storage.s3_blobstore import MIN_PART_BYTES

pytest_plugins = ["servers_minio"]  # the session-scoped MinIO the S3 implementations use

CHUNK = 64 * 1024


@dataclass
class Backend:
    store: BlobStore
    # Overwrite a stored blob's bytes behind the store's back.
    tamper: Callable[[str, bytes], None]
    # Number of blobs physically stored.
    count: Callable[[], int]


def _local(request: pytest.FixtureRequest, tmp_path: pathlib.Path, group_sync: bool = True) -> Iterator[Backend]:
    store = LocalBlobStore(tmp_path / "blobs", chunk_bytes=CHUNK, group_sync=group_sync)

    def tamper(sha256: str, data: bytes) -> None:
        store.path(sha256).write_bytes(data)

    def count() -> int:
        return sum(1 for p in (tmp_path / "blobs").rglob("*") if p.is_file())

    yield Backend(store, tamper, count)


def _s3(object_lock_days: int) -> Callable[[pytest.FixtureRequest, pathlib.Path], Iterator[Backend]]:
    def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Backend]:
        server = request.getfixturevalue("minio_server")
        bucket = new_bucket_name()
        store = s3_store(server, bucket, chunk_bytes=CHUNK, part_bytes=MIN_PART_BYTES,
                         object_lock_days=object_lock_days)
        store.ensure_bucket()
        client = server.client()

        def tamper(sha256: str, data: bytes) -> None:
            # With Object Lock this adds a newer version (the locked one cannot be replaced); reads see it.
            client.put_object(bucket, store.object_name(sha256), io.BytesIO(data), len(data))

        def count() -> int:
            return len(object_versions(server, bucket))

        yield Backend(store, tamper, count)

    return backend


IMPLEMENTATIONS: dict[str, Callable[[pytest.FixtureRequest, pathlib.Path], Iterator[Backend]]] = {
    "local": _local,
    # put_many with an fsync per file and directory, as where syncfs(2) is missing.
    "local-fsync": lambda request, tmp_path: _local(request, tmp_path, group_sync=False),
    "s3": _s3(object_lock_days=0),
    "s3-object-lock": _s3(object_lock_days=1),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Backend]:
    yield from IMPLEMENTATIONS[request.param](request, tmp_path)


def _chunks(data: bytes, size: int = 100_000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * 1024 * 1024])
def test_blob_round_trips_at_its_content_address(backend: Backend, size: int) -> None:
    data = os.urandom(size)

    ref = backend.store.put(_chunks(data))

    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size == size
    assert backend.store.exists(ref.sha256)
    assert backend.store.stat(ref.sha256) == size
    assert b"".join(backend.store.open(ref.sha256)) == data


def test_blob_is_streamed_in_chunks(backend: Backend) -> None:
    data = os.urandom(5 * CHUNK + 7)
    ref = backend.store.put(_chunks(data))
    chunks = list(backend.store.open(ref.sha256))
    assert len(chunks) > 1
    assert max(len(c) for c in chunks) <= max(CHUNK, 1)


def test_tampered_blob_fails_with_data_loss(backend: Backend) -> None:
    data = os.urandom(3 * CHUNK)
    ref = backend.store.put(_chunks(data))
    backend.tamper(ref.sha256, data[:-1] + bytes([data[-1] ^ 1]))

    with pytest.raises(DataLoss):
        b"".join(backend.store.open(ref.sha256))


def test_tampered_blob_never_yields_all_its_bytes(backend: Backend) -> None:
    data = os.urandom(3 * CHUNK)
    ref = backend.store.put(_chunks(data))
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    backend.tamper(ref.sha256, tampered)

    received = b""
    with pytest.raises(DataLoss):
        for chunk in backend.store.open(ref.sha256):
            received += chunk
    assert len(received) < len(tampered)


def test_expected_hash_mismatch_stores_nothing(backend: Backend) -> None:
    data = os.urandom(1000)
    wrong = hashlib.sha256(b"something else").hexdigest()

    with pytest.raises(DataLoss, match=wrong):
        backend.store.put(_chunks(data), expected_sha256=wrong)

    assert not backend.store.exists(hashlib.sha256(data).hexdigest())
    assert not backend.store.exists(wrong)
    assert backend.count() == 0


def test_expected_hash_match_is_accepted(backend: Backend) -> None:
    data = os.urandom(1000)
    expected = hashlib.sha256(data).hexdigest()
    assert backend.store.put(_chunks(data), expected_sha256=expected).sha256 == expected


def test_putting_the_same_blob_twice_is_idempotent(backend: Backend) -> None:
    data = os.urandom(1000)
    first = backend.store.put(_chunks(data))
    second = backend.store.put(_chunks(data, 7))
    assert first == second
    assert backend.count() == 1
    assert b"".join(backend.store.open(first.sha256)) == data


def test_failed_upload_stores_nothing(backend: Backend) -> None:
    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        backend.store.put(broken())
    assert backend.count() == 0


def test_missing_blob_is_not_found(backend: Backend) -> None:
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert not backend.store.exists(missing)
    with pytest.raises(NotFound):
        backend.store.stat(missing)
    with pytest.raises(NotFound):
        backend.store.open(missing)


@pytest.mark.parametrize("address", ["", "abc", "../" + "0" * 61, "g" * 64, "0" * 65])
def test_invalid_address_is_an_invalid_argument(backend: Backend, address: str) -> None:
    with pytest.raises(InvalidArgument, match="sha256"):
        backend.store.stat(address)
    with pytest.raises(InvalidArgument, match="sha256"):
        backend.store.open(address)
    with pytest.raises(InvalidArgument, match="sha256"):
        backend.store.exists(address)
    with pytest.raises(InvalidArgument, match="expected_sha256"):
        backend.store.put([b"x"], expected_sha256=address or "nothex")


# --- batches of small blobs (put_many / get_many) ------------------------------------------


def test_put_many_stores_each_blob_or_refuses_it_alone(backend: Backend) -> None:
    blobs = [os.urandom(n) for n in (0, 1, 2048, 8192)]
    wrong = os.urandom(100)
    before = backend.count()

    results = backend.store.put_many([
        *((b, hashlib.sha256(b).hexdigest() if i % 2 else None) for i, b in enumerate(blobs)),
        (wrong, hashlib.sha256(b"something else").hexdigest()),
        (b"x", "not-a-hash"),
        (blobs[2], None),  # twice in one batch
    ])

    refs = results[:4]
    assert refs == [BlobRef(hashlib.sha256(b).hexdigest(), len(b)) for b in blobs]
    assert isinstance(results[4], DataLoss) and isinstance(results[5], InvalidArgument)
    assert results[6] == refs[2]
    assert backend.count() == before + 4
    assert not backend.store.exists(hashlib.sha256(wrong).hexdigest())
    assert backend.store.get_many([r.sha256 for r in refs]) == blobs  # type: ignore[union-attr]
    assert b"".join(backend.store.open(refs[3].sha256)) == blobs[3]  # type: ignore[union-attr]


def test_get_many_refuses_missing_tampered_invalid_and_large_blobs_one_by_one(backend: Backend) -> None:
    kept, tampered = backend.store.put_many([(b"kept", None), (b"tampered", None)])
    large = backend.store.put(_chunks(os.urandom(MAX_BATCH_BLOB_BYTES + 1)))
    backend.tamper(tampered.sha256, b"tamperex")  # type: ignore[union-attr]

    asked = [kept.sha256, tampered.sha256, "0" * 64, "xyz", large.sha256]  # type: ignore[union-attr]
    results = backend.store.get_many(asked)

    assert results[0] == b"kept"
    assert isinstance(results[1], DataLoss)
    assert isinstance(results[2], NotFound)
    assert isinstance(results[3], InvalidArgument)
    assert isinstance(results[4], FailedPrecondition)


def test_put_many_refuses_a_blob_too_large_for_a_batch(backend: Backend) -> None:
    results = backend.store.put_many([(os.urandom(MAX_BATCH_BLOB_BYTES + 1), None), (b"small", None)])
    assert isinstance(results[0], InvalidArgument) and results[0].field == "data"
    assert results[1] == BlobRef(hashlib.sha256(b"small").hexdigest(), 5)
