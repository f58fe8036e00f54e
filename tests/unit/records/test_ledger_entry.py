"""The records gateway verifies the RecordEntry a ledger returns before it acts on it.

Only the records service seals record metadata, bound to chain, record id,
version, patient, organisation and content hash; a validator that makes up or
alters an entry (another patient, another blob) is answered with DATA_LOSS and
nothing is decided or released. The control (the honest entry) reaches consent.

On the write side, the codes of the resource's primary code element go into the
sealed metadata (for consent provisions by code), systems in canonical form,
and nowhere in clear on the RegisterRecord.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from consent_ledger_fake import CHAIN, SEALER
from records_fixtures import decide_many_by_one

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import DataLoss, PermissionDenied
from carechain.identity.v1 import identity_pb2
from carechain.ledger.v1 import ledger_pb2
from carechain.records.gateway import RecordsGateway
from carechain.runtime.auth import Caller
from carechain.storage.v1 import storage_pb2

READER = Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "psychiatry")


def honest_entry() -> ledger_pb2.RecordEntry:
    record = ledger_pb2.RegisterRecord(record_id="rec-1", patient_id="pat-1", organization_id="org-a",
                                       content_sha256="ab" * 32, content_size=10, key_name="k", key_version=1,
                                       version=1)
    record.sealed_metadata.CopyFrom(SEALER.seal_record(record, ledger_pb2.RecordMetadata(
        resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_MENTAL_HEALTH])))
    return ledger_pb2.RecordEntry(record=record, log_index=3)


class Peers:
    """The gateway's peers: a ledger answering one entry, a consent that denies, an audit that records."""

    def __init__(self, entry: ledger_pb2.RecordEntry) -> None:
        self.ledger = self
        self.consent = self
        self.audit = self
        self.entry = entry
        self.decided: list[consent_pb2.DecideRequest] = []
        self.events: list[audit_pb2.AuditEvent] = []

    def GetRecordEntry(self, request: ledger_pb2.GetRecordEntryRequest, **_: object) -> ledger_pb2.RecordEntry:
        return self.entry

    def DecideMany(self, request, **_):
        return decide_many_by_one(self.Decide, request)

    def Decide(self, request: consent_pb2.DecideRequest, **_: object) -> consent_pb2.Decision:
        self.decided.append(request)
        return consent_pb2.Decision(effect=consent_pb2.DECISION_EFFECT_DENY, reason="denied: no consent")

    def RecordEvent(self, request: audit_pb2.RecordEventRequest, **_: object) -> audit_pb2.AuditReceipt:
        self.events.append(request.event)
        return audit_pb2.AuditReceipt(sequence=len(self.events), event_hash=bytes(32))


def test_control_the_honest_entry_is_opened_and_decided() -> None:
    peers = Peers(honest_entry())
    gateway = RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER)
    with pytest.raises(PermissionDenied):
        gateway.get_record(READER, "rec-1", c.PURPOSE_OF_USE_TREAT)
    assert len(peers.decided) == 1
    [event] = peers.events  # the denial is audited with the opened metadata
    assert event.resource_type == "Condition" and list(event.categories) == [c.SENSITIVITY_CATEGORY_MENTAL_HEALTH]


@pytest.mark.parametrize(("field", "value"), [
    ("patient_id", "pat-2"), ("content_sha256", "cd" * 32), ("organization_id", "org-b"), ("version", 2),
    ("record_id", "rec-2"),
])
def test_an_altered_entry_is_data_loss_and_nothing_is_decided(field: str, value: object) -> None:
    entry = honest_entry()
    setattr(entry.record, field, value)
    peers = Peers(entry)
    gateway = RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER)
    with pytest.raises(DataLoss):
        gateway.get_record(READER, "rec-1", c.PURPOSE_OF_USE_TREAT)
    assert not peers.decided and not peers.events


def test_an_entry_without_sealed_metadata_is_data_loss() -> None:
    entry = honest_entry()
    entry.record.ClearField("sealed_metadata")
    entry.record.resource_type = "Condition"  # what an old or lying ledger would show in clear
    peers = Peers(entry)
    gateway = RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER)
    with pytest.raises(DataLoss):
        gateway.get_record(READER, "rec-1", c.PURPOSE_OF_USE_TREAT)
    assert not peers.decided


WRITER = Caller("prac-7", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "cardiology")


class WritePeers:
    """The gateway's peers on a write: identity, storage, audit and a ledger that keeps what it is sent."""

    def __init__(self) -> None:
        self.identity = self.storage = self.ledger = self.audit = self
        self.submitted: list[ledger_pb2.Transaction] = []

    def GetPrincipal(self, request: identity_pb2.GetPrincipalRequest, **_: object) -> identity_pb2.Principal:
        # The writer's organisation registered the patient (records writes only for its own patients).
        return identity_pb2.Principal(principal_id=request.principal_id, kind=c.PRINCIPAL_KIND_PATIENT,
                                      fhir_patient_id="p1", organization_id=WRITER.organization_id)

    def GenerateDataKey(self, request: identity_pb2.GenerateDataKeyRequest, **_: object) -> identity_pb2.DataKey:
        return identity_pb2.DataKey(plaintext_key=bytes(32),
                                    key_ref=identity_pb2.KeyReference(key_name="k", key_version=1))

    def PutBlob(self, requests: Iterator[storage_pb2.PutBlobRequest], **_: object) -> storage_pb2.BlobRef:
        data = b"".join(r.chunk for r in requests if r.WhichOneof("part") == "chunk")
        return storage_pb2.BlobRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    # The gateway batches data keys and small blobs (identity.data_key_client, storage.blob_client).
    def GenerateDataKeys(self, request: identity_pb2.GenerateDataKeysRequest, **_: object
                         ) -> identity_pb2.GenerateDataKeysResponse:
        return identity_pb2.GenerateDataKeysResponse(results=[
            identity_pb2.GenerateDataKeyResult(key=self.GenerateDataKey(item)) for item in request.items])

    def PutBlobs(self, request: storage_pb2.PutBlobsRequest, **_: object) -> storage_pb2.PutBlobsResponse:
        return storage_pb2.PutBlobsResponse(results=[storage_pb2.PutBlobResult(ref=storage_pb2.BlobRef(
            sha256=hashlib.sha256(item.data).hexdigest(), size=len(item.data))) for item in request.items])

    def SubmitTransaction(self, request: ledger_pb2.SubmitTransactionRequest, **_: object
                          ) -> ledger_pb2.SubmitTransactionResponse:
        self.submitted.append(request.transaction)
        return ledger_pb2.SubmitTransactionResponse(valid=True, log_index=1)

    def RecordEvent(self, request: audit_pb2.RecordEventRequest, **_: object) -> audit_pb2.AuditReceipt:
        return audit_pb2.AuditReceipt(sequence=1, event_hash=bytes(32))


def test_the_write_seals_the_primary_codes_and_none_in_clear() -> None:
    condition = {
        "resourceType": "Condition", "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": "44054006"},
                            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"}]},
        # Not the primary code element: a category does not count as the record's code.
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "problem-list-item"}]}],
    }
    peers = WritePeers()
    gateway = RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER)
    gateway.put_record(WRITER, "pat-1", json.dumps(condition).encode())
    [tx] = peers.submitted
    body = ledger_pb2.TransactionBody.FromString(tx.body)
    record = body.register_record
    metadata = SEALER.open_record(record)
    assert list(metadata.codes) == ["http://hl7.org/fhir/sid/icd-10-cm|E11.9", "http://snomed.info/sct|44054006"]
    raw = tx.SerializeToString()
    for needle in (b"44054006", b"E11.9", b"snomed", b"2.16.840.1.113883.6.96", b"problem-list-item"):
        assert needle not in raw
