"""The ledger's Provenance over FHIR REST end to end (fhir.provenance_routes): the six services and the gateway
as real processes (the network of test_fhir_gateway), a hospital creating a Condition and its practitioner
amending it, then ``GET /Provenance?target=`` listing who wrote each version and when, each Provenance resolvable
by its id, ``_revinclude=Provenance:target`` on a search and on $everything, and a stranger learning nothing;
every body checked by HAPI FHIR's R4 instance validator.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import test_fhir_gateway
from fhir_validator import HapiValidator
from helpers import Actor, new_hospital, new_patient, new_practitioner
from test_fhir_gateway import FHIR_JSON, _bearer, _condition, _valid

from carechain.client.sdk import Purpose, permit
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL

pytest_plugins = ["fhir_validator"]  # one HAPI FHIR JVM for the session
# The gateway module's network (module-scoped: this module starts its own network).
fhir_network = test_fhir_gateway.fhir_network


@dataclass
class Writers:
    """The gateway's URL, the hospital and its practitioner who write, a reader the patient permits, a stranger."""

    base: str
    hospital: Actor
    practitioner: Actor
    patient: Actor
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def writers(fhir_network: LocalNetwork) -> Iterator[Writers]:
    hospital = new_hospital(fhir_network)
    practitioner = new_practitioner(fhir_network, hospital, "pulmonology")
    reader = new_practitioner(fhir_network, hospital, "general-practice")
    stranger = new_practitioner(fhir_network, hospital, "dermatology")
    patient, _ = new_patient(fhir_network, hospital)
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                        categories=[NORMAL]))
    tokens = {name: _bearer(fhir_network, actor) for name, actor in (
        ("hospital", hospital), ("practitioner", practitioner), ("reader", reader), ("stranger", stranger))}
    yield Writers(fhir_network.endpoints.fhir_base_url, hospital, practitioner, patient, tokens)
    for actor in (hospital, practitioner, reader, stranger, patient):
        actor.client.close()


def _get(writers: Writers, path: str, who: str = "reader", **params: Any) -> requests.Response:
    return requests.get(f"{writers.base}/{path}", params=params, timeout=30,
                        headers={"Authorization": writers.tokens[who], "X-Purpose-Of-Use": "TREAT"})


def _until_version(writers: Writers, path: str, version: int) -> requests.Response:
    """The read of path once it serves version (consent folds a new version within moments of its commit)."""
    deadline = time.monotonic() + 30
    while True:
        response = _get(writers, path)
        if response.headers.get("etag") == f'W/"{version}"' or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def _identifier(reference: dict[str, Any]) -> str:
    return reference["identifier"]["value"]


def test_provenance_of_each_version_by_target_by_id_and_as_revinclude(writers: Writers,
                                                                      hapi_validator: HapiValidator) -> None:
    base, psn = writers.base, writers.patient.principal_id
    created = requests.post(f"{base}/Condition", json=_condition(psn), timeout=30,
                            headers={"Authorization": writers.tokens["hospital"], "Content-Type": FHIR_JSON})
    assert created.status_code == 201, created.text
    record_id = created.json()["id"]
    first = _until_version(writers, f"Condition/{record_id}", 1)
    assert first.status_code == 200, first.text
    amended = requests.put(f"{base}/Condition/{record_id}", json={**first.json(), "note": [{"text": "confirmed"}]},
                           headers={"Authorization": writers.tokens["practitioner"], "Content-Type": FHIR_JSON,
                                    "If-Match": 'W/"1"'}, timeout=30)
    assert amended.status_code == 200, amended.text
    second = _until_version(writers, f"Condition/{record_id}", 2)
    assert second.headers["etag"] == 'W/"2"', second.text

    listed = _get(writers, "Provenance", target=f"Condition/{record_id}")
    assert listed.status_code == 200, listed.text
    bundle = listed.json()
    _valid(hapi_validator, bundle)
    assert (bundle["type"], bundle["total"]) == ("searchset", 2)
    newest, oldest = (entry["resource"] for entry in bundle["entry"])
    assert [newest["id"], oldest["id"]] == [f"{record_id}.2", f"{record_id}.1"]
    assert newest["target"] == [{"reference": f"Condition/{record_id}/_history/2"}]
    assert oldest["target"] == [{"reference": f"Condition/{record_id}/_history/1"}]
    # Who wrote each version: the hospital itself, then its practitioner on its behalf; when: the ledger's time.
    [created_by] = oldest["agent"]
    assert created_by["who"]["type"] == "Organization"
    assert _identifier(created_by["who"]) == writers.hospital.principal_id and "onBehalfOf" not in created_by
    [amended_by] = newest["agent"]
    assert _identifier(amended_by["who"]) == writers.practitioner.principal_id
    assert _identifier(amended_by["onBehalfOf"]) == writers.hospital.principal_id
    assert [oldest["activity"]["coding"][0]["code"], newest["activity"]["coding"][0]["code"]] == ["CREATE", "UPDATE"]
    assert oldest["recorded"] == first.json()["meta"]["lastUpdated"]
    assert newest["recorded"] == second.json()["meta"]["lastUpdated"] and newest["recorded"] >= oldest["recorded"]

    # Each id resolves; one version's target answers that version's alone; pages follow next links.
    resolved = _get(writers, f"Provenance/{record_id}.1")
    assert resolved.status_code == 200 and resolved.json() == oldest
    _valid(hapi_validator, resolved.json())
    one = _get(writers, "Provenance", target=f"Condition/{record_id}/_history/2").json()
    assert [e["resource"] for e in one["entry"]] == [newest]
    _valid(hapi_validator, one)
    page = _get(writers, "Provenance", target=f"Condition/{record_id}", _count=1).json()
    [following] = [link["url"] for link in page["link"] if link["relation"] == "next"]
    rest = requests.get(following, timeout=30, headers={"Authorization": writers.tokens["reader"],
                                                        "X-Purpose-Of-Use": "TREAT"}).json()
    assert [e["resource"]["id"] for e in page["entry"] + rest["entry"]] == [newest["id"], oldest["id"]]

    # _revinclude: each match's Provenance (the version served) from the same read.
    for path in ("Condition", f"Patient/{psn}/$everything"):
        params = {"_revinclude": "Provenance:target", **({"patient": f"Patient/{psn}"} if path == "Condition" else {})}
        searched = _get(writers, path, **params)
        assert searched.status_code == 200, searched.text
        _valid(hapi_validator, searched.json())
        entries = searched.json()["entry"]
        assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == [record_id]
        assert [e["resource"] for e in entries if e["search"]["mode"] == "include"] == [newest]
    unsupported = _get(writers, "Condition", patient=f"Patient/{psn}", _revinclude="Provenance:entity")
    assert unsupported.status_code == 400 and unsupported.json()["issue"][0]["expression"] == ["_revinclude"]
    _valid(hapi_validator, unsupported.json())

    # The stranger, whom the patient never permitted, learns nothing, as when reading the record.
    assert _get(writers, f"Condition/{record_id}", "stranger").status_code == 403
    denied = _get(writers, "Provenance", "stranger", target=f"Condition/{record_id}")
    assert denied.status_code == 403 and writers.hospital.principal_id not in denied.text
    _valid(hapi_validator, denied.json())
    assert _get(writers, f"Provenance/{record_id}.1", "stranger").status_code == 403
    withheld = _get(writers, "Condition", "stranger", patient=f"Patient/{psn}", _revinclude="Provenance:target")
    assert withheld.status_code == 403, withheld.text  # the search is refused as the read is: no Provenance either
    assert record_id not in withheld.text and writers.hospital.principal_id not in withheld.text
    _valid(hapi_validator, withheld.json())
