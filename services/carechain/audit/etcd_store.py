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

Ids in keys are percent-encoded, so an id can never reach into another
patient's prefix. An append is one compare-and-swap transaction ("the head is
still what we chained to, and this event id is new"): the event, both index
keys and the head are written together or not at all, and etcd answers only
after a quorum committed it, so an acknowledged event is durable.
"""

from __future__ import annotations

import threading
import time
import urllib.parse

from carechain.audit.store import GENESIS_HASH, AuditVerification, chain_hash, encode_event
from carechain.audit.v1 import audit_pb2
from carechain.crypto import same
from carechain.errors import CareChainError, DataLoss, InvalidArgument, Unavailable
from carechain.etcd import Compare, EtcdClient, Op, OutcomeUnknown, prefix_end

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
        if not event.event_id:
            raise InvalidArgument("event.event_id", "required")
        if event.time_ms < 0:
            raise InvalidArgument("event.time_ms", "must not be negative")
        event_bytes = encode_event(event)
        id_key = self.id_key(event.event_id)
        deadline = time.monotonic() + self.client.deadline
        with self._lock:
            for _ in range(_MAX_CAS_ATTEMPTS):
                sequence, previous = self._head if self._head is not None else self._read_head()
                new_sequence, event_hash = sequence + 1, chain_hash(previous, event_bytes)
                head_unchanged = (
                    Compare.version(self._head_key, "==", 0)
                    if sequence == 0
                    else Compare.value(self._head_key, "==", _encode_head(sequence, previous))
                )
                try:
                    result = self.client.txn(
                        [head_unchanged, Compare.version(id_key, "==", 0)],
                        [
                            Op.put(self.event_key(new_sequence), event_hash + event_bytes),
                            Op.put(id_key, str(new_sequence)),
                            Op.put(self._patient_key(event, new_sequence), b""),
                            Op.put(self._head_key, _encode_head(new_sequence, event_hash)),
                        ],
                        [Op.get(self._head_key), Op.get(id_key)],
                    )
                except OutcomeUnknown:
                    # Retrying is safe: if the attempt was committed, the event id is taken and we get its receipt.
                    self._head = None
                    if time.monotonic() >= deadline:
                        raise
                    continue
                except CareChainError:
                    self._head = None
                    raise
                if result.succeeded:
                    self._head = (new_sequence, event_hash)
                    return new_sequence, event_hash
                head, existing = result.responses
                if existing is not None and existing.kvs:
                    return self._receipt(int(existing.kvs[0].value))
                self._head = _decode_head(head.kvs[0].value) if head is not None and head.kvs else (0, GENESIS_HASH)
            raise Unavailable("etcd", "too much contention on the audit chain head")

    def history(self, patient_id: str, since_ms: int = 0, until_ms: int = 0) -> list[audit_pb2.StoredAuditEvent]:
        """A patient's events with since_ms <= time < until_ms (0 = open), newest first."""
        patient = self.patient_prefix(patient_id)
        start = patient + _number(since_ms) if since_ms > 0 else patient
        end = (patient + _number(until_ms)).encode() if until_ms > 0 else prefix_end(patient)
        index = self.client.range(start, end, keys_only=True, descending=True).kvs
        sequences = [int(kv.key.rsplit(b"/", 1)[1]) for kv in index]
        values = self.client.read_many([self.event_key(s) for s in sequences])
        events: list[audit_pb2.StoredAuditEvent] = []
        for sequence, kv in zip(sequences, values, strict=True):
            if kv is None:
                raise DataLoss(f"audit event {sequence} is missing from the store")
            event_hash, event_bytes = kv.value[:_HASH_BYTES], kv.value[_HASH_BYTES:]
            events.append(
                audit_pb2.StoredAuditEvent(
                    event=audit_pb2.AuditEvent.FromString(event_bytes), sequence=sequence, event_hash=event_hash
                )
            )
        return events

    def verify(self) -> AuditVerification:
        """Recompute every link from the stored event bytes and check the indexes; name the first bad sequence."""
        # Every read at one revision: appends running meanwhile cannot make the snapshot look inconsistent.
        head_read = self.client.range(self._head_key)
        revision = head_read.revision
        head_sequence, head_hash = _decode_head(head_read.kvs[0].value) if head_read.kvs else (0, GENESIS_HASH)
        ids = {
            kv.key[len(self._ids) :].decode(): kv.value
            for kv in self.client.scan(self._ids, prefix_end(self._ids), revision=revision)
        }
        patient_keys = {
            kv.key.decode()
            for kv in self.client.scan(self._patients, prefix_end(self._patients), keys_only=True, revision=revision)
        }
        previous = GENESIS_HASH
        expected = 1
        for kv in self.client.scan(self._events, prefix_end(self._events), _PAGE, revision=revision):
            checked = expected - 1
            try:
                sequence = int(kv.key[len(self._events) :])
            except ValueError:
                return AuditVerification(False, checked, expected, f"event {expected}: a foreign key in the store")
            if sequence != expected:
                return AuditVerification(False, checked, expected, f"event {expected} is missing")
            stored_hash, event_bytes = kv.value[:_HASH_BYTES], kv.value[_HASH_BYTES:]
            if len(stored_hash) != _HASH_BYTES or not same(chain_hash(previous, event_bytes), stored_hash):
                return AuditVerification(
                    False, checked, sequence, f"event {sequence} does not match its chain hash (changed or moved)"
                )
            try:
                event = audit_pb2.AuditEvent.FromString(event_bytes)
            except Exception:  # noqa: BLE001 - any decode failure is corruption
                return AuditVerification(False, checked, sequence, f"event {sequence} cannot be decoded")
            if (
                ids.get(_quote(event.event_id)) != str(sequence).encode()
                or self._patient_key(event, sequence) not in patient_keys
            ):
                return AuditVerification(
                    False, checked, sequence, f"event {sequence} index entries differ from the hashed event"
                )
            previous = stored_hash
            expected += 1
        count = expected - 1
        if head_sequence > count:
            return AuditVerification(
                False, count, count + 1, f"event {count + 1} is missing (the chain head is at event {head_sequence})"
            )
        if head_sequence != count or not same(head_hash, previous):
            return AuditVerification(False, count, max(count, 1), f"chain head does not match event {count}")
        return AuditVerification(True, count)

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


def _encode_head(sequence: int, event_hash: bytes) -> str:
    return f"{sequence} {event_hash.hex()}"


def _decode_head(value: bytes) -> tuple[int, bytes]:
    try:
        sequence, hash_hex = value.decode().split(" ")
        return int(sequence), bytes.fromhex(hash_hex)
    except ValueError as exc:
        raise DataLoss("the audit chain head in etcd is not readable") from exc
