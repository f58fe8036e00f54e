"""CareChain audit events as FHIR R4 AuditEvent resources (validated with fhir.resources R4B models)."""

from __future__ import annotations

import json
import uuid

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from carechain.audit import fhir_audit
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c

A = audit_pb2


def stored(sequence: int = 7, **fields: object) -> audit_pb2.StoredAuditEvent:
    values: dict[str, object] = {
        "event_id": str(uuid.uuid4()), "time_ms": 1_700_000_000_123, "service": "records",
        "actor_id": "prac-9f", "organization_id": "org-7a", "patient_id": "psn-3c", "record_id": str(uuid.uuid4()),
        "resource_type": "Condition", "categories": [c.SENSITIVITY_CATEGORY_ONCOLOGY],
        "action": A.AUDIT_ACTION_READ, "outcome": A.AUDIT_OUTCOME_SUCCESS, "purpose": c.PURPOSE_OF_USE_TREAT,
    }
    values.update(fields)
    return audit_pb2.StoredAuditEvent(event=audit_pb2.AuditEvent(**values), sequence=sequence,  # type: ignore[arg-type]
                                      event_hash=bytes(32))


def validated(s: audit_pb2.StoredAuditEvent) -> dict:
    resource = fhir_audit.to_fhir(s)
    AuditEvent.model_validate(resource)  # raises when not valid R4 AuditEvent
    return resource


@pytest.mark.parametrize(("action", "code", "subtype", "fhir_action"), [
    (A.AUDIT_ACTION_READ, "rest", "read", "R"),
    (A.AUDIT_ACTION_WRITE, "rest", "create", "C"),
    (A.AUDIT_ACTION_GRANT_CONSENT, "rest", "create", "C"),
    (A.AUDIT_ACTION_REVOKE_CONSENT, "rest", "update", "U"),
    (A.AUDIT_ACTION_DECIDE, "rest", "operation", "E"),
    (A.AUDIT_ACTION_RELEASE_KEY, "110100", None, "E"),
    (A.AUDIT_ACTION_REGISTER, "rest", "create", "C"),
    (A.AUDIT_ACTION_REVIEW, "110101", None, "E"),
])
def test_every_action_maps_to_a_valid_audit_event(action: int, code: str, subtype: str | None,
                                                  fhir_action: str) -> None:
    resource = validated(stored(action=action))
    assert resource["type"]["code"] == code and resource["action"] == fhir_action
    assert [s["code"] for s in resource.get("subtype", [])] == ([subtype] if subtype else [])


@pytest.mark.parametrize(("outcome", "code"), [
    (A.AUDIT_OUTCOME_SUCCESS, "0"), (A.AUDIT_OUTCOME_DENIED, "4"), (A.AUDIT_OUTCOME_FAILED, "8"),
])
def test_outcomes_use_the_fhir_outcome_codes(outcome: int, code: str) -> None:
    resource = validated(stored(outcome=outcome, reason="no consent"))
    assert resource["outcome"] == code and resource["outcomeDesc"] == "no consent"


def test_the_requesting_agent_has_role_and_purpose_of_use() -> None:
    resource = validated(stored(purpose=c.PURPOSE_OF_USE_ETREAT))
    actor, organization, server = resource["agent"]
    assert actor["requestor"] is True
    # IHE BALP: the user is the information recipient of a read; the CareChain service the destination.
    assert actor["type"]["coding"][0]["code"] == "IRCP"
    assert server["type"]["coding"][0] == {"system": fhir_audit.DICOM, "code": "110152",
                                           "display": "Destination Role ID"}
    assert server["who"]["reference"] == "Device/svc-records" and server["requestor"] is False
    assert actor["who"]["reference"] == "Practitioner/prac-9f"
    assert actor["who"]["identifier"] == {"system": fhir_audit.PRINCIPAL_SYSTEM, "value": "prac-9f"}
    assert actor["role"][0]["coding"][0]["code"] == "PROV"
    assert actor["purposeOfUse"][0]["coding"][0] == {"system": fhir_audit.ACT_REASON, "code": "ETREAT",
                                                     "display": "Emergency Treatment"}
    assert resource["purposeOfEvent"] == actor["purposeOfUse"]
    assert organization["who"]["reference"] == "Organization/org-7a" and organization["requestor"] is False


def test_entities_are_the_record_and_the_patient_pseudonym_never_phi() -> None:
    s = stored(categories=[c.SENSITIVITY_CATEGORY_SUBSTANCE_USE, c.SENSITIVITY_CATEGORY_ONCOLOGY])
    record, patient = validated(s)["entity"]
    assert record["what"]["reference"] == f"Condition/{s.event.record_id}"
    assert record["role"]["code"] == "4"
    assert [label["code"] for label in record["securityLabel"]] == ["ETH", "ONCOLOGY"]
    # One code system for every export: the AuditEvent labels are the Consent export's (issue 10).
    assert [label["system"] for label in record["securityLabel"]] == [
        "http://terminology.hl7.org/CodeSystem/v3-ActCode", "https://carechain.dev/fhir/CodeSystem/sensitivity"]
    assert patient["what"] == {"reference": "Patient/psn-3c", "type": "Patient",
                               "identifier": {"system": fhir_audit.PSEUDONYM_SYSTEM, "value": "psn-3c"}}
    assert patient["role"]["code"] == "1"
    text = json.dumps(validated(s))
    # Only identifiers of the event appear: nothing but what the (PHI-free) event holds.
    for value in ("prac-9f", "org-7a", "psn-3c", s.event.record_id):
        assert value in text


def test_the_source_is_the_reporting_service() -> None:
    source = validated(stored(service="consent"))["source"]
    assert source["observer"]["reference"] == "Device/svc-consent" and source["site"] == "carechain"
    assert source["type"][0]["code"] == "4"


def test_alert_events_carry_the_security_alert_subtype() -> None:
    resource = validated(stored(alert=True, purpose=c.PURPOSE_OF_USE_ETREAT))
    assert {"system": fhir_audit.DICOM, "code": "110113", "display": "Security Alert"} in resource["subtype"]


def test_recorded_is_a_utc_instant_with_milliseconds() -> None:
    assert validated(stored(time_ms=1_700_000_000_123))["recorded"] == "2023-11-14T22:13:20.123Z"
    assert fhir_audit.instant(5) == "1970-01-01T00:00:00.005Z"


def test_events_without_record_or_purpose_still_map() -> None:
    resource = validated(stored(record_id="", resource_type="", categories=[], purpose=0, organization_id="",
                                actor_id="operator", action=A.AUDIT_ACTION_REVIEW, service="audit"))
    assert "purposeOfEvent" not in resource and len(resource["agent"]) == 2  # the operator, the audit service
    assert resource["agent"][0]["type"]["coding"][0]["code"] == "VRF"
    assert [e["role"]["code"] for e in resource["entity"]] == ["1"]
    assert resource["agent"][0]["who"]["reference"] == "Device/operator"


def test_a_bundle_of_events_is_a_valid_fhir_collection() -> None:
    events = [stored(sequence=i) for i in range(1, 4)]
    raw = fhir_audit.bundle_json(events, "b-1", 1_700_000_000_000)
    bundle = Bundle.model_validate(json.loads(raw))
    assert bundle.type == "collection" and len(bundle.entry) == 3
    assert [e.fullUrl for e in bundle.entry] == [f"urn:uuid:{s.event.event_id}" for s in events]
    assert [e.resource.meta.versionId for e in bundle.entry] == ["1", "2", "3"]


@pytest.mark.parametrize(("action", "verb"), [(A.AUDIT_ACTION_GRANT_CONSENT, "granted"),
                                              (A.AUDIT_ACTION_REVOKE_CONSENT, "revoked")])
def test_consent_changes_reference_the_consent_and_are_authored_by_the_signer(action: int, verb: str) -> None:
    consent_id = "5b7d8f5e-0a43-4a8e-9a0e-3e7a2a1b2c3d"
    by_field = validated(stored(action=action, record_id="", resource_type="", categories=[], service="consent",
                                actor_id="psn-3c", consent_id=consent_id))
    by_reason = validated(stored(action=action, record_id="", resource_type="", categories=[], service="consent",
                                 actor_id="psn-3c", reason=f"consent {consent_id} {verb} at log index 7"))
    for resource in (by_field, by_reason):
        consent, patient = resource["entity"]
        assert consent["what"]["reference"] == f"Consent/{consent_id}"
        assert patient["what"]["reference"] == "Patient/psn-3c"
        assert resource["agent"][0]["type"]["coding"][0]["code"] == "AUT"


def test_a_disclosure_is_an_export() -> None:
    resource = validated(stored(action=A.AUDIT_ACTION_DISCLOSE))
    assert resource["type"]["code"] == "110106" and resource["action"] == "R"
    assert resource["agent"][0]["type"]["coding"][0]["code"] == "IRCP"
