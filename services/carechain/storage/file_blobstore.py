"""The embedded blob store: blobs as files in a directory, named by their SHA-256.

Fills :class:`carechain.storage.blobstore.BlobStore` with the same semantics as
:class:`carechain.storage.s3_blobstore.S3BlobStore`.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from carechain.core.crypto import same
from carechain.core.errors import DataLoss, FailedPrecondition, NotFound
from carechain.storage.blobstore import (
    DEFAULT_CHUNK_BYTES,
    SHA256_HEX,
    BlobRef,
    StoredBlobInfo,
    check_sha256,
    verified_chunks,
)


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
        with stream:
            yield from verified_chunks(stream.read, sha256, self.chunk_bytes)

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
                if not SHA256_HEX.match(path.name) or path.name <= after:
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
