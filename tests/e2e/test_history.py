"""End to end: an operator re-signs the embedded chain after removing a revocation.

The revoked reader reads again (the forged chain verifies on its own), but a patient's SDK that saw an
earlier checkpoint, and `carechain audit verify --ledger` against the checkpoints the audit service
published in its trail, both report the rewritten history.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import grpc
import pytest
from helpers import new_hospital, new_patient, new_practitioner

from carechain.audit.v1 import audit_pb2
from carechain.client.proofs import HistoryRewritten
from carechain.client.sdk import CareChainClient, Category, Purpose, permit
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TrustBundle, service_principal_id
from carechain.dev.demo import cancer_diagnosis
from carechain.dev.localnet import LocalNetwork
from carechain.ledger.chain import Ledger
from carechain.ledger.sqlite_store import DB_FILE, LedgerStore
from carechain.ledger.transactions import decode_body
from carechain.ledger.v1 import ledger_pb2


def _carechain(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "carechain", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)
    return result


def _recorded_tree_size(operator: CareChainClient) -> int:
    """Tree size of the newest ledger checkpoint in the audit trail (0 when none)."""
    sizes = [ledger_pb2.Checkpoint.FromString(stored.event.ledger_checkpoint).tree_size
             for stored in operator.stream_audit_events(service="audit", replay_only=True)
             if stored.event.action == audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT and stored.event.ledger_checkpoint]
    return max(sizes, default=0)


def _re_sign_without(network: LocalNetwork, consent_id: str) -> None:
    """The attack: with the validator's key, rebuild the chain from every valid transaction but the revocation."""
    ledger_dir = network.layout.service_dir("ledger")
    store = LedgerStore.open_read_only(ledger_dir)
    try:
        entries = store.log_entries(0, 1_000_000)
    finally:
        store.close()
    keep = []
    for entry in entries:
        tx = ledger_pb2.Transaction.FromString(entry.tx)
        body = decode_body(tx)
        if entry.valid and not (body.WhichOneof("payload") == "revoke_consent"
                                and body.revoke_consent.consent_id == consent_id):
            keep.append(tx)
    assert len(keep) == sum(e.valid for e in entries) - 1
    signer = Ed25519Signer.from_file(service_principal_id("ledger"),
                                     network.layout.key_file(service_principal_id("ledger")))
    forged_dir = network.layout.root / "forged-ledger"
    forged = Ledger.open(forged_dir, network.endpoints.chain_id, signer, TrustBundle.load(network.layout.trust_dir),
                         block_max_wait_ms=1)
    try:
        for tx in keep:
            assert forged.submit(tx, 30).valid
    finally:
        forged.close()
    for old in ledger_dir.glob(f"{DB_FILE}*"):
        old.unlink()
    for new in forged_dir.glob(f"{DB_FILE}*"):
        shutil.copy(new, ledger_dir / new.name)


def test_a_chain_re_signed_without_a_revocation_is_detected(tmp_path) -> None:
    network = LocalNetwork(tmp_path / "net", extra_env={"CARECHAIN_CHECKPOINT_INTERVAL_SECONDS": "0",
                                                        "CARECHAIN_BATCH_MAX_SECONDS": "0.2"})
    network.start()
    actors = []
    try:
        hospital = new_hospital(network)
        reader = new_practitioner(network, hospital, "oncology")
        patient, fhir_id = new_patient(network, hospital)
        actors = [hospital, reader, patient]
        consent = patient.client.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT],
                                                      practitioner_id=reader.principal_id,
                                                      categories=[Category.SENSITIVITY_CATEGORY_ONCOLOGY]))
        stored = hospital.client.put_record(patient.principal_id, cancer_diagnosis(fhir_id))
        assert reader.client.get_record(stored.record_id).resource_json
        patient.client.revoke_consent(consent.consent_id)
        with pytest.raises(grpc.RpcError) as denied:
            reader.client.get_record(stored.record_id)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # The patient's SDK remembers the checkpoint it saw (in a file); the audit trail records one too.
        memory_file = tmp_path / "patient" / "checkpoints.json"
        watcher = CareChainClient(network.endpoints, patient.signer, checkpoint_file=memory_file)
        actors.append(type(patient)(patient.principal_id, patient.signer, watcher))
        seen = watcher.checkpoint()
        operator = CareChainClient(network.endpoints, network.layout.operator_signer())
        actors.append(type(patient)("operator", network.layout.operator_signer(), operator))
        _wait_for(lambda: _recorded_tree_size(operator) >= seen.tree_size, "the audit trail records a checkpoint")
        cli_memory = {"CARECHAIN_CHECKPOINT_FILE": str(tmp_path / "operator" / "checkpoints.json")}
        honest = _carechain("audit", "verify", "--data-dir", str(network.layout.root), "--ledger", env=cli_memory)
        assert honest.returncode == 0, honest.stdout + honest.stderr

        # The operator stops the ledger and consent, re-signs the chain without the revocation, restarts them.
        for service in ("consent", "ledger"):
            network.stop_service(service)
        _re_sign_without(network, consent.consent_id)
        for service in ("ledger", "consent"):
            network.start_service(service)

        # The attack works on its own: the chain verifies and the revoked reader reads again ...
        assert operator.verify_chain().ok
        assert _wait_for(lambda: _reads(reader.client, stored.record_id), "the revoked reader reads again")
        # ... but the SDK that saw the honest checkpoint (now or after a restart, from its file) says so,
        with pytest.raises(HistoryRewritten, match="ledger history was rewritten"):
            watcher.checkpoint()
        with CareChainClient(network.endpoints, patient.signer, checkpoint_file=memory_file) as restarted:
            with pytest.raises(HistoryRewritten):
                restarted.checkpoint()
        # ... and so does the audit trail's record of the checkpoints.
        forged = _carechain("audit", "verify", "--data-dir", str(network.layout.root), "--ledger", env=cli_memory)
        assert forged.returncode == 1 and "ledger history rewritten" in forged.stdout, forged.stdout + forged.stderr
        # The audit service refuses to publish the forged checkpoint and records the finding.
        findings = _wait_for(lambda: [s.event.reason for s in operator.stream_audit_events(
            service="audit", outcome=audit_pb2.AUDIT_OUTCOME_FAILED, replay_only=True)
            if s.event.action == audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT], "a FAILED checkpoint event")
        assert "ledger history rewritten" in findings[0]
    finally:
        for actor in actors:
            actor.client.close()
        network.stop()


def _reads(client: CareChainClient, record_id: str) -> bool:
    try:
        return bool(client.get_record(record_id).resource_json)
    except grpc.RpcError:
        return False
