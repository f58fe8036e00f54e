"""The append path (carechain.audit.trail) through RecordEvent: chained, idempotent, checked, fail closed."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import pytest
from audit_fixtures import NOW_MS, OPERATOR, PATIENT, RECORDS, AuditEnv, event, running_audit, status_of

from carechain.audit.trail import MAX_CLOCK_SKEW_MS
from carechain.audit.v1 import audit_pb2


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[AuditEnv]:
    with running_audit(tmp_path) as running:
        yield running


def test_recorded_events_are_chained_and_idempotent(env: AuditEnv) -> None:
    e = event()
    first = env.call("RecordEvent", audit_pb2.RecordEventRequest(event=e), RECORDS)
    second = env.record(reason="denied: no consent", outcome=audit_pb2.AUDIT_OUTCOME_DENIED)
    assert (first.sequence, second.sequence) == (1, 2)
    assert len(first.event_hash) == 32
    assert env.call("RecordEvent", audit_pb2.RecordEventRequest(event=e), RECORDS) == first  # a retry
    verified = env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(), OPERATOR)
    assert verified.ok and verified.events_checked == 2


def test_missing_time_is_filled_with_now(env: AuditEnv) -> None:
    env.record(time_ms=0)
    [stored] = env.history(PATIENT).events
    assert stored.event.time_ms == NOW_MS


@pytest.mark.parametrize(("fields", "field_name"), [
    ({"event_id": ""}, "event.event_id"),
    ({"event_id": "not-a-uuid"}, "event.event_id"),
    ({"action": audit_pb2.AUDIT_ACTION_UNSPECIFIED}, "event.action"),
    ({"action": 99}, "event.action"),
    ({"outcome": audit_pb2.AUDIT_OUTCOME_UNSPECIFIED}, "event.outcome"),
    ({"outcome": 99}, "event.outcome"),
    ({"service": ""}, "event.service"),
    ({"actor_id": ""}, "event.actor_id"),
    ({"time_ms": -1}, "event.time_ms"),
    ({"purpose": 42}, "event.purpose"),
    ({"categories": [0]}, "event.categories"),
    ({"categories": [999]}, "event.categories"),
    ({"alert": True, "patient_id": ""}, "event.patient_id"),
])
def test_invalid_events_are_rejected_naming_the_field(env: AuditEnv, fields: dict, field_name: str) -> None:
    code, details = status_of(lambda: env.record(**fields))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{field_name}:")
    assert env.store.head()[0] == 0  # nothing was appended


@pytest.mark.parametrize("fields", [
    {"action": audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT},
    {"action": audit_pb2.AUDIT_ACTION_ANCHOR_BATCH, "outcome": audit_pb2.AUDIT_OUTCOME_FAILED},
    {"ledger_checkpoint": b"a forged co-signed checkpoint"},
], ids=["checkpoint action", "anchoring alert", "checkpoint payload"])
def test_only_the_audit_service_records_checkpoints_and_anchoring_alerts(env: AuditEnv, fields: dict) -> None:
    # A reporting service forging a checkpoint would mislead `audit verify --ledger`.
    code, details = status_of(lambda: env.record(**fields))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("event.action:")
    assert env.store.head()[0] == 0


@pytest.mark.parametrize("offset_ms", [-MAX_CLOCK_SKEW_MS - 1, MAX_CLOCK_SKEW_MS + 1, -6 * 365 * 86_400_000])
def test_reporter_timestamps_far_from_the_audit_clock_are_refused(env: AuditEnv, offset_ms: int) -> None:
    code, details = status_of(lambda: env.record(time_ms=NOW_MS + offset_ms))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("event.time_ms:")
    assert env.history(PATIENT).disclosures == []


def test_reporter_timestamps_within_the_skew_are_kept(env: AuditEnv) -> None:
    env.record(time_ms=NOW_MS - MAX_CLOCK_SKEW_MS + 1)
    env.record(time_ms=0)  # filled in with the audit clock
    assert sorted(d.time_ms for d in env.history(PATIENT).disclosures) == [NOW_MS - MAX_CLOCK_SKEW_MS + 1, NOW_MS]


def test_store_failure_is_unavailable(env: AuditEnv) -> None:
    env.store.close()  # the database is gone
    code, details = status_of(lambda: env.record())
    assert code == grpc.StatusCode.UNAVAILABLE and "audit store" in details
