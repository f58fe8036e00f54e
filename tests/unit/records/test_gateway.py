"""What the records gateway keeps between calls (carechain.records.gateway): patients' registrations and
verified ledger entries, fetched once; a deactivated patient gets no new record; an entry that fails
verification is never kept."""

from __future__ import annotations

import pytest
from consent_ledger_fake import CHAIN, SEALER, FakeLedger

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import DataLoss, FailedPrecondition, InvalidArgument, PermissionDenied
from carechain.identity.v1 import identity_pb2
from carechain.ledger.v1 import ledger_pb2
from carechain.records.gateway import RecordsGateway
from carechain.runtime.auth import Caller
from carechain.runtime.principal_status import PrincipalStatus

HOSPITAL = Caller("org-a", c.PRINCIPAL_KIND_ORGANIZATION)
READER = Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
REGISTRAR = Ed25519Signer.generate("org-a")


class Peers:
    """Identity answering one patient, a ledger with one record, a consent that denies, an audit that records."""

    def __init__(self, tampered: bool = False) -> None:
        self.identity = self.ledger = self.consent = self.audit = self
        self.tampered = tampered
        self.principal_calls = 0
        self.entry_calls = 0
        self.events: list[object] = []

    def GetPrincipal(self, request, **_):  # noqa: N802
        self.principal_calls += 1
        return identity_pb2.Principal(principal_id=request.principal_id, kind=c.PRINCIPAL_KIND_PATIENT,
                                      organization_id="org-a", fhir_patient_id="fhir-1")

    def GetRecordEntry(self, request, **_):  # noqa: N802
        self.entry_calls += 1
        record = ledger_pb2.RegisterRecord(record_id=request.record_id, patient_id="psn-1", organization_id="org-a",
                                           content_sha256="ab" * 32, version=1)
        record.sealed_metadata.CopyFrom(SEALER.seal_record(record, ledger_pb2.RecordMetadata(
            resource_type="Condition", categories=[c.SENSITIVITY_CATEGORY_NORMAL])))
        if self.tampered:
            record.patient_id = "psn-2"  # the seal binds the patient: this entry does not open
        return ledger_pb2.RecordEntry(record=record)

    def DecideMany(self, request, **_):  # noqa: N802
        return consent_pb2.DecideManyResponse(results=[consent_pb2.DecideResult(decision=consent_pb2.Decision(
            effect=consent_pb2.DECISION_EFFECT_DENY, reason="denied: no consent")) for _ in request.requests])

    def RecordEvent(self, request, **_):  # noqa: N802
        self.events.append(request.event)
        return audit_pb2.AuditReceipt(sequence=len(self.events))


def gateway(peers: Peers, status: PrincipalStatus | None = None) -> RecordsGateway:
    return RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER,
                          principal_status=status)


def test_a_verified_entry_is_fetched_once_and_read_again_from_memory() -> None:
    peers = Peers()
    records = gateway(peers)
    for _ in range(3):
        with pytest.raises(PermissionDenied):  # consent denies: the entry was still opened and used
            records.get_record(READER, "rec-1", c.PURPOSE_OF_USE_TREAT)
    assert peers.entry_calls == 1
    assert [e.patient_id for e in peers.events] == ["psn-1"] * 3  # each read audited with the entry's patient


def test_an_entry_that_fails_verification_is_never_kept() -> None:
    peers = Peers(tampered=True)
    records = gateway(peers)
    for _ in range(2):
        with pytest.raises(DataLoss):
            records.get_record(READER, "rec-1", c.PURPOSE_OF_USE_TREAT)
    assert peers.entry_calls == 2 and not peers.events


def test_a_patient_is_looked_up_once_and_a_deactivated_one_gets_no_new_record() -> None:
    peers = Peers()
    ledger = FakeLedger()
    status = PrincipalStatus(ledger.ListTransactions)
    records = gateway(peers, status)
    for _ in range(2):
        with pytest.raises(InvalidArgument):  # refused by validation, after the patient was looked up
            records.put_record(HOSPITAL, "psn-1", b"{}")
    assert peers.principal_calls == 1
    ledger.append(REGISTRAR, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="psn-1"))
    status.sync()
    with pytest.raises(FailedPrecondition) as refused:
        records.put_record(HOSPITAL, "psn-1", b"{}")
    assert refused.value.message.startswith("patient_id:")
    assert peers.principal_calls == 1 and not peers.events  # nothing audited, no key, no blob
