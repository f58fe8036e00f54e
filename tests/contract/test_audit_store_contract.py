"""Behaviour every AuditStore implementation must have (run against each backend)."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from carechain.audit.etcd_store import EtcdAuditStore
from carechain.audit.store import DB_FILE_NAME, GENESIS_HASH, AuditStore, SQLiteAuditStore, chain_hash, encode_event
from carechain.audit.v1 import audit_pb2
from carechain.etcd import EtcdClient

pytest_plugins = ["servers_etcd"]


@dataclass
class Backend:
    """How to open a store of one implementation, and how an attacker would tamper with it."""

    name: str
    open: Callable[[pathlib.Path], AuditStore]
    replace_event: Callable[[pathlib.Path, int, bytes], None]
    delete_event: Callable[[pathlib.Path, int], None]
    swap_events: Callable[[pathlib.Path, int, int], None]


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


def _sqlite_backend(request: pytest.FixtureRequest) -> Backend:
    return Backend("sqlite", SQLiteAuditStore, _sqlite_replace, _sqlite_delete, _sqlite_swap)


def _etcd_backend(request: pytest.FixtureRequest) -> Backend:
    """EtcdAuditStore on the shared cluster; each test directory maps to its own key prefix."""
    cluster = request.getfixturevalue("etcd_cluster")
    prefix = request.getfixturevalue("etcd_prefix")
    raw = EtcdClient(cluster.client_urls)
    request.addfinalizer(raw.close)

    def open_store(directory: pathlib.Path) -> AuditStore:
        return EtcdAuditStore(EtcdClient(cluster.client_urls), prefix, owns_client=True)

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

    return Backend("etcd", open_store, replace, delete, swap)


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
