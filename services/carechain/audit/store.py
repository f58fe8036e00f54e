"""Durable, hash-chained audit event stores, sealed in Merkle batches.

Every event is stored as its deterministic protobuf encoding, chained to its
predecessor::

    event_hash = SHA-256(b"carechain-audit/v1\\n" + previous_hash + event_bytes)

with 32 zero bytes as the previous hash of the first event (sequence 1).

Consecutive events are *sealed* into numbered batches (1, 2, ...; batch n+1
starts right after batch n). A batch's root is the RFC 9162 Merkle tree hash
over its events' chain hashes in sequence order (leaf data = the 32-byte
event hash, so a leaf is ``SHA-256(0x00 || event_hash)``); the audit service
anchors it on the ledger and stores the anchor's log index with the batch.

:meth:`AuditStore.verify` recomputes every link and every sealed batch's root
from the stored bytes, so a changed, deleted or reordered event (or batch) is
detected and named by its sequence.

An event with ``alert`` set creates, in the same transaction, a notification
for its patient and an open item in the privacy officer's review queue; both
ids are derived from the event id, so a retried append creates nothing twice.

:class:`AuditStore` is the seam for backends: :class:`SQLiteAuditStore` (the
embedded default: one SQLite file, WAL, ``synchronous=FULL``) and
:class:`carechain.audit.etcd_store.EtcdAuditStore`; both pass the contract
suite in tests/contract/test_audit_store_contract.py.
"""

from __future__ import annotations

import pathlib
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.core import merkle
from carechain.core.crypto import same, sha256
from carechain.core.errors import FailedPrecondition, IntegrityError, InvalidArgument, NotFound, Unavailable
from carechain.core.files import private_dir
from carechain.runtime.sqlite import connect_durable

AUDIT_HASH_CONTEXT = b"carechain-audit/v1\n"
GENESIS_HASH = bytes(32)
DB_FILE_NAME = "audit.sqlite3"
# Ids of the notification and review item an alert event creates: uuid5(namespace, kind + event id).
_ALERT_NAMESPACE = uuid.UUID("5d0c6f55-3a8e-4d4e-9a53-2f3c0e7b9a61")
Status = audit_pb2.ReviewStatus


def encode_event(event: audit_pb2.AuditEvent) -> bytes:
    """Deterministic encoding of an event (what is hashed and stored)."""
    return event.SerializeToString(deterministic=True)


def chain_hash(previous_hash: bytes, event_bytes: bytes) -> bytes:
    """The hash linking an encoded event to its predecessor."""
    return sha256(AUDIT_HASH_CONTEXT + previous_hash + event_bytes)


def batch_root(event_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 root of a batch: leaves are SHA-256(0x00 || event_hash), in sequence order."""
    return merkle.root([merkle.leaf_hash(h) for h in event_hashes])


@dataclass(frozen=True)
class AuditBatch:
    """A sealed batch of consecutive events and, once anchored, its ledger log index."""

    batch_number: int
    first_sequence: int
    last_sequence: int
    merkle_root: bytes
    sealed_ms: int
    anchor_log_index: int | None = None

    @property
    def size(self) -> int:
        """Number of events in the batch."""
        return self.last_sequence - self.first_sequence + 1

    @property
    def anchored(self) -> bool:
        """True once the batch's root is on the ledger."""
        return self.anchor_log_index is not None

    def contains(self, sequence: int) -> bool:
        """Whether the event with this sequence is in the batch."""
        return self.first_sequence <= sequence <= self.last_sequence


def event_proof(batch: AuditBatch, event_hashes: Sequence[bytes], sequence: int) -> audit_pb2.EventProof:
    """Inclusion proof of the event at sequence in batch, whose event hashes (in order) are given."""
    if len(event_hashes) != batch.size or not batch.contains(sequence):
        raise ValueError("event hashes do not match the batch")
    index = sequence - batch.first_sequence
    return audit_pb2.EventProof(
        sequence=sequence,
        event_hash=event_hashes[index],
        batch_number=batch.batch_number,
        first_sequence=batch.first_sequence,
        last_sequence=batch.last_sequence,
        leaf_index=index,
        tree_size=batch.size,
        audit_path=merkle.MerkleTree([merkle.leaf_hash(h) for h in event_hashes]).inclusion_proof(index),
        batch_root=batch.merkle_root,
        anchored=batch.anchored,
        anchor_log_index=batch.anchor_log_index or 0,
    )


def verify_event_proof(proof: audit_pb2.EventProof, event_hash: bytes | None = None) -> None:
    """Check an EventProof (RFC 9162 section 2.1.3.2); IntegrityError when it does not hold.

    With event_hash (e.g. from an AuditReceipt the caller kept), also check that
    the proof is about that event.
    """
    if event_hash is not None and not same(event_hash, proof.event_hash):
        raise IntegrityError("event proof: it is about another event hash")
    if proof.leaf_index != proof.sequence - proof.first_sequence or \
            proof.tree_size != proof.last_sequence - proof.first_sequence + 1:
        raise IntegrityError("event proof: leaf index or tree size does not match the batch's sequences")
    merkle.verify_inclusion(
        merkle.leaf_hash(proof.event_hash), proof.leaf_index, proof.tree_size, list(proof.audit_path), proof.batch_root
    )


def notification_id(event_id: str) -> str:
    """Id of the notification an alert event creates."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, "notification/" + event_id))


def review_item_id(event_id: str) -> str:
    """Id of the review item an alert event creates."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, "review/" + event_id))


def _purpose_name(purpose: int) -> str:
    return common_pb2.PurposeOfUse.Name(purpose).removeprefix("PURPOSE_OF_USE_") if purpose else "unstated purpose"


def notification_message(event: audit_pb2.AuditEvent) -> str:
    """The patient-facing text of an alert event: who, what, why; identifiers only, no PHI."""
    what = f"your {event.resource_type or 'health'} record {event.record_id}".strip() if event.record_id \
        else "your health data"
    who = event.actor_id + (f" of {event.organization_id}" if event.organization_id else "")
    outcome = audit_pb2.AuditOutcome.Name(event.outcome).removeprefix("AUDIT_OUTCOME_").lower()
    return f"Emergency (break-glass) access to {what} by {who} for {_purpose_name(event.purpose)} ({outcome})."


def new_notification(event: audit_pb2.AuditEvent) -> audit_pb2.Notification:
    """The notification an alert event creates (without the stored event, which readers fill in)."""
    return audit_pb2.Notification(
        notification_id=notification_id(event.event_id), patient_id=event.patient_id, time_ms=event.time_ms,
        message=notification_message(event),
    )


def new_review_item(event: audit_pb2.AuditEvent) -> audit_pb2.ReviewItem:
    """The open review item an alert event creates (without the stored event)."""
    return audit_pb2.ReviewItem(
        item_id=review_item_id(event.event_id), status=Status.REVIEW_STATUS_OPEN, created_ms=event.time_ms
    )


@dataclass(frozen=True)
class AuditVerification:
    """Outcome of re-checking the chain and the batches; first_bad_sequence is 0 when ok."""

    ok: bool
    events_checked: int
    first_bad_sequence: int = 0
    problem: str = ""
    batches_checked: int = 0
    batches_anchored: int = 0


def check_head_and_batches(
    count: int,
    last_hash: bytes,
    head_sequence: int,
    head_hash: bytes,
    batches: Sequence[AuditBatch],
    event_hashes: Sequence[bytes],
) -> AuditVerification:
    """After walking count linked events: the stored head must name the last one (a deleted
    newest event shows here), then the sealed batches must match the events."""
    if head_sequence > count:
        return AuditVerification(
            False, count, count + 1, f"event {count + 1} is missing (the chain head is at event {head_sequence})"
        )
    if head_sequence != count or not same(head_hash, last_hash):
        return AuditVerification(False, count, max(count, 1), f"chain head does not match event {count}")
    return check_batches(batches, event_hashes)


def check_batches(batches: Sequence[AuditBatch], event_hashes: Sequence[bytes]) -> AuditVerification:
    """Check that batches tile the verified chain from event 1 and that each root matches its events.

    event_hashes are the verified chain's hashes (index 0 = sequence 1).
    """
    count = len(event_hashes)
    expected_first = 1
    for number, batch in enumerate(batches, start=1):
        checked = number - 1
        bad = batch.first_sequence or expected_first
        if batch.batch_number != number:
            return AuditVerification(False, count, expected_first, f"batch {number} is missing", checked)
        if batch.first_sequence != expected_first or batch.last_sequence < batch.first_sequence:
            return AuditVerification(
                False, count, bad, f"batch {number} does not continue batch {number - 1}", checked
            )
        if batch.last_sequence > count:
            return AuditVerification(
                False, count, count + 1, f"batch {number} covers events missing from the chain", checked
            )
        root = batch_root(event_hashes[batch.first_sequence - 1 : batch.last_sequence])
        if not same(root, batch.merkle_root):
            return AuditVerification(
                False, count, batch.first_sequence, f"batch {number} root does not match its events", checked
            )
        expected_first = batch.last_sequence + 1
    return AuditVerification(True, count, 0, "", len(batches), sum(1 for b in batches if b.anchored))


class AuditStore(Protocol):
    """What the audit service needs from a store."""

    def append(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        """Store event durably and return (sequence, event_hash); the same event_id gives the same receipt.

        An alert event also creates its notification and review item, atomically.
        """
        ...

    def history(self, patient_id: str, since_ms: int = 0, until_ms: int = 0) -> list[audit_pb2.StoredAuditEvent]:
        """A patient's events with since_ms <= time < until_ms (0 = open), newest first."""
        ...

    def head(self) -> tuple[int, bytes]:
        """(sequence, hash) of the newest event; (0, GENESIS_HASH) when empty."""
        ...

    def events_after(self, after_sequence: int, limit: int) -> list[audit_pb2.StoredAuditEvent]:
        """Up to limit events with sequence > after_sequence, in sequence order."""
        ...

    def seal_batch(self, last_sequence: int, sealed_ms: int) -> AuditBatch | None:
        """Seal every unsealed event up to last_sequence as the next batch; None when they are already sealed."""
        ...

    def batches(self, after_number: int = 0, limit: int = 0) -> list[AuditBatch]:
        """Sealed batches with batch_number > after_number, ascending (limit 0 = all)."""
        ...

    def last_batch(self) -> AuditBatch | None:
        """The newest sealed batch, or None."""
        ...

    def batch_containing(self, sequence: int) -> AuditBatch | None:
        """The sealed batch holding the event with this sequence, or None (not sealed yet)."""
        ...

    def record_anchor(self, batch_number: int, log_index: int) -> None:
        """Store the ledger log index of a batch's AnchorAuditBatch transaction."""
        ...

    def notifications(self, patient_id: str) -> list[audit_pb2.Notification]:
        """A patient's notifications, newest first, each with its stored event."""
        ...

    def review_items(self, status: int = 0) -> list[audit_pb2.ReviewItem]:
        """Review items with this ReviewStatus (0 = any), oldest first, each with its stored event."""
        ...

    def review_item(self, item_id: str) -> audit_pb2.ReviewItem | None:
        """One review item, or None."""
        ...

    def resolve_review_item(
        self, item_id: str, reviewer_id: str, note: str, resolved_ms: int, resolution_sequence: int
    ) -> audit_pb2.ReviewItem:
        """Close an open item; NotFound if unknown, FailedPrecondition if already resolved."""
        ...

    def verify(self) -> AuditVerification:
        """Recompute every link of the chain and every sealed batch's root."""
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
CREATE TABLE IF NOT EXISTS audit_batches (
    batch_number     INTEGER PRIMARY KEY,
    first_sequence   INTEGER NOT NULL,
    last_sequence    INTEGER NOT NULL,
    merkle_root      BLOB NOT NULL,
    sealed_ms        INTEGER NOT NULL,
    anchor_log_index INTEGER
);
CREATE TABLE IF NOT EXISTS audit_notifications (
    notification_id TEXT PRIMARY KEY,
    patient_id      TEXT NOT NULL,
    time_ms         INTEGER NOT NULL,
    sequence        INTEGER NOT NULL,
    message         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_notifications_by_patient ON audit_notifications (patient_id, time_ms);
CREATE TABLE IF NOT EXISTS audit_review_items (
    item_id             TEXT PRIMARY KEY,
    sequence            INTEGER NOT NULL UNIQUE,
    status              INTEGER NOT NULL,
    created_ms          INTEGER NOT NULL,
    reviewer_id         TEXT NOT NULL DEFAULT '',
    note                TEXT NOT NULL DEFAULT '',
    resolved_ms         INTEGER NOT NULL DEFAULT 0,
    resolution_sequence INTEGER NOT NULL DEFAULT 0
);
"""

_BATCH_COLUMNS = "batch_number, first_sequence, last_sequence, merkle_root, sealed_ms, anchor_log_index"
_REVIEW_COLUMNS = (
    "r.item_id, r.status, r.created_ms, r.reviewer_id, r.note, r.resolved_ms, r.resolution_sequence,"
    " e.sequence, e.event, e.event_hash"
)


def _batch(row: Sequence[object]) -> AuditBatch:
    number, first, last, root, sealed_ms, anchor = row
    return AuditBatch(int(number), int(first), int(last), bytes(root), int(sealed_ms),  # type: ignore[arg-type]
                      None if anchor is None else int(anchor))  # type: ignore[arg-type]


def _stored(sequence: object, event: object, event_hash: object) -> audit_pb2.StoredAuditEvent:
    return audit_pb2.StoredAuditEvent(
        event=audit_pb2.AuditEvent.FromString(bytes(event)),  # type: ignore[arg-type]
        sequence=int(sequence), event_hash=bytes(event_hash),  # type: ignore[arg-type, call-overload]
    )


def _review(row: Sequence[object]) -> audit_pb2.ReviewItem:
    item_id, status, created, reviewer, note, resolved, resolution, sequence, event, event_hash = row
    return audit_pb2.ReviewItem(
        item_id=str(item_id), status=int(status), created_ms=int(created),  # type: ignore[arg-type, call-overload]
        reviewer_id=str(reviewer), note=str(note), resolved_ms=int(resolved),  # type: ignore[call-overload]
        resolution_sequence=int(resolution), event=_stored(sequence, event, event_hash),  # type: ignore[call-overload]
    )


class SQLiteAuditStore:
    """Audit chain in one SQLite file under directory; appends are serialised and durable on return."""

    def __init__(self, directory: pathlib.Path) -> None:
        directory = pathlib.Path(directory)
        private_dir(directory)
        self.path = directory / DB_FILE_NAME
        self._lock = threading.Lock()
        try:
            self._db = connect_durable(self.path)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise Unavailable("audit store", f"cannot open {self.path.name}: {exc}") from exc

    def _read(self, what: str, query: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(query, args).fetchall()
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot read {what}: {exc}") from exc

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
                    if event.alert:
                        note = new_notification(event)
                        self._db.execute(
                            "INSERT INTO audit_notifications (notification_id, patient_id, time_ms, sequence, message)"
                            " VALUES (?, ?, ?, ?, ?)",
                            (note.notification_id, note.patient_id, note.time_ms, sequence, note.message),
                        )
                        item = new_review_item(event)
                        self._db.execute(
                            "INSERT INTO audit_review_items (item_id, sequence, status, created_ms)"
                            " VALUES (?, ?, ?, ?)",
                            (item.item_id, sequence, item.status, item.created_ms),
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
        return [_stored(*row) for row in self._read("history", query, args)]

    def head(self) -> tuple[int, bytes]:
        """(sequence, hash) of the newest event; (0, GENESIS_HASH) when empty."""
        rows = self._read("chain head", "SELECT sequence, event_hash FROM audit_head WHERE id = 1")
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else (0, GENESIS_HASH)  # type: ignore[call-overload]

    def events_after(self, after_sequence: int, limit: int) -> list[audit_pb2.StoredAuditEvent]:
        """Up to limit events with sequence > after_sequence, in sequence order."""
        rows = self._read(
            "events", "SELECT sequence, event, event_hash FROM audit_events WHERE sequence > ?"
            " ORDER BY sequence LIMIT ?", (after_sequence, limit),
        )
        return [_stored(*row) for row in rows]

    def seal_batch(self, last_sequence: int, sealed_ms: int) -> AuditBatch | None:
        """Seal every unsealed event up to last_sequence as the next batch; None when they are already sealed."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    last = self._db.execute(
                        f"SELECT {_BATCH_COLUMNS} FROM audit_batches ORDER BY batch_number DESC LIMIT 1"
                    ).fetchone()
                    number, first = (int(last[0]) + 1, int(last[2]) + 1) if last else (1, 1)
                    hashes = [
                        bytes(row[0]) for row in self._db.execute(
                            "SELECT event_hash FROM audit_events WHERE sequence BETWEEN ? AND ? ORDER BY sequence",
                            (first, last_sequence),
                        )
                    ]
                    if last_sequence < first:
                        self._db.execute("ROLLBACK")
                        return None
                    if len(hashes) != last_sequence - first + 1:
                        raise InvalidArgument("last_sequence", f"events {first}..{last_sequence} are not all stored")
                    batch = AuditBatch(number, first, last_sequence, batch_root(hashes), sealed_ms)
                    self._db.execute(
                        f"INSERT INTO audit_batches ({_BATCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)",
                        (batch.batch_number, batch.first_sequence, batch.last_sequence, batch.merkle_root,
                         batch.sealed_ms),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot seal a batch: {exc}") from exc
        return batch

    def batches(self, after_number: int = 0, limit: int = 0) -> list[AuditBatch]:
        """Sealed batches with batch_number > after_number, ascending (limit 0 = all)."""
        rows = self._read(
            "batches", f"SELECT {_BATCH_COLUMNS} FROM audit_batches WHERE batch_number > ?"
            " ORDER BY batch_number LIMIT ?", (after_number, limit or -1),
        )
        return [_batch(row) for row in rows]

    def last_batch(self) -> AuditBatch | None:
        """The newest sealed batch, or None."""
        rows = self._read("batches", f"SELECT {_BATCH_COLUMNS} FROM audit_batches ORDER BY batch_number DESC LIMIT 1")
        return _batch(rows[0]) if rows else None

    def batch_containing(self, sequence: int) -> AuditBatch | None:
        """The sealed batch holding the event with this sequence, or None (not sealed yet)."""
        rows = self._read(
            "batches", f"SELECT {_BATCH_COLUMNS} FROM audit_batches WHERE first_sequence <= ? AND last_sequence >= ?",
            (sequence, sequence),
        )
        return _batch(rows[0]) if rows else None

    def record_anchor(self, batch_number: int, log_index: int) -> None:
        """Store the ledger log index of a batch's AnchorAuditBatch transaction."""
        with self._lock:
            try:
                updated = self._db.execute(
                    "UPDATE audit_batches SET anchor_log_index = ? WHERE batch_number = ?", (log_index, batch_number)
                ).rowcount
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot record an anchor: {exc}") from exc
        if not updated:
            raise NotFound(f"audit batch {batch_number} is not sealed")

    def notifications(self, patient_id: str) -> list[audit_pb2.Notification]:
        """A patient's notifications, newest first, each with its stored event."""
        rows = self._read(
            "notifications",
            "SELECT n.notification_id, n.patient_id, n.time_ms, n.message, e.sequence, e.event, e.event_hash"
            " FROM audit_notifications n JOIN audit_events e ON e.sequence = n.sequence"
            " WHERE n.patient_id = ? ORDER BY n.time_ms DESC, n.sequence DESC", (patient_id,),
        )
        return [
            audit_pb2.Notification(notification_id=str(nid), patient_id=str(pid), time_ms=int(t),  # type: ignore
                                   message=str(message), event=_stored(seq, event, h))
            for nid, pid, t, message, seq, event, h in rows
        ]

    def review_items(self, status: int = 0) -> list[audit_pb2.ReviewItem]:
        """Review items with this ReviewStatus (0 = any), oldest first, each with its stored event."""
        query = f"SELECT {_REVIEW_COLUMNS} FROM audit_review_items r JOIN audit_events e ON e.sequence = r.sequence"
        args: list[object] = []
        if status:
            query += " WHERE r.status = ?"
            args.append(status)
        return [_review(row) for row in self._read("review items", query + " ORDER BY r.sequence", args)]

    def review_item(self, item_id: str) -> audit_pb2.ReviewItem | None:
        """One review item, or None."""
        rows = self._read(
            "review items", f"SELECT {_REVIEW_COLUMNS} FROM audit_review_items r"
            " JOIN audit_events e ON e.sequence = r.sequence WHERE r.item_id = ?", (item_id,),
        )
        return _review(rows[0]) if rows else None

    def resolve_review_item(
        self, item_id: str, reviewer_id: str, note: str, resolved_ms: int, resolution_sequence: int
    ) -> audit_pb2.ReviewItem:
        """Close an open item; NotFound if unknown, FailedPrecondition if already resolved."""
        with self._lock:
            try:
                updated = self._db.execute(
                    "UPDATE audit_review_items SET status = ?, reviewer_id = ?, note = ?, resolved_ms = ?,"
                    " resolution_sequence = ? WHERE item_id = ? AND status = ?",
                    (Status.REVIEW_STATUS_RESOLVED, reviewer_id, note, resolved_ms, resolution_sequence, item_id,
                     Status.REVIEW_STATUS_OPEN),
                ).rowcount
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot resolve a review item: {exc}") from exc
        item = self.review_item(item_id)
        if item is None:
            raise NotFound(f"review item {item_id} does not exist")
        if not updated and item.resolution_sequence != resolution_sequence:
            raise FailedPrecondition(f"review item {item_id} is already resolved")
        return item

    def verify(self) -> AuditVerification:
        """Recompute every link and every batch root from the stored bytes; name the first bad sequence."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT sequence, event_id, patient_id, time_ms, event, event_hash"
                    " FROM audit_events ORDER BY sequence"
                ).fetchall()
                head = self._db.execute("SELECT sequence, event_hash FROM audit_head WHERE id = 1").fetchone()
                batches = [
                    _batch(row)
                    for row in self._db.execute(f"SELECT {_BATCH_COLUMNS} FROM audit_batches ORDER BY batch_number")
                ]
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot read chain: {exc}") from exc
        previous = GENESIS_HASH
        expected = 1
        hashes: list[bytes] = []
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
            hashes.append(previous)
            expected += 1
        head_sequence, head_hash = (int(head[0]), bytes(head[1])) if head else (0, GENESIS_HASH)
        return check_head_and_batches(expected - 1, previous, head_sequence, head_hash, batches, hashes)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
