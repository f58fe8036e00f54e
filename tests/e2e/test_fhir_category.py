"""FHIR search by clinical category (``category``) end to end: REST, fhirpy, the gRPC SDK and the CLI.

The six services and the FHIR gateway as real processes (embedded backends). A hospital writes a patient's
Observations (laboratory, vital signs, one without a category) and Conditions (encounter diagnoses, a problem
list item, a psychiatric encounter diagnosis consent withholds from the reader) over REST. The categories are
kept per version in the sealed ledger metadata: ``category`` finds them (token forms, commas: any), an update
that changes a category moves the record, the withheld count of an ordinary category is told and the one of a
sensitive category code is not. Every searchset Bundle is checked by HAPI FHIR's R4 instance validator.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from fhir_validator import HapiValidator
from fhirpy import SyncFHIRClient
from helpers import Actor, new_hospital, new_patient

from carechain.client.auth import TokenSource
from carechain.client.channels import open_channel
from carechain.client.sdk import CareChainClient, Kind, Purpose, name_key_file, new_key_file, permit
from carechain.core.layout import audience
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL

pytest_plugins = ["fhir_validator"]  # one HAPI FHIR JVM for the session

FHIR_JSON = "application/fhir+json"
TREAT = Purpose.PURPOSE_OF_USE_TREAT
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ENCOUNTER_DIAGNOSIS = f"{CONDITION_CATEGORY}|encounter-diagnosis"


@dataclass
class World:
    """The gateway, the reader (a practitioner with a key file) and what the hospital wrote, by name."""

    network: LocalNetwork
    base: str
    hospital_bearer: str
    reader: Actor
    reader_bearer: str
    reader_key_file: pathlib.Path
    patient: Actor
    ids: dict[str, str]


def _bearer(network: LocalNetwork, actor: Actor) -> str:
    with open_channel(network.endpoints.identity, "identity") as identity:
        return TokenSource.for_signer(identity, actor.signer).authorization(audience("records"))


def _categorised(system: str, code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": system, "code": code, "display": code.replace("-", " ").title()}]}]


def _observation(psn: str, loinc: str, category: str | None) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            **({"category": _categorised(OBSERVATION_CATEGORY, category)} if category else {}),
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": f"Patient/{psn}"}, "effectiveDateTime": "2026-01-15",
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}


def _condition(psn: str, snomed: str, display: str, category: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "category": _categorised(CONDITION_CATEGORY, category),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": snomed, "display": display}]},
            "subject": {"reference": f"Patient/{psn}"}, "recordedDate": "2026-02-10"}


def _create(base: str, bearer: str, resource: dict[str, Any]) -> requests.Response:
    return requests.post(f"{base}/{resource['resourceType']}", json=resource, timeout=30,
                         headers={"Authorization": bearer, "Content-Type": FHIR_JSON})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("fhir-category")
    network = LocalNetwork(root, fhir=True)
    network.start()
    try:
        hospital = new_hospital(network)
        key_file = root / "reader.key"
        key = new_key_file(key_file)
        principal = hospital.client.register(Kind.PRINCIPAL_KIND_PRACTITIONER, "Dr. Lab", key.public_key_bytes(),
                                             specialty="general-practice")
        name_key_file(key_file, principal.principal_id)
        signer = key.with_key_id(principal.principal_id)
        reader = Actor(principal.principal_id, signer, CareChainClient(network.endpoints, signer))
        patient, _ = new_patient(network, hospital)
        psn = patient.principal_id
        patient.client.grant_consent(permit([TREAT], practitioner_id=reader.principal_id, categories=[NORMAL]))
        base, writer = network.endpoints.fhir_base_url, _bearer(network, hospital)
        resources = {
            "glucose": _observation(psn, "2339-0", "laboratory"),
            "heart_rate": _observation(psn, "8867-4", "vital-signs"),
            "uncategorised": _observation(psn, "8480-6", None),
            "asthma": _condition(psn, "195967001", "Asthma", "encounter-diagnosis"),
            "hypertension": _condition(psn, "38341003", "Hypertension", "problem-list-item"),
            "depression": _condition(psn, "35489007", "Depressive disorder", "encounter-diagnosis"),
        }
        made = {name: _create(base, writer, r) for name, r in resources.items()}
        assert all(r.status_code == 201 for r in made.values()), [r.text for r in made.values()]
        yield World(network, base, writer, reader, _bearer(network, reader), key_file, patient,
                    {name: r.json()["id"] for name, r in made.items()})
        for actor in (hospital, reader, patient):
            actor.client.close()
    finally:
        network.stop()


def _valid(hapi: HapiValidator, body: dict[str, Any]) -> None:
    outcome = hapi.validate(body)
    assert outcome.valid, f"{body.get('resourceType')}: " + "; ".join(map(str, outcome.errors))


def _withheld(bundle: dict[str, Any]) -> int:
    for entry in bundle.get("entry", []):
        if entry["search"]["mode"] == "outcome":
            for issue in entry["resource"]["issue"]:
                if issue["code"] == "suppressed":
                    return int(issue["diagnostics"].split()[0])
    return 0


def _matches(bundle: dict[str, Any]) -> list[str]:
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match")


def _search(world: World, resource_type: str, params: list[tuple[str, str]]) -> requests.Response:
    return requests.get(f"{world.base}/{resource_type}", params=[("patient", world.patient.principal_id), *params],
                        timeout=30, headers={"Authorization": world.reader_bearer, "X-Purpose-Of-Use": "TREAT"})


def test_rest_search_by_category(world: World, hapi_validator: HapiValidator) -> None:
    lab = _search(world, "Observation", [("category", "laboratory")])
    assert lab.status_code == 200, lab.text
    assert _matches(lab.json()) == [world.ids["glucose"]] and _withheld(lab.json()) == 0
    assert any(link["relation"] == "self" and "category=laboratory" in link["url"] for link in lab.json()["link"])
    _valid(hapi_validator, lab.json())

    # system|code; the psychiatric encounter diagnosis is withheld and counted (encounter-diagnosis is not
    # sensitive), never named.
    diagnoses = _search(world, "Condition", [("category", ENCOUNTER_DIAGNOSIS)])
    assert diagnoses.status_code == 200 and _matches(diagnoses.json()) == [world.ids["asthma"]]
    assert _withheld(diagnoses.json()) == 1
    assert world.ids["depression"] not in diagnoses.text and "Depressive" not in diagnoses.text
    _valid(hapi_validator, diagnoses.json())

    either = _search(world, "Condition", [("category", "encounter-diagnosis,problem-list-item")])
    assert _matches(either.json()) == sorted([world.ids["asthma"], world.ids["hypertension"]])
    _valid(hapi_validator, either.json())
    assert not _matches(_search(world, "Condition", [("category", "|encounter-diagnosis")]).json())  # no system
    assert not _matches(_search(world, "Observation", [("category", f"{CONDITION_CATEGORY}|laboratory")]).json())

    # A sensitive category code: the withheld count would name what consent hides, so none is told.
    sensitive = _search(world, "Condition", [("category", "http://snomed.info/sct|35489007")])
    assert sensitive.status_code == 200 and not _matches(sensitive.json()) and _withheld(sensitive.json()) == 0
    _valid(hapi_validator, sensitive.json())


@pytest.mark.parametrize(("resource_type", "params", "expression"), [
    ("Condition", [("category", "encounter-diagnosis"), ("category", "problem-list-item")], "category"),  # AND
    ("Immunization", [("category", "laboratory")], "category"),  # Immunization has no category element
    ("Condition", [("category:text", "diagnosis")], "category:text"),
    ("Observation", [("category", "a|b|c")], "category"),
])
def test_category_refusals_name_the_parameter(world: World, hapi_validator: HapiValidator, resource_type: str,
                                              params: list[tuple[str, str]], expression: str) -> None:
    refused = _search(world, resource_type, params)
    assert refused.status_code == 400, refused.text
    [issue] = refused.json()["issue"]
    assert issue["expression"] == [expression] and issue["diagnostics"].startswith(expression)
    _valid(hapi_validator, refused.json())


def test_capability_statement_lists_category_where_the_type_has_it(world: World,
                                                                   hapi_validator: HapiValidator) -> None:
    statement = requests.get(f"{world.base}/metadata", timeout=30).json()
    names = {r["type"]: [p["name"] for p in r.get("searchParam", [])] for r in statement["rest"][0]["resource"]}
    assert "category" in names["Observation"] and "category" in names["AllergyIntolerance"]
    assert "category" not in names["Immunization"] and "category" not in names["Encounter"]
    _valid(hapi_validator, statement)


def test_fhirpy_searches_by_category(world: World) -> None:
    client = SyncFHIRClient(world.base, authorization=world.reader_bearer,
                            extra_headers={"X-Purpose-Of-Use": "TREAT"})
    found = client.resources("Observation").search(patient=world.patient.principal_id,
                                                   category=f"{OBSERVATION_CATEGORY}|vital-signs").fetch_all()
    assert [o.id for o in found] == [world.ids["heart_rate"]]
    assert found[0]["category"][0]["coding"][0]["code"] == "vital-signs"


def test_grpc_search_by_resource_category(world: World) -> None:
    psn = world.patient.principal_id
    lab = world.reader.client.search_records(psn, purpose=TREAT, resource_categories=["laboratory"])
    assert [r.record_id for r in lab.records] == [world.ids["glucose"]]
    assert list(lab.records[0].resource_categories) == [f"{OBSERVATION_CATEGORY}|laboratory"]
    diagnoses = world.reader.client.search_records(psn, purpose=TREAT, resource_categories=[ENCOUNTER_DIAGNOSIS])
    assert [r.record_id for r in diagnoses.records] == [world.ids["asthma"]] and diagnoses.withheld == 1
    # The Observation written without a category matches no category; it is still found without one.
    everything = world.reader.client.search_records(psn, purpose=TREAT, resource_types=["Observation"])
    assert world.ids["uncategorised"] in [r.record_id for r in everything.records]
    assert not [r for r in everything.records if r.record_id == world.ids["uncategorised"]][0].resource_categories


def test_the_cli_searches_by_fhir_category(world: World) -> None:
    def search(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "carechain", "records", "search", "--patient",
                               world.patient.principal_id, *args, "--key-file", str(world.reader_key_file),
                               "--data-dir", str(world.network.layout.root)], capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done.stdout

    found = json.loads(search("--fhir-category", "laboratory", "--fhir-category", "problem-list-item", "--json"))
    assert sorted(r["record_id"] for r in found["records"]) == sorted([world.ids["glucose"],
                                                                       world.ids["hypertension"]])
    assert {c for r in found["records"] for c in r["resource_categories"]} == {
        f"{OBSERVATION_CATEGORY}|laboratory", f"{CONDITION_CATEGORY}|problem-list-item"}
    [line] = search("--fhir-category", f"{OBSERVATION_CATEGORY}|laboratory").splitlines()
    assert line.startswith(world.ids["glucose"]) and line.endswith(f"category {OBSERVATION_CATEGORY}|laboratory")


def test_an_update_is_searched_by_its_own_categories(world: World, hapi_validator: HapiValidator) -> None:
    """Runs last: the glucose Observation's version 2 is vital signs, and search sees the latest version."""
    record_id = world.ids["glucose"]
    current = requests.get(f"{world.base}/Observation/{record_id}", timeout=30,
                           headers={"Authorization": world.reader_bearer, "X-Purpose-Of-Use": "TREAT"})
    assert current.status_code == 200, current.text
    amended = {**current.json(), "category": _categorised(OBSERVATION_CATEGORY, "vital-signs")}
    updated = requests.put(f"{world.base}/Observation/{record_id}", json=amended, timeout=30,
                           headers={"Authorization": world.hospital_bearer, "Content-Type": FHIR_JSON,
                                    "If-Match": current.headers["etag"]})
    assert updated.status_code == 200, updated.text
    assert not _matches(_search(world, "Observation", [("category", "laboratory")]).json())
    vitals = _search(world, "Observation", [("category", "vital-signs")])
    assert _matches(vitals.json()) == sorted([record_id, world.ids["heart_rate"]])
    assert {e["resource"]["meta"]["versionId"] for e in vitals.json()["entry"]
            if e["resource"]["id"] == record_id} == {"2"}
    _valid(hapi_validator, vitals.json())
