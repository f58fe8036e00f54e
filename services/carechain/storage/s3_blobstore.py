"""Blobs in an S3 bucket (MinIO, AWS S3 or any S3-compatible store).

:class:`S3BlobStore` fills the :class:`~carechain.storage.blobstore.BlobStore`
seam with the same semantics as :class:`~carechain.storage.file_blobstore.LocalBlobStore`:
objects are named by the SHA-256 of their bytes (ciphertext, so no PHI in
names), streamed both ways in bounded memory, and never exposed under an
address their bytes do not hash to.

Writing a blob (the hash is only known once every byte has gone by):

1. the bytes are streamed as a multipart upload (parts of ``part_size``) to a
   temporary object ``incoming/<random id>`` while they are hashed;
2. if the hash differs from the expected one, the temporary object is deleted
   and DataLoss raised: nothing ever appeared under an address;
3. otherwise the temporary object is server-side copied to ``blobs/<sha256>``
   (an S3 copy is atomic: the object appears whole or not at all; with Object
   Lock the copy carries the COMPLIANCE retention), then deleted.

The copy costs one extra server-side write; in exchange no reader can ever see
an object under a content address before its hash was verified, on any S3.
Temporary objects left behind by a crash are expired by a lifecycle rule set
on buckets this store creates.

Reading verifies the hash while streaming and holds back the last chunk until it
matches, so a changed object yields DataLoss, never a complete wrong blob.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import io
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import COMPLIANCE, ENABLED, CopySource, Filter
from minio.error import MinioException, S3Error
from minio.lifecycleconfig import (
    AbortIncompleteMultipartUpload,
    Expiration,
    LifecycleConfig,
    NoncurrentVersionExpiration,
    Rule,
)
from minio.retention import Retention
from urllib3.response import BaseHTTPResponse

from carechain.core.crypto import same
from carechain.core.errors import CareChainError, DataLoss, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from carechain.runtime.config import StorageSettings
from carechain.runtime.metrics import backend_call, count_backend_error
from carechain.storage.blobstore import (
    DEFAULT_CHUNK_BYTES,
    BlobRef,
    StoredBlobInfo,
    check_sha256,
    checked_blob,
    too_large_for_batch,
    verified_blob,
    verified_chunks,
)

BACKEND = "s3"
BLOBS_PREFIX = "blobs/"
INCOMING_PREFIX = "incoming/"
DEFAULT_PART_BYTES = 16 * 1024 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest multipart part (except the last)
PARALLEL_REQUESTS = 16  # S3 requests a put_many / get_many has in flight at once
# A refused connection fails at once; an unreachable host after CONNECT_TIMEOUT per attempt.
CONNECT_TIMEOUT_SECONDS = 3.0
# Long enough for a server-side copy of a multi-GiB object, short enough that a hung server is noticed.
READ_TIMEOUT_SECONDS = 60.0
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchVersion", "ResourceNotFound"}
_BUCKET_EXISTS_CODES = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
# Temporary objects older than this are garbage from interrupted uploads.
INCOMING_EXPIRY_DAYS = 1

T = TypeVar("T")


class _TracedPoolManager(urllib3.PoolManager):
    """Each S3 request is a client span "s3 <METHOD>" (a GET's span ends when the body starts streaming)."""

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> BaseHTTPResponse:
        with backend_call(BACKEND, method.upper()):
            return super().urlopen(method, url, redirect=redirect, **kw)


def s3_http_client(ca_cert: str | None = None) -> urllib3.PoolManager:
    """A connection pool that fails fast when S3 is down (few quick retries, short connect timeout)."""
    # Retry-After is not honoured: a server that is starting answers 503 with a long Retry-After, and
    # a caller is better served by UNAVAILABLE now than by a call that hangs for a minute.
    retries = urllib3.Retry(
        total=2, connect=2, read=0, status=2, backoff_factor=0.1, status_forcelist=[500, 502, 503, 504],
        raise_on_status=False, respect_retry_after_header=False,
    )
    return _TracedPoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS),
        retries=retries,
        maxsize=32,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_cert,
    )


def s3_client(settings: StorageSettings) -> Minio:
    """A client for the S3 endpoint in the settings."""
    ca_cert = str(settings.s3_ca_cert) if settings.s3_ca_cert else None
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key.get_secret_value() or None,
        secret_key=settings.s3_secret_key.get_secret_value() or None,
        secure=settings.s3_secure,
        region=settings.s3_region or None,
        http_client=s3_http_client(ca_cert),
    )


def _unavailable(exc: BaseException) -> Unavailable:
    """Unavailable("s3", ...) for a transport failure or an S3 error we do not handle; names no object."""
    count_backend_error(BACKEND)
    if isinstance(exc, S3Error):
        return Unavailable(BACKEND, f"{exc.code} ({exc.message})")
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason  # e.g. NewConnectionError: the server is down or unreachable
    if isinstance(exc, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError):
        return Unavailable(BACKEND, "cannot connect to the S3 endpoint")
    return Unavailable(BACKEND, type(exc).__name__)


def _ms(when: datetime.datetime) -> int:
    """A timestamp as Unix time in milliseconds."""
    return int(when.timestamp() * 1000)


def _s3_call(call: Callable[[], T]) -> T:
    """Run one S3 request; transport and server failures become Unavailable("s3")."""
    try:
        return call()
    except CareChainError:
        raise
    except (S3Error, MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise _unavailable(exc) from exc


class _HashingReader:
    """A file-like view of a chunk iterator that hashes and counts what is read.

    ``read(n)`` returns exactly n bytes until the end, so the S3 client reads a
    whole part in one call (it would otherwise concatenate many small pieces).
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""
        self.digest = hashlib.sha256()
        self.size = 0
        self.failure: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        pieces = [self._pending] if self._pending else []
        have = len(self._pending)
        self._pending = b""
        while size < 0 or have < size:
            try:
                chunk = next(self._chunks, None)
            except BaseException as exc:
                # The sender failed (not S3): remembered so put() re-raises it as it is.
                self.failure = exc
                raise
            if chunk is None:
                break
            if chunk:
                pieces.append(bytes(chunk))
                have += len(chunk)
        data = b"".join(pieces)
        del pieces
        if 0 <= size < len(data):
            data, self._pending = data[:size], data[size:]
        self.digest.update(data)
        self.size += len(data)
        return data


class S3BlobStore:
    """Content-addressed blobs in one S3 bucket (see the module docstring for the write protocol).

    The bucket is created on first use if missing (with Object Lock when
    ``object_lock_days`` > 0); until S3 is reachable every call fails with
    Unavailable("s3"), and works once it is back.
    """

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        part_bytes: int = DEFAULT_PART_BYTES,
        object_lock_days: int = 0,
        region: str | None = None,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES} (S3 minimum part size)")
        if object_lock_days < 0:
            raise ValueError("object_lock_days must not be negative")
        self.client = client
        self.bucket = bucket
        self.chunk_bytes = chunk_bytes
        self.part_bytes = part_bytes
        self.object_lock_days = object_lock_days
        self._region = region
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> S3BlobStore:
        """The store configured by the storage service's s3_* settings."""
        return cls(
            s3_client(settings),
            settings.s3_bucket,
            chunk_bytes=settings.chunk_bytes,
            part_bytes=settings.s3_part_size,
            object_lock_days=settings.s3_object_lock_days,
            region=settings.s3_region or None,
        )

    @staticmethod
    def object_name(sha256: str) -> str:
        """The object name of a blob address (validated)."""
        return BLOBS_PREFIX + check_sha256(sha256)

    # -- bucket ---------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if missing (once per store); FailedPrecondition if Object Lock is wanted but off."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            if not _s3_call(lambda: self.client.bucket_exists(self.bucket)):
                self._create_bucket()
            elif self.object_lock_days > 0:
                self._require_object_lock()
            self._bucket_ready = True

    def _create_bucket(self) -> None:
        locked = self.object_lock_days > 0
        try:
            _s3_call(lambda: self.client.make_bucket(self.bucket, location=self._region, object_lock=locked))
        except Unavailable as exc:
            # Another storage replica may have created it at the same moment.
            if not isinstance(exc.__cause__, S3Error) or exc.__cause__.code not in _BUCKET_EXISTS_CODES:
                raise
            if locked:
                self._require_object_lock()
            return
        # Uploads interrupted by a crash leave temporary objects and parts; let S3 expire them.
        expire_incoming = Rule(
            ENABLED,
            rule_filter=Filter(prefix=INCOMING_PREFIX),
            rule_id="carechain-expire-incoming",
            expiration=Expiration(days=INCOMING_EXPIRY_DAYS),
            noncurrent_version_expiration=NoncurrentVersionExpiration(noncurrent_days=INCOMING_EXPIRY_DAYS),
            abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(INCOMING_EXPIRY_DAYS),
        )
        _s3_call(lambda: self.client.set_bucket_lifecycle(self.bucket, LifecycleConfig([expire_incoming])))

    def _require_object_lock(self) -> None:
        try:
            self.client.get_object_lock_config(self.bucket)
        except S3Error as exc:
            if exc.code == "ObjectLockConfigurationNotFoundError":
                raise FailedPrecondition(
                    f"bucket {self.bucket} exists without Object Lock but s3_object_lock_days is set; "
                    "Object Lock can only be enabled when a bucket is created"
                ) from exc
            raise _unavailable(exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _unavailable(exc) from exc

    # -- BlobStore ------------------------------------------------------------------------------

    def put(self, chunks: Iterable[bytes], expected_sha256: str | None = None) -> BlobRef:
        expected = check_sha256(expected_sha256, "expected_sha256") if expected_sha256 else None
        self.ensure_bucket()
        reader = _HashingReader(chunks)
        temp = INCOMING_PREFIX + uuid.uuid4().hex
        # One part uploaded at a time: memory stays at about two parts whatever the blob size.
        try:
            written = self.client.put_object(
                self.bucket, temp, reader, length=-1, part_size=self.part_bytes, num_parallel_uploads=1,
            )
        except BaseException as exc:
            # The client aborted the multipart upload: no object, no parts. Report why it stopped.
            if reader.failure is not None:
                raise reader.failure from None
            if isinstance(exc, (S3Error, MinioException, urllib3.exceptions.HTTPError, OSError)):
                raise _unavailable(exc) from exc
            raise
        try:
            sha256 = reader.digest.hexdigest()
            if expected is not None and not same(sha256, expected):
                raise DataLoss(f"received bytes hash to {sha256}, expected {expected}; nothing stored")
            final = self.object_name(sha256)
            # Identical bytes stored already: nothing to do (and with Object Lock, no needless version).
            if not self._object_exists(final):
                source = CopySource(self.bucket, temp, version_id=written.version_id, match_etag=written.etag)
                _s3_call(lambda: self.client.copy_object(
                    self.bucket, final, source, retention=self._retention(),
                ))
        finally:
            self._remove_quietly(temp, written.version_id)
        return BlobRef(sha256, reader.size)

    def put_many(self, blobs: list[tuple[bytes, str | None]]) -> list[BlobRef | CareChainError]:
        # Small blobs with known addresses: one PUT each straight to the final name (an S3 PUT is atomic, so
        # no temporary object and copy), all in parallel; each is durable when S3 answers. The same bytes
        # twice in one batch are put once: two parallel PUTs of one name would both find it absent, and
        # under Object Lock leave two versions.
        self.ensure_bucket()
        results: list[BlobRef | CareChainError] = []
        distinct: dict[str, bytes] = {}
        for data, expected in blobs:
            try:
                sha256 = checked_blob(data, expected)
            except (InvalidArgument, DataLoss) as exc:
                results.append(exc)
                continue
            distinct.setdefault(sha256, data)
            results.append(BlobRef(sha256, len(data)))
        list(self._parallel().map(self._put_small, distinct.items()))  # an S3 failure fails the batch
        return results

    def _put_small(self, blob: tuple[str, bytes]) -> None:
        """PUT one checked blob at its address unless it is there already."""
        sha256, data = blob
        final = self.object_name(sha256)
        if not self._object_exists(final):  # identical bytes stored already: no needless version
            _s3_call(lambda: self.client.put_object(self.bucket, final, io.BytesIO(data), length=len(data),
                                                    retention=self._retention()))

    def get_many(self, sha256s: list[str]) -> list[bytes | CareChainError]:
        self.ensure_bucket()
        return list(self._parallel().map(self._get_small, sha256s))

    def _get_small(self, sha256: str) -> bytes | CareChainError:
        try:
            name = self.object_name(sha256)
            size = self._object_size(name)
            if size is None:
                raise NotFound(f"blob {sha256} not found")
            refusal = too_large_for_batch(sha256, size)
            if refusal is not None:
                raise refusal
            return verified_blob(b"".join(self.open(sha256)), name.removeprefix(BLOBS_PREFIX))
        except (InvalidArgument, NotFound, FailedPrecondition, DataLoss) as exc:
            return exc

    def _parallel(self) -> concurrent.futures.ThreadPoolExecutor:
        """The pool batch calls run their S3 requests on (made on first use)."""
        with self._bucket_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(PARALLEL_REQUESTS, thread_name_prefix="s3-batch")
            return self._pool

    def open(self, sha256: str) -> Iterator[bytes]:
        name = self.object_name(sha256)
        self.ensure_bucket()
        try:
            response = self.client.get_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise NotFound(f"blob {sha256} not found") from exc
            raise _unavailable(exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _unavailable(exc) from exc
        return self._verified_chunks(response, name.removeprefix(BLOBS_PREFIX))

    def _verified_chunks(self, response: BaseHTTPResponse, sha256: str) -> Iterator[bytes]:
        try:
            try:
                yield from verified_chunks(response.read, sha256, self.chunk_bytes)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise _unavailable(exc) from exc
        finally:
            response.close()
            response.release_conn()

    def stat(self, sha256: str) -> int:
        name = self.object_name(sha256)
        self.ensure_bucket()
        size = self._object_size(name)
        if size is None:
            raise NotFound(f"blob {sha256} not found")
        return size

    def exists(self, sha256: str) -> bool:
        name = self.object_name(sha256)
        self.ensure_bucket()
        return self._object_exists(name)

    def list_blobs(self, written_before_ms: int, after: str, limit: int) -> list[StoredBlobInfo]:
        after = check_sha256(after, "page_token") if after else ""
        self.ensure_bucket()
        found: list[StoredBlobInfo] = []

        def page() -> None:
            for obj in self.client.list_objects(self.bucket, prefix=BLOBS_PREFIX,
                                                start_after=BLOBS_PREFIX + after if after else None):
                if obj.last_modified is not None and _ms(obj.last_modified) < written_before_ms:
                    found.append(StoredBlobInfo(obj.object_name.removeprefix(BLOBS_PREFIX), int(obj.size or 0),
                                                _ms(obj.last_modified)))
                    if len(found) >= limit:
                        return

        _s3_call(page)
        return found

    def delete(self, sha256: str, written_before_ms: int) -> int:
        name = self.object_name(sha256)
        self.ensure_bucket()
        try:
            stat = _s3_call(lambda: self.client.stat_object(self.bucket, name))
        except Unavailable as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code in _NOT_FOUND_CODES:
                raise NotFound(f"blob {sha256} not found") from None
            raise
        if stat.last_modified is None or _ms(stat.last_modified) >= written_before_ms:
            raise FailedPrecondition(f"blob {sha256} was written after the given time")
        try:
            _s3_call(lambda: self.client.remove_object(self.bucket, name))
        except Unavailable as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code == "AccessDenied":
                raise FailedPrecondition(f"blob {sha256} is under retention (Object Lock)") from None
            raise
        return int(stat.size or 0)

    def prune_incoming(self, created_before_ms: int) -> int:
        self.ensure_bucket()

        def stale() -> list[str]:
            return [obj.object_name for obj in self.client.list_objects(self.bucket, prefix=INCOMING_PREFIX)
                    if obj.last_modified is not None and _ms(obj.last_modified) < created_before_ms]

        names = _s3_call(stale)
        for name in names:
            _s3_call(lambda name=name: self.client.remove_object(self.bucket, name))
        return len(names)

    # -- helpers --------------------------------------------------------------------------------

    def _object_size(self, name: str) -> int | None:
        try:
            return int(self.client.stat_object(self.bucket, name).size or 0)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                return None
            raise _unavailable(exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _unavailable(exc) from exc

    def _object_exists(self, name: str) -> bool:
        return self._object_size(name) is not None

    def _retention(self) -> Retention | None:
        if self.object_lock_days <= 0:
            return None
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=self.object_lock_days)
        return Retention(COMPLIANCE, until)

    def _remove_quietly(self, name: str, version_id: str | None) -> None:
        """Delete a temporary object (the exact version, so no delete marker is left on versioned buckets).

        A failure here leaves only an ``incoming/`` object, which the lifecycle rule expires.
        """
        try:
            self.client.remove_object(self.bucket, name, version_id=version_id)
        except (MinioException, urllib3.exceptions.HTTPError, OSError):
            pass
