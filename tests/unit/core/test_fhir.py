"""FHIR validation in the records gateway: bad input is INVALID_ARGUMENT naming the problem, never echoing PHI."""

from __future__ import annotations

import gzip
import json

import pytest

from carechain.core.errors import InvalidArgument
from carechain.core.fhir import validate_resource

PATIENT = "129c6ac7-8d06-89de-ad63-0204a93e76c3"
LIMIT = 64 * 1024


def _condition(**overrides) -> bytes:
    resource = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91302008"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    resource.update(overrides)
    return json.dumps(resource).encode()


def test_a_valid_condition_passes() -> None:
    validated = validate_resource(_condition(), PATIENT, LIMIT)
    assert validated.resource_type == "Condition"


@pytest.mark.parametrize(
    ("raw", "field", "why"),
    [
        (b"", "resource_json", "empty"),
        (b"{not json", "resource_json", "not valid JSON"),
        (b"[1, 2]", "resource_json", "JSON object"),
        (b'{"id": "x"}', "resource_json.resourceType", "missing"),
        (b'{"resourceType": "Spaceship"}', "resource_json.resourceType", "unknown"),
        (b'{"resourceType": "HumanName"}', "resource_json.resourceType", "unknown"),
        (_condition(code=7), "resource_json", "not a valid Condition: code"),
        (_condition(subject=None), "resource_json.subject", "null"),  # FHIR JSON has no nulls
        (json.dumps({"resourceType": "Condition", "code": {"text": "x"}}).encode(), "resource_json", "subject"),
        (_condition(subject={"reference": "Patient/someone-else"}), "resource_json.subject.reference", "patient"),
        (_condition(subject={"display": "no reference"}), "resource_json.subject.reference", "missing"),
        (b'{"resourceType": "Organization", "name": "Clinic"}', "resource_json.resourceType", "not patient data"),
        (b" " * (LIMIT + 1), "resource_json", "limit"),
    ],
)
def test_bad_resources_name_the_field(raw: bytes, field: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_resource(raw, PATIENT, LIMIT)
    assert caught.value.field == field
    assert why in str(caught.value)


def test_errors_do_not_echo_values() -> None:
    raw = _condition(onsetDateTime="SECRET-DIAGNOSIS-TEXT")
    with pytest.raises(InvalidArgument) as caught:
        validate_resource(raw, PATIENT, LIMIT)
    assert "SECRET" not in str(caught.value)


def test_a_patient_resource_must_be_the_patient_itself() -> None:
    validate_resource(json.dumps({"resourceType": "Patient", "id": PATIENT}).encode(), PATIENT, LIMIT)
    with pytest.raises(InvalidArgument, match="FHIR id"):
        validate_resource(json.dumps({"resourceType": "Patient", "id": "other"}).encode(), PATIENT, LIMIT)


def test_every_synthea_patient_and_condition_validates(synthea_dir) -> None:
    count = 0
    for name in ("Patient", "Condition"):
        with gzip.open(synthea_dir / f"{name}.000.ndjson.gz", "rt") as lines:
            for line in lines:
                resource = json.loads(line)
                patient = resource["id"] if name == "Patient" else resource["subject"]["reference"].split("/")[-1]
                validate_resource(line.strip().encode(), patient, 4 * 1024 * 1024)
                count += 1
    assert count == 13 + 555


def test_the_pseudonym_names_the_records_patient_too() -> None:
    """Patient/<pseudonym> (the FHIR REST gateway's logical id of a patient) is the record's own patient."""
    about = {"resourceType": "Condition", "subject": {"reference": "Patient/psn-own"}, "code": {"text": "x"}}
    validate_resource(json.dumps(about).encode(), PATIENT, LIMIT, pseudonym="psn-own")
    validate_resource(json.dumps({"resourceType": "Patient", "id": "psn-own"}).encode(), PATIENT, LIMIT,
                      pseudonym="psn-own")
    with pytest.raises(InvalidArgument, match="references another patient|does not reference"):
        validate_resource(json.dumps(about).encode(), PATIENT, LIMIT)  # without it: another patient
    other = {**about, "subject": {"reference": "Patient/psn-other"}}
    with pytest.raises(InvalidArgument, match="references another patient"):
        validate_resource(json.dumps(other).encode(), PATIENT, LIMIT, pseudonym="psn-own")


def test_a_patient_version_may_have_the_id_of_the_record_it_amends() -> None:
    """PUT /Patient/<record id> (the FHIR REST gateway): the ledger says the amended record is this patient's."""
    patient = {"resourceType": "Patient", "id": "rec-7"}
    validate_resource(json.dumps(patient).encode(), PATIENT, LIMIT, pseudonym="psn-own", record_id="rec-7")
    with pytest.raises(InvalidArgument, match="does not match"):
        validate_resource(json.dumps(patient).encode(), PATIENT, LIMIT, pseudonym="psn-own")  # a create: no record
    with pytest.raises(InvalidArgument, match="does not match"):
        validate_resource(json.dumps({**patient, "id": "other"}).encode(), PATIENT, LIMIT, record_id="rec-7")
    with pytest.raises(InvalidArgument, match="references another patient"):  # references: still the patient's
        validate_resource(json.dumps({**patient, "link": [{"other": {"reference": "Patient/rec-7"},
                                                           "type": "seealso"}]}).encode(),
                          PATIENT, LIMIT, record_id="rec-7")
