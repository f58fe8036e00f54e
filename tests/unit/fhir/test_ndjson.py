"""NDJSON over POST /: each line checked on its own, and the batch-response with one entry per line."""

from __future__ import annotations

import json

import grpc

from carechain.fhir.capability import resource_types
from carechain.fhir.ndjson import batch_response, is_ndjson, split_lines
from carechain.records.v1 import records_pb2

PSN = "psn-0123abcd"
TYPES = frozenset(resource_types())
BASE = "https://fhir.example.org/r4"


def _line(resource: dict) -> bytes:
    return json.dumps(resource).encode()


CONDITION = {"resourceType": "Condition", "subject": {"reference": f"Patient/{PSN}"}, "code": {"text": "asthma"}}


def test_the_media_types() -> None:
    assert is_ndjson("application/fhir+ndjson") and is_ndjson("application/ndjson; charset=utf-8")
    assert not is_ndjson("application/fhir+json")


def test_each_line_is_one_create_named_by_its_line_number() -> None:
    body = b"\n".join([_line(CONDITION), _line({"resourceType": "Patient", "id": PSN})]) + b"\r\n"
    lines = split_lines(body, TYPES)
    assert [line.number for line in lines] == [1, 2], "a final newline starts no empty line"
    assert all(line.error is None for line in lines)
    assert lines[0].request.patient_id == PSN and lines[0].request.client_ref == "line 1"
    assert lines[0].request.resource_json == _line(CONDITION), "sent as written (records validates it)"
    assert lines[1].request.patient_id == PSN and lines[1].resource_type == "Patient"


def test_bad_lines_are_reported_by_number_without_their_content() -> None:
    secret = {**CONDITION, "note": [{"text": "very private"}]}
    body = b"\n".join([b"", b'{"resourceType": "Condition", "note": "very private"', b"[1]",
                       _line({"resourceType": "Bundle"}), _line({**secret, "subject": {"reference": "Group/1"}}),
                       _line(CONDITION)])
    lines = split_lines(body, TYPES)
    errors = [line.error for line in lines]
    assert [e.status for e in errors[:5]] == [400] * 5 and errors[5] is None
    assert [e.diagnostics.split(":")[0] for e in errors[:5]] == [f"line {n}" for n in range(1, 6)]
    assert errors[3].expression == "Resource.resourceType"
    assert errors[4].expression == "Condition.subject.reference"
    assert "private" not in " ".join(e.diagnostics for e in errors[:5])


def test_an_empty_body_is_one_bad_line() -> None:
    [line] = split_lines(b"", TYPES)
    assert line.error.status == 400 and line.error.diagnostics.startswith("line 1: empty")


def test_the_batch_response_has_one_entry_per_line_in_line_order() -> None:
    lines = split_lines(b"\n".join([_line(CONDITION), b"not json", _line(CONDITION)]), TYPES)
    results = [  # completion order, not line order
        records_pb2.ImportResult(index=1, client_ref="line 3", code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                 message="resource_json.code: must be a CodeableConcept"),
        records_pb2.ImportResult(index=0, client_ref="line 1", code=0, record_id="rec-1"),
    ]
    body = batch_response(lines, results, BASE, 1)
    assert body["type"] == "batch-response"
    first, second, third = (entry["response"] for entry in body["entry"])
    assert first == {"status": "201 Created", "location": f"{BASE}/Condition/rec-1/_history/1", "etag": 'W/"1"'}
    assert second["status"] == "400 Bad Request"
    assert second["outcome"]["issue"][0]["diagnostics"].startswith("line 2: Resource: is not valid JSON")
    assert third["status"] == "400 Bad Request"
    [issue] = third["outcome"]["issue"]
    assert issue["expression"] == ["Condition.code"]
    assert issue["diagnostics"] == "line 3: Condition.code: must be a CodeableConcept"


def test_a_patient_records_refuses_is_named_where_the_line_names_it() -> None:
    lines = split_lines(_line(CONDITION), TYPES)
    refused = records_pb2.ImportResult(client_ref="line 1", code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                       message="patient_id: is not a registered patient")
    [entry] = batch_response(lines, [refused], BASE, 1)["entry"]
    [issue] = entry["response"]["outcome"]["issue"]
    assert issue["expression"] == ["Condition.subject.reference"]
    assert issue["diagnostics"] == "line 1: Condition.subject.reference: is not a registered patient"


def test_a_line_records_did_not_answer_is_not_reported_as_created() -> None:
    lines = split_lines(_line(CONDITION), TYPES)
    [entry] = batch_response(lines, [], BASE, 1)["entry"]
    assert entry["response"]["status"].startswith("500")


def test_the_capability_statement_declares_ndjson_on_the_batch_interaction() -> None:
    import datetime

    from carechain.fhir.capability import capability_statement

    statement = capability_statement(BASE, datetime.datetime.now(datetime.UTC))
    [batch] = [i for i in statement["rest"][0]["interaction"] if i["code"] == "batch"]
    assert "application/fhir+ndjson" in batch["documentation"] and "line N" in batch["documentation"]
