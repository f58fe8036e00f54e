"""Consent via JWS and AuditEvent search on the FHIR REST gateway, end to end (docs/fhir.md, "Consent").

The six services and the gateway as real processes (embedded backends). A patient POSTs a FHIR Consent signed
with their own key as a JWS; it becomes a ledger grant svc-consent submits carrying that JWS (the validators
verify it), and a practitioner's read is then permitted. Replayed and foreign signatures are refused; the
patient's AuditEvent search shows the read, and nobody else can see it. Every response body is checked by
HAPI FHIR's R4 instance validator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from fhir_validator import HapiValidator
from helpers import Actor, new_hospital, new_patient, new_practitioner, operator_client

from carechain.client.auth import TokenSource
from carechain.client.channels import open_channel
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.consent_jws import sign_consent
from carechain.core.layout import audience
from carechain.dev.localnet import LocalNetwork
from carechain.ledger import transactions
from carechain.ledger.transactions import logged_transactions

pytest_plugins = ["fhir_validator"]  # one HAPI FHIR JVM for the session

FHIR_JSON = "application/fhir+json"
PSEUDONYM = "https://carechain.dev/fhir/NamingSystem/patient-pseudonym"


@dataclass
class Parties:
    network: LocalNetwork
    base: str
    hospital: Actor
    reader: Actor
    patient: Actor
    other: Actor
    guardian: Actor
    tokens: dict[str, str]  # principal id -> "Bearer <token for records>"

    def bearer(self, actor: Actor) -> str:
        return self.tokens[actor.principal_id]


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    network = LocalNetwork(tmp_path_factory.mktemp("fhir-consent"), fhir=True)
    network.start()
    actors: list[Actor] = []
    try:
        hospital = new_hospital(network)
        reader = new_practitioner(network, hospital, "general-practice")
        patient, _ = new_patient(network, hospital)
        other, _ = new_patient(network, hospital)
        guardian, _ = new_patient(network, hospital)
        actors = [hospital, reader, patient, other, guardian]
        with open_channel(network.endpoints.identity, "identity") as identity:
            tokens = {a.principal_id: TokenSource.for_signer(identity, a.signer).authorization(audience("records"))
                      for a in actors}
        yield Parties(network, network.endpoints.fhir_base_url, hospital, reader, patient, other, guardian, tokens)
    finally:
        for actor in actors:
            actor.client.close()
        network.stop()


def _valid(hapi: HapiValidator, body: dict[str, Any]) -> None:
    outcome = hapi.validate(body)
    assert outcome.valid, f"{body.get('resourceType')}: " + "; ".join(map(str, outcome.errors))


def consent(patient_id: str, practitioner_id: str) -> bytes:
    """The patient permits the practitioner to read their records for treatment (a FHIR R4 Consent)."""
    return json.dumps({
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": PSEUDONYM, "value": patient_id}},
        "provision": {"type": "deny", "provision": [{
            "type": "permit",
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                            "code": "IRCP"}]},
                       "reference": {"reference": f"Practitioner/{practitioner_id}"}}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
        }]},
    }, indent=1).encode()


def post_consent(parties: Parties, caller: Actor, body: bytes, jws: str | None) -> requests.Response:
    headers = {"Authorization": parties.bearer(caller), "Content-Type": FHIR_JSON}
    if jws is not None:
        headers["X-Consent-Signature"] = jws
    return requests.post(f"{parties.base}/Consent", data=body, headers=headers, timeout=60)


def _condition(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001", "display": "Asthma"}]},
            "subject": {"reference": f"Patient/{patient_id}"}, "recordedDate": "2026-11-30"}


def _outcome(response: requests.Response, status: int, hapi: HapiValidator) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    _valid(hapi, body)
    return body["issue"][0]


def test_a_signed_consent_grants_a_read_and_the_patient_sees_it_in_their_accounting(
        parties: Parties, hapi_validator: HapiValidator) -> None:
    base, patient, reader = parties.base, parties.patient, parties.reader
    created = requests.post(f"{base}/Condition", json=_condition(patient.principal_id),
                            headers={"Authorization": parties.bearer(parties.hospital), "Content-Type": FHIR_JSON},
                            timeout=60)
    assert created.status_code == 201, created.text
    record_id = created.json()["id"]
    read = {"Authorization": parties.bearer(reader), "X-Purpose-Of-Use": "TREAT"}
    _outcome(requests.get(f"{base}/Condition/{record_id}", headers=read, timeout=60), 403, hapi_validator)

    body = consent(patient.principal_id, reader.principal_id)
    jws = patient.client.sign_fhir_consent(body)
    granted = post_consent(parties, patient, body, jws)
    assert granted.status_code == 201, granted.text
    stored = granted.json()
    _valid(hapi_validator, stored)
    assert granted.headers["location"] == f"{base}/Consent/{stored['id']}"
    assert stored["status"] == "active" and stored["patient"]["identifier"]["value"] == patient.principal_id
    # On the ledger: svc-consent's grant carrying the patient's JWS (the validators accepted it).
    with operator_client(parties.network) as operator:
        grants = [(logged, transactions.decode_body(logged.transaction).grant_consent)
                  for logged in logged_transactions(operator.ledger)
                  if transactions.decode_body(logged.transaction).WhichOneof("payload") == "grant_consent"]
    [(logged, grant)] = [(t, g) for t, g in grants if g.consent_id == stored["id"]]
    assert logged.result.valid and logged.transaction.signer_id == "svc-consent"
    assert grant.patient_jws.decode() == jws and b"Practitioner" not in logged.transaction.body

    assert requests.get(f"{base}/Condition/{record_id}", headers=read, timeout=60).status_code == 200

    mine = requests.get(f"{base}/Consent?patient=Patient/{patient.principal_id}",
                        headers={"Authorization": parties.bearer(patient)}, timeout=60)
    assert mine.status_code == 200
    _valid(hapi_validator, mine.json())
    assert [e["resource"]["id"] for e in mine.json()["entry"]] == [stored["id"]]
    one = requests.get(f"{base}/Consent/{stored['id']}", headers={"Authorization": parties.bearer(patient)},
                       timeout=60)
    assert one.status_code == 200 and one.json() == stored

    history = requests.get(f"{base}/AuditEvent?patient=Patient/{patient.principal_id}&date=ge2026-01-01",
                           headers={"Authorization": parties.bearer(patient)}, timeout=60)
    assert history.status_code == 200, history.text
    bundle = history.json()
    _valid(hapi_validator, bundle)
    assert bundle["type"] == "searchset"
    events = [e["resource"] for e in bundle["entry"]]
    entities = [json.dumps(e.get("entity", [])) for e in events]
    assert any(f"Condition/{record_id}" in text for text in entities), "the practitioner's read is accounted"
    assert any(f"Consent/{stored['id']}" in text for text in entities), "the grant is accounted"
    # Paging: one event a page, the next link continues with the same query.
    page = requests.get(f"{base}/AuditEvent?_count=1", headers={"Authorization": parties.bearer(patient)},
                        timeout=60).json()
    _valid(hapi_validator, page)
    [next_link] = [link["url"] for link in page["link"] if link["relation"] == "next"]
    second = requests.get(next_link, headers={"Authorization": parties.bearer(patient)}, timeout=60).json()
    assert len(page["entry"]) == len(second["entry"]) == 1 and page["entry"][0] != second["entry"][0]

    # Another patient sees nothing of it: the same refusal as for anyone, naming no one.
    for path in (f"AuditEvent?patient=Patient/{patient.principal_id}",
                 f"Consent?patient=Patient/{patient.principal_id}"):
        other = requests.get(f"{base}/{path}", headers={"Authorization": parties.bearer(parties.other)},
                             timeout=60)
        _outcome(other, 403, hapi_validator)
        assert patient.principal_id not in other.text and record_id not in other.text


def test_a_replayed_signature_is_refused(parties: Parties, hapi_validator: HapiValidator) -> None:
    patient = parties.patient
    body = consent(patient.principal_id, parties.reader.principal_id)
    jws = patient.client.sign_fhir_consent(body)
    assert post_consent(parties, patient, body, jws).status_code == 201
    replayed = post_consent(parties, patient, body, jws)
    issue = _outcome(replayed, 422, hapi_validator)
    assert "jti was used before" in issue["diagnostics"]
    # The same over gRPC (the SDK, as the gateway relays it): granted once, then replayed through REST.
    body = consent(patient.principal_id, parties.reader.principal_id).replace(b'"active"', b'"active" ')
    jws = patient.client.sign_fhir_consent(body)
    granted = patient.client.grant_signed_fhir_consent(body, jws)
    assert json.loads(granted.consent_json)["id"] == granted.consent_id
    _outcome(post_consent(parties, patient, body, jws), 422, hapi_validator)


def test_signatures_that_are_not_the_patients_are_refused(parties: Parties, hapi_validator: HapiValidator) -> None:
    patient, other = parties.patient, parties.other
    body = consent(patient.principal_id, parties.reader.principal_id)
    # Another patient signs the patient's consent (not their delegate): 403, and nothing granted.
    foreign = post_consent(parties, other, body, other.client.sign_fhir_consent(body, patient.principal_id))
    assert "only for themselves" in _outcome(foreign, 403, hapi_validator)["diagnostics"]
    # The patient's genuine JWS sent by someone else: the signer is not the caller.
    stolen = post_consent(parties, other, body, patient.client.sign_fhir_consent(body))
    _outcome(stolen, 403, hapi_validator)
    # No signature, a bad one, or one over other bytes: 401.
    assert _outcome(post_consent(parties, patient, body, None), 401, hapi_validator)["code"] == "login"
    _outcome(post_consent(parties, patient, body, "not.a.jws"), 401, hapi_validator)
    altered = body.replace(b"TREAT", b"ETREAT")
    _outcome(post_consent(parties, patient, altered, patient.client.sign_fhir_consent(body)), 401, hapi_validator)
    stale = sign_consent(patient.signer, body, patient.principal_id, parties.network.endpoints.chain_id,
                         iat=1_700_000_000)
    assert "iat" in _outcome(post_consent(parties, patient, body, stale), 401, hapi_validator)["diagnostics"]
    # A Consent CareChain cannot enforce: 400 naming the element.
    content = json.loads(body)
    content["provision"]["provision"][0]["purpose"][0]["code"] = "NOT-A-PURPOSE"
    bad = json.dumps(content).encode()
    issue = _outcome(post_consent(parties, patient, bad, patient.client.sign_fhir_consent(bad)), 400,
                     hapi_validator)
    assert issue["expression"][0].startswith("Consent.provision")


def test_a_guardian_grants_for_the_patient_and_reads_the_accounting(parties: Parties,
                                                                    hapi_validator: HapiValidator) -> None:
    patient, guardian = parties.other, parties.guardian
    patient.client.register_delegate(guardian.principal_id, policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN)
    body = consent(patient.principal_id, parties.reader.principal_id)
    granted = post_consent(parties, guardian, body, guardian.client.sign_fhir_consent(body, patient.principal_id))
    assert granted.status_code == 201, granted.text
    listed = patient.client.list_consents()
    assert [(c.consent_id, c.granted_by) for c in listed] == [(granted.json()["id"], guardian.principal_id)]
    history = requests.get(f"{parties.base}/AuditEvent?patient=Patient/{patient.principal_id}",
                           headers={"Authorization": parties.bearer(guardian)}, timeout=60)
    assert history.status_code == 200
    _valid(hapi_validator, history.json())
    # Once revoked, the guardian's signature grants nothing more.
    patient.client.revoke_delegate(guardian.principal_id)
    again = consent(patient.principal_id, parties.reader.principal_id)
    refused = post_consent(parties, guardian, again, guardian.client.sign_fhir_consent(again, patient.principal_id))
    _outcome(refused, 403, hapi_validator)


def test_the_patient_revokes_with_a_signed_put_and_the_read_is_denied_again(
        parties: Parties, hapi_validator: HapiValidator) -> None:
    base, patient, reader = parties.base, parties.patient, parties.reader
    created = requests.post(f"{base}/Condition", json=_condition(patient.principal_id),
                            headers={"Authorization": parties.bearer(parties.hospital), "Content-Type": FHIR_JSON},
                            timeout=60)
    record_id = created.json()["id"]
    active = [c.consent_id for c in patient.client.list_consents() if c.status == consent_pb2.CONSENT_STATUS_ACTIVE]
    for consent_id in active:
        patient.client.revoke_consent(consent_id)  # only the consent granted below permits the read
    body = consent(patient.principal_id, reader.principal_id)
    granted = post_consent(parties, patient, body, patient.client.sign_fhir_consent(body)).json()
    read = {"Authorization": parties.bearer(reader), "X-Purpose-Of-Use": "TREAT"}
    assert requests.get(f"{base}/Condition/{record_id}", headers=read, timeout=60).status_code == 200

    revocation = json.dumps({"resourceType": "Consent", "id": granted["id"], "status": "inactive"}).encode()
    jws = patient.client.sign_fhir_consent(revocation)
    headers = {"Authorization": parties.bearer(patient), "Content-Type": FHIR_JSON, "X-Consent-Signature": jws}
    # Another patient cannot revoke it with the patient's signature, nor with their own.
    other = {**headers, "Authorization": parties.bearer(parties.other)}
    _outcome(requests.put(f"{base}/Consent/{granted['id']}", data=revocation, headers=other, timeout=60), 403,
             hapi_validator)
    revoked = requests.put(f"{base}/Consent/{granted['id']}", data=revocation, headers=headers, timeout=60)
    assert revoked.status_code == 200, revoked.text
    _valid(hapi_validator, revoked.json())
    assert revoked.json()["status"] == "inactive"
    _outcome(requests.get(f"{base}/Condition/{record_id}", headers=read, timeout=60), 403, hapi_validator)
    # The revocation went on the ledger as svc-consent's RevokeConsent with the patient's JWS and nothing else.
    with operator_client(parties.network) as operator:
        revokes = [transactions.decode_body(t.transaction).revoke_consent for t in logged_transactions(operator.ledger)
                   if transactions.decode_body(t.transaction).WhichOneof("payload") == "revoke_consent"]
    [revoke] = [r for r in revokes if r.consent_id == granted["id"]]
    assert revoke.patient_jws.decode() == jws and revoke.revocation_json == revocation
    _outcome(requests.put(f"{base}/Consent/{granted['id']}", data=revocation, headers=headers, timeout=60), 422,
             hapi_validator)
