"""Versions over FHIR REST (fhir.versions): ETag / If-Match parsing, and read, vread, update and history
against a records service on a real gRPC server (fhir_fixtures.Scripted)."""

from __future__ import annotations

import datetime
import json
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from fhir_fixtures import gateway

from carechain.fhir.capability import capability_statement
from carechain.fhir.outcomes import FhirError, http_error
from carechain.fhir.versions import etag, history_count, http_date, if_match_version, version_id
from carechain.records.v1 import records_pb2

BEARER = {"Authorization": "Bearer token-of-the-caller"}
READ = {**BEARER, "X-Purpose-Of-Use": "TREAT"}
WRITE = {**BEARER, "Content-Type": "application/fhir+json"}
PSN = "psn-0123abcd"
RECORD = "rec-9"
CONDITION = {"resourceType": "Condition", "subject": {"reference": f"Patient/{PSN}"}, "code": {"text": "asthma"}}
BASE = "https://fhir.example.org/r4"
# 2026-11-30T10:00:00.250Z and a day later, in Unix ms.
WRITTEN_MS = {1: 1796032800250, 2: 1796119200250, 3: 1796205600250}


def _instant(ms: int) -> str:
    return {1796032800250: "2026-11-30T10:00:00.250Z", 1796119200250: "2026-12-01T10:00:00.250Z",
            1796205600250: "2026-12-02T10:00:00.250Z"}[ms]


def _written(version: int) -> records_pb2.RecordVersion:
    return records_pb2.RecordVersion(record_id=RECORD, version=version, last_updated_ms=WRITTEN_MS[version],
                                     author_organization_id="org-a")


def _read_answer(version: int, resource_type: str = "Condition") -> records_pb2.GetRecordResponse:
    """What records answers a read of a version: the exact bytes, and the versioned rendering of them."""
    stored = {**CONDITION, "note": [{"text": f"version {version}"}]}
    versioned = {**stored, "meta": {"versionId": str(version), "lastUpdated": _instant(WRITTEN_MS[version])}}
    return records_pb2.GetRecordResponse(
        record_id=RECORD, resource_json=json.dumps(stored).encode(), patient_id=PSN, resource_type=resource_type,
        record_version=_written(version), versioned_resource_json=json.dumps(versioned).encode())


def _issue(response) -> dict:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    return issue


@pytest.mark.parametrize(("header", "version"), [
    (None, 0), ("", 0), ("*", 0), ('W/"3"', 3), ('"3"', 3), (' W/"12" ', 12), ('W/"123456789"', 123456789),
])
def test_if_match_names_the_version_amended(header, version) -> None:
    assert if_match_version(header) == version


@pytest.mark.parametrize("header", ['W/"0"', "3", 'W/"a"', 'W/"1", W/"2"', 'W/"01"', "W/3", 'w/"3"', 'W/"-1"'])
def test_an_if_match_that_is_not_one_version_tag_is_400(header) -> None:
    with pytest.raises(FhirError) as refused:
        if_match_version(header)
    assert refused.value.status == 400 and refused.value.diagnostics.startswith("If-Match:")


def test_etags_dates_versions_and_counts() -> None:
    assert etag(3) == 'W/"3"' and if_match_version(etag(3)) == 3
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(WRITTEN_MS[1]) == "Mon, 30 Nov 2026 10:00:00 GMT"
    assert version_id("2") == 2
    for bad in ("0", "x", "-1", "1.0", "9" * 10, "\u0663"):
        with pytest.raises(FhirError) as missing:
            version_id(bad)
        assert missing.value.status == 404
    assert history_count(None) == 20 and history_count("5") == 5 and history_count("100") == 100
    for bad in ("0", "101", "a", "-3"):
        with pytest.raises(FhirError) as invalid:
            history_count(bad)
        assert invalid.value.status == 400 and invalid.value.expression == "_count"


def test_a_stale_if_version_is_412_and_other_preconditions_keep_their_mapping() -> None:
    stale = http_error(grpc.StatusCode.FAILED_PRECONDITION, "if_version: the record's latest version is 3")
    assert (stale.status, stale.code, stale.diagnostics) == (412, "conflict",
                                                             "If-Match: the record's latest version is 3")
    assert http_error(grpc.StatusCode.FAILED_PRECONDITION, "record_id: the record was erased on 2026-11-30"
                      ).status == 410
    assert http_error(grpc.StatusCode.FAILED_PRECONDITION, "patient_id: the patient was deactivated").status == 422


def test_the_capability_statement_declares_exactly_the_version_interactions() -> None:
    statement = capability_statement(BASE, datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC))
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    condition = resources["Condition"]
    assert [i["code"] for i in condition["interaction"]] == [
        "create", "read", "vread", "update", "history-instance", "search-type"]
    assert (condition["versioning"], condition["readHistory"], condition["updateCreate"],
            condition["conditionalUpdate"]) == ("versioned", True, False, False)
    assert resources["Patient"]["interaction"] == condition["interaction"]  # a Patient record is updated alike
    [update] = [i for i in condition["interaction"] if i["code"] == "update"]
    assert "412" in update["documentation"] and "403" in update["documentation"] and "405" in update["documentation"]


def test_read_serves_the_ledgers_version_with_etag_and_last_modified() -> None:
    with gateway() as (client, records):
        records.answers["GetRecord"] = _read_answer(2)
        response = client.get(f"/Condition/{RECORD}", headers=READ)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["last-modified"] == "Tue, 01 Dec 2026 10:00:00 GMT"
    served = response.json()
    assert served["meta"] == {"versionId": "2", "lastUpdated": "2026-12-01T10:00:00.250Z"}
    assert served["id"] == RECORD and served["note"] == [{"text": "version 2"}]
    [(method, request, _)] = records.calls
    assert method == "GetRecord" and request.version == 0  # the latest consent has folded


def test_vread_asks_for_the_version_and_an_unknown_one_is_404() -> None:
    with gateway() as (client, records):
        records.answers["GetRecord"] = _read_answer(1)
        response = client.get(f"/Condition/{RECORD}/_history/1", headers=READ)
        assert response.status_code == 200 and response.headers["etag"] == 'W/"1"'
        assert response.json()["meta"]["versionId"] == "1"
        assert records.calls[-1][1].version == 1
        records.answers["GetRecord"] = (grpc.StatusCode.NOT_FOUND, "version: the record has no such version")
        missing = client.get(f"/Condition/{RECORD}/_history/7", headers=READ)
        assert missing.status_code == 404 and _issue(missing)["code"] == "not-found"
        calls = len(records.calls)
        assert client.get(f"/Condition/{RECORD}/_history/latest", headers=READ).status_code == 404
        assert client.get(f"/Condition/{RECORD}/_history/1", headers=BEARER).status_code == 400  # no purpose
        assert len(records.calls) == calls
        records.answers["GetRecord"] = _read_answer(1, resource_type="Observation")
        assert client.get(f"/Condition/{RECORD}/_history/1", headers=READ).status_code == 404


def test_update_passes_the_exact_bytes_and_if_match_as_if_version() -> None:
    body = json.dumps({**CONDITION, "id": RECORD, "note": [{"text": "confirmed"}]}).encode()
    with gateway() as (client, records):
        records.answers["UpdateRecord"] = records_pb2.PutRecordResponse(record_id=RECORD, version=2)
        response = client.put(f"/Condition/{RECORD}", content=body, headers={**WRITE, "If-Match": 'W/"1"'})
        assert response.status_code == 200, response.text
        assert response.headers["location"] == f"{BASE}/Condition/{RECORD}/_history/2"
        assert response.headers["etag"] == 'W/"2"'
        assert response.json()["meta"]["versionId"] == "2" and response.json()["note"] == [{"text": "confirmed"}]
        [(method, request, metadata)] = records.calls
        assert method == "UpdateRecord" and (request.record_id, request.if_version) == (RECORD, 1)
        assert request.resource_json == body and metadata["authorization"] == BEARER["Authorization"]
        client.put(f"/Condition/{RECORD}", content=body, headers=WRITE)
        assert records.calls[-1][1].if_version == 0  # no If-Match: whatever is latest
        minimal = client.put(f"/Condition/{RECORD}", content=body, headers={**WRITE, "Prefer": "return=minimal"})
        assert minimal.status_code == 200 and minimal.content == b"" and minimal.headers["etag"] == 'W/"2"'


def test_a_patient_record_is_updated_at_its_record_id_and_served_with_its_pseudonym() -> None:
    """The body's id is the URL's record id, sent as is (records accepts it for a version of that record);
    the Patient references served are by the pseudonym records answers, whichever id the body used."""
    patient = {"resourceType": "Patient", "id": RECORD, "name": [{"family": "Rivera"}],
               "link": [{"other": {"reference": "Patient/mrn-7"}, "type": "seealso"}]}
    body = json.dumps(patient).encode()
    with gateway() as (client, records):
        records.answers["UpdateRecord"] = records_pb2.PutRecordResponse(record_id=RECORD, version=2, patient_id=PSN)
        response = client.put(f"/Patient/{RECORD}", content=body, headers={**WRITE, "If-Match": 'W/"1"'})
        assert response.status_code == 200, response.text
        [(method, request, _)] = records.calls
    assert method == "UpdateRecord" and (request.record_id, request.if_version) == (RECORD, 1)
    assert request.resource_json == body
    assert response.headers["location"] == f"{BASE}/Patient/{RECORD}/_history/2"
    served = response.json()
    assert (served["id"], served["meta"]["versionId"], served["name"]) == (RECORD, "2", [{"family": "Rivera"}])
    assert served["link"][0]["other"] == {"reference": f"Patient/{PSN}"}


@pytest.mark.parametrize(("answer", "status", "issue_code", "diagnostics"), [
    ((grpc.StatusCode.FAILED_PRECONDITION, "if_version: the record's latest version is 3"), 412, "conflict",
     "If-Match: the record's latest version is 3"),
    ((grpc.StatusCode.PERMISSION_DENIED, "only the authoring organization (or its practitioners) updates a record"),
     403, "forbidden", "only the authoring organization (or its practitioners) updates a record"),
    ((grpc.StatusCode.FAILED_PRECONDITION, "patient_id: the patient was deactivated; no new records are accepted"),
     422, "business-rule", "patient_id: the patient was deactivated; no new records are accepted"),
    ((grpc.StatusCode.ALREADY_EXISTS, "record rec-9:v3 already has a data key"), 412, "conflict",
     'If-Match: W/"2": another update of the record committed first; read the record again and retry'),
    ((grpc.StatusCode.INVALID_ARGUMENT, "resource_json: a new version keeps the resource type Condition"),
     400, "invalid", "Condition: a new version keeps the resource type Condition"),
])
def test_update_refused_by_records(answer, status, issue_code, diagnostics) -> None:
    body = json.dumps({**CONDITION, "id": RECORD}).encode()
    with gateway() as (client, records):
        records.answers["UpdateRecord"] = answer
        response = client.put(f"/Condition/{RECORD}", content=body, headers={**WRITE, "If-Match": 'W/"2"'})
    assert response.status_code == status
    issue = _issue(response)
    assert (issue["code"], issue["diagnostics"]) == (issue_code, diagnostics)


@pytest.mark.parametrize(("resource_type", "body", "headers", "status", "expression"), [
    ("Condition", {**CONDITION, "id": "another-record"}, {}, 400, "Condition.id"),
    ("Condition", CONDITION, {}, 400, "Condition.id"),
    ("Condition", {**CONDITION, "resourceType": "Observation", "id": RECORD}, {}, 400, "Condition.resourceType"),
    ("Condition", {**CONDITION, "id": RECORD}, {"If-Match": "1"}, 400, ""),
    ("Condition", {**CONDITION, "id": RECORD, "subject": {"reference": "Group/1"}}, {}, 400,
     "Condition.subject.reference"),
    ("Patient", {"resourceType": "Patient", "id": PSN}, {}, 400, "Patient.id"),
    ("Patient", {"resourceType": "Patient"}, {}, 400, "Patient.id"),
    ("StructureDefinition", {"resourceType": "StructureDefinition", "id": RECORD}, {}, 404, ""),
])
def test_update_refusals_before_records(resource_type, body, headers, status, expression) -> None:
    with gateway() as (client, records):
        response = client.put(f"/{resource_type}/{RECORD}", content=json.dumps(body).encode(),
                              headers={**WRITE, **headers})
        assert records.calls == []
    assert response.status_code == status, response.text
    assert _issue(response).get("expression", [""]) == [expression]


def _history_answers(records, newest: int) -> None:
    records.answers["ListRecordVersions"] = records_pb2.ListRecordVersionsResponse(
        versions=[_written(v) for v in range(1, newest + 1)])
    records.answers["GetRecord"] = lambda request: _read_answer(request.version)


def test_history_is_a_history_bundle_newest_first_paged_by_count() -> None:
    with gateway() as (client, records):
        _history_answers(records, 3)
        response = client.get(f"/Condition/{RECORD}/_history?_count=2", headers=READ)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "history", 3)
        assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["3", "2"]
        newest = bundle["entry"][0]
        assert newest["fullUrl"] == f"{BASE}/Condition/{RECORD}"
        assert newest["request"] == {"method": "PUT", "url": f"Condition/{RECORD}"}
        assert newest["response"] == {"status": "200 OK", "etag": 'W/"3"', "lastModified": "2026-12-02T10:00:00.250Z"}
        assert newest["resource"]["note"] == [{"text": "version 3"}]
        listing = [request for method, request, _ in records.calls if method == "ListRecordVersions"]
        assert [(r.record_id, r.page_size, r.page_token) for r in listing] == [(RECORD, 100, "")]
        assert sorted(r.version for m, r, _ in records.calls if m == "GetRecord") == [2, 3]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"] == f"{BASE}/Condition/{RECORD}/_history?_count=2"
        following = urlsplit(links["next"])
        assert following.path == f"/r4/Condition/{RECORD}/_history"
        last = client.get(f"{following.path.removeprefix('/r4')}?{following.query}", headers=READ).json()
        assert parse_qs(following.query)["_count"] == ["2"]
        assert [e["resource"]["meta"]["versionId"] for e in last["entry"]] == ["1"]
        assert last["entry"][0]["request"] == {"method": "POST", "url": "Condition"}
        assert last["entry"][0]["response"]["status"] == "201 Created"
        assert "next" not in {link["relation"] for link in last["link"]}


def test_history_follows_records_pages_and_refusals_are_outcomes() -> None:
    pages = {"": records_pb2.ListRecordVersionsResponse(versions=[_written(1), _written(2)], next_page_token="3"),
             "3": records_pb2.ListRecordVersionsResponse(versions=[_written(3)])}
    with gateway() as (client, records):
        records.answers["ListRecordVersions"] = lambda request: pages[request.page_token]
        records.answers["GetRecord"] = lambda request: _read_answer(request.version)
        bundle = client.get(f"/Condition/{RECORD}/_history", headers=READ).json()
        assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
        assert client.get(f"/Condition/{RECORD}/_history?_count=0", headers=READ).status_code == 400
        records.answers["ListRecordVersions"] = (grpc.StatusCode.PERMISSION_DENIED,
                                                 "not permitted by the patient's consent")
        denied = client.get(f"/Condition/{RECORD}/_history", headers=READ)
        assert denied.status_code == 403 and _issue(denied)["code"] == "forbidden"
        records.answers["ListRecordVersions"] = records_pb2.ListRecordVersionsResponse(versions=[_written(1)])
        records.answers["GetRecord"] = _read_answer(1, resource_type="Observation")
        assert client.get(f"/Condition/{RECORD}/_history", headers=READ).status_code == 404


def test_an_update_without_if_match_that_loses_a_race_is_409() -> None:
    with gateway() as (client, records):
        records.answers["UpdateRecord"] = (grpc.StatusCode.ALREADY_EXISTS, "record rec-9:v3 already has a data key")
        response = client.put(f"/Condition/{RECORD}", content=json.dumps({**CONDITION, "id": RECORD}).encode(),
                              headers=WRITE)
    assert response.status_code == 409 and "data key" not in response.text
    assert _issue(response)["diagnostics"].startswith("the update: another update of the record committed first")
