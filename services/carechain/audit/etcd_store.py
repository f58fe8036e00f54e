"""The audit trail on etcd: the same hash chain as :class:`SQLiteAuditStore`, committed through Raft.

Keys, under ``<prefix>/`` (``<etcd_prefix>/<chain_id>/audit`` in the service):

- ``events/<sequence, 20 digits>``: the 32-byte event hash followed by the
  event's deterministic encoding (exactly what is hashed).
- ``head``: ``"<sequence> <hash hex>"`` of the newest event; updated in the
  same etcd transaction as every append, so deleting the newest events is
  detected.
- ``ids/<event id>``: the sequence of that event (idempotent appends).
- ``patients/<patient id>/<time_ms, 20 digits>/<sequence, 20 digits>``: empty;
  the history index (a range read, newest first).
- ``batches/<batch number>``: JSON of a sealed batch (first and last
  sequence, hex Merkle root, sealing time); ``batch-head``:
  ``"<number> <last sequence>"`` of the newest batch (sealing compares and
  swaps it); ``batch-ends/<last sequence>``: the batch number (finds the
  batch of an event with one range read); ``anchors/<batch number>``: the
  ledger log index of the batch's AnchorAuditBatch transaction.
- ``notifications/<patient id>/<time_ms>/<sequence>``: a Notification (its
  event is read from ``events/``); ``reviews/<sequence>``: a ReviewItem;
  ``review-ids/<item id>``: the sequence of that item;
  ``review-status/<status>/<sequence>``: empty, the items of one status (moved
  when an item is resolved). All written in the same transaction as the alert event.

Ids in keys are percent-encoded, so an id can never reach into another
patient's prefix. An append is one compare-and-swap transaction ("the head is
still what we chained to, and these event ids are new"): the events, their index
keys and the head are written together or not at all, and etcd answers only
after a quorum committed it, so an acknowledged event is durable. A batch
(:meth:`EtcdAuditStore.append_batch`, group commit) is one transaction for up
to about 40 events. Listings are key ranges with a limit (O(page)).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
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
from carechain.core.errors import CareChainError, DataLoss, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from carechain.runtime.etcd import MAX_TXN_OPS, Compare, EtcdClient, KeyValue, Op, OutcomeUnknown, prefix_end

_DIGITS = 20
_HASH_BYTES = 32
_MAX_CAS_ATTEMPTS = 1000
_PAGE = 500


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _number(value: int) -> str:
    return f"{value:0{_DIGITS}d}"


class EtcdAuditStore:
    """AuditStore on etcd (see the module docstring); appends from many processes form one chain."""

    shared_writers = True  # several audit replicas form one chain

    def __init__(self, client: EtcdClient, prefix: str, owns_client: bool = False) -> None:
        if not prefix.strip("/"):
            raise ValueError("the audit store needs a non-empty key prefix")
        self.client = client
        self.prefix = prefix.rstrip("/") + "/"
        self._owns_client = owns_client
        self._head_key = self.prefix + "head"
        self._events = self.prefix + "events/"
        self._ids = self.prefix + "ids/"
        self._patients = self.prefix + "patients/"
        self._batches = self.prefix + "batches/"
        self._batch_head = self.prefix + "batch-head"
        self._batch_ends = self.prefix + "batch-ends/"
        self._anchors = self.prefix + "anchors/"
        self._notifications = self.prefix + "notifications/"
        self._reviews = self.prefix + "reviews/"
        self._review_ids = self.prefix + "review-ids/"
        self._review_status = self.prefix + "review-status/"
        self._lock = threading.Lock()
        self._head: tuple[int, bytes] | None = None  # cached guess; etcd's compare is the truth

    # --- keys ----------------------------------------------------------------------------------

    def event_key(self, sequence: int) -> str:
        """Key of the event with this sequence."""
        return self._events + _number(sequence)

    def id_key(self, event_id: str) -> str:
        """Key of the event-id index entry."""
        return self._ids + _quote(event_id)

    def patient_prefix(self, patient_id: str) -> str:
        """Prefix of one patient's history index."""
        return self._patients + _quote(patient_id) + "/"

    def _patient_key(self, event: audit_pb2.AuditEvent, sequence: int) -> str:
        return self.patient_prefix(event.patient_id) + _number(event.time_ms) + "/" + _number(sequence)

    # --- AuditStore ----------------------------------------------------------------------------

    def append(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        """Store event durably and return (sequence, event_hash); the same event_id gives the same receipt."""
        return self.append_batch([event])[0]

    def append_batch(self, events: Sequence[audit_pb2.AuditEvent]) -> list[tuple[int, bytes]]:
        """Store events in order, one etcd transaction per chunk (group commit); one receipt each.

        A chunk is as many events as one transaction holds (etcd's ``--max-txn-ops``): usually the whole
        batch of a busy reporter. An event_id already stored, or earlier in the batch, gives that receipt.
        """
        for event in events:
            if not event.event_id:
                raise InvalidArgument("event.event_id", "required")
            if event.time_ms < 0:
                raise InvalidArgument("event.time_ms", "must not be negative")
        receipts: dict[str, tuple[int, bytes]] = {}
        fresh: list[audit_pb2.AuditEvent] = []
        for event in events:  # an id twice in the batch: stored once, the same receipt for both
            if event.event_id not in receipts:
                receipts[event.event_id] = (0, b"")
                fresh.append(event)
        with self._lock:
            for chunk in _txn_chunks(fresh):
                receipts.update(self._append_chunk(chunk))
        return [receipts[e.event_id] for e in events]

    def _append_chunk(self, events: list[audit_pb2.AuditEvent]) -> dict[str, tuple[int, bytes]]:
        """One compare-and-swap transaction appending events (their ids new, the head unchanged); retried."""
        done: dict[str, tuple[int, bytes]] = {}
        encoded = {e.event_id: encode_event(e) for e in events}
        deadline = time.monotonic() + self.client.deadline
        for _ in range(_MAX_CAS_ATTEMPTS):
            pending = [e for e in events if e.event_id not in done]
            if not pending:
                return done
            sequence, previous = self._head if self._head is not None else self._read_head()
            head_unchanged = (
                Compare.version(self._head_key, "==", 0)
                if sequence == 0
                else Compare.value(self._head_key, "==", _encode_head(sequence, previous))
            )
            ops: list[Op] = []
            chained: dict[str, tuple[int, bytes]] = {}
            for event in pending:
                sequence, previous = sequence + 1, chain_hash(previous, encoded[event.event_id])
                chained[event.event_id] = (sequence, previous)
                ops += [
                    Op.put(self.event_key(sequence), previous + encoded[event.event_id]),
                    Op.put(self.id_key(event.event_id), str(sequence)),
                    Op.put(self._patient_key(event, sequence), b""),
                    *self._alert_ops(event, sequence),
                ]
            ops.append(Op.put(self._head_key, _encode_head(sequence, previous)))
            id_keys = [self.id_key(e.event_id) for e in pending]
            try:
                result = self.client.txn(
                    [head_unchanged, *(Compare.version(k, "==", 0) for k in id_keys)], ops,
                    [Op.get(self._head_key), *(Op.get(k) for k in id_keys)],
                )
            except OutcomeUnknown:
                # Retrying is safe: if the attempt was committed, the event ids are taken and we get their receipts.
                self._head = None
                if time.monotonic() >= deadline:
                    raise
                continue
            except CareChainError:
                self._head = None
                raise
            if result.succeeded:
                self._head = (sequence, previous)
                done.update(chained)
                return done
            head, *existing = result.responses
            for event, found in zip(pending, existing, strict=True):
                if found is not None and found.kvs:
                    done[event.event_id] = self._receipt(int(found.kvs[0].value))
            self._head = _decode_head(head.kvs[0].value) if head is not None and head.kvs else (0, GENESIS_HASH)
        raise Unavailable("etcd", "too much contention on the audit chain head")

    def _alert_ops(self, event: audit_pb2.AuditEvent, sequence: int) -> list[Op]:
        if not event.alert:
            return []
        note, item = new_notification(event), new_review_item(event)
        return [
            Op.put(self.patient_notifications(event.patient_id) + _number(event.time_ms) + "/" + _number(sequence),
                   note.SerializeToString(deterministic=True)),
            Op.put(self._reviews + _number(sequence), item.SerializeToString(deterministic=True)),
            Op.put(self._review_ids + _quote(item.item_id), str(sequence)),
            Op.put(self._review_status_prefix(item.status) + _number(sequence), b""),
        ]

    def _review_status_prefix(self, status: int) -> str:
        return f"{self._review_status}{status}/"

    def patient_notifications(self, patient_id: str) -> str:
        """Prefix of one patient's notifications."""
        return self._notifications + _quote(patient_id) + "/"

    def history(
        self, patient_id: str, since_ms: int = 0, until_ms: int = 0, limit: int = 0, before: Cursor | None = None
    ) -> list[audit_pb2.StoredAuditEvent]:
        """A patient's events with since_ms <= time < until_ms (0 = open), newest first; at most limit (0 = all),
        older than the cursor before. One descending range read of the patient's index, with a limit."""
        patient = self.patient_prefix(patient_id)
        start = patient + _number(since_ms) if since_ms > 0 else patient
        end = (patient + _number(until_ms)).encode() if until_ms > 0 else prefix_end(patient)
        if before is not None:
            end = min(end, (patient + _number(before[0]) + "/" + _number(before[1])).encode())
        index = self.client.range(start, end, limit, keys_only=True, descending=True).kvs
        return self._stored_events([int(kv.key.rsplit(b"/", 1)[1]) for kv in index])

    def _stored_events(self, sequences: Sequence[int]) -> list[audit_pb2.StoredAuditEvent]:
        values = self.client.read_many([self.event_key(s) for s in sequences])
        events: list[audit_pb2.StoredAuditEvent] = []
        for sequence, kv in zip(sequences, values, strict=True):
            if kv is None:
                raise DataLoss(f"audit event {sequence} is missing from the store")
            events.append(_stored(sequence, kv.value))
        return events

    def head(self) -> tuple[int, bytes]:
        """(sequence, hash) of the newest event; (0, GENESIS_HASH) when empty."""
        return self._read_head()

    def events_after(self, after_sequence: int, limit: int) -> list[audit_pb2.StoredAuditEvent]:
        """Up to limit events with sequence > after_sequence, in sequence order."""
        kvs = self.client.range(self.event_key(after_sequence + 1), prefix_end(self._events), limit).kvs
        return [_stored(int(kv.key[len(self._events):]), kv.value) for kv in kvs]

    # --- batches -------------------------------------------------------------------------------

    def seal_batch(self, last_sequence: int, sealed_ms: int) -> AuditBatch | None:
        """Seal every unsealed event up to last_sequence as the next batch; None when they are already sealed.

        One compare-and-swap on ``batch-head``, so concurrent sealers never seal overlapping batches.
        """
        deadline = time.monotonic() + self.client.deadline
        for _ in range(_MAX_CAS_ATTEMPTS):
            kv = self.client.get(self._batch_head)
            number, sealed_to = _decode_batch_head(kv.value) if kv is not None else (0, 0)
            first = sealed_to + 1
            if last_sequence < first:
                return None
            kvs = list(self.client.scan(self.event_key(first), self.event_key(last_sequence + 1), _PAGE))
            if len(kvs) != last_sequence - first + 1:
                raise InvalidArgument("last_sequence", f"events {first}..{last_sequence} are not all stored")
            batch = AuditBatch(number + 1, first, last_sequence,
                               batch_root([kv.value[:_HASH_BYTES] for kv in kvs]), sealed_ms)
            unchanged = (Compare.version(self._batch_head, "==", 0) if kv is None
                         else Compare.value(self._batch_head, "==", kv.value))
            try:
                result = self.client.txn([unchanged], [
                    Op.put(self._batch_key(batch.batch_number), _encode_batch(batch)),
                    Op.put(self._batch_ends + _number(batch.last_sequence), str(batch.batch_number)),
                    Op.put(self._batch_head, f"{batch.batch_number} {batch.last_sequence}"),
                ])
            except OutcomeUnknown:
                if time.monotonic() >= deadline:
                    raise
                continue  # if it was committed, the next round finds the events sealed
            if result.succeeded:
                return batch
        raise Unavailable("etcd", "too much contention on the audit batch head")

    def _batch_key(self, number: int) -> str:
        return self._batches + _number(number)

    def batches(self, after_number: int = 0, limit: int = 0) -> list[AuditBatch]:
        """Sealed batches with batch_number > after_number, ascending (limit 0 = all)."""
        kvs = self.client.range(self._batch_key(after_number + 1), prefix_end(self._batches), limit).kvs \
            if limit else list(self.client.scan(self._batch_key(after_number + 1), prefix_end(self._batches), _PAGE))
        return self._with_anchors([_decode_batch(kv.value) for kv in kvs])

    def _with_anchors(self, batches: list[AuditBatch], revision: int = 0) -> list[AuditBatch]:
        if not batches:
            return []
        if revision:
            anchors = {
                int(kv.key[len(self._anchors):]): int(kv.value)
                for kv in self.client.scan(self._anchors, prefix_end(self._anchors), _PAGE, revision=revision)
            }
        else:
            found = self.client.read_many([self._anchors + _number(b.batch_number) for b in batches])
            anchors = {b.batch_number: int(kv.value) for b, kv in zip(batches, found, strict=True) if kv is not None}
        return [
            AuditBatch(b.batch_number, b.first_sequence, b.last_sequence, b.merkle_root, b.sealed_ms,
                       anchors.get(b.batch_number))
            for b in batches
        ]

    def last_batch(self) -> AuditBatch | None:
        """The newest sealed batch, or None."""
        kvs = self.client.range(self._batches, prefix_end(self._batches), 1, descending=True).kvs
        return self._with_anchors([_decode_batch(kvs[0].value)])[0] if kvs else None

    def batch_containing(self, sequence: int) -> AuditBatch | None:
        """The sealed batch holding the event with this sequence, or None (not sealed yet)."""
        ends = self.client.range(self._batch_ends + _number(sequence), prefix_end(self._batch_ends), 1).kvs
        if not ends:
            return None
        kv = self.client.get(self._batch_key(int(ends[0].value)))
        if kv is None:
            raise DataLoss(f"audit batch {int(ends[0].value)} is missing from the store")
        batch = self._with_anchors([_decode_batch(kv.value)])[0]
        return batch if batch.contains(sequence) else None

    def record_anchor(self, batch_number: int, log_index: int) -> None:
        """Store the ledger log index of a batch's AnchorAuditBatch transaction."""
        if self.client.get(self._batch_key(batch_number)) is None:
            raise NotFound(f"audit batch {batch_number} is not sealed")
        self.client.put(self._anchors + _number(batch_number), str(log_index))

    # --- alerts --------------------------------------------------------------------------------

    def notifications(
        self, patient_id: str, limit: int = 0, before: Cursor | None = None
    ) -> list[audit_pb2.Notification]:
        """A patient's notifications, newest first, each with its stored event; at most limit (0 = all), older
        than the cursor before (one descending range read)."""
        prefix = self.patient_notifications(patient_id)
        end = prefix_end(prefix)
        if before is not None:
            end = (prefix + _number(before[0]) + "/" + _number(before[1])).encode()
        kvs = self.client.range(prefix, end, limit, descending=True).kvs
        events = self._stored_events([int(kv.key.rsplit(b"/", 1)[1]) for kv in kvs])
        notes = []
        for kv, event in zip(kvs, events, strict=True):
            note = audit_pb2.Notification.FromString(kv.value)
            note.event.CopyFrom(event)
            notes.append(note)
        return notes

    def review_items(self, status: int = 0, limit: int = 0, after_sequence: int = 0) -> list[audit_pb2.ReviewItem]:
        """Review items with this ReviewStatus (0 = any), oldest first, each with its stored event; at most limit
        (0 = all) of alert events after after_sequence: a range of ``reviews/`` or, by status, of the
        ``review-status/<status>/`` index."""
        if status:
            prefix = self._review_status_prefix(status)
            start = prefix + _number(after_sequence + 1)
            index = self.client.range(start, prefix_end(prefix), limit, keys_only=True).kvs if limit \
                else list(self.client.scan(start, prefix_end(prefix), _PAGE, keys_only=True))
            sequences = [int(kv.key[len(prefix):]) for kv in index]
            found = self.client.read_many([self._reviews + _number(s) for s in sequences])
            if any(kv is None for kv in found):
                raise DataLoss("a review item is missing from the store")
            kvs = [kv for kv in found if kv is not None]
        else:
            start = self._reviews + _number(after_sequence + 1)
            kvs = self.client.range(start, prefix_end(self._reviews), limit).kvs if limit \
                else list(self.client.scan(start, prefix_end(self._reviews), _PAGE))
        items = [(int(kv.key[len(self._reviews):]), audit_pb2.ReviewItem.FromString(kv.value)) for kv in kvs]
        for (_, item), event in zip(items, self._stored_events([s for s, _ in items]), strict=True):
            item.event.CopyFrom(event)
        return [item for _, item in items]

    def _review_kv(self, item_id: str) -> tuple[int, KeyValue] | None:
        index = self.client.get(self._review_ids + _quote(item_id))
        if index is None:
            return None
        sequence = int(index.value)
        kv = self.client.get(self._reviews + _number(sequence))
        if kv is None:
            raise DataLoss(f"review item {item_id} is missing from the store")
        return sequence, kv

    def review_item(self, item_id: str) -> audit_pb2.ReviewItem | None:
        """One review item, or None."""
        found = self._review_kv(item_id)
        if found is None:
            return None
        sequence, kv = found
        item = audit_pb2.ReviewItem.FromString(kv.value)
        item.event.CopyFrom(self._stored_events([sequence])[0])
        return item

    def resolve_review_item(
        self, item_id: str, reviewer_id: str, note: str, resolved_ms: int, resolution_sequence: int
    ) -> audit_pb2.ReviewItem:
        """Close an open item; NotFound if unknown, FailedPrecondition if already resolved."""
        for _ in range(_MAX_CAS_ATTEMPTS):
            found = self._review_kv(item_id)
            if found is None:
                raise NotFound(f"review item {item_id} does not exist")
            sequence, kv = found
            item = audit_pb2.ReviewItem.FromString(kv.value)
            if item.status != Status.REVIEW_STATUS_OPEN:
                if item.resolution_sequence == resolution_sequence:
                    break  # our own earlier attempt (a retry)
                raise FailedPrecondition(f"review item {item_id} is already resolved")
            item.status = Status.REVIEW_STATUS_RESOLVED
            item.reviewer_id, item.note = reviewer_id, note
            item.resolved_ms, item.resolution_sequence = resolved_ms, resolution_sequence
            try:
                result = self.client.txn(
                    [Compare.mod_revision(kv.key, "==", kv.mod_revision)],
                    [Op.put(kv.key, item.SerializeToString(deterministic=True)),
                     Op.delete(self._review_status_prefix(Status.REVIEW_STATUS_OPEN) + _number(sequence)),
                     Op.put(self._review_status_prefix(item.status) + _number(sequence), b"")],
                )
            except OutcomeUnknown:
                continue  # the next round sees our write (or not) and acts accordingly
            if result.succeeded:
                break
        resolved = self.review_item(item_id)
        assert resolved is not None
        return resolved

    def verify(self, checkpoint: ChainCheckpoint | None = None) -> AuditVerification:
        """Recompute every link from the stored event bytes and check the indexes; name the first bad sequence.

        From a trusted checkpoint: only the events and batches after it (O(new)), once its event and batch
        are found unchanged; their index entries are then read key by key instead of scanning every index.
        """
        start = checkpoint or GENESIS
        # Every read at one revision: appends running meanwhile cannot make the snapshot look inconsistent.
        head_read = self.client.range(self._head_key)
        revision = head_read.revision
        head_sequence, head_hash = _decode_head(head_read.kvs[0].value) if head_read.kvs else (0, GENESIS_HASH)
        batches = self._with_anchors(
            [_decode_batch(kv.value)
             for kv in self.client.scan(self._batch_key(start.batch_number + 1), prefix_end(self._batches), _PAGE,
                                        revision=revision)],
            revision,
        )
        if start is not GENESIS:
            start_kv = self.client.get(self.event_key(start.sequence))
            batch_kv = self.client.get(self._batch_key(start.batch_number))
            moved = check_start(start, None if start_kv is None else start_kv.value[:_HASH_BYTES],
                                None if batch_kv is None else _decode_batch(batch_kv.value))
            if moved is not None:
                return moved
        walk = ChainWalk(start)
        walked: list[tuple[int, audit_pb2.AuditEvent]] = []
        for kv in self.client.scan(self.event_key(start.sequence + 1), prefix_end(self._events), _PAGE,
                                   revision=revision):
            try:
                sequence = int(kv.key[len(self._events) :])
            except ValueError:
                return walk.problem(walk.expected, f"event {walk.expected}: a foreign key in the store")
            stored_hash, event_bytes = kv.value[:_HASH_BYTES], kv.value[_HASH_BYTES:]
            event = walk.check(sequence, stored_hash, event_bytes)
            if isinstance(event, AuditVerification):
                return event
            walked.append((sequence, event))
            walk.accept(stored_hash)
        bad = self._first_bad_index(walked, revision, full=start is GENESIS)
        if bad:
            return AuditVerification(False, bad - start.sequence - 1, bad,
                                     f"event {bad} index entries differ from the hashed event")
        return walk.finish(head_sequence, head_hash, batches)

    def _first_bad_index(self, walked: list[tuple[int, audit_pb2.AuditEvent]], revision: int, full: bool) -> int:
        """The first walked event whose id or patient index entry is wrong (0: none). A full verification scans
        both indexes once; an incremental one reads the walked events' entries only."""
        if full:
            ids = {
                kv.key[len(self._ids):].decode(): kv.value
                for kv in self.client.scan(self._ids, prefix_end(self._ids), revision=revision)
            }
            patient_keys = {
                kv.key.decode() for kv in self.client.scan(self._patients, prefix_end(self._patients),
                                                           keys_only=True, revision=revision)
            }
            for sequence, event in walked:
                if ids.get(_quote(event.event_id)) != str(sequence).encode() or \
                        self._patient_key(event, sequence) not in patient_keys:
                    return sequence
            return 0
        id_values = self.client.read_many([self.id_key(e.event_id) for _, e in walked])
        patient_values = self.client.read_many([self._patient_key(e, s) for s, e in walked])
        for (sequence, _), id_kv, patient_kv in zip(walked, id_values, patient_values, strict=True):
            if id_kv is None or id_kv.value != str(sequence).encode() or patient_kv is None:
                return sequence
        return 0

    def close(self) -> None:
        """Release the client if this store owns it (the trail stays in etcd)."""
        if self._owns_client:
            self.client.close()

    # --- internals -----------------------------------------------------------------------------

    def _read_head(self) -> tuple[int, bytes]:
        kv = self.client.get(self._head_key)
        return _decode_head(kv.value) if kv is not None else (0, GENESIS_HASH)

    def _receipt(self, sequence: int) -> tuple[int, bytes]:
        kv = self.client.get(self.event_key(sequence))
        if kv is None:
            raise DataLoss(f"audit event {sequence} is missing from the store")
        return sequence, kv.value[:_HASH_BYTES]


def _txn_chunks(events: list[audit_pb2.AuditEvent]) -> list[list[audit_pb2.AuditEvent]]:
    """Events split into runs that fit one transaction: puts (3 per event, 4 more per alert, the head) and
    compares (the head and one per event id) within etcd's MAX_TXN_OPS per branch."""
    chunks: list[list[audit_pb2.AuditEvent]] = []
    chunk: list[audit_pb2.AuditEvent] = []
    puts = 1
    for event in events:
        cost = 7 if event.alert else 3
        if chunk and (puts + cost > MAX_TXN_OPS or len(chunk) + 2 > MAX_TXN_OPS):
            chunks.append(chunk)
            chunk, puts = [], 1
        chunk.append(event)
        puts += cost
    if chunk:
        chunks.append(chunk)
    return chunks


def _stored(sequence: int, value: bytes) -> audit_pb2.StoredAuditEvent:
    return audit_pb2.StoredAuditEvent(
        event=audit_pb2.AuditEvent.FromString(value[_HASH_BYTES:]), sequence=sequence, event_hash=value[:_HASH_BYTES]
    )


def _encode_batch(batch: AuditBatch) -> str:
    return json.dumps({"batch_number": batch.batch_number, "first_sequence": batch.first_sequence,
                       "last_sequence": batch.last_sequence, "merkle_root": batch.merkle_root.hex(),
                       "sealed_ms": batch.sealed_ms}, sort_keys=True)


def _decode_batch(value: bytes) -> AuditBatch:
    try:
        data = json.loads(value)
        return AuditBatch(int(data["batch_number"]), int(data["first_sequence"]), int(data["last_sequence"]),
                          bytes.fromhex(data["merkle_root"]), int(data["sealed_ms"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataLoss("an audit batch in etcd is not readable") from exc


def _decode_batch_head(value: bytes) -> tuple[int, int]:
    try:
        number, last = value.decode().split(" ")
        return int(number), int(last)
    except ValueError as exc:
        raise DataLoss("the audit batch head in etcd is not readable") from exc


def _encode_head(sequence: int, event_hash: bytes) -> str:
    return f"{sequence} {event_hash.hex()}"


def _decode_head(value: bytes) -> tuple[int, bytes]:
    try:
        sequence, hash_hex = value.decode().split(" ")
        return int(sequence), bytes.fromhex(hash_hex)
    except ValueError as exc:
        raise DataLoss("the audit chain head in etcd is not readable") from exc
