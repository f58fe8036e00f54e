"""The client-side verifier: inclusion and consistency against co-signed checkpoints, trusting no server."""

from __future__ import annotations

import pytest
from ledger_fixtures import CHAIN, Validators, onboarding, record, tx, wait_until

from carechain.client.proofs import (
    LedgerTrust,
    verify_checkpoint,
    verify_checkpoint_consistency,
    verify_erasure_receipt,
    verify_record_inclusion,
)
from carechain.core.errors import IntegrityError
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.records.v1 import records_pb2


class LedgerStub:
    """The RPCs the verifier uses, answered by an in-process Ledger (optionally lying)."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger
        self.tamper_leaf = False

    def GetRecordEntry(self, request, timeout=None):  # noqa: N802
        return self.ledger.record_entry(request.record_id)

    def GetCheckpoint(self, request, timeout=None):  # noqa: N802
        return self.ledger.checkpoint(request.height)

    def GetInclusionProof(self, request, timeout=None):  # noqa: N802
        proof = self.ledger.inclusion_proof(request.log_index, request.tree_size)
        if self.tamper_leaf:
            fake = ledger_pb2.Transaction.FromString(proof.leaf)
            fake.signer_id = "someone-else"
            proof.leaf = transactions.encode(fake)
        return proof

    def GetConsistencyProof(self, request, timeout=None):  # noqa: N802
        return self.ledger.consistency_proof(request.first_size, request.second_size)


@pytest.fixture()
def network(tmp_path):
    validators = Validators(3)
    ledgers = [validators.open(tmp_path, i) for i in range(3)]
    txs, _ = onboarding(validators.net)
    for t in txs:
        ledgers[0].submit(t, 20, final=True)
    rec = record("pat-1", "org-1")
    ledgers[1].submit(tx(validators.net.records, register_record=rec), 20, final=True)
    wait_until(lambda: all(ledger.final_height() == ledgers[1].final_height() for ledger in ledgers), "not final")
    yield validators, ledgers, rec.record_id
    for ledger in ledgers:
        ledger.close()


def trust_of(validators: Validators) -> LedgerTrust:
    return LedgerTrust(validators.trust, validators.set, CHAIN)


def test_a_record_inclusion_is_proven_against_a_quorum_signed_checkpoint(network):
    validators, ledgers, record_id = network
    proof = verify_record_inclusion(LedgerStub(ledgers[2]), record_id, trust_of(validators))
    assert proof.log_index == 3 and proof.checkpoint.tree_size == 4
    assert len(proof.checkpoint.signers) >= validators.set.quorum


def test_a_validator_serving_a_forged_transaction_is_caught(network):
    validators, ledgers, record_id = network
    stub = LedgerStub(ledgers[0])
    stub.tamper_leaf = True
    with pytest.raises(IntegrityError, match="root mismatch"):
        verify_record_inclusion(stub, record_id, trust_of(validators))


def test_a_checkpoint_without_a_quorum_or_from_strangers_is_refused(network):
    validators, ledgers, _ = network
    checkpoint = ledgers[0].checkpoint()
    thin = ledger_pb2.Checkpoint()
    thin.CopyFrom(checkpoint)
    del thin.certificate.signatures[1:]
    with pytest.raises(IntegrityError, match="quorum is 2"):
        verify_checkpoint(thin, trust_of(validators))
    other = Validators(3)
    with pytest.raises(IntegrityError, match="not in the validator set|invalid"):
        verify_checkpoint(checkpoint, LedgerTrust(other.trust, other.set, CHAIN))
    lying = ledger_pb2.Checkpoint()
    lying.CopyFrom(checkpoint)
    lying.tree_size += 1
    with pytest.raises(IntegrityError, match="differ from the co-signed header"):
        verify_checkpoint(lying, trust_of(validators))


def test_consistency_between_two_checkpoints_is_proven(network):
    validators, ledgers, _ = network
    trust = trust_of(validators)
    older = verify_checkpoint(ledgers[0].checkpoint(1), trust)
    newer = verify_checkpoint(ledgers[0].checkpoint(), trust)
    verify_checkpoint_consistency(LedgerStub(ledgers[1]), older, newer)
    with pytest.raises(IntegrityError):
        verify_checkpoint_consistency(LedgerStub(ledgers[1]), newer.__class__(
            older.height, older.tree_size, bytes(32), older.timestamp_ms, older.signers), newer)


def _erasure_receipt(validators, ledgers, record_id: str, signer) -> records_pb2.ErasureReceipt:
    """What EraseRecords answers: the tombstone (signed by signer, for pat-1) proven against a checkpoint."""
    erase = ledger_pb2.EraseRecords(patient_id="pat-1", record_ids=[record_id], requested_by="pat-1")
    committed = ledgers[0].submit(tx(signer, erase_records=erase), 20, final=True)
    wait_until(lambda: all(ledger.final_height() >= committed.height for ledger in ledgers), "not final")
    checkpoint = ledgers[1].checkpoint()
    return records_pb2.ErasureReceipt(
        patient_id="pat-1", record_ids=[record_id], erased_count=1, log_index=committed.log_index,
        checkpoint=checkpoint, inclusion_proof=ledgers[2].inclusion_proof(committed.log_index, checkpoint.tree_size))


def test_an_erasure_receipt_proves_its_tombstone(network):
    validators, ledgers, record_id = network
    receipt = _erasure_receipt(validators, ledgers, record_id, validators.net.records)
    proven = verify_erasure_receipt(receipt, trust_of(validators))
    assert (proven.patient_id, proven.record_ids, proven.log_index) == ("pat-1", (record_id,), receipt.log_index)
    assert len(proven.checkpoint.signers) >= validators.set.quorum


@pytest.mark.parametrize(("change", "problem"), [
    (lambda r: r.record_ids.append("r-other"), "not the one the receipt describes"),
    (lambda r: setattr(r, "erased_count", 2), "not the one the receipt describes"),
    (lambda r: setattr(r, "patient_id", "pat-2"), "not the one the receipt describes"),
    (lambda r: setattr(r, "log_index", r.log_index - 1), "another log index"),
    (lambda r: setattr(r.inclusion_proof, "leaf", r.inclusion_proof.leaf[:-1] + b"x"), "root mismatch"),
])
def test_a_changed_erasure_receipt_is_refused(network, change, problem):
    validators, ledgers, record_id = network
    receipt = _erasure_receipt(validators, ledgers, record_id, validators.net.records)
    change(receipt)
    with pytest.raises(IntegrityError, match=problem):
        verify_erasure_receipt(receipt, trust_of(validators))


def test_a_proven_transaction_that_is_not_svc_records_erasure_is_refused(network):
    validators, ledgers, record_id = network
    checkpoint = ledgers[0].checkpoint()
    registration = ledgers[0].record_entry(record_id)
    receipt = records_pb2.ErasureReceipt(
        patient_id="pat-1", record_ids=[record_id], erased_count=1, log_index=registration.log_index,
        checkpoint=checkpoint, inclusion_proof=ledgers[0].inclusion_proof(registration.log_index,
                                                                            checkpoint.tree_size))
    with pytest.raises(IntegrityError, match="not an erasure by svc-records"):
        verify_erasure_receipt(receipt, trust_of(validators))
