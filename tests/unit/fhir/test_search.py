"""FHIR search parameters (carechain.fhir.search) and the search routes over a scripted records service."""

from __future__ import annotations

import datetime
import json
import urllib.parse

import grpc
import pytest
from fhir_fixtures import gateway

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.fhir.app import GatewayConfig
from carechain.fhir.capability import resource_types
from carechain.fhir.outcomes import FhirError
from carechain.fhir.search import (
    MAX_COUNT,
    PAGE_TOKEN,
    categories_of,
    date_window,
    parse_everything,
    parse_search,
    patient_id_of,
    updated_window,
)
from carechain.fhir.smart import token_verifier
from carechain.records.v1 import records_pb2
from carechain.runtime.auth import Caller, caller_claims

TYPES = frozenset(resource_types())
TREAT = common_pb2.PURPOSE_OF_USE_TREAT
PSN = "psn-0123abcd"
BEARER = {"Authorization": "Bearer token-of-the-caller", "X-Purpose-Of-Use": "TREAT"}
Category = common_pb2.SensitivityCategory


def _ms(text: str) -> int:
    return round(datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp() * 1000)


def _refused(call) -> FhirError:  # type: ignore[no-untyped-def]
    with pytest.raises(FhirError) as refused:
        call()
    return refused.value


@pytest.mark.parametrize("reference", [PSN, f"Patient/{PSN}", f"https://fhir.example.org/r4/Patient/{PSN}"])
def test_patient_references(reference: str) -> None:
    assert patient_id_of(reference, "patient") == PSN


@pytest.mark.parametrize("reference", ["Practitioner/x", "Patient/", "Patient/a b", "x" * 65])
def test_bad_patient_references_name_the_parameter(reference: str) -> None:
    error = _refused(lambda: patient_id_of(reference, "subject"))
    assert error.status == 400 and error.expression == "subject" and error.diagnostics.startswith("subject:")


def test_clinical_dates_are_whole_days_with_prefixes() -> None:
    day = _ms("2026-03-02")
    assert date_window(["2026-03-02"], "date") == (day, day)
    assert date_window(["eq2026-03"], "date") == (_ms("2026-03-01"), _ms("2026-03-31"))
    assert date_window(["ge2026"], "date") == (_ms("2026-01-01"), 0)
    assert date_window(["gt2026-03-02"], "date") == (_ms("2026-03-03"), 0)
    assert date_window(["lt2026-03-02"], "date") == (0, _ms("2026-03-01"))
    assert date_window(["le2026-03-02T10:00:00Z"], "date") == (0, day)
    assert date_window(["ge2026-01-01", "le2026-06-30"], "date") == (_ms("2026-01-01"), _ms("2026-06-30"))
    for bad, code in (("ne2026-03-02", "not-supported"), ("2026-13-01", "value"), ("yesterday", "value"),
                      ("ge2026-06-01&le", "value")):
        error = _refused(lambda bad=bad: date_window([bad], "date"))
        assert (error.status, error.code, error.expression) == (400, code, "date")
    assert _refused(lambda: date_window(["ge2026-06-01", "le2026-01-01"], "date")).status == 400


def test_last_updated_is_a_half_open_window() -> None:
    assert updated_window(["ge2026-03-02"], "_lastUpdated") == (_ms("2026-03-02"), 0)
    assert updated_window(["gt2026-03-02"], "_lastUpdated") == (_ms("2026-03-03"), 0)
    assert updated_window(["lt2026-03-02"], "_lastUpdated") == (0, _ms("2026-03-02"))
    assert updated_window(["le2026-03-02"], "_lastUpdated") == (0, _ms("2026-03-03"))
    assert updated_window(["2026-03-02T10:00:00+01:00"], "_lastUpdated") == (
        _ms("2026-03-02T09:00:00"), _ms("2026-03-02T09:00:01"))
    assert _refused(lambda: updated_window(["gt2026-03-02", "lt2026-03-02"], "_lastUpdated")).status == 400


def test_security_labels_are_sensitivity_categories() -> None:
    assert categories_of(["http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"]) == [
        Category.SENSITIVITY_CATEGORY_MENTAL_HEALTH]
    assert categories_of(["HIV,ETH"]) == sorted([Category.SENSITIVITY_CATEGORY_HIV_STI,
                                                  Category.SENSITIVITY_CATEGORY_SUBSTANCE_USE])
    assert categories_of(["urn:oid:2.16.840.1.113883.5.25|N"]) == [Category.SENSITIVITY_CATEGORY_NORMAL]
    error = _refused(lambda: categories_of(["http://example.org|PSY"]))
    assert (error.status, error.expression) == (400, "_security")


def test_a_search_is_one_search_records_request() -> None:
    query = parse_search("Condition", [("patient", f"Patient/{PSN}"), ("date", "ge2026-01-01"),
                                       ("_lastUpdated", "lt2026-12-01"), ("_count", "500"), ("_format", "json")],
                         TYPES, TREAT)
    request = query.request
    assert request.patient_id == PSN and list(request.resource_types) == ["Condition"] and request.purpose == TREAT
    assert request.date_from_ms == _ms("2026-01-01") and request.date_to_ms == 0
    assert request.updated_before_ms == _ms("2026-12-01") and request.page_size == MAX_COUNT
    assert ("_format", "json") not in query.parameters and ("patient", f"Patient/{PSN}") in query.parameters
    system = parse_search(None, [("subject", PSN), ("_type", "Condition,Observation"), (PAGE_TOKEN, "tok")],
                          TYPES, TREAT).request
    assert list(system.resource_types) == ["Condition", "Observation"] and system.page_token == "tok"
    assert parse_search("Patient", [("_id", PSN)], TYPES, TREAT).request.patient_id == PSN


@pytest.mark.parametrize(("resource_type", "params", "expression", "code"), [
    ("Condition", [], "patient", "required"),
    ("Condition", [("patient", "a"), ("subject", "b")], "patient", "invalid"),
    ("Condition", [("patient", PSN), ("code", "x")], "code", "not-supported"),
    ("Immunization", [("patient", PSN), ("category", "x")], "category", "not-supported"),  # no such element
    (None, [("patient", PSN), ("_type", "Condition"), ("category", "x")], "category", "not-supported"),
    ("Condition", [("patient", PSN), ("category:text", "x")], "category:text", "not-supported"),
    ("Condition", [("patient", PSN), ("category", "a"), ("category", "b")], "category", "invalid"),  # AND
    ("Condition", [("patient", PSN), ("category", "a,")], "category", "value"),
    ("Condition", [("patient", PSN), ("category", "s|a|b")], "category", "value"),
    ("Condition", [("patient", PSN), ("_type", "Condition")], "_type", "not-supported"),  # system level only
    ("Condition", [("patient", PSN), ("_count", "0")], "_count", "value"),
    (None, [("patient", PSN), ("_type", "Spaceship")], "_type", "not-supported"),
    ("Patient", [("patient", PSN)], "patient", "not-supported"),
])
def test_search_refusals_name_the_parameter(resource_type, params, expression, code) -> None:
    error = _refused(lambda: parse_search(resource_type, params, TYPES, TREAT))
    assert (error.status, error.expression, error.code) == (400, expression, code)


def test_lenient_handling_ignores_unknown_parameters_and_says_so() -> None:
    query = parse_search("Condition", [("patient", PSN), ("code", "x")], TYPES, TREAT, handle_lenient=True)
    assert query.ignored == ["code"] and ("code", "x") not in query.parameters
    # category where it cannot be applied is refused even so: a client must not believe it was applied.
    for resource_type, name in (("Immunization", "category"), ("Condition", "category:not")):
        assert _refused(lambda: parse_search(resource_type, [("patient", PSN), (name, "x")], TYPES, TREAT,  # noqa: B023
                                             handle_lenient=True)).status == 400


def test_category_is_a_token_list_for_records() -> None:
    """category maps to records' resource_categories (commas: any of them), and the links repeat it."""
    condition = "http://terminology.hl7.org/CodeSystem/condition-category|encounter-diagnosis"
    query = parse_search("Condition", [("patient", PSN), ("category", f"{condition},|problem-list-item")],
                         TYPES, TREAT)
    assert list(query.request.resource_categories) == [condition, "|problem-list-item"]
    assert ("category", f"{condition},|problem-list-item") in query.parameters
    assert list(parse_search("Observation", [("patient", PSN), ("category", "laboratory")], TYPES,
                             TREAT).request.resource_categories) == ["laboratory"]
    assert list(parse_search("AllergyIntolerance", [("patient", PSN), ("category", "food")], TYPES,
                             TREAT).request.resource_categories) == ["food"]
    assert not parse_search("Observation", [("patient", PSN)], TYPES, TREAT).request.resource_categories


def test_everything_parameters() -> None:
    request = parse_everything(PSN, [("_type", "Condition"), ("_since", "2026-01-01"), ("_count", "5")], TYPES,
                               TREAT).request
    assert (request.patient_id, list(request.resource_types), request.updated_since_ms, request.page_size) == (
        PSN, ["Condition"], _ms("2026-01-01"), 5)
    assert _refused(lambda: parse_everything(PSN, [("date", "2026")], TYPES, TREAT)).expression == "date"


def _record(record_id: str, resource_type: str = "Condition") -> records_pb2.GetRecordResponse:
    resource = {"resourceType": resource_type, "id": "ehr-local", "subject": {"reference": "Patient/ehr-1"}}
    return records_pb2.GetRecordResponse(record_id=record_id, resource_type=resource_type, patient_id=PSN,
                                         resource_json=json.dumps(resource).encode())


def test_a_search_reads_each_match_and_counts_what_was_withheld() -> None:
    found = records_pb2.SearchRecordsResponse(records=[
        records_pb2.RecordSummary(record_id=r, resource_type="Condition") for r in ("r1", "r2", "r3")] + [
        records_pb2.RecordSummary(record_id="big", resource_type="Condition", large=True)],
        withheld=2, next_page_token="next-tok")
    reads = {"r1": _record("r1"), "r2": (grpc.StatusCode.PERMISSION_DENIED, "not permitted"),
             "r3": (grpc.StatusCode.FAILED_PRECONDITION, "record erased on 2026-11-30")}
    with gateway() as (client, records):
        records.answers["SearchRecords"] = found
        records.answers["GetRecord"] = lambda request: reads[request.record_id]
        response = client.get(f"/Condition?patient=Patient/{PSN}&_count=3", headers=BEARER)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    match, outcome = bundle["entry"]
    assert match["fullUrl"] == "https://fhir.example.org/r4/Condition/r1" and match["search"]["mode"] == "match"
    assert match["resource"]["id"] == "r1" and match["resource"]["subject"] == {"reference": f"Patient/{PSN}"}
    assert outcome["search"]["mode"] == "outcome"
    diagnostics = [issue["diagnostics"] for issue in outcome["resource"]["issue"]]
    assert diagnostics[0].startswith("3 matching records were withheld") and "large" in diagnostics[1]
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    following = urllib.parse.parse_qs(urllib.parse.urlparse(links["next"]).query)
    assert following == {"patient": [f"Patient/{PSN}"], "_count": ["3"], PAGE_TOKEN: ["next-tok"]}
    searched = records.calls[0][1]
    assert records.calls[0][0] == "SearchRecords" and searched.page_size == 3 and searched.purpose == TREAT
    assert sorted(request.record_id for method, request, _ in records.calls[1:]) == ["r1", "r2", "r3"]
    assert all(metadata["authorization"] == BEARER["Authorization"] for _, _, metadata in records.calls)


def test_search_and_everything_refusals() -> None:
    with gateway() as (client, records):
        records.answers["SearchRecords"] = (grpc.StatusCode.PERMISSION_DENIED,
                                            "the access token's SMART scopes do not permit this search")
        denied = client.get(f"/Observation?patient={PSN}", headers=BEARER)
        assert denied.status_code == 403 and denied.json()["resourceType"] == "OperationOutcome"
        assert client.get(f"/Condition?patient={PSN}", headers={"Authorization": BEARER["Authorization"]}
                          ).status_code == 400  # a search needs a purpose of use, as a read does
        assert client.get(f"/Condition?patient={PSN}").status_code == 401
        assert client.get(f"/Spaceship?patient={PSN}", headers=BEARER).status_code == 404
        records.answers["SearchRecords"] = records_pb2.SearchRecordsResponse()
        empty = client.get(f"/Patient/{PSN}/$everything?_type=Condition", headers=BEARER)
        assert empty.status_code == 200 and "entry" not in empty.json()
        assert list(records.calls[-1][1].resource_types) == ["Condition"]
        system = client.get(f"/?_type=Condition,Observation&patient={PSN}", headers=BEARER)
        assert system.status_code == 200 and list(records.calls[-1][1].resource_types) == ["Condition", "Observation"]


def test_a_category_search_asks_records_for_the_categories_and_its_links_keep_them() -> None:
    with gateway() as (client, records):
        records.answers["SearchRecords"] = records_pb2.SearchRecordsResponse(next_page_token="tok")
        response = client.get(f"/Observation?patient={PSN}&category=laboratory,"
                              "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs", headers=BEARER)
        assert response.status_code == 200, response.text
        assert list(records.calls[-1][1].resource_categories) == [
            "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs", "laboratory"]
        links = {link["relation"]: link["url"] for link in response.json()["link"]}
        assert "category=laboratory,http://terminology.hl7.org/CodeSystem/observation-category|vital-signs" in \
            links["next"]
        refused = client.get(f"/Immunization?patient={PSN}&category=laboratory", headers=BEARER)
        assert refused.status_code == 400 and refused.json()["issue"][0]["expression"] == ["category"]


def _smart_token(signer: Ed25519Signer, purpose: str) -> str:
    caller = Caller("org-1", common_pb2.PRINCIPAL_KIND_ORGANIZATION, organization_id="org-1",
                    scope="system/Condition.rs", purpose_of_use=purpose)
    return issue_token(signer, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("records")), 60)[0]


def test_the_purpose_comes_from_a_smart_token_and_must_agree_with_the_header() -> None:
    issuer = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    verifier = token_verifier(TrustBundle({TOKEN_ISSUER_ID: issuer.public_key_bytes()}))
    config = GatewayConfig(public_base_url="https://fhir.example.org/r4", verifier=verifier)
    token = _smart_token(issuer, "ETREAT")
    with gateway(config) as (client, records):
        records.answers["SearchRecords"] = records_pb2.SearchRecordsResponse()
        assert client.get(f"/Condition?patient={PSN}", headers={"Authorization": f"Bearer {token}"}
                          ).status_code == 200
        assert records.calls[-1][1].purpose == common_pb2.PURPOSE_OF_USE_ETREAT
        both = client.get(f"/Condition?patient={PSN}", headers={"Authorization": f"Bearer {token}",
                                                                "X-Purpose-Of-Use": "ETREAT"})
        assert both.status_code == 200
        conflict = client.get(f"/Condition?patient={PSN}", headers={"Authorization": f"Bearer {token}",
                                                                    "X-Purpose-Of-Use": "TREAT"})
        assert conflict.status_code == 400 and "purpose of use" in conflict.json()["issue"][0]["diagnostics"]
        forged = client.get(f"/Condition?patient={PSN}", headers={
            "Authorization": f"Bearer {_smart_token(Ed25519Signer.generate(TOKEN_ISSUER_ID), 'TREAT')}"})
        assert forged.status_code == 401 and forged.headers["www-authenticate"].startswith("Bearer")
        assert len(records.calls) == 2  # neither the conflict nor the forged token reached records
