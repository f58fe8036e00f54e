"""The FHIR R4 REST gateway end to end: the six services and the gateway as real processes, driven by real FHIR
clients written elsewhere (fhirclient, fhirpy) and plain HTTP, every response body checked by HAPI FHIR's R4
instance validator. One network for the module (embedded backends): the gRPC path's guarantees behind it are
tested by the rest of tests/e2e.
"""

from __future__ import annotations

import gzip
import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from fhir_validator import HapiValidator
from fhirclient.models.condition import Condition
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError
from helpers import Actor, new_hospital, new_patient, new_practitioner

from carechain.client.auth import TokenSource
from carechain.client.channels import open_channel
from carechain.client.sdk import Purpose, permit
from carechain.core.layout import audience
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES

pytest_plugins = ["fhir_validator"]  # one HAPI FHIR JVM for the session

SYNTHEA = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "synthea-10"
# The sample's smallest patient record: 62 resources of 8 types (Encounters, DocumentReferences, ...).
SYNTHEA_PATIENT = "63ee2253-bdd5-da55-2ad2-b4984d0ad700"
FHIR_JSON = "application/fhir+json"


@dataclass
class Parties:
    """The gateway's URL and who acts through it, each with a CareChain access token for records."""

    base: str
    hospital: str
    reader: str
    stranger: str
    patient: Actor
    fhir_id: str


@pytest.fixture(scope="module")
def fhir_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(tmp_path_factory.mktemp("fhir-network"), fhir=True)
    network.start()
    try:
        yield network
    finally:
        network.stop()


def _bearer(network: LocalNetwork, actor: Actor) -> str:
    with open_channel(network.endpoints.identity, "identity") as identity:
        return TokenSource.for_signer(identity, actor.signer).authorization(audience("records"))


@pytest.fixture(scope="module")
def parties(fhir_network: LocalNetwork) -> Iterator[Parties]:
    hospital = new_hospital(fhir_network)
    reader = new_practitioner(fhir_network, hospital, "general-practice")
    stranger = new_practitioner(fhir_network, hospital, "dermatology")
    patient, fhir_id = new_patient(fhir_network, hospital, SYNTHEA_PATIENT)
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                        categories=[NORMAL, *sorted(SENSITIVE_CATEGORIES)]))
    yield Parties(fhir_network.endpoints.fhir_base_url, _bearer(fhir_network, hospital),
                  _bearer(fhir_network, reader), _bearer(fhir_network, stranger), patient, fhir_id)
    for actor in (hospital, reader, stranger, patient):
        actor.client.close()


def _valid(hapi: HapiValidator, body: dict[str, Any]) -> None:
    outcome = hapi.validate(body)
    assert outcome.valid, f"{body.get('resourceType')}: " + "; ".join(map(str, outcome.errors))


def _condition(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001", "display": "Asthma"}]},
            "subject": {"reference": f"Patient/{patient_id}"}, "recordedDate": "2026-11-30"}


def test_the_capability_statement(parties: Parties, hapi_validator: HapiValidator) -> None:
    response = requests.get(f"{parties.base}/metadata", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith(FHIR_JSON)
    statement = response.json()
    assert statement["fhirVersion"] == "4.0.1" and statement["implementation"]["url"] == parties.base
    _valid(hapi_validator, statement)
    assert requests.get(f"{parties.base}/metadata?_format=xml", timeout=10).status_code == 406


def test_fhirclient_creates_and_reads(parties: Parties, hapi_validator: HapiValidator) -> None:
    bodies: list[dict[str, Any]] = []

    def server(bearer: str) -> FHIRServer:
        fhir = FHIRServer(None, base_uri=parties.base)
        fhir.session.headers.update({"Authorization": bearer, "X-Purpose-Of-Use": "TREAT"})
        fhir.session.hooks["response"].append(lambda response, *args, **kwargs: bodies.append(response.json()))
        return fhir

    condition = Condition(_condition(parties.patient.principal_id))
    created = condition.create(server(parties.hospital))
    record_id = created["id"]
    read = Condition.read(record_id, server(parties.reader))
    assert read.id == record_id and read.subject.reference == f"Patient/{parties.patient.principal_id}"
    assert read.code.coding[0].code == "195967001" and read.meta.versionId == "1"
    served = read.as_json()
    meta = served.pop("meta")
    assert meta["versionId"] == "1" and set(meta) == {"versionId", "lastUpdated"}  # lastUpdated: the ledger's
    assert served == {**condition.as_json(), "id": record_id}
    assert len(bodies) == 2
    for body in bodies:
        _valid(hapi_validator, body)


def test_fhirpy_creates_and_reads(parties: Parties, hapi_validator: HapiValidator) -> None:
    bodies: list[dict[str, Any]] = []
    capture = {"hooks": {"response": [lambda response, *args, **kwargs: bodies.append(response.json())]}}
    writer = SyncFHIRClient(parties.base, authorization=parties.hospital, requests_config=capture)
    observation = writer.resource(
        "Observation", status="final", subject={"reference": f"Patient/{parties.patient.principal_id}"},
        code={"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        valueQuantity={"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        effectiveDateTime="2026-11-30T10:00:00Z")
    observation.save()
    assert observation.id and observation["meta"]["versionId"] == "1"
    reader = SyncFHIRClient(parties.base, authorization=parties.reader, extra_headers={"X-Purpose-Of-Use": "TREAT"},
                            requests_config=capture)
    read = reader.reference("Observation", observation.id).to_resource()
    assert read["meta"]["lastUpdated"].endswith("Z")  # the ledger's time of the write (fhir.versions)
    assert {**read.serialize(), "meta": {"versionId": "1"}} == observation.serialize()
    stranger = SyncFHIRClient(parties.base, authorization=parties.stranger,
                              extra_headers={"X-Purpose-Of-Use": "TREAT"})
    with pytest.raises(ForbiddenError):
        stranger.reference("Observation", observation.id).to_resource()
    for body in bodies:
        _valid(hapi_validator, body)


def _outcome(response: requests.Response, status: int, hapi: HapiValidator) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    _valid(hapi, body)
    return body["issue"][0]


def test_errors_are_operation_outcomes(parties: Parties, hapi_validator: HapiValidator) -> None:
    base, psn = parties.base, parties.patient.principal_id
    write = {"Authorization": parties.hospital, "Content-Type": FHIR_JSON}
    read = {"Authorization": parties.reader, "X-Purpose-Of-Use": "TREAT"}
    unauthenticated = requests.post(f"{base}/Condition", json=_condition(psn), timeout=10)
    assert _outcome(unauthenticated, 401, hapi_validator)["code"] == "login"
    assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
    forged = requests.get(f"{base}/Condition/x", headers={**read, "Authorization": "Bearer not.a.token"}, timeout=10)
    _outcome(forged, 401, hapi_validator)
    bad = {**_condition(psn), "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                                       "condition-clinical", "code": "unheard-of"}]}}
    invalid = _outcome(requests.post(f"{base}/Condition", json=bad, headers=write, timeout=10), 400, hapi_validator)
    assert invalid["expression"][0].startswith("Condition.clinicalStatus") and "unheard-of" not in json.dumps(invalid)
    other = requests.post(f"{base}/Condition", json=_condition("psn-not-registered"), headers=write, timeout=10)
    assert _outcome(other, 400, hapi_validator)["expression"] == ["Condition.subject.reference"]
    missing = requests.get(f"{base}/Condition/00000000-0000-0000-0000-000000000000", headers=read, timeout=10)
    _outcome(missing, 404, hapi_validator)
    created = requests.post(f"{base}/Condition", json={
        **_condition(psn), "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007",
                                                "display": "Depressive disorder"}]}}, headers=write, timeout=10)
    assert created.status_code == 201
    record_id = created.json()["id"]
    assert created.headers["location"] == f"{base}/Condition/{record_id}/_history/1"
    denied = requests.get(f"{base}/Condition/{record_id}",
                          headers={**read, "Authorization": parties.stranger}, timeout=10)
    issue = _outcome(denied, 403, hapi_validator)
    assert "consent" in issue["diagnostics"] and "psych" not in denied.text.lower()
    too_big = requests.post(f"{base}/Condition", data=b"{" + b" " * (5 * 1024 * 1024) + b"}", headers=write,
                            timeout=30)
    _outcome(too_big, 413, hapi_validator)
    xml = requests.post(f"{base}/Condition", data=b"<Condition/>",
                        headers={**write, "Content-Type": "application/fhir+xml"}, timeout=10)
    _outcome(xml, 415, hapi_validator)


def _synthea_record(fhir_id: str) -> list[dict[str, Any]]:
    """Every resource of one Synthea patient, the Patient first."""
    resources = []
    for path in sorted(SYNTHEA.glob("*.000.ndjson.gz")):
        with gzip.open(path, "rt") as lines:
            for line in lines:
                resource = json.loads(line)
                text = line if resource["resourceType"] != "Patient" else f'"Patient/{resource["id"]}"'
                if f'"Patient/{fhir_id}"' in text:
                    resources.append(resource)
    return sorted(resources, key=lambda r: r["resourceType"] != "Patient")


def _as_transaction(resources: list[dict[str, Any]], pseudonym: str) -> dict[str, Any]:
    """A Synthea-style transaction Bundle: urn:uuid fullUrls and references; the Patient as PUT Patient/<pseudonym>."""
    ids = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in resources}
    text = json.dumps(resources)
    for reference, urn in ids.items():
        text = text.replace(f'"reference": "{reference}"', f'"reference": "{urn}"')
    entries = []
    for resource in json.loads(text):
        kind = resource["resourceType"]
        request = {"method": "PUT", "url": f"Patient/{pseudonym}"} if kind == "Patient" else \
            {"method": "POST", "url": kind}
        entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_a_synthea_transaction_bundle_imports_and_reads_back_identical(parties: Parties,
                                                                        hapi_validator: HapiValidator) -> None:
    original = _synthea_record(parties.fhir_id)
    assert len(original) == 62
    psn = parties.patient.principal_id
    response = requests.post(parties.base, json=_as_transaction(original, psn), timeout=300,
                             headers={"Authorization": parties.hospital, "Content-Type": FHIR_JSON})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    _valid(hapi_validator, answer)
    locations = [entry["response"]["location"] for entry in answer["entry"]]
    assert all(entry["response"]["status"] == "201 Created" for entry in answer["entry"])
    session = requests.Session()
    session.headers.update({"Authorization": parties.reader, "X-Purpose-Of-Use": "TREAT"})
    for resource, location in zip(original, locations, strict=True):
        assert location.startswith(f"{parties.base}/{resource['resourceType']}/")
        read = session.get(location.removesuffix("/_history/1"), timeout=10)
        assert read.status_code == 200, read.text
        served = read.json()
        _valid(hapi_validator, served)
        assert served["id"] == location.split("/")[-3] and served["meta"]["versionId"] == "1"
        # Identical in content: the server's id and version aside, and the patient named by its pseudonym here.
        served.pop("id")
        served["meta"].pop("versionId")
        served["meta"].pop("lastUpdated")
        if not served["meta"]:
            served.pop("meta")
        content = json.loads(json.dumps(served).replace(f'"Patient/{psn}"', f'"Patient/{parties.fhir_id}"'))
        assert content == {k: v for k, v in resource.items() if k != "id"}, resource["resourceType"]
