"""Large records through the real services: PutRecordStream / GetRecordStream with segmented encryption.

A big attachment goes in and out in bounded memory with the same consent, key release, audit and ledger
registration as any record; a stored ciphertext whose segments were reordered, dropped or cut short is
refused (DATA_LOSS) without releasing what follows; a 1 GiB record keeps the records process under 200 MiB.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pathlib

import grpc
import pytest
from helpers import ledger_records, new_hospital, new_patient, new_practitioner, records_of

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import Purpose, permit
from carechain.labels.sensitivity import NORMAL
from carechain.records.large_records import HEADER, SEGMENT_BYTES, TAG_BYTES
from carechain.storage.s3_blobstore import S3BlobStore

MiB = 1024 * 1024


def _document(fhir_id: str, **attachment: object) -> dict:
    return {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{fhir_id}"},
            "content": [{"attachment": {"contentType": "application/dicom", **attachment}}]}


def _rewrite_blob(network, content_sha256: str, change) -> None:
    """Replace a stored ciphertext with change(bytes), behind the storage service's back (file or S3)."""
    if network.backends is None:
        [blob] = [p for p in network.layout.service_dir("storage").rglob(content_sha256) if p.is_file()]
        blob.write_bytes(change(blob.read_bytes()))
        return
    client = network.backends.minio.client()
    name = S3BlobStore.object_name(content_sha256)
    data = change(client.get_object("carechain-blobs", name).read())
    client.put_object("carechain-blobs", name, io.BytesIO(data), len(data))


@pytest.fixture
def parties(network):
    hospital = new_hospital(network)
    reader = new_practitioner(network, hospital, "radiology")
    patient, fhir_id = new_patient(network, hospital)
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                        categories=[NORMAL]))
    yield hospital, reader, patient, fhir_id
    patient.client.close()


def test_a_large_record_round_trips_with_consent_and_ledger_registration(network, parties) -> None:
    hospital, reader, patient, fhir_id = parties
    data = os.urandom(3 * MiB + 12345)
    sha1 = base64.b64encode(hashlib.sha1(data).digest()).decode()  # noqa: S324 - FHIR Attachment.hash
    envelope = _document(fhir_id, size=len(data), hash=sha1)

    stored = hospital.client.put_large_record(patient.principal_id, envelope, io.BytesIO(data), len(data))

    assert stored.record_id in records_of(network, patient.principal_id)
    assert ledger_records(network)[stored.record_id] == stored.content_sha256
    out = io.BytesIO()
    header = reader.client.get_large_record(stored.record_id, out)
    assert out.getvalue() == data
    assert header.attachment_size == len(data) and header.resource_type == "DocumentReference"
    assert json.loads(header.resource_json) == envelope
    # A large record is read only as a stream; a reader without consent gets nothing.
    with pytest.raises(grpc.RpcError) as unary:
        reader.client.get_record(stored.record_id)
    assert unary.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stranger = new_practitioner(network, hospital, "radiology")
    with pytest.raises(grpc.RpcError) as denied:
        stranger.client.get_large_record(stored.record_id, io.BytesIO())
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # An ordinary record streams too: its whole resource as the header, no data.
    small = hospital.client.put_record(patient.principal_id, _document(fhir_id, url="https://example.org/x"))
    header = reader.client.get_large_record(small.record_id, out := io.BytesIO())
    assert header.attachment_size == 0 and out.getvalue() == b""


def test_data_that_does_not_match_the_header_is_refused_and_nothing_registered(network, parties) -> None:
    hospital, _, patient, fhir_id = parties
    before = records_of(network, patient.principal_id)
    data = os.urandom(MiB)
    cases = [
        (_document(fhir_id), data[:-1], len(data), "data"),  # the stream ends early
        (_document(fhir_id), data + b"x", len(data), "data"),  # more than declared
        (_document(fhir_id, hash=base64.b64encode(b"0" * 20).decode()), data, len(data), "hash"),
        (_document(fhir_id, size=5), data, len(data), "size"),
        (_document(fhir_id, data="AAAA"), data, len(data), "data"),
        ({"resourceType": "Observation"}, data, len(data), "resourceType"),
    ]
    for envelope, sent, size, field in cases:
        with pytest.raises(grpc.RpcError) as refused:
            hospital.client.put_large_record(patient.principal_id, envelope, [sent], size)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert field in refused.value.details()
    assert records_of(network, patient.principal_id) == before


@pytest.mark.parametrize("attack", ["reorder", "truncate", "drop"])
def test_a_reordered_truncated_or_dropped_segment_is_data_loss(network, parties, attack) -> None:
    hospital, reader, patient, fhir_id = parties
    data = os.urandom(4 * SEGMENT_BYTES)
    stored = hospital.client.put_large_record(patient.principal_id, _document(fhir_id), [data], len(data))
    sealed = SEGMENT_BYTES + TAG_BYTES

    def change(blob: bytes) -> bytes:
        header, body = blob[:HEADER.size], blob[HEADER.size:]
        segments = [body[i:i + sealed] for i in range(0, len(body), sealed)]
        if attack == "reorder":
            segments[1], segments[2] = segments[2], segments[1]
        elif attack == "truncate":  # cut at a segment boundary: every remaining segment is intact
            segments = segments[:-1]
        else:
            del segments[1]
        return header + b"".join(segments)

    _rewrite_blob(network, stored.content_sha256, change)
    out = io.BytesIO()
    with pytest.raises(grpc.RpcError) as lost:
        reader.client.get_large_record(stored.record_id, out)
    assert lost.value.code() == grpc.StatusCode.DATA_LOSS
    # Nothing after the bad segment was released.
    assert data.startswith(out.getvalue()) and len(out.getvalue()) < len(data)
    # The read was audited as it began, and its failure too (the patient sees both).
    outcomes = [e.event.outcome for e in patient.client.access_history()
                if e.event.record_id == stored.record_id and e.event.action == audit_pb2.AUDIT_ACTION_READ]
    assert sorted(outcomes) == sorted([audit_pb2.AUDIT_OUTCOME_SUCCESS, audit_pb2.AUDIT_OUTCOME_FAILED])


def _peak_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_1_gib_record_goes_through_the_gateway_in_bounded_memory(network, parties) -> None:
    hospital, reader, patient, fhir_id = parties
    size = 1024 * MiB
    block = os.urandom(MiB)
    digest = hashlib.sha256()

    def data():
        for i in range(size // MiB):
            chunk = block[:8] + i.to_bytes(8, "big") + block[16:]  # every MiB different
            digest.update(chunk)
            yield chunk

    stored = hospital.client.put_large_record(patient.principal_id, _document(fhir_id), data(), size, timeout=1800)
    written = digest.hexdigest()

    class Hashing(io.RawIOBase):
        def __init__(self) -> None:
            self.digest, self.count = hashlib.sha256(), 0

        def write(self, chunk) -> int:
            self.digest.update(chunk)
            self.count += len(chunk)
            return len(chunk)

    out = Hashing()
    header = reader.client.get_large_record(stored.record_id, out, timeout=1800)
    assert header.attachment_size == size and out.count == size and out.digest.hexdigest() == written
    peak = _peak_rss_mib(network.processes["records"].pid)  # the process's peak RSS since it started
    print(f"records peak RSS after a 1 GiB write and read: {peak:.0f} MiB")
    assert peak < 200, f"records reached {peak:.0f} MiB"
