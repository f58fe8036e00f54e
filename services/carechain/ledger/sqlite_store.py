"""The SQLite chain store: blocks, the log's leaves and the contract state in one SQLite file.

``<data_dir>/ledger.db`` (WAL, ``synchronous=FULL``) holds:

- ``blocks``: height, header bytes, SHA-256 of the header, the encoded Block
  (header, transactions, results, validator signatures). The encoded Block is
  the record of truth; everything else is derived and re-checked by
  :mod:`carechain.ledger.copy_check`.
- ``log_entries``: one row per transaction in log order: where it is (height,
  index), its bytes (encoded Transaction = RFC 9162 leaf data), its leaf hash
  and its verdict; serves ListTransactions and Merkle proofs.
- contract state: ``principals``, ``nonces`` (per signer), ``records`` (the
  latest version of each, with tombstones), ``record_versions`` (superseded
  versions), ``consents`` (with status), ``delegations``, ``audit_anchors``,
  ``patient_links`` (linked patient -> network identity, with unlinks).
- ``meta``: chain id, the orderer position and the validator set.
- ``certificates``: the quorum certificate (encoded ``QuorumCertificate``) of
  each block this validator saw become final; kept apart from the block so
  the stored Block encoding never changes after commit.
- ``evidence``: validator misbehaviour observed (encoded ``Evidence``), one
  row per (height, validator, header signed).
- ``log_nodes``: the root of every complete, aligned perfect subtree of the
  log's RFC 9162 tree above the leaves (level >= 1), written with the block
  that completes it, so reopening the chain and serving proofs read O(log n)
  nodes instead of rehashing every leaf (:class:`carechain.ledger.queries.ChainView`
  checks them against the head's signed log root at open).

:meth:`LedgerStore.state_rows` dumps every contract-state table (every table
that is not one of the chain tables above) in a canonical order, so two
validators' states and a replayed state can be compared byte for byte.

A block, its log entries and its state writes are committed in one SQLite
transaction, so a crash leaves either all of them or none. Reopening a
directory resumes from the last committed block.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from carechain.core import merkle
from carechain.ledger.state import (
    ConsentState,
    Delegation,
    LinkResolution,
    PatientLink,
    PendingState,
    Principal,
    RecordState,
    RecordVersionState,
)
from carechain.runtime.sqlite import connect_durable

DB_FILE = "ledger.db"
SCHEMA_VERSION = "1"
#: ``meta`` keys: the chain this store belongs to, the next order entry to cut (durable orderers), and the
#: validator set (offline verification reads it from here).
META_CHAIN_ID = "chain_id"
META_ORDERER_NEXT = "orderer_next_sequence"
META_VALIDATORS = "validators"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    header BLOB NOT NULL,
    header_hash BLOB NOT NULL,
    block BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS log_entries (
    log_index INTEGER PRIMARY KEY,
    height INTEGER NOT NULL,
    tx_index INTEGER NOT NULL,
    tx BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    valid INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS principals (
    principal_id TEXT PRIMARY KEY,
    kind INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    organization_id TEXT NOT NULL,
    specialty TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    kek_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deactivations (
    principal_id TEXT PRIMARY KEY,
    log_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    signer_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    log_index INTEGER NOT NULL,
    PRIMARY KEY (signer_id, nonce)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    record_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    entry BLOB NOT NULL,
    log_index INTEGER NOT NULL,
    erased INTEGER NOT NULL,
    erased_log_index INTEGER
);
CREATE INDEX IF NOT EXISTS records_by_patient ON records (patient_id, log_index);
CREATE TABLE IF NOT EXISTS record_versions (
    record_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    entry BLOB NOT NULL,
    log_index INTEGER NOT NULL,
    PRIMARY KEY (record_id, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consents (
    consent_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    policy BLOB NOT NULL,
    status TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    revoked_log_index INTEGER
);
CREATE TABLE IF NOT EXISTS delegations (
    patient_id TEXT NOT NULL,
    delegate_id TEXT NOT NULL,
    relationship INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    revoked_log_index INTEGER,
    PRIMARY KEY (patient_id, delegate_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS certificates (height INTEGER PRIMARY KEY, certificate BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    height INTEGER NOT NULL,
    validator_id TEXT NOT NULL,
    header_hash BLOB NOT NULL,
    evidence BLOB NOT NULL,
    UNIQUE (height, validator_id, header_hash)
);
CREATE TABLE IF NOT EXISTS log_nodes (
    level INTEGER NOT NULL,
    position INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_anchors (
    batch_number INTEGER PRIMARY KEY,
    first_sequence INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    merkle_root BLOB NOT NULL,
    log_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS patient_links (
    linked_patient_id TEXT PRIMARY KEY,
    network_patient_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    unlinked_log_index INTEGER
);
CREATE INDEX IF NOT EXISTS patient_links_by_network ON patient_links (network_patient_id, log_index);
"""


#: Tables that hold the chain and bookkeeping rather than contract state.
CHAIN_TABLES = frozenset({"meta", "blocks", "log_entries", "log_nodes", "certificates", "evidence",
                          "sqlite_sequence"})


@dataclass(frozen=True)
class StoredBlock:
    """One row of the blocks table."""

    height: int
    header: bytes
    header_hash: bytes
    block: bytes


@dataclass(frozen=True)
class LogEntry:
    """One transaction in the log."""

    log_index: int
    height: int
    tx_index: int
    tx: bytes
    leaf_hash: bytes
    valid: bool
    reason: str


class LedgerStore(LinkResolution):
    """The SQLite chain store; one connection guarded by a lock (gRPC handlers are threads)."""

    def __init__(self, path: pathlib.Path, connection: sqlite3.Connection, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        self._db = connection
        self._lock = threading.RLock()

    @classmethod
    def open(cls, data_dir: pathlib.Path) -> LedgerStore:
        """Open (creating if needed) ``data_dir/ledger.db`` for writing."""
        path = data_dir / DB_FILE
        db = connect_durable(path)
        db.executescript(_SCHEMA)
        store = cls(path, db, read_only=False)
        with store._lock:
            if store.meta("schema_version") is None:
                store._set_meta("schema_version", SCHEMA_VERSION)
        return store

    @classmethod
    def in_memory(cls) -> LedgerStore:
        """A throw-away store in memory (verification replays state into one to compare)."""
        db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        db.executescript(_SCHEMA)
        return cls(pathlib.Path(":memory:"), db, read_only=False)

    @classmethod
    def open_read_only(cls, path: pathlib.Path) -> LedgerStore:
        """Open an existing ledger.db (or the directory holding it) without ever writing to it."""
        if path.is_dir():
            path = path / DB_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no ledger database at {path}")
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        return cls(path, db, read_only=True)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make every read inside the block see one consistent state (a read transaction).

        Meant for a dedicated read-only store: commits by other connections stay
        invisible until the block ends (WAL snapshot isolation).
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    # --- meta ---------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A meta value, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- blocks and log -----------------------------------------------------------------------

    def head(self) -> StoredBlock | None:
        """The highest block, or None before genesis."""
        with self._lock:
            row = self._db.execute(
                "SELECT height, header, header_hash, block FROM blocks ORDER BY height DESC LIMIT 1"
            ).fetchone()
        return None if row is None else StoredBlock(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]))

    def block(self, height: int) -> StoredBlock | None:
        """The block at height, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT height, header, header_hash, block FROM blocks WHERE height = ?", (height,)
            ).fetchone()
        return None if row is None else StoredBlock(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]))

    def blocks(self, batch: int = 256) -> Iterator[StoredBlock]:
        """Every stored block in height order (whatever heights are actually there)."""
        last = -1
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT height, header, header_hash, block FROM blocks WHERE height > ? ORDER BY height LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield StoredBlock(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]))
            last = rows[-1][0]

    def log_size(self) -> int:
        """Number of transactions in the log."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(log_index) + 1, 0) FROM log_entries").fetchone()
        return int(row[0])

    def leaf_hashes(self) -> list[bytes]:
        """Every stored leaf hash in log order."""
        with self._lock:
            rows = self._db.execute("SELECT leaf_hash FROM log_entries ORDER BY log_index").fetchall()
        return [bytes(r[0]) for r in rows]

    def log_node(self, level: int, position: int) -> bytes | None:
        """Root of the perfect subtree of 2**level leaves at leaf position * 2**level (level 0: a leaf hash).

        None when it is not stored (beyond the log, or a store from before ``log_nodes``).
        """
        with self._lock:
            if level == 0:
                row = self._db.execute("SELECT leaf_hash FROM log_entries WHERE log_index = ?", (position,)).fetchone()
            else:
                row = self._db.execute(
                    "SELECT hash FROM log_nodes WHERE level = ? AND position = ?", (level, position)).fetchone()
        return None if row is None else bytes(row[0])

    def log_nodes(self) -> dict[tuple[int, int], bytes]:
        """Every stored subtree root (level >= 1) by (level, position); empty for a store from before them."""
        with self._lock:
            try:
                rows = self._db.execute("SELECT level, position, hash FROM log_nodes").fetchall()
            except sqlite3.OperationalError:  # a read-only store written before the table existed
                return {}
        return {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows}

    def _log_node(self, level: int, position: int) -> bytes:
        """A stored subtree root, computed from its children when missing (a store not yet rebuilt)."""
        stored = self.log_node(level, position)
        if stored is not None:
            return stored
        if level == 0:
            raise LookupError(f"log entry {position} is missing")
        return merkle.node_hash(self._log_node(level - 1, 2 * position), self._log_node(level - 1, 2 * position + 1))

    def _put_log_nodes(self, nodes: dict[tuple[int, int], bytes]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO log_nodes (level, position, hash) VALUES (?, ?, ?)",
                             [(level, position, digest) for (level, position), digest in nodes.items()])

    def rebuild_log_nodes(self) -> int:
        """Recompute ``log_nodes`` from every stored leaf hash (replacing what is there); the leaves read."""
        if self.read_only:
            raise PermissionError("the ledger store is open read-only")
        leaves = self.leaf_hashes()
        nodes = merkle.completed_subtrees(0, leaves, self._log_node)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM log_nodes")
                self._put_log_nodes(nodes)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(leaves)

    def log_entries(self, from_index: int, limit: int) -> list[LogEntry]:
        """Up to limit log entries from from_index, in log order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT log_index, height, tx_index, tx, leaf_hash, valid, reason FROM log_entries "
                "WHERE log_index >= ? ORDER BY log_index LIMIT ?",
                (from_index, limit),
            ).fetchall()
        return [LogEntry(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), bool(r[5]), r[6]) for r in rows]

    def log_entry(self, log_index: int) -> LogEntry | None:
        """The log entry at log_index, or None."""
        entries = self.log_entries(log_index, 1)
        return entries[0] if entries and entries[0].log_index == log_index else None

    def commit_block(
        self,
        stored: StoredBlock,
        entries: list[LogEntry],
        state: PendingState,
        meta: dict[str, str] | None = None,
        certificate: bytes | None = None,
    ) -> None:
        """Write a block, its log entries, its state writes, meta values (and certificate) in one transaction."""
        if self.read_only:
            raise PermissionError("the ledger store is open read-only")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO blocks (height, header, header_hash, block) VALUES (?, ?, ?, ?)",
                    (stored.height, stored.header, stored.header_hash, stored.block),
                )
                self._db.executemany(
                    "INSERT INTO log_entries (log_index, height, tx_index, tx, leaf_hash, valid, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(e.log_index, e.height, e.tx_index, e.tx, e.leaf_hash, int(e.valid), e.reason) for e in entries],
                )
                if entries:
                    self._put_log_nodes(merkle.completed_subtrees(
                        entries[0].log_index, [e.leaf_hash for e in entries], self._log_node))
                self._apply(state)
                for key, value in (meta or {}).items():
                    self._set_meta(key, value)
                if certificate is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO certificates (height, certificate) VALUES (?, ?)",
                        (stored.height, certificate),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def apply_state(self, state: PendingState) -> None:
        """Write a state overlay alone (verification's in-memory replay store)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._apply(state)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def set_meta(self, key: str, value: str) -> None:
        """Write one meta value."""
        with self._lock:
            self._set_meta(key, value)

    # --- finality and evidence ---------------------------------------------------------------

    def put_certificate(self, height: int, certificate: bytes) -> None:
        """Store (or replace) the quorum certificate of a committed block."""
        self.put_certificates({height: certificate})

    def put_certificates(self, certificates: dict[int, bytes]) -> None:
        """Store (or replace) several blocks' certificates in one transaction (one fsync)."""
        if not certificates:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO certificates (height, certificate) VALUES (?, ?)",
                    sorted(certificates.items()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def certificate(self, height: int) -> bytes | None:
        """The stored certificate of height, or None."""
        with self._lock:
            row = self._db.execute("SELECT certificate FROM certificates WHERE height = ?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def certificates(self) -> dict[int, bytes]:
        """Every stored certificate by height."""
        with self._lock:
            rows = self._db.execute("SELECT height, certificate FROM certificates ORDER BY height").fetchall()
        return {int(r[0]): bytes(r[1]) for r in rows}

    def last_certified_height(self) -> int | None:
        """Highest height with a certificate, or None."""
        with self._lock:
            row = self._db.execute("SELECT MAX(height) FROM certificates").fetchone()
        return None if row[0] is None else int(row[0])

    def uncertified_heights(self) -> list[int]:
        """Committed heights without a stored certificate."""
        with self._lock:
            rows = self._db.execute(
                "SELECT height FROM blocks WHERE height NOT IN (SELECT height FROM certificates) ORDER BY height"
            ).fetchall()
        return [int(r[0]) for r in rows]

    def add_evidence(self, height: int, validator_id: str, header_hash: bytes, evidence: bytes) -> bool:
        """Keep evidence; False when the same (height, validator, header) is already recorded."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO evidence (height, validator_id, header_hash, evidence) VALUES (?, ?, ?, ?)",
                (height, validator_id, header_hash, evidence),
            )
        return cursor.rowcount == 1

    def evidence(self, from_height: int = 0) -> list[bytes]:
        """Evidence about heights >= from_height, in the order recorded."""
        with self._lock:
            rows = self._db.execute(
                "SELECT evidence FROM evidence WHERE height >= ? ORDER BY id", (from_height,)
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def state_rows(self) -> dict[str, list[tuple]]:
        """Every contract-state table's rows in a canonical order (tables by name, rows by all columns)."""
        with self._lock:
            names = [
                r[0]
                for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                if r[0] not in CHAIN_TABLES
            ]
            dump: dict[str, list[tuple]] = {}
            for name in names:
                columns = [r[1] for r in self._db.execute(f'PRAGMA table_info("{name}")')]
                order = ", ".join(f'"{c}"' for c in columns)
                rows = self._db.execute(f'SELECT {order} FROM "{name}" ORDER BY {order}').fetchall()  # noqa: S608
                dump[name] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]
        return dump

    def state_digest(self) -> bytes:
        """SHA-256 over :meth:`state_rows` (equal digests = byte-identical contract state)."""
        import hashlib
        import json

        def plain(value: object) -> object:
            return {"b": value.hex()} if isinstance(value, bytes) else value

        canonical = {name: [[plain(v) for v in row] for row in rows] for name, rows in self.state_rows().items()}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).digest()

    def _apply(self, state: PendingState) -> None:
        db = self._db
        db.executemany(
            "INSERT OR REPLACE INTO principals "
            "(principal_id, kind, public_key, organization_id, specialty, log_index, kek_version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(p.principal_id, p.kind, p.public_key, p.organization_id, p.specialty, p.log_index, p.kek_version)
             for p in state.principals.values()],
        )
        db.executemany(
            "INSERT OR REPLACE INTO deactivations (principal_id, log_index) VALUES (?, ?)",
            [(p.principal_id, p.deactivated_log_index) for p in state.principals.values()
             if p.deactivated_log_index is not None],
        )
        db.executemany(
            "INSERT INTO nonces (signer_id, nonce, log_index) VALUES (?, ?, ?)",
            [(signer, nonce, index) for (signer, nonce), index in state.nonces.items()],
        )
        db.executemany(
            "INSERT OR REPLACE INTO records (record_id, patient_id, entry, log_index, erased, erased_log_index) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(r.record_id, r.patient_id, r.entry, r.log_index, int(r.erased), r.erased_log_index)
             for r in state.records.values()],
        )
        db.executemany(
            "INSERT INTO record_versions (record_id, version, entry, log_index) VALUES (?, ?, ?, ?)",
            [(v.record_id, v.version, v.entry, v.log_index) for v in state.record_versions.values()],
        )
        db.executemany(
            "INSERT OR REPLACE INTO consents (consent_id, patient_id, policy, status, log_index, revoked_log_index) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(c.consent_id, c.patient_id, c.policy, c.status, c.log_index, c.revoked_log_index)
             for c in state.consents.values()],
        )
        db.executemany(
            "INSERT OR REPLACE INTO delegations (patient_id, delegate_id, relationship, start_ms, end_ms, status, "
            "log_index, revoked_log_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(d.patient_id, d.delegate_id, d.relationship, d.start_ms, d.end_ms, d.status, d.log_index,
              d.revoked_log_index) for d in state.delegations.values()],
        )
        db.executemany(
            "INSERT INTO audit_anchors (batch_number, first_sequence, last_sequence, merkle_root, log_index) "
            "VALUES (?, ?, ?, ?, ?)",
            [(a.batch_number, a.first_sequence, a.last_sequence, a.merkle_root, a.log_index) for a in state.anchors],
        )
        db.executemany(
            "INSERT OR REPLACE INTO patient_links (linked_patient_id, network_patient_id, organization_id, log_index, "
            "unlinked_log_index) VALUES (?, ?, ?, ?, ?)",
            [(k.linked_patient_id, k.network_patient_id, k.organization_id, k.log_index, k.unlinked_log_index)
             for k in state.links.values()],
        )

    # --- contract state (StateReader) -----------------------------------------------------------

    def principal(self, principal_id: str) -> Principal | None:
        """A registered principal, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT p.principal_id, kind, public_key, organization_id, specialty, p.log_index, kek_version, "
                "d.log_index FROM principals p LEFT JOIN deactivations d ON d.principal_id = p.principal_id "
                "WHERE p.principal_id = ?",
                (principal_id,),
            ).fetchone()
        return None if row is None else Principal(
            row[0], row[1], bytes(row[2]), row[3], row[4], row[5], row[6], deactivated_log_index=row[7]
        )

    def nonce_used(self, signer_id: str, nonce: bytes) -> bool:
        """True when a committed transaction consumed (signer, nonce)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM nonces WHERE signer_id = ? AND nonce = ?", (signer_id, nonce)
            ).fetchone()
        return row is not None

    @staticmethod
    def _record(row: tuple) -> RecordState:
        return RecordState(row[0], row[1], bytes(row[2]), row[3], bool(row[4]), row[5])

    def record(self, record_id: str) -> RecordState | None:
        """A registered record, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT record_id, patient_id, entry, log_index, erased, erased_log_index FROM records "
                "WHERE record_id = ?",
                (record_id,),
            ).fetchone()
        return None if row is None else self._record(row)

    def patient_records(self, patient_id: str) -> list[RecordState]:
        """A patient's records in log order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record_id, patient_id, entry, log_index, erased, erased_log_index FROM records "
                "WHERE patient_id = ? ORDER BY log_index",
                (patient_id,),
            ).fetchall()
        return [self._record(r) for r in rows]

    def earlier_record_version(self, record_id: str, version: int) -> RecordVersionState | None:
        """A superseded version of a record, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT record_id, version, entry, log_index FROM record_versions WHERE record_id = ? AND version = ?",
                (record_id, version),
            ).fetchone()
        return None if row is None else RecordVersionState(row[0], row[1], bytes(row[2]), row[3])
    def patient_records_page(self, patient_ids: list[str], from_log_index: int, limit: int
                             ) -> list[tuple[RecordState, bytes]]:
        """Up to limit records of these patient ids from from_log_index on, in log order, each with the
        header of the block that committed it (an index range of records_by_patient per id: O(page))."""
        marks = ", ".join("?" * len(patient_ids))
        with self._lock:
            rows = self._db.execute(
                "SELECT r.record_id, r.patient_id, r.entry, r.log_index, r.erased, r.erased_log_index, b.header "
                "FROM records r JOIN log_entries e ON e.log_index = r.log_index JOIN blocks b ON b.height = e.height "
                f"WHERE r.patient_id IN ({marks}) AND r.log_index >= ? ORDER BY r.log_index LIMIT ?",  # noqa: S608
                (*patient_ids, from_log_index, limit),
            ).fetchall()
        return [(self._record(r), bytes(r[6])) for r in rows]

    def consent(self, consent_id: str) -> ConsentState | None:
        """A consent, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT consent_id, patient_id, policy, status, log_index, revoked_log_index FROM consents "
                "WHERE consent_id = ?",
                (consent_id,),
            ).fetchone()
        return None if row is None else ConsentState(row[0], row[1], bytes(row[2]), row[3], row[4], row[5])

    def delegation(self, patient_id: str, delegate_id: str) -> Delegation | None:
        """The patient's delegation to delegate_id (active or revoked), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT patient_id, delegate_id, relationship, start_ms, end_ms, status, log_index, revoked_log_index "
                "FROM delegations WHERE patient_id = ? AND delegate_id = ?",
                (patient_id, delegate_id),
            ).fetchone()
        return None if row is None else Delegation(*row)

    def last_audit_batch(self) -> int | None:
        """Highest anchored batch number, or None."""
        with self._lock:
            row = self._db.execute("SELECT MAX(batch_number) FROM audit_anchors").fetchone()
        return None if row[0] is None else int(row[0])

    _LINK_COLUMNS = "linked_patient_id, network_patient_id, organization_id, log_index, unlinked_log_index"

    def patient_link(self, linked_patient_id: str) -> PatientLink | None:
        """The link of a patient principal (active or unlinked), or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._LINK_COLUMNS} FROM patient_links WHERE linked_patient_id = ?",  # noqa: S608
                (linked_patient_id,),
            ).fetchone()
        return None if row is None else PatientLink(*row)

    def patient_links_to(self, network_patient_id: str) -> list[PatientLink]:
        """Every link (active or unlinked) to network_patient_id, in log order."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._LINK_COLUMNS} FROM patient_links WHERE network_patient_id = ? "  # noqa: S608
                "ORDER BY log_index",
                (network_patient_id,),
            ).fetchall()
        return [PatientLink(*row) for row in rows]
