"""The accounting of disclosures (carechain.audit.accounting) through in-process gRPC: what it says, its period,
who may read it (the patient, their active guardian, services), recipient names, and the FHIR export."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import grpc
import pytest
from audit_fixtures import (
    NOW_MS,
    OPERATOR,
    OTHER_PATIENT,
    PATIENT,
    PRACTITIONER,
    RECORDS,
    AuditEnv,
    Directory,
    running_audit,
    status_of,
)
from fhir.resources.R4B.bundle import Bundle

from carechain.audit.accounting import SIX_YEARS_MS
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.runtime.auth import Caller

GUARDIAN = Caller("psn-parent", c.PRINCIPAL_KIND_PATIENT, "org-a")
GUARDIAN_PRACTITIONER = Caller("prac-aunt", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
PROXY = Caller("psn-friend", c.PRINCIPAL_KIND_PATIENT, "org-a")


def delegation(delegate: str, relationship: int = policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN,
               status: int = consent_pb2.DELEGATION_STATUS_ACTIVE, end_ms: int = 0) -> consent_pb2.Delegation:
    return consent_pb2.Delegation(patient_id="psn-1", delegate_id=delegate, relationship=relationship,
                                  status=status, period=c.Period(end_ms=end_ms))


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[AuditEnv]:
    directory = Directory(
        delegations_by_patient={"psn-1": [
            delegation("psn-parent"), delegation("prac-aunt"),
            delegation("psn-friend", relationship=policy_pb2.DELEGATE_RELATIONSHIP_PROXY),
            delegation("psn-former", status=consent_pb2.DELEGATION_STATUS_REVOKED),
            delegation("psn-expired", end_ms=NOW_MS - 1),
        ]},
        names={"prac-1": "Dr. Ada Example", "org-b": "Riverside Clinic"},
    )
    with running_audit(tmp_path, directory) as running:
        yield running


def disclose(env: AuditEnv, **fields: object) -> audit_pb2.AuditReceipt:
    """A disclosure of psn-1's substance-use record to prac-1 of org-b a second ago; fields override."""
    values: dict[str, object] = {
        "time_ms": NOW_MS - 1_000, "organization_id": "org-b", "action": audit_pb2.AUDIT_ACTION_DISCLOSE,
        "categories": [c.SENSITIVITY_CATEGORY_SUBSTANCE_USE],
    }
    values.update(fields)
    return env.record(**values)


# --- what the accounting says ------------------------------------------------------------------

def test_access_history_is_an_accounting_of_disclosures(env: AuditEnv) -> None:
    env.record(time_ms=NOW_MS - 5_000)
    env.record(time_ms=NOW_MS - 4_000, actor_id="prac-2", organization_id="org-b",
               outcome=audit_pb2.AUDIT_OUTCOME_DENIED, purpose=c.PURPOSE_OF_USE_HRESCH, reason="no consent")
    history = env.history(PATIENT)
    newest, oldest = history.disclosures
    assert (newest.recipient_id, newest.recipient_organization_id) == ("prac-2", "org-b")
    assert newest.purpose == c.PURPOSE_OF_USE_HRESCH and newest.outcome == audit_pb2.AUDIT_OUTCOME_DENIED
    assert (oldest.time_ms, oldest.record_id, oldest.resource_type) == (NOW_MS - 5_000, "rec-1", "Condition")
    assert list(oldest.categories) == [c.SENSITIVITY_CATEGORY_ONCOLOGY]
    assert oldest.description == "Condition record rec-1 (oncology)"
    assert [d.sequence for d in history.disclosures] == [e.sequence for e in history.events] == [2, 1]
    assert history.since_ms == NOW_MS - SIX_YEARS_MS and history.until_ms == 0


def test_patient_sees_its_own_history_newest_first(env: AuditEnv) -> None:
    t = NOW_MS - 10_000
    env.record(time_ms=t + 1_000, actor_id="prac-1")
    env.record(time_ms=t + 3_000, actor_id="prac-2", outcome=audit_pb2.AUDIT_OUTCOME_DENIED, reason="denied")
    env.record(time_ms=t + 2_000, patient_id="psn-2")
    history = env.history(PATIENT, "psn-1")
    assert [(s.event.actor_id, s.event.time_ms) for s in history.events] == [("prac-2", t + 3_000),
                                                                             ("prac-1", t + 1_000)]
    bounded = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(since_ms=t + 2_000), PATIENT)
    assert [s.event.time_ms for s in bounded.events] == [t + 3_000]


def test_history_defaults_to_the_last_six_years(env: AuditEnv) -> None:
    # Events are recorded when they happen (the audit clock then), and read six years later.
    for time_ms, reason in ((NOW_MS - SIX_YEARS_MS - 1, "too old"), (NOW_MS - SIX_YEARS_MS + 1, "just in")):
        env.clock[0] = time_ms / 1000
        env.record(time_ms=time_ms, reason=reason)
    env.clock[0] = NOW_MS / 1000
    history = env.history(PATIENT)
    assert [e.event.reason for e in history.events] == ["just in"]
    old = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(
        since_ms=NOW_MS - SIX_YEARS_MS - 10, until_ms=NOW_MS - SIX_YEARS_MS), PATIENT)
    assert [e.event.reason for e in old.events] == ["too old"]


@pytest.mark.parametrize(("since_ms", "until_ms", "field"), [
    (NOW_MS - SIX_YEARS_MS - 1, 0, "since_ms"),
    (1, NOW_MS, "since_ms"),
    (-1, 0, "since_ms"),
    (0, -1, "until_ms"),
    (NOW_MS, NOW_MS - 1, "until_ms"),
])
def test_history_periods_longer_than_six_years_are_rejected(env: AuditEnv, since_ms: int, until_ms: int,
                                                            field: str) -> None:
    code, details = status_of(lambda: env.call(
        "GetAccessHistory", audit_pb2.GetAccessHistoryRequest(since_ms=since_ms, until_ms=until_ms), PATIENT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}:")


# --- who reads it -------------------------------------------------------------------------------

def test_patient_may_not_read_another_patients_history(env: AuditEnv) -> None:
    code, _ = status_of(lambda: env.history(PATIENT, "psn-2"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = status_of(lambda: env.history(PRACTITIONER, "psn-1"))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_services_read_any_history(env: AuditEnv) -> None:
    env.record(patient_id="psn-2")
    assert len(env.history(RECORDS, "psn-2").events) == 1
    code, details = status_of(lambda: env.history(RECORDS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("patient_id:")
    code, details = status_of(lambda: env.call(
        "GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id="psn-2", since_ms=5, until_ms=5), RECORDS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("until_ms:")


@pytest.mark.parametrize("guardian", [GUARDIAN, GUARDIAN_PRACTITIONER], ids=["patient", "practitioner"])
def test_a_registered_guardian_reads_the_patients_accounting_with_names(env: AuditEnv, guardian: Caller) -> None:
    disclose(env)
    [entry] = env.history(guardian, "psn-1").disclosures
    assert (entry.recipient_id, entry.recipient_name) == ("prac-1", "Dr. Ada Example")
    assert (entry.recipient_organization_id, entry.recipient_organization_name) == ("org-b", "Riverside Clinic")
    assert entry.action == audit_pb2.AUDIT_ACTION_DISCLOSE


def test_the_patient_sees_names_and_services_ids_only(env: AuditEnv) -> None:
    disclose(env)
    assert env.history(PATIENT).disclosures[0].recipient_name == "Dr. Ada Example"
    for_service = env.history(RECORDS, "psn-1").disclosures[0]
    assert (for_service.recipient_id, for_service.recipient_name, for_service.recipient_organization_name) == (
        "prac-1", "", "")


@pytest.mark.parametrize("caller", [PROXY, OTHER_PATIENT, Caller("psn-former", c.PRINCIPAL_KIND_PATIENT, "org-a"),
                                    Caller("psn-expired", c.PRINCIPAL_KIND_PATIENT, "org-a"),
                                    Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-b", "oncology")],
                         ids=["proxy", "stranger", "revoked guardian", "expired guardian", "the recipient"])
def test_nobody_else_reads_the_accounting(env: AuditEnv, caller: Caller) -> None:
    disclose(env)
    code, details = status_of(lambda: env.history(caller, "psn-1"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "prac-1" not in details and "rec-1" not in details  # nothing of the patient's data leaks


def test_a_guardian_check_fails_closed_when_consent_is_unreachable(env: AuditEnv) -> None:
    disclose(env)
    env.directory.consent_down = True
    code, _ = status_of(lambda: env.history(GUARDIAN, "psn-1"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert len(env.history(PATIENT).disclosures) == 1  # the patient's own read needs no delegation


# --- FHIR export ---------------------------------------------------------------------------------

def test_fhir_export_is_a_valid_bundle_of_the_patients_audit_events(env: AuditEnv) -> None:
    env.record(reason="read")
    env.record(alert=True, purpose=c.PURPOSE_OF_USE_ETREAT)
    env.record(patient_id="psn-2")
    exported = env.call("ExportFhirBundle", audit_pb2.ExportFhirBundleRequest(), PATIENT)
    assert exported.count == 2
    bundle = Bundle.model_validate(json.loads(exported.bundle_json))
    assert bundle.type == "collection" and len(bundle.entry) == 2
    assert {e.resource.get_resource_type() for e in bundle.entry} == {"AuditEvent"}
    code, _ = status_of(lambda: env.call("ExportFhirBundle", audit_pb2.ExportFhirBundleRequest(patient_id="psn-2"),
                                         PATIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert env.call("ExportFhirBundle", audit_pb2.ExportFhirBundleRequest(patient_id="psn-2"), OPERATOR).count == 1
    code, details = status_of(lambda: env.call("ExportFhirBundle", audit_pb2.ExportFhirBundleRequest(), OPERATOR))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("patient_id:")
