"""The committed chain as readers see it: the head, the RFC 9162 log tree, queries and proofs.

The block cutter is the only writer (:meth:`ChainView.advance`, right after a
block is durably committed); gRPC handler threads read. Blocks, log entries
and records come from the chain store; the Merkle tree of every committed
leaf is kept in memory so inclusion and consistency proofs are cheap.
"""

from __future__ import annotations

import base64
import binascii
import struct
import threading
from dataclasses import dataclass

from carechain.core import merkle
from carechain.core.errors import DataLoss, InvalidArgument, NotFound
from carechain.ledger.sqlite_store import LedgerStore
from carechain.ledger.v1 import ledger_pb2

# Longest page token accepted: a token is a few bytes, never a place to smuggle data.
MAX_PAGE_TOKEN_CHARS = 64
_TOKEN_VERSION = b"cc1"


@dataclass(frozen=True)
class PageToken:
    """Where the next page of a list starts: opaque to clients (base64url), bound to one list kind.

    A token only names a position, so it never grants more than the request
    itself (callers still go through the access table) and a page costs O(page).
    """

    kind: str  # which list: "log", "evidence"
    position: int

    def encode(self) -> str:
        """The token text."""
        raw = _TOKEN_VERSION + self.kind.encode() + b"|" + struct.pack(">Q", self.position)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, token: str, kind: str, field: str = "page_token") -> PageToken:
        """The token of list kind; InvalidArgument naming field for anything else (malformed, other list)."""
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            raise InvalidArgument(field, "is too long to be a page token")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidArgument(field, "is not a page token") from None
        prefix = _TOKEN_VERSION + kind.encode() + b"|"
        if not raw.startswith(prefix) or len(raw) != len(prefix) + 8:
            raise InvalidArgument(field, "is not a page token of this list")
        (position,) = struct.unpack(">Q", raw[len(prefix):])
        return cls(kind, position)


def searched_identities(state: object, patient_id: str) -> list[str]:
    """Every patient id whose records are patient_id's: itself, then the local identities linked to it.

    Links (issue 14 part 1) come from the state's ``linked_patients`` once the chain store has it; before
    that a patient is one identity.
    """
    linked = getattr(state, "linked_patients", None)
    aliases = list(linked(patient_id)) if callable(linked) else []
    return [patient_id, *(alias for alias in aliases if alias != patient_id)]


class ChainView:
    """Head, log tree and read queries over one chain store."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        # Guards head, head hash, frontier and tree together, so a reader sees all four from the same commit
        # (handlers read them while the cutter advances them).
        self._lock = threading.Lock()
        leaves = store.leaf_hashes()
        self._frontier = merkle.Frontier.from_leaf_hashes(leaves)
        self._tree = merkle.MerkleTree(leaves)
        self._head: ledger_pb2.BlockHeader | None = None
        self._head_hash = b""
        stored = store.head()
        if stored is None:
            return
        self._head = ledger_pb2.BlockHeader.FromString(stored.header)
        self._head_hash = stored.header_hash
        # Cheap consistency check; full verification is verify_chain.
        if self._head.log_size != len(leaves) or self._head.log_root != self._frontier.root():
            raise DataLoss("ledger store is inconsistent (head log root vs log entries); run `carechain ledger verify`")

    @property
    def empty(self) -> bool:
        """True before the genesis block is committed."""
        with self._lock:
            return self._head is None

    def advance(
        self, header: ledger_pb2.BlockHeader, header_hash: bytes, leaves: list[bytes], frontier: merkle.Frontier
    ) -> None:
        """Make a committed block the head: its leaves join the tree, frontier is the log after it."""
        with self._lock:
            for leaf in leaves:
                self._tree.append(leaf)
            self._frontier = frontier
            self._head = header
            self._head_hash = header_hash

    def frontier(self) -> merkle.Frontier:
        """A copy of the log's frontier at the head (the cutter extends it into the next block)."""
        with self._lock:
            return self._frontier.copy()

    def head(self) -> tuple[ledger_pb2.BlockHeader, bytes]:
        """The latest header and its hash."""
        with self._lock:
            assert self._head is not None, "no genesis block yet"
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
        with self._lock:
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

    def patient_records(self, patient_id: str, from_log_index: int, limit: int
                        ) -> tuple[list[ledger_pb2.RecordEntry], int | None]:
        """(entries, next log index or None at the end): one page of the records of every identity of
        patient_id (:func:`searched_identities`) in log order, each with its block's time as last_updated_ms."""
        found = self.store.patient_records_page(searched_identities(self.store, patient_id), from_log_index,
                                                limit + 1)
        entries = [
            ledger_pb2.RecordEntry(record=ledger_pb2.RegisterRecord.FromString(record.entry),
                                   log_index=record.log_index, erased=record.erased,
                                   last_updated_ms=ledger_pb2.BlockHeader.FromString(header).timestamp_ms)
            for record, header in found[:limit]
        ]
        return entries, (found[limit][0].log_index if len(found) > limit else None)

    def inclusion_proof(self, log_index: int, tree_size: int = 0) -> ledger_pb2.InclusionProof:
        """RFC 9162 inclusion proof of a log entry in the tree of tree_size (0 = current)."""
        with self._lock:
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
        with self._lock:
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
