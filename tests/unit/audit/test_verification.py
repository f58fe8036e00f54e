"""Event proofs and VerifyAuditChain (carechain.audit.verification) through gRPC: the chain, the anchors on a
(fake) ledger and the anchoring deadline."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import pytest
from audit_fixtures import AUDIT_SIGNER, OPERATOR, OTHER_PATIENT, PATIENT, AuditEnv, running_audit, status_of

from carechain.audit.anchoring import BatchSealer
from carechain.audit.hashchain import verify_event_proof
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import IntegrityError
from carechain.ledger.transactions import decode_body, signature_valid


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[AuditEnv]:
    with running_audit(tmp_path) as running:
        yield running


def verify(env: AuditEnv, check_ledger: bool = False) -> audit_pb2.VerifyAuditChainResponse:
    return env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(check_ledger=check_ledger), OPERATOR)


def test_an_event_proof_shows_the_event_is_in_an_anchored_batch(env: AuditEnv) -> None:
    receipts = [env.record(reason=f"read {i}") for i in range(5)]
    code, _ = status_of(lambda: env.call("GetEventProof", audit_pb2.GetEventProofRequest(sequence=2), PATIENT))
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # not sealed yet
    env.seal_and_anchor()
    proof = env.call("GetEventProof", audit_pb2.GetEventProofRequest(sequence=2), PATIENT)
    verify_event_proof(proof, receipts[1].event_hash)
    with pytest.raises(IntegrityError):
        verify_event_proof(proof, receipts[2].event_hash)  # not a proof of another event
    assert proof.anchored and proof.batch_number == 1 and (proof.first_sequence, proof.last_sequence) == (1, 5)
    anchored_tx = env.ledger.log[proof.anchor_log_index]
    anchor = decode_body(anchored_tx.transaction).anchor_audit_batch
    assert anchored_tx.transaction.signer_id == "svc-audit" and anchor.merkle_root == proof.batch_root
    assert signature_valid(anchored_tx.transaction, AUDIT_SIGNER.public_key_bytes())  # signed as svc-audit
    verified = verify(env, check_ledger=True)
    assert verified.ok and verified.batches_checked == 1 and verified.anchors_checked == 1


def test_event_proofs_are_private_to_the_patient(env: AuditEnv) -> None:
    env.record()
    env.seal_and_anchor()
    code, _ = status_of(lambda: env.call("GetEventProof", audit_pb2.GetEventProofRequest(sequence=1), OTHER_PATIENT))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = status_of(lambda: env.call("GetEventProof", audit_pb2.GetEventProofRequest(sequence=9), OPERATOR))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = status_of(lambda: env.call("GetEventProof", audit_pb2.GetEventProofRequest(sequence=0),
                                               OPERATOR))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("sequence:")


def test_tampering_is_reported_by_verify(env: AuditEnv) -> None:
    for i in range(3):
        env.record(reason=f"read {i}")
    env.store._db.execute("DELETE FROM audit_events WHERE sequence = 2")  # an attacker with file access
    verified = verify(env)
    assert not verified.ok and verified.first_bad_sequence == 2 and verified.problem


def test_verify_detects_a_ledger_anchor_that_differs(env: AuditEnv) -> None:
    env.record()
    env.seal_and_anchor()
    tampered = env.ledger.log[0]
    body = decode_body(tampered.transaction)
    body.anchor_audit_batch.merkle_root = bytes(32)
    tampered.transaction.body = body.SerializeToString(deterministic=True)
    verified = verify(env, check_ledger=True)
    assert not verified.ok and verified.first_bad_sequence == 1 and "differs" in verified.problem
    assert verify(env).ok  # local check only


def test_verify_with_the_ledger_fails_when_a_batch_misses_the_anchoring_deadline(env: AuditEnv) -> None:
    env.record()
    env.ledger.down = True
    BatchSealer(env.store, 100, 3600, wall=lambda: env.clock[0]).seal_due(force=True)
    env.clock[0] += 600
    verified = verify(env, check_ledger=True)
    assert verified.ok, verified.problem  # waiting, within the default 900 s deadline
    env.clock[0] += 301
    verified = verify(env, check_ledger=True)
    assert not verified.ok and verified.first_bad_sequence == 1
    assert "batch 1" in verified.problem and "deadline of 900 s" in verified.problem
    assert verify(env).ok  # local check only


def test_verification_continues_from_the_checkpoint_it_returned(env: AuditEnv) -> None:
    for i in range(5):
        env.record(reason=f"read {i}")
    env.seal_and_anchor()
    first = verify(env, check_ledger=True)
    assert first.ok and (first.checkpoint.sequence, first.checkpoint.batch_number) == (5, 1)
    assert first.checkpoint.anchors_checked and first.anchors_checked == 1
    for i in range(3):
        env.record(reason=f"later {i}")
    env.seal_and_anchor()
    env.record(reason="not sealed yet")
    later = env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(
        check_ledger=True, from_checkpoint=first.checkpoint), OPERATOR)
    assert later.ok, later.problem
    assert (later.events_checked, later.batches_checked, later.anchors_checked) == (4, 1, 1)  # only the new
    assert (later.checkpoint.sequence, later.checkpoint.batch_number) == (8, 2) and later.checkpoint.anchors_checked
    # A checkpoint of another chain (or a forged one) is a finding, not a pass.
    forged = audit_pb2.AuditChainCheckpoint()
    forged.CopyFrom(first.checkpoint)
    forged.event_hash = bytes(32)
    found = env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(from_checkpoint=forged), OPERATOR)
    assert not found.ok and found.first_bad_sequence == 5 and not found.HasField("checkpoint")


def test_a_malformed_checkpoint_is_refused_naming_the_field(env: AuditEnv) -> None:
    for checkpoint, field in ((audit_pb2.AuditChainCheckpoint(sequence=3), "from_checkpoint"),
                              (audit_pb2.AuditChainCheckpoint(sequence=3, batch_number=1, event_hash=b"x"),
                               "from_checkpoint.event_hash")):
        code, details = status_of(lambda checkpoint=checkpoint: env.call(
            "VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(from_checkpoint=checkpoint), OPERATOR))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field + ":")
