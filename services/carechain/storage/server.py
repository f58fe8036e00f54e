"""The storage service: ciphertext blobs, content-addressed, streamed in chunks.

Only the records service may call it; everything it stores is already
encrypted, and blob addresses are hashes of ciphertext, so no PHI appears in
object names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import grpc

from carechain.core.errors import InvalidArgument
from carechain.core.layout import TrustBundle, audience
from carechain.runtime.access import ANY, AccessTable, Allow
from carechain.runtime.auth import Authenticator
from carechain.runtime.batch_items import item_error
from carechain.runtime.config import StorageSettings
from carechain.runtime.logs import configure_logging
from carechain.runtime.server import Register, register_servicer, run_service
from carechain.storage.blobstore import BlobStore, check_sha256
from carechain.storage.file_blobstore import LocalBlobStore
from carechain.storage.s3_blobstore import S3BlobStore
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

BLOBS_DIR = "blobs"
log = logging.getLogger("carechain.storage")
SERVICE = storage_pb2.DESCRIPTOR.services_by_name["StorageService"]


def _records_only(note: str) -> Allow:
    return Allow.of(service=ANY, services=["records"], note=note)


# Who may call what (docs/security.md): ciphertext only ever moves between storage and records.
ACCESS = AccessTable(SERVICE, {
    "PutBlob": _records_only("ciphertext in"),
    "GetBlob": _records_only("ciphertext out"),
    "PutBlobs": _records_only("ciphertext in: small blobs, many per call"),
    "GetBlobs": _records_only("ciphertext out: small blobs, many per call"),
    "StatBlob": _records_only(""),
    "ListBlobs": _records_only("addresses and sizes, for its reconciler"),
    "DeleteBlob": _records_only("its reconciler: blobs no ledger record references"),
    "PruneIncoming": _records_only("its reconciler: uploads a crash left behind"),
})
MAX_PAGE_SIZE = 1000
# PutBlobs / GetBlobs: items per call, and bytes per PutBlobs call (well below the 64 MiB message limit).
MAX_BATCH_ITEMS = 64
MAX_BATCH_BYTES = 16 * 1024 * 1024


def _required_time(value: int, field: str) -> int:
    if value <= 0:
        raise InvalidArgument(field, "is required (Unix time in ms)")
    return value


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    """Implements carechain.storage.v1.StorageService over a BlobStore."""

    def __init__(self, store: BlobStore, trust: TrustBundle) -> None:
        self._store = store
        self._auth = Authenticator(trust, audience("storage"))

    def PutBlob(
        self, request_iterator: Iterator[storage_pb2.PutBlobRequest], context: grpc.ServicerContext
    ) -> storage_pb2.BlobRef:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidArgument("metadata", "the first message of PutBlob must carry the metadata")
        expected = first.metadata.expected_sha256
        if expected:
            check_sha256(expected, "metadata.expected_sha256")
        ref = self._store.put(_chunks(request_iterator), expected or None)
        return storage_pb2.BlobRef(sha256=ref.sha256, size=ref.size)

    def PutBlobs(
        self, request: storage_pb2.PutBlobsRequest, context: grpc.ServicerContext
    ) -> storage_pb2.PutBlobsResponse:
        _check_batch_size(len(request.items))
        if sum(len(item.data) for item in request.items) > MAX_BATCH_BYTES:
            raise InvalidArgument("items", f"must hold at most {MAX_BATCH_BYTES} bytes in all; stream large blobs")
        stored = self._store.put_many([(item.data, item.expected_sha256 or None) for item in request.items])
        results = []
        for outcome in stored:
            if isinstance(outcome, BaseException):
                results.append(storage_pb2.PutBlobResult(error=_item_error(outcome)))
            else:
                results.append(storage_pb2.PutBlobResult(ref=storage_pb2.BlobRef(sha256=outcome.sha256,
                                                                                 size=outcome.size)))
        return storage_pb2.PutBlobsResponse(results=results)

    def GetBlobs(
        self, request: storage_pb2.GetBlobsRequest, context: grpc.ServicerContext
    ) -> storage_pb2.GetBlobsResponse:
        _check_batch_size(len(request.sha256))
        results = []
        for outcome in self._store.get_many(list(request.sha256)):
            if isinstance(outcome, BaseException):
                results.append(storage_pb2.GetBlobResult(error=_item_error(outcome)))
            else:
                results.append(storage_pb2.GetBlobResult(data=outcome))
        return storage_pb2.GetBlobsResponse(results=results)

    def GetBlob(
        self, request: storage_pb2.GetBlobRequest, context: grpc.ServicerContext
    ) -> Iterator[storage_pb2.BlobChunk]:
        for data in self._store.open(request.sha256):
            yield storage_pb2.BlobChunk(data=data)

    def StatBlob(self, request: storage_pb2.StatBlobRequest, context: grpc.ServicerContext) -> storage_pb2.BlobRef:
        sha256 = check_sha256(request.sha256)
        return storage_pb2.BlobRef(sha256=sha256, size=self._store.stat(sha256))

    def ListBlobs(
        self, request: storage_pb2.ListBlobsRequest, context: grpc.ServicerContext
    ) -> storage_pb2.ListBlobsResponse:
        before = _required_time(request.written_before_ms, "written_before_ms")
        if request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be at most {MAX_PAGE_SIZE}")
        limit = request.page_size or MAX_PAGE_SIZE
        blobs = self._store.list_blobs(before, request.page_token, limit)
        return storage_pb2.ListBlobsResponse(
            blobs=[storage_pb2.StoredBlob(sha256=b.sha256, size=b.size, written_ms=b.written_ms) for b in blobs],
            next_page_token=blobs[-1].sha256 if len(blobs) == limit else "",
        )

    def DeleteBlob(
        self, request: storage_pb2.DeleteBlobRequest, context: grpc.ServicerContext
    ) -> storage_pb2.DeleteBlobResponse:
        sha256 = check_sha256(request.sha256)
        size = self._store.delete(sha256, _required_time(request.written_before_ms, "written_before_ms"))
        log.info("orphan blob deleted", extra={"sha256": sha256})
        return storage_pb2.DeleteBlobResponse(size=size)

    def PruneIncoming(
        self, request: storage_pb2.PruneIncomingRequest, context: grpc.ServicerContext
    ) -> storage_pb2.PruneIncomingResponse:
        removed = self._store.prune_incoming(_required_time(request.created_before_ms, "created_before_ms"))
        return storage_pb2.PruneIncomingResponse(removed=removed)


def _check_batch_size(count: int) -> None:
    if not 1 <= count <= MAX_BATCH_ITEMS:
        raise InvalidArgument("items", f"must hold 1 to {MAX_BATCH_ITEMS} blobs")


def _item_error(error: BaseException) -> storage_pb2.BatchItemError:
    code, message = item_error(error)
    return storage_pb2.BatchItemError(code=code, message=message)


def _chunks(requests: Iterator[storage_pb2.PutBlobRequest]) -> Iterator[bytes]:
    """The chunk bytes of the rest of a PutBlob stream."""
    for request in requests:
        part = request.WhichOneof("part")
        if part == "metadata":
            raise InvalidArgument("metadata", "sent twice; only the first message carries metadata")
        if part is None:
            raise InvalidArgument("part", "a PutBlob message must carry metadata or a chunk")
        yield request.chunk


def blob_store(settings: StorageSettings) -> BlobStore:
    """The BlobStore chosen by settings.blob_backend: a directory under data_dir, or an S3 bucket."""
    if settings.blob_backend == "s3":
        return S3BlobStore.from_settings(settings)
    return LocalBlobStore(settings.data_dir / BLOBS_DIR, settings.chunk_bytes)


def build(settings: StorageSettings) -> tuple[Register, list[Callable[[], None]]]:
    """The storage servicer on the configured blob store (local directory or S3)."""
    trust = TrustBundle.load(settings.trust_dir)
    servicer = StorageServicer(blob_store(settings), trust)
    add = storage_pb2_grpc.add_StorageServiceServicer_to_server
    register = register_servicer(add, servicer, ACCESS, servicer._auth)
    return register, []


def main() -> None:
    """Run the storage service configured from CARECHAIN_* environment variables."""
    settings = StorageSettings()
    configure_logging("storage", settings.log_level)  # what build logs (e.g. a resume) is kept
    register, closers = build(settings)
    run_service("storage", settings, register, closers)
