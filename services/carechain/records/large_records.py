"""Large records: resources with big attachments, written and read as streams in bounded memory.

A large record is a FHIR resource whose attachment data travels beside it rather than inside it
as base64: the client sends the resource without the data (the *envelope*) and then the raw bytes.
The envelope is validated as any PutRecord (full FHIR validation, patient, labels from its codes
and text), so a huge resource is never loaded whole; the data element is only counted and hashed
(its declared ``size`` and base64 SHA-1 ``hash``, when present, must match).

Encryption is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizar 2015, as in Tink's
AES-GCM streaming AEAD) over AES-256-GCM from ``cryptography``: the plaintext (envelope length,
envelope, data) is cut into segments of :data:`SEGMENT_BYTES`; segment *i* is sealed with the
record's data key under the nonce ``prefix(7) || i(4) || final(1)``, and its associated data binds
the record (record id, patient pseudonym, version), the header, the index and the final flag. So a
segment cannot be moved, dropped, repeated or reordered, and the stream cannot be cut short at a
segment boundary (the last segment must carry the final flag): each is DATA_LOSS on read. Each
segment is authenticated before any of its bytes are released; the ledger holds the SHA-256 of the
whole ciphertext (checked at the end too) and ``segment_bytes`` in the RegisterRecord.

Ciphertext layout: ``"CCLR" | version(1) | segment_bytes(4) | nonce prefix(7)`` (16 bytes), then
the sealed segments, each ``segment_bytes + 16`` bytes except the shorter final one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.core.crypto import same
from carechain.core.errors import CareChainError, DataLoss, InvalidArgument
from carechain.core.fhir import parse_json
from carechain.ledger.v1 import ledger_pb2
from carechain.records.gateway import (
    READ_ACTIONS,
    ReadRecord,
    RecordsGateway,
    StoredRecord,
    _status_name,
    record_associated_data,
)
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller
from carechain.storage.v1 import storage_pb2

log = logging.getLogger("carechain.records.large")

SEGMENT_BYTES = 256 * 1024
TAG_BYTES = 16
SHA1_BYTES = 20  # FHIR Attachment.hash is the SHA-1 of the data (an integrity check, not security)
MAGIC = b"CCLR"
FORMAT_VERSION = 1
NONCE_PREFIX_BYTES = 7
HEADER = struct.Struct(">4sBI7s")  # magic, format version, segment bytes, nonce prefix
LENGTH = struct.Struct(">I")  # the envelope's length, first in the plaintext
MAX_ATTACHMENT_BYTES = 64 * 1024**3
# A stream of several GiB takes minutes: the peer calls of a large record get this long (the served
# caller's own deadline still caps them, see carechain.runtime.peers).
STREAM_TIMEOUT_SECONDS = 6 * 3600.0
HEADER_FIELD = "header"
ENVELOPE_FIELD = "header.resource_json"

# Where the attachment of each supported resource type is, as (element, index in it or None).
ATTACHMENT_ELEMENTS = {"DocumentReference": ("content", 0), "Media": ("content", None)}


class StreamSealer:
    """Seals a plaintext byte stream into STREAM segments (see the module docstring)."""

    def __init__(self, key: bytes, record_ad: bytes, segment_bytes: int = SEGMENT_BYTES) -> None:
        self._aead = AESGCM(key)
        self._record_ad = record_ad
        self.segment_bytes = segment_bytes
        self.header = HEADER.pack(MAGIC, FORMAT_VERSION, segment_bytes, os.urandom(NONCE_PREFIX_BYTES))

    def seal(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The header, then each sealed segment; holds at most one segment and one chunk in memory."""
        yield self.header
        index, pending = 0, bytearray()
        for chunk in chunks:
            pending += chunk
            # Keep back at least one byte: only the end of the stream says which segment is final.
            while len(pending) > self.segment_bytes:
                yield self._seal(index, bytes(pending[: self.segment_bytes]), final=False)
                del pending[: self.segment_bytes]
                index += 1
        yield self._seal(index, bytes(pending), final=True)

    def _seal(self, index: int, segment: bytes, final: bool) -> bytes:
        nonce, ad = segment_nonce_and_ad(self.header, self._record_ad, index, final)
        return self._aead.encrypt(nonce, segment, ad)


class StreamOpener:
    """Authenticates and opens STREAM segments as they arrive; DataLoss for any change."""

    def __init__(self, key: bytes, record_ad: bytes, segment_bytes: int, what: str) -> None:
        self._aead = AESGCM(key)
        self._record_ad = record_ad
        self._segment_bytes = segment_bytes
        self._what = what

    def open(self, ciphertext: Iterable[bytes]) -> Iterator[bytes]:
        """Each segment's plaintext, in order, only after it authenticated."""
        sealed_bytes = self._segment_bytes + TAG_BYTES
        pending, header, index = bytearray(), b"", 0
        for chunk in ciphertext:
            pending += chunk
            if not header:
                if len(pending) < HEADER.size:
                    continue
                header = self._check_header(bytes(pending[: HEADER.size]))
                del pending[: HEADER.size]
            # A full segment with more bytes after it cannot be the final one.
            while len(pending) > sealed_bytes:
                yield self._open(header, index, bytes(pending[:sealed_bytes]), final=False)
                del pending[:sealed_bytes]
                index += 1
        if not header or len(pending) < TAG_BYTES:
            raise DataLoss(f"{self._what}: the stored ciphertext is truncated")
        yield self._open(header, index, bytes(pending), final=True)

    def _check_header(self, header: bytes) -> bytes:
        magic, version, segment_bytes, _prefix = HEADER.unpack(header)
        if magic != MAGIC or version != FORMAT_VERSION or segment_bytes != self._segment_bytes:
            raise DataLoss(f"{self._what}: the stored ciphertext has a wrong header")
        return header

    def _open(self, header: bytes, index: int, sealed: bytes, final: bool) -> bytes:
        nonce, ad = segment_nonce_and_ad(header, self._record_ad, index, final)
        try:
            return self._aead.decrypt(nonce, sealed, ad)
        except InvalidTag:
            # Changed, moved, dropped or cut short: which one does not matter, none is released.
            raise DataLoss(f"{self._what}: segment {index} of the stored ciphertext failed authentication") from None


def segment_nonce_and_ad(header: bytes, record_ad: bytes, index: int, final: bool) -> tuple[bytes, bytes]:
    """The AES-GCM nonce and associated data of segment index (STREAM: prefix || index || final flag)."""
    if index >= 2**32:
        raise InvalidArgument("data", "is too large for one record")
    flag = b"\x01" if final else b"\x00"
    prefix = header[-NONCE_PREFIX_BYTES:]
    nonce = prefix + index.to_bytes(4, "big") + flag
    return nonce, b"carechain-large-record/v1|" + record_ad + b"|" + header + index.to_bytes(8, "big") + flag


# --- the envelope ---------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A large record's resource without its attachment data, and what the data must match."""

    resource_json: bytes
    attachment_size: int
    declared_sha1: bytes | None


def check_envelope(header: records_pb2.LargeRecordHeader, max_record_bytes: int) -> Envelope:
    """What the header declares, checked before any data is read (the FHIR validation is PutRecord's)."""
    if not 0 < header.attachment_size <= MAX_ATTACHMENT_BYTES:
        raise InvalidArgument(f"{HEADER_FIELD}.attachment_size", f"must be between 1 and {MAX_ATTACHMENT_BYTES}")
    raw = header.resource_json
    if not raw:
        raise InvalidArgument(ENVELOPE_FIELD, "is empty")
    if len(raw) > max_record_bytes:
        raise InvalidArgument(ENVELOPE_FIELD, f"is {len(raw)} bytes; the limit is {max_record_bytes}")
    resource = parse_json(raw)
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if kind not in ATTACHMENT_ELEMENTS:
        raise InvalidArgument(f"{ENVELOPE_FIELD}.resourceType",
                              f"a large record is one of {', '.join(sorted(ATTACHMENT_ELEMENTS))}")
    attachment, path = _attachment(resource, kind)
    if "data" in attachment:
        raise InvalidArgument(f"{path}.data", "must be left out: the data follows the header as a stream")
    if not isinstance(attachment.get("contentType"), str):
        raise InvalidArgument(f"{path}.contentType", "is required for attachment data")
    if "size" in attachment and attachment["size"] != header.attachment_size:
        raise InvalidArgument(f"{path}.size", "differs from header.attachment_size")
    declared = None
    if "hash" in attachment:
        try:
            declared = base64.b64decode(attachment["hash"], validate=True)
        except (ValueError, TypeError):
            raise InvalidArgument(f"{path}.hash", "must be the base64 SHA-1 of the data") from None
        if len(declared) != SHA1_BYTES:
            raise InvalidArgument(f"{path}.hash", "must be the base64 SHA-1 of the data")
    return Envelope(raw, header.attachment_size, declared)


def _attachment(resource: dict[str, Any], kind: str) -> tuple[dict[str, Any], str]:
    element, index = ATTACHMENT_ELEMENTS[kind]
    node: Any = resource.get(element)
    path = f"{ENVELOPE_FIELD}.{element}"
    if index is not None:
        node = node[index] if isinstance(node, list) and node else None
        path += f"[{index}].attachment"
        node = node.get("attachment") if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise InvalidArgument(path, "is required: the attachment the data belongs to")
    return node, path


def _plaintext(envelope: Envelope, data: Iterator[bytes]) -> Iterator[bytes]:
    """Envelope length, envelope, then exactly attachment_size data bytes matching any declared hash."""
    yield LENGTH.pack(len(envelope.resource_json)) + envelope.resource_json
    received, sha1 = 0, hashlib.sha1(usedforsecurity=False)
    for chunk in data:
        received += len(chunk)
        if received > envelope.attachment_size:
            raise InvalidArgument("data", "more bytes than header.attachment_size")
        sha1.update(chunk)
        yield chunk
    if received != envelope.attachment_size:
        raise InvalidArgument("data", f"the stream ended after {received} of {envelope.attachment_size} bytes")
    if envelope.declared_sha1 is not None and not same(sha1.digest(), envelope.declared_sha1):
        raise InvalidArgument("data", "does not match the attachment hash")


# --- write and read through the gateway ---------------------------------------


@dataclass
class Attachment:
    """The authenticated data of a large record being read, released segment by segment."""

    size: int
    chunks: Iterator[bytes]


class LargeRecords:
    """PutRecordStream and GetRecordStream: the gateway's write and read with streamed, segmented content."""

    def __init__(self, gateway: RecordsGateway, peers: Any, max_record_bytes: int) -> None:
        self._gateway = gateway
        self._peers = peers
        self._max_record_bytes = max_record_bytes
        self._audit = AuditReporter(peers.audit, "records")

    def put(self, caller: Caller, requests: Iterator[records_pb2.PutRecordStreamRequest]) -> StoredRecord:
        """Validate the envelope, then stream the data through the segment sealer to storage; commit."""
        first = next(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument(HEADER_FIELD, "the first message of PutRecordStream must carry the header")
        envelope = check_envelope(first.header, self._max_record_bytes)

        def store(data_key: bytes, record_id: str, patient_id: str, version: int) -> tuple[str, int, int]:
            sealer = StreamSealer(data_key, record_associated_data(record_id, patient_id, version))
            return self._upload(sealer, _plaintext(envelope, _data(requests))) + (sealer.segment_bytes,)

        return self._gateway.put_record(caller, first.header.patient_id, envelope.resource_json, content=store)

    def _upload(self, sealer: StreamSealer, plaintext: Iterator[bytes]) -> tuple[str, int]:
        """Sealed segments to storage's streaming PutBlob; the ciphertext's SHA-256 and size."""
        digest, size, failure = hashlib.sha256(), 0, []

        def blob_requests() -> Iterator[storage_pb2.PutBlobRequest]:
            nonlocal size
            yield storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata())
            try:
                for sealed in sealer.seal(plaintext):
                    digest.update(sealed)
                    size += len(sealed)
                    yield storage_pb2.PutBlobRequest(chunk=sealed)
            except Exception as exc:
                failure.append(exc)  # gRPC only sees the upload cancelled: the caller must see why
                raise

        try:
            blob = self._peers.storage.PutBlob(blob_requests(), timeout=STREAM_TIMEOUT_SECONDS)
        except (grpc.RpcError, CareChainError):
            if failure:
                raise failure[0] from None
            raise
        if failure:
            raise failure[0]
        content_sha256 = digest.hexdigest()
        if not same(blob.sha256, content_sha256) or blob.size != size:
            raise DataLoss("storage stored different bytes than were sent")
        return content_sha256, size

    def get(self, caller: Caller, request: records_pb2.GetRecordRequest) -> ReadRecord:
        """The gateway's read (consent, key release, audit); a large record's data comes as ``attachment``."""

        def open_content(record: ledger_pb2.RegisterRecord, data_key: bytes) -> tuple[bytes, Attachment]:
            ad = record_associated_data(record.record_id, record.patient_id, record.version)
            opener = StreamOpener(data_key, ad, record.segment_bytes, f"record {record.record_id}")
            blob = self._peers.storage.GetBlob(storage_pb2.GetBlobRequest(sha256=record.content_sha256),
                                               timeout=STREAM_TIMEOUT_SECONDS)
            segments = opener.open(_hashed(blob, record))
            envelope, rest = _split_envelope(segments, record.record_id)
            return envelope, Attachment(_attachment_size(record) - len(envelope), _chain(rest, segments))

        return self._gateway.get_record(caller, request.record_id, request.purpose, request.action,
                                        request.break_glass, request.break_glass_reason, content=open_content,
                                        version=request.version, provenance_json=request.provenance)

    def stream(self, caller: Caller, read: ReadRecord, action: int, audit_fields: dict[str, Any]) -> Iterator[bytes]:
        """A read large record's data; a failure mid-way is audited (the read was audited as it began)."""
        attachment = read.attachment
        if attachment is None:
            return
        try:
            yield from attachment.chunks
        except GeneratorExit:
            raise  # the reader went away: not a failure of the stored record
        except Exception as exc:
            try:
                self._audit.report(READ_ACTIONS[action or common_pb2.CONSENT_ACTION_ACCESS],
                                   audit_pb2.AUDIT_OUTCOME_FAILED,
                                   reason=f"stored record could not be read ({_status_name(exc)})", **audit_fields)
            except Exception:  # noqa: BLE001 - the caller must see the original error
                log.warning("could not audit a failed read", extra={"record_id": read.record_id})
            raise


def _data(requests: Iterator[records_pb2.PutRecordStreamRequest]) -> Iterator[bytes]:
    for request in requests:
        part = request.WhichOneof("part")
        if part != "data":
            raise InvalidArgument(part or "part", "only the first message carries the header; the rest carry data")
        yield request.data


def _hashed(blob: Iterator[storage_pb2.BlobChunk], record: ledger_pb2.RegisterRecord) -> Iterator[bytes]:
    """The blob's bytes; DataLoss at the end if they do not hash to the ledger's content_sha256."""
    digest = hashlib.sha256()
    for chunk in blob:
        digest.update(chunk.data)
        yield chunk.data
    if not same(digest.hexdigest(), record.content_sha256):
        raise DataLoss(f"record {record.record_id}: stored ciphertext does not match the ledger hash")


def _split_envelope(segments: Iterator[bytes], record_id: str) -> tuple[bytes, bytes]:
    """The envelope (from the first authenticated segments) and the data bytes that followed it there."""
    pending = bytearray()
    for segment in segments:
        pending += segment
        if len(pending) >= LENGTH.size:
            (length,) = LENGTH.unpack(pending[: LENGTH.size])
            if len(pending) >= LENGTH.size + length:
                return bytes(pending[LENGTH.size: LENGTH.size + length]), bytes(pending[LENGTH.size + length:])
    raise DataLoss(f"record {record_id}: the stored plaintext has no complete envelope")


def _attachment_size(record: ledger_pb2.RegisterRecord) -> int:
    """Plaintext data bytes of a segmented ciphertext of content_size bytes (less the envelope: the caller)."""
    sealed = record.content_size - HEADER.size
    segment = record.segment_bytes + TAG_BYTES
    full, last = divmod(sealed, segment)
    segments = full + (1 if last else 0)
    return sealed - segments * TAG_BYTES - LENGTH.size


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
