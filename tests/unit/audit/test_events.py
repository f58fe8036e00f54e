"""AuditReporter (carechain.audit.events), the client every service reports through, against a real AuditService."""

from __future__ import annotations

import pathlib
import re
import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest
from audit_fixtures import (
    CONSENT,
    NOW_MS,
    PATIENT,
    RECORDS,
    AuditEnv,
    event,
    running_audit,
    status_of,
    wait_until,
)

from carechain.audit.events import AuditRefused, AuditReporter
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.common.v1 import common_pb2 as c
from carechain.core.errors import Unavailable
from carechain.runtime.peers import PeerStub


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[AuditEnv]:
    with running_audit(tmp_path) as running:
        yield running


def test_reporter_fills_id_time_service_and_records_durably(env: AuditEnv) -> None:
    reporter = AuditReporter(env.as_(RECORDS), "records", clock=lambda: NOW_MS / 1000 - 1.5)
    receipt = reporter.report(
        audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_DENIED, actor_id="prac-1", organization_id="org-a",
        patient_id="pat-1", record_id="rec-1", purpose=c.PURPOSE_OF_USE_TREAT, reason="denied: no consent",
    )
    assert receipt.sequence == 1
    [stored] = env.store.history("pat-1")
    e = stored.event
    assert uuid.UUID(e.event_id)
    assert (e.time_ms, e.service, e.actor_id, e.organization_id) == (NOW_MS - 1_500, "records", "prac-1", "org-a")
    assert (e.record_id, e.purpose, e.reason) == ("rec-1", c.PURPOSE_OF_USE_TREAT, "denied: no consent")
    assert e.trace_id == "" or re.fullmatch("[0-9a-f]{32}", e.trace_id)


def test_reporter_lets_refusals_propagate(env: AuditEnv) -> None:
    # Reporting in another service's name.
    reporter = AuditReporter(env.as_(CONSENT), "records", clock=lambda: NOW_MS / 1000)
    with pytest.raises(grpc.RpcError) as raised:
        reporter.report(audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_SUCCESS, actor_id="prac-1")
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A caller that may not record at all (a patient) is refused the whole request.
    with pytest.raises(grpc.RpcError) as denied:
        AuditReporter(env.as_(PATIENT), "records").report(
            audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_SUCCESS, actor_id="prac-1")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert env.store.head()[0] == 0


def test_concurrent_reports_share_requests_and_each_gets_its_own_durable_receipt(env: AuditEnv) -> None:
    sent: list[int] = []
    authed = env.as_(RECORDS)

    class Counting:
        def RecordEvent(self, request: audit_pb2.RecordEventRequest, **kw: object) -> audit_pb2.AuditReceipt:
            sent.append(1)
            return authed.RecordEvent(request, **kw)

        def RecordEvents(self, request: audit_pb2.RecordEventsRequest, **kw: object) -> audit_pb2.RecordEventsResponse:
            sent.append(len(request.events))
            return authed.RecordEvents(request, **kw)

    reporter = AuditReporter(Counting(), "records", clock=lambda: NOW_MS / 1000)
    receipts: dict[str, audit_pb2.AuditReceipt] = {}
    start = threading.Barrier(32)

    def report(i: int) -> None:
        start.wait()
        receipts[f"rec-{i}"] = reporter.report(audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_SUCCESS,
                                               actor_id="prac-1", patient_id="psn-9", record_id=f"rec-{i}")

    threads = [threading.Thread(target=report, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(sent) == 32 and len(sent) < 32  # grouped into fewer requests than reports
    stored = {s.event.record_id: s for s in env.store.history("psn-9")}
    assert len(stored) == 32
    for record_id, receipt in receipts.items():  # each caller got the receipt of its own event, durable
        assert (stored[record_id].sequence, stored[record_id].event_hash) == (receipt.sequence, receipt.event_hash)
    assert env.store.verify().ok


def test_a_refusal_in_a_batch_reaches_only_its_reporter(env: AuditEnv) -> None:
    authed = env.as_(RECORDS)
    gate = threading.Event()

    class Slow:  # holds the first request until the others have queued behind it, so they share the next
        def RecordEvent(self, request: audit_pb2.RecordEventRequest, **kw: object) -> audit_pb2.AuditReceipt:
            gate.wait(10)
            return authed.RecordEvent(request, **kw)

        def RecordEvents(self, request: audit_pb2.RecordEventsRequest, **kw: object) -> audit_pb2.RecordEventsResponse:
            gate.wait(10)
            return authed.RecordEvents(request, **kw)

    reporter = AuditReporter(Slow(), "records", clock=lambda: NOW_MS / 1000)
    outcomes: dict[str, object] = {}

    def report(name: str, **fields: object) -> None:
        try:
            outcomes[name] = reporter.report(audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_SUCCESS,
                                             actor_id="prac-1", **fields)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[name] = exc

    threads = [threading.Thread(target=report, args=(f"ok-{i}",), kwargs={"patient_id": "psn-1"}) for i in range(6)]
    threads.append(threading.Thread(target=report, args=("bad",), kwargs={"alert": True}))  # alert needs a patient
    batcher = reporter._batcher
    for t in threads[:2]:  # these two fill both flusher slots, each sending its event alone
        t.start()
    wait_until(lambda: batcher._in_flight == 2 and not batcher._queue, "two requests in flight")
    for t in threads[2:]:
        t.start()
    wait_until(lambda: len(batcher._queue) == 5, "the other reports queued behind them")
    gate.set()
    for t in threads:
        t.join(timeout=30)
    bad = outcomes.pop("bad")
    assert isinstance(bad, AuditRefused) and bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.message.startswith("event.patient_id:")
    assert all(isinstance(r, audit_pb2.AuditReceipt) for r in outcomes.values())
    assert len(env.store.history("psn-1")) == 6


def test_a_bad_event_in_a_batch_is_refused_alone(env: AuditEnv) -> None:
    response = env.call("RecordEvents", audit_pb2.RecordEventsRequest(events=[
        event(reason="good 1"),
        event(time_ms=NOW_MS + 3_600_000),  # the reporter's clock is off by an hour
        event(service="consent"),  # another service's name
        event(ledger_checkpoint=b"x"),  # only the audit service publishes checkpoints
        event(reason="good 2"),
    ]), RECORDS)
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["receipt", "refusal", "refusal", "refusal", "receipt"]
    codes = [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT]
    assert [r.refusal.code for r in response.results[1:4]] == [c.value[0] for c in codes]
    assert response.results[1].refusal.message.startswith("event.time_ms:")
    assert "event.service" in response.results[2].refusal.message
    assert [s.event.reason for s in env.store.history("psn-1")] == ["good 2", "good 1"]
    assert [r.receipt.sequence for r in (response.results[0], response.results[4])] == [1, 2]


def test_a_batch_is_idempotent_on_event_ids(env: AuditEnv) -> None:
    first, again = event(reason="once"), event(reason="other")
    again.event_id = first.event_id
    response = env.call("RecordEvents", audit_pb2.RecordEventsRequest(events=[first, again]), RECORDS)
    retried = env.call("RecordEvents", audit_pb2.RecordEventsRequest(events=[first]), RECORDS)
    receipts = [r.receipt for r in (*response.results, *retried.results)]
    assert len({(r.sequence, r.event_hash) for r in receipts}) == 1
    assert env.store.head()[0] == 1


def test_batch_limits_are_named(env: AuditEnv) -> None:
    code, details = status_of(lambda: env.call("RecordEvents", audit_pb2.RecordEventsRequest(), RECORDS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events:")
    too_many = audit_pb2.RecordEventsRequest(events=[event() for _ in range(501)])
    code, details = status_of(lambda: env.call("RecordEvents", too_many, RECORDS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events: at most 500")


def test_reporter_fails_closed_when_audit_is_down() -> None:
    channel = grpc.insecure_channel("127.0.0.1:1")  # nothing listens there
    try:
        stub = PeerStub("audit", audit_pb2_grpc.AuditServiceStub(channel), timeout=2)
        with pytest.raises(Unavailable, match="audit service"):
            AuditReporter(stub, "records").report(
                audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_SUCCESS, actor_id="prac-1")
    finally:
        channel.close()


def test_reporter_retries_with_the_same_event_id() -> None:
    seen: list[str] = []

    class Flaky:
        def RecordEvent(self, request: audit_pb2.RecordEventRequest, **_: object) -> audit_pb2.AuditReceipt:
            seen.append(request.event.event_id)
            if len(seen) == 1:
                raise Unavailable("audit service", "connection reset")
            return audit_pb2.AuditReceipt(sequence=7)

    receipt = AuditReporter(Flaky(), "records").report(
        audit_pb2.AUDIT_ACTION_READ, audit_pb2.AUDIT_OUTCOME_SUCCESS, actor_id="prac-1")
    assert receipt.sequence == 7 and len(seen) == 2 and seen[0] == seen[1]
