"""The FHIR gateway's routes against a records service on a real gRPC server (fhir_fixtures.Scripted)."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from fhir_fixtures import gateway
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient

from carechain.client.channels import intercept, plain_channel
from carechain.common.v1 import common_pb2
from carechain.core.telemetry import configure_tracing
from carechain.dev.backends.process import free_port
from carechain.fhir.app import GatewayConfig, Records, build_app, observed
from carechain.fhir.capability import resource_types
from carechain.fhir.smart import CLIENT_ASSERTION_TYPE
from carechain.identity.v1 import identity_pb2
from carechain.labels.resource_categories import CATEGORY_ELEMENTS
from carechain.records.v1 import records_pb2

BEARER = {"Authorization": "Bearer token-of-the-caller"}
PSN = "psn-0123abcd"
CONDITION = {"resourceType": "Condition", "subject": {"reference": f"Patient/{PSN}"},
             "code": {"text": "asthma"}}
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _body(resource: dict) -> bytes:
    return json.dumps(resource).encode()


def _issue(response) -> dict:
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    return issue


def test_health_and_readiness() -> None:
    with gateway() as (client, _):
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200


def test_not_ready_while_records_is_down() -> None:
    config = GatewayConfig()
    channel = intercept(plain_channel(f"127.0.0.1:{free_port()}"), "records")
    with TestClient(observed(build_app(Records(channel, config), config))) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
    channel.close()


def test_capability_statement_lists_what_is_served() -> None:
    with gateway() as (client, _):
        response = client.get("/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert "json" in statement["format"]
    assert statement["implementation"]["url"] == "https://fhir.example.org/r4"
    [rest] = statement["rest"]
    assert [r["type"] for r in rest["resource"]] == sorted({*resource_types(), "AuditEvent"})
    assert {"Patient", "Condition", "Observation", "Encounter"} <= set(resource_types())
    by_type = {r["type"]: r for r in rest["resource"]}
    assert [i["code"] for i in by_type["Consent"]["interaction"]] == ["create", "read", "update", "search-type"]
    assert [i["code"] for i in by_type["AuditEvent"]["interaction"]] == ["search-type"]
    records = [r for r in rest["resource"] if r["type"] not in ("Consent", "AuditEvent")]
    assert all([i["code"] for i in r["interaction"]][:2] == ["create", "read"] and
               "search-type" in [i["code"] for i in r["interaction"]] for r in records)
    assert [i["code"] for i in rest["interaction"]] == ["batch", "transaction", "search-system"]
    assert [i["code"] for i in by_type["Condition"]["interaction"]] == [
        "create", "read", "vread", "update", "history-instance", "search-type"]
    assert [p["name"] for p in by_type["Condition"]["searchParam"]] == [
        "patient", "subject", "date", "_lastUpdated", "_security", "_count", "category"]  # what parse_search accepts
    assert [p["name"] for p in by_type["Immunization"]["searchParam"]] == [
        "patient", "subject", "date", "_lastUpdated", "_security", "_count"]  # no category element
    assert [p["name"] for p in by_type["Patient"]["searchParam"]] == ["_id", "_lastUpdated", "_security", "_count"]
    assert [o["name"] for o in by_type["Patient"]["operation"]] == ["everything"]
    assert "operation" not in by_type["Condition"]
    # category exactly for the stored types with a FHIR category element.
    assert {r["type"] for r in records if any(p["name"] == "category" for p in r["searchParam"])} == (
        set(CATEGORY_ELEMENTS) - {"Consent"})
    assert not any(p["name"] == "category" for p in rest["searchParam"])
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


@pytest.mark.parametrize(("query", "accept", "status"), [
    ("", "application/fhir+json", 200), ("", "application/json", 200), ("", "*/*", 200),
    ("", "text/html,application/xhtml+xml,*/*;q=0.8", 200), ("?_format=json", "application/fhir+xml", 200),
    ("", "application/fhir+xml", 406), ("?_format=xml", "", 406), ("?_format=application/fhir%2Bxml", "", 406),
])
def test_content_negotiation(query: str, accept: str, status: int) -> None:
    with gateway() as (client, _):
        response = client.get(f"/metadata{query}", headers={"Accept": accept} if accept else {})
    assert response.status_code == status
    if status == 406:
        assert _issue(response)["code"] == "not-supported"


def test_create_passes_the_exact_bytes_and_the_callers_token() -> None:
    with gateway() as (client, records):
        records.answers["PutRecord"] = records_pb2.PutRecordResponse(record_id="rec-1", version=1)
        raw = _body(CONDITION)
        response = client.post("/Condition", content=raw, headers={**BEARER, **FHIR_JSON})
    assert response.status_code == 201
    assert response.headers["location"] == "https://fhir.example.org/r4/Condition/rec-1/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    created = response.json()
    assert created["id"] == "rec-1" and created["meta"]["versionId"] == "1"
    assert created["subject"] == {"reference": f"Patient/{PSN}"} and created["code"] == CONDITION["code"]
    [(method, request, metadata)] = records.calls
    assert method == "PutRecord" and request.patient_id == PSN and request.resource_json == raw
    assert metadata["authorization"] == "Bearer token-of-the-caller"


def test_create_prefer_minimal() -> None:
    with gateway() as (client, records):
        records.answers["PutRecord"] = records_pb2.PutRecordResponse(record_id="rec-1", version=1)
        response = client.post("/Condition", content=_body(CONDITION),
                               headers={**BEARER, **FHIR_JSON, "Prefer": "return=minimal"})
    assert response.status_code == 201 and response.content == b"" and response.headers["location"]


def test_create_of_a_patient_is_under_its_pseudonym() -> None:
    with gateway() as (client, records):
        records.answers["PutRecord"] = records_pb2.PutRecordResponse(record_id="rec-p", version=1)
        response = client.post("/Patient", content=_body({"resourceType": "Patient", "id": PSN}),
                               headers={**BEARER, **FHIR_JSON})
        assert response.status_code == 201
        assert records.calls[0][1].patient_id == PSN
        response = client.post("/Patient", content=_body({"resourceType": "Patient"}), headers={**BEARER, **FHIR_JSON})
    assert response.status_code == 400 and _issue(response)["expression"] == ["Patient.id"]


@pytest.mark.parametrize(("headers", "body", "status", "code", "expression"), [
    (FHIR_JSON, _body(CONDITION), 401, "login", None),
    ({**BEARER, "Content-Type": "application/fhir+xml"}, b"<Condition/>", 415, "not-supported", None),
    ({**BEARER, "Content-Type": "application/fhir+json; charset=latin-1"}, _body(CONDITION), 415, "not-supported",
     None),
    ({**BEARER, **FHIR_JSON}, b'{"resourceType": "Condition",', 400, "invalid", "Condition"),
    ({**BEARER, **FHIR_JSON}, b'{"a": 1, "a": 2}', 400, "invalid", "Condition"),
    ({**BEARER, **FHIR_JSON}, b"[]", 400, "structure", "Condition"),
    ({**BEARER, **FHIR_JSON}, _body({**CONDITION, "resourceType": "Observation"}), 400, "invalid",
     "Condition.resourceType"),
    ({**BEARER, **FHIR_JSON}, _body({"resourceType": "Condition", "code": {"text": "x"}}), 400, "required",
     "Condition.subject.reference"),
    ({**BEARER, **FHIR_JSON}, _body({**CONDITION, "recorder": {"reference": "Patient/psn-other"}}), 400,
     "invalid", "Condition.subject.reference"),
])
def test_create_refusals_before_records(headers, body, status, code, expression) -> None:
    with gateway() as (client, records):
        response = client.post("/Condition", content=body, headers=headers)
    assert response.status_code == status
    issue = _issue(response)
    assert issue["code"] == code
    assert issue.get("expression", [None])[0] == expression
    assert "asthma" not in response.text  # never echoes the resource
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer ")
    assert records.calls == []


def test_create_over_the_size_limit_is_413() -> None:
    with gateway(GatewayConfig(max_resource_bytes=2048)) as (client, records):
        big = _body({**CONDITION, "note": [{"text": "x" * 4096}]})
        response = client.post("/Condition", content=big, headers={**BEARER, **FHIR_JSON})
    assert response.status_code == 413 and _issue(response)["code"] == "too-costly"
    assert records.calls == []


def test_unknown_type_and_interaction() -> None:
    with gateway() as (client, _):
        assert client.post("/Bundle", content=b"{}", headers={**BEARER, **FHIR_JSON}).status_code == 404
        assert client.get("/Questionnaire/x", headers=BEARER).status_code == 404
        response = client.delete("/Condition/rec-1", headers=BEARER)
    assert response.status_code == 405 and _issue(response)["code"] == "not-supported"


@pytest.mark.parametrize(("code", "message", "status", "issue_code", "expression"), [
    (grpc.StatusCode.INVALID_ARGUMENT, "resource_json.code.coding[0].system: must be a URI", 400, "invalid",
     "Condition.code.coding[0].system"),
    (grpc.StatusCode.INVALID_ARGUMENT, "patient_id: is not a registered patient", 400, "invalid",
     "Condition.subject.reference"),
    (grpc.StatusCode.UNAUTHENTICATED, "access token expired", 401, "login", None),
    (grpc.StatusCode.PERMISSION_DENIED, "an organization writes records only for its own patients", 403,
     "forbidden", None),
    (grpc.StatusCode.FAILED_PRECONDITION, "the patient is deactivated", 422, "business-rule", None),
    (grpc.StatusCode.UNAVAILABLE, "ledger unavailable", 503, "transient", None),
    (grpc.StatusCode.INTERNAL, "secret detail", 500, "exception", None),
    (grpc.StatusCode.DATA_LOSS, "secret detail", 500, "exception", None),
])
def test_create_refused_by_records(code, message, status, issue_code, expression) -> None:
    with gateway() as (client, records):
        records.answers["PutRecord"] = (code, message)
        response = client.post("/Condition", content=_body(CONDITION), headers={**BEARER, **FHIR_JSON})
    assert response.status_code == status
    issue = _issue(response)
    assert issue["code"] == issue_code and issue.get("expression", [None])[0] == expression
    if status == 500:
        assert "secret" not in response.text
    else:
        assert issue["diagnostics"].endswith(message.split(": ", 1)[-1])


def _read_answer(resource: dict, resource_type: str = "Condition", **fields) -> records_pb2.GetRecordResponse:
    return records_pb2.GetRecordResponse(record_id="rec-9", resource_json=_body(resource), patient_id=PSN,
                                         resource_type=resource_type, **fields)


def test_read_answers_patient_references_by_pseudonym() -> None:
    stored = {**CONDITION, "id": "local-7", "subject": {"reference": "Patient/ehr-42"}}
    with gateway() as (client, records):
        records.answers["GetRecord"] = _read_answer(stored)
        response = client.get("/Condition/rec-9", headers={**BEARER, "X-Purpose-Of-Use": "TREAT"})
    assert response.status_code == 200 and response.headers["etag"] == 'W/"1"'
    served = response.json()
    assert served["id"] == "rec-9" and served["subject"] == {"reference": f"Patient/{PSN}"}
    assert served["code"] == CONDITION["code"]
    [(method, request, metadata)] = records.calls
    assert method == "GetRecord" and request.record_id == "rec-9"
    assert request.purpose == common_pb2.PURPOSE_OF_USE_TREAT
    assert metadata["authorization"] == BEARER["Authorization"]


def test_read_of_a_part2_record_carries_its_labels_and_notice() -> None:
    labelled = {**CONDITION, "meta": {"security": [{"code": "42CFRPart2"}]}}
    with gateway() as (client, records):
        records.answers["GetRecord"] = _read_answer(CONDITION, labelled_resource_json=_body(labelled),
                                                    redisclosure_notice="42 CFR part 2\nprohibits")
        response = client.get("/Condition/rec-9", headers={**BEARER, "X-Purpose-Of-Use": "treat"})
    assert response.json()["meta"]["security"] == [{"code": "42CFRPart2"}]
    assert response.headers["x-redisclosure-notice"] == "42 CFR part 2 prohibits"


@pytest.mark.parametrize(("answer", "status", "issue_code"), [
    ((grpc.StatusCode.PERMISSION_DENIED, "not permitted by the patient's consent"), 403, "forbidden"),
    ((grpc.StatusCode.NOT_FOUND, "no record with that id"), 404, "not-found"),
    ((grpc.StatusCode.FAILED_PRECONDITION, "the record was erased on 2026-11-30"), 410, "deleted"),
    ((grpc.StatusCode.RESOURCE_EXHAUSTED, "too many calls"), 429, "throttled"),
])
def test_read_refusals(answer, status, issue_code) -> None:
    with gateway() as (client, records):
        records.answers["GetRecord"] = answer
        response = client.get("/Condition/rec-9", headers={**BEARER, "X-Purpose-Of-Use": "TREAT"})
    assert response.status_code == status
    issue = _issue(response)
    assert issue["code"] == issue_code and issue["diagnostics"] == answer[1]


def test_read_needs_a_known_purpose_and_the_right_type() -> None:
    with gateway() as (client, records):
        records.answers["GetRecord"] = _read_answer(CONDITION)
        assert client.get("/Condition/rec-9", headers=BEARER).status_code == 400
        response = client.get("/Condition/rec-9", headers={**BEARER, "X-Purpose-Of-Use": "SHOPPING"})
        assert response.status_code == 400 and "SHOPPING" not in response.text
        assert records.calls == []
        assert client.get("/Observation/rec-9", headers={**BEARER, "X-Purpose-Of-Use": "TREAT"}).status_code == 404
        assert client.get("/Condition/rec-9", headers={"X-Purpose-Of-Use": "TREAT"}).status_code == 401
        assert client.get("/Condition/" + "x" * 65, headers={**BEARER, "X-Purpose-Of-Use": "TREAT"}).status_code == 404


def test_bundle_names_its_patient_by_pseudonym_and_answers_locations_here() -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "ehr-42"},
         "request": {"method": "PUT", "url": f"Patient/{PSN}"}},
        {"fullUrl": "urn:uuid:c1", "resource": {**CONDITION, "subject": {"reference": "urn:uuid:p1"}},
         "request": {"method": "POST", "url": "Condition"}},
    ]}
    answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {"status": "201 Created", "location": "Record/r-p", "etag": 'W/"1"'}},
        {"response": {"status": "201 Created", "location": "Record/r-c", "etag": 'W/"1"'}}]}
    with gateway() as (client, records):
        records.answers["ImportBundle"] = records_pb2.ImportBundleResponse(
            response_bundle_json=_body(answer), committed=2, results=[
                records_pb2.ImportResult(index=0, record_id="r-p"), records_pb2.ImportResult(index=1, record_id="r-c")])
        response = client.post("/", content=_body(bundle), headers={**BEARER, **FHIR_JSON})
    assert response.status_code == 200
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    assert locations == ["https://fhir.example.org/r4/Patient/r-p/_history/1",
                         "https://fhir.example.org/r4/Condition/r-c/_history/1"]
    [(method, request, _)] = records.calls
    assert method == "ImportBundle" and list(request.patient_ids) == [PSN]
    imported = json.loads(request.bundle_json)
    assert imported["entry"][0]["request"] == {"method": "POST", "url": "Patient"}
    assert imported["entry"][1] == bundle["entry"][1]


def test_bundle_refusals() -> None:
    with gateway() as (client, records):
        response = client.post("/", content=_body(CONDITION), headers={**BEARER, **FHIR_JSON})
        assert response.status_code == 400 and _issue(response)["expression"] == ["Bundle.resourceType"]
        no_patient = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Condition", "code": {"text": "x"}}, "request": {"method": "POST"}}]}
        response = client.post("/", content=_body(no_patient), headers={**BEARER, **FHIR_JSON})
        assert response.status_code == 400 and _issue(response)["expression"] == ["Bundle.entry"]
        records.answers["ImportBundle"] = (grpc.StatusCode.INVALID_ARGUMENT,
                                           "bundle_json.entry[3].resource.code: is required")
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": CONDITION,
                                                                       "request": {"method": "POST"}}]}
        response = client.post("/", content=_body(batch), headers={**BEARER, **FHIR_JSON})
    assert response.status_code == 400
    assert _issue(response)["expression"] == ["Bundle.entry[3].resource.code"]


def test_the_grpc_call_continues_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("fhir").add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with gateway() as (client, records):
        records.answers["GetRecord"] = _read_answer(CONDITION)
        client.get("/Condition/rec-9", headers={**BEARER, "X-Purpose-Of-Use": "TREAT",
                                                 "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    [(_, _, metadata)] = records.calls
    assert metadata["traceparent"].split("-")[1] == trace_id
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server, call = spans["GET /{type}/{id}"], spans["carechain.records.v1.RecordsService/GetRecord"]
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.parent.span_id == 0x00f067aa0ba902b7  # the REST caller's span
    assert call.parent.span_id == server.context.span_id  # the gRPC call is the request's child
    assert metadata["traceparent"].split("-")[2] == format(call.context.span_id, "016x")
    assert server.attributes["http.response.status_code"] == 200 and server.attributes["http.route"] == "/{type}/{id}"


def test_smart_endpoints_without_a_token_url_say_so() -> None:
    """Without a public base URL (nor CARECHAIN_SMART_TOKEN_URL) there is no token URL: 404 OperationOutcomes."""
    with gateway(GatewayConfig()) as (client, records):
        for response in (client.get("/.well-known/smart-configuration"),
                         client.post("/token", content=b"grant_type=client_credentials",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})):
            assert response.status_code == 404 and "SMART" in _issue(response)["diagnostics"]
    assert records.calls == []


def test_the_token_endpoint_relays_through_records() -> None:
    """POST /token goes to records' ExchangeClientAssertion (the gateway's one callee), never to identity."""
    with gateway() as (client, records):
        assert client.get("/.well-known/smart-configuration").json()["token_endpoint"] == \
            "https://fhir.example.org/r4/token"
        records.answers["ExchangeClientAssertion"] = identity_pb2.ClientAccessToken(
            token="t0k", expires_at_ms=int(time.time() * 1000) + 300_000, scope="system/Condition.rs",
            purpose_of_use=common_pb2.PURPOSE_OF_USE_TREAT)
        response = client.post("/token", data={
            "grant_type": "client_credentials", "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": "a.b.c", "scope": "system/Condition.rs", "purpose_of_use": "TREAT"})
    assert response.status_code == 200, response.text
    assert response.json()["access_token"] == "t0k" and response.json()["purpose_of_use"] == "TREAT"
    [(method, request, _)] = records.calls
    assert method == "ExchangeClientAssertion" and request.client_assertion == "a.b.c"
    assert request.audience == "carechain.records"


def test_a_bundle_naming_an_unregistered_patient() -> None:
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": CONDITION,
                                                                   "request": {"method": "POST"}}]}
    with gateway() as (client, records):
        records.answers["ImportBundle"] = (grpc.StatusCode.INVALID_ARGUMENT,
                                           "patient_ids[0]: is not a registered patient")
        response = client.post("/", content=_body(batch), headers={**BEARER, **FHIR_JSON})
    issue = _issue(response)
    assert response.status_code == 400 and issue["expression"] == ["Bundle.entry"]
    assert issue["diagnostics"] == "Bundle.entry: patient 1 the bundle names: is not a registered patient"


def test_one_log_line_per_request_names_the_route_never_the_path(caplog: pytest.LogCaptureFixture) -> None:
    with gateway() as (client, records), caplog.at_level("INFO", logger="carechain.fhir"):
        records.answers["GetRecord"] = (grpc.StatusCode.NOT_FOUND, "no record")
        client.get("/Condition/rec-secret-id", headers={**BEARER, "X-Purpose-Of-Use": "TREAT"})
    [line] = [r for r in caplog.records if r.getMessage() == "served"]
    assert (line.http_method, line.http_route, line.http_status) == ("GET", "/{type}/{id}", 404)
    assert "rec-secret-id" not in str(line.__dict__)


NDJSON = {"Content-Type": "application/fhir+ndjson"}


def test_ndjson_streams_the_good_lines_as_the_caller_and_answers_every_line() -> None:
    lines = [json.dumps(CONDITION).encode(), b"{not json", json.dumps({**CONDITION, "code": {"text": "x"}}).encode()]
    with gateway() as (client, records):
        records.answers["ImportRecords"] = lambda requests: [
            records_pb2.ImportResult(index=i, client_ref=r.client_ref, code=0, record_id=f"rec-{i}")
            for i, r in reversed(list(enumerate(requests)))]
        response = client.post("/", content=b"\n".join(lines) + b"\n", headers={**BEARER, **NDJSON})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
    [(method, requests, metadata)] = records.calls
    assert method == "ImportRecords" and metadata["authorization"] == BEARER["Authorization"]
    assert [(r.client_ref, r.patient_id, r.resource_json) for r in requests] == [
        ("line 1", PSN, lines[0]), ("line 3", PSN, lines[2])]
    body = response.json()
    assert body["type"] == "batch-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "400 Bad Request", "201 Created"]
    assert body["entry"][0]["response"]["location"] == "https://fhir.example.org/r4/Condition/rec-0/_history/1"
    assert body["entry"][2]["response"]["location"] == "https://fhir.example.org/r4/Condition/rec-1/_history/1"


def test_ndjson_refusals_of_the_whole_request() -> None:
    with gateway(GatewayConfig(public_base_url="https://fhir.example.org/r4", max_bundle_bytes=2048)) as (
            client, records):
        too_big = client.post("/", content=b"{}\n" * 1024, headers={**BEARER, **NDJSON})
        assert too_big.status_code == 413 and _issue(too_big)["code"] == "too-costly"
        latin1 = client.post("/", content=b"{}", headers={**BEARER, "Content-Type": "application/fhir+ndjson; "
                                                                                    "charset=latin-1"})
        assert latin1.status_code == 415 and "application/fhir+ndjson" in _issue(latin1)["diagnostics"]
        records.answers["ImportRecords"] = (grpc.StatusCode.UNAUTHENTICATED, "token expired")
        expired = client.post("/", content=json.dumps(CONDITION).encode(), headers={**BEARER, **NDJSON})
        assert expired.status_code == 401 and "www-authenticate" in expired.headers
        nothing_to_write = client.post("/", content=b"\n\n", headers={**BEARER, **NDJSON})
    assert [e["response"]["status"] for e in nothing_to_write.json()["entry"]] == ["400 Bad Request"] * 2
    assert len(records.calls) == 1, "no call to records when no line can be written"
