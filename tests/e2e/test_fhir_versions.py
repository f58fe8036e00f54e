"""Record versions over FHIR REST end to end (fhir.versions): the six services and the gateway as real processes
(the network and parties of test_fhir_gateway), a hospital updating with If-Match, a stale If-Match refused with
412, vread of each version, the history Bundle, and fhirpy and fhirclient updating, a Condition and a Patient
record alike; every body checked by HAPI FHIR's R4 instance validator.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
import test_fhir_gateway
from fhir_validator import HapiValidator
from fhirclient.models.condition import Condition
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from test_fhir_gateway import FHIR_JSON, Parties, _condition, _valid

pytest_plugins = ["fhir_validator"]  # one HAPI FHIR JVM for the session
# The gateway module's network and parties (module-scoped: this module starts its own network).
fhir_network = test_fhir_gateway.fhir_network
parties = test_fhir_gateway.parties


def _read(parties: Parties, path: str, bearer: str | None = None, **params: Any) -> requests.Response:
    return requests.get(f"{parties.base}/{path}", params=params, timeout=30,
                        headers={"Authorization": bearer or parties.reader, "X-Purpose-Of-Use": "TREAT"})


def _latest(parties: Parties, path: str, version: int) -> requests.Response:
    """The read of path once it serves version (consent folds a new version within moments of its commit)."""
    deadline = time.monotonic() + 30
    while True:
        response = _read(parties, path)
        if response.headers.get("etag") == f'W/"{version}"' or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource without what the server assigns (id, meta.versionId, meta.lastUpdated)."""
    meta = {k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    content = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    return {**content, "meta": meta} if meta else content


def test_update_with_if_match_vread_and_history(parties: Parties, hapi_validator: HapiValidator) -> None:
    base, psn = parties.base, parties.patient.principal_id
    write = {"Authorization": parties.hospital, "Content-Type": FHIR_JSON}
    original = _condition(psn)
    created = requests.post(f"{base}/Condition", json=original, headers=write, timeout=30)
    assert created.status_code == 201 and created.headers["etag"] == 'W/"1"'
    record_id = created.json()["id"]

    first = _read(parties, f"Condition/{record_id}")
    assert first.status_code == 200 and first.headers["etag"] == 'W/"1"' and first.headers["last-modified"]
    assert first.json()["meta"]["versionId"] == "1" and first.json()["meta"]["lastUpdated"].endswith("Z")
    _valid(hapi_validator, first.json())

    amended = {**first.json(), "note": [{"text": "confirmed by spirometry"}]}
    updated = requests.put(f"{base}/Condition/{record_id}", json=amended, timeout=30,
                           headers={**write, "If-Match": first.headers["etag"]})
    assert updated.status_code == 200, updated.text
    assert updated.headers["location"] == f"{base}/Condition/{record_id}/_history/2"
    assert updated.headers["etag"] == 'W/"2"' and updated.json()["meta"]["versionId"] == "2"
    _valid(hapi_validator, updated.json())

    stale = requests.put(f"{base}/Condition/{record_id}", json={**amended, "note": [{"text": "lost update"}]},
                         headers={**write, "If-Match": 'W/"1"'}, timeout=30)
    assert stale.status_code == 412, stale.text
    issue = stale.json()["issue"][0]
    assert issue["code"] == "conflict" and issue["diagnostics"].startswith("If-Match")
    _valid(hapi_validator, stale.json())

    latest = _latest(parties, f"Condition/{record_id}", 2)
    assert latest.headers["etag"] == 'W/"2"', latest.text
    assert latest.json()["note"] == [{"text": "confirmed by spirometry"}]
    _valid(hapi_validator, latest.json())
    vread = _read(parties, f"Condition/{record_id}/_history/1")
    assert vread.status_code == 200 and vread.headers["etag"] == 'W/"1"'
    assert vread.json() == first.json()  # version 1 reads as it did before the update
    assert _content(vread.json()) == original
    assert _read(parties, f"Condition/{record_id}/_history/3").status_code == 404

    history = _read(parties, f"Condition/{record_id}/_history")
    assert history.status_code == 200, history.text
    bundle = history.json()
    _valid(hapi_validator, bundle)
    assert (bundle["type"], bundle["total"]) == ("history", 2)
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"2"', 'W/"1"']
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "POST"]
    assert bundle["entry"][0]["resource"] == latest.json() and bundle["entry"][1]["resource"] == vread.json()
    assert bundle["entry"][0]["response"]["lastModified"] == latest.json()["meta"]["lastUpdated"]
    page = _read(parties, f"Condition/{record_id}/_history", _count=1).json()
    assert [e["response"]["etag"] for e in page["entry"]] == ['W/"2"']
    [following] = [link["url"] for link in page["link"] if link["relation"] == "next"]
    rest = requests.get(following, headers={"Authorization": parties.reader, "X-Purpose-Of-Use": "TREAT"},
                        timeout=30).json()
    assert [e["response"]["etag"] for e in rest["entry"]] == ['W/"1"']
    _valid(hapi_validator, rest)

    # Consent decides the history as it decides a read; the stranger learns nothing of the versions.
    denied = _read(parties, f"Condition/{record_id}/_history", parties.stranger)
    assert denied.status_code == 403 and "_history/2" not in denied.text
    mismatched = requests.put(f"{base}/Condition/{record_id}", json={**amended, "id": str(uuid.uuid4())},
                              headers=write, timeout=30)
    assert mismatched.status_code == 400 and mismatched.json()["issue"][0]["expression"] == ["Condition.id"]
    # No update-as-create: an id CareChain never assigned gets the non-author's refusal (ids cannot be probed).
    unknown = str(uuid.uuid4())
    as_create = requests.put(f"{base}/Condition/{unknown}", json={**amended, "id": unknown}, headers=write,
                             timeout=30)
    assert as_create.status_code == 403, as_create.text
    _valid(hapi_validator, as_create.json())


def test_fhirpy_and_fhirclient_update(parties: Parties, hapi_validator: HapiValidator) -> None:
    bodies: list[dict[str, Any]] = []
    capture = {"hooks": {"response": [lambda response, *args, **kwargs: bodies.append(response.json())]}}
    writer = SyncFHIRClient(parties.base, authorization=parties.hospital, requests_config=capture)
    condition = writer.resource("Condition", **_condition(parties.patient.principal_id))
    condition.save()  # POST
    assert condition["meta"]["versionId"] == "1"
    condition["note"] = [{"text": "exercise-induced"}]
    condition.save()  # PUT /Condition/<id>
    assert condition["meta"]["versionId"] == "2" and condition["note"] == [{"text": "exercise-induced"}]

    fhir = FHIRServer(None, base_uri=parties.base)
    fhir.session.headers.update({"Authorization": parties.hospital})
    fhir.session.hooks["response"].append(lambda response, *args, **kwargs: bodies.append(response.json()))
    third = Condition({**condition.serialize(), "note": [{"text": "resolved in summer"}]})
    answer = third.update(fhir)
    assert answer["meta"]["versionId"] == "3" and answer["id"] == condition.id

    read = _latest(parties, f"Condition/{condition.id}", 3).json()
    assert read["meta"]["versionId"] == "3" and read["note"] == [{"text": "resolved in summer"}]
    reader = SyncFHIRClient(parties.base, authorization=parties.reader, extra_headers={"X-Purpose-Of-Use": "TREAT"})
    second = reader.reference("Condition", condition.id).to_resource()  # the latest version via fhirpy too
    assert second["meta"]["versionId"] == "3"
    history = _read(parties, f"Condition/{condition.id}/_history").json()
    assert [e["resource"]["note"][0]["text"] for e in history["entry"] if "note" in e["resource"]] == [
        "resolved in summer", "exercise-induced"]
    assert len(history["entry"]) == 3
    for body in [*bodies, history]:
        _valid(hapi_validator, body)


def test_a_patient_record_is_updated_like_any(parties: Parties, hapi_validator: HapiValidator) -> None:
    """PUT /Patient/{record id} with the record id as the body's id (records accepts it for a version of that
    record): If-Match, 412 on a stale one, vread of version 1, a history of 2, then fhirpy saving version 3."""
    base, psn = parties.base, parties.patient.principal_id
    write = {"Authorization": parties.hospital, "Content-Type": FHIR_JSON}
    original = {"resourceType": "Patient", "id": psn, "name": [{"family": "Rivera", "given": ["Ana"]}],
                "gender": "female", "birthDate": "1980-02-03"}
    created = requests.post(f"{base}/Patient", json=original, headers=write, timeout=30)
    assert created.status_code == 201, created.text
    record_id = created.json()["id"]
    assert record_id != psn  # served at its record id, like every record
    first = _read(parties, f"Patient/{record_id}")
    assert first.status_code == 200 and first.headers["etag"] == 'W/"1"', first.text

    moved = {**first.json(), "address": [{"city": "Porto", "country": "PT"}]}
    updated = requests.put(f"{base}/Patient/{record_id}", json=moved, timeout=30,
                           headers={**write, "If-Match": first.headers["etag"]})
    assert updated.status_code == 200, updated.text
    assert updated.headers["location"] == f"{base}/Patient/{record_id}/_history/2"
    assert updated.headers["etag"] == 'W/"2"'
    assert (updated.json()["id"], updated.json()["meta"]["versionId"]) == (record_id, "2")
    _valid(hapi_validator, updated.json())

    stale = requests.put(f"{base}/Patient/{record_id}", json={**moved, "gender": "other"},
                         headers={**write, "If-Match": 'W/"1"'}, timeout=30)
    assert stale.status_code == 412, stale.text
    assert stale.json()["issue"][0]["diagnostics"].startswith("If-Match")
    _valid(hapi_validator, stale.json())
    # The pseudonym is the patient's id, not this record's: the body's id must be the URL's, as for any type.
    as_patient_id = requests.put(f"{base}/Patient/{record_id}", json={**moved, "id": psn}, headers=write, timeout=30)
    assert as_patient_id.status_code == 400 and as_patient_id.json()["issue"][0]["expression"] == ["Patient.id"]

    latest = _latest(parties, f"Patient/{record_id}", 2)
    assert latest.headers["etag"] == 'W/"2"' and latest.json()["address"] == moved["address"], latest.text
    _valid(hapi_validator, latest.json())
    vread = _read(parties, f"Patient/{record_id}/_history/1")
    assert vread.status_code == 200 and vread.json() == first.json()
    assert _content(vread.json()) == _content(original)
    history = _read(parties, f"Patient/{record_id}/_history").json()
    _valid(hapi_validator, history)
    assert (history["type"], history["total"]) == ("history", 2)
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    assert history["entry"][0]["resource"] == latest.json() and history["entry"][1]["resource"] == vread.json()

    writer = SyncFHIRClient(base, authorization=parties.hospital)
    patient = writer.resource("Patient", **latest.json())
    patient["telecom"] = [{"system": "phone", "value": "+351 210 000 000"}]
    patient.save()  # PUT /Patient/<record id>
    assert patient["meta"]["versionId"] == "3" and patient.id == record_id
    third = _latest(parties, f"Patient/{record_id}", 3).json()
    assert third["telecom"] == patient["telecom"] and third["address"] == moved["address"]
    _valid(hapi_validator, third)


def test_concurrent_updates_of_one_version_one_wins_the_rest_are_412(parties: Parties,
                                                                     hapi_validator: HapiValidator) -> None:
    write = {"Authorization": parties.hospital, "Content-Type": FHIR_JSON}
    created = requests.post(f"{parties.base}/Condition", json=_condition(parties.patient.principal_id),
                            headers=write, timeout=30).json()

    def amend(n: int) -> requests.Response:
        return requests.put(f"{parties.base}/Condition/{created['id']}", json={**created, "note": [{"text": str(n)}]},
                            headers={**write, "If-Match": 'W/"1"'}, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(amend, range(4)))
    assert sorted(a.status_code for a in answers) == [200, 412, 412, 412], [a.text for a in answers]
    for lost in (a for a in answers if a.status_code == 412):
        assert lost.json()["issue"][0]["diagnostics"].startswith("If-Match")
        assert "data key" not in lost.text
        _valid(hapi_validator, lost.json())
    [won] = [a.json() for a in answers if a.status_code == 200]
    _latest(parties, f"Condition/{created['id']}", 2)
    history = _read(parties, f"Condition/{created['id']}/_history").json()
    assert [e["resource"].get("note") for e in history["entry"]] == [won["note"], None]
