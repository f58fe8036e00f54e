"""Issue 10 end to end: PutRecord through the records gateway takes only valid R4, labels what it stores,
and accepts the Patient-compartment types CareChain refused before."""

from __future__ import annotations

import json

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner

from carechain.client.sdk import Category, Purpose, permit

CODE = {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body height"}]}


@pytest.fixture(scope="module")
def ward(network):
    hospital = new_hospital(network)
    doctor = new_practitioner(network, hospital, "psychiatry")
    patient, fhir_id = new_patient(network, hospital)
    yield hospital, doctor, patient, fhir_id
    for actor in (hospital, doctor, patient):
        actor.client.close()


def _invalid(call) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value.details()


def test_compartment_types_are_stored_with_their_labels(network, ward) -> None:
    hospital, _, patient, fhir_id = ward
    me = {"reference": f"Patient/{fhir_id}"}
    resources = [
        {"resourceType": "Provenance", "target": [me], "recorded": "2024-01-02T03:04:05Z",
         "agent": [{"who": {"reference": "Practitioner/p1"}}]},
        {"resourceType": "SupplyDelivery", "status": "completed", "patient": me},
        {"resourceType": "MedicationDispense", "status": "completed", "subject": me,
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                   "code": "312940", "display": "sertraline 50 MG Oral Tablet"}]}},
        {"resourceType": "DiagnosticReport", "status": "final", "subject": me,
         "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "20447-9"}]}},
    ]
    stored = [hospital.client.put_record(patient.principal_id, resource) for resource in resources]
    assert [list(s.categories) for s in stored] == [
        [Category.SENSITIVITY_CATEGORY_NORMAL], [Category.SENSITIVITY_CATEGORY_NORMAL],
        [Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH], [Category.SENSITIVITY_CATEGORY_HIV_STI]]
    # another patient's reference in the compartment element is refused
    other = dict(resources[1], patient={"reference": "Patient/someone-else"})
    assert "patient" in _invalid(lambda: hospital.client.put_record(patient.principal_id, other))


def test_invalid_r4_is_refused_naming_the_field(network, ward) -> None:
    hospital, _, patient, fhir_id = ward
    bogus = {"resourceType": "Observation", "status": "bogus", "code": CODE,
             "subject": {"reference": f"Patient/{fhir_id}"}}
    assert _invalid(lambda: hospital.client.put_record(patient.principal_id, bogus)).startswith(
        "resource_json.status")
    martian = {"resourceType": "Patient", "id": fhir_id, "gender": "martian"}
    assert _invalid(lambda: hospital.client.put_record(patient.principal_id, martian)).startswith(
        "resource_json.gender")
    deep: dict = {"resourceType": "Observation"}
    node = deep
    for _ in range(200):
        node["extension"] = [{"url": "http://x"}]
        node = node["extension"][0]
    assert "limit is 64" in _invalid(lambda: hospital.client.put_record(patient.principal_id, deep))
    latin1 = json.dumps(dict(bogus, status="final", valueString="caf\u00e9"), ensure_ascii=False).encode("latin-1")
    assert "UTF-8" in _invalid(lambda: hospital.client.put_record(patient.principal_id, latin1))
    bom = b"\xef\xbb\xbf" + json.dumps(dict(bogus, status="final")).encode()
    assert "byte order mark" in _invalid(lambda: hospital.client.put_record(patient.principal_id, bom))


def test_a_duplicate_key_cannot_hide_a_psychiatric_code_from_consent(network, ward) -> None:
    hospital, doctor, patient, fhir_id = ward
    # The patient lets the psychiatrist read normal data only.
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=doctor.principal_id))
    raw = ('{"resourceType": "Condition", "subject": {"reference": "Patient/' + fhir_id + '"},'
           ' "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F32.9"}]},'
           ' "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}}').encode()
    assert "duplicate JSON key" in _invalid(lambda: hospital.client.put_record(patient.principal_id, raw))
    # Written once, properly, it is labelled and stays closed under the normal-data consent.
    single = raw.replace(b', "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}', b"")
    stored = hospital.client.put_record(patient.principal_id, single)
    assert list(stored.categories) == [Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH]
    with pytest.raises(grpc.RpcError) as caught:
        doctor.client.get_record(stored.record_id)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_meta_security_from_the_source_is_kept(network, ward) -> None:
    hospital, doctor, patient, fhir_id = ward
    labelled = {"resourceType": "Observation", "status": "final", "code": CODE,
                "subject": {"reference": f"Patient/{fhir_id}"},
                "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"},
                                      {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                       "code": "R"}]}}
    stored = hospital.client.put_record(patient.principal_id, labelled)
    assert list(stored.categories) == [Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH]
    # The labels come back as HL7 v3 codes for meta.security, in the one code system every export uses.
    assert [(label.system, label.code) for label in stored.security_labels] == [
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY"),
        ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R")]
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=doctor.principal_id,
                                        categories=[Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH]))
    read = doctor.client.get_record(stored.record_id)
    assert list(read.security_labels) == list(stored.security_labels)
    assert json.loads(read.resource_json)["meta"] == labelled["meta"]  # stored as sent
