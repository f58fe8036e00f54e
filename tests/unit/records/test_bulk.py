"""Bundle planning for bulk import (carechain.records.bulk): urn:uuid references, patients, entry checks.

The imports themselves, through the real services, are tests/e2e/test_bulk_import.py.
"""

from __future__ import annotations

import json

import grpc
import pytest

from carechain.core.errors import InvalidArgument
from carechain.records.bulk import NOT_ATTEMPTED, _Entry, _parse_bundle, _plan, _response, outcome_of
from carechain.records.gateway import StoredRecord

PATIENTS = {"fhir-a": "psn-a", "fhir-b": "psn-b"}
PATIENT_URL = "urn:uuid:11111111-1111-1111-1111-111111111111"
ENCOUNTER_URL = "urn:uuid:22222222-2222-2222-2222-222222222222"


def _post(resource: dict, full_url: str = "", **request: str) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    return {**entry, "fullUrl": full_url} if full_url else entry


def _entries() -> list[dict]:
    return [
        _post({"resourceType": "Patient", "id": "fhir-a"}, PATIENT_URL),
        _post({"resourceType": "Encounter", "subject": {"reference": PATIENT_URL}}, ENCOUNTER_URL),
        _post({"resourceType": "Condition", "subject": {"reference": PATIENT_URL},
               "encounter": {"reference": ENCOUNTER_URL}}),
    ]


def test_a_transaction_rewrites_urn_uuid_references_to_the_entries_ids() -> None:
    patient, encounter, condition = _plan(_entries(), PATIENTS, transaction=True)
    assert all(e.failure is None for e in (patient, encounter, condition))
    assert [e.patient_id for e in (patient, encounter, condition)] == ["psn-a"] * 3
    assert encounter.resource["id"] == ENCOUNTER_URL.removeprefix("urn:uuid:")  # no id: its fullUrl's uuid
    assert condition.resource["subject"] == {"reference": "Patient/fhir-a"}
    assert condition.resource["encounter"] == {"reference": f"Encounter/{encounter.resource['id']}"}


def test_a_batch_resolves_only_the_patient_and_refuses_references_between_entries() -> None:
    patient, encounter, condition = _plan(_entries(), PATIENTS, transaction=False)
    assert patient.failure is None and encounter.failure is None
    assert encounter.resource["subject"] == {"reference": "Patient/fhir-a"} and "id" not in encounter.resource
    assert condition.failure[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "resource.encounter.reference" in condition.failure[1] and "batch" in condition.failure[1]


@pytest.mark.parametrize(("entry", "why"), [
    (_post({"resourceType": "Condition", "subject": {"reference": "urn:uuid:nowhere"}}), "no entry"),
    (_post({"resourceType": "Condition", "subject": {"reference": "Patient/fhir-z"}}), "not in patient_ids"),
    (_post({"resourceType": "Condition", "subject": {"reference": "Patient/fhir-a"},
            "asserter": {"reference": "Patient/fhir-b"}}), "more than one patient"),
    (_post({"resourceType": "Patient", "id": "fhir-z"}, "urn:uuid:3"), "FHIR id of one of patient_ids"),
    ({"resource": {"resourceType": "Condition"}, "request": {"method": "PUT", "url": "Condition/1"}}, "POST"),
    (_post({"resourceType": "Condition"}, ifNoneExist="identifier=x"), "conditional"),
    ({"request": {"method": "POST"}}, "resourceType"),
    ("not an object", "object"),
])
def test_an_entry_that_cannot_be_imported_says_why(entry: object, why: str) -> None:
    [planned] = _plan([entry], PATIENTS, transaction=True)
    assert planned.failure is not None and why in planned.failure[1]


def test_two_entries_with_the_same_full_url_are_refused() -> None:
    first, second = _plan([_post({"resourceType": "Encounter"}, ENCOUNTER_URL)] * 2, {"fhir-a": "psn-a"},
                          transaction=True)
    assert first.failure is None and "two entries" in second.failure[1]


@pytest.mark.parametrize(("bundle", "field"), [
    (b"", "bundle_json"),
    (b'{"resourceType":"Bundle","type":"batch","entry":[],"entry":[]}', "bundle_json"),  # duplicate key
    (b'{"resourceType":"Patient"}', "bundle_json.resourceType"),
    (b'{"resourceType":"Bundle","type":"collection","entry":[{}]}', "bundle_json.type"),
    (b'{"resourceType":"Bundle","type":"batch","entry":[]}', "bundle_json.entry"),
])
def test_a_bundle_that_cannot_be_imported_at_all_names_the_field(bundle: bytes, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _parse_bundle(bundle)
    assert refused.value.field == field


def test_the_response_is_a_fhir_batch_response_in_entry_order() -> None:
    done = _Entry(0, stored=StoredRecord("rec-1", 1, [1], "ab" * 32, 7))
    bad = _Entry(1)
    bad.fail(grpc.StatusCode.INVALID_ARGUMENT, "resource_json.status: is required")
    skipped = _Entry(2)
    skipped.fail(grpc.StatusCode.ABORTED, NOT_ATTEMPTED)
    response = _response([done, bad, skipped], "transaction-response")
    bundle = json.loads(response.response_bundle_json)
    assert bundle["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "409 Conflict"]
    assert bundle["entry"][0]["response"]["location"] == "Record/rec-1"
    issue = bundle["entry"][1]["response"]["outcome"]["issue"][0]
    assert issue == {"severity": "error", "code": "invalid", "diagnostics": "resource_json.status: is required"}
    assert (response.committed, response.failed) == (1, 2)
    assert [r.record_id for r in response.results] == ["rec-1", "", ""]


def test_an_unexpected_failure_is_reported_as_internal_without_its_message() -> None:
    assert outcome_of(ValueError("Jane Doe's record")) == (grpc.StatusCode.INTERNAL, "internal error")


def test_the_import_window_halves_when_services_are_overloaded_and_grows_back() -> None:
    from carechain.records.bulk import INITIAL_WINDOW, Window

    window = Window(32)
    assert window.size == INITIAL_WINDOW
    for _ in range(INITIAL_WINDOW):
        assert window.acquire()
    for _ in range(INITIAL_WINDOW):  # a whole window fails at once: one halving, not eight
        window.release(overloaded=True)
    assert window.size == INITIAL_WINDOW / 2
    for _ in range(200):
        window.acquire()
        window.release()
    assert INITIAL_WINDOW < window.size <= 32
    stop = __import__("threading").Event()
    stop.set()
    full = Window(1)
    assert full.acquire() and not full.acquire(stop)  # no room, and the import is ending


def test_a_pseudonym_reference_names_a_listed_patient() -> None:
    """Patient/<pseudonym> (the FHIR REST gateway's references) finds the patient as its FHIR id does."""
    condition = _post({"resourceType": "Condition", "subject": {"reference": "Patient/psn-b"}})
    stranger = _post({"resourceType": "Condition", "subject": {"reference": "Patient/psn-z"}})
    both = _post({"resourceType": "Condition", "subject": {"reference": "Patient/psn-a"},
                  "asserter": {"reference": "Patient/fhir-a"}})
    planned, unknown, one = _plan([condition, stranger, both], PATIENTS, transaction=False)
    assert planned.failure is None and planned.patient_id == "psn-b"
    assert unknown.failure == (grpc.StatusCode.INVALID_ARGUMENT, "resource: is about a patient not in patient_ids")
    assert one.failure is None and one.patient_id == "psn-a"
