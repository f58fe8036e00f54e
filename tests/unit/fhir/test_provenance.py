"""The ledger's Provenance over FHIR REST (fhir.provenance, fhir.provenance_routes): deterministic ids,
``GET /Provenance?target=``, ``GET /Provenance/<record id>.<version>``, and ``_revinclude=Provenance:target``
on searches and $everything, against a records service on a real gRPC server (fhir_fixtures.Scripted)."""

from __future__ import annotations

import datetime
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from fhir_fixtures import gateway

from carechain.fhir.capability import PATIENT_FACING, capability_statement, resource_types
from carechain.fhir.outcomes import FhirError
from carechain.fhir.provenance import parse_provenance_id, parse_target, provenance_id
from carechain.fhir.search import parse_everything, parse_search
from carechain.records.provenance import provenance_resource
from carechain.records.v1 import records_pb2

TYPES = frozenset(resource_types())
READ = {"Authorization": "Bearer token-of-the-caller", "X-Purpose-Of-Use": "TREAT"}
BASE = "https://fhir.example.org/r4"
PSN = "psn-0123abcd"
RECORD = str(uuid.UUID(int=9))
WRITTEN_MS = {1: 1796032800250, 2: 1796119200250, 3: 1796205600250}
RECORDED = {1: "2026-11-30T10:00:00.250Z", 2: "2026-12-01T10:00:00.250Z", 3: "2026-12-02T10:00:00.250Z"}


def _written(version: int, record_id: str = RECORD) -> records_pb2.RecordVersion:
    return records_pb2.RecordVersion(record_id=record_id, version=version, last_updated_ms=WRITTEN_MS[version],
                                     author_organization_id="org-a", author_practitioner_id="prac-1")


def _read_answer(request: records_pb2.GetRecordRequest, resource_type: str = "Condition"
                 ) -> records_pb2.GetRecordResponse:
    """What records answers a read: the version (the latest is 2), its Provenance when asked for."""
    version = _written(request.version or 2, request.record_id)
    resource = {"resourceType": resource_type, "subject": {"reference": f"Patient/{PSN}"}}
    return records_pb2.GetRecordResponse(
        record_id=request.record_id, resource_type=resource_type, patient_id=PSN, record_version=version,
        resource_json=json.dumps(resource).encode(),
        provenance_json=provenance_resource(version, resource_type) if request.provenance else b"")


def _refused(call) -> FhirError:  # type: ignore[no-untyped-def]
    with pytest.raises(FhirError) as refused:
        call()
    return refused.value


def _issue(response) -> dict:
    [issue] = response.json()["issue"]
    return issue


def test_provenance_ids_are_record_id_and_version_and_never_a_record_id() -> None:
    assert provenance_id(RECORD, 2) == f"{RECORD}.2"
    assert parse_provenance_id(f"{RECORD}.2") == (RECORD, 2)
    for other in (RECORD, f"{RECORD}.0", f"{RECORD}.v2", f"{RECORD}.2.1", ".2", f"{'a' * 55}.1"):
        assert parse_provenance_id(other) is None, other
    assert len(provenance_id(RECORD, 999_999_999)) <= 64  # a FHIR id


@pytest.mark.parametrize(("value", "named"), [
    (f"Condition/{RECORD}", ("Condition", RECORD, 0)),
    (f"Condition/{RECORD}/_history/2", ("Condition", RECORD, 2)),
    (f"{BASE}/Observation/{RECORD}", ("Observation", RECORD, 0)),
    (f"{BASE}/Observation/{RECORD}/_history/12", ("Observation", RECORD, 12)),
])
def test_targets(value: str, named: tuple[str, str, int]) -> None:
    assert parse_target(value, TYPES) == named


@pytest.mark.parametrize("value", [RECORD, f"Spaceship/{RECORD}", "Condition/", f"Condition/{RECORD}/_history/0",
                                   f"Condition/{RECORD}/_history/x", "Condition/a b"])
def test_bad_targets_name_the_parameter(value: str) -> None:
    refused = _refused(lambda: parse_target(value, TYPES))
    assert (refused.status, refused.expression) == (400, "target")


def test_target_search_lists_each_versions_provenance_newest_first_and_pages() -> None:
    with gateway() as (client, records):
        records.answers["ListRecordVersions"] = records_pb2.ListRecordVersionsResponse(
            versions=[_written(v) for v in (1, 2, 3)])
        records.answers["GetRecord"] = _read_answer
        response = client.get(f"/Provenance?target=Condition/{RECORD}&_count=2", headers=READ)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert (bundle["type"], bundle["total"]) == ("searchset", 3)
        assert [e["fullUrl"] for e in bundle["entry"]] == [f"{BASE}/Provenance/{RECORD}.3",
                                                          f"{BASE}/Provenance/{RECORD}.2"]
        newest = bundle["entry"][0]
        assert newest["search"] == {"mode": "match"}
        provenance = newest["resource"]
        assert (provenance["resourceType"], provenance["id"]) == ("Provenance", f"{RECORD}.3")
        assert provenance["target"] == [{"reference": f"Condition/{RECORD}/_history/3"}]
        assert provenance["recorded"] == RECORDED[3]
        [agent] = provenance["agent"]
        assert agent["who"]["identifier"]["value"] == "prac-1"
        assert agent["onBehalfOf"]["identifier"]["value"] == "org-a"
        reads = [request for method, request, _ in records.calls if method == "GetRecord"]
        assert sorted((r.version, r.provenance, r.purpose) for r in reads) == [(2, True, 1), (3, True, 1)]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        following = urlsplit(links["next"])
        assert parse_qs(following.query) == {"target": [f"Condition/{RECORD}"], "_count": ["2"],
                                             "_page_version": ["1"]}
        last = client.get(f"{following.path.removeprefix('/r4')}?{following.query}", headers=READ).json()
        assert [e["resource"]["id"] for e in last["entry"]] == [f"{RECORD}.1"]
        assert last["entry"][0]["resource"]["activity"]["coding"][0]["code"] == "CREATE"
        assert "next" not in {link["relation"] for link in last["link"]}


def test_target_of_one_version_reads_that_version_only() -> None:
    with gateway() as (client, records):
        records.answers["GetRecord"] = _read_answer
        bundle = client.get(f"/Provenance?target=Condition/{RECORD}/_history/1", headers=READ).json()
        assert [e["resource"]["id"] for e in bundle["entry"]] == [f"{RECORD}.1"] and bundle["total"] == 1
        assert [(m, r.version) for m, r, _ in records.calls] == [("GetRecord", 1)]
        records.answers["GetRecord"] = (grpc.StatusCode.NOT_FOUND, "no such version")
        missing = client.get(f"/Provenance?target=Condition/{RECORD}/_history/7", headers=READ)
        assert missing.status_code == 200 and "entry" not in missing.json() and missing.json()["total"] == 0
        # Another type's record is no match: its Provenance is not told under this type.
        records.answers["GetRecord"] = lambda request: _read_answer(request, "Observation")
        other = client.get(f"/Provenance?target=Condition/{RECORD}/_history/1", headers=READ).json()
        assert "entry" not in other


def test_target_search_refusals() -> None:
    with gateway() as (client, records):
        records.answers["ListRecordVersions"] = (grpc.StatusCode.PERMISSION_DENIED,
                                                 "not permitted by the patient's consent")
        denied = client.get(f"/Provenance?target=Condition/{RECORD}", headers=READ)
        assert denied.status_code == 403 and _issue(denied)["code"] == "forbidden"
        assert not [m for m, _, _ in records.calls if m == "GetRecord"]  # nothing read once the listing is refused
        both = client.get(f"/Provenance?target=Condition/{RECORD}&patient=Patient/{PSN}", headers=READ)
        assert both.status_code == 400 and _issue(both)["expression"] == ["target"]
        unknown = client.get(f"/Provenance?target=Condition/{RECORD}&date=2026", headers=READ)
        assert unknown.status_code == 400 and _issue(unknown)["expression"] == ["date"]
        twice = client.get(f"/Provenance?target=Condition/{RECORD}&target=Condition/{RECORD}", headers=READ)
        assert twice.status_code == 400 and _issue(twice)["expression"] == ["target"]
        unpurposed = client.get(f"/Provenance?target=Condition/{RECORD}",
                                headers={"Authorization": READ["Authorization"]})
        assert unpurposed.status_code == 400
        assert client.get(f"/Provenance?target=Condition/{RECORD}").status_code == 401
        records.answers["ListRecordVersions"] = records_pb2.ListRecordVersionsResponse(versions=[_written(1)])
        records.answers["GetRecord"] = _read_answer
        lenient = client.get(f"/Provenance?target=Condition/{RECORD}&date=2026",
                             headers={**READ, "Prefer": "handling=lenient"}).json()
        outcome = lenient["entry"][-1]
        assert outcome["search"]["mode"] == "outcome" and "date" in outcome["resource"]["issue"][0]["diagnostics"]


def test_without_target_provenance_is_a_search_of_stored_provenance_records() -> None:
    with gateway() as (client, records):
        records.answers["SearchRecords"] = records_pb2.SearchRecordsResponse()
        response = client.get(f"/Provenance?patient=Patient/{PSN}", headers=READ)
        assert response.status_code == 200, response.text
        [(method, request, _)] = records.calls
        assert method == "SearchRecords" and list(request.resource_types) == ["Provenance"]
        records.answers["PutRecord"] = records_pb2.PutRecordResponse(record_id=RECORD, version=1)
        stored = {"resourceType": "Provenance", "target": [{"reference": f"Patient/{PSN}"}],
                  "recorded": RECORDED[1], "agent": [{"who": {"display": "ward 3"}}]}
        created = client.post("/Provenance", content=json.dumps(stored).encode(),
                              headers={**READ, "Content-Type": "application/fhir+json"})
        assert created.status_code == 201 and records.calls[-1][0] == "PutRecord"  # a create, as for every type


def test_a_provenance_id_resolves_and_a_record_id_stays_the_stored_records_read() -> None:
    with gateway() as (client, records):
        records.answers["GetRecord"] = _read_answer
        resolved = client.get(f"/Provenance/{RECORD}.1", headers=READ)
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["id"] == f"{RECORD}.1" and resolved.json()["recorded"] == RECORDED[1]
        records.answers["GetRecord"] = lambda request: _read_answer(request, "Provenance")
        stored = client.get(f"/Provenance/{RECORD}", headers=READ)
        assert stored.status_code == 200 and stored.json()["id"] == RECORD and "recorded" not in stored.json()
        assert [(r.record_id, r.version, r.provenance) for _, r, _ in records.calls] == [
            (RECORD, 1, True), (RECORD, 0, False)]
        records.answers["GetRecord"] = (grpc.StatusCode.PERMISSION_DENIED, "not permitted by the patient's consent")
        assert client.get(f"/Provenance/{RECORD}.1", headers=READ).status_code == 403


def test_revinclude_provenance_is_parsed_and_repeated_in_links() -> None:
    params = [("patient", f"Patient/{PSN}"), ("_revinclude", "Provenance:target")]
    query = parse_search("Condition", params, TYPES, 1)
    assert query.revinclude_provenance and ("_revinclude", "Provenance:target") in query.parameters
    assert not parse_search("Condition", params[:1], TYPES, 1).revinclude_provenance
    assert parse_everything(PSN, [("_revinclude", "Provenance:target")], TYPES, 1).revinclude_provenance
    for name, value in (("_revinclude", "Provenance:entity"), ("_revinclude", "Condition:subject"),
                        ("_include", "Condition:subject")):
        refused = _refused(lambda n=name, v=value: parse_search("Condition", [*params[:1], (n, v)], TYPES, 1))
        assert (refused.status, refused.expression) == (400, name)
        refused = _refused(lambda n=name, v=value: parse_everything(PSN, [(n, v)], TYPES, 1))
        assert refused.expression == name
        lenient = parse_search("Condition", [*params[:1], (name, value)], TYPES, 1, handle_lenient=True)
        assert lenient.ignored == [name] and not lenient.revinclude_provenance


def test_revinclude_adds_each_matchs_provenance_from_the_same_read() -> None:
    other = str(uuid.UUID(int=10))
    with gateway() as (client, records):
        records.answers["SearchRecords"] = records_pb2.SearchRecordsResponse(
            records=[records_pb2.RecordSummary(record_id=r, resource_type="Condition") for r in (RECORD, other)],
            next_page_token="next-tok")
        records.answers["GetRecord"] = _read_answer
        response = client.get(f"/Condition?patient=Patient/{PSN}&_revinclude=Provenance:target", headers=READ)
        assert response.status_code == 200, response.text
        entries = response.json()["entry"]
        assert [e["search"]["mode"] for e in entries] == ["match", "match", "include", "include"]
        includes = {e["resource"]["id"]: e for e in entries[2:]}
        assert set(includes) == {f"{RECORD}.2", f"{other}.2"}
        assert includes[f"{RECORD}.2"]["fullUrl"] == f"{BASE}/Provenance/{RECORD}.2"
        assert includes[f"{RECORD}.2"]["resource"]["target"] == [{"reference": f"Condition/{RECORD}/_history/2"}]
        reads = [request for method, request, _ in records.calls if method == "GetRecord"]
        assert len(reads) == 2 and all(r.provenance and r.version == 0 for r in reads)  # one read per match
        links = {link["relation"]: link["url"] for link in response.json()["link"]}
        assert parse_qs(urlsplit(links["next"]).query)["_revinclude"] == ["Provenance:target"]

        records.calls.clear()
        everything = client.get(f"/Patient/{PSN}/$everything?_revinclude=Provenance:target", headers=READ).json()
        assert [e["search"]["mode"] for e in everything["entry"]] == ["match", "match", "include", "include"]
        plain = client.get(f"/Condition?patient=Patient/{PSN}", headers=READ).json()
        assert [e["search"]["mode"] for e in plain["entry"]] == ["match", "match"]
        assert [r.provenance for m, r, _ in records.calls if m == "GetRecord"] == [True, True, False, False]
        refused = client.get(f"/Condition?patient=Patient/{PSN}&_include=Condition:subject", headers=READ)
        assert refused.status_code == 400 and _issue(refused)["expression"] == ["_include"]


def test_the_capability_statement_lists_target_and_the_revinclude_exactly() -> None:
    statement = capability_statement(BASE, datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC))
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    provenance = [p["name"] for p in resources["Provenance"]["searchParam"]]
    assert "target" in provenance and "patient" in provenance
    assert all("target" not in [p["name"] for p in r["searchParam"]] for t, r in resources.items()
               if t != "Provenance")
    assert all(r["searchRevInclude"] == ["Provenance:target"] for t, r in resources.items()
               if t not in PATIENT_FACING)  # stored records; a Consent or AuditEvent is no record version
    assert all("searchRevInclude" not in resources[t] for t in PATIENT_FACING)
    assert "_revinclude=Provenance:target" in resources["Patient"]["operation"][0]["documentation"]
