"""The large-record STREAM encryption and envelope checks (carechain.records.large_records).

The whole flow through the services (consent, key release, audit, ledger, a 1 GiB record in bounded memory)
is tests/e2e/test_large_records.py; here the construction itself is attacked segment by segment.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from carechain.core.errors import DataLoss, InvalidArgument
from carechain.records.gateway import record_associated_data
from carechain.records.large_records import (
    HEADER,
    TAG_BYTES,
    Envelope,
    StreamOpener,
    StreamSealer,
    _attachment_size,
    _plaintext,
    check_envelope,
)
from carechain.records.v1 import records_pb2

KEY = os.urandom(32)
AD = record_associated_data("rec-1", "psn-1", 1)
SEGMENT = 1024


def _seal(data: bytes, key: bytes = KEY, ad: bytes = AD, chunk: int = 333) -> bytes:
    return b"".join(StreamSealer(key, ad, SEGMENT).seal(data[i:i + chunk] for i in range(0, len(data), chunk)))


def _open(ciphertext: bytes, key: bytes = KEY, ad: bytes = AD, chunk: int = 100) -> bytes:
    opener = StreamOpener(key, ad, SEGMENT, "record rec-1")
    return b"".join(opener.open(ciphertext[i:i + chunk] for i in range(0, len(ciphertext), chunk)))


def _segments(ciphertext: bytes) -> tuple[bytes, list[bytes]]:
    sealed = SEGMENT + TAG_BYTES
    body = ciphertext[HEADER.size:]
    return ciphertext[:HEADER.size], [body[i:i + sealed] for i in range(0, len(body), sealed)]


@pytest.mark.parametrize("size", [1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 5 * SEGMENT, 5 * SEGMENT + 17])
def test_any_length_round_trips_whatever_the_chunking(size: int) -> None:
    data = os.urandom(size)
    ciphertext = _seal(data, chunk=max(1, size // 3))
    assert _open(ciphertext, chunk=7) == data
    assert _open(ciphertext, chunk=len(ciphertext)) == data


def attacks(ciphertext: bytes) -> dict[str, bytes]:
    header, segments = _segments(ciphertext)
    swapped = [segments[0], segments[2], segments[1], *segments[3:]]
    return {
        "reordered": header + b"".join(swapped),
        "dropped": header + b"".join([segments[0], *segments[2:]]),
        "truncated at a segment boundary": header + b"".join(segments[:-1]),
        "truncated mid-segment": ciphertext[:-5],
        "repeated": header + b"".join([segments[0], segments[0], *segments[1:]]),
        "extended": ciphertext + segments[0],
        "bit flipped": ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]),
        "header changed": header[:-1] + bytes([header[-1] ^ 1]) + b"".join(segments),
        "no segments": header,
        "empty": b"",
    }


@pytest.mark.parametrize("attack", list(attacks(_seal(os.urandom(4 * SEGMENT + 10)))))
def test_a_changed_stream_is_data_loss_and_nothing_after_the_change_is_released(attack: str) -> None:
    data = os.urandom(4 * SEGMENT + 10)
    tampered = attacks(_seal(data))[attack]
    released = bytearray()
    with pytest.raises(DataLoss):
        for piece in StreamOpener(KEY, AD, SEGMENT, "record rec-1").open([tampered]):
            released += piece
    assert data.startswith(bytes(released)) and len(released) < len(data)


def test_segments_are_bound_to_their_record_and_key() -> None:
    ciphertext = _seal(os.urandom(3 * SEGMENT))
    with pytest.raises(DataLoss):
        _open(ciphertext, ad=record_associated_data("rec-2", "psn-1", 1))  # moved to another record
    with pytest.raises(DataLoss):
        _open(ciphertext, key=os.urandom(32))
    with pytest.raises(DataLoss, match="header"):
        b"".join(StreamOpener(KEY, AD, 2 * SEGMENT, "record rec-1").open([ciphertext]))  # ledger says otherwise


def test_two_seals_of_the_same_data_differ() -> None:
    data = os.urandom(SEGMENT)
    assert _seal(data) != _seal(data)  # a fresh nonce prefix each time


def test_the_attachment_size_follows_from_the_ciphertext_size() -> None:
    from carechain.ledger.v1 import ledger_pb2

    for size in (1, SEGMENT, 3 * SEGMENT + 5):
        envelope = Envelope(b'{"resourceType":"Media"}', size, None)
        plaintext = b"".join(_plaintext(envelope, iter([os.urandom(size)])))
        ciphertext = _seal(plaintext)
        record = ledger_pb2.RegisterRecord(content_size=len(ciphertext), segment_bytes=SEGMENT)
        assert _attachment_size(record) - len(envelope.resource_json) == size


def _header(resource: dict, size: int = 10) -> records_pb2.LargeRecordHeader:
    import json

    return records_pb2.LargeRecordHeader(patient_id="psn-1", resource_json=json.dumps(resource).encode(),
                                         attachment_size=size)


def _document(**attachment: object) -> dict:
    return {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": "Patient/p"},
            "content": [{"attachment": {"contentType": "application/pdf", **attachment}}]}


@pytest.mark.parametrize(("resource", "size", "field"), [
    (_document(), 0, "header.attachment_size"),
    (_document(data="AAAA"), 10, "content[0].attachment.data"),
    (_document(size=11), 10, "content[0].attachment.size"),
    (_document(hash="not base64!"), 10, "content[0].attachment.hash"),
    ({"resourceType": "DocumentReference", "content": [{"attachment": {"url": "x"}}]}, 10, "contentType"),
    ({"resourceType": "DocumentReference"}, 10, "content[0].attachment"),
    ({"resourceType": "Observation"}, 10, "resourceType"),
    ({"resourceType": "Media", "status": "completed"}, 10, "header.resource_json.content"),
])
def test_an_envelope_that_cannot_take_the_data_is_refused_by_field(resource: dict, size: int, field: str) -> None:
    with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
        check_envelope(_header(resource, size), 4 * 1024 * 1024)


def test_the_data_must_match_what_the_envelope_declares() -> None:
    data = os.urandom(100)
    sha1 = base64.b64encode(hashlib.sha1(data).digest()).decode()  # noqa: S324 - FHIR Attachment.hash
    envelope = check_envelope(_header(_document(size=100, hash=sha1), 100), 4 * 1024 * 1024)
    assert b"".join(_plaintext(envelope, iter([data[:50], data[50:]]))).endswith(data)
    for sent, why in ((data[:99], "ended after 99 of 100"), (data + b"x", "more bytes"),
                      (os.urandom(100), "hash")):
        with pytest.raises(InvalidArgument, match=why):
            b"".join(_plaintext(envelope, iter([sent])))
