"""What the records gateway keeps between calls (carechain.records.gateway): patients' registrations and
verified ledger entries, fetched once; a deactivated patient gets no new record; an entry that fails
verification is never kept; SMART tokens' scopes and purpose narrow reads and writes, after consent."""

from __future__ import annotations

import json

import pytest
from consent_ledger_fake import CHAIN, SEALER, FakeLedger

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent.policy import DENIAL_MESSAGE
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import DataLoss, FailedPrecondition, InvalidArgument, PermissionDenied
from carechain.dev.demo import cancer_diagnosis
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


# --- SMART access tokens ---------------------------------------------------------------------------

ORG = "org-a"


def smart(scope: str, purpose: str = "TREAT") -> Caller:
    return Caller(ORG, c.PRINCIPAL_KIND_ORGANIZATION, ORG, "", scope, purpose)


class Permitting(Peers):
    """Consent permits every read; no data key is ever released (a release would fail the test)."""

    def DecideMany(self, request, **_):  # noqa: N802
        return consent_pb2.DecideManyResponse(results=[consent_pb2.DecideResult(decision=consent_pb2.Decision(
            effect=consent_pb2.DECISION_EFFECT_PERMIT, reason="permitted", decision_token="t", decision_id="d"))
            for _ in request.requests])


def _gateway(peers: Peers) -> RecordsGateway:
    return RecordsGateway(peers, Ed25519Signer.generate("svc-records"), CHAIN, 1 << 20, SEALER)


def test_a_read_outside_the_scopes_is_refused_after_consent_and_audited_without_naming_the_type() -> None:
    peers = Permitting()
    with pytest.raises(PermissionDenied) as refused:
        _gateway(peers).get_record(smart("system/Observation.rs"), "rec-1", c.PURPOSE_OF_USE_TREAT)
    assert "SMART scopes do not permit this read" in refused.value.message
    assert "Condition" not in refused.value.message
    [event] = peers.events
    assert event.outcome == audit_pb2.AUDIT_OUTCOME_DENIED and "SMART scopes" in event.reason


def test_consent_still_decides_first_scopes_never_widen() -> None:
    peers = Peers()  # consent denies
    for scope in ("system/Condition.rs", "system/Observation.rs"):
        with pytest.raises(PermissionDenied) as refused:
            _gateway(peers).get_record(smart(scope), "rec-1", c.PURPOSE_OF_USE_TREAT)
        assert refused.value.message == DENIAL_MESSAGE


def test_a_read_must_state_the_tokens_purpose() -> None:
    peers = Permitting()
    with pytest.raises(InvalidArgument) as refused:
        _gateway(peers).get_record(smart("system/Condition.rs", "TREAT"), "rec-1", c.PURPOSE_OF_USE_HRESCH)
    assert refused.value.message.startswith("purpose:")
    assert peers.entry_calls == 0 and not peers.events


def test_a_write_needs_the_create_interaction_for_its_type() -> None:
    peers = Peers()
    condition = json.dumps(cancer_diagnosis("fhir-1")).encode()
    with pytest.raises(PermissionDenied, match="SMART scopes do not permit this create"):
        _gateway(peers).put_record(smart("system/Condition.rs system/Observation.c"), "psn-1", condition)
    assert not peers.events  # refused before the attempt is audited: nothing created


def test_tokens_without_scopes_keep_todays_behaviour() -> None:
    peers = Peers()
    with pytest.raises(PermissionDenied) as refused:
        _gateway(peers).get_record(Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, ORG), "rec-1",
                                   c.PURPOSE_OF_USE_HRESCH)
    assert refused.value.message == DENIAL_MESSAGE  # consent's answer: no scope or purpose binding applied
