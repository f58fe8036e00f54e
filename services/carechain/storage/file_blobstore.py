"""The embedded blob store: blobs as files in a directory, named by their SHA-256.

Fills :class:`carechain.storage.blobstore.BlobStore` with the same semantics as
:class:`carechain.storage.s3_blobstore.S3BlobStore`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from carechain.core.crypto import same
from carechain.core.errors import CareChainError, DataLoss, FailedPrecondition, InvalidArgument, NotFound
from carechain.storage.blobstore import (
    DEFAULT_CHUNK_BYTES,
    SHA256_HEX,
    BlobRef,
    StoredBlobInfo,
    check_sha256,
    checked_blob,
    too_large_for_batch,
    verified_blob,
    verified_chunks,
)


class LocalBlobStore:
    """Blobs as files ``<directory>/<first two hex chars>/<sha256>``.

    A blob is written to a temporary file in the same directory tree while it is
    hashed, fsynced, then renamed into place, so a reader never sees a partial blob.

    put_many writes a batch's temporary files, makes them durable with one ``syncfs``
    (Linux: one call for every file of the batch, instead of an fsync each), renames
    them into place and makes the renames durable with a second ``syncfs`` (instead of
    a directory fsync per shard). Where syncfs is missing (or group_sync is False) it
    falls back to an fsync per file and per directory; the guarantee is the same:
    every blob and its name are durable before put_many returns.
    """

    def __init__(self, directory: pathlib.Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 group_sync: bool = True) -> None:
        """group_sync=False: an fsync per file and per directory in put_many, as where syncfs is missing."""
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        self.directory = directory
        self.chunk_bytes = chunk_bytes
        self._syncfs = _syncfs if group_sync else None
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

    def put_many(self, blobs: list[tuple[bytes, str | None]]) -> list[BlobRef | CareChainError]:
        results: list[BlobRef | CareChainError] = []
        written: list[tuple[int, pathlib.Path, pathlib.Path]] = []  # (result index, temp file, final path)
        try:
            for data, expected in blobs:
                try:
                    sha256 = checked_blob(data, expected)
                except (InvalidArgument, DataLoss) as exc:
                    results.append(exc)
                    continue
                fd, temp_name = tempfile.mkstemp(dir=self._incoming, prefix="blob-")
                temp = pathlib.Path(temp_name)
                written.append((len(results), temp, self.path(sha256)))
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                results.append(BlobRef(sha256, len(data)))
            if not written:
                return results
            # The bytes first, then the names: a renamed blob is never one whose bytes are not yet durable.
            self._sync([temp for _, temp, _ in written], files=True)
            for _, temp, final in written:
                final.parent.mkdir(exist_ok=True)
                os.replace(temp, final)
            self._sync(sorted({final.parent for _, _, final in written}), files=False)
        except BaseException:
            for _, temp, _ in written:
                temp.unlink(missing_ok=True)
            raise
        return results

    def get_many(self, sha256s: list[str]) -> list[bytes | CareChainError]:
        results: list[bytes | CareChainError] = []
        for sha256 in sha256s:
            try:
                path = self.path(sha256)
                try:
                    with path.open("rb") as stream:
                        refusal = too_large_for_batch(path.name, os.fstat(stream.fileno()).st_size)
                        if refusal is not None:
                            raise refusal
                        results.append(verified_blob(stream.read(), path.name))
                except FileNotFoundError as exc:
                    raise NotFound(f"blob {sha256} not found") from exc
            except (InvalidArgument, NotFound, FailedPrecondition, DataLoss) as exc:
                results.append(exc)
        return results

    def _sync(self, paths: list[pathlib.Path], *, files: bool) -> None:
        """Make paths (files, or directories after renames) durable: one syncfs, else an fsync each."""
        if self._syncfs is not None:
            fd = os.open(self._incoming, os.O_RDONLY)
            try:
                if self._syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
        for path in paths:
            if files:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                _fsync_directory(path)

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


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux syncfs(2) (flush one file system: every dirty file and directory on it), or None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int
    return syncfs


_syncfs = _load_syncfs()
