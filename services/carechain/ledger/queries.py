"""The committed chain as readers see it: the head, the RFC 9162 log tree, queries and proofs.

The block cutter is the only writer (:meth:`ChainView.advance`, right after a
block is durably committed); gRPC handler threads read. Blocks, log entries
and records come from the chain store, and so does the log's Merkle tree:
the store keeps the root of every complete perfect subtree (``log_nodes``,
written with its block), so opening a chain reads the O(log n) subtrees of
the head's frontier, checked against the head's log root, instead of
rehashing every leaf, and a proof reads O(log n) nodes (a bounded cache keeps
the hot ones; nodes never change). A store whose nodes are missing (from
before ``log_nodes``) or do not hash to the head's root is rebuilt from its
leaves once, at open (:attr:`ChainView.replayed_leaves` counts the leaves
read).
"""

from __future__ import annotations

import base64
import binascii
import logging
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from carechain.core import merkle
from carechain.core.errors import DataLoss, IntegrityError, InvalidArgument, NotFound
from carechain.ledger.sqlite_store import LedgerStore
from carechain.ledger.state import searched_identities
from carechain.ledger.v1 import ledger_pb2

log = logging.getLogger("carechain.ledger")

#: Subtree roots kept in memory by a :class:`StoredLogTree` (32-byte hashes: ~1 MiB with keys).
NODE_CACHE_ENTRIES = 8192

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


def _served_intact(verify: Callable[..., None], *proof: object) -> None:
    """Check a proof before serving it: O(log n) hashes that catch a damaged stored node (DataLoss, not a lie)."""
    try:
        verify(*proof)
    except IntegrityError as exc:
        raise DataLoss(f"ledger log tree nodes are damaged ({exc.message}); run `carechain ledger verify`") from None


def stored_frontier(store: LedgerStore, size: int) -> merkle.Frontier | None:
    """The frontier of the log's first size leaves from the store's subtree roots (O(log size) reads).

    None when one is not stored (a store from before ``log_nodes``). The caller checks the frontier's
    root against a signed one: the stored nodes are only as good as that check.
    """
    def node(level: int, position: int) -> bytes:
        digest = store.log_node(level, position)
        if digest is None:
            raise LookupError((level, position))
        return digest

    try:
        return merkle.Frontier.from_subtrees(size, node)
    except LookupError:
        return None


class StoredLogTree(merkle.MerkleTree):
    """The log's RFC 9162 tree read from the chain store's subtree roots: no leaf list in memory.

    Only ever asked about sizes up to :attr:`size` (the view's head), whose perfect subtrees are all
    committed; the proof algorithms are :class:`carechain.core.merkle.MerkleTree`'s.
    """

    def __init__(self, store: LedgerStore, size: int) -> None:
        super().__init__()
        self._store = store
        self._size = size
        self._nodes: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    def append(self, leaf: bytes) -> None:
        """Count one more committed leaf (its hash is in the store already)."""
        if len(leaf) != merkle.HASH_BYTES:
            raise ValueError("a leaf hash is 32 bytes")
        self._size += 1

    def leaf(self, index: int) -> bytes:
        """The leaf hash at index."""
        return self._node(0, index)

    def _node(self, level: int, position: int) -> bytes:
        key = (level, position)
        digest = self._nodes.get(key)
        if digest is not None:
            self._nodes.move_to_end(key)
            return digest
        digest = self._store.log_node(level, position)
        if digest is None:
            raise DataLoss(f"the ledger store lacks the log tree node ({level}, {position}); "
                           "run `carechain ledger verify`")
        self._nodes[key] = digest
        if len(self._nodes) > NODE_CACHE_ENTRIES:
            self._nodes.popitem(last=False)
        return digest

    def _range_root(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:  # perfect and aligned: one stored node
            return self._node(n.bit_length() - 1, lo // n)
        return super()._range_root(lo, hi)


class ChainView:
    """Head, log tree and read queries over one chain store."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        # Guards head, head hash, frontier and tree together, so a reader sees all four from the same commit
        # (handlers read them while the cutter advances them).
        self._lock = threading.Lock()
        #: Leaf hashes read to rebuild the stored log tree at open (0 when its nodes matched the head).
        self.replayed_leaves = 0
        self._frontier = merkle.Frontier()
        self._tree = StoredLogTree(store, 0)
        self._head: ledger_pb2.BlockHeader | None = None
        self._head_hash = b""
        stored = store.head()
        if stored is None:
            return
        self._head = ledger_pb2.BlockHeader.FromString(stored.header)
        self._head_hash = stored.header_hash
        self._frontier = self._open_frontier(self._head)
        self._tree = StoredLogTree(store, self._head.log_size)

    def _open_frontier(self, head: ledger_pb2.BlockHeader) -> merkle.Frontier:
        """The head's frontier from the stored subtree roots, rebuilt from the leaves if they do not match it."""
        # Cheap consistency checks; full verification is verify_chain.
        if self.store.log_size() != head.log_size:
            raise DataLoss("ledger store is inconsistent (head log size vs log entries); run `carechain ledger verify`")
        frontier = stored_frontier(self.store, head.log_size)
        if frontier is not None and frontier.root() == head.log_root:
            return frontier
        if frontier is None:
            log.info("ledger log tree nodes missing; rebuilding them from the log entries")
        else:
            log.warning("ledger log tree nodes do not hash to the head's log root; rebuilding them from the log "
                        "entries", extra={"height": head.height})
        self.replayed_leaves = self.store.rebuild_log_nodes()
        frontier = stored_frontier(self.store, head.log_size)
        if frontier is None or frontier.root() != head.log_root:
            raise DataLoss("ledger store is inconsistent (head log root vs log entries); run `carechain ledger verify`")
        return frontier

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

    def record_entry(self, record_id: str, version: int = 0) -> ledger_pb2.RecordEntry:
        """A record's registration (its latest version, or version) and tombstone; NotFound for unknown ids.

        registered_at_ms is when that version was written (its block's timestamp: ordering time).
        """
        record = self.store.record(record_id) if record_id else None
        if record is None:
            raise NotFound("no such record on the ledger")
        latest = ledger_pb2.RegisterRecord.FromString(record.entry)
        latest_version = max(latest.version, 1)
        entry, log_index = latest, record.log_index
        if version and version != latest_version:
            earlier = self.store.earlier_record_version(record_id, version) if version < latest_version else None
            if earlier is None:
                raise NotFound("the record has no such version")
            entry, log_index = ledger_pb2.RegisterRecord.FromString(earlier.entry), earlier.log_index
        answer = ledger_pb2.RecordEntry(record=entry, log_index=log_index, erased=record.erased,
                                        registered_at_ms=self._block_time_of(log_index), latest_version=latest_version)
        if record.erased and record.erased_log_index is not None:
            answer.erased_log_index = record.erased_log_index
            answer.erased_at_ms = self._block_time_of(record.erased_log_index)
        return answer

    def _block_time_of(self, log_index: int) -> int:
        """The timestamp of the block holding log entry log_index (the ordering time validators agreed on)."""
        entry = self.store.log_entry(log_index)
        stored = self.store.block(entry.height) if entry is not None else None
        if stored is None:
            raise DataLoss(f"log entry {log_index} or its block is missing from the store")
        return ledger_pb2.BlockHeader.FromString(stored.header).timestamp_ms

    def patient_records(self, patient_id: str, from_log_index: int, limit: int
                        ) -> tuple[list[ledger_pb2.RecordEntry], int | None]:
        """(entries, next log index or None at the end): one page of the records of every identity of
        patient_id (:func:`searched_identities`) in log order, each with its block's time as last_updated_ms."""
        found = self.store.patient_records_page(searched_identities(self.store, patient_id), from_log_index,
                                                limit + 1)
        entries = []
        for record, header in found[:limit]:
            written_ms = ledger_pb2.BlockHeader.FromString(header).timestamp_ms  # the latest version's write
            entries.append(ledger_pb2.RecordEntry(record=ledger_pb2.RegisterRecord.FromString(record.entry),
                                                  log_index=record.log_index, erased=record.erased,
                                                  last_updated_ms=written_ms, registered_at_ms=written_ms))
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
            self._check_head_root(tree_size, root)
        entry = self.store.log_entry(log_index)
        if entry is None:
            raise DataLoss(f"log entry {log_index} is missing from the store")
        _served_intact(merkle.verify_inclusion, entry.leaf_hash, log_index, tree_size, path, root)
        return ledger_pb2.InclusionProof(
            log_index=log_index, tree_size=tree_size, hashes=path, root=root, leaf=entry.tx
        )

    def _check_head_root(self, tree_size: int, root: bytes) -> None:
        """A proof at the head's size must end at the head's signed root (a damaged stored node would not)."""
        if self._head is not None and tree_size == self._head.log_size and root != self._head.log_root:
            raise DataLoss("ledger log tree nodes do not hash to the head's log root; run `carechain ledger verify`")

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
            self._check_head_root(second_size, second_root)
        _served_intact(merkle.verify_consistency, first_size, second_size, proof, first_root, second_root)
        return ledger_pb2.ConsistencyProof(
            first_size=first_size, second_size=second_size, hashes=proof, first_root=first_root, second_root=second_root
        )
