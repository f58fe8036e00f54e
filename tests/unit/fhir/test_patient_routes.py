"""Consent and AuditEvent on the FHIR gateway (fhir.consent_routes, fhir.audit_routes) over a scripted records."""

from __future__ import annotations

import json
import urllib.parse

import grpc
from fhir_fixtures import gateway

from carechain.core.fhir import fhir_time_range
from carechain.records.v1 import records_pb2

BEARER = {"Authorization": "Bearer token-of-the-patient"}
FHIR_JSON = {"Content-Type": "application/fhir+json"}
PSN = "psn-0123abcd"
CONSENT_ID = "6f1d2c52-8c1a-4a43-9d55-2b1b1a6f7e01"
BODY = b'{"resourceType": "Consent", "status": "active"}'
STORED = {"resourceType": "Consent", "id": CONSENT_ID, "status": "active"}
SIGNED = {**BEARER, **FHIR_JSON, "X-Consent-Signature": "header.payload.signature"}


def _issue(response) -> dict:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    return issue


def test_a_signed_consent_is_relayed_byte_for_byte_and_answered_201() -> None:
    with gateway() as (client, records):
        records.answers["SubmitConsent"] = records_pb2.PatientConsent(consent_id=CONSENT_ID,
                                                                      consent_json=json.dumps(STORED))
        response = client.post("/Consent", content=BODY, headers=SIGNED)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"https://fhir.example.org/r4/Consent/{CONSENT_ID}"
    assert response.json() == STORED
    [(method, request, metadata)] = records.calls
    assert method == "SubmitConsent" and request.consent_json == BODY  # the exact bytes the JWS covers
    assert request.consent_jws == "header.payload.signature"
    assert metadata["authorization"] == BEARER["Authorization"]


def test_without_a_signature_401_and_records_is_not_called() -> None:
    with gateway() as (client, records):
        response = client.post("/Consent", content=BODY, headers={**BEARER, **FHIR_JSON})
    assert response.status_code == 401 and "X-Consent-Signature" in _issue(response)["diagnostics"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert records.calls == []


def test_a_body_that_is_not_a_consent_is_400() -> None:
    with gateway() as (client, records):
        response = client.post("/Consent", content=b'{"resourceType": "Condition"}', headers=SIGNED)
    assert response.status_code == 400 and _issue(response)["expression"] == ["Consent.resourceType"]
    assert records.calls == []


def test_refusals_keep_their_status_and_element_path() -> None:
    cases = [
        ((grpc.StatusCode.INVALID_ARGUMENT, "Consent.provision.provision[0].purpose[0]: not a code CareChain "
          "knows"), 400, ["Consent.provision.provision[0].purpose[0]"]),
        ((grpc.StatusCode.UNAUTHENTICATED, "consent_jws: the signature does not verify"), 401, None),
        ((grpc.StatusCode.PERMISSION_DENIED, "the consent signer may grant consent only for themselves"), 403, None),
        ((grpc.StatusCode.FAILED_PRECONDITION, "grant_consent.patient_jws: jti was used before"), 422, None),
        ((grpc.StatusCode.ALREADY_EXISTS, "consent already exists"), 409, None),
    ]
    for answer, status, expression in cases:
        with gateway() as (client, records):
            records.answers["SubmitConsent"] = answer
            response = client.post("/Consent", content=BODY, headers=SIGNED)
        assert response.status_code == status, (answer, response.text)
        issue = _issue(response)
        assert issue["diagnostics"].endswith(answer[1].split(": ", 1)[-1])
        assert issue.get("expression") == expression


def test_consent_search_and_read() -> None:
    listed = records_pb2.ListPatientConsentsResponse(consents=[
        records_pb2.PatientConsent(consent_id=CONSENT_ID, consent_json=json.dumps(STORED))])
    with gateway() as (client, records):
        records.answers["ListPatientConsents"] = listed
        search = client.get(f"/Consent?patient=Patient/{PSN}", headers=BEARER)
        read = client.get(f"/Consent/{CONSENT_ID}", headers=BEARER)
        missing = client.get("/Consent/7f1d2c52-8c1a-4a43-9d55-2b1b1a6f7e01", headers=BEARER)
        unsupported = client.get("/Consent?status=active", headers=BEARER)
    bundle = search.json()
    assert search.status_code == 200 and bundle["type"] == "searchset" and bundle["total"] == 1
    assert bundle["entry"] == [{"fullUrl": f"https://fhir.example.org/r4/Consent/{CONSENT_ID}", "resource": STORED,
                                "search": {"mode": "match"}}]
    assert records.calls[0][1].patient_id == PSN and records.calls[1][1].patient_id == ""
    assert read.status_code == 200 and read.json() == STORED
    assert missing.status_code == 404
    assert unsupported.status_code == 400 and _issue(unsupported)["expression"] == ["status"]


def _page(next_token: str = "") -> records_pb2.ExportAccessHistoryResponse:
    exported = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:e1", "resource": {"resourceType": "AuditEvent", "id": "e1"}}]}
    return records_pb2.ExportAccessHistoryResponse(bundle_json=json.dumps(exported), next_page_token=next_token)


def test_audit_event_search_pages_with_next_links() -> None:
    with gateway() as (client, records):
        records.answers["ExportAccessHistory"] = _page("tok-2")
        first = client.get(f"/AuditEvent?patient=Patient/{PSN}&date=ge2026-01-01&date=lt2026-02-01&_count=1",
                           headers=BEARER)
        records.answers["ExportAccessHistory"] = _page()
        links = {link["relation"]: link["url"] for link in first.json()["link"]}
        second = client.get(links["next"].removeprefix("https://fhir.example.org/r4"), headers=BEARER)
    bundle = first.json()
    assert first.status_code == 200 and bundle["type"] == "searchset"
    assert bundle["entry"][0]["fullUrl"] == "https://fhir.example.org/r4/AuditEvent/e1"
    query = urllib.parse.parse_qs(urllib.parse.urlparse(links["next"]).query)
    assert query == {"patient": [f"Patient/{PSN}"], "date": ["ge2026-01-01", "lt2026-02-01"], "_count": ["1"],
                     "_page_token": ["tok-2"]}
    request = records.calls[0][1]
    assert (request.patient_id, request.page_size, request.page_token) == (PSN, 1, "")
    assert (request.since_ms, request.until_ms) == (fhir_time_range("2026-01-01")[0],
                                                    fhir_time_range("2026-02-01")[0])
    assert records.calls[1][1].page_token == "tok-2"
    assert [link["relation"] for link in second.json()["link"]] == ["self"]


def test_audit_event_search_refuses_what_it_cannot_do() -> None:
    with gateway() as (client, records):
        records.answers["ExportAccessHistory"] = (grpc.StatusCode.PERMISSION_DENIED,
                                                  "a patient reads only their own accounting")
        other = client.get("/AuditEvent?patient=Patient/psn-other", headers=BEARER)
        bad_date = client.get("/AuditEvent?date=ge-yesterday", headers=BEARER)
        bad_count = client.get("/AuditEvent?_count=0", headers=BEARER)
        unknown = client.get("/AuditEvent?agent=x", headers=BEARER)
        empty = client.get("/AuditEvent?date=ge2026-02-01&date=lt2026-01-01", headers=BEARER)
        anonymous = client.get("/AuditEvent")
    assert other.status_code == 403 and "psn-other" not in other.text
    assert bad_date.status_code == 400 and _issue(bad_date)["expression"] == ["date"]
    assert bad_count.status_code == 400 and _issue(bad_count)["expression"] == ["_count"]
    assert unknown.status_code == 400 and _issue(unknown)["expression"] == ["agent"]
    assert empty.status_code == 400
    assert anonymous.status_code == 401
    assert len(records.calls) == 1


def test_put_revokes_with_a_signed_minimal_consent() -> None:
    revocation = json.dumps({"resourceType": "Consent", "id": CONSENT_ID, "status": "inactive"}).encode()
    with gateway() as (client, records):
        records.answers["SubmitConsent"] = records_pb2.PatientConsent(
            consent_id=CONSENT_ID, consent_json=json.dumps({**STORED, "status": "inactive"}))
        revoked = client.put(f"/Consent/{CONSENT_ID}", content=revocation, headers=SIGNED)
        other_id = client.put("/Consent/7f1d2c52-8c1a-4a43-9d55-2b1b1a6f7e01", content=revocation, headers=SIGNED)
        active = client.put(f"/Consent/{CONSENT_ID}", content=BODY.replace(b'"active"', f'"active", "id": '
                                                                           f'"{CONSENT_ID}"'.encode()), headers=SIGNED)
        posted = client.post("/Consent", content=revocation, headers=SIGNED)
    assert revoked.status_code == 200 and revoked.json()["status"] == "inactive"
    [(method, request, _)] = records.calls
    assert method == "SubmitConsent" and request.consent_json == revocation
    assert other_id.status_code == 400 and _issue(other_id)["expression"] == ["Consent.id"]
    for refused in (active, posted):
        assert refused.status_code == 400 and _issue(refused)["expression"] == ["Consent.status"]
