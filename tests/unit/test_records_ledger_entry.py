"""The records gateway verifies the RecordEntry a ledger returns before it acts on it.

Only the records service seals record metadata, bound to chain, record id,
version, patient, organisation and content hash; a validator that makes up or
alters an entry (another patient, another blob) is answered with DATA_LOSS and
nothing is decided or released. The control (the honest entry) reaches consent.
"""

from __future__ import annotations

import pytest
from consent_ledger_fake import CHAIN, SEALER

from carechain.audit.v1 import audit_pb2
from carechain.auth import Caller
from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2
from carechain.crypto import Ed25519Signer
from carechain.errors import DataLoss, PermissionDenied
from carechain.ledger.v1 import ledger_pb2
from carechain.records.gateway import RecordsGateway

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
