"""A 2 GiB blob through the real storage gRPC service on MinIO, in bounded memory.

The blob is generated on the fly from a deterministic stream (never held whole),
stored with multipart upload, read back and hashed chunk by chunk. The test
process hosts both the client and the storage service, so its memory covers both:
Python allocations (tracemalloc peak) and resident set growth must stay far below
the blob size.
"""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import random
import tracemalloc
from collections.abc import Iterator

import pytest
from servers_minio import new_bucket_name, storage_service_on_s3

from carechain.dev.backends.minio import MinioServer
from carechain.storage.s3_blobstore import BLOBS_PREFIX
from carechain.storage.v1 import storage_pb2

pytest_plugins = ["servers_minio"]  # one session-scoped MinIO shared by every module

MIB = 1024 * 1024
BLOB_BYTES = 2 * 1024 * MIB
SEND_CHUNK = MIB
MEMORY_LIMIT = 256 * MIB


def deterministic_chunks(total: int, chunk: int, seed: int = 3) -> Iterator[bytes]:
    """Reproducible pseudo-random bytes: one random block, each chunk stamped with its index."""
    block = random.Random(seed).randbytes(chunk)
    for index in range(total // chunk):
        yield index.to_bytes(8, "big") + block[8:]


def _proc_status_kib(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so the peak below is this test's.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


@pytest.mark.timeout(900)
def test_two_gib_blob_is_stored_and_read_back_in_bounded_memory(
    minio_server: MinioServer, tmp_path: pathlib.Path
) -> None:
    bucket = new_bucket_name()
    sent = hashlib.sha256()

    def upload() -> Iterator[storage_pb2.PutBlobRequest]:
        yield storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata())
        for chunk in deterministic_chunks(BLOB_BYTES, SEND_CHUNK):
            sent.update(chunk)
            yield storage_pb2.PutBlobRequest(chunk=chunk)

    with storage_service_on_s3(minio_server, bucket, tmp_path, chunk_bytes=MIB) as storage:
        _reset_peak_rss()
        rss_before = _proc_status_kib("VmRSS") * 1024
        tracemalloc.start()
        try:
            ref = storage.stub.PutBlob(upload(), metadata=storage.records_metadata(), timeout=600)
            received = hashlib.sha256()
            size = 0
            request = storage_pb2.GetBlobRequest(sha256=ref.sha256)
            for message in storage.stub.GetBlob(request, metadata=storage.records_metadata(), timeout=600):
                received.update(message.data)
                size += len(message.data)
            _, python_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            # Free the disk: the session's MinIO outlives this test.
            minio_server.client().remove_object(bucket, BLOBS_PREFIX + sent.hexdigest())
        rss_growth = _proc_status_kib("VmHWM") * 1024 - rss_before

    assert ref.size == BLOB_BYTES == size
    assert ref.sha256 == sent.hexdigest() == received.hexdigest()
    assert python_peak < MEMORY_LIMIT, f"Python allocations peaked at {python_peak / MIB:.0f} MiB"
    assert rss_growth < MEMORY_LIMIT, f"resident memory grew by {rss_growth / MIB:.0f} MiB"
