"""The AuditService surface (carechain.audit.server): who may call what, authentication, wiring from settings."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import pytest
from audit_fixtures import CONSENT, OPERATOR, PATIENT, PRACTITIONER, RECORDS, AuditEnv, event, running_audit, status_of

from carechain.audit.server import build
from carechain.audit.v1 import audit_pb2
from carechain.core.layout import NetworkLayout
from carechain.runtime.auth import Caller
from carechain.runtime.config import AuditSettings
from carechain.runtime.server import start_service


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[AuditEnv]:
    with running_audit(tmp_path) as running:
        yield running


def test_missing_event_is_rejected(env: AuditEnv) -> None:
    code, details = status_of(lambda: env.call("RecordEvent", audit_pb2.RecordEventRequest(), RECORDS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("event:")


@pytest.mark.parametrize("caller", [PATIENT, PRACTITIONER, OPERATOR])
def test_only_services_record_events(env: AuditEnv, caller: Caller) -> None:
    code, _ = status_of(lambda: env.record(caller))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_a_service_cannot_report_in_another_services_name(env: AuditEnv) -> None:
    code, details = status_of(lambda: env.record(CONSENT, service="records"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "event.service" in details


def test_unauthenticated_calls_are_refused(env: AuditEnv) -> None:
    code, _ = status_of(lambda: env.stub.RecordEvent(audit_pb2.RecordEventRequest(event=event()), timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_verify_is_for_services_and_the_operator(env: AuditEnv) -> None:
    assert env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(), RECORDS).ok
    code, _ = status_of(lambda: env.call("VerifyAuditChain", audit_pb2.VerifyAuditChainRequest(), PATIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_build_serves_from_a_network_layout(tmp_path: pathlib.Path) -> None:
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
