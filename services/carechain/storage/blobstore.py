"""Content-addressed blob storage: a blob's address is the SHA-256 of its bytes.

:class:`BlobStore` is the seam: :class:`carechain.storage.file_blobstore.LocalBlobStore`
(a directory, embedded) and :class:`carechain.storage.s3_blobstore.S3BlobStore`
(MinIO or any S3, production) fill it. Both stream in bounded memory, refuse to
store bytes that do not hash to the expected address, and refuse to return
bytes that no longer hash to their address (tests/contract/test_blobstore_contract.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from carechain.core.crypto import same
from carechain.core.errors import CareChainError, DataLoss, FailedPrecondition, InvalidArgument

DEFAULT_CHUNK_BYTES = 256 * 1024
# The batch calls (put_many / get_many, PutBlobs / GetBlobs) are for small blobs; larger ones stream.
MAX_BATCH_BLOB_BYTES = 1024 * 1024
SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclasses.dataclass(frozen=True)
class BlobRef:
    """A stored blob's address and size."""

    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class StoredBlobInfo:
    """A stored blob as the reconciler lists it."""

    sha256: str
    size: int
    written_ms: int


class BlobStore(Protocol):
    """Content-addressed, streamed blob storage."""

    def put(self, chunks: Iterable[bytes], expected_sha256: str | None = None) -> BlobRef:
        """Store the concatenated chunks; DataLoss (and nothing stored) if they do not hash to expected_sha256.

        Storing a blob that exists already is a no-op that returns the same address.
        """
        ...

    def open(self, sha256: str) -> Iterator[bytes]:
        """Stream a blob's bytes; NotFound now if missing, DataLoss at the end if they no longer match the address."""
        ...

    def put_many(self, blobs: list[tuple[bytes, str | None]]) -> list[BlobRef | CareChainError]:
        """put for each (bytes, expected_sha256), durable together before returning: a BlobRef or that
        item's error (InvalidArgument, DataLoss), in order. For small blobs (at most MAX_BATCH_BLOB_BYTES)."""
        ...

    def get_many(self, sha256s: list[str]) -> list[bytes | CareChainError]:
        """Each blob's bytes, checked against its address, or that item's error (InvalidArgument, NotFound,
        DataLoss; FailedPrecondition if larger than MAX_BATCH_BLOB_BYTES: stream it with open)."""
        ...

    def stat(self, sha256: str) -> int:
        """Size of a stored blob; NotFound if missing."""
        ...

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored."""
        ...

    def list_blobs(self, written_before_ms: int, after: str, limit: int) -> list[StoredBlobInfo]:
        """Up to limit blobs last written before written_before_ms with addresses after ``after``, in order."""
        ...

    def delete(self, sha256: str, written_before_ms: int) -> int:
        """Delete a blob last written before written_before_ms; its size. NotFound / FailedPrecondition otherwise."""
        ...

    def prune_incoming(self, created_before_ms: int) -> int:
        """Remove temporary upload files created before created_before_ms; how many."""
        ...


def check_sha256(sha256: str, field: str = "sha256") -> str:
    """A valid content address in canonical (lower-case) form; InvalidArgument otherwise."""
    if not SHA256_HEX.match(sha256):
        raise InvalidArgument(field, "must be a hex SHA-256 (64 hex characters)")
    return sha256.lower()


def verified_chunks(read: Callable[[int], bytes], sha256: str, chunk_bytes: int) -> Iterator[bytes]:
    """The bytes read(chunk_bytes) returns until empty, checked against their address sha256.

    The last chunk is held back until the hash is checked, so a reader never gets a
    complete-looking blob whose bytes changed: DataLoss instead (every BlobStore reads this way).
    """
    digest = hashlib.sha256()
    pending = read(chunk_bytes)
    while pending:
        digest.update(pending)
        following = read(chunk_bytes)
        if not following:
            break
        yield pending
        pending = following
    if not same(digest.hexdigest(), sha256):
        raise DataLoss(f"stored blob {sha256} no longer hashes to its address (hashes to {digest.hexdigest()})")
    if pending:
        yield pending


def checked_blob(data: bytes, expected_sha256: str | None) -> str:
    """The address of data; InvalidArgument if it is too large for a batch, DataLoss if it does not hash to
    expected_sha256. The per-item checks every put_many shares (put's refusals), before anything is written.
    """
    if expected_sha256:
        check_sha256(expected_sha256, "expected_sha256")
    if len(data) > MAX_BATCH_BLOB_BYTES:
        raise InvalidArgument("data", f"at most {MAX_BATCH_BLOB_BYTES} bytes per blob in a batch; stream it")
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 and not same(sha256, expected_sha256.lower()):
        raise DataLoss(f"received bytes hash to {sha256}, expected {expected_sha256.lower()}; nothing stored")
    return sha256


def verified_blob(data: bytes, sha256: str) -> bytes:
    """data if it still hashes to its address sha256; DataLoss otherwise (get_many's check)."""
    actual = hashlib.sha256(data).hexdigest()
    if not same(actual, sha256):
        raise DataLoss(f"stored blob {sha256} no longer hashes to its address (hashes to {actual})")
    return data


def too_large_for_batch(sha256: str, size: int) -> FailedPrecondition | None:
    """The get_many refusal of a blob too large to return in a batch, or None."""
    if size > MAX_BATCH_BLOB_BYTES:
        return FailedPrecondition(f"blob {sha256} is {size} bytes, more than a batch returns; use GetBlob")
    return None
