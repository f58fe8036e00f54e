"""FHIR search, Patient/$everything, 410 Gone and SMART Backend Services through the running FHIR gateway.

The six services and the gateway as real processes (embedded backends). A hospital writes a patient's
Conditions and Observations over REST; the patient's consent lets a practitioner read the ordinary ones only.
fhirpy and fhirclient search and page (``next`` links carrying records' page token); every searchset Bundle
is checked by HAPI FHIR's R4 instance validator; a psychiatric Condition is only ever a withheld count.
SMART: the hospital (ES384) and its practitioner (RS384) register JWKS and get tokens at the gateway's own
``POST /token`` (relayed through records to identity), then create, read and search within their scopes.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from fhir_validator import HapiValidator
from fhirclient.models.condition import Condition
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from helpers import Actor, new_hospital, new_patient, new_practitioner

from carechain.client.auth import TokenSource
from carechain.client.channels import open_channel
from carechain.client.sdk import Purpose, permit
from carechain.client.smart_keys import client_assertion, new_client_key, public_jwks
from carechain.core.layout import audience
from carechain.dev.localnet import LocalNetwork
from carechain.fhir.smart import CLIENT_ASSERTION_TYPE
from carechain.labels.sensitivity import NORMAL

pytest_plugins = ["fhir_validator"]  # one HAPI FHIR JVM for the session

FHIR_JSON = "application/fhir+json"
PSY = "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"


@dataclass
class World:
    """The gateway, who acts through it (CareChain bearer tokens), and what the hospital wrote."""

    network: LocalNetwork
    base: str
    hospital: Actor
    hospital_bearer: str
    reader: Actor
    reader_bearer: str
    patient: Actor
    conditions: list[str]  # ordinary Conditions (the reader may read them)
    psychiatric: str  # a Condition consent withholds from the reader
    observations: list[str]


def _bearer(network: LocalNetwork, actor: Actor) -> str:
    with open_channel(network.endpoints.identity, "identity") as identity:
        return TokenSource.for_signer(identity, actor.signer).authorization(audience("records"))


def _condition(psn: str, code: str, display: str, day: str) -> dict[str, Any]:
    return {"resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{psn}"}, "recordedDate": day}


def _observation(psn: str, day: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": f"Patient/{psn}"}, "effectiveDateTime": day,
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}


def _create(base: str, bearer: str, resource: dict[str, Any]) -> requests.Response:
    return requests.post(f"{base}/{resource['resourceType']}", json=resource, timeout=30,
                         headers={"Authorization": bearer, "Content-Type": FHIR_JSON})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    network = LocalNetwork(tmp_path_factory.mktemp("fhir-search"), fhir=True)
    network.start()
    try:
        hospital = new_hospital(network)
        reader = new_practitioner(network, hospital, "general-practice")
        patient, _ = new_patient(network, hospital)
        psn = patient.principal_id
        patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                            categories=[NORMAL]))
        base, writer = network.endpoints.fhir_base_url, _bearer(network, hospital)
        made = [_create(base, writer, r) for r in (
            _condition(psn, "195967001", "Asthma", "2026-01-10"),
            _condition(psn, "35489007", "Depressive disorder", "2026-02-10"),
            _condition(psn, "38341003", "Hypertension", "2026-03-10"),
            _observation(psn, "2026-01-15"), _observation(psn, "2026-03-15"))]
        assert all(r.status_code == 201 for r in made), [r.text for r in made]
        ids = [r.json()["id"] for r in made]
        yield World(network, base, hospital, writer, reader, _bearer(network, reader), patient,
                    [ids[0], ids[2]], ids[1], ids[3:])
        for actor in (hospital, reader, patient):
            actor.client.close()
    finally:
        network.stop()


def _valid(hapi: HapiValidator, body: dict[str, Any]) -> None:
    outcome = hapi.validate(body)
    assert outcome.valid, f"{body.get('resourceType')}: " + "; ".join(map(str, outcome.errors))


def _withheld(bundle: dict[str, Any]) -> int:
    """The withheld count the bundle's outcome entry states (0 without one)."""
    for entry in bundle.get("entry", []):
        if entry["search"]["mode"] == "outcome":
            for issue in entry["resource"]["issue"]:
                if issue["code"] == "suppressed":
                    return int(issue["diagnostics"].split()[0])
    return 0


def _matches(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_fhirpy_searches_and_pages_with_next_links(world: World, hapi_validator: HapiValidator) -> None:
    bodies: list[dict[str, Any]] = []
    capture = {"hooks": {"response": [lambda response, *args, **kwargs: bodies.append(response.json())]}}
    client = SyncFHIRClient(world.base, authorization=world.reader_bearer, requests_config=capture,
                            extra_headers={"X-Purpose-Of-Use": "TREAT"})
    psn = world.patient.principal_id
    found = client.resources("Condition").search(patient=f"Patient/{psn}").limit(1).fetch_all()
    assert sorted(c.id for c in found) == sorted(world.conditions)
    assert all(c["subject"]["reference"] == f"Patient/{psn}" for c in found)
    assert len(bodies) >= 2, "one Condition per page: fetch_all followed next links"
    assert sum(_withheld(b) for b in bodies) == 1  # the psychiatric Condition, counted once over the pages
    for body in bodies:
        assert body["type"] == "searchset" and world.psychiatric not in json.dumps(body)
        assert "Depressive" not in json.dumps(body) and "PSY" not in json.dumps(body)
        _valid(hapi_validator, body)
    nexts = [link["url"] for b in bodies for link in b["link"] if link["relation"] == "next"]
    assert nexts and all(urllib.parse.parse_qs(urllib.parse.urlparse(u).query)["_count"] == ["1"] for u in nexts)
    # Filters: clinical date (prefixes) and last update.
    march = client.resources("Observation").search(patient=psn, date="ge2026-03-01").fetch_all()
    assert [o.id for o in march] == [world.observations[1]]
    assert not client.resources("Observation").search(patient=psn, date="lt2026-01-01").fetch_all()
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert len(client.resources("Observation").search(patient=psn, _lastUpdated=f"le{later}").fetch_all()) == 2
    assert not client.resources("Observation").search(patient=psn, _lastUpdated=f"gt{later}").fetch_all()


def test_fhirclient_searches(world: World, hapi_validator: HapiValidator) -> None:
    bodies: list[dict[str, Any]] = []
    server = FHIRServer(None, base_uri=world.base)
    server.session.headers.update({"Authorization": world.reader_bearer, "X-Purpose-Of-Use": "TREAT"})
    server.session.hooks["response"].append(lambda response, *args, **kwargs: bodies.append(response.json()))
    search = Condition.where(struct={"patient": world.patient.principal_id, "_count": "1"})
    found = [r for r in search.perform_resources_iter(server) if r.resource_type == "Condition"]
    assert sorted(c.id for c in found) == sorted(world.conditions)
    assert len(bodies) >= 2
    for body in bodies:
        _valid(hapi_validator, body)


def test_system_search_security_labels_and_refusals(world: World, hapi_validator: HapiValidator) -> None:
    psn = world.patient.principal_id
    session = requests.Session()
    session.headers.update({"Authorization": world.reader_bearer, "X-Purpose-Of-Use": "TREAT"})
    both = session.get(f"{world.base}/", params={"_type": "Condition,Observation", "patient": psn}, timeout=30)
    assert both.status_code == 200, both.text
    assert sorted(_matches(both.json())) == sorted(world.conditions + world.observations)
    assert _withheld(both.json()) == 1
    _valid(hapi_validator, both.json())
    # By sensitivity label: nothing the reader may read, and no withheld count (it would say what is hidden).
    psychiatric = session.get(f"{world.base}/Condition", params={"patient": psn, "_security": PSY}, timeout=30)
    assert psychiatric.status_code == 200 and not _matches(psychiatric.json()) and not _withheld(psychiatric.json())
    _valid(hapi_validator, psychiatric.json())
    # Unknown parameters are 400 naming them, unless the client asks for lenient handling.
    unknown = session.get(f"{world.base}/Condition", params={"patient": psn, "code": "195967001"}, timeout=30)
    assert unknown.status_code == 400 and unknown.json()["issue"][0]["expression"] == ["code"]
    _valid(hapi_validator, unknown.json())
    lenient = session.get(f"{world.base}/Condition", params={"patient": psn, "code": "195967001"}, timeout=30,
                          headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200 and sorted(_matches(lenient.json())) == sorted(world.conditions)
    # category where the type has no such element (Immunization) is refused, not ignored (test_fhir_category.py).
    category = session.get(f"{world.base}/Immunization", params={"patient": psn, "category": "problem-list-item"},
                           timeout=30)
    assert category.status_code == 400 and "no category element" in category.json()["issue"][0]["diagnostics"]
    # A practitioner the patient consented nothing to: 403, as for a read, saying nothing about the patient.
    stranger = new_practitioner(world.network, world.hospital, "dermatology")
    denied = session.get(f"{world.base}/Condition", params={"patient": psn}, timeout=30,
                         headers={"Authorization": _bearer(world.network, stranger)})
    assert denied.status_code == 403 and denied.json()["resourceType"] == "OperationOutcome"
    stranger.client.close()


def test_patient_everything(world: World, hapi_validator: HapiValidator) -> None:
    psn = world.patient.principal_id
    headers = {"Authorization": world.reader_bearer, "X-Purpose-Of-Use": "TREAT"}
    everything = requests.get(f"{world.base}/Patient/{psn}/$everything", headers=headers, timeout=60)
    assert everything.status_code == 200, everything.text
    bundle = everything.json()
    assert bundle["type"] == "searchset"
    assert sorted(_matches(bundle)) == sorted(world.conditions + world.observations) and _withheld(bundle) == 1
    _valid(hapi_validator, bundle)
    conditions = requests.get(f"{world.base}/Patient/{psn}/$everything", params={"_type": "Condition"},
                              headers=headers, timeout=60).json()
    assert sorted(_matches(conditions)) == sorted(world.conditions)
    # Paged: _count with next links covers the same records.
    seen, url, pages = [], f"{world.base}/Patient/{psn}/$everything?_count=2", 0
    while url:
        page = requests.get(url, headers=headers, timeout=60).json()
        _valid(hapi_validator, page)
        seen += _matches(page)
        pages += 1
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), "")
    assert sorted(seen) == sorted(world.conditions + world.observations) and pages >= 2


def _token(base: str, key: object, client_id: str, scope: str, purpose: str = "TREAT") -> dict[str, Any]:
    answer = requests.post(f"{base}/token", timeout=30, data={
        "grant_type": "client_credentials", "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(key, "k1", client_id, f"{base}/token"), "scope": scope,
        "purpose_of_use": purpose})
    return {"status": answer.status_code, **answer.json()}


def test_smart_backend_services_through_the_gateway(world: World, hapi_validator: HapiValidator) -> None:
    base, psn = world.base, world.patient.principal_id
    discovery = requests.get(f"{base}/.well-known/smart-configuration", timeout=10).json()
    assert discovery["token_endpoint"] == f"{base}/token"
    hospital_key, practitioner_key = new_client_key("ES384"), new_client_key("RS384")
    world.hospital.client.register_client_keys(public_jwks((hospital_key, "k1")))
    smart_reader = new_practitioner(world.network, world.hospital, "oncology")
    smart_reader.client.register_client_keys(public_jwks((practitioner_key, "k1")))
    world.patient.client.grant_consent(
        permit([Purpose.PURPOSE_OF_USE_TREAT], organization_id=world.hospital.principal_id, categories=[NORMAL]),
        permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=smart_reader.principal_id, categories=[NORMAL]))

    # The hospital's backend: system/Condition.crs, through the gateway's token endpoint (records' relay).
    token = _token(base, hospital_key, world.hospital.principal_id, "system/Condition.crs")
    assert token["status"] == 200 and token["purpose_of_use"] == "TREAT", token
    system = {"Authorization": f"Bearer {token['access_token']}"}  # the purpose comes from the token
    created = _create(base, system["Authorization"], _condition(psn, "44054006", "Diabetes", "2026-04-01"))
    assert created.status_code == 201, created.text
    refused = _create(base, system["Authorization"], _observation(psn, "2026-04-01"))
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    assert "SMART scopes" in refused.json()["issue"][0]["diagnostics"]
    _valid(hapi_validator, refused.json())
    read = requests.get(f"{base}/Condition/{created.json()['id']}", headers=system, timeout=30)
    assert read.status_code == 200 and read.json()["code"]["coding"][0]["code"] == "44054006"
    found = requests.get(f"{base}/Condition", params={"patient": psn}, headers=system, timeout=30)
    assert found.status_code == 200, found.text
    assert sorted(_matches(found.json())) == sorted([*world.conditions, created.json()["id"]])
    _valid(hapi_validator, found.json())
    # No s scope for Observation: asked for, 403; $everything covers only the types it may search.
    observations = requests.get(f"{base}/Observation", params={"patient": psn}, headers=system, timeout=30)
    assert observations.status_code == 403 and "SMART scopes" in observations.json()["issue"][0]["diagnostics"]
    everything = requests.get(f"{base}/Patient/{psn}/$everything", headers=system, timeout=60).json()
    assert {e["resource"]["resourceType"] for e in everything["entry"] if e["search"]["mode"] == "match"} == {
        "Condition"}
    # The purpose is the token's: a conflicting X-Purpose-Of-Use is 400, a matching one is fine.
    conflict = requests.get(f"{base}/Condition", params={"patient": psn}, timeout=30,
                            headers={**system, "X-Purpose-Of-Use": "ETREAT"})
    assert conflict.status_code == 400 and "purpose of use" in conflict.json()["issue"][0]["diagnostics"]
    assert requests.get(f"{base}/Condition", params={"patient": psn}, timeout=30,
                        headers={**system, "X-Purpose-Of-Use": "TREAT"}).status_code == 200

    # The practitioner's RS384 client with user/Condition.rs reads and searches; write is out of scope.
    user = _token(base, practitioner_key, smart_reader.principal_id, "user/Condition.rs")
    assert user["status"] == 200, user
    bearer = {"Authorization": f"Bearer {user['access_token']}"}
    mine = requests.get(f"{base}/Condition", params={"patient": psn, "_count": "1"}, headers=bearer, timeout=30)
    assert mine.status_code == 200 and len(_matches(mine.json())) == 1
    assert _create(base, bearer["Authorization"], _condition(psn, "195967001", "Asthma", "2026-05-01")
                   ).status_code == 403
    # OAuth2 errors: a wrong key is invalid_client, an unknown scope invalid_scope.
    assert _token(base, new_client_key("ES384"), world.hospital.principal_id, "system/Condition.rs")["error"] == \
        "invalid_client"
    assert _token(base, hospital_key, world.hospital.principal_id, "system/Unicorn.rs")["error"] == "invalid_scope"
    smart_reader.client.close()


def test_an_erased_record_is_gone(world: World, hapi_validator: HapiValidator) -> None:
    psn = world.patient.principal_id
    made = _create(world.base, world.hospital_bearer, _condition(psn, "233604007", "Pneumonia", "2026-06-01"))
    assert made.status_code == 201
    record_id = made.json()["id"]
    headers = {"Authorization": world.reader_bearer, "X-Purpose-Of-Use": "TREAT"}
    assert requests.get(f"{world.base}/Condition/{record_id}", headers=headers, timeout=30).status_code == 200
    world.patient.client.erase_records(psn, [record_id], "patient request")
    gone = requests.get(f"{world.base}/Condition/{record_id}", headers=headers, timeout=30)
    assert gone.status_code == 410, gone.text
    issue = gone.json()["issue"][0]
    assert issue["code"] == "deleted" and issue["diagnostics"].startswith("record erased on ")
    assert time.strftime("%Y-%m-%d", time.gmtime()) in issue["diagnostics"]
    _valid(hapi_validator, gone.json())
    found = requests.get(f"{world.base}/Condition", params={"patient": psn}, headers=headers, timeout=30).json()
    assert record_id not in _matches(found)
