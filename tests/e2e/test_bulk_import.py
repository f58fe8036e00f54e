"""Bulk import through the real services: a Synthea NDJSON stream, transaction and batch Bundles.

Every imported resource must be a record exactly as a PutRecord makes it (readable back byte for byte by a
consented reader, on the ledger for its patient); a transaction with one bad entry writes nothing; a batch's
entries succeed or fail on their own; nothing is imported for another organisation's patient.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid

import grpc
import pytest
from helpers import ledger_records, new_hospital, new_patient, new_practitioner, records_of

from carechain.client.sdk import Purpose, permit
from carechain.core.fhir import PATIENT_REFERENCE_FIELDS
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES
from carechain.records.bulk import OVERLOADED

ALL_CATEGORIES = [NORMAL, *sorted(SENSITIVE_CATEGORIES)]


def _lines(synthea_dir, name: str) -> list[bytes]:
    with gzip.open(synthea_dir / f"{name}.000.ndjson.gz", "rb") as handle:
        return [line.rstrip(b"\n") for line in handle if line.strip()]


def _condition(patient_ref: str, encounter_ref: str = "") -> dict:
    condition = {"resourceType": "Condition", "subject": {"reference": patient_ref},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
                 "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                "code": "active"}]}}
    if encounter_ref:
        condition["encounter"] = {"reference": encounter_ref}
    return condition


def _encounter(patient_ref: str) -> dict:
    return {"resourceType": "Encounter", "status": "finished", "subject": {"reference": patient_ref},
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}


def _entry(resource: dict, full_url: str = "") -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def test_a_synthea_stream_imports_every_patient_resource_as_its_own_record(network, synthea_dir) -> None:
    hospital = new_hospital(network)
    reader = new_practitioner(network, hospital, "general-practice")
    patients = {}
    for raw in _lines(synthea_dir, "Patient"):
        fhir_id = json.loads(raw)["id"]
        patient, _ = new_patient(network, hospital, fhir_id)
        patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                            categories=ALL_CATEGORIES))
        patients[fhir_id] = patient.principal_id
        patient.client.close()
    sent: list[tuple[str, bytes, str]] = [(patients[json.loads(raw)["id"]], raw, f"Patient:{i}")
                                          for i, raw in enumerate(_lines(synthea_dir, "Patient"))]
    # A slice of the sample keeps the test short on a loaded machine; the CLI test imports whole files.
    for kind, count in (("Condition", 120), ("AllergyIntolerance", 11)):
        field = PATIENT_REFERENCE_FIELDS[kind]
        for i, raw in enumerate(_lines(synthea_dir, kind)[:count]):
            fhir_id = json.loads(raw)[field]["reference"].removeprefix("Patient/")
            sent.append((patients[fhir_id], raw, f"{kind}:{i}"))
    # One resource that fails on its own (not about its patient) does not stop the others.
    sent.append((next(iter(patients.values())), json.dumps(_condition("Patient/someone-else")).encode(), "bad:0"))

    results = list(hospital.client.import_records(iter(sent)))

    assert sorted(r.index for r in results) == list(range(len(sent)))
    by_ref = {r.client_ref: r for r in results}
    # On a loaded machine a service may not keep up: those resources failed as UNAVAILABLE or
    # DEADLINE_EXCEEDED (nothing else) and the user resends them, as `carechain records import --resume` does.
    for _ in range(5):
        retry = [r for r in by_ref.values() if r.code in OVERLOADED]
        if not retry:
            break
        again = list(hospital.client.import_records(sent[r.index] for r in retry))
        by_ref.update({r.client_ref: r for r in again})
        for r in again:  # index is the position in this stream: keep the original one
            r.index = next(i for i, s in enumerate(sent) if s[2] == r.client_ref)
    bad = by_ref.pop("bad:0")
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "subject" in bad.message
    assert all(r.code == 0 and r.record_id for r in by_ref.values()), [r.message for r in by_ref.values() if r.code]
    assert len({r.record_id for r in by_ref.values()}) == len(sent) - 1
    # Each is a record as PutRecord makes it: on the ledger for its patient, read back byte for byte.
    on_ledger = ledger_records(network)
    assert all(on_ledger.get(r.record_id) == r.content_sha256 for r in by_ref.values())
    for result in list(by_ref.values())[::25]:
        assert reader.client.get_record(result.record_id).resource_json == sent[result.index][1]


def test_a_transaction_resolves_urn_uuid_references_and_writes_every_entry(network) -> None:
    hospital = new_hospital(network)
    reader = new_practitioner(network, hospital, "general-practice")
    patient, fhir_id = new_patient(network, hospital)
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                        categories=ALL_CATEGORIES))
    patient_url, encounter_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        _entry({"resourceType": "Patient", "id": fhir_id, "gender": "female"}, patient_url),
        _entry(_encounter(patient_url), encounter_url),
        _entry(_condition(patient_url, encounter_url)),
    ]}

    response = hospital.client.import_bundle(bundle, [patient.principal_id])

    assert (response.committed, response.failed) == (3, 0)
    fhir = json.loads(response.response_bundle_json)
    assert fhir["type"] == "transaction-response"
    assert [e["response"]["status"] for e in fhir["entry"]] == ["201 Created"] * 3
    assert {r.record_id for r in response.results} <= records_of(network, patient.principal_id)
    encounter = json.loads(reader.client.get_record(response.results[1].record_id).resource_json)
    condition = json.loads(reader.client.get_record(response.results[2].record_id).resource_json)
    assert encounter["id"] == encounter_url.removeprefix("urn:uuid:")
    assert condition["subject"] == {"reference": f"Patient/{fhir_id}"}
    assert condition["encounter"] == {"reference": f"Encounter/{encounter['id']}"}
    patient.client.close()


def test_a_transaction_with_one_bad_entry_writes_nothing(network) -> None:
    hospital = new_hospital(network)
    patient, fhir_id = new_patient(network, hospital)
    before = records_of(network, patient.principal_id)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        _entry(_condition(f"Patient/{fhir_id}")),
        _entry(_condition(f"Patient/{fhir_id}", f"urn:uuid:{uuid.uuid4()}")),  # refers to no entry
        _entry(_condition(f"Patient/{fhir_id}")),
    ]}
    with pytest.raises(grpc.RpcError) as refused:
        hospital.client.import_bundle(bundle, [patient.principal_id])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bundle_json.entry[1]" in refused.value.details() and "encounter.reference" in refused.value.details()
    invalid = {"resourceType": "Bundle", "type": "transaction", "entry": [
        _entry(_condition(f"Patient/{fhir_id}")), _entry({"resourceType": "Condition", "subject": {}})]}
    with pytest.raises(grpc.RpcError) as refused:
        hospital.client.import_bundle(invalid, [patient.principal_id])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "entry[1]" in refused.value.details()
    assert records_of(network, patient.principal_id) == before
    patient.client.close()


def test_a_batch_entry_fails_on_its_own_with_an_operation_outcome(network) -> None:
    hospital = new_hospital(network)
    patient, fhir_id = new_patient(network, hospital)
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        _entry(_condition(f"Patient/{fhir_id}")),
        _entry({"resourceType": "Condition", "subject": {"reference": f"Patient/{fhir_id}"}, "bogus": 1}),
        {"resource": _condition(f"Patient/{fhir_id}"), "request": {"method": "DELETE", "url": "Condition/1"}},
        _entry(_encounter(f"Patient/{fhir_id}")),
    ]}

    response = hospital.client.import_bundle(bundle, [patient.principal_id])

    assert (response.committed, response.failed) == (2, 2)
    assert [r.code == 0 for r in response.results] == [True, False, False, True]
    entries = json.loads(response.response_bundle_json)["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "400 Bad Request", "400 Bad Request",
                                                          "201 Created"]
    outcome = entries[1]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error"
    assert entries[0]["response"]["location"] == f"Record/{response.results[0].record_id}"
    assert {response.results[0].record_id, response.results[3].record_id} <= records_of(network, patient.principal_id)
    patient.client.close()


def test_nothing_is_imported_for_another_organisations_patient(network) -> None:
    hospital, other = new_hospital(network), new_hospital(network)
    mine, my_fhir = new_patient(network, hospital)
    theirs, their_fhir = new_patient(network, other)
    before = records_of(network, mine.principal_id)
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        _entry(_condition(f"Patient/{my_fhir}")), _entry(_condition(f"Patient/{their_fhir}"))]}
    with pytest.raises(grpc.RpcError) as refused:
        hospital.client.import_bundle(bundle, [mine.principal_id, theirs.principal_id])
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert records_of(network, mine.principal_id) == before
    # In a stream, such a resource fails on its own.
    [result] = hospital.client.import_records([(theirs.principal_id, _condition(f"Patient/{their_fhir}"), "x")])
    assert result.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert not records_of(network, theirs.principal_id)
    mine.client.close()
    theirs.client.close()


def _wait_until_writes_reach_storage(network, hospital, timeout: float = 30) -> None:
    """Until one write (for a patient of its own) succeeds: the gateway reconnects to a restarted peer."""
    probe, probe_fhir_id = new_patient(network, hospital)
    probe.client.close()
    resource = _condition(f"Patient/{probe_fhir_id}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            hospital.client.put_record(probe.principal_id, resource)
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
            time.sleep(0.2)


def test_a_transaction_whose_writes_fail_says_which_entries_committed(network) -> None:
    hospital = new_hospital(network)
    patient, fhir_id = new_patient(network, hospital)
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [_entry(_condition(f"Patient/{fhir_id}")) for _ in range(40)]}
    # Valid throughout, so it passes the up-front check; then storage is down for every write.
    network.stop_service("storage")
    try:
        response = hospital.client.import_bundle(bundle, [patient.principal_id])
    finally:
        network.start_service("storage")

    codes = {r.code for r in response.results}
    assert grpc.StatusCode.UNAVAILABLE.value[0] in codes
    assert codes <= {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.ABORTED.value[0]}
    assert (response.committed, response.failed) == (0, 40)
    statuses = {e["response"]["status"] for e in json.loads(response.response_bundle_json)["entry"]}
    assert statuses <= {"503 Service Unavailable", "409 Conflict"}
    aborted = [r for r in response.results if r.code == grpc.StatusCode.ABORTED.value[0]]
    assert len(aborted) >= 40 - 32 and all("not attempted" in r.message for r in aborted)  # 32 at a time
    assert not records_of(network, patient.principal_id)
    # Back up (once records' channel to storage has reconnected: its backoff is at most 1 s), the same
    # bundle imports whole.
    _wait_until_writes_reach_storage(network, hospital)
    assert hospital.client.import_bundle(bundle, [patient.principal_id]).committed == 40
    patient.client.close()
