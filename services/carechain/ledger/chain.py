"""A single validator: admission, ordering, block cutting, commit and queries.

Flow of a transaction: :meth:`Ledger.submit` runs the admission checks
(encoding, chain id, known signer, signature, fresh nonce: nothing enters the
order that cannot be authentic), appends it to the :class:`Orderer`, and
waits. The block cutter thread reads the order, cuts a block when
``block_max_transactions`` are pending or ``block_max_wait_ms`` has passed
since it saw the first pending one, runs the validator over every
transaction, builds and signs the header, and commits block + log + state in
one SQLite transaction. Only then are the waiting submitters answered.

With a shared durable orderer that agrees block cuts (a :class:`BlockCutRegistry`,
e.g. etcd), the local policy above only *proposes* a cut: the first cut recorded
for a height (its order entries and timestamp) is what every validator commits,
so blocks and headers depend on the order alone. On restart the ledger resumes
at the order position stored with its last block and follows recorded cuts, so
every ordered transaction is committed exactly once.

Several validators (one per member organisation) follow one shared order; each
validates every transaction itself, commits the block, signs its header and
publishes that vote on the orderer's :class:`carechain.ledger.quorum.VoteBoard`
(etcd). The finalizer thread publishes this validator's votes, reads the
others' and, once ``quorum`` validators of the configured
:class:`~carechain.ledger.quorum.ValidatorSet` signed the very header this
validator computed, stores the quorum certificate with the block: the block
(and, through the hash chain, every block before it) is *final*. Submitters
ask for ``ACK_LEVEL_COMMITTED`` (answer at commit) or ``ACK_LEVEL_FINAL``
(answer once final; UNAVAILABLE when no quorum signs within the deadline).

- A vote with a valid signature over a *different* header is evidence of
  misbehaviour: it is stored (``GetEvidence``), logged, and never counted.
- Catch-up: a validator that was down (or joins) replays the order from the
  agreed cuts, re-validating every transaction. Before it applies a block it
  checks the votes already published for that height: if a quorum certified
  another header it refuses to apply (its store or rules differ; the cutter
  stops and logs); if a quorum certified the same header it stores that
  certificate at once. Then it signs the block like any other.
- The embedded network is one validator with quorum 1: its own signature is
  the certificate, stored in the same SQLite transaction as the block.
"""

from __future__ import annotations

import logging
import pathlib
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from carechain.core import merkle
from carechain.core.crypto import Signer
from carechain.core.errors import (
    AlreadyExists,
    CareChainError,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from carechain.core.layout import TrustBundle
from carechain.ledger import blocks, quorum, transactions
from carechain.ledger.contract import DEFAULT_MAX_SKEW_MS, Validator
from carechain.ledger.ordering import InProcessOrderer, Orderer
from carechain.ledger.quorum import ValidatorSet, VoteBoard
from carechain.ledger.state import PendingState
from carechain.ledger.store import LedgerStore, LogEntry, StoredBlock
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime import metrics

log = logging.getLogger("carechain.ledger")

# Idle poll of the orderer; bounds how long close() waits for the cutter.
_IDLE_WAIT_SECONDS = 0.05
# Pause before retrying when the orderer's backend (etcd) cannot be reached.
_RETRY_SECONDS = 0.2
META_CHAIN_ID = "chain_id"
META_ORDERER_NEXT = "orderer_next_sequence"
META_VALIDATORS = "validators"
#: Finalizer: poll of the vote board while blocks wait for their quorum.
DEFAULT_FINALITY_POLL_SECONDS = 0.01
# Finalizer: idle wait when every block is final; woken at once by a commit.
_FINALITY_IDLE_SECONDS = 0.2
# Heights read from the board per poll (a long outage of the others is caught up in slices).
_FINALITY_BATCH = 256
# Final heights still watched for late (possibly conflicting) votes of validators that had not voted.
_WATCH_WINDOW = 8


@dataclass(frozen=True)
class BlockCut:
    """The order entries [first_sequence, first_sequence + count) form block ``height``, stamped timestamp_ms."""

    height: int
    first_sequence: int
    count: int
    timestamp_ms: int


@runtime_checkable
class BlockCutRegistry(Protocol):
    """A shared durable orderer that also agrees block cuts, so every validator cuts identical blocks.

    The first cut recorded for a height holds forever; a validator cuts a height
    exactly as recorded (entries and timestamp), and records its own proposal
    only when none exists. See :mod:`carechain.ledger.etcd_orderer`.
    """

    def recorded_cut(self, height: int) -> BlockCut | None:
        """The agreed cut of height, or None."""
        ...

    def record_cut(self, cut: BlockCut) -> BlockCut:
        """Record cut unless its height has one; returns the cut that holds."""
        ...


@dataclass(frozen=True)
class Committed:
    """Where and how a submitted transaction was committed."""

    transaction_hash: bytes
    height: int
    index: int
    log_index: int
    valid: bool
    reason: str

    final: bool = False

    def to_response(self) -> ledger_pb2.SubmitTransactionResponse:
        """As the SubmitTransaction reply."""
        return ledger_pb2.SubmitTransactionResponse(
            transaction_hash=self.transaction_hash.hex(),
            height=self.height,
            index=self.index,
            log_index=self.log_index,
            valid=self.valid,
            reason=self.reason,
            final=self.final,
        )


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    result: Committed | None = None
    error: CareChainError | None = None


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
        block_max_wait_ms: int = 20,
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
        self._cuts: BlockCutRegistry | None = (
            self.orderer if self.orderer.durable and isinstance(self.orderer, BlockCutRegistry) else None
        )
        # Votes of the other validators travel through the orderer too.
        self._board: VoteBoard | None = (
            self.orderer if self._cuts is not None and isinstance(self.orderer, VoteBoard) else None
        )
        if (self.validators.quorum > 1 or len(self.validators.members) > 1) and self._board is None:
            raise FailedPrecondition(
                "several validators need a shared orderer with agreed cuts and a vote board (CARECHAIN_ORDERER=etcd)"
            )
        self.finality_poll_seconds = finality_poll_seconds
        self._final_cond = threading.Condition()
        self._final_height = -1
        self._unpublished: set[int] = set()
        self._settled: set[int] = set()  # certified here and voted on by every member: nothing left to watch
        self._own_votes: dict[int, ledger_pb2.HeaderVote] = {}
        self._certified: set[int] = set()
        self._diverged_at: int | None = None
        self._board_down = False
        self._orderer_down = False
        self.block_max_transactions = block_max_transactions
        self.block_max_wait = block_max_wait_ms / 1000.0
        self._lock = threading.Lock()  # pending nonces and waiters
        self._pending_nonces: set[tuple[str, bytes]] = set()
        self._waiters: dict[int, _Waiter] = {}
        self._tree_lock = threading.Lock()
        self._stopping = threading.Event()
        self._resume()
        self._cutter = threading.Thread(target=self._run_cutter, name="ledger-block-cutter", daemon=True)
        self._cutter.start()
        self._finalizer: threading.Thread | None = None
        if self._board is not None:
            self._finalizer = threading.Thread(target=self._run_finalizer, name="ledger-finalizer", daemon=True)
            self._finalizer.start()

    @classmethod
    def open(
        cls,
        data_dir: pathlib.Path,
        chain_id: str,
        signer: Signer,
        trust: TrustBundle,
        orderer: Orderer | None = None,
        block_max_transactions: int = 100,
        block_max_wait_ms: int = 20,
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

    # --- start-up ------------------------------------------------------------------------------

    def _resume(self) -> None:
        stored_chain = self.store.meta(META_CHAIN_ID)
        if stored_chain is not None and stored_chain != self.chain_id:
            raise FailedPrecondition(
                f"ledger store belongs to chain {stored_chain!r}, not {self.chain_id!r} (CARECHAIN_CHAIN_ID)"
            )
        # Offline verification reads the set from here.
        self.store.set_meta(META_VALIDATORS, self.validators.to_json())
        leaves = self.store.leaf_hashes()
        self._frontier = merkle.Frontier.from_leaf_hashes(leaves)
        self._tree = merkle.MerkleTree(leaves)
        head = self.store.head()
        if head is None:
            self._commit_genesis()
            return
        self._head = ledger_pb2.BlockHeader.FromString(head.header)
        self._head_hash = head.header_hash
        # Cheap consistency check; full verification is verify_chain.
        if self._head.log_size != len(leaves) or self._head.log_root != self._frontier.root():
            raise DataLoss("ledger store is inconsistent (head log root vs log entries); run `carechain ledger verify`")
        self._orderer_next = int(self.store.meta(META_ORDERER_NEXT) or 0) if self.orderer.durable else 0
        if self._cuts is not None:
            agreed = self._cuts.recorded_cut(self._head.height)
            if (
                agreed is None
                or agreed.first_sequence + agreed.count != self._orderer_next
                or agreed.timestamp_ms != self._head.timestamp_ms
            ):
                raise FailedPrecondition(
                    f"the ledger store's block {self._head.height} was not cut from this orderer's order "
                    "(another orderer, etcd prefix or chain?)"
                )
        self._resume_finality()
        log.info("ledger resumed", extra={"height": self._head.height, "log_size": self._head.log_size})

    def _resume_finality(self) -> None:
        """Final height from the stored certificates; re-publish votes of blocks not yet final."""
        if self.validators.quorum <= 1:
            # Our own signature is a certificate (also upgrades stores from before certificates).
            for height in self.store.uncertified_heights():
                stored = self.store.block(height)
                assert stored is not None
                signature = quorum.sign_header(self.signer, stored.header)
                certificate = quorum.build_certificate(height, stored.header, [signature])
                self.store.put_certificate(height, transactions.encode(certificate))
        last = self.store.last_certified_height()
        self._final_height = -1 if last is None else last
        # Publishing is idempotent; a vote lost in a crash right after the commit is sent again.
        self._unpublished = set(range(self._final_height + 1, self._head.height + 1)) | {self._head.height}

    def _commit_genesis(self) -> None:
        timestamp_ms = int(time.time() * 1000)
        if self._cuts is not None:
            # Every validator of a shared order must start from the same genesis header.
            timestamp_ms = self._cuts.record_cut(BlockCut(0, 0, 0, timestamp_ms)).timestamp_ms
        header = ledger_pb2.BlockHeader(
            chain_id=self.chain_id,
            height=0,
            previous_header_hash=blocks.GENESIS_PREVIOUS_HASH,
            transactions_root=merkle.EMPTY_ROOT,
            results_hash=blocks.results_hash([]),
            log_size=0,
            log_root=merkle.EMPTY_ROOT,
            timestamp_ms=timestamp_ms,
        )
        self._orderer_next = 0
        self._commit(header, [], [], PendingState(self.store), self._frontier)
        log.info("genesis block created", extra={"chain_id": self.chain_id})

    # --- submission ----------------------------------------------------------------------------

    def admit(self, tx: ledger_pb2.Transaction) -> ledger_pb2.TransactionBody:
        """Admission checks before ordering; raises the error the client should see."""
        body = transactions.decode_body(tx)
        if body.chain_id != self.chain_id:
            raise InvalidArgument("transaction.body.chain_id", "is for another chain")
        key = self.validator.signer_key(tx.signer_id, self.store)
        if key is None:
            raise PermissionDenied("unknown signer: not a trusted service nor a registered principal")
        if not transactions.signature_valid(tx, key):
            raise InvalidArgument("transaction.signature", "not a valid Ed25519 signature by the signer")
        return body

    def submit(self, tx: ledger_pb2.Transaction, timeout: float, final: bool = False) -> Committed:
        """Admit, order and wait until tx's block is committed, or final when asked (Unavailable after timeout)."""
        deadline = time.monotonic() + timeout
        body = self.admit(tx)
        nonce_key = (tx.signer_id, bytes(body.nonce))
        waiter = _Waiter()
        with self._lock:
            if self._stopping.is_set():
                raise Unavailable("ledger", "shutting down")
            if nonce_key in self._pending_nonces or self.store.nonce_used(*nonce_key):
                raise AlreadyExists("replayed nonce")
            self._pending_nonces.add(nonce_key)
            # Registered under the lock so the cutter cannot finish the entry before we listen.
            try:
                sequence = self.orderer.append(transactions.encode(tx))
            except BaseException:
                # Not acknowledged: the client may retry with the same nonce.
                self._pending_nonces.discard(nonce_key)
                raise
            self._waiters[sequence] = waiter
        if not waiter.done.wait(timeout):
            raise Unavailable("ledger", f"transaction not committed within {timeout:g}s")
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        result = waiter.result
        if self.final_height() >= result.height:
            metrics.LEDGER_TIME_TO_FINAL.record(time.monotonic() - deadline + timeout, {"validator": self.validator_id})
            return replace(result, final=True)
        if not final:
            return result
        if not self.wait_final(result.height, deadline - time.monotonic()):
            raise Unavailable(
                "ledger",
                f"transaction committed in block {result.height} but no quorum of "
                f"{self.validators.quorum} validators signed it within {timeout:g}s",
            )
        metrics.LEDGER_TIME_TO_FINAL.record(time.monotonic() - deadline + timeout, {"validator": self.validator_id})
        return replace(result, final=True)

    # --- finality ------------------------------------------------------------------------------

    def final_height(self) -> int:
        """Highest final block (-1 before genesis is final)."""
        with self._final_cond:
            return self._final_height

    def wait_final(self, height: int, timeout: float) -> bool:
        """Block until height is final (True) or timeout passes (False)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._final_cond:
            while self._final_height < height:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return self._final_height >= height
                self._final_cond.wait(min(remaining, _FINALITY_IDLE_SECONDS))
            return True

    def certificate(self, height: int) -> ledger_pb2.QuorumCertificate | None:
        """The stored quorum certificate of height, or None."""
        raw = self.store.certificate(height)
        return None if raw is None else ledger_pb2.QuorumCertificate.FromString(raw)

    def checkpoint(self, height: int = 0) -> ledger_pb2.Checkpoint:
        """Checkpoint of a certified block (0 = the highest final one) with its co-signatures."""
        if height == 0:
            height = self.final_height()
            if height < 0:
                raise Unavailable("ledger", "no block is final yet")
        raw = self.store.certificate(height) if height <= self.head()[0].height else None
        stored = self.store.block(height) if raw is not None else None
        if raw is None or stored is None:
            raise NotFound(f"this validator holds no quorum certificate for block {height}")
        header = ledger_pb2.BlockHeader.FromString(stored.header)
        return ledger_pb2.Checkpoint(
            chain_id=header.chain_id,
            height=header.height,
            tree_size=header.log_size,
            root=header.log_root,
            timestamp_ms=header.timestamp_ms,
            header=stored.header,
            certificate=ledger_pb2.QuorumCertificate.FromString(raw),
        )

    def evidence(self, from_height: int = 0) -> list[ledger_pb2.Evidence]:
        """Misbehaviour observed, in the order recorded."""
        return [ledger_pb2.Evidence.FromString(raw) for raw in self.store.evidence(from_height)]

    @property
    def diverged_at(self) -> int | None:
        """Height at which a quorum certified another header than this validator's, if ever."""
        return self._diverged_at

    def _set_final(self, height: int) -> None:
        with self._final_cond:
            if height > self._final_height:
                self._final_height = height
            self._final_cond.notify_all()

    def _own_vote(self, height: int) -> ledger_pb2.HeaderVote:
        with self._final_cond:
            vote = self._own_votes.get(height)
        if vote is None:
            stored = self.store.block(height)
            if stored is None:
                raise DataLoss(f"block {height} is missing from the store")
            block = ledger_pb2.Block.FromString(stored.block)
            own = [s for s in block.signatures if s.validator_id == self.validator_id]
            signature = own[0] if own else quorum.sign_header(self.signer, stored.header)
            vote = ledger_pb2.HeaderVote(header=stored.header, signature=signature)
            with self._final_cond:
                self._own_votes[height] = vote
        return vote

    def _check_vote(self, height: int, validator_id: str, raw: bytes) -> ledger_pb2.HeaderVote | None:
        """A published vote that is authentic and from a member; None (logged) otherwise."""
        if validator_id not in self.validators:
            return None
        vote = quorum.decode_vote(raw)
        if (
            vote is None
            or vote.signature.validator_id != validator_id
            or not quorum.signature_valid(vote.header, vote.signature, self.trust)
        ):
            log.warning("ignoring a vote that is not validly signed by its validator",
                        extra={"height": height, "validator": validator_id})
            return None
        try:
            if ledger_pb2.BlockHeader.FromString(vote.header).height != height:
                return None
        except Exception:  # noqa: BLE001 - signed garbage is still not a header of this height
            return None
        return vote

    def _record_evidence(self, height: int, validator_id: str, vote: ledger_pb2.HeaderVote, ours: bytes) -> None:
        evidence = ledger_pb2.Evidence(
            kind=ledger_pb2.EVIDENCE_KIND_CONFLICTING_HEADER,
            height=height,
            validator_id=validator_id,
            vote=vote,
            expected_header_hash=ours,
            reporter_id=self.validator_id,
            observed_at_ms=int(time.time() * 1000),
        )
        if self.store.add_evidence(height, validator_id, blocks.header_hash(vote.header),
                                   transactions.encode(evidence)):
            log.error("validator signed a different header; evidence kept and its signature not counted",
                      extra={"height": height, "validator": validator_id})

    def _tally(self, height: int, header_bytes: bytes, votes: dict[str, bytes],
               own: ledger_pb2.ValidatorSignature) -> ledger_pb2.QuorumCertificate | None:
        """Count published votes for our header of height; evidence for conflicting ones; a certificate at quorum.

        Raises DataLoss when a quorum signed another header (this validator diverged).
        """
        ours = blocks.header_hash(header_bytes)
        agreeing = {self.validator_id: own}
        conflicting: dict[bytes, int] = {}
        for validator_id, raw in sorted(votes.items()):
            vote = self._check_vote(height, validator_id, raw)
            if vote is None:
                continue
            if vote.header == header_bytes:
                agreeing[validator_id] = vote.signature
                continue
            self._record_evidence(height, validator_id, vote, ours)
            other = blocks.header_hash(vote.header)
            conflicting[other] = conflicting.get(other, 0) + 1
            if conflicting[other] >= self.validators.quorum:
                if self._diverged_at is None:
                    self._diverged_at = height
                    log.error("a quorum of validators certified another header for this block; this validator "
                              "diverges and stops (verify its store)", extra={"height": height})
                raise DataLoss(
                    f"block {height}: a quorum of validators signed header {other.hex()[:16]}.., this validator "
                    f"computed {ours.hex()[:16]}..; its store or rules differ (run `carechain ledger verify`)"
                )
        if len(agreeing) >= self.validators.quorum:
            return quorum.build_certificate(height, header_bytes, agreeing.values())
        return None

    def _run_finalizer(self) -> None:
        """Publish own votes, read the others', store certificates (see the module docstring)."""
        assert self._board is not None
        while not self._stopping.is_set():
            with self._final_cond:
                head = self._head.height
                final = self._final_height
                unpublished = sorted(self._unpublished)
                # Not yet final, plus recent final heights still missing a certificate or some member's vote
                # (a late vote may conflict: evidence).
                heights = [
                    h for h in range(max(0, final - _WATCH_WINDOW + 1), min(head, final + _FINALITY_BATCH) + 1)
                    if h not in self._settled
                ]
                if not heights and not unpublished:
                    self._final_cond.wait(_FINALITY_IDLE_SECONDS)
                    continue
            self._forget_old_votes()
            try:
                for height in unpublished:
                    self._publish(height)
                if heights and self._diverged_at is None:
                    self._finalize(heights, self._board.votes(heights[0], heights[-1]))
                self._board_down = False
            except Exception as exc:  # noqa: BLE001 - etcd down: keep trying; blocks stay committed, not final
                if not self._board_down:
                    log.warning("cannot exchange block signatures; retrying", extra={"problem": str(exc)})
                    self._board_down = True
                self._stopping.wait(_RETRY_SECONDS)
                continue
            self._stopping.wait(self.finality_poll_seconds)

    def _publish(self, height: int) -> None:
        assert self._board is not None
        vote = self._own_vote(height)
        raw = transactions.encode(vote)
        holding = self._board.publish_vote(height, self.validator_id, raw)
        if holding != raw:
            previous = quorum.decode_vote(holding)
            if previous is not None and previous.header != vote.header:
                log.error("this validator's vote slot holds a different header it signed earlier",
                          extra={"height": height})
                if quorum.signature_valid(previous.header, previous.signature, self.trust):
                    self._record_evidence(height, self.validator_id, previous, blocks.header_hash(vote.header))
        with self._final_cond:
            self._unpublished.discard(height)

    def _finalize(self, heights: list[int], votes: dict[int, dict[str, bytes]]) -> None:
        for height in heights:
            vote = self._own_vote(height)
            certificate = self._tally(height, vote.header, votes.get(height, {}), vote.signature)
            if certificate is not None and height not in self._certified:
                self.store.put_certificate(height, transactions.encode(certificate))
                self._certified.add(height)
                self._set_final(height)
            if height in self._certified and len(votes.get(height, {})) >= len(self.validators.members):
                with self._final_cond:
                    self._settled.add(height)

    def _forget_old_votes(self) -> None:
        """Drop cached votes and certified marks of heights no longer watched."""
        with self._final_cond:
            floor = self._final_height - _WATCH_WINDOW
            for height in [h for h in self._own_votes if h <= floor]:
                del self._own_votes[height]
            self._certified = {h for h in self._certified if h > floor}
            self._settled = {h for h in self._settled if h > floor}

    # --- block cutter --------------------------------------------------------------------------

    def _run_cutter(self) -> None:
        first_seen: float | None = None
        while True:
            stopping = self._stopping.is_set()
            try:
                batch = self.orderer.read(self._orderer_next, self.block_max_transactions)
                if batch and first_seen is None and self._cuts is not None:
                    # Another validator (or this one, before a restart) may have cut this height already.
                    agreed = self._cuts.recorded_cut(self._head.height + 1)
                    if agreed is not None:
                        if not self._follow(agreed) and stopping:
                            return
                        continue
            except Exception as exc:  # noqa: BLE001 - etcd down or a bad cut: keep the cutter alive, retry
                if self._orderer_trouble(exc, stopping):
                    return
                continue
            self._orderer_down = False
            if not batch:
                if stopping:
                    return
                first_seen = None
                self.orderer.wait(self._orderer_next - 1, _IDLE_WAIT_SECONDS)
                continue
            now = time.monotonic()
            if first_seen is None:
                first_seen = now
            remaining = self.block_max_wait - (now - first_seen)
            if len(batch) < self.block_max_transactions and remaining > 0 and not stopping:
                # Short slices so close() is not held up by a long block wait.
                self.orderer.wait(batch[-1][0], min(remaining, _IDLE_WAIT_SECONDS))
                continue
            if self._cuts is not None:
                proposal = BlockCut(
                    self._head.height + 1,
                    batch[0][0],
                    len(batch),
                    max(int(time.time() * 1000), self._head.timestamp_ms),
                )
                try:
                    agreed = self._cuts.record_cut(proposal)
                    if not self._follow(agreed, batch if agreed == proposal else None) and stopping:
                        return
                except Exception as exc:  # noqa: BLE001 - as above; the entries stay in the order
                    if self._orderer_trouble(exc, stopping):
                        return
                    continue
                first_seen = None
                continue
            try:
                self._cut(batch)
            except Exception:  # noqa: BLE001 - keep the cutter alive and answer the batch's submitters
                log.exception("block cut failed")
                error = Unavailable("ledger", "block could not be cut")
                for sequence, data in batch:
                    tx = None
                    try:
                        tx = ledger_pb2.Transaction.FromString(data)
                    except Exception:  # noqa: BLE001, S110 - nothing to release for a foreign entry
                        pass
                    self._finish(sequence, None, error, tx)
            self._orderer_next = batch[-1][0] + 1
            first_seen = None

    def _orderer_trouble(self, exc: Exception, stopping: bool) -> bool:
        """Log (once per outage) why the order cannot be cut; pause. True when the cutter should exit."""
        if not self._orderer_down:
            if isinstance(exc, Unavailable):
                log.warning("cannot read the order; retrying", extra={"problem": str(exc)})
            else:
                log.error("cannot cut the agreed block; retrying", exc_info=exc)
            self._orderer_down = True
        if stopping:
            return True
        self._stopping.wait(_RETRY_SECONDS)
        return False

    def _follow(self, cut: BlockCut, batch: list[tuple[int, bytes]] | None = None) -> bool:
        """Cut exactly the agreed entries with the agreed timestamp; False when the commit failed."""
        if cut.height != self._head.height + 1 or cut.first_sequence != self._orderer_next:
            raise DataLoss(
                f"agreed cut of block {cut.height} starts at order entry {cut.first_sequence}, "
                f"but this validator is at block {self._head.height + 1}, order entry {self._orderer_next}"
            )
        if batch is None:
            batch = self.orderer.read(cut.first_sequence, cut.count) if cut.count else []
        if len(batch) != cut.count:
            raise DataLoss(f"agreed cut of block {cut.height} names order entries that cannot be read")
        if not self._cut(batch, cut):
            # The entries stay in the order; retry the same cut after a pause rather than skip them.
            self._stopping.wait(_RETRY_SECONDS)
            return False
        self._orderer_next = cut.first_sequence + cut.count
        return True

    def _cut(self, batch: list[tuple[int, bytes]], agreed: BlockCut | None = None) -> bool:
        """Validate batch and commit it as the next block; False (submitters told) when the commit failed.

        With an agreed cut the block's timestamp is the agreed one and a block is
        committed even when no entry decodes, so heights stay in step with the cuts.
        """
        txs: list[ledger_pb2.Transaction] = []
        sequences: list[int] = []
        for sequence, data in batch:
            try:
                txs.append(ledger_pb2.Transaction.FromString(data))
                sequences.append(sequence)
            except Exception:  # noqa: BLE001 - a foreign orderer entry that is not a Transaction
                log.warning("skipping an orderer entry that is not a transaction", extra={"sequence": sequence})
                self._finish(sequence, None, InvalidArgument("transaction", "not a Transaction encoding"))
        if not txs and agreed is None:
            return True
        head = self._head
        pending = PendingState(self.store)
        frontier = self._frontier.copy()
        block_leaves: list[bytes] = []
        results: list[ledger_pb2.TransactionResult] = []
        entries: list[LogEntry] = []
        height = head.height + 1
        # Taken once, here (or agreed through the orderer); never earlier than the previous block.
        # The contract rules judge validity windows at this time, so it is fixed before validation.
        timestamp_ms = (
            max(agreed.timestamp_ms, head.timestamp_ms)
            if agreed is not None
            else max(int(time.time() * 1000), head.timestamp_ms)
        )
        for index, tx in enumerate(txs):
            log_index = head.log_size + index
            result = self.validator.apply(tx, pending, log_index, block_time_ms=timestamp_ms)
            leaf_data = transactions.encode(tx)
            leaf = merkle.leaf_hash(leaf_data)
            block_leaves.append(leaf)
            frontier.append(leaf)
            results.append(result)
            entries.append(LogEntry(log_index, height, index, leaf_data, leaf, result.valid, result.reason))
        header = ledger_pb2.BlockHeader(
            chain_id=self.chain_id,
            height=height,
            previous_header_hash=self._head_hash,
            transactions_root=merkle.root(block_leaves),
            results_hash=blocks.results_hash(results),
            log_size=frontier.size,
            log_root=frontier.root(),
            timestamp_ms=timestamp_ms,
        )
        next_sequence = batch[-1][0] + 1 if batch else None
        # Outside the try: a quorum that certified another header (or an unreachable vote board) must
        # stop this cut without skipping it; the cutter retries the same agreed cut.
        signed = self._sign(header)
        try:
            self._commit(header, txs, results, pending, frontier, entries, next_sequence, signed)
        except Exception as exc:
            log.exception("block commit failed", extra={"height": height})
            error = Unavailable("ledger store", f"block commit failed: {type(exc).__name__}")
            for sequence, tx in zip(sequences, txs, strict=True):
                self._finish(sequence, None, error, tx)
            return False
        for index, (sequence, tx, result) in enumerate(zip(sequences, txs, results, strict=True)):
            committed = Committed(
                transactions.transaction_hash(tx), height, index, head.log_size + index, result.valid, result.reason
            )
            self._finish(sequence, committed, None, tx)
        return True

    def _commit(
        self,
        header: ledger_pb2.BlockHeader,
        txs: list[ledger_pb2.Transaction],
        results: list[ledger_pb2.TransactionResult],
        pending: PendingState,
        frontier: merkle.Frontier,
        entries: list[LogEntry] | None = None,
        next_sequence: int | None = None,
        signed: tuple[bytes, ledger_pb2.ValidatorSignature, ledger_pb2.QuorumCertificate | None] | None = None,
    ) -> None:
        header_bytes, signature, certificate = signed if signed is not None else self._sign(header)
        header_hash = blocks.header_hash(header_bytes)
        block = ledger_pb2.Block(header=header_bytes, transactions=txs, results=results, signatures=[signature])
        meta = {META_CHAIN_ID: self.chain_id}
        if next_sequence is not None:
            meta[META_ORDERER_NEXT] = str(next_sequence)
        stored = StoredBlock(header.height, header_bytes, header_hash, transactions.encode(block))
        self.store.commit_block(
            stored, entries or [], pending, meta,
            certificate=None if certificate is None else transactions.encode(certificate),
        )
        with self._tree_lock:
            for entry in entries or []:
                self._tree.append(entry.leaf_hash)
            self._frontier = frontier
            self._head = header
            self._head_hash = header_hash
        with self._final_cond:
            self._own_votes[header.height] = ledger_pb2.HeaderVote(header=header_bytes, signature=signature)
            if self._board is not None:
                self._unpublished.add(header.height)
            if certificate is not None:
                self._certified.add(header.height)
            self._final_cond.notify_all()  # wakes the finalizer
        if certificate is not None:
            self._set_final(header.height)

    def _sign(
        self, header: ledger_pb2.BlockHeader
    ) -> tuple[bytes, ledger_pb2.ValidatorSignature, ledger_pb2.QuorumCertificate | None]:
        """Encode and sign header; its certificate when already certain (quorum 1, or a catching-up validator).

        Raises DataLoss when a quorum already signed another header for this height:
        nothing is applied then.
        """
        header_bytes = transactions.encode(header)
        signature = quorum.sign_header(self.signer, header_bytes)
        if self.validators.quorum <= 1:
            return header_bytes, signature, quorum.build_certificate(header.height, header_bytes, [signature])
        assert self._board is not None
        votes = self._board.votes(header.height, header.height).get(header.height, {})
        return header_bytes, signature, self._tally(header.height, header_bytes, votes, signature)

    def _finish(
        self,
        sequence: int,
        result: Committed | None,
        error: CareChainError | None,
        tx: ledger_pb2.Transaction | None = None,
    ) -> None:
        with self._lock:
            if tx is not None:
                try:
                    body = ledger_pb2.TransactionBody.FromString(tx.body)
                    self._pending_nonces.discard((tx.signer_id, bytes(body.nonce)))
                except Exception:  # noqa: BLE001, S110 - entries we never admitted have no pending nonce
                    pass
            waiter = self._waiters.pop(sequence, None)
        if waiter is not None:
            waiter.result, waiter.error = result, error
            waiter.done.set()

    # --- queries -------------------------------------------------------------------------------

    def head(self) -> tuple[ledger_pb2.BlockHeader, bytes]:
        """The latest header and its hash."""
        with self._tree_lock:
            return self._head, self._head_hash

    def block(self, height: int) -> ledger_pb2.Block:
        """The block at height; NotFound beyond the head."""
        # Compare first: SQLite integers stop at 2^63 and heights are uint64.
        stored = self.store.block(height) if height <= self.head()[0].height else None
        if stored is None:
            raise NotFound(f"no block at height {height}")
        return ledger_pb2.Block.FromString(stored.block)

    def log_size(self) -> int:
        """Committed transactions."""
        with self._tree_lock:
            return self._tree.size

    def list_transactions(self, from_log_index: int, limit: int) -> list[ledger_pb2.LoggedTransaction]:
        """Committed transactions in log order."""
        if from_log_index >= self.log_size():
            return []
        return [
            ledger_pb2.LoggedTransaction(
                log_index=e.log_index,
                height=e.height,
                transaction=ledger_pb2.Transaction.FromString(e.tx),
                result=ledger_pb2.TransactionResult(valid=e.valid, reason=e.reason),
            )
            for e in self.store.log_entries(from_log_index, limit)
        ]

    def record_entry(self, record_id: str) -> ledger_pb2.RecordEntry:
        """A record's registration and tombstone; NotFound for unknown ids."""
        record = self.store.record(record_id) if record_id else None
        if record is None:
            raise NotFound("no such record on the ledger")
        return ledger_pb2.RecordEntry(
            record=ledger_pb2.RegisterRecord.FromString(record.entry), log_index=record.log_index, erased=record.erased
        )

    def inclusion_proof(self, log_index: int, tree_size: int = 0) -> ledger_pb2.InclusionProof:
        """RFC 9162 inclusion proof of a log entry in the tree of tree_size (0 = current)."""
        with self._tree_lock:
            size = self._tree.size
            if tree_size == 0:
                tree_size = size
            if tree_size > size:
                raise InvalidArgument("tree_size", f"exceeds the log size {size}")
            if log_index >= tree_size:
                raise InvalidArgument("log_index", f"must be below the tree size {tree_size}")
            path = self._tree.inclusion_proof(log_index, tree_size)
            root = self._tree.root(tree_size)
        entry = self.store.log_entry(log_index)
        if entry is None:
            raise DataLoss(f"log entry {log_index} is missing from the store")
        return ledger_pb2.InclusionProof(
            log_index=log_index, tree_size=tree_size, hashes=path, root=root, leaf=entry.tx
        )

    def consistency_proof(self, first_size: int, second_size: int = 0) -> ledger_pb2.ConsistencyProof:
        """RFC 9162 consistency proof between two tree sizes (second 0 = current)."""
        with self._tree_lock:
            size = self._tree.size
            if second_size == 0:
                second_size = size
            if second_size > size:
                raise InvalidArgument("second_size", f"exceeds the log size {size}")
            if first_size > second_size:
                raise InvalidArgument("first_size", f"exceeds the second size {second_size}")
            proof = self._tree.consistency_proof(first_size, second_size)
            first_root, second_root = self._tree.root(first_size), self._tree.root(second_size)
        return ledger_pb2.ConsistencyProof(
            first_size=first_size, second_size=second_size, hashes=proof, first_root=first_root, second_root=second_root
        )

    # --- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Cut what is already ordered, stop the cutter, fail leftover waiters and close the store."""
        if self._stopping.is_set():
            return
        with self._lock:
            self._stopping.set()
        self._cutter.join(timeout=30)
        with self._final_cond:
            self._final_cond.notify_all()
        if self._finalizer is not None:
            self._finalizer.join(timeout=30)
        if self._own_orderer:
            self.orderer.close()
        with self._lock:
            waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.error = Unavailable("ledger", "shutting down")
            waiter.done.set()
        self.store.close()
