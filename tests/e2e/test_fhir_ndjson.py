"""Bulk NDJSON over the FHIR REST gateway (issue 15): ``POST /`` with ``Content-Type: application/fhir+ndjson``,
one resource per line, imported as a batch, against the six services and the gateway as real processes.

A Synthea patient's bulk-export resources (tests/fixtures/synthea-10), their Patient references written as the
registered pseudonym, import one record per line and read back identical in content; a bad line is reported by
number and element while the rest import; the batch-response validates with HAPI FHIR's R4 validator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fhir_validator import HapiValidator
from helpers import new_hospital, new_patient, new_practitioner
from test_fhir_gateway import SYNTHEA_PATIENT, Parties, _bearer, _synthea_record, _valid

from carechain.client.sdk import Purpose, permit
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES

pytest_plugins = ["fhir_validator"]  # one HAPI FHIR JVM for the session

NDJSON = "application/fhir+ndjson"


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    network = LocalNetwork(tmp_path_factory.mktemp("fhir-ndjson"), fhir=True)
    network.start()
    try:
        hospital = new_hospital(network)
        reader = new_practitioner(network, hospital, "general-practice")
        patient, fhir_id = new_patient(network, hospital, SYNTHEA_PATIENT)
        patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                            categories=[NORMAL, *sorted(SENSITIVE_CATEGORIES)]))
        yield Parties(network.endpoints.fhir_base_url, _bearer(network, hospital), _bearer(network, reader), "",
                      patient, fhir_id)
        for actor in (hospital, reader, patient):
            actor.client.close()
    finally:
        network.stop()


def _as_ndjson_line(resource: dict[str, Any], fhir_id: str, pseudonym: str) -> bytes:
    """A bulk-export line as this server takes it: the patient named by its pseudonym (Patient/<pseudonym>; a
    Patient's id the pseudonym), every other reference as exported."""
    text = json.dumps(resource).replace(f'"Patient/{fhir_id}"', f'"Patient/{pseudonym}"')
    line = json.loads(text)
    if line["resourceType"] == "Patient":
        line["id"] = pseudonym
    return json.dumps(line, separators=(",", ":")).encode()


def _post(parties: Parties, body: bytes) -> requests.Response:
    return requests.post(parties.base, data=body, timeout=300,
                         headers={"Authorization": parties.hospital, "Content-Type": NDJSON})


def _content(served: dict[str, Any], parties: Parties) -> dict[str, Any]:
    """A read's resource without what the server assigns (id, version, time), the patient by its FHIR id."""
    served = dict(served)
    served.pop("id")
    meta = dict(served.pop("meta"))
    meta.pop("versionId")
    meta.pop("lastUpdated")
    if meta:
        served["meta"] = meta
    return json.loads(json.dumps(served).replace(f'"Patient/{parties.patient.principal_id}"',
                                                 f'"Patient/{parties.fhir_id}"'))


def test_a_synthea_patients_ndjson_imports_line_by_line_and_reads_back_identical(
        parties: Parties, hapi_validator: HapiValidator) -> None:
    original = _synthea_record(parties.fhir_id)
    assert len(original) == 62
    psn = parties.patient.principal_id
    body = b"\n".join(_as_ndjson_line(resource, parties.fhir_id, psn) for resource in original) + b"\n"
    response = _post(parties, body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    answer = response.json()
    assert answer["type"] == "batch-response" and len(answer["entry"]) == len(original), "one entry per line"
    _valid(hapi_validator, answer)
    assert [entry["response"]["status"] for entry in answer["entry"]] == ["201 Created"] * len(original)
    locations = [entry["response"]["location"] for entry in answer["entry"]]
    assert len({location.split("/")[-3] for location in locations}) == len(original), "each line its own record"
    session = requests.Session()
    session.headers.update({"Authorization": parties.reader, "X-Purpose-Of-Use": "TREAT"})
    for resource, location in zip(original, locations, strict=True):
        assert location.startswith(f"{parties.base}/{resource['resourceType']}/")
        assert location.endswith("/_history/1")
        read = session.get(location.removesuffix("/_history/1"), timeout=10)
        assert read.status_code == 200, read.text
        served = read.json()
        assert served["id"] == location.split("/")[-3] and served["meta"]["versionId"] == "1"
        assert _content(served, parties) == {k: v for k, v in resource.items() if k != "id"}, \
            resource["resourceType"]
    # Each line went to the ledger as its own record: its Provenance is the ledger's entry of the write.
    first = locations[1].removeprefix(f"{parties.base}/").removesuffix("/_history/1")
    provenance = session.get(f"{parties.base}/Provenance", params={"target": first}, timeout=10)
    assert provenance.status_code == 200, provenance.text
    assert provenance.json()["total"] == 1


def test_a_bad_line_is_reported_and_the_others_import(parties: Parties, hapi_validator: HapiValidator) -> None:
    psn = parties.patient.principal_id
    conditions = [r for r in _synthea_record(parties.fhir_id) if r["resourceType"] == "Condition"][:3]
    assert len(conditions) == 3
    lines = [_as_ndjson_line(resource, parties.fhir_id, psn) for resource in conditions]
    invalid = json.loads(lines[1])
    invalid["clinicalStatus"]["coding"][0]["code"] = "unheard-of"
    unregistered = json.loads(lines[2].replace(psn.encode(), b"psn-not-registered"))
    body = b"\n".join([lines[0], json.dumps(invalid).encode(), b'{"resourceType": "Condition", "subject": ',
                       b"", json.dumps(unregistered).encode(), lines[2]])
    response = _post(parties, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    _valid(hapi_validator, answer)
    statuses = [entry["response"]["status"] for entry in answer["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "400 Bad Request", "400 Bad Request", "400 Bad Request",
                        "201 Created"]
    issues = [entry["response"].get("outcome", {}).get("issue", [{}])[0] for entry in answer["entry"]]
    assert issues[1]["diagnostics"].startswith("line 2: Condition.clinicalStatus")
    assert issues[1]["expression"][0].startswith("Condition.clinicalStatus")
    assert issues[2]["diagnostics"].startswith("line 3: Resource: is not valid JSON")
    assert issues[3]["diagnostics"].startswith("line 4: empty")
    assert issues[4]["diagnostics"].startswith("line 5: ")
    assert issues[4]["expression"] == ["Condition.subject.reference"]
    assert "unheard-of" not in response.text and "psn-not-registered" not in response.text
    read = requests.get(answer["entry"][5]["response"]["location"], timeout=10,
                        headers={"Authorization": parties.reader, "X-Purpose-Of-Use": "TREAT"})
    assert read.status_code == 200 and read.json()["code"] == conditions[2]["code"]


def test_an_empty_body_is_that_lines_400(parties: Parties, hapi_validator: HapiValidator) -> None:
    response = _post(parties, b"")
    assert response.status_code == 200, response.text
    answer = response.json()
    _valid(hapi_validator, answer)
    [entry] = answer["entry"]
    assert entry["response"]["status"] == "400 Bad Request"
    assert entry["response"]["outcome"]["issue"][0]["diagnostics"].startswith("line 1: empty")


def test_an_unauthenticated_import_is_401(parties: Parties, hapi_validator: HapiValidator) -> None:
    unauthenticated = requests.post(parties.base, data=b"{}", headers={"Content-Type": NDJSON}, timeout=10)
    assert unauthenticated.status_code == 401
    _valid(hapi_validator, unauthenticated.json())
