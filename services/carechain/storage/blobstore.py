"""Content-addressed blob storage: a blob's address is the SHA-256 of its bytes.

:class:`BlobStore` is the seam: :class:`LocalBlobStore` (a directory) fills it
today, an S3/MinIO client fills it in production. Both stream in bounded
memory, refuse to store bytes that do not hash to the expected address, and
refuse to return bytes that no longer hash to their address.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

from carechain.core.crypto import same
from carechain.core.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound

DEFAULT_CHUNK_BYTES = 256 * 1024
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


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
    if not _SHA256_HEX.match(sha256):
        raise InvalidArgument(field, "must be a hex SHA-256 (64 hex characters)")
    return sha256.lower()


class LocalBlobStore:
    """Blobs as files ``<directory>/<first two hex chars>/<sha256>``.

    A blob is written to a temporary file in the same directory tree while it is
    hashed, fsynced, then renamed into place, so a reader never sees a partial blob.
    """

    def __init__(self, directory: pathlib.Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        self.directory = directory
        self.chunk_bytes = chunk_bytes
        self._incoming = directory / "incoming"
        self._incoming.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> pathlib.Path:
        """Where the blob with this address lives (whether or not it exists)."""
        sha256 = check_sha256(sha256)
        return self.directory / sha256[:2] / sha256

    def put(self, chunks: Iterable[bytes], expected_sha256: str | None = None) -> BlobRef:
        expected = check_sha256(expected_sha256, "expected_sha256") if expected_sha256 else None
        fd, temp_name = tempfile.mkstemp(dir=self._incoming, prefix="blob-")
        temp = pathlib.Path(temp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            if expected is not None and not same(sha256, expected):
                raise DataLoss(f"received bytes hash to {sha256}, expected {expected}; nothing stored")
            final = self.path(sha256)
            final.parent.mkdir(exist_ok=True)
            # Replacing an existing blob with verified identical bytes is idempotent and repairs a damaged copy.
            os.replace(temp, final)
            _fsync_directory(final.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return BlobRef(sha256, size)

    def open(self, sha256: str) -> Iterator[bytes]:
        path = self.path(sha256)
        try:
            stream = path.open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"blob {sha256} not found") from exc
        return self._verified_chunks(stream, path.name)

    def _verified_chunks(self, stream: BinaryIO, sha256: str) -> Iterator[bytes]:
        # The last chunk is held back until the hash is checked, so a reader never gets
        # a complete-looking blob whose bytes changed.
        digest = hashlib.sha256()
        with stream:
            pending = stream.read(self.chunk_bytes)
            while pending:
                digest.update(pending)
                following = stream.read(self.chunk_bytes)
                if not following:
                    break
                yield pending
                pending = following
            if not same(digest.hexdigest(), sha256):
                raise DataLoss(f"stored blob {sha256} no longer hashes to its address (hashes to {digest.hexdigest()})")
            if pending:
                yield pending

    def stat(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(f"blob {sha256} not found") from exc

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def list_blobs(self, written_before_ms: int, after: str, limit: int) -> list[StoredBlobInfo]:
        after = check_sha256(after, "page_token") if after else ""
        found: list[StoredBlobInfo] = []
        for shard in sorted(d for d in self.directory.iterdir() if len(d.name) == 2 and d.is_dir()):
            if after and shard.name < after[:2]:
                continue
            for path in sorted(shard.iterdir()):
                if not _SHA256_HEX.match(path.name) or path.name <= after:
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # deleted meanwhile
                    continue
                if stat.st_mtime_ns // 1_000_000 < written_before_ms:
                    found.append(StoredBlobInfo(path.name, stat.st_size, stat.st_mtime_ns // 1_000_000))
                    if len(found) >= limit:
                        return found
        return found

    def delete(self, sha256: str, written_before_ms: int) -> int:
        path = self.path(sha256)
        try:
            stat = path.stat()
        except FileNotFoundError as exc:
            raise NotFound(f"blob {sha256} not found") from exc
        # A blob rewritten since it was listed (the same bytes stored again) is in use: keep it.
        if stat.st_mtime_ns // 1_000_000 >= written_before_ms:
            raise FailedPrecondition(f"blob {sha256} was written after the given time")
        path.unlink(missing_ok=True)
        _fsync_directory(path.parent)
        return stat.st_size

    def prune_incoming(self, created_before_ms: int) -> int:
        removed = 0
        for path in self._incoming.iterdir():
            try:
                if path.stat().st_mtime_ns // 1_000_000 < created_before_ms:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # finished (renamed) or removed meanwhile
                continue
        return removed


def _fsync_directory(directory: pathlib.Path) -> None:
    """Make a rename durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
