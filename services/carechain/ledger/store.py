"""The chain store: blocks, the log's leaves and the contract state in one SQLite file.

``<data_dir>/ledger.db`` (WAL, ``synchronous=FULL``) holds:

- ``blocks``: height, header bytes, SHA-256 of the header, the encoded Block
  (header, transactions, results, validator signatures). The encoded Block is
  the record of truth; everything else is derived and re-checked by
  :mod:`carechain.ledger.verify`.
- ``log_entries``: one row per transaction in log order: where it is (height,
  index), its bytes (encoded Transaction = RFC 9162 leaf data), its leaf hash
  and its verdict; serves ListTransactions and Merkle proofs.
- contract state: ``principals``, ``nonces`` (per signer), ``records`` (with
  tombstones), ``consents`` (with status), ``audit_anchors``.
- ``meta``: chain id and the orderer position.

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

from carechain.ledger.state import (
    AuditAnchor,
    ConsentState,
    PendingState,
    Principal,
    RecordState,
)
from carechain.sqlite import connect_durable

DB_FILE = "ledger.db"
SCHEMA_VERSION = "1"

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
CREATE TABLE IF NOT EXISTS consents (
    consent_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    policy BLOB NOT NULL,
    status TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    revoked_log_index INTEGER
);
CREATE TABLE IF NOT EXISTS audit_anchors (
    batch_number INTEGER PRIMARY KEY,
    first_sequence INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    merkle_root BLOB NOT NULL,
    log_index INTEGER NOT NULL
);
"""


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


class LedgerStore:
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
    ) -> None:
        """Write a block, its log entries, its state writes and meta values in one transaction."""
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
                self._apply(state)
                for key, value in (meta or {}).items():
                    self._set_meta(key, value)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

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
            "INSERT OR REPLACE INTO consents (consent_id, patient_id, policy, status, log_index, revoked_log_index) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(c.consent_id, c.patient_id, c.policy, c.status, c.log_index, c.revoked_log_index)
             for c in state.consents.values()],
        )
        db.executemany(
            "INSERT INTO audit_anchors (batch_number, first_sequence, last_sequence, merkle_root, log_index) "
            "VALUES (?, ?, ?, ?, ?)",
            [(a.batch_number, a.first_sequence, a.last_sequence, a.merkle_root, a.log_index) for a in state.anchors],
        )

    # --- contract state (StateReader) -----------------------------------------------------------

    def principal(self, principal_id: str) -> Principal | None:
        """A registered principal, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT principal_id, kind, public_key, organization_id, specialty, log_index, kek_version "
                "FROM principals WHERE principal_id = ?",
                (principal_id,),
            ).fetchone()
        return None if row is None else Principal(row[0], row[1], bytes(row[2]), row[3], row[4], row[5], row[6])

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

    def consent(self, consent_id: str) -> ConsentState | None:
        """A consent, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT consent_id, patient_id, policy, status, log_index, revoked_log_index FROM consents "
                "WHERE consent_id = ?",
                (consent_id,),
            ).fetchone()
        return None if row is None else ConsentState(row[0], row[1], bytes(row[2]), row[3], row[4], row[5])

    def last_audit_batch(self) -> int | None:
        """Highest anchored batch number, or None."""
        with self._lock:
            row = self._db.execute("SELECT MAX(batch_number) FROM audit_anchors").fetchone()
        return None if row[0] is None else int(row[0])

    def audit_anchor(self, batch_number: int) -> AuditAnchor | None:
        """An anchored audit batch, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT batch_number, first_sequence, last_sequence, merkle_root, log_index FROM audit_anchors "
                "WHERE batch_number = ?",
                (batch_number,),
            ).fetchone()
        return None if row is None else AuditAnchor(row[0], row[1], row[2], bytes(row[3]), row[4])
