"""Durable, hash-chained audit event stores.

Every event is stored as its deterministic protobuf encoding, chained to its
predecessor::

    event_hash = SHA-256(b"carechain-audit/v1\\n" + previous_hash + event_bytes)

with 32 zero bytes as the previous hash of the first event (sequence 1).
:meth:`AuditStore.verify` recomputes every link from the stored bytes, so a
changed, deleted or reordered event is detected and named by its sequence.

:class:`AuditStore` is the seam for a production backend; the embedded default
is :class:`SQLiteAuditStore` (one SQLite file, WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from dataclasses import dataclass
from typing import Protocol

from carechain.audit.v1 import audit_pb2
from carechain.crypto import same, sha256
from carechain.errors import Unavailable
from carechain.sqlite import connect_durable

AUDIT_HASH_CONTEXT = b"carechain-audit/v1\n"
GENESIS_HASH = bytes(32)
DB_FILE_NAME = "audit.sqlite3"


def encode_event(event: audit_pb2.AuditEvent) -> bytes:
    """Deterministic encoding of an event (what is hashed and stored)."""
    return event.SerializeToString(deterministic=True)


def chain_hash(previous_hash: bytes, event_bytes: bytes) -> bytes:
    """The hash linking an encoded event to its predecessor."""
    return sha256(AUDIT_HASH_CONTEXT + previous_hash + event_bytes)


@dataclass(frozen=True)
class AuditVerification:
    """Outcome of re-checking the chain; first_bad_sequence is 0 when ok."""

    ok: bool
    events_checked: int
    first_bad_sequence: int = 0
    problem: str = ""


class AuditStore(Protocol):
    """What the audit service needs from a store."""

    def append(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        """Store event durably and return (sequence, event_hash); the same event_id gives the same receipt."""
        ...

    def history(self, patient_id: str, since_ms: int = 0, until_ms: int = 0) -> list[audit_pb2.StoredAuditEvent]:
        """A patient's events with since_ms <= time < until_ms (0 = open), newest first."""
        ...

    def verify(self) -> AuditVerification:
        """Recompute every link of the chain."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    sequence      INTEGER PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,
    patient_id    TEXT NOT NULL,
    time_ms       INTEGER NOT NULL,
    event         BLOB NOT NULL,
    event_hash    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_by_patient ON audit_events (patient_id, time_ms);
-- The chain head, updated in the same transaction as every append, so that
-- deleting the newest events is detected too.
CREATE TABLE IF NOT EXISTS audit_head (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    sequence      INTEGER NOT NULL,
    event_hash    BLOB NOT NULL
);
"""


class SQLiteAuditStore:
    """Audit chain in one SQLite file under directory; appends are serialised and durable on return."""

    def __init__(self, directory: pathlib.Path) -> None:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DB_FILE_NAME
        self._lock = threading.Lock()
        try:
            self._db = connect_durable(self.path)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise Unavailable("audit store", f"cannot open {self.path.name}: {exc}") from exc

    def append(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        """Store event durably and return (sequence, event_hash); the same event_id gives the same receipt."""
        event_bytes = encode_event(event)
        with self._lock:
            try:
                existing = self._db.execute(
                    "SELECT sequence, event_hash FROM audit_events WHERE event_id = ?", (event.event_id,)
                ).fetchone()
                if existing is not None:
                    return int(existing[0]), bytes(existing[1])
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    head = self._db.execute("SELECT sequence, event_hash FROM audit_head WHERE id = 1").fetchone()
                    sequence, previous = (int(head[0]) + 1, bytes(head[1])) if head else (1, GENESIS_HASH)
                    event_hash = chain_hash(previous, event_bytes)
                    self._db.execute(
                        "INSERT INTO audit_events (sequence, event_id, patient_id, time_ms, event, event_hash)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (sequence, event.event_id, event.patient_id, event.time_ms, event_bytes, event_hash),
                    )
                    self._db.execute(
                        "INSERT INTO audit_head (id, sequence, event_hash) VALUES (1, ?, ?)"
                        " ON CONFLICT (id) DO UPDATE SET sequence = excluded.sequence,"
                        " event_hash = excluded.event_hash",
                        (sequence, event_hash),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot write event: {exc}") from exc
        return sequence, event_hash

    def history(self, patient_id: str, since_ms: int = 0, until_ms: int = 0) -> list[audit_pb2.StoredAuditEvent]:
        """A patient's events with since_ms <= time < until_ms (0 = open), newest first."""
        query = "SELECT sequence, event, event_hash FROM audit_events WHERE patient_id = ?"
        args: list[object] = [patient_id]
        if since_ms:
            query += " AND time_ms >= ?"
            args.append(since_ms)
        if until_ms:
            query += " AND time_ms < ?"
            args.append(until_ms)
        query += " ORDER BY time_ms DESC, sequence DESC"
        with self._lock:
            try:
                rows = self._db.execute(query, args).fetchall()
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot read history: {exc}") from exc
        return [
            audit_pb2.StoredAuditEvent(
                event=audit_pb2.AuditEvent.FromString(bytes(event)), sequence=int(sequence), event_hash=bytes(h)
            )
            for sequence, event, h in rows
        ]

    def verify(self) -> AuditVerification:
        """Recompute every link from the stored event bytes; name the first bad sequence."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT sequence, event_id, patient_id, time_ms, event, event_hash"
                    " FROM audit_events ORDER BY sequence"
                ).fetchall()
                head = self._db.execute("SELECT sequence, event_hash FROM audit_head WHERE id = 1").fetchone()
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot read chain: {exc}") from exc
        previous = GENESIS_HASH
        expected = 1
        for sequence, event_id, patient_id, time_ms, event_bytes, stored_hash in rows:
            checked = expected - 1
            if sequence != expected:
                return AuditVerification(False, checked, expected, f"event {expected} is missing")
            event_bytes = bytes(event_bytes)
            if not same(chain_hash(previous, event_bytes), bytes(stored_hash)):
                return AuditVerification(
                    False, checked, sequence, f"event {sequence} does not match its chain hash (changed or moved)"
                )
            try:
                event = audit_pb2.AuditEvent.FromString(event_bytes)
            except Exception:  # noqa: BLE001 - any decode failure is corruption
                return AuditVerification(False, checked, sequence, f"event {sequence} cannot be decoded")
            if (event.event_id, event.patient_id, event.time_ms) != (event_id, patient_id, time_ms):
                return AuditVerification(
                    False, checked, sequence, f"event {sequence} index columns differ from the hashed event"
                )
            previous = bytes(stored_hash)
            expected += 1
        count = expected - 1
        head_sequence, head_hash = (int(head[0]), bytes(head[1])) if head else (0, GENESIS_HASH)
        if head_sequence > count:
            return AuditVerification(
                False, count, count + 1, f"event {count + 1} is missing (the chain head is at event {head_sequence})"
            )
        if head_sequence != count or not same(head_hash, previous):
            return AuditVerification(False, count, max(count, 1), f"chain head does not match event {count}")
        return AuditVerification(True, count)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
