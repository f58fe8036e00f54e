"""The client-side verifier: inclusion and consistency against co-signed checkpoints, trusting no server."""

from __future__ import annotations

import pytest
from ledger_fixtures import CHAIN, Validators, onboarding, record, tx, wait_until

from carechain.client.proofs import (
    LedgerTrust,
    verify_checkpoint,
    verify_checkpoint_consistency,
    verify_record_inclusion,
)
from carechain.core.errors import IntegrityError
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2


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
