"""The accounting of disclosures through in-process gRPC: who may read it (the patient, their active
guardian, services), recipient names for the patient, and the audit clock check on reporters."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from carechain.audit.server import AuditServicer, register_audit
from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.trail import MAX_CLOCK_SKEW_MS
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import Unavailable
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.identity.v1 import identity_pb2
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.config import AuditSettings
from carechain.runtime.server import start_service

IDENTITY = Ed25519Signer.generate(TOKEN_ISSUER_ID)
NOW_MS = 1_700_000_000_000
RECORDS = Caller("svc-records", c.PRINCIPAL_KIND_SERVICE)
PATIENT = Caller("psn-1", c.PRINCIPAL_KIND_PATIENT, "org-a")
GUARDIAN = Caller("psn-parent", c.PRINCIPAL_KIND_PATIENT, "org-a")
GUARDIAN_PRACTITIONER = Caller("prac-aunt", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
PROXY = Caller("psn-friend", c.PRINCIPAL_KIND_PATIENT, "org-a")
STRANGER = Caller("psn-2", c.PRINCIPAL_KIND_PATIENT, "org-a")


@dataclass
class Directory:
    """Delegations and principals as the consent and identity services would answer (no network)."""

    delegations_by_patient: dict[str, list[consent_pb2.Delegation]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    consent_down: bool = False

    def delegations(self, patient_id: str) -> list[consent_pb2.Delegation]:
        if self.consent_down:
            raise Unavailable("consent service", "connection refused")
        return self.delegations_by_patient.get(patient_id, [])

    def principal(self, principal_id: str) -> identity_pb2.Principal | None:
        name = self.names.get(principal_id)
        return None if name is None else identity_pb2.Principal(principal_id=principal_id, display_name=name)


@dataclass
class Env:
    stub: audit_pb2_grpc.AuditServiceStub
    directory: Directory

    def call(self, method: str, request: object, caller: Caller):
        token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("audit")), 60)
        return getattr(self.stub, method)(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)

    def record(self, **fields: object) -> audit_pb2.AuditReceipt:
        values: dict[str, object] = {
            "event_id": str(uuid.uuid4()), "time_ms": NOW_MS - 1_000, "service": "records", "actor_id": "prac-1",
            "organization_id": "org-b", "patient_id": "psn-1", "record_id": "rec-1", "resource_type": "Condition",
            "action": audit_pb2.AUDIT_ACTION_DISCLOSE, "outcome": audit_pb2.AUDIT_OUTCOME_SUCCESS,
            "purpose": c.PURPOSE_OF_USE_TREAT, "categories": [c.SENSITIVITY_CATEGORY_SUBSTANCE_USE],
        }
        values.update(fields)
        return self.call("RecordEvent", audit_pb2.RecordEventRequest(event=audit_pb2.AuditEvent(**values)), RECORDS)

    def history(self, caller: Caller, patient_id: str = "") -> audit_pb2.GetAccessHistoryResponse:
        return self.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id=patient_id), caller)


def delegation(delegate: str, relationship: int = policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN,
               status: int = consent_pb2.DELEGATION_STATUS_ACTIVE, end_ms: int = 0) -> consent_pb2.Delegation:
    return consent_pb2.Delegation(patient_id="psn-1", delegate_id=delegate, relationship=relationship,
                                  status=status, period=c.Period(end_ms=end_ms))


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[Env]:
    store = SQLiteAuditStore(tmp_path)
    directory = Directory(
        delegations_by_patient={"psn-1": [
            delegation("psn-parent"), delegation("prac-aunt"),
            delegation("psn-friend", relationship=policy_pb2.DELEGATE_RELATIONSHIP_PROXY),
            delegation("psn-former", status=consent_pb2.DELEGATION_STATUS_REVOKED),
            delegation("psn-expired", end_ms=NOW_MS - 1),
        ]},
        names={"prac-1": "Dr. Ada Example", "org-b": "Riverside Clinic"},
    )
    servicer = AuditServicer(
        Authenticator(TrustBundle({TOKEN_ISSUER_ID: IDENTITY.public_key_bytes()}), audience("audit")),
        store, clock=lambda: NOW_MS / 1000, directory=directory,
    )
    running = start_service("audit", AuditSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0),
                            register_audit(servicer), [servicer.close, store.close])
    channel = grpc.insecure_channel(running.address)
    try:
        yield Env(audit_pb2_grpc.AuditServiceStub(channel), directory)
    finally:
        channel.close()
        running.stop()


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


@pytest.mark.parametrize("guardian", [GUARDIAN, GUARDIAN_PRACTITIONER], ids=["patient", "practitioner"])
def test_a_registered_guardian_reads_the_patients_accounting_with_names(env: Env, guardian: Caller) -> None:
    env.record()
    [entry] = env.history(guardian, "psn-1").disclosures
    assert (entry.recipient_id, entry.recipient_name) == ("prac-1", "Dr. Ada Example")
    assert (entry.recipient_organization_id, entry.recipient_organization_name) == ("org-b", "Riverside Clinic")
    assert entry.action == audit_pb2.AUDIT_ACTION_DISCLOSE


def test_the_patient_sees_names_and_services_ids_only(env: Env) -> None:
    env.record()
    assert env.history(PATIENT).disclosures[0].recipient_name == "Dr. Ada Example"
    for_service = env.history(RECORDS, "psn-1").disclosures[0]
    assert (for_service.recipient_id, for_service.recipient_name, for_service.recipient_organization_name) == (
        "prac-1", "", "")


@pytest.mark.parametrize("caller", [PROXY, STRANGER, Caller("psn-former", c.PRINCIPAL_KIND_PATIENT, "org-a"),
                                    Caller("psn-expired", c.PRINCIPAL_KIND_PATIENT, "org-a"),
                                    Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-b", "oncology")],
                         ids=["proxy", "stranger", "revoked guardian", "expired guardian", "the recipient"])
def test_nobody_else_reads_the_accounting(env: Env, caller: Caller) -> None:
    env.record()
    code, details = status_of(lambda: env.history(caller, "psn-1"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "prac-1" not in details and "rec-1" not in details  # nothing of the patient's data leaks


def test_a_guardian_check_fails_closed_when_consent_is_unreachable(env: Env) -> None:
    env.record()
    env.directory.consent_down = True
    code, _ = status_of(lambda: env.history(GUARDIAN, "psn-1"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert len(env.history(PATIENT).disclosures) == 1  # the patient's own read needs no delegation


@pytest.mark.parametrize("offset_ms", [-MAX_CLOCK_SKEW_MS - 1, MAX_CLOCK_SKEW_MS + 1, -6 * 365 * 86_400_000])
def test_reporter_timestamps_far_from_the_audit_clock_are_refused(env: Env, offset_ms: int) -> None:
    code, details = status_of(lambda: env.record(time_ms=NOW_MS + offset_ms))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("event.time_ms:")
    assert env.history(PATIENT).disclosures == []


def test_reporter_timestamps_within_the_skew_are_kept(env: Env) -> None:
    env.record(time_ms=NOW_MS - MAX_CLOCK_SKEW_MS + 1)
    env.record(time_ms=0)  # filled in with the audit clock
    assert sorted(d.time_ms for d in env.history(PATIENT).disclosures) == [NOW_MS - MAX_CLOCK_SKEW_MS + 1, NOW_MS]
