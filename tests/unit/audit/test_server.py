"""AuditService through in-process gRPC, and the AuditReporter every service uses."""

from __future__ import annotations

import pathlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from carechain.audit.events import AuditReporter
from carechain.audit.server import AuditServicer, register_audit
from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.common.v1 import common_pb2 as c
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import Unavailable
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.config import AuditSettings
from carechain.runtime.peers import PeerStub
from carechain.runtime.server import start_service

IDENTITY = Ed25519Signer.generate(TOKEN_ISSUER_ID)
RECORDS = Caller("svc-records", c.PRINCIPAL_KIND_SERVICE)
CONSENT = Caller("svc-consent", c.PRINCIPAL_KIND_SERVICE)
PATIENT = Caller("pat-1", c.PRINCIPAL_KIND_PATIENT, "org-a")
OPERATOR = Caller("operator", c.PRINCIPAL_KIND_OPERATOR)
PRACTITIONER = Caller("prac-1", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
NOW_MS = 1_700_000_000_000


def metadata(caller: Caller) -> list[tuple[str, str]]:
    token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("audit")), 60)
    return [("authorization", f"Bearer {token}")]


class _AuthedStub:
    """A stub that always calls as one principal (like a channel with a bearer interceptor)."""

    def __init__(self, stub: audit_pb2_grpc.AuditServiceStub, caller: Caller) -> None:
        self._stub, self._caller = stub, caller

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=metadata(self._caller), **kw)


@dataclass
class Env:
    stub: audit_pb2_grpc.AuditServiceStub
    store: SQLiteAuditStore
    address: str

    def call(self, method: str, request: object, caller: Caller):
        return getattr(self.stub, method)(request, metadata=metadata(caller), timeout=10)

    def as_(self, caller: Caller) -> _AuthedStub:
        return _AuthedStub(self.stub, caller)


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[Env]:
    store = SQLiteAuditStore(tmp_path)
    servicer = AuditServicer(
        Authenticator(TrustBundle({TOKEN_ISSUER_ID: IDENTITY.public_key_bytes()}), audience("audit")),
        store, clock=lambda: NOW_MS / 1000,
    )
    running = start_service("audit", AuditSettings(listen_address="127.0.0.1:0"), register_audit(servicer),
                            [store.close])
    channel = grpc.insecure_channel(running.address)
    try:
        yield Env(audit_pb2_grpc.AuditServiceStub(channel), store, running.address)
    finally:
        channel.close()
        running.stop()


def event(**fields: object) -> audit_pb2.AuditEvent:
    values: dict[str, object] = {
        "event_id": str(uuid.uuid4()), "time_ms": NOW_MS - 10, "service": "records", "actor_id": "prac-1",
        "patient_id": "pat-1", "record_id": "rec-1", "action": audit_pb2.AUDIT_ACTION_READ,
        "outcome": audit_pb2.AUDIT_OUTCOME_SUCCESS, "purpose": c.PURPOSE_OF_USE_TREAT,
    }
    values.update(fields)
    return audit_pb2.AuditEvent(**values)  # type: ignore[arg-type]


def record(env: Env, e: audit_pb2.AuditEvent, caller: Caller = RECORDS) -> audit_pb2.AuditReceipt:
    return env.call("RecordEvent", audit_pb2.RecordEventRequest(event=e), caller)


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def test_recorded_events_are_chained_and_idempotent(env: Env) -> None:
    e = event()
    first = record(env, e)
    second = record(env, event(reason="denied: no consent", outcome=audit_pb2.AUDIT_OUTCOME_DENIED))
    assert (first.sequence, second.sequence) == (1, 2)
    assert len(first.event_hash) == 32
    assert record(env, e) == first
    verified = env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(), OPERATOR)
    assert verified.ok and verified.events_checked == 2


def test_missing_time_is_filled_with_now(env: Env) -> None:
    record(env, event(time_ms=0))
    [stored] = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(), PATIENT).events
    assert stored.event.time_ms == NOW_MS


@pytest.mark.parametrize(("fields", "field_name"), [
    ({"event_id": ""}, "event.event_id"),
    ({"event_id": "not-a-uuid"}, "event.event_id"),
    ({"action": audit_pb2.AUDIT_ACTION_UNSPECIFIED}, "event.action"),
    ({"action": 99}, "event.action"),
    ({"outcome": audit_pb2.AUDIT_OUTCOME_UNSPECIFIED}, "event.outcome"),
    ({"service": ""}, "event.service"),
    ({"actor_id": ""}, "event.actor_id"),
    ({"time_ms": -1}, "event.time_ms"),
    ({"purpose": 42}, "event.purpose"),
])
def test_invalid_events_are_rejected_naming_the_field(env: Env, fields: dict, field_name: str) -> None:
    code, details = status_of(lambda: record(env, event(**fields)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{field_name}:")


def test_missing_event_is_rejected(env: Env) -> None:
    code, details = status_of(lambda: env.call("RecordEvent", audit_pb2.RecordEventRequest(), RECORDS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("event:")


@pytest.mark.parametrize("caller", [PATIENT, PRACTITIONER, OPERATOR])
def test_only_services_record_events(env: Env, caller: Caller) -> None:
    code, _ = status_of(lambda: record(env, event(), caller))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_a_service_cannot_report_in_another_services_name(env: Env) -> None:
    code, details = status_of(lambda: record(env, event(service="records"), CONSENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "event.service" in details


def test_unauthenticated_calls_are_refused(env: Env) -> None:
    code, _ = status_of(lambda: env.stub.RecordEvent(audit_pb2.RecordEventRequest(event=event()), timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_patient_sees_its_own_history_newest_first(env: Env) -> None:
    t = NOW_MS - 10_000
    record(env, event(time_ms=t + 1_000, actor_id="prac-1"))
    record(env, event(time_ms=t + 3_000, actor_id="prac-2", outcome=audit_pb2.AUDIT_OUTCOME_DENIED, reason="denied"))
    record(env, event(time_ms=t + 2_000, patient_id="pat-2"))
    history = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id="pat-1"), PATIENT)
    assert [(s.event.actor_id, s.event.time_ms) for s in history.events] == [("prac-2", t + 3_000),
                                                                             ("prac-1", t + 1_000)]
    bounded = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(since_ms=t + 2_000), PATIENT)
    assert [s.event.time_ms for s in bounded.events] == [t + 3_000]


def test_patient_may_not_read_another_patients_history(env: Env) -> None:
    code, _ = status_of(lambda: env.call("GetAccessHistory",
                                         audit_pb2.GetAccessHistoryRequest(patient_id="pat-2"), PATIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = status_of(lambda: env.call("GetAccessHistory",
                                         audit_pb2.GetAccessHistoryRequest(patient_id="pat-1"), PRACTITIONER))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_services_read_any_history(env: Env) -> None:
    record(env, event(patient_id="pat-2"))
    history = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id="pat-2"), RECORDS)
    assert len(history.events) == 1
    code, details = status_of(lambda: env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(), RECORDS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("patient_id:")
    code, details = status_of(lambda: env.call(
        "GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id="pat-2", since_ms=5, until_ms=5), RECORDS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("until_ms:")


def test_verify_is_for_services_and_the_operator(env: Env) -> None:
    assert env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(), RECORDS).ok
    code, _ = status_of(lambda: env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(), PATIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_tampering_is_reported_by_verify(env: Env) -> None:
    for i in range(3):
        record(env, event(reason=f"read {i}"))
    env.store._db.execute("DELETE FROM audit_events WHERE sequence = 2")  # an attacker with file access
    verified = env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(), OPERATOR)
    assert not verified.ok and verified.first_bad_sequence == 2 and verified.problem


def test_store_failure_is_unavailable(env: Env) -> None:
    env.store.close()  # the database is gone
    code, details = status_of(lambda: record(env, event()))
    assert code == grpc.StatusCode.UNAVAILABLE and "audit store" in details


# --- AuditReporter ---------------------------------------------------------------------------

def test_reporter_fills_id_time_service_and_records_durably(env: Env) -> None:
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


def test_reporter_lets_refusals_propagate(env: Env) -> None:
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


def test_build_serves_from_a_network_layout(tmp_path: pathlib.Path) -> None:
    from carechain.audit.server import build
    from carechain.core.layout import NetworkLayout

    layout = NetworkLayout(tmp_path)
    layout.ensure()
    settings = AuditSettings(listen_address="127.0.0.1:0", data_dir=layout.service_dir("audit"),
                             trust_dir=layout.trust_dir, signing_key_file=layout.key_file("svc-audit"))
    register, closers = build(settings)
    running = start_service("audit", settings, register, closers)
    try:
        assert (layout.service_dir("audit") / "audit.sqlite3").exists()
    finally:
        running.stop()
