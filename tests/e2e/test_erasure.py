"""Erasure end to end on the six real processes (embedded backends, and OpenBao/MinIO/etcd): EraseRecords
tombstones then crypto-shreds, reads say the record was erased, the receipt proves the tombstone, the
retention hold refuses, only the patient / a delegate / the operator (by policy) erase, and the ledger and
audit chains still verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner, operator_client

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import Purpose, permit
from carechain.consent.policy import DENIAL_MESSAGE
from carechain.consent.v1 import policy_pb2
from carechain.core.crypto import write_private_file
from carechain.core.errors import IntegrityError
from carechain.records.erasure import NOT_PERMITTED
from carechain.records.v1 import records_pb2
from carechain.storage.s3_blobstore import S3BlobStore

# The records service of this module's network: a 10-year hold on immunizations, and operator erasure on.
RECORDS_ENV = {"CARECHAIN_RETENTION_HOLD_RULES": json.dumps({"Immunization": 3650}),
               "CARECHAIN_OPERATOR_ERASURE": "true"}


def condition(fhir_id: str, onset: str = "2024-05-01") -> dict:
    return {"resourceType": "Condition", "id": str(uuid.uuid4()),
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91302008", "display": "Sepsis"}]},
            "subject": {"reference": f"Patient/{fhir_id}"}, "onsetDateTime": onset}


def immunization(fhir_id: str) -> dict:
    return {"resourceType": "Immunization", "id": str(uuid.uuid4()), "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": {"reference": f"Patient/{fhir_id}"}, "occurrenceDateTime": "2025-10-01"}


def _refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _blob_exists(network, content_sha256: str) -> bool:
    """Whether storage still holds a ciphertext (a file, or a current S3 object), asked behind its back."""
    if network.backends is None:
        return any(p.is_file() for p in network.layout.service_dir("storage").rglob(content_sha256))
    client = network.backends.minio.client()
    try:
        client.stat_object("carechain-blobs", S3BlobStore.object_name(content_sha256))
    except Exception:  # noqa: BLE001 - minio raises S3Error for a missing object
        return False
    return True


@pytest.fixture(scope="module")
def erasure_network(network):
    """The session network with its records service restarted under RECORDS_ENV (restored afterwards)."""
    saved = dict(network.extra_env)
    network.stop_service("records")
    network.extra_env.update(RECORDS_ENV)
    try:
        network.start_service("records")
        yield network
    finally:
        network.stop_service("records")
        network.extra_env.clear()
        network.extra_env.update(saved)
        network.start_service("records")


@pytest.fixture(scope="module")
def ward(erasure_network):
    hospital = new_hospital(erasure_network)
    oncologist = new_practitioner(erasure_network, hospital, "oncology")
    other_doctor = new_practitioner(erasure_network, hospital, "cardiology")
    actors = [hospital, oncologist, other_doctor]
    yield hospital, oncologist, other_doctor
    for actor in actors:
        actor.client.close()


def _patient_with_records(network, hospital, oncologist, *resources):
    patient, fhir_id = new_patient(network, hospital)
    stored = [hospital.client.put_record(patient.principal_id, make(fhir_id)) for make in resources]
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=oncologist.principal_id))
    return patient, stored


def test_erase_one_record_reads_say_erased_and_the_receipt_verifies(erasure_network, ward) -> None:
    hospital, oncologist, other_doctor = ward
    patient, (gone, kept) = _patient_with_records(erasure_network, hospital, oncologist, condition, condition)
    assert oncologist.client.get_record(gone.record_id).resource_json

    receipt = patient.client.erase_records(patient.principal_id, [gone.record_id], "I moved away")
    assert (receipt.patient_id, list(receipt.record_ids), receipt.erased_count) == (
        patient.principal_id, [gone.record_id], 1)
    assert receipt.checkpoint.tree_size > receipt.log_index
    proven = patient.client.verify_erasure_receipt(receipt)
    assert proven.record_ids == (gone.record_id,) and proven.log_index == receipt.log_index

    # A reader consent would have let in is told when; anyone else is denied as before.
    refused = _refused(lambda: oncologist.client.get_record(gone.record_id))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details() == f"record erased on {receipt.erased_on}"
    streamed = _refused(lambda: list(oncologist.client.records.GetRecordStream(
        records_pb2.GetRecordRequest(record_id=gone.record_id, purpose=Purpose.PURPOSE_OF_USE_TREAT), timeout=30)))
    assert (streamed.code(), streamed.details()) == (refused.code(), refused.details())
    denied = _refused(lambda: other_doctor.client.get_record(gone.record_id))
    assert (denied.code(), denied.details()) == (grpc.StatusCode.PERMISSION_DENIED, DENIAL_MESSAGE)
    assert oncologist.client.get_record(kept.record_id).resource_json  # the other record is untouched

    # Crypto-shredded: the ciphertext is gone from storage (and its data key from identity).
    assert not _blob_exists(erasure_network, gone.content_sha256)
    assert _blob_exists(erasure_network, kept.content_sha256)

    # A tampered receipt does not verify.
    forged = records_pb2.ErasureReceipt()
    forged.CopyFrom(receipt)
    forged.record_ids[:] = [kept.record_id]
    with pytest.raises(IntegrityError):
        patient.client.verify_erasure_receipt(forged)

    # Erasing it again: nothing left to erase.
    again = _refused(lambda: patient.client.erase_records(patient.principal_id, [gone.record_id]))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION and "already erased" in again.details()


def test_erase_all_and_the_erasure_is_in_the_patients_history(erasure_network, ward) -> None:
    hospital, oncologist, _ = ward
    patient, stored = _patient_with_records(erasure_network, hospital, oncologist, condition, condition, condition)
    receipt = patient.client.erase_records(patient.principal_id, all_records=True)
    assert receipt.erased_count == 3 and set(receipt.record_ids) == {s.record_id for s in stored}
    for record in stored:
        refused = _refused(lambda r=record: oncologist.client.get_record(r.record_id))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION and "erased on" in refused.details()
    nothing = _refused(lambda: patient.client.erase_records(patient.principal_id, all_records=True))
    assert nothing.code() == grpc.StatusCode.FAILED_PRECONDITION

    erasures = [e.event for e in patient.client.access_history() if e.event.action == audit_pb2.AUDIT_ACTION_ERASE]
    outcomes = sorted(e.outcome for e in erasures)
    assert outcomes == [audit_pb2.AUDIT_OUTCOME_SUCCESS, audit_pb2.AUDIT_OUTCOME_ATTEMPTED]
    done = next(e for e in erasures if e.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS)
    assert done.actor_id == patient.principal_id and "3 record(s) erased" in done.reason
    assert not done.record_id, "counts only: an erasure event names no record"


def test_a_delegate_erases_for_the_patient_until_revoked(erasure_network, ward) -> None:
    hospital, oncologist, _ = ward
    patient, (first, second) = _patient_with_records(erasure_network, hospital, oncologist, condition, condition)
    guardian, _ = new_patient(erasure_network, hospital)
    patient.client.register_delegate(guardian.principal_id, policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN)
    receipt = guardian.client.erase_records(patient.principal_id, [first.record_id])
    assert receipt.erased_count == 1 and guardian.client.verify_erasure_receipt(receipt)
    patient.client.revoke_delegate(guardian.principal_id)
    refused = _refused(lambda: guardian.client.erase_records(patient.principal_id, [second.record_id]))
    assert (refused.code(), refused.details()) == (grpc.StatusCode.PERMISSION_DENIED, NOT_PERMITTED)
    assert oncologist.client.get_record(second.record_id).resource_json


def test_nobody_else_erases_and_learns_nothing_about_the_patient(erasure_network, ward) -> None:
    hospital, oncologist, other_doctor = ward
    patient, (record,) = _patient_with_records(erasure_network, hospital, oncologist, condition)
    stranger, _ = new_patient(erasure_network, hospital)
    answers = set()
    for attempt in (
        lambda: stranger.client.erase_records(patient.principal_id, [record.record_id]),
        lambda: stranger.client.erase_records(patient.principal_id, all_records=True),
        lambda: stranger.client.erase_records("psn-" + uuid.uuid4().hex, [record.record_id]),
        lambda: other_doctor.client.erase_records(patient.principal_id, [record.record_id]),
    ):
        refused = _refused(attempt)
        answers.add((refused.code(), refused.details()))
    assert answers == {(grpc.StatusCode.PERMISSION_DENIED, NOT_PERMITTED)}
    hospital_refused = _refused(lambda: hospital.client.erase_records(patient.principal_id, [record.record_id]))
    assert hospital_refused.code() == grpc.StatusCode.PERMISSION_DENIED
    # A patient naming another patient's record as their own: the same answer as an unknown id.
    foreign = _refused(lambda: stranger.client.erase_records(stranger.principal_id, [record.record_id]))
    unknown = _refused(lambda: stranger.client.erase_records(stranger.principal_id, [str(uuid.uuid4())]))
    assert foreign.code() == unknown.code() == grpc.StatusCode.NOT_FOUND
    assert foreign.details() == unknown.details() == "record_ids[0]: no record of this patient has this id"
    assert oncologist.client.get_record(record.record_id).resource_json


def test_the_operator_erases_where_policy_allows(erasure_network, ward) -> None:
    hospital, oncologist, _ = ward
    patient, (record,) = _patient_with_records(erasure_network, hospital, oncologist, condition)
    with operator_client(erasure_network) as operator:
        receipt = operator.erase_records(patient.principal_id, [record.record_id], "court order 2026/17")
    assert receipt.erased_count == 1
    assert _refused(lambda: oncologist.client.get_record(record.record_id)).code() == \
        grpc.StatusCode.FAILED_PRECONDITION


def test_a_retention_hold_refuses_and_erases_nothing(erasure_network, ward) -> None:
    hospital, oncologist, _ = ward
    patient, (vaccine, note) = _patient_with_records(erasure_network, hospital, oncologist, immunization, condition)
    refused = _refused(lambda: patient.client.erase_records(patient.principal_id, all_records=True))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "retention hold: 1 of the 2 record(s)" in refused.details()
    assert "CARECHAIN_RETENTION_HOLD_RULES: Immunization records are kept 3650 days" in refused.details()
    assert "the first hold ends on 20" in refused.details() and "nothing was erased" in refused.details()
    for record in (vaccine, note):
        assert oncologist.client.get_record(record.record_id).resource_json
        assert _blob_exists(erasure_network, record.content_sha256)
    assert patient.client.erase_records(patient.principal_id, [note.record_id]).erased_count == 1


def test_cli_erase_prints_the_verified_receipt(erasure_network, ward, tmp_path) -> None:
    hospital, oncologist, _ = ward
    patient, (record,) = _patient_with_records(erasure_network, hospital, oncologist, condition)
    key_file = tmp_path / "patient.key"
    write_private_file(key_file, patient.signer.private_pem())
    run = subprocess.run(
        [sys.executable, "-m", "carechain", "records", "erase", "--data-dir", str(erasure_network.layout.root),
         "--key-file", str(key_file), "--principal-id", patient.principal_id, record.record_id, "--json"],
        capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert run.returncode == 0, run.stdout + run.stderr
    printed = json.loads(run.stdout)
    assert printed["record_ids"] == [record.record_id] and printed["proof_verified"] is True
    usage = subprocess.run(
        [sys.executable, "-m", "carechain", "records", "erase", "--data-dir", str(erasure_network.layout.root),
         "--key-file", str(key_file), "--principal-id", patient.principal_id, "--all", record.record_id],
        capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert usage.returncode != 0 and "not both" in usage.stderr


def test_the_ledger_and_the_audit_trail_still_verify_after_erasures(erasure_network, ward) -> None:
    hospital, oncologist, _ = ward
    patient, _ = _patient_with_records(erasure_network, hospital, oncologist, condition)
    patient.client.erase_records(patient.principal_id, all_records=True)
    with operator_client(erasure_network) as operator:
        chain = operator.verify_chain()
        assert chain.ok, chain.problem
        audit = operator.verify_audit()
        assert audit.ok, audit.problem
        report = operator.records.Reconcile(records_pb2.ReconcileRequest(), timeout=120)
        assert report.erased_leftovers == 0, "the erasures destroyed everything themselves"
    verify = subprocess.run(
        [sys.executable, "-m", "carechain", "ledger", "verify", "--data-dir", str(erasure_network.layout.root)],
        capture_output=True, text=True, timeout=120, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "chain OK" in verify.stdout
