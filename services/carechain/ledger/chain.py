"""One validator node: the :class:`Ledger` facade wiring admission, block cutting, finality and queries.

Flow of a transaction (docs/ledger.md):

- :mod:`~carechain.ledger.admission`: :meth:`Ledger.submit` checks encoding,
  chain id, known signer, signature and a fresh nonce, appends the transaction
  to the :class:`~carechain.ledger.ordering.Orderer` and waits;
- :mod:`~carechain.ledger.cutter`: the block-cutter thread reads the order,
  cuts and validates a block, has it signed and commits it to the
  :mod:`~carechain.ledger.sqlite_store` in one transaction, then answers the
  waiting submitters;
- :mod:`~carechain.ledger.finality`: the finalizer thread exchanges header
  votes with the other validators and stores the quorum certificate once a
  quorum signed the same header; ``ACK_LEVEL_FINAL`` submitters wait for it;
- :mod:`~carechain.ledger.queries`: head, blocks, the log and RFC 9162 proofs.

Each piece owns its own lock or thread; they share one stopping event, set by
:meth:`Ledger.close`. The embedded network is one validator with quorum 1
(final at commit) over :class:`~carechain.ledger.memory_orderer.InProcessOrderer`;
several validators need a shared orderer that agrees block cuts and carries
votes (:class:`~carechain.ledger.etcd_orderer.EtcdOrderer`).
"""

from __future__ import annotations

import logging
import pathlib
import threading
import time

from carechain.core.crypto import Signer
from carechain.core.errors import CareChainError, FailedPrecondition
from carechain.core.layout import TrustBundle
from carechain.ledger.admission import Admission, Committed, Outcome
from carechain.ledger.contract import DEFAULT_MAX_SKEW_MS, Validator
from carechain.ledger.copy_check import ChainVerification, verify_chain
from carechain.ledger.cutter import BlockCutRegistry, BlockCutter
from carechain.ledger.finality import DEFAULT_FINALITY_POLL_SECONDS, Finality
from carechain.ledger.memory_orderer import InProcessOrderer
from carechain.ledger.ordering import Orderer
from carechain.ledger.queries import ChainView
from carechain.ledger.quorum import ValidatorSet, VoteBoard
from carechain.ledger.sqlite_store import META_CHAIN_ID, META_VALIDATORS, LedgerStore
from carechain.ledger.v1 import ledger_pb2

log = logging.getLogger("carechain.ledger")


class Ledger:
    """One validator over a chain store, fed by an orderer."""

    def __init__(
        self,
        store: LedgerStore,
        chain_id: str,
        signer: Signer,
        trust: TrustBundle,
        orderer: Orderer | None = None,
        block_max_transactions: int = 100,
        block_max_wait_ms: int = 0,
        validators: ValidatorSet | None = None,
        finality_poll_seconds: float = DEFAULT_FINALITY_POLL_SECONDS,
        tx_max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.signer = signer
        self.trust = trust
        self.validator = Validator(chain_id, trust, tx_max_skew_ms)
        self.validator_id = signer.key_id
        self.validators = validators or ValidatorSet.single(signer.key_id)
        if self.validator_id not in self.validators:
            raise FailedPrecondition(f"validator {self.validator_id} is not in the configured validator set")
        for member in self.validators.members:
            if trust.key(member) is None:
                raise FailedPrecondition(f"validator {member} has no public key in the trust bundle")
        self._own_orderer = orderer is None
        self.orderer: Orderer = orderer if orderer is not None else InProcessOrderer()
        # Block cuts come from the orderer when it can agree them (etcd); else from local timing.
        cuts = self.orderer if self.orderer.durable and isinstance(self.orderer, BlockCutRegistry) else None
        # Votes of the other validators travel through the orderer too.
        board = self.orderer if cuts is not None and isinstance(self.orderer, VoteBoard) else None
        if (self.validators.quorum > 1 or len(self.validators.members) > 1) and board is None:
            raise FailedPrecondition(
                "several validators need a shared orderer with agreed cuts and a vote board (CARECHAIN_ORDERER=etcd)"
            )
        self._check_store()
        self._stopping = threading.Event()
        self._view = ChainView(store)
        self._admission = Admission(chain_id, store, self.validator, self.orderer, self._stopping)
        self._finality = Finality(store, signer, trust, self.validators, board, self._stopping, finality_poll_seconds)
        self._cutter = BlockCutter(chain_id, store, self.validator, self.orderer, cuts, self._view, self._finality,
                                   self._admission, self._stopping, block_max_transactions, block_max_wait_ms)
        if self._view.empty:
            self._cutter.commit_genesis()
        else:
            self._cutter.resume()
            head, _ = self._view.head()
            self._finality.resume(head.height)
            log.info("ledger resumed", extra={"height": head.height, "log_size": head.log_size})
        self._cutter.start()
        self._finality.start()

    @classmethod
    def open(
        cls,
        data_dir: pathlib.Path,
        chain_id: str,
        signer: Signer,
        trust: TrustBundle,
        orderer: Orderer | None = None,
        block_max_transactions: int = 100,
        block_max_wait_ms: int = 0,
        validators: ValidatorSet | None = None,
        finality_poll_seconds: float = DEFAULT_FINALITY_POLL_SECONDS,
        tx_max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> Ledger:
        """Open (or create, with a genesis block) the chain in data_dir and start cutting blocks."""
        store = LedgerStore.open(data_dir)
        try:
            return cls(store, chain_id, signer, trust, orderer, block_max_transactions, block_max_wait_ms,
                       validators, finality_poll_seconds, tx_max_skew_ms)
        except BaseException:
            store.close()
            raise

    def _check_store(self) -> None:
        stored_chain = self.store.meta(META_CHAIN_ID)
        if stored_chain is not None and stored_chain != self.chain_id:
            raise FailedPrecondition(
                f"ledger store belongs to chain {stored_chain!r}, not {self.chain_id!r} (CARECHAIN_CHAIN_ID)"
            )
        # Offline verification reads the set from here.
        self.store.set_meta(META_VALIDATORS, self.validators.to_json())

    # --- submission ----------------------------------------------------------------------------

    def admit(self, tx: ledger_pb2.Transaction) -> ledger_pb2.TransactionBody:
        """Admission checks before ordering; raises the error the client should see."""
        return self._admission.admit(tx)

    def submit(self, tx: ledger_pb2.Transaction, timeout: float, final: bool = False) -> Committed:
        """Admit, order and wait until tx's block is committed, or final when asked (Unavailable after timeout)."""
        deadline = time.monotonic() + timeout
        committed = self._admission.submit(tx, timeout)
        return self._finality.acknowledge(committed, final, deadline, timeout)

    def submit_many(self, txs: list[ledger_pb2.Transaction], timeout: float, final: bool = False) -> list[Outcome]:
        """Submit a batch: each transaction admitted and validated as if alone; one outcome each, in order.

        An outcome is the :class:`Committed` answer or the error that transaction alone would have raised.
        """
        deadline = time.monotonic() + timeout
        outcomes = self._admission.submit_many(txs, timeout)
        answers: list[Outcome] = []
        for outcome in outcomes:
            if isinstance(outcome, Committed):
                try:
                    outcome = self._finality.acknowledge(outcome, final, deadline, timeout)
                except CareChainError as exc:
                    outcome = exc
            answers.append(outcome)
        return answers

    # --- finality ------------------------------------------------------------------------------

    def final_height(self) -> int:
        """Highest final block (-1 before genesis is final)."""
        return self._finality.final_height()

    def wait_final(self, height: int, timeout: float) -> bool:
        """Block until height is final (True) or timeout passes (False)."""
        return self._finality.wait_final(height, timeout)

    def certificate(self, height: int) -> ledger_pb2.QuorumCertificate | None:
        """The stored quorum certificate of height, or None."""
        return self._finality.certificate(height)

    def checkpoint(self, height: int = 0) -> ledger_pb2.Checkpoint:
        """Checkpoint of a certified block (0 = the highest final one) with its co-signatures."""
        return self._finality.checkpoint(height)

    def evidence(self, from_height: int = 0) -> list[ledger_pb2.Evidence]:
        """Misbehaviour observed, in the order recorded."""
        return self._finality.evidence(from_height)

    @property
    def diverged_at(self) -> int | None:
        """Height at which a quorum certified another header than this validator's, if ever."""
        return self._finality.diverged_at

    # --- queries -------------------------------------------------------------------------------

    def head(self) -> tuple[ledger_pb2.BlockHeader, bytes]:
        """The latest header and its hash."""
        return self._view.head()

    def block(self, height: int) -> ledger_pb2.Block:
        """The block at height; NotFound beyond the head."""
        return self._view.block(height)

    def log_size(self) -> int:
        """Committed transactions."""
        return self._view.log_size()

    def list_transactions(self, from_log_index: int, limit: int) -> list[ledger_pb2.LoggedTransaction]:
        """Committed transactions in log order."""
        return self._view.list_transactions(from_log_index, limit)

    def record_entry(self, record_id: str, version: int = 0) -> ledger_pb2.RecordEntry:
        """A record's registration (its latest version, or version) and tombstone; NotFound for unknown ids."""
        return self._view.record_entry(record_id, version)

    def patient_records(self, patient_id: str, from_log_index: int, limit: int
                        ) -> tuple[list[ledger_pb2.RecordEntry], int | None]:
        """One page of a patient's records in log order, and where the next starts (None: the end)."""
        return self._view.patient_records(patient_id, from_log_index, limit)

    def inclusion_proof(self, log_index: int, tree_size: int = 0) -> ledger_pb2.InclusionProof:
        """RFC 9162 inclusion proof of a log entry in the tree of tree_size (0 = current)."""
        return self._view.inclusion_proof(log_index, tree_size)

    def consistency_proof(self, first_size: int, second_size: int = 0) -> ledger_pb2.ConsistencyProof:
        """RFC 9162 consistency proof between two tree sizes (second 0 = current)."""
        return self._view.consistency_proof(first_size, second_size)

    @property
    def replayed_leaves(self) -> int:
        """Log leaves read at open to rebuild the stored Merkle subtrees (0: the stored ones matched the head)."""
        return self._view.replayed_leaves

    def verify(self) -> ChainVerification:
        """Re-verify this validator's whole stored chain (:func:`carechain.ledger.copy_check.verify_chain`)."""
        return verify_chain(self.store, self.trust, self.validators)

    # --- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Cut what is already ordered, stop the cutter and finalizer, fail leftover waiters and close the store."""
        if self._stopping.is_set():
            return
        self._admission.stop()
        self._cutter.join()
        self._finality.join()
        if self._own_orderer:
            self.orderer.close()
        self._admission.fail_waiters()
        self.store.close()
