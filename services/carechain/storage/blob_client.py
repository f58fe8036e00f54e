"""Client side of storage: small blobs from concurrent callers share one PutBlobs / GetBlobs call.

Records are a few KiB of ciphertext. A :class:`BlobClient` sends a blob of at most
:data:`SMALL_BLOB_BYTES` through a :class:`carechain.runtime.batching.MicroBatcher` (concurrent callers'
blobs go in one unary batch call, stored with one sync round, no added wait) and streams larger ones
with ``PutBlob`` / ``GetBlob`` as before. Each caller gets what the single call returns, or an
:class:`carechain.runtime.batch_items.ItemRpcError` with the status the single call would have ended with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from carechain.runtime.batch_items import ItemRpcError, item_rpc_error
from carechain.runtime.batching import MicroBatcher
from carechain.storage.v1 import storage_pb2

# Blobs up to this size go in batches; larger ones stream (storage accepts up to 1 MiB per batched blob).
SMALL_BLOB_BYTES = 64 * 1024
# Blobs per batch call (storage accepts 64, 16 MiB in all: 64 small blobs are at most 4 MiB).
MAX_BATCH = 64
UPLOAD_CHUNK_BYTES = 256 * 1024


class BlobClient:
    """Ciphertext blobs in storage; stub() gives the StorageService stub."""

    def __init__(self, stub: Callable[[], Any], max_batch: int = MAX_BATCH) -> None:
        self._stub = stub
        self._puts: MicroBatcher[storage_pb2.PutBlobsItem, storage_pb2.BlobRef] = MicroBatcher(
            "storage.put_blobs", self._flush_puts, max_batch)
        self._gets: MicroBatcher[str, bytes] = MicroBatcher("storage.get_blobs", self._flush_gets, max_batch)

    def put(self, data: bytes, expected_sha256: str = "") -> storage_pb2.BlobRef:
        """Store data (durable on return); DATA_LOSS if it does not hash to expected_sha256 (as PutBlob)."""
        if len(data) > SMALL_BLOB_BYTES:
            return self._stub().PutBlob(_upload(data, expected_sha256))
        return self._puts.submit(storage_pb2.PutBlobsItem(data=data, expected_sha256=expected_sha256))

    def get(self, sha256: str, size: int) -> bytes:
        """The blob at sha256, checked against it (as GetBlob); size (e.g. from the ledger) picks the path."""
        if size <= SMALL_BLOB_BYTES:
            try:
                return self._gets.submit(sha256)
            except ItemRpcError as exc:
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:  # larger than size said: stream it
                    raise
        return b"".join(chunk.data for chunk in self._stub().GetBlob(storage_pb2.GetBlobRequest(sha256=sha256)))

    def close(self) -> None:
        """Accept no more requests."""
        self._puts.close()
        self._gets.close()

    def _flush_puts(self, items: list[storage_pb2.PutBlobsItem]) -> Sequence[object]:
        results = self._stub().PutBlobs(storage_pb2.PutBlobsRequest(items=items)).results
        return _outcomes(results, len(items), "ref")

    def _flush_gets(self, sha256s: list[str]) -> Sequence[object]:
        results = self._stub().GetBlobs(storage_pb2.GetBlobsRequest(sha256=sha256s)).results
        return _outcomes(results, len(sha256s), "data")


def _outcomes(results: Any, expected: int, field: str) -> list[object]:
    """Each result's value, or its error as the exception the single call would have raised."""
    if len(results) != expected:
        raise RuntimeError(f"storage answered {len(results)} of {expected} batch items")
    return [getattr(r, field) if r.WhichOneof("outcome") == field else item_rpc_error(r.error.code, r.error.message)
            for r in results]


def _upload(data: bytes, expected_sha256: str) -> Iterator[storage_pb2.PutBlobRequest]:
    """A PutBlob request stream: metadata, then chunks."""
    yield storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata(expected_sha256=expected_sha256))
    for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
        yield storage_pb2.PutBlobRequest(chunk=data[start : start + UPLOAD_CHUNK_BYTES])
