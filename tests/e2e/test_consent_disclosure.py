"""42 CFR Part 2 and the accounting of disclosures on the real network (embedded and real backends).

A patient grants a FHIR Consent permitting one named practitioner to access and disclose substance-use
records; the practitioner discloses one (GetRecord with action DISCLOSE), gets the 42 CFR 2.32 notice and
labels, and the patient's registered guardian reads the accounting with the recipient's name. A read
attempted while consent is down fails closed and is still in the accounting.
"""

from __future__ import annotations

import json
import uuid

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner, register

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import Kind, Purpose
from carechain.consent import fhir_consent as f
from carechain.consent.policy import PART2_REDISCLOSURE_NOTICE, PART2_SECURITY_LABELS
from carechain.consent.v1 import policy_pb2
from carechain.dev.demo import cancer_diagnosis
from carechain.records.v1 import records_pb2

ACCESS = 1  # ConsentAction
DISCLOSE = 2


def alcohol_dependence(fhir_patient_id: str) -> dict:
    """A Condition coded as alcohol dependence (SNOMED CT 66590003): a 42 CFR Part 2 record."""
    return {"resourceType": "Condition", "id": str(uuid.uuid4()),
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "66590003"}]},
            "subject": {"reference": f"Patient/{fhir_patient_id}"}, "onsetDateTime": "2025-02-01"}


def part2_consent(recipient_id: str) -> dict:
    actions = [{"coding": [{"system": f.CONSENT_ACTION, "code": code}]} for code in ("access", "disclose")]
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": f.CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": f.LOINC, "code": "59284-0"}]}],
        "provision": {"type": "deny", "provision": [{
            "type": "permit", "action": actions,
            "actor": [{"role": {"coding": [{"system": f.PARTICIPATION_TYPE, "code": "IRCP"}]},
                       "reference": {"reference": f"Practitioner/{recipient_id}"}}],
            "purpose": [{"system": f.ACT_REASON, "code": "TREAT"}],
            "securityLabel": [{"system": f.CONFIDENTIALITY, "code": "N"}, {"system": f.ACT_CODE, "code": "ETH"}],
        }]},
    }


def get(client, record_id: str, action: int) -> records_pb2.GetRecordResponse:
    return client.records.GetRecord(records_pb2.GetRecordRequest(
        record_id=record_id, purpose=Purpose.PURPOSE_OF_USE_TREAT, action=action), timeout=30)


def test_part2_disclosure_carries_the_notice_and_the_guardian_reads_the_accounting(network) -> None:
    hospital = new_hospital(network)
    counsellor = new_practitioner(network, hospital, "addiction-medicine")
    patient, fhir_id = new_patient(network, hospital)
    guardian = register(network, hospital.client, Kind.PRINCIPAL_KIND_PATIENT, "Guardian",
                        fhir_patient_id=str(uuid.uuid4()))
    # An open Part 2 consent (no named recipient) is refused before anything is signed.
    open_consent = part2_consent(counsellor.principal_id)
    del open_consent["provision"]["provision"][0]["actor"]
    with pytest.raises(Exception, match="42 CFR Part 2"):
        patient.client.grant_consent_fhir(open_consent)
    patient.client.grant_consent_fhir(part2_consent(counsellor.principal_id))
    sud = hospital.client.put_record(patient.principal_id, alcohol_dependence(fhir_id))
    normal = hospital.client.put_record(patient.principal_id, {**cancer_diagnosis(fhir_id), "code": {
        "coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}})  # hypertension: NORMAL

    disclosed = get(counsellor.client, sud.record_id, DISCLOSE)
    assert disclosed.redisclosure_notice == PART2_REDISCLOSURE_NOTICE
    labels = [f"{label.system}|{label.code}" for label in disclosed.security_labels]
    assert labels[-2:] == list(PART2_SECURITY_LABELS)  # after the category labels and confidentiality V
    labelled = json.loads(disclosed.labelled_resource_json)
    assert [f"{s['system']}|{s['code']}" for s in labelled["meta"]["security"]] == labels
    assert json.loads(disclosed.resource_json).get("meta") is None  # the stored bytes are returned unchanged
    accessed = get(counsellor.client, normal.record_id, ACCESS)
    assert accessed.redisclosure_notice == "" and [label.code for label in accessed.security_labels] == ["N"]
    with pytest.raises(grpc.RpcError) as invalid:
        get(counsellor.client, normal.record_id, 3)  # CORRECT is not a read
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "action" in invalid.value.details()

    # Consent down: the read fails closed, and the failure is in the accounting.
    network.stop_service("consent")
    try:
        with pytest.raises(grpc.RpcError) as down:
            get(counsellor.client, normal.record_id, ACCESS)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        network.start_service("consent")

    patient.client.register_delegate(guardian.principal_id, policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN)
    entries = guardian.client.accounting_of_disclosures(patient_id=patient.principal_id)
    disclosures = [d for d in entries if d.action == audit_pb2.AUDIT_ACTION_DISCLOSE]
    assert [(d.record_id, d.outcome) for d in disclosures] == [(sud.record_id, audit_pb2.AUDIT_OUTCOME_SUCCESS)]
    assert disclosures[0].recipient_name == "Dr. addiction-medicine"
    assert disclosures[0].recipient_organization_id == hospital.principal_id
    assert disclosures[0].recipient_organization_name.startswith("Hospital ")
    failed = [d for d in entries if d.outcome == audit_pb2.AUDIT_OUTCOME_FAILED and d.record_id == normal.record_id]
    assert len(failed) == 1 and failed[0].action == audit_pb2.AUDIT_ACTION_READ
    # Someone who is not the patient's guardian reads nothing.
    with pytest.raises(grpc.RpcError) as refused:
        counsellor.client.accounting_of_disclosures(patient_id=patient.principal_id)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for actor in (hospital, counsellor, patient, guardian):
        actor.client.close()
