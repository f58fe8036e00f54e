"""The block cutter: order entries -> validated, signed block -> one store commit.

The cutter thread reads the order and cuts a block as soon as entries wait,
carrying every waiting entry up to ``block_max_transactions`` (no fixed wait:
what arrives while a block is validated and committed forms the next one, as
in group commit; an optional linger, ``block_max_wait_ms`` > 0, waits that
long after the first pending entry for company). It runs the contract
:class:`~carechain.ledger.contract.Validator` over every transaction (each is
marked valid or invalid with a reason), builds the header (block time,
transactions root, results hash, RFC 9162 log size and root), has
:class:`~carechain.ledger.finality.Finality` sign it, and commits block, log
entries, state writes, orderer position (and certificate when already final)
in one SQLite transaction. Only then are the waiting submitters answered, and
the orderer is told it may forget the committed entries (memory O(window)).

With a shared durable orderer that agrees block cuts (a :class:`BlockCutRegistry`,
e.g. etcd), the local policy above only *proposes* a cut: the first cut recorded
for a height (its order entries and timestamp) is what every validator commits,
so blocks and headers depend on the order alone. On restart the cutter resumes
at the order position stored with the last block and follows recorded cuts, so
every ordered transaction is committed exactly once; a validator that was down
(or joins) replays the order from the agreed cuts, re-validating every
transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from carechain.core import merkle
from carechain.core.crypto import sha256
from carechain.core.errors import DataLoss, FailedPrecondition, InvalidArgument, Unavailable
from carechain.ledger import blocks, transactions
from carechain.ledger.admission import Admission, Committed
from carechain.ledger.contract import Validator
from carechain.ledger.finality import Finality, Signed
from carechain.ledger.ordering import Orderer
from carechain.ledger.queries import ChainView
from carechain.ledger.sqlite_store import META_CHAIN_ID, META_ORDERER_NEXT, LedgerStore, LogEntry, StoredBlock
from carechain.ledger.state import PendingState
from carechain.ledger.v1 import ledger_pb2

log = logging.getLogger("carechain.ledger")

# Idle poll of the orderer; bounds how long close() waits for the cutter.
_IDLE_WAIT_SECONDS = 0.05
# Pause before retrying when the orderer's backend (etcd) cannot be reached.
_RETRY_SECONDS = 0.2


def _leaf_of_entry(data: bytes) -> bytes:
    """The leaf hash admission keyed the entry's submitter by (the leaf data is the re-encoded transaction)."""
    try:
        return merkle.leaf_hash(transactions.encode(ledger_pb2.Transaction.FromString(data)))
    except Exception:  # noqa: BLE001 - a foreign entry: nobody here waits for it under another key
        return merkle.leaf_hash(data)


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


class BlockCutter:
    """The block-cutting thread of one validator.

    No lock: the order position and the outage flag are touched by the cutter
    thread only (and by :meth:`resume` / :meth:`commit_genesis` before it starts).
    """

    def __init__(
        self,
        chain_id: str,
        store: LedgerStore,
        validator: Validator,
        orderer: Orderer,
        cuts: BlockCutRegistry | None,
        view: ChainView,
        finality: Finality,
        admission: Admission,
        stopping: threading.Event,
        block_max_transactions: int,
        block_max_wait_ms: int,
    ) -> None:
        self.chain_id = chain_id
        self.store = store
        self.validator = validator
        self.orderer = orderer
        self._cuts = cuts
        self._view = view
        self._finality = finality
        self._admission = admission
        self._stopping = stopping
        self.block_max_transactions = block_max_transactions
        self.block_max_wait = block_max_wait_ms / 1000.0
        self._orderer_next = 0
        self._orderer_down = False
        self._thread: threading.Thread | None = None

    # --- start-up and shutdown -----------------------------------------------------------------

    def resume(self) -> None:
        """Continue after the stored head: at its order position, which must match the agreed cut."""
        head, _ = self._view.head()
        self._orderer_next = int(self.store.meta(META_ORDERER_NEXT) or 0) if self.orderer.durable else 0
        if self._cuts is not None:
            agreed = self._cuts.recorded_cut(head.height)
            if (
                agreed is None
                or agreed.first_sequence + agreed.count != self._orderer_next
                or agreed.timestamp_ms != head.timestamp_ms
            ):
                raise FailedPrecondition(
                    f"the ledger store's block {head.height} was not cut from this orderer's order "
                    "(another orderer, etcd prefix or chain?)"
                )

    def commit_genesis(self) -> None:
        """Commit the empty block 0 of a new chain."""
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
        self._commit(header, [], [], PendingState(self.store), self._view.frontier(), [], None,
                     self._finality.sign(header))
        log.info("genesis block created", extra={"chain_id": self.chain_id})

    def start(self) -> None:
        """Start the cutter thread."""
        self._thread = threading.Thread(target=self._run, name="ledger-block-cutter", daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the cutter (the shared stopping event is set): it cuts what is already ordered first."""
        if self._thread is not None:
            self._thread.join(timeout=30)

    # --- the cutter thread ---------------------------------------------------------------------

    def _next_height(self) -> int:
        return self._view.head()[0].height + 1

    def _run(self) -> None:
        first_seen: float | None = None
        while True:
            stopping = self._stopping.is_set()
            try:
                batch = self.orderer.read(self._orderer_next, self.block_max_transactions)
                if batch and first_seen is None and self._cuts is not None and self.block_max_wait > 0:
                    # Lingering for more entries: another validator (or this one, before a restart) may have
                    # cut this height already. Without a linger record_cut below answers that in one round trip.
                    agreed = self._cuts.recorded_cut(self._next_height())
                    if agreed is not None:
                        if not self._follow(agreed, batch) and stopping:
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
                # An optional linger (block_max_wait_ms > 0); short slices so close() is not held up.
                self.orderer.wait(batch[-1][0], min(remaining, _IDLE_WAIT_SECONDS))
                continue
            first_seen = None
            if self._cuts is not None:
                proposal = BlockCut(
                    self._next_height(),
                    batch[0][0],
                    len(batch),
                    max(int(time.time() * 1000), self._view.head()[0].timestamp_ms),
                )
                try:
                    agreed, votes = self._record_cut(proposal)
                    if not self._follow(agreed, batch, votes) and stopping:
                        return
                except Exception as exc:  # noqa: BLE001 - as above; the entries stay in the order
                    if self._orderer_trouble(exc, stopping):
                        return
                continue
            try:
                self._cut(batch)
            except Exception:  # noqa: BLE001 - keep the cutter alive and answer the batch's submitters
                log.exception("block cut failed")
                error = Unavailable("ledger", "block could not be cut")
                for _, data in batch:
                    self._admission.finish(_leaf_of_entry(data), None, error)
            self._advance(batch[-1][0] + 1)

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

    def _record_cut(self, proposal: BlockCut) -> tuple[BlockCut, dict[str, bytes] | None]:
        """Record proposal (unless its height has a cut); the cut that holds, and the height's votes when the
        registry reads them in the same round trip (:meth:`EtcdOrderer.record_cut_and_votes`)."""
        assert self._cuts is not None
        both = getattr(self._cuts, "record_cut_and_votes", None)
        if both is not None:
            return both(proposal)
        return self._cuts.record_cut(proposal), None

    def _follow(self, cut: BlockCut, batch: list[tuple[int, bytes]] | None = None,
                votes: dict[str, bytes] | None = None) -> bool:
        """Cut exactly the agreed entries with the agreed timestamp; False when the commit failed.

        batch: entries already read from the cut's first sequence; the cut may take fewer of them
        (another validator's proposal), else they are read again. votes: the height's published votes,
        if already read (:meth:`Finality.sign`).
        """
        if cut.height != self._next_height() or cut.first_sequence != self._orderer_next:
            raise DataLoss(
                f"agreed cut of block {cut.height} starts at order entry {cut.first_sequence}, "
                f"but this validator is at block {self._next_height()}, order entry {self._orderer_next}"
            )
        if batch and batch[0][0] == cut.first_sequence and len(batch) >= cut.count:
            batch = batch[: cut.count]
        else:
            batch = self.orderer.read(cut.first_sequence, cut.count) if cut.count else []
        if len(batch) != cut.count:
            raise DataLoss(f"agreed cut of block {cut.height} names order entries that cannot be read")
        if not self._cut(batch, cut, votes):
            # The entries stay in the order; retry the same cut after a pause rather than skip them.
            self._stopping.wait(_RETRY_SECONDS)
            return False
        self._advance(cut.first_sequence + cut.count)
        return True

    def _advance(self, next_sequence: int) -> None:
        """Entries before next_sequence are committed: read on from there, and let the orderer forget them."""
        self._orderer_next = next_sequence
        self.orderer.release(next_sequence)

    def _cut(self, batch: list[tuple[int, bytes]], agreed: BlockCut | None = None,
             votes: dict[str, bytes] | None = None) -> bool:
        """Validate batch and commit it as the next block; False (submitters told) when the commit failed.

        With an agreed cut the block's timestamp is the agreed one and a block is
        committed even when no entry decodes, so heights stay in step with the cuts.
        """
        txs: list[ledger_pb2.Transaction] = []
        for sequence, data in batch:
            try:
                txs.append(ledger_pb2.Transaction.FromString(data))
            except Exception:  # noqa: BLE001 - a foreign orderer entry that is not a Transaction
                log.warning("skipping an orderer entry that is not a transaction", extra={"sequence": sequence})
                self._admission.finish(merkle.leaf_hash(data), None,
                                       InvalidArgument("transaction", "not a Transaction encoding"))
        if not txs and agreed is None:
            return True
        head, head_hash = self._view.head()
        pending = PendingState(self.store)
        frontier = self._view.frontier()
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
            previous_header_hash=head_hash,
            transactions_root=merkle.root(block_leaves),
            results_hash=blocks.results_hash(results),
            log_size=frontier.size,
            log_root=frontier.root(),
            timestamp_ms=timestamp_ms,
        )
        next_sequence = batch[-1][0] + 1 if batch else None
        # Outside the try: a quorum that certified another header (or an unreachable vote board) must
        # stop this cut without skipping it; the cutter retries the same agreed cut.
        signed = self._finality.sign(header, votes)
        try:
            self._commit(header, txs, results, pending, frontier, entries, next_sequence, signed)
        except Exception as exc:
            log.exception("block commit failed", extra={"height": height})
            error = Unavailable("ledger store", f"block commit failed: {type(exc).__name__}")
            for entry in entries:
                self._admission.finish(entry.leaf_hash, None, error)
            return False
        for entry, result in zip(entries, results, strict=True):
            # The leaf data is the encoded transaction: its SHA-256 is the transaction hash.
            committed = Committed(sha256(entry.tx), height, entry.tx_index, entry.log_index, result.valid,
                                  result.reason)
            self._admission.finish(entry.leaf_hash, committed, None)
        return True

    def _commit(
        self,
        header: ledger_pb2.BlockHeader,
        txs: list[ledger_pb2.Transaction],
        results: list[ledger_pb2.TransactionResult],
        pending: PendingState,
        frontier: merkle.Frontier,
        entries: list[LogEntry],
        next_sequence: int | None,
        signed: Signed,
    ) -> None:
        """One SQLite transaction for block, log entries, state, meta (and certificate); then the view and votes."""
        header_bytes, signature, certificate = signed
        header_hash = blocks.header_hash(header_bytes)
        block = ledger_pb2.Block(header=header_bytes, transactions=txs, results=results, signatures=[signature])
        meta = {META_CHAIN_ID: self.chain_id}
        if next_sequence is not None:
            meta[META_ORDERER_NEXT] = str(next_sequence)
        stored = StoredBlock(header.height, header_bytes, header_hash, transactions.encode(block))
        self.store.commit_block(
            stored, entries, pending, meta,
            certificate=None if certificate is None else transactions.encode(certificate),
        )
        self._view.advance(header, header_hash, [entry.leaf_hash for entry in entries], frontier)
        self._finality.committed(header.height, signed)
