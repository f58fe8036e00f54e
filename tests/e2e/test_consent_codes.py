"""FHIR Consent ``provision.code`` on the real network: the record's codes travel sealed to consent.

A patient grants a FHIR Consent permitting one SNOMED CT code (given under its OID system, the record
under the URI); a practitioner reads the Condition with that code and is denied another Condition
whose code the consent does not name. The denial does not name the code.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner

from carechain.consent import fhir_consent as f

HYPERTENSION, DIABETES = "38341003", "44054006"


def condition(fhir_patient_id: str, code: str) -> dict:
    return {"resourceType": "Condition", "id": str(uuid.uuid4()),
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
            "subject": {"reference": f"Patient/{fhir_patient_id}"}, "onsetDateTime": "2025-02-01"}


def code_consent(code: str, practitioner_id: str) -> dict:
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": f.CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": f.LOINC, "code": "59284-0"}]}],
        "provision": {"type": "deny", "provision": [{
            "type": "permit", "purpose": [{"system": f.ACT_REASON, "code": "TREAT"}],
            "actor": [{"role": {"coding": [{"system": f.PARTICIPATION_TYPE, "code": "IRCP"}]},
                       "reference": {"reference": f"Practitioner/{practitioner_id}"}}],
            "code": [{"coding": [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": code}]}],
        }]},
    }


def test_a_consent_by_code_opens_only_records_with_that_code(network) -> None:
    hospital = new_hospital(network)
    doctor = new_practitioner(network, hospital, "cardiology")
    patient, fhir_id = new_patient(network, hospital)
    patient.client.grant_consent_fhir(code_consent(HYPERTENSION, doctor.principal_id))
    named = hospital.client.put_record(patient.principal_id, condition(fhir_id, HYPERTENSION))
    other = hospital.client.put_record(patient.principal_id, condition(fhir_id, DIABETES))

    assert HYPERTENSION.encode() in doctor.client.get_record(named.record_id).resource_json
    with pytest.raises(grpc.RpcError) as denied:
        doctor.client.get_record(other.record_id)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert DIABETES not in denied.value.details() and HYPERTENSION not in denied.value.details()
    for actor in (hospital, doctor, patient):
        actor.client.close()
