"""AuditReporter (carechain.audit.events), the client every service reports through, against a real AuditService."""

from __future__ import annotations

import pathlib
import re
import uuid
from collections.abc import Iterator

import grpc
import pytest
from audit_fixtures import CONSENT, NOW_MS, RECORDS, AuditEnv, running_audit

from carechain.audit.events import AuditReporter
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
