"""Record versions and provenance on the real network (issue 14, parts 4 and 6).

Hospital A writes a diagnosis and its practitioner amends it; a practitioner at hospital C, permitted by
the patient's consent, reads version 2, vreads version 1 and lists the history, each read saying who
wrote the version and when (and as FHIR Provenance); hospital B cannot amend A's record; a stale
if_version is refused; and a version that adds a psychiatric code protects version 1 too, without the
refusal naming why.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import grpc
import pytest
from helpers import Actor, new_hospital, new_patient, new_practitioner

from carechain.client.sdk import permit
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
