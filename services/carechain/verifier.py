"""Client-side verification of ledger answers, trusting no server.

A client holds only the network's trust bundle (public keys) and the
validator set with its quorum (:class:`LedgerTrust`). From any one validator
it fetches:

1. a checkpoint (``GetCheckpoint``): a block header carrying the log's tree
   size, RFC 9162 root and timestamp, with the co-signatures of the
   validators (a quorum certificate). :func:`verify_checkpoint` accepts it only
   when a quorum of distinct validators of the set signed exactly that header;
2. an RFC 9162 inclusion proof of one transaction (``GetInclusionProof`` at the
   checkpoint's tree size). :func:`verify_inclusion` recomputes the root from
   the transaction's own bytes and the audit path and compares it with the
   checkpoint's root;
3. a consistency proof between two checkpoints (``GetConsistencyProof``):
   :func:`verify_consistency` shows the newer log extends the older one
   (nothing was rewritten in between).

A single lying validator cannot forge a checkpoint (it would need a quorum's
keys), and a proof that does not hash to the co-signed root is rejected, so
the answers are as trustworthy as a quorum of the member organisations.
:func:`verify_record_inclusion` combines the three steps for a record id
(:meth:`carechain.sdk.CareChainClient.verify_record_inclusion`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from carechain import merkle
from carechain.errors import IntegrityError
from carechain.ledger import quorum, transactions
from carechain.ledger.quorum import ValidatorSet
from carechain.ledger.v1 import ledger_pb2
from carechain.network import TrustBundle


@dataclass(frozen=True)
class LedgerTrust:
    """What a client trusts: validator public keys, the validator set and quorum, the chain id."""

    trust: TrustBundle
    validators: ValidatorSet
    chain_id: str

    @classmethod
    def load(cls, trust_dir: pathlib.Path, validators: Iterable[str], chain_id: str, quorum_size: int = 0
             ) -> LedgerTrust:
        """From a trust directory of ``<principal>.pub`` files."""
        return cls(TrustBundle.load(pathlib.Path(trust_dir)), ValidatorSet.of(validators, quorum_size), chain_id)


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose co-signatures met the quorum."""

    height: int
    tree_size: int
    root: bytes
    timestamp_ms: int
    signers: tuple[str, ...]


@dataclass(frozen=True)
class RecordInclusion:
    """Proof that a record's registration is in the co-signed log."""

    record_id: str
    log_index: int
    checkpoint: VerifiedCheckpoint
    transaction: ledger_pb2.Transaction


def verify_checkpoint(checkpoint: ledger_pb2.Checkpoint, trust: LedgerTrust) -> VerifiedCheckpoint:
    """Check a checkpoint's co-signatures and that its fields are the signed header's; IntegrityError otherwise."""
    quorum.check_certificate(checkpoint.header, checkpoint.certificate, trust.trust, trust.validators)
    header = ledger_pb2.BlockHeader.FromString(checkpoint.header)
    if header.chain_id != trust.chain_id:
        raise IntegrityError(f"checkpoint is for chain {header.chain_id!r}, not {trust.chain_id!r}")
    if (checkpoint.chain_id, checkpoint.height, checkpoint.tree_size, checkpoint.root, checkpoint.timestamp_ms) != (
        header.chain_id, header.height, header.log_size, header.log_root, header.timestamp_ms
    ):
        raise IntegrityError("checkpoint fields differ from the co-signed header")
    return VerifiedCheckpoint(
        header.height, header.log_size, bytes(header.log_root), header.timestamp_ms,
        tuple(s.validator_id for s in checkpoint.certificate.signatures),
    )


def verify_inclusion(proof: ledger_pb2.InclusionProof, checkpoint: VerifiedCheckpoint) -> ledger_pb2.Transaction:
    """Check an inclusion proof against a verified checkpoint; returns the proven transaction."""
    if proof.tree_size != checkpoint.tree_size:
        raise IntegrityError(f"inclusion proof is for tree size {proof.tree_size}, not {checkpoint.tree_size}")
    merkle.verify_inclusion(merkle.leaf_hash(proof.leaf), proof.log_index, proof.tree_size, list(proof.hashes),
                            checkpoint.root)
    return ledger_pb2.Transaction.FromString(proof.leaf)


def verify_consistency(
    older: VerifiedCheckpoint, newer: VerifiedCheckpoint, proof: ledger_pb2.ConsistencyProof
) -> None:
    """Check that newer's log extends older's (RFC 9162 consistency proof)."""
    if (proof.first_size, proof.second_size) != (older.tree_size, newer.tree_size):
        raise IntegrityError("consistency proof is for other tree sizes")
    merkle.verify_consistency(older.tree_size, newer.tree_size, list(proof.hashes), older.root, newer.root)


def verify_record_inclusion(ledger: Any, record_id: str, trust: LedgerTrust, timeout: float = 30) -> RecordInclusion:
    """Ask a validator (a LedgerService stub) for proofs that record_id is registered, and check them locally."""
    entry = ledger.GetRecordEntry(ledger_pb2.GetRecordEntryRequest(record_id=record_id), timeout=timeout)
    checkpoint = verify_checkpoint(ledger.GetCheckpoint(ledger_pb2.GetCheckpointRequest(), timeout=timeout), trust)
    if entry.log_index >= checkpoint.tree_size:
        raise IntegrityError("the record is not yet in a final (co-signed) block")
    proof = ledger.GetInclusionProof(
        ledger_pb2.GetInclusionProofRequest(log_index=entry.log_index, tree_size=checkpoint.tree_size),
        timeout=timeout,
    )
    if proof.log_index != entry.log_index:
        raise IntegrityError("inclusion proof is for another log index")
    transaction = verify_inclusion(proof, checkpoint)
    body = transactions.decode_body(transaction)
    if body.WhichOneof("payload") != "register_record" or body.register_record.record_id != record_id:
        raise IntegrityError("the proven transaction does not register this record")
    return RecordInclusion(record_id, entry.log_index, checkpoint, transaction)


def verify_checkpoint_consistency(ledger: Any, older: VerifiedCheckpoint, newer: VerifiedCheckpoint,
                                  timeout: float = 30) -> None:
    """Fetch and check the consistency proof between two verified checkpoints."""
    proof = ledger.GetConsistencyProof(
        ledger_pb2.GetConsistencyProofRequest(first_size=older.tree_size, second_size=newer.tree_size),
        timeout=timeout,
    )
    verify_consistency(older, newer, proof)
