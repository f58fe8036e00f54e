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
(:meth:`carechain.client.sdk.CareChainClient.verify_record_inclusion`), and
:func:`verify_erasure_receipt` checks an erasure's receipt (the tombstone's proof).

Whoever holds a quorum's keys (one key in the embedded network) can still
re-sign a rewritten history. :class:`CheckpointMemory` makes that detectable:
it remembers the newest checkpoint a client saw (in memory, optionally in a
small JSON file) and accepts a new one only with a consistency proof from the
remembered one (:meth:`CheckpointMemory.observe`), or, for a verifier holding
the whole log, when the log's root at the remembered size is the remembered
root (:meth:`CheckpointMemory.observe_log`). A rewritten or rolled-back log
raises :class:`HistoryRewritten`.

:func:`verify_anchor_block` checks an audit batch anchor on the ledger: the
block holding it carries a valid quorum certificate, its transactions and
results hash to the certified header, and the transaction is a valid
``AnchorAuditBatch`` signed by ``svc-audit`` with the expected range and root.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from carechain.core import merkle
from carechain.core.errors import IntegrityError, InvalidArgument
from carechain.core.layout import TrustBundle, service_principal_id
from carechain.ledger import blocks, quorum, transactions
from carechain.ledger.quorum import ValidatorSet
from carechain.ledger.v1 import ledger_pb2


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

    def fingerprint(self) -> str:
        """Names this network in a checkpoint memory: chain id and the validators' keys.

        A deliberately recreated local network (new keys) starts a fresh memory;
        a history re-signed with the same validator keys does not.
        """
        digest = hashlib.sha256()
        for member in self.validators.members:
            digest.update(member.encode() + b"\0" + (self.trust.key(member) or b"") + b"\0")
        return f"{self.chain_id}/{digest.hexdigest()[:16]}"


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


def verify_certified_header(
    header_bytes: bytes, certificate: ledger_pb2.QuorumCertificate, trust: LedgerTrust
) -> VerifiedCheckpoint:
    """A block header with its quorum certificate, checked (quorum, chain id), as a checkpoint."""
    quorum.check_certificate(header_bytes, certificate, trust.trust, trust.validators)
    header = ledger_pb2.BlockHeader.FromString(header_bytes)
    if header.chain_id != trust.chain_id:
        raise IntegrityError(f"block is for chain {header.chain_id!r}, not {trust.chain_id!r}")
    return VerifiedCheckpoint(header.height, header.log_size, bytes(header.log_root), header.timestamp_ms,
                              tuple(s.validator_id for s in certificate.signatures))


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


@dataclass(frozen=True)
class ErasureInclusion:
    """Proof that an erasure's tombstone is in the co-signed log."""

    patient_id: str
    record_ids: tuple[str, ...]
    log_index: int
    checkpoint: VerifiedCheckpoint
    transaction: ledger_pb2.Transaction


def verify_erasure_receipt(receipt: Any, trust: LedgerTrust) -> ErasureInclusion:
    """Check an ErasureReceipt (records EraseRecords) locally: its checkpoint's co-signatures, the inclusion
    proof of its tombstone against it, and that the proven transaction is the EraseRecords the receipt
    describes (signed by svc-records, for its patient and exactly its records). IntegrityError otherwise.
    This proves the tombstone is in the log, not its verdict: GetRecordEntry shows the patient it took effect.
    """
    checkpoint = verify_checkpoint(receipt.checkpoint, trust)
    proof = receipt.inclusion_proof
    if proof.log_index != receipt.log_index:
        raise IntegrityError("the inclusion proof is for another log index than the receipt's")
    transaction = verify_inclusion(proof, checkpoint)
    body = transactions.decode_body(transaction)
    if body.WhichOneof("payload") != "erase_records" or transaction.signer_id != service_principal_id("records"):
        raise IntegrityError("the proven transaction is not an erasure by svc-records")
    erase = body.erase_records
    if erase.patient_id != receipt.patient_id or list(erase.record_ids) != list(receipt.record_ids) or \
            receipt.erased_count != len(receipt.record_ids):
        raise IntegrityError("the proven tombstone is not the one the receipt describes")
    return ErasureInclusion(erase.patient_id, tuple(erase.record_ids), proof.log_index, checkpoint, transaction)


def verify_checkpoint_consistency(ledger: Any, older: VerifiedCheckpoint, newer: VerifiedCheckpoint,
                                  timeout: float = 30) -> None:
    """Fetch and check the consistency proof between two verified checkpoints."""
    proof = ledger.GetConsistencyProof(
        ledger_pb2.GetConsistencyProofRequest(first_size=older.tree_size, second_size=newer.tree_size),
        timeout=timeout,
    )
    verify_consistency(older, newer, proof)


# --- remembered checkpoints: re-signed history is detected --------------------------------------

class HistoryRewritten(IntegrityError):
    """The ledger's log does not extend the log of a checkpoint seen earlier (rewritten or rolled back)."""


def _checkpoint_json(checkpoint: VerifiedCheckpoint) -> dict[str, Any]:
    return {"height": checkpoint.height, "tree_size": checkpoint.tree_size, "root": checkpoint.root.hex(),
            "timestamp_ms": checkpoint.timestamp_ms, "signers": list(checkpoint.signers)}


def _checkpoint_from_json(data: dict[str, Any]) -> VerifiedCheckpoint:
    return VerifiedCheckpoint(int(data["height"]), int(data["tree_size"]), bytes.fromhex(data["root"]),
                              int(data["timestamp_ms"]), tuple(data.get("signers", ())))


def default_checkpoint_file() -> pathlib.Path:
    """Where the CLI remembers checkpoints: ``$CARECHAIN_CHECKPOINT_FILE``, else
    ``$XDG_CONFIG_HOME/carechain/checkpoints.json`` (``~/.config/carechain/checkpoints.json``)."""
    explicit = os.environ.get("CARECHAIN_CHECKPOINT_FILE")
    if explicit:
        return pathlib.Path(explicit)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(pathlib.Path.home() / ".config")
    return pathlib.Path(config_home) / "carechain" / "checkpoints.json"


class CheckpointMemory:
    """The newest checkpoint seen per network (:meth:`LedgerTrust.fingerprint`), in memory and optionally in a file.

    Only checkpoints whose co-signatures were verified are given to it; it
    accepts a newer one only when the log provably extends the remembered one.
    The file (JSON, written atomically, 0600) holds no secrets: sizes, roots
    and times.
    """

    def __init__(self, path: pathlib.Path | None = None) -> None:
        self.path = None if path is None else pathlib.Path(path)
        self._lock = threading.Lock()
        self._seen: dict[str, VerifiedCheckpoint] = {}
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self._seen = {network: _checkpoint_from_json(c) for network, c in data.get("networks", {}).items()}
            except (ValueError, KeyError, TypeError) as exc:
                raise IntegrityError(f"checkpoint memory {self.path} is unreadable ({type(exc).__name__}); "
                                     "restore or delete it") from None

    def remembered(self, network: str) -> VerifiedCheckpoint | None:
        """The newest checkpoint seen for network, or None."""
        with self._lock:
            return self._seen.get(network)

    def observe(self, network: str, checkpoint: VerifiedCheckpoint,
                consistency: Callable[[int, int], ledger_pb2.ConsistencyProof | None],
                lagging_ok: bool = False) -> None:
        """Accept a verified checkpoint only when it and the remembered one are states of one log.

        consistency(first, second) fetches the RFC 9162 proof between two sizes
        (None when the ledger's log does not reach second). A newer checkpoint
        needs a proof from the remembered one and is remembered; an older one
        (an earlier block, e.g. the block of an audit anchor) needs a proof to
        the remembered one. HistoryRewritten otherwise. lagging_ok (several
        validators): an older checkpoint from a validator whose log does not
        reach the remembered size yet is accepted as that validator being behind.
        """
        with self._lock:
            older = self._seen.get(network)
            if older is not None and checkpoint.tree_size > older.tree_size:
                proof = consistency(older.tree_size, checkpoint.tree_size)
                if proof is None:
                    raise _rewritten(older, checkpoint, "the ledger cannot prove its log extends the one seen")
                try:
                    verify_consistency(older, checkpoint, proof)
                except IntegrityError as exc:
                    raise _rewritten(older, checkpoint, exc.message) from None
            elif older is not None and checkpoint.tree_size < older.tree_size:
                if not lags_behind(checkpoint, older):
                    raise _rewritten(older, checkpoint, f"the ledger's final log has only {checkpoint.tree_size} "
                                                        f"transactions, in a later block (rolled back)")
                proof = consistency(checkpoint.tree_size, older.tree_size)
                if proof is None:
                    if lagging_ok:
                        return  # a validator that is behind: nothing to learn, nothing to forget
                    raise _rewritten(older, checkpoint, f"the ledger's log no longer reaches tree size "
                                                        f"{older.tree_size} (rolled back)")
                try:
                    verify_consistency(checkpoint, older, proof)
                except IntegrityError as exc:
                    raise _rewritten(older, checkpoint, exc.message) from None
                return  # an earlier state of the remembered log
            self._accept(network, older, checkpoint)

    def observe_log(self, network: str, checkpoint: VerifiedCheckpoint, root_at: Callable[[int], bytes]) -> None:
        """Accept a checkpoint of a log the caller verified in full; root_at(size) is that log's root at a size."""
        with self._lock:
            older = self._seen.get(network)
            if older is not None and older.tree_size <= checkpoint.tree_size and \
                    root_at(older.tree_size) != older.root:
                raise _rewritten(older, checkpoint, "the log's root at that size differs")
            self._accept(network, older, checkpoint)

    def _accept(self, network: str, older: VerifiedCheckpoint | None, checkpoint: VerifiedCheckpoint) -> None:
        if older is not None and checkpoint.tree_size < older.tree_size:
            raise _rewritten(older, checkpoint, f"the ledger's final log has only {checkpoint.tree_size} "
                                                f"transactions (rolled back)")
        if older is not None and checkpoint.tree_size == older.tree_size and checkpoint.root != older.root:
            raise _rewritten(older, checkpoint, "same size, another root")
        if older is None or checkpoint.tree_size > older.tree_size:
            self._seen[network] = checkpoint
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        text = json.dumps({"networks": {n: _checkpoint_json(c) for n, c in sorted(self._seen.items())}}, indent=1)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, self.path)


def lags_behind(checkpoint: VerifiedCheckpoint, newer: VerifiedCheckpoint) -> bool:
    """Whether checkpoint is an honest earlier state of newer's log (lower block, no later time, smaller tree),
    as a validator that is behind would answer; a rolled-back history claims a later block or time."""
    return (checkpoint.tree_size < newer.tree_size and checkpoint.height < newer.height
            and checkpoint.timestamp_ms <= newer.timestamp_ms)


def _rewritten(older: VerifiedCheckpoint, newer: VerifiedCheckpoint, why: str) -> HistoryRewritten:
    return HistoryRewritten(
        f"ledger history was rewritten: the checkpoint seen earlier (block {older.height}, tree size "
        f"{older.tree_size}, root {older.root.hex()[:16]}..) is not a prefix of the current one (block "
        f"{newer.height}, tree size {newer.tree_size}): {why}"
    )


def consistency_fetcher(ledger: Any, timeout: float = 30) -> Callable[[int, int], ledger_pb2.ConsistencyProof | None]:
    """consistency(first, second) over a LedgerService stub, for :meth:`CheckpointMemory.observe`
    (None when the ledger's log is smaller than second)."""
    def fetch(first: int, second: int) -> ledger_pb2.ConsistencyProof | None:
        try:
            return ledger.GetConsistencyProof(
                ledger_pb2.GetConsistencyProofRequest(first_size=first, second_size=second), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # type: ignore[attr-defined]
                return None
            raise
        except InvalidArgument:
            return None
    return fetch


# --- audit anchors on the ledger ---------------------------------------------------------------

AUDIT_SIGNER_ID = "svc-audit"


def verify_anchor_block(
    ledger: Any, log_index: int, trust: LedgerTrust, expected: ledger_pb2.AnchorAuditBatch, timeout: float = 30
) -> VerifiedCheckpoint:
    """Check that the ledger's transaction at log_index is a valid AnchorAuditBatch equal to expected, in a block
    certified by a quorum; returns that block's header as a checkpoint (for :class:`CheckpointMemory`)."""
    page = ledger.ListTransactions(ledger_pb2.ListTransactionsRequest(from_log_index=log_index, limit=1),
                                   timeout=timeout)
    if not page.transactions or page.transactions[0].log_index != log_index:
        raise IntegrityError(f"the ledger holds no transaction at log index {log_index}")
    block = ledger.GetBlock(ledger_pb2.GetBlockRequest(height=page.transactions[0].height), timeout=timeout)
    if not block.HasField("certificate"):
        raise IntegrityError(f"the anchor's block {page.transactions[0].height} has no quorum certificate (not final)")
    checkpoint = verify_certified_header(block.header, block.certificate, trust)
    header = ledger_pb2.BlockHeader.FromString(block.header)
    if len(block.results) != len(block.transactions):
        raise IntegrityError("the anchor's block has not one result per transaction")
    leaves = [merkle.leaf_hash(transactions.encode(tx)) for tx in block.transactions]
    if merkle.root(leaves) != header.transactions_root or blocks.results_hash(block.results) != header.results_hash:
        raise IntegrityError(f"the anchor's block {header.height}: transactions or results differ from the "
                             "certified header")
    index = log_index - (header.log_size - len(block.transactions))
    if not 0 <= index < len(block.transactions):
        raise IntegrityError(f"log index {log_index} is not in block {header.height}")
    tx, result = block.transactions[index], block.results[index]
    if not result.valid:
        raise IntegrityError(f"the ledger rejected the anchor at log index {log_index}: {result.reason}")
    _check_anchor_transaction(tx, log_index, trust, expected)
    return checkpoint


def verify_anchor_inclusion(
    ledger: Any, log_index: int, trust: LedgerTrust, expected: ledger_pb2.AnchorAuditBatch, timeout: float = 30
) -> VerifiedCheckpoint:
    """Check, with only an inclusion proof (what a patient may read), that the ledger's transaction at log_index
    is an AnchorAuditBatch equal to expected, signed by svc-audit, in the log of a checkpoint a quorum co-signed.

    :func:`verify_anchor_block` checks the same from the whole block (and its validity flag) for ledger-wide
    readers; patients see no other patient's transactions, so they prove the anchor's inclusion instead.
    """
    checkpoint = verify_checkpoint(ledger.GetCheckpoint(ledger_pb2.GetCheckpointRequest(), timeout=timeout), trust)
    if log_index >= checkpoint.tree_size:
        raise IntegrityError(f"the anchor at log index {log_index} is not yet in a final (co-signed) block")
    proof = ledger.GetInclusionProof(
        ledger_pb2.GetInclusionProofRequest(log_index=log_index, tree_size=checkpoint.tree_size), timeout=timeout)
    if proof.log_index != log_index:
        raise IntegrityError("inclusion proof is for another log index")
    tx = verify_inclusion(proof, checkpoint)
    _check_anchor_transaction(tx, log_index, trust, expected)
    return checkpoint


def _check_anchor_transaction(tx: ledger_pb2.Transaction, log_index: int, trust: LedgerTrust,
                              expected: ledger_pb2.AnchorAuditBatch) -> None:
    """The transaction is svc-audit's AnchorAuditBatch with exactly expected's range and root."""
    key = trust.trust.key(AUDIT_SIGNER_ID)
    if tx.signer_id != AUDIT_SIGNER_ID or key is None or not transactions.signature_valid(tx, key):
        raise IntegrityError(f"ledger log index {log_index} is not signed by {AUDIT_SIGNER_ID}")
    body = transactions.decode_body(tx)
    if body.WhichOneof("payload") != "anchor_audit_batch":
        raise IntegrityError(f"ledger log index {log_index} is not an AnchorAuditBatch")
    if body.anchor_audit_batch.SerializeToString(deterministic=True) != expected.SerializeToString(deterministic=True):
        raise IntegrityError(f"the anchor at ledger log index {log_index} has another batch range or root")
