"""Record versions and provenance on the real network (issue 14, parts 4 and 6).

Hospital A writes a diagnosis and its practitioner amends it; a practitioner at hospital C, permitted by
the patient's consent, reads version 2, vreads version 1 and lists the history, each read saying who
wrote the version and when (and as FHIR Provenance); hospital B cannot amend A's record; a stale
if_version is refused; and a version that adds a psychiatric code protects version 1 too, without the
refusal naming why.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import uuid
from dataclasses import dataclass

import grpc
import pytest
from helpers import Actor, new_hospital, new_patient, new_practitioner

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import name_key_file, permit
from carechain.common.v1 import common_pb2 as c

HYPERTENSION, DEPRESSION = "38341003", "370143000"


def condition(fhir_patient_id: str, code: str, status: str, note: str) -> dict:
    return {"resourceType": "Condition", "id": str(uuid.uuid4()),
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": status}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
            "subject": {"reference": f"Patient/{fhir_patient_id}"}, "onsetDateTime": "2026-02-01",
            "note": [{"text": note}]}


def compact(resource: dict) -> bytes:
    return json.dumps(resource).encode()  # what the SDK sends for a dict


@dataclass
class Story:
    hospital_a: Actor
    practitioner_a: Actor
    hospital_b: Actor
    reader_c: Actor
    patient: Actor
    fhir_id: str


@pytest.fixture(scope="module")
def story(network):
    hospital_a, hospital_b, hospital_c = (new_hospital(network) for _ in range(3))
    practitioner_a = new_practitioner(network, hospital_a, "cardiology")
    reader_c = new_practitioner(network, hospital_c, "emergency-medicine")
    patient, fhir_id = new_patient(network, hospital_a)
    patient.client.grant_consent(permit([c.PURPOSE_OF_USE_TREAT], practitioner_id=reader_c.principal_id))
    yield Story(hospital_a, practitioner_a, hospital_b, reader_c, patient, fhir_id)
    for actor in (hospital_a, practitioner_a, hospital_b, hospital_c, reader_c, patient):
        actor.client.close()


def test_an_amended_diagnosis_is_read_by_version_with_its_history_and_provenance(story) -> None:
    first = condition(story.fhir_id, HYPERTENSION, "provisional", "suspected")
    second = condition(story.fhir_id, HYPERTENSION, "confirmed", "confirmed on repeat measurement")
    written = story.hospital_a.client.put_record(story.patient.principal_id, first)
    amended = story.practitioner_a.client.update_record(written.record_id, second, if_version=1)
    assert (amended.record_id, amended.version) == (written.record_id, 2)
    assert amended.ledger_log_index > written.ledger_log_index

    latest = story.reader_c.client.get_record(written.record_id, provenance=True)
    assert latest.resource_json == compact(second)  # the exact stored bytes of version 2
    assert latest.record_version.version == 2
    assert latest.record_version.author_organization_id == story.hospital_a.principal_id
    assert latest.record_version.author_practitioner_id == story.practitioner_a.principal_id
    meta = json.loads(latest.versioned_resource_json)["meta"]
    assert meta["versionId"] == "2" and meta["lastUpdated"].endswith("Z")
    provenance = json.loads(latest.provenance_json)
    assert provenance["resourceType"] == "Provenance"
    assert provenance["target"] == [{"reference": f"Condition/{written.record_id}/_history/2"}]
    assert provenance["activity"]["coding"][0]["code"] == "UPDATE"
    assert provenance["recorded"] == meta["lastUpdated"]
    agent = provenance["agent"][0]
    assert agent["who"]["identifier"]["value"] == story.practitioner_a.principal_id
    assert agent["onBehalfOf"]["identifier"]["value"] == story.hospital_a.principal_id

    vread = story.reader_c.client.get_record(written.record_id, version=1)
    assert vread.resource_json == compact(first)
    assert vread.record_version.version == 1 and not vread.provenance_json
    assert vread.record_version.author_practitioner_id == ""  # hospital A wrote version 1 itself
    assert json.loads(vread.versioned_resource_json)["meta"]["versionId"] == "1"

    history = story.reader_c.client.record_history(written.record_id)
    assert [(v.version, v.ledger_log_index) for v in history] == [(1, written.ledger_log_index),
                                                                 (2, amended.ledger_log_index)]
    assert [v.content_sha256 for v in history] == [written.content_sha256, amended.content_sha256]
    assert history[0].last_updated_ms <= history[1].last_updated_ms == latest.record_version.last_updated_ms

    with pytest.raises(grpc.RpcError) as missing:
        story.reader_c.client.get_record(written.record_id, version=3)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    # The patient's history tells the two writes apart by version (the reconciler does too).
    writes = [e.event for e in story.patient.client.access_history()
              if e.event.record_id == written.record_id and e.event.action == audit_pb2.AUDIT_ACTION_WRITE
              and e.event.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS]
    assert sorted(e.record_version for e in writes) == [0, 2]


def test_only_the_author_amends_and_a_stale_version_is_refused(story) -> None:
    written = story.hospital_a.client.put_record(story.patient.principal_id,
                                                 condition(story.fhir_id, HYPERTENSION, "provisional", "v1"))
    amendment = condition(story.fhir_id, HYPERTENSION, "refuted", "by another hospital")
    with pytest.raises(grpc.RpcError) as other_hospital:
        story.hospital_b.client.update_record(written.record_id, amendment)
    with pytest.raises(grpc.RpcError) as unknown:
        story.hospital_b.client.update_record(str(uuid.uuid4()), amendment)
    assert other_hospital.value.code() == unknown.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert other_hospital.value.details() == unknown.value.details()  # an id cannot be probed

    story.hospital_a.client.update_record(written.record_id, condition(story.fhir_id, HYPERTENSION, "confirmed", "v2"))
    with pytest.raises(grpc.RpcError) as stale:
        story.hospital_a.client.update_record(written.record_id, amendment, if_version=1)
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "if_version" in stale.value.details()

    observation = {"resourceType": "Observation", "status": "final",
                   "subject": {"reference": f"Patient/{story.fhir_id}"},
                   "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}}
    with pytest.raises(grpc.RpcError) as other_type:
        story.hospital_a.client.update_record(written.record_id, observation)
    assert other_type.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert other_type.value.details().startswith("resource_json")
    assert [v.version for v in story.reader_c.client.record_history(written.record_id)] == [1, 2]


def test_a_version_adding_a_psychiatric_code_protects_every_version(story) -> None:
    written = story.hospital_a.client.put_record(story.patient.principal_id,
                                                 condition(story.fhir_id, HYPERTENSION, "provisional", "v1"))
    assert story.reader_c.client.get_record(written.record_id).record_version.version == 1  # permitted so far
    amended = story.hospital_a.client.update_record(
        written.record_id, condition(story.fhir_id, DEPRESSION, "confirmed", "psychiatric assessment"))
    assert c.SENSITIVITY_CATEGORY_MENTAL_HEALTH in amended.categories

    for version in (0, 1, 2):
        with pytest.raises(grpc.RpcError) as denied:
            story.reader_c.client.get_record(written.record_id, version=version)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "mental" not in denied.value.details().lower() and "psych" not in denied.value.details().lower()
    with pytest.raises(grpc.RpcError) as no_history:
        story.reader_c.client.record_history(written.record_id)
    assert no_history.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert no_history.value.details() == denied.value.details()


def carechain(network, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "carechain", *args, "--data-dir", str(network.layout.root)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == expect, f"carechain {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def key_file(actor: Actor, path: pathlib.Path) -> str:
    actor.signer.save(path)
    name_key_file(path, actor.principal_id)
    return str(path)


def test_the_cli_updates_lists_and_reads_a_version_with_provenance(network, story, tmp_path) -> None:
    hospital, reader = key_file(story.hospital_a, tmp_path / "a.key"), key_file(story.reader_c, tmp_path / "c.key")
    first, second = tmp_path / "v1.json", tmp_path / "v2.json"
    first.write_text(json.dumps(condition(story.fhir_id, HYPERTENSION, "provisional", "cli v1")))
    second.write_text(json.dumps(condition(story.fhir_id, HYPERTENSION, "confirmed", "cli v2")))
    put = carechain(network, "records", "put", "--key-file", hospital, "--patient", story.patient.principal_id,
                    str(first), "--json")
    record_id = json.loads(put.stdout)["record_id"]
    update = carechain(network, "records", "update", "--key-file", hospital, record_id, str(second),
                       "--if-version", "1", "--json")
    assert json.loads(update.stdout)["version"] == 2
    stale = carechain(network, "records", "update", "--key-file", hospital, record_id, str(second),
                      "--if-version", "1", expect=1)
    assert stale.stderr.startswith("error: FAILED_PRECONDITION: if_version")

    history = json.loads(carechain(network, "records", "history", "--key-file", reader, record_id, "--json").stdout)
    assert [v["version"] for v in history["versions"]] == [1, 2]
    assert {v["author_organization_id"] for v in history["versions"]} == {story.hospital_a.principal_id}
    read = json.loads(carechain(network, "records", "get", "--key-file", reader, record_id, "--version", "1",
                                "--provenance", "--json").stdout)
    assert read["version"] == 1 and read["resource"] == json.loads(first.read_text())
    assert read["provenance"]["activity"]["coding"][0]["code"] == "CREATE"
    plain = carechain(network, "records", "get", "--key-file", reader, record_id, "--provenance")
    assert json.loads(plain.stdout) == json.loads(second.read_text())  # stdout: the stored resource
    assert json.loads(plain.stderr)["target"] == [{"reference": f"Condition/{record_id}/_history/2"}]
