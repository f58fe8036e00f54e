"""The embedded audit store: the hash chain, batches, notifications and review items in one SQLite file.

One file (:data:`DB_FILE_NAME`) in WAL mode with ``synchronous=FULL``: an
append returns once its transaction (event, chain head and, for an alert, the
notification and review item) is durable. :meth:`SQLiteAuditStore.append_batch`
writes many events in one transaction and one fsync (group commit); listings
are index ranges (O(page)). Fills :class:`carechain.audit.store.AuditStore`.
"""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from collections.abc import Sequence

from carechain.audit.alerts import Status, new_notification, new_review_item
from carechain.audit.hashchain import (
    GENESIS,
    GENESIS_HASH,
    AuditBatch,
    AuditVerification,
    ChainCheckpoint,
    ChainWalk,
    batch_root,
    chain_hash,
    check_start,
    encode_event,
)
from carechain.audit.store import Cursor
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from carechain.core.files import private_dir
from carechain.runtime.sqlite import connect_durable

DB_FILE_NAME = "audit.sqlite3"

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
-- Pages of notifications (newest first) and of review items by status (oldest first) are index ranges.
CREATE INDEX IF NOT EXISTS audit_notifications_page ON audit_notifications (patient_id, time_ms, sequence);
CREATE INDEX IF NOT EXISTS audit_review_items_by_status ON audit_review_items (status, sequence);
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

    shared_writers = False  # one process owns the file

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
        return self.append_batch([event])[0]

    def append_batch(self, events: Sequence[audit_pb2.AuditEvent]) -> list[tuple[int, bytes]]:
        """Store events in order in one transaction, one fsync (group commit); one receipt each.

        An event_id already stored, or earlier in the batch, gives that event's receipt. All or nothing.
        """
        if not events:
            return []
        encoded = [encode_event(e) for e in events]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    receipts = self._append_locked(events, encoded)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot write events: {exc}") from exc
        return receipts

    def _append_locked(self, events: Sequence[audit_pb2.AuditEvent], encoded: list[bytes]) -> list[tuple[int, bytes]]:
        ids = list({e.event_id for e in events})
        known: dict[str, tuple[int, bytes]] = {}
        for start in range(0, len(ids), 500):  # SQLite allows at most 999 parameters by default
            chunk = ids[start:start + 500]
            for event_id, sequence, event_hash in self._db.execute(
                f"SELECT event_id, sequence, event_hash FROM audit_events WHERE event_id IN"
                f" ({','.join('?' * len(chunk))})", chunk,
            ):
                known[str(event_id)] = (int(sequence), bytes(event_hash))
        head = self._db.execute("SELECT sequence, event_hash FROM audit_head WHERE id = 1").fetchone()
        sequence, previous = (int(head[0]), bytes(head[1])) if head else (0, GENESIS_HASH)
        receipts: list[tuple[int, bytes]] = []
        rows, alerts = [], []
        for event, event_bytes in zip(events, encoded, strict=True):
            if event.event_id in known:
                receipts.append(known[event.event_id])
                continue
            sequence, previous = sequence + 1, chain_hash(previous, event_bytes)
            known[event.event_id] = (sequence, previous)
            receipts.append((sequence, previous))
            rows.append((sequence, event.event_id, event.patient_id, event.time_ms, event_bytes, previous))
            if event.alert:
                alerts.append((event, sequence))
        if not rows:
            return receipts
        self._db.executemany(
            "INSERT INTO audit_events (sequence, event_id, patient_id, time_ms, event, event_hash)"
            " VALUES (?, ?, ?, ?, ?, ?)", rows,
        )
        self._db.execute(
            "INSERT INTO audit_head (id, sequence, event_hash) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET sequence = excluded.sequence, event_hash = excluded.event_hash",
            (sequence, previous),
        )
        for event, event_sequence in alerts:
            note = new_notification(event)
            self._db.execute(
                "INSERT INTO audit_notifications (notification_id, patient_id, time_ms, sequence, message)"
                " VALUES (?, ?, ?, ?, ?)",
                (note.notification_id, note.patient_id, note.time_ms, event_sequence, note.message),
            )
            item = new_review_item(event)
            self._db.execute(
                "INSERT INTO audit_review_items (item_id, sequence, status, created_ms) VALUES (?, ?, ?, ?)",
                (item.item_id, event_sequence, item.status, item.created_ms),
            )
        return receipts

    def history(
        self, patient_id: str, since_ms: int = 0, until_ms: int = 0, limit: int = 0, before: Cursor | None = None
    ) -> list[audit_pb2.StoredAuditEvent]:
        """A patient's events with since_ms <= time < until_ms (0 = open), newest first; at most limit (0 = all),
        older than the cursor before. One range of the (patient_id, time_ms, sequence) index."""
        query = "SELECT sequence, event, event_hash FROM audit_events WHERE patient_id = ?"
        args: list[object] = [patient_id]
        if since_ms:
            query += " AND time_ms >= ?"
            args.append(since_ms)
        if until_ms:
            query += " AND time_ms < ?"
            args.append(until_ms)
        if before is not None:
            query += " AND (time_ms, sequence) < (?, ?)"
            args += list(before)
        query += " ORDER BY time_ms DESC, sequence DESC LIMIT ?"
        args.append(limit or -1)
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

    def notifications(
        self, patient_id: str, limit: int = 0, before: Cursor | None = None
    ) -> list[audit_pb2.Notification]:
        """A patient's notifications, newest first, each with its stored event; at most limit (0 = all), older
        than the cursor before."""
        query = ("SELECT n.notification_id, n.patient_id, n.time_ms, n.message, e.sequence, e.event, e.event_hash"
                 " FROM audit_notifications n JOIN audit_events e ON e.sequence = n.sequence WHERE n.patient_id = ?")
        args: list[object] = [patient_id]
        if before is not None:
            query += " AND (n.time_ms, n.sequence) < (?, ?)"
            args += list(before)
        rows = self._read("notifications", query + " ORDER BY n.time_ms DESC, n.sequence DESC LIMIT ?",
                          [*args, limit or -1])
        return [
            audit_pb2.Notification(notification_id=str(nid), patient_id=str(pid), time_ms=int(t),  # type: ignore
                                   message=str(message), event=_stored(seq, event, h))
            for nid, pid, t, message, seq, event, h in rows
        ]

    def review_items(self, status: int = 0, limit: int = 0, after_sequence: int = 0) -> list[audit_pb2.ReviewItem]:
        """Review items with this ReviewStatus (0 = any), oldest first, each with its stored event; at most limit
        (0 = all) of alert events after after_sequence (an index range: by status, then sequence)."""
        query = (f"SELECT {_REVIEW_COLUMNS} FROM audit_review_items r JOIN audit_events e ON e.sequence = r.sequence"
                 " WHERE r.sequence > ?")
        args: list[object] = [after_sequence]
        if status:
            query += " AND r.status = ?"
            args.append(status)
        return [_review(row) for row in self._read("review items", query + " ORDER BY r.sequence LIMIT ?",
                                                   [*args, limit or -1])]

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

    def verify(self, checkpoint: ChainCheckpoint | None = None) -> AuditVerification:
        """Recompute every link and every batch root from the stored bytes; name the first bad sequence.

        From a trusted checkpoint: only the events and batches after it (O(new)), once its event and batch
        are found unchanged.
        """
        start = checkpoint or GENESIS
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT sequence, event_id, patient_id, time_ms, event, event_hash"
                    " FROM audit_events WHERE sequence > ? ORDER BY sequence", (start.sequence,)
                ).fetchall()
                head = self._db.execute("SELECT sequence, event_hash FROM audit_head WHERE id = 1").fetchone()
                batches = [
                    _batch(row) for row in self._db.execute(
                        f"SELECT {_BATCH_COLUMNS} FROM audit_batches WHERE batch_number > ? ORDER BY batch_number",
                        (start.batch_number,))
                ]
                start_hash = self._db.execute(
                    "SELECT event_hash FROM audit_events WHERE sequence = ?", (start.sequence,)).fetchone()
                start_batch = self._db.execute(
                    f"SELECT {_BATCH_COLUMNS} FROM audit_batches WHERE batch_number = ?", (start.batch_number,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise Unavailable("audit store", f"cannot read chain: {exc}") from exc
        moved = check_start(start, None if start_hash is None else bytes(start_hash[0]),
                            None if start_batch is None else _batch(start_batch))
        if moved is not None:
            return moved
        walk = ChainWalk(start)
        for sequence, event_id, patient_id, time_ms, event_bytes, stored_hash in rows:
            checked = walk.check(int(sequence), bytes(stored_hash), bytes(event_bytes))
            if isinstance(checked, AuditVerification):
                return checked
            if (checked.event_id, checked.patient_id, checked.time_ms) != (event_id, patient_id, time_ms):
                return walk.problem(sequence, f"event {sequence} index columns differ from the hashed event")
            walk.accept(bytes(stored_hash))
        head_sequence, head_hash = (int(head[0]), bytes(head[1])) if head else (0, GENESIS_HASH)
        return walk.finish(head_sequence, head_hash, batches)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
