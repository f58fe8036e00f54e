"""The seam for audit event stores: :class:`AuditStore`.

A store keeps the hash chain and the sealed batches of :mod:`carechain.audit.hashchain`
and, for alert events, the notifications and review items of
:mod:`carechain.audit.alerts`, written in the same transaction as the event.
:meth:`AuditStore.verify` recomputes every link and every sealed batch's root
from the stored bytes, so a changed, deleted or reordered event (or batch) is
detected and named by its sequence.

Backends: :class:`carechain.audit.sqlite_store.SQLiteAuditStore` (the embedded
default: one SQLite file, WAL, ``synchronous=FULL``) and
:class:`carechain.audit.etcd_store.EtcdAuditStore`; both pass the contract suite
in tests/contract/test_audit_store_contract.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from carechain.audit.hashchain import AuditBatch, AuditVerification, ChainCheckpoint
from carechain.audit.v1 import audit_pb2

#: A position in a newest-first listing: (time_ms, sequence) of the last entry of the previous page.
Cursor = tuple[int, int]


class AuditStore(Protocol):
    """What the audit service needs from a store."""

    #: Whether other processes may append to the same trail (following streams then poll the store).
    shared_writers: bool

    def append(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        """Store event durably and return (sequence, event_hash); the same event_id gives the same receipt.

        An alert event also creates its notification and review item, atomically.
        """
        ...

    def append_batch(self, events: Sequence[audit_pb2.AuditEvent]) -> list[tuple[int, bytes]]:
        """Store events durably, in order, in one transaction (group commit); one receipt each.

        Each event is chained and indexed exactly as :meth:`append` would; an event_id already stored
        (or earlier in the same batch) gives that event's receipt. All or nothing.
        """
        ...

    def history(
        self, patient_id: str, since_ms: int = 0, until_ms: int = 0, limit: int = 0, before: Cursor | None = None
    ) -> list[audit_pb2.StoredAuditEvent]:
        """A patient's events with since_ms <= time < until_ms (0 = open), newest first.

        At most limit (0 = all); with before, only events older than that (time_ms, sequence) cursor.
        Costs O(limit), not O(the patient's history): an index range read.
        """
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

    def notifications(
        self, patient_id: str, limit: int = 0, before: Cursor | None = None
    ) -> list[audit_pb2.Notification]:
        """A patient's notifications, newest first, each with its stored event.

        At most limit (0 = all); with before, only those older than that (time_ms, sequence) cursor.
        """
        ...

    def review_items(self, status: int = 0, limit: int = 0, after_sequence: int = 0) -> list[audit_pb2.ReviewItem]:
        """Review items with this ReviewStatus (0 = any), oldest first, each with its stored event.

        At most limit (0 = all), of alert events with a sequence greater than after_sequence.
        """
        ...

    def review_item(self, item_id: str) -> audit_pb2.ReviewItem | None:
        """One review item, or None."""
        ...

    def resolve_review_item(
        self, item_id: str, reviewer_id: str, note: str, resolved_ms: int, resolution_sequence: int
    ) -> audit_pb2.ReviewItem:
        """Close an open item; NotFound if unknown, FailedPrecondition if already resolved."""
        ...

    def verify(self, checkpoint: ChainCheckpoint | None = None) -> AuditVerification:
        """Recompute every link of the chain and every sealed batch's root.

        With a trusted checkpoint (from an earlier verification), only the events and batches after it
        are re-checked, chained from its hash, once its event and batch are found unchanged (O(new)).
        """
        ...

    def close(self) -> None:
        """Release resources."""
        ...
