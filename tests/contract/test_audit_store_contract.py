"""Behaviour every AuditStore implementation must have (run against each backend)."""

from __future__ import annotations

import contextlib
import json
import pathlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from carechain.audit.alerts import review_item_id
from carechain.audit.etcd_store import EtcdAuditStore
from carechain.audit.hashchain import (
    GENESIS_HASH,
    batch_root,
    chain_hash,
    encode_event,
    event_proof,
    verify_event_proof,
)
from carechain.audit.sqlite_store import DB_FILE_NAME, SQLiteAuditStore
from carechain.audit.store import AuditStore
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import FailedPrecondition, IntegrityError, NotFound

pytest_plugins = ["servers_etcd"]


@dataclass
class Backend:
    """How to open a store of one implementation, and how an attacker would tamper with it."""

    name: str
    open: Callable[[pathlib.Path], AuditStore]
    replace_event: Callable[[pathlib.Path, int, bytes], None]
    delete_event: Callable[[pathlib.Path, int], None]
    swap_events: Callable[[pathlib.Path, int, int], None]
    replace_batch_root: Callable[[pathlib.Path, int, bytes], None]


def _sqlite(directory: pathlib.Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(directory / DB_FILE_NAME, isolation_level=None))


def _sqlite_replace(directory: pathlib.Path, sequence: int, event_bytes: bytes) -> None:
    with _sqlite(directory) as db:
        db.execute("UPDATE audit_events SET event = ? WHERE sequence = ?", (event_bytes, sequence))


def _sqlite_delete(directory: pathlib.Path, sequence: int) -> None:
    with _sqlite(directory) as db:
        db.execute("DELETE FROM audit_events WHERE sequence = ?", (sequence,))


def _sqlite_swap(directory: pathlib.Path, a: int, b: int) -> None:
    """Swap two events' contents (and their hashes), i.e. reorder the trail."""
    with _sqlite(directory) as db:
        rows = {
            seq: row[1:]
            for row in db.execute(
                "SELECT sequence, event_id, patient_id, time_ms, event, event_hash FROM audit_events"
                " WHERE sequence IN (?, ?)", (a, b))
            for seq in [row[0]]
        }
        db.execute("UPDATE audit_events SET event_id = 'tmp' WHERE sequence = ?", (a,))
        for target, source in ((b, a), (a, b)):
            db.execute(
                "UPDATE audit_events SET event_id = ?, patient_id = ?, time_ms = ?, event = ?, event_hash = ?"
                " WHERE sequence = ?", (*rows[source], target))


def _sqlite_replace_root(directory: pathlib.Path, batch_number: int, root: bytes) -> None:
    with _sqlite(directory) as db:
        db.execute("UPDATE audit_batches SET merkle_root = ? WHERE batch_number = ?", (root, batch_number))


def _sqlite_backend(request: pytest.FixtureRequest) -> Backend:
    return Backend("sqlite", SQLiteAuditStore, _sqlite_replace, _sqlite_delete, _sqlite_swap, _sqlite_replace_root)


def _etcd_backend(request: pytest.FixtureRequest) -> Backend:
    """EtcdAuditStore on the shared cluster; each test directory maps to its own key prefix."""
    cluster = request.getfixturevalue("etcd_cluster")
    prefix = request.getfixturevalue("etcd_prefix")
    raw = cluster.client()
    request.addfinalizer(raw.close)

    def open_store(directory: pathlib.Path) -> AuditStore:
        return EtcdAuditStore(cluster.client(), prefix, owns_client=True)

    def key(sequence: int) -> str:
        return f"{prefix}/events/{sequence:020d}"

    def replace(directory: pathlib.Path, sequence: int, event_bytes: bytes) -> None:
        stored = raw.get(key(sequence))
        assert stored is not None
        raw.put(key(sequence), stored.value[:32] + event_bytes)  # keep the stored hash, change the event

    def delete(directory: pathlib.Path, sequence: int) -> None:
        assert raw.delete(key(sequence)) == 1

    def swap(directory: pathlib.Path, a: int, b: int) -> None:
        first, second = raw.get(key(a)), raw.get(key(b))
        assert first is not None and second is not None
        raw.put(key(a), second.value)
        raw.put(key(b), first.value)

    def replace_root(directory: pathlib.Path, batch_number: int, root: bytes) -> None:
        batch_key = f"{prefix}/batches/{batch_number:020d}"
        stored = raw.get(batch_key)
        assert stored is not None
        data = json.loads(stored.value)
        data["merkle_root"] = root.hex()
        raw.put(batch_key, json.dumps(data))

    return Backend("etcd", open_store, replace, delete, swap, replace_root)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {"sqlite": _sqlite_backend, "etcd": _etcd_backend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param](request)


@pytest.fixture()
def store(backend: Backend, tmp_path: pathlib.Path) -> Iterator[AuditStore]:
    opened = backend.open(tmp_path)
    yield opened
    opened.close()


def event(patient_id: str = "pat-1", time_ms: int = 1_000, reason: str = "", **fields: object) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()), time_ms=time_ms, service="records", actor_id="prac-1", organization_id="org-a",
        patient_id=patient_id, record_id="rec-1", action=audit_pb2.AUDIT_ACTION_READ,
        outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS, reason=reason, **fields,  # type: ignore[arg-type]
    )


def fill(store: AuditStore, count: int) -> list[audit_pb2.AuditEvent]:
    events = [event(time_ms=1_000 + i, reason=f"read {i}") for i in range(count)]
    for e in events:
        store.append(e)
    return events


def test_events_are_chained_from_a_zero_genesis(store: AuditStore) -> None:
    first, second = event(), event(time_ms=2_000)
    seq1, hash1 = store.append(first)
    seq2, hash2 = store.append(second)
    assert (seq1, seq2) == (1, 2)
    assert hash1 == chain_hash(GENESIS_HASH, encode_event(first))
    assert hash2 == chain_hash(hash1, encode_event(second))
    assert store.verify().ok


def test_empty_store_verifies(store: AuditStore) -> None:
    result = store.verify()
    assert result.ok and result.events_checked == 0


def test_append_is_idempotent_on_event_id(store: AuditStore) -> None:
    e = event()
    receipt = store.append(e)
    store.append(event())
    assert store.append(e) == receipt
    assert store.verify().events_checked == 2
    assert len(store.history("pat-1")) == 2


def test_history_is_newest_first_and_filtered(store: AuditStore) -> None:
    for t in (3_000, 1_000, 2_000, 4_000):
        store.append(event(time_ms=t, reason=f"at {t}"))
    store.append(event(patient_id="pat-2", time_ms=2_500))
    assert [s.event.time_ms for s in store.history("pat-1")] == [4_000, 3_000, 2_000, 1_000]
    assert [s.event.time_ms for s in store.history("pat-1", since_ms=2_000)] == [4_000, 3_000, 2_000]
    assert [s.event.time_ms for s in store.history("pat-1", until_ms=3_000)] == [2_000, 1_000]
    assert [s.event.time_ms for s in store.history("pat-1", 2_000, 4_000)] == [3_000, 2_000]
    assert [s.event.patient_id for s in store.history("pat-2")] == ["pat-2"]
    assert store.history("pat-unknown") == []


def test_history_returns_the_stored_event_with_its_receipt(store: AuditStore) -> None:
    e = event(reason="denied: no consent", purpose=1, trace_id="ab" * 16)
    sequence, event_hash = store.append(e)
    [stored] = store.history("pat-1")
    assert stored.event == e and stored.sequence == sequence and stored.event_hash == event_hash


def test_changed_event_is_detected(backend: Backend, store: AuditStore, tmp_path: pathlib.Path) -> None:
    events = fill(store, 5)
    forged = audit_pb2.AuditEvent()
    forged.CopyFrom(events[2])
    forged.reason = "nothing to see"
    backend.replace_event(tmp_path, 3, encode_event(forged))
    result = store.verify()
    assert not result.ok
    assert result.first_bad_sequence == 3 and result.events_checked == 2
    assert "3" in result.problem


def test_changed_bytes_are_detected(backend: Backend, store: AuditStore, tmp_path: pathlib.Path) -> None:
    events = fill(store, 3)
    raw = bytearray(encode_event(events[0]))
    raw[-1] ^= 0x01
    backend.replace_event(tmp_path, 1, bytes(raw))
    result = store.verify()
    assert not result.ok and result.first_bad_sequence == 1


def test_deleted_event_is_detected(backend: Backend, store: AuditStore, tmp_path: pathlib.Path) -> None:
    fill(store, 5)
    backend.delete_event(tmp_path, 2)
    result = store.verify()
    assert not result.ok and result.first_bad_sequence == 2 and "missing" in result.problem


def test_deleted_newest_event_is_detected(backend: Backend, store: AuditStore, tmp_path: pathlib.Path) -> None:
    fill(store, 4)
    backend.delete_event(tmp_path, 4)
    result = store.verify()
    assert not result.ok and result.first_bad_sequence == 4


def test_reordered_events_are_detected(backend: Backend, store: AuditStore, tmp_path: pathlib.Path) -> None:
    fill(store, 5)
    backend.swap_events(tmp_path, 2, 4)
    result = store.verify()
    assert not result.ok and result.first_bad_sequence == 2


def test_chain_survives_reopening(backend: Backend, tmp_path: pathlib.Path) -> None:
    store = backend.open(tmp_path)
    first = event()
    receipt = store.append(first)
    store.close()

    reopened = backend.open(tmp_path)
    try:
        assert reopened.append(first) == receipt  # still idempotent
        sequence, event_hash = reopened.append(second := event(time_ms=5_000))
        assert sequence == 2 and event_hash == chain_hash(receipt[1], encode_event(second))
        assert reopened.verify().ok and reopened.verify().events_checked == 2
        assert [s.event.event_id for s in reopened.history("pat-1")] == [second.event_id, first.event_id]
    finally:
        reopened.close()


def test_concurrent_appends_form_one_chain(store: AuditStore) -> None:
    def worker() -> None:
        for _ in range(25):
            store.append(event())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = store.verify()
    assert result.ok and result.events_checked == 100


# --- reading in sequence order -------------------------------------------------------------------

def test_head_and_events_after_follow_the_chain(store: AuditStore) -> None:
    assert store.head() == (0, GENESIS_HASH)
    assert store.events_after(0, 10) == []
    events = fill(store, 5)
    sequence, event_hash = store.head()
    assert sequence == 5 and event_hash == store.events_after(4, 1)[0].event_hash
    page = store.events_after(1, 3)
    assert [s.sequence for s in page] == [2, 3, 4]
    assert [s.event for s in page] == events[1:4]
    assert [s.sequence for s in store.events_after(4, 10)] == [5]


# --- batches -------------------------------------------------------------------------------------

def test_batches_tile_the_chain_and_their_roots_cover_the_event_hashes(store: AuditStore) -> None:
    fill(store, 7)
    assert store.last_batch() is None and store.batch_containing(1) is None
    first = store.seal_batch(3, 10_000)
    second = store.seal_batch(7, 20_000)
    assert first is not None and second is not None
    assert (first.batch_number, first.first_sequence, first.last_sequence) == (1, 1, 3)
    assert (second.batch_number, second.first_sequence, second.last_sequence, second.sealed_ms) == (2, 4, 7, 20_000)
    hashes = [s.event_hash for s in store.events_after(0, 10)]
    assert first.merkle_root == batch_root(hashes[:3]) and second.merkle_root == batch_root(hashes[3:])
    assert store.batches() == [first, second]
    assert store.batches(after_number=1) == [second] and store.batches(limit=1) == [first]
    assert store.last_batch() == second
    assert store.batch_containing(3) == first and store.batch_containing(4) == second
    assert store.batch_containing(8) is None
    result = store.verify()
    assert result.ok and result.batches_checked == 2 and result.batches_anchored == 0


def test_sealing_what_is_sealed_already_is_a_no_op(store: AuditStore) -> None:
    fill(store, 3)
    assert store.seal_batch(3, 1) is not None
    assert store.seal_batch(2, 1) is None and store.seal_batch(3, 1) is None
    assert len(store.batches()) == 1


def test_only_stored_events_can_be_sealed(store: AuditStore) -> None:
    fill(store, 2)
    with pytest.raises(Exception, match="last_sequence"):
        store.seal_batch(5, 1)
    assert store.batches() == []


def test_anchors_are_stored_with_their_batch(store: AuditStore) -> None:
    fill(store, 2)
    batch = store.seal_batch(2, 1)
    assert batch is not None and not batch.anchored
    store.record_anchor(1, 42)
    [anchored] = store.batches()
    assert anchored.anchored and anchored.anchor_log_index == 42
    assert store.batch_containing(2) == anchored
    assert store.verify().batches_anchored == 1
    with pytest.raises(NotFound):
        store.record_anchor(2, 43)


def test_event_proofs_verify_against_the_batch_root(store: AuditStore) -> None:
    fill(store, 6)
    batch = store.seal_batch(6, 1)
    assert batch is not None
    hashes = [s.event_hash for s in store.events_after(0, 10)]
    for sequence in range(1, 7):
        proof = event_proof(batch, hashes, sequence)
        verify_event_proof(proof, hashes[sequence - 1])
    forged = event_proof(batch, hashes, 3)
    forged.event_hash = hashes[3]
    with pytest.raises(IntegrityError):
        verify_event_proof(forged)


def test_sealed_batches_survive_reopening(backend: Backend, tmp_path: pathlib.Path) -> None:
    store = backend.open(tmp_path)
    fill(store, 3)
    batch = store.seal_batch(3, 5)
    store.record_anchor(1, 9)
    store.close()
    reopened = backend.open(tmp_path)
    try:
        assert reopened.batches() == [replace(batch, anchor_log_index=9)]
        assert reopened.verify().ok
    finally:
        reopened.close()


def test_changed_batch_root_is_detected(backend: Backend, store: AuditStore, tmp_path: pathlib.Path) -> None:
    fill(store, 6)
    store.seal_batch(3, 1)
    store.seal_batch(6, 1)
    backend.replace_batch_root(tmp_path, 2, bytes(32))
    result = store.verify()
    assert not result.ok and result.first_bad_sequence == 4 and "batch 2" in result.problem


def test_changed_sealed_event_is_detected(backend: Backend, store: AuditStore, tmp_path: pathlib.Path) -> None:
    events = fill(store, 4)
    store.seal_batch(4, 1)
    forged = audit_pb2.AuditEvent()
    forged.CopyFrom(events[1])
    forged.actor_id = "someone-else"
    backend.replace_event(tmp_path, 2, encode_event(forged))
    result = store.verify()
    assert not result.ok and result.first_bad_sequence == 2


def test_concurrent_sealers_never_overlap(store: AuditStore) -> None:
    fill(store, 40)

    def sealer(offset: int) -> None:
        for last in range(offset, 41, 4):
            store.seal_batch(last, 1)

    threads = [threading.Thread(target=sealer, args=(offset,)) for offset in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batches = store.batches()
    assert batches[-1].last_sequence == 40
    assert [b.first_sequence for b in batches[1:]] == [b.last_sequence + 1 for b in batches[:-1]]
    assert store.verify().ok


# --- alerts: notifications and the review queue ---------------------------------------------------

def test_an_alert_event_notifies_the_patient_and_opens_a_review_item(store: AuditStore) -> None:
    store.append(event(reason="routine"))
    alert = event(time_ms=2_000, alert=True, purpose=2, reason="break-glass")
    sequence, _ = store.append(alert)
    store.append(alert)  # a retried append creates nothing twice
    [note] = store.notifications("pat-1")
    assert note.event.sequence == sequence and note.event.event == alert
    assert note.patient_id == "pat-1" and note.time_ms == 2_000 and "break-glass" in note.message.lower()
    assert store.notifications("pat-2") == []
    [item] = store.review_items()
    assert item.item_id == review_item_id(alert.event_id) and item.event.sequence == sequence
    assert item.status == audit_pb2.REVIEW_STATUS_OPEN and item.created_ms == 2_000
    assert store.review_items(audit_pb2.REVIEW_STATUS_RESOLVED) == []
    assert store.review_item(item.item_id) == item
    assert store.review_item("nope") is None


def test_notifications_are_newest_first(store: AuditStore) -> None:
    for t in (1_000, 3_000, 2_000):
        store.append(event(time_ms=t, alert=True))
    assert [n.time_ms for n in store.notifications("pat-1")] == [3_000, 2_000, 1_000]
    assert [i.created_ms for i in store.review_items()] == [1_000, 3_000, 2_000]  # queue order = arrival


def test_resolving_a_review_item_closes_it_once(store: AuditStore) -> None:
    store.append(alert := event(alert=True))
    item_id = review_item_id(alert.event_id)
    resolution, _ = store.append(event(reason="resolution"))
    resolved = store.resolve_review_item(item_id, "operator", "confirmed emergency", 5_000, resolution)
    assert resolved.status == audit_pb2.REVIEW_STATUS_RESOLVED
    assert (resolved.reviewer_id, resolved.note, resolved.resolved_ms) == ("operator", "confirmed emergency", 5_000)
    assert resolved.resolution_sequence == resolution and resolved.event.event == alert
    assert store.review_items(audit_pb2.REVIEW_STATUS_OPEN) == []
    assert store.review_items(audit_pb2.REVIEW_STATUS_RESOLVED) == [resolved]
    # A retry of the same resolution returns it; another one is refused.
    assert store.resolve_review_item(item_id, "operator", "confirmed emergency", 5_000, resolution) == resolved
    with pytest.raises(FailedPrecondition):
        store.resolve_review_item(item_id, "operator", "again", 6_000, resolution + 1)
    with pytest.raises(NotFound):
        store.resolve_review_item("no-such-item", "operator", "x", 1, resolution)


def test_alerts_survive_reopening(backend: Backend, tmp_path: pathlib.Path) -> None:
    store = backend.open(tmp_path)
    store.append(alert := event(alert=True))
    store.close()
    reopened = backend.open(tmp_path)
    try:
        assert [n.event.event for n in reopened.notifications("pat-1")] == [alert]
        assert [i.item_id for i in reopened.review_items()] == [review_item_id(alert.event_id)]
    finally:
        reopened.close()


# --- group commit and pages -------------------------------------------------------------------------

def test_a_batch_is_chained_like_single_appends_and_idempotent(store: AuditStore) -> None:
    before = event(reason="stored before")
    store.append(before)
    first, alert, twice = event(reason="first"), event(time_ms=2_000, alert=True), event(reason="twice")
    receipts = store.append_batch([first, before, alert, twice, twice])
    assert [r[0] for r in receipts] == [2, 1, 3, 4, 4]  # a stored id, and one twice in the batch: one receipt
    assert receipts[0][1] == chain_hash(store.events_after(0, 1)[0].event_hash, encode_event(first))
    assert receipts[3][1] == chain_hash(receipts[2][1], encode_event(twice))
    assert store.append_batch([first, alert]) == [receipts[0], receipts[2]]  # a retried batch: the same receipts
    assert store.head() == receipts[3]
    assert [n.event.event for n in store.notifications("pat-1")] == [alert]
    assert [i.event.sequence for i in store.review_items()] == [3]
    assert store.verify().ok and store.verify().events_checked == 4


def test_a_large_batch_with_alerts_forms_one_chain(store: AuditStore) -> None:
    events = [event(time_ms=1_000 + i, alert=i % 10 == 0, reason=f"e{i}") for i in range(300)]
    receipts = store.append_batch(events)
    assert [r[0] for r in receipts] == list(range(1, 301))
    assert [s.event for s in store.events_after(0, 300)] == events
    assert len(store.notifications("pat-1")) == 30 and len(store.review_items()) == 30
    assert store.verify().ok


def test_history_pages_newest_first_without_gap_or_duplicate(store: AuditStore) -> None:
    # Several events share a time: the cursor is (time_ms, sequence).
    store.append_batch([event(time_ms=1_000 + (i // 3) * 1_000, reason=f"e{i}") for i in range(10)])
    store.append(event(patient_id="pat-2", time_ms=2_000))
    everything = store.history("pat-1")
    seen: list[audit_pb2.StoredAuditEvent] = []
    before = None
    while True:
        page = store.history("pat-1", 0, 0, 4, before)
        assert len(page) <= 4
        if not page:
            break
        seen += page
        before = (page[-1].event.time_ms, page[-1].sequence)
    assert seen == everything and len(seen) == 10
    assert [s.sequence for s in store.history("pat-1", 2_000, 4_000, 2, (3_000, 8))] == [7, 6]


def test_notifications_and_review_items_page(store: AuditStore) -> None:
    store.append_batch([event(time_ms=1_000 + i * 100, alert=True, reason=f"a{i}") for i in range(7)])
    notes = store.notifications("pat-1")
    first = store.notifications("pat-1", 3)
    rest = store.notifications("pat-1", 0, (first[-1].time_ms, first[-1].event.sequence))
    assert first + rest == notes and len(first) == 3
    items = store.review_items()
    page = store.review_items(0, 4)
    assert page + store.review_items(0, 0, page[-1].event.sequence) == items
    resolution, _ = store.append(event(reason="resolution"))
    store.resolve_review_item(items[1].item_id, "operator", "ok", 5_000, resolution)
    open_items = store.review_items(audit_pb2.REVIEW_STATUS_OPEN, 2)
    assert [i.event.sequence for i in open_items] == [1, 3]
    assert [i.event.sequence for i in store.review_items(audit_pb2.REVIEW_STATUS_OPEN, 2, 3)] == [4, 5]
    assert [i.event.sequence for i in store.review_items(audit_pb2.REVIEW_STATUS_RESOLVED)] == [2]


# --- incremental verification ---------------------------------------------------------------------

def test_verification_continues_from_a_checkpoint(backend: Backend, store: AuditStore, tmp_path: pathlib.Path) -> None:
    events = fill(store, 8)
    store.seal_batch(6, 10)
    first = store.verify()
    assert first.ok and first.checkpoint is not None
    assert (first.checkpoint.sequence, first.checkpoint.batch_number) == (6, 1)
    assert first.checkpoint.event_hash == store.events_after(5, 1)[0].event_hash
    store.append_batch([event(time_ms=2_000 + i) for i in range(4)])
    store.seal_batch(10, 20)
    later = store.verify(first.checkpoint)
    # Only what follows the checkpoint is read and checked: events 7..12 and batch 2.
    assert later.ok and (later.events_checked, later.batches_checked) == (6, 1)
    assert later.checkpoint is not None and (later.checkpoint.sequence, later.checkpoint.batch_number) == (10, 2)
    # An event after the checkpoint changed: found from the checkpoint too.
    forged = audit_pb2.AuditEvent()
    forged.CopyFrom(events[7])
    forged.reason = "nothing to see"
    backend.replace_event(tmp_path, 8, encode_event(forged))
    found = store.verify(first.checkpoint)
    assert not found.ok and found.first_bad_sequence == 8 and found.checkpoint is None


def test_a_checkpoint_the_store_no_longer_holds_is_a_finding(
    backend: Backend, store: AuditStore, tmp_path: pathlib.Path
) -> None:
    fill(store, 4)
    store.seal_batch(3, 10)
    checkpoint = store.verify().checkpoint
    assert checkpoint is not None
    backend.delete_event(tmp_path, 3)
    found = store.verify(checkpoint)
    assert not found.ok and found.first_bad_sequence == 3 and "trusted checkpoint" in found.problem
    forged = replace(checkpoint, event_hash=bytes(32))
    assert not store.verify(forged).ok


def test_a_page_of_etcd_listings_reads_only_that_page(backend: Backend, store: AuditStore) -> None:
    if backend.name != "etcd":
        pytest.skip("SQLite's query plans are checked in tests/unit/audit/test_sqlite_store.py")
    assert isinstance(store, EtcdAuditStore)
    store.append_batch([event(time_ms=1_000 + i, alert=True) for i in range(120)])
    returned: list[int] = []
    real_range = store.client.range

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_range(*args, **kwargs)
        returned.append(len(result.kvs))
        return result

    store.client.range = counting  # type: ignore[method-assign]
    page = store.history("pat-1", 0, 0, 5, (1_100, 101))
    assert [s.sequence for s in page] == [100, 99, 98, 97, 96]
    assert store.notifications("pat-1", 5, (1_100, 101))[0].event.sequence == 100
    assert [i.event.sequence for i in store.review_items(audit_pb2.REVIEW_STATUS_OPEN, 5, 50)] == [51, 52, 53, 54, 55]
    assert returned and max(returned) <= 5, returned  # key ranges with a limit, never all 120
