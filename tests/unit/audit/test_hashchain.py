"""The hash-chain and event-proof format (carechain.audit.hashchain) the SDK checks without trusting the server:
the documented hashes, and every way a served proof can lie."""

from __future__ import annotations

import hashlib

import pytest

from carechain.audit.hashchain import (
    GENESIS_HASH,
    AuditBatch,
    batch_root,
    chain_hash,
    check_batches,
    encode_event,
    event_proof,
    verify_event_proof,
)
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import IntegrityError


def chained(count: int) -> list[bytes]:
    hashes, previous = [], GENESIS_HASH
    for i in range(count):
        previous = chain_hash(previous, encode_event(audit_pb2.AuditEvent(event_id=f"e{i}", actor_id="prac-1")))
        hashes.append(previous)
    return hashes


def test_the_chain_and_batch_root_are_the_documented_hashes() -> None:
    event_bytes = encode_event(audit_pb2.AuditEvent(event_id="e0", actor_id="prac-1"))
    assert chain_hash(GENESIS_HASH, event_bytes) == hashlib.sha256(
        b"carechain-audit/v1\n" + bytes(32) + event_bytes).digest()
    first, second = chained(2)
    # RFC 9162: leaves SHA-256(0x00 || event_hash), node SHA-256(0x01 || left || right).
    leaves = [hashlib.sha256(b"\x00" + h).digest() for h in (first, second)]
    assert batch_root([first, second]) == hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()


def proof_of(sequence: int, size: int = 5) -> tuple[audit_pb2.EventProof, list[bytes]]:
    hashes = chained(size)
    batch = AuditBatch(1, 1, size, batch_root(hashes), sealed_ms=0)
    return event_proof(batch, hashes, sequence), hashes


def test_a_true_proof_verifies_for_every_event() -> None:
    for sequence in range(1, 6):
        proof, hashes = proof_of(sequence)
        verify_event_proof(proof, hashes[sequence - 1])


@pytest.mark.parametrize("lie", ["other event", "audit path", "leaf index", "tree size", "batch root", "range"])
def test_a_proof_that_lies_is_an_integrity_error(lie: str) -> None:
    proof, hashes = proof_of(3)
    expected = hashes[2]
    if lie == "other event":
        expected = hashes[1]
    elif lie == "audit path":
        proof.audit_path[0] = bytes(32)
    elif lie == "leaf index":
        proof.leaf_index = 1
    elif lie == "tree size":
        proof.tree_size = 4
    elif lie == "batch root":
        proof.batch_root = bytes(32)
    else:  # the served range claims the event sits elsewhere in the batch
        proof.first_sequence = 2
    with pytest.raises(IntegrityError):
        verify_event_proof(proof, expected)


def test_a_proof_needs_the_batch_event_hashes() -> None:
    hashes = chained(3)
    batch = AuditBatch(1, 1, 3, batch_root(hashes), sealed_ms=0)
    with pytest.raises(ValueError):
        event_proof(batch, hashes[:2], 1)
    with pytest.raises(ValueError):
        event_proof(batch, hashes, 4)


def test_batches_must_tile_the_chain_with_matching_roots() -> None:
    hashes = chained(6)
    good = [AuditBatch(1, 1, 3, batch_root(hashes[:3]), 0), AuditBatch(2, 4, 6, batch_root(hashes[3:]), 0, 7)]
    result = check_batches(good, hashes)
    assert result.ok and (result.batches_checked, result.batches_anchored) == (2, 1)
    gap = [good[0], AuditBatch(2, 5, 6, batch_root(hashes[4:]), 0)]
    assert (check_batches(gap, hashes).ok, check_batches(gap, hashes).first_bad_sequence) == (False, 5)
    wrong_root = [good[0], AuditBatch(2, 4, 6, bytes(32), 0)]
    assert "root does not match" in check_batches(wrong_root, hashes).problem
    beyond = [AuditBatch(1, 1, 7, batch_root(hashes), 0)]
    assert check_batches(beyond, hashes).first_bad_sequence == 7
