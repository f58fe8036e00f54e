"""The audit trail on the real network (embedded and OpenBao+MinIO+etcd): accounting of disclosures and
`carechain audit history`, kill -9 right after acknowledged events, batches anchored on the ledger with
inclusion proofs, StreamEvents resume and `carechain audit tail`, FHIR export, fail-closed reads."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest
from fhir.resources.R4B.bundle import Bundle
from helpers import new_hospital, new_patient, new_practitioner

from carechain.audit.v1 import audit_pb2
from carechain.client.sdk import CareChainClient, Category, Purpose, permit
from carechain.dev.demo import cancer_diagnosis

# The restarted audit service seals quickly so the test sees anchored batches within seconds.
FAST_BATCHES = {"CARECHAIN_BATCH_MAX_SECONDS": "0.2"}


def _carechain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "carechain", *args], capture_output=True, text=True, timeout=60)


def _restart_audit(network, extra_env: dict[str, str], kill: bool) -> None:
    """Kill -9 (or SIGTERM) the audit process and start it again with extra_env on top of the usual env."""
    if kill:
        process = network.processes.pop("audit")
        process.kill()  # SIGKILL: no shutdown, no flush, as a crash
        process.wait()
    else:
        network.stop_service("audit")
    saved = dict(network.extra_env)
    network.extra_env.update(extra_env)
    try:
        network.start_service("audit")
    finally:
        network.extra_env.clear()
        network.extra_env.update(saved)


def _wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_audit_trail_survives_kill_9_and_is_anchored_provable_and_streamable(network, tmp_path) -> None:
    hospital = new_hospital(network)
    reader = new_practitioner(network, hospital, "oncology")
    patient, fhir_id = new_patient(network, hospital)
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                        categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))
    stored = hospital.client.put_record(patient.principal_id, cancer_diagnosis(fhir_id))
    for _ in range(3):
        reader.client.get_record(stored.record_id)  # acknowledged: its audit event is durable

    _restart_audit(network, FAST_BATCHES, kill=True)
    try:
        # Every acknowledged event survived the crash, and the chain verifies.
        disclosures = patient.client.accounting_of_disclosures()
        reads = [d for d in disclosures if d.action == audit_pb2.AUDIT_ACTION_READ]
        assert len(reads) == 3
        assert all(d.recipient_id == reader.principal_id and d.record_id == stored.record_id for d in reads)
        assert all(d.resource_type == "Condition" and d.purpose == Purpose.PURPOSE_OF_USE_TREAT for d in reads)
        assert all(list(d.categories) == [Category.SENSITIVITY_CATEGORY_ONCOLOGY] for d in reads)
        writes = [d for d in disclosures if d.action == audit_pb2.AUDIT_ACTION_WRITE]
        # The write's attempt, then its commit (issue 12: an attempted write is told from a committed one).
        assert [(d.recipient_id, d.outcome) for d in sorted(writes, key=lambda d: d.sequence)] == [
            (hospital.principal_id, audit_pb2.AUDIT_OUTCOME_ATTEMPTED),
            (hospital.principal_id, audit_pb2.AUDIT_OUTCOME_SUCCESS),
        ]
        with CareChainClient(network.endpoints, network.layout.operator_signer()) as operator:
            assert operator.verify_audit().ok

            # The newest read gets sealed into a batch and anchored on the ledger; its proof holds.
            newest = max(d.sequence for d in reads)
            proof = _wait_for(lambda: _anchored_proof(patient.client, newest), "the batch to be anchored")
            assert proof.first_sequence <= newest <= proof.last_sequence
            verified = _wait_for(lambda: _verified_with_ledger(operator), "every sealed batch to be anchored")
            assert verified.anchors_checked >= 1 and verified.batches_checked >= 1

            # StreamEvents: consume some, disconnect, resume from the last sequence.
            everything = list(operator.stream_audit_events(patient_id=patient.principal_id, replay_only=True))
            assert len(everything) == len(disclosures)
            stream = operator.stream_audit_events(patient_id=patient.principal_id)
            first_two = [next(stream), next(stream)]
            stream.cancel()
            reader.client.get_record(stored.record_id)  # written while disconnected
            resumed = list(operator.stream_audit_events(first_two[-1].sequence, patient_id=patient.principal_id,
                                                        replay_only=True))
            sequences = [s.sequence for s in first_two + resumed]
            assert sequences == sorted(set(sequences)) == [s.sequence for s in everything] + [sequences[-1]]

        # FHIR export of the patient's events.
        bundle = Bundle.model_validate(patient.client.export_audit_fhir())
        assert len(bundle.entry) == len(disclosures) + 1

        # The CLI: a patient's accounting of disclosures, and the SRE's tail.
        key_file = tmp_path / "patient.pem"
        patient.signer.save(key_file)
        history = _carechain("audit", "history", "--data-dir", str(network.layout.root),
                             "--principal-id", patient.principal_id, "--key-file", str(key_file))
        assert history.returncode == 0, history.stderr
        assert "RECIPIENT" in history.stdout and reader.principal_id in history.stdout
        assert f"Condition record {stored.record_id} (oncology)" in history.stdout
        tail = _carechain("audit", "tail", "--data-dir", str(network.layout.root), "--patient",
                          patient.principal_id, "--actor", reader.principal_id, "--no-follow")
        assert tail.returncode == 0, tail.stderr
        assert len(tail.stdout.splitlines()) == 4 and all(" READ SUCCESS " in line for line in tail.stdout.splitlines())
        verify = _carechain("audit", "verify", "--data-dir", str(network.layout.root), "--ledger")
        assert verify.returncode == 0 and "audit trail OK" in verify.stdout, verify.stdout + verify.stderr
    finally:
        _restart_audit(network, {}, kill=False)  # back to the default batch settings for later tests
        for actor in (hospital, reader, patient):
            actor.client.close()


def _anchored_proof(client: CareChainClient, sequence: int) -> audit_pb2.EventProof | None:
    try:
        proof = client.audit_event_proof(sequence)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # not sealed yet
            return None
        raise
    return proof if proof.anchored else None


def _verified_with_ledger(operator: CareChainClient) -> audit_pb2.VerifyAuditChainResponse | None:
    result = operator.verify_audit(check_ledger=True)
    assert result.ok, result.problem
    return result if result.batches_anchored == result.batches_checked else None


def test_reads_fail_closed_when_the_audit_store_is_down(network) -> None:
    if network.backends is None:
        pytest.skip("the embedded audit store lives inside the audit process (its outage is the service's)")
    hospital = new_hospital(network)
    reader = new_practitioner(network, hospital, "oncology")
    patient, fhir_id = new_patient(network, hospital)
    patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                        categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))
    stored = hospital.client.put_record(patient.principal_id, cancer_diagnosis(fhir_id))
    network.backends.etcd.stop()  # the audit service stays up; its store does not answer
    try:
        with pytest.raises(grpc.RpcError) as refused:
            reader.client.get_record(stored.record_id)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as history:
            patient.client.access_history()
        assert history.value.code() == grpc.StatusCode.UNAVAILABLE and "etcd" in history.value.details()
    finally:
        network.backends.etcd.start()
    _wait_for(lambda: _reads(reader.client, stored.record_id), "reads to work again after etcd is back")
    for actor in (hospital, reader, patient):
        actor.client.close()


def _reads(client: CareChainClient, record_id: str) -> bool:
    try:
        return bool(client.get_record(record_id).resource_json)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return False
        raise


def test_audit_history_cli_needs_the_patients_key(network) -> None:
    result = _carechain("audit", "history", "--data-dir", str(network.layout.root))
    assert result.returncode != 0 and "--key-file" in (result.stdout + result.stderr)


def test_break_glass_read_notifies_the_patient_and_queues_a_review(network) -> None:
    hospital = new_hospital(network)
    emergency = new_practitioner(network, hospital, "emergency-medicine")
    patient, fhir_id = new_patient(network, hospital)
    heart_rate = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{fhir_id}"}, "valueQuantity": {"value": 72},
    }
    stored = hospital.client.put_record(patient.principal_id, heart_rate)
    emergency.client.get_record(stored.record_id, purpose=Purpose.PURPOSE_OF_USE_ETREAT,
                                break_glass_reason="unresponsive on arrival")  # no consent: explicit break-glass

    [note] = patient.client.notifications()
    assert note.event.event.alert and note.event.event.actor_id == emergency.principal_id
    assert emergency.principal_id in note.message and "ETREAT" in note.message
    [disclosure] = [d for d in patient.client.accounting_of_disclosures() if d.alert]
    assert disclosure.purpose == Purpose.PURPOSE_OF_USE_ETREAT and disclosure.record_id == stored.record_id
    with CareChainClient(network.endpoints, network.layout.operator_signer()) as operator:
        [item] = [i for i in operator.review_items(audit_pb2.REVIEW_STATUS_OPEN)
                  if i.event.event.patient_id == patient.principal_id]
    resolved = _carechain("audit", "resolve", item.item_id, "--note", "emergency confirmed", "--data-dir",
                          str(network.layout.root))
    assert resolved.returncode == 0 and "resolved" in resolved.stdout, resolved.stdout + resolved.stderr
    review = [d for d in patient.client.accounting_of_disclosures() if d.action == audit_pb2.AUDIT_ACTION_REVIEW]
    assert [d.recipient_id for d in review] == ["operator"]
    for actor in (hospital, emergency, patient):
        actor.client.close()
