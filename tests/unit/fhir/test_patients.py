"""Patient/<pseudonym>: what a create is about, how a read names its patient, what a Bundle names."""

from __future__ import annotations

import pytest

from carechain.fhir.outcomes import FhirError
from carechain.fhir.patients import as_served, bundle_patients, patient_of, patient_reference_path


def test_patient_of_a_create() -> None:
    assert patient_of({"resourceType": "Condition", "subject": {"reference": "Patient/psn-1"},
                       "asserter": {"reference": "Patient/psn-1"}}) == "psn-1"
    assert patient_of({"resourceType": "Patient", "id": "psn-1"}) == "psn-1"
    with pytest.raises(FhirError) as refused:
        patient_of({"resourceType": "Observation", "code": {"text": "x"}})
    assert (refused.value.status, refused.value.expression) == (400, "Observation.subject.reference")
    with pytest.raises(FhirError, match="more than one patient"):
        patient_of({"resourceType": "Condition", "subject": {"reference": "Patient/psn-1"},
                    "asserter": {"reference": "Patient/psn-2"}})


def test_patient_reference_paths_follow_the_compartment() -> None:
    assert patient_reference_path("AllergyIntolerance") == "AllergyIntolerance.patient.reference"
    assert patient_reference_path("Appointment") == "Appointment.participant.actor.reference"
    assert patient_reference_path("Patient") == "Patient.id"


def test_as_served_names_the_patient_by_pseudonym_and_keeps_the_rest() -> None:
    stored = {"resourceType": "Encounter", "id": "local", "meta": {"profile": ["p"]},
              "subject": {"reference": "Patient/ehr-9"},
              "participant": [{"individual": {"reference": "Practitioner/7"}}]}
    served = as_served(stored, "rec-1", "psn-1", 1)
    assert served == {**stored, "id": "rec-1", "meta": {"profile": ["p"], "versionId": "1"},
                      "subject": {"reference": "Patient/psn-1"}}
    assert stored["subject"] == {"reference": "Patient/ehr-9"}  # the stored copy is untouched


def test_bundle_patients() -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "ehr-9"},
         "request": {"method": "PUT", "url": "Patient/psn-1"}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/ehr-9"}},
         "request": {"method": "POST", "url": "Condition"}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/psn-2"}},
         "request": {"method": "POST", "url": "Condition"}},
        "not an entry",
    ]}
    imported, patients = bundle_patients(bundle)
    assert patients == ["psn-1", "psn-2"]  # ehr-9 is the bundle's own Patient entry
    assert imported["entry"][0]["request"] == {"method": "POST", "url": "Patient"}
    assert bundle["entry"][0]["request"]["method"] == "PUT"  # the client's bundle is untouched
    assert imported["entry"][1:] == bundle["entry"][1:]
