"""The audit trail's hash chain and batch proofs: the format the SDK checks without trusting the server.

Every event is stored as its deterministic protobuf encoding, chained to its
predecessor::

    event_hash = SHA-256(b"carechain-audit/v1\\n" + previous_hash + event_bytes)

with 32 zero bytes (:data:`GENESIS_HASH`) as the previous hash of the first
event (sequence 1).

Consecutive events are *sealed* into numbered batches (1, 2, ...; batch n+1
starts right after batch n). A batch's root is the RFC 9162 Merkle tree hash
over its events' chain hashes in sequence order (leaf data = the 32-byte
event hash, so a leaf is ``SHA-256(0x00 || event_hash)``); the audit service
anchors it on the ledger. :func:`event_proof` / :func:`verify_event_proof` are
an event's inclusion proof in its batch; :func:`check_head_and_batches` and
:func:`check_batches` are the checks every store's ``verify`` ends with.

A client module (``CLIENT_MODULES``): it imports only ``core`` and the stubs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from carechain.audit.v1 import audit_pb2
from carechain.core import merkle
from carechain.core.crypto import same, sha256
from carechain.core.errors import IntegrityError

AUDIT_HASH_CONTEXT = b"carechain-audit/v1\n"
GENESIS_HASH = bytes(32)


def encode_event(event: audit_pb2.AuditEvent) -> bytes:
    """Deterministic encoding of an event (what is hashed and stored)."""
    return event.SerializeToString(deterministic=True)


def chain_hash(previous_hash: bytes, event_bytes: bytes) -> bytes:
    """The hash linking an encoded event to its predecessor."""
    return sha256(AUDIT_HASH_CONTEXT + previous_hash + event_bytes)


def batch_root(event_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 root of a batch: leaves are SHA-256(0x00 || event_hash), in sequence order."""
    return merkle.root([merkle.leaf_hash(h) for h in event_hashes])


@dataclass(frozen=True)
class AuditBatch:
    """A sealed batch of consecutive events and, once anchored, its ledger log index."""

    batch_number: int
    first_sequence: int
    last_sequence: int
    merkle_root: bytes
    sealed_ms: int
    anchor_log_index: int | None = None

    @property
    def size(self) -> int:
        """Number of events in the batch."""
        return self.last_sequence - self.first_sequence + 1

    @property
    def anchored(self) -> bool:
        """True once the batch's root is on the ledger."""
        return self.anchor_log_index is not None

    def contains(self, sequence: int) -> bool:
        """Whether the event with this sequence is in the batch."""
        return self.first_sequence <= sequence <= self.last_sequence


def event_proof(batch: AuditBatch, event_hashes: Sequence[bytes], sequence: int) -> audit_pb2.EventProof:
    """Inclusion proof of the event at sequence in batch, whose event hashes (in order) are given."""
    if len(event_hashes) != batch.size or not batch.contains(sequence):
        raise ValueError("event hashes do not match the batch")
    index = sequence - batch.first_sequence
    return audit_pb2.EventProof(
        sequence=sequence,
        event_hash=event_hashes[index],
        batch_number=batch.batch_number,
        first_sequence=batch.first_sequence,
        last_sequence=batch.last_sequence,
        leaf_index=index,
        tree_size=batch.size,
        audit_path=merkle.MerkleTree([merkle.leaf_hash(h) for h in event_hashes]).inclusion_proof(index),
        batch_root=batch.merkle_root,
        anchored=batch.anchored,
        anchor_log_index=batch.anchor_log_index or 0,
    )


def verify_event_proof(proof: audit_pb2.EventProof, event_hash: bytes | None = None) -> None:
    """Check an EventProof (RFC 9162 section 2.1.3.2); IntegrityError when it does not hold.

    With event_hash (e.g. from an AuditReceipt the caller kept), also check that
    the proof is about that event.
    """
    if event_hash is not None and not same(event_hash, proof.event_hash):
        raise IntegrityError("event proof: it is about another event hash")
    if proof.leaf_index != proof.sequence - proof.first_sequence or \
            proof.tree_size != proof.last_sequence - proof.first_sequence + 1:
        raise IntegrityError("event proof: leaf index or tree size does not match the batch's sequences")
    merkle.verify_inclusion(
        merkle.leaf_hash(proof.event_hash), proof.leaf_index, proof.tree_size, list(proof.audit_path), proof.batch_root
    )



@dataclass(frozen=True)
class ChainCheckpoint:
    """A verified prefix of the trail: events 1..sequence (the last with event_hash), sealed in batches
    1..batch_number, the last of which ends at sequence. Where an incremental verification starts."""

    sequence: int = 0
    event_hash: bytes = GENESIS_HASH
    batch_number: int = 0


#: The empty prefix: verification from event 1.
GENESIS = ChainCheckpoint()


@dataclass(frozen=True)
class AuditVerification:
    """Outcome of re-checking the chain and the batches; first_bad_sequence is 0 when ok.

    Counts cover what was checked (after the starting checkpoint); checkpoint, when ok, is the
    end of the last verified batch: where the next verification can start.
    """

    ok: bool
    events_checked: int
    first_bad_sequence: int = 0
    problem: str = ""
    batches_checked: int = 0
    batches_anchored: int = 0
    checkpoint: ChainCheckpoint | None = None


def check_head_and_batches(
    count: int,
    last_hash: bytes,
    head_sequence: int,
    head_hash: bytes,
    batches: Sequence[AuditBatch],
    event_hashes: Sequence[bytes],
    start: ChainCheckpoint = GENESIS,
) -> AuditVerification:
    """After walking linked events up to sequence count (from start): the stored head must name the last
    one (a deleted newest event shows here), then the sealed batches after start must match the events."""
    walked = count - start.sequence
    if head_sequence > count:
        return AuditVerification(
            False, walked, count + 1, f"event {count + 1} is missing (the chain head is at event {head_sequence})"
        )
    if head_sequence != count or not same(head_hash, last_hash):
        return AuditVerification(False, walked, max(count, 1), f"chain head does not match event {count}")
    return check_batches(batches, event_hashes, start)


def check_batches(
    batches: Sequence[AuditBatch], event_hashes: Sequence[bytes], start: ChainCheckpoint = GENESIS
) -> AuditVerification:
    """Check that batches tile the verified chain from start and that each root matches its events.

    event_hashes are the verified chain's hashes after start (index 0 = sequence start.sequence + 1);
    batches are the sealed ones after start.batch_number, in order.
    """
    base = start.sequence
    walked = len(event_hashes)
    count = base + walked
    expected_first = base + 1
    reached = start
    for number, batch in enumerate(batches, start=start.batch_number + 1):
        checked = number - 1 - start.batch_number
        bad = batch.first_sequence or expected_first
        if batch.batch_number != number:
            return AuditVerification(False, walked, expected_first, f"batch {number} is missing", checked)
        if batch.first_sequence != expected_first or batch.last_sequence < batch.first_sequence:
            return AuditVerification(
                False, walked, bad, f"batch {number} does not continue batch {number - 1}", checked
            )
        if batch.last_sequence > count:
            return AuditVerification(
                False, walked, count + 1, f"batch {number} covers events missing from the chain", checked
            )
        root = batch_root(event_hashes[batch.first_sequence - 1 - base : batch.last_sequence - base])
        if not same(root, batch.merkle_root):
            return AuditVerification(
                False, walked, batch.first_sequence, f"batch {number} root does not match its events", checked
            )
        expected_first = batch.last_sequence + 1
        reached = ChainCheckpoint(batch.last_sequence, event_hashes[batch.last_sequence - 1 - base], number)
    return AuditVerification(True, walked, 0, "", len(batches), sum(1 for b in batches if b.anchored), reached)


class ChainWalk:
    """Re-checks stored events one by one in sequence order from a checkpoint (event 1 by default): every
    store's ``verify``.

    Per stored event: :meth:`check` (sequence, chain hash, decoding) returns the decoded event or
    the finding; the store then compares its own index entries with the event (:meth:`problem`
    names a mismatch) and calls :meth:`accept`. :meth:`finish` checks the chain head and the
    sealed batches after the checkpoint against the walked chain.
    """

    def __init__(self, start: ChainCheckpoint = GENESIS) -> None:
        self.start = start
        self.previous = start.event_hash
        self.hashes: list[bytes] = []

    @property
    def expected(self) -> int:
        """The sequence the next stored event must have."""
        return self.start.sequence + len(self.hashes) + 1

    def problem(self, sequence: int, problem: str) -> AuditVerification:
        """The finding that event sequence is bad (every event walked so far was good)."""
        return AuditVerification(False, len(self.hashes), sequence, problem)

    def check(self, sequence: int, stored_hash: bytes, event_bytes: bytes) -> audit_pb2.AuditEvent | AuditVerification:
        """The next stored event decoded, or the finding when it is missing, changed, moved or undecodable."""
        if sequence != self.expected:
            return self.problem(self.expected, f"event {self.expected} is missing")
        if len(stored_hash) != len(GENESIS_HASH) or not same(chain_hash(self.previous, event_bytes), stored_hash):
            return self.problem(sequence, f"event {sequence} does not match its chain hash (changed or moved)")
        try:
            return audit_pb2.AuditEvent.FromString(event_bytes)
        except Exception:  # noqa: BLE001 - any decode failure is corruption
            return self.problem(sequence, f"event {sequence} cannot be decoded")

    def accept(self, stored_hash: bytes) -> None:
        """The checked event is good: the next one chains to it."""
        self.previous = stored_hash
        self.hashes.append(stored_hash)

    def finish(self, head_sequence: int, head_hash: bytes, batches: Sequence[AuditBatch]) -> AuditVerification:
        """After the last stored event: the head must name it, and the batches must match the chain."""
        return check_head_and_batches(self.start.sequence + len(self.hashes), self.previous, head_sequence,
                                      head_hash, batches, self.hashes, self.start)


def check_start(
    start: ChainCheckpoint, stored_hash: bytes | None, batch: AuditBatch | None
) -> AuditVerification | None:
    """The finding when the store no longer holds the trusted checkpoint (its event or its batch), else None."""
    if start.sequence == 0 and start.batch_number == 0:
        return None
    if stored_hash is None or not same(stored_hash, start.event_hash):
        return AuditVerification(
            False, 0, max(start.sequence, 1),
            f"event {start.sequence} differs from the trusted checkpoint (changed, moved or deleted)")
    if start.batch_number and (batch is None or batch.last_sequence != start.sequence):
        return AuditVerification(False, 0, max(start.sequence, 1),
                                 f"batch {start.batch_number} differs from the trusted checkpoint")
    return None
