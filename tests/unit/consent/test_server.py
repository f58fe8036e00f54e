"""ConsentService through in-process gRPC: the access table, authentication and build()."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import base64
import logging

import grpc
import pytest
from consent_fixtures import (  # noqa: F401 - clock and env are fixtures
    IDENTITY,
    PATIENT_CALLER,
    RECORDS_CALLER,
    TREAT,
    Env,
    clock,
    decide,
    env,
    grant,
    grant_tx,
    status_of,
)

from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc
from carechain.core.layout import audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import ConsentSettings
from carechain.runtime.server import start_service


@pytest.mark.parametrize("caller", [
    Caller("prac-onc", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology"),
    Caller("svc-records", c.PRINCIPAL_KIND_SERVICE),
    Caller("operator", c.PRINCIPAL_KIND_OPERATOR),
])
def test_only_patients_grant_consent(env: Env, caller: Caller) -> None:
    request = consent_pb2.GrantConsentRequest(transaction=grant_tx())
    code, _ = status_of(lambda: env.call("GrantConsent", request, caller))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_token_for_another_service_is_refused(env: Env) -> None:
    request = consent_pb2.GrantConsentRequest(transaction=grant_tx())
    code, _ = status_of(lambda: env.call("GrantConsent", request, PATIENT_CALLER, aud=audience("records")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("caller", [
    PATIENT_CALLER,
    Caller("prac-onc", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology"),
    Caller("svc-ledger", c.PRINCIPAL_KIND_SERVICE),
])
def test_decide_is_only_for_the_records_service(env: Env, caller: Caller) -> None:
    grant(env)
    code, _ = status_of(lambda: decide(env, caller=caller))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_build_starts_from_a_network_layout_even_before_the_ledger_is_up(tmp_path) -> None:
    from carechain.consent.server import build
    from carechain.core.layout import NetworkLayout

    layout = NetworkLayout(tmp_path)
    layout.ensure()
    settings = ConsentSettings(
        listen_address="127.0.0.1:0", data_dir=layout.service_dir("consent"), trust_dir=layout.trust_dir,
        signing_key_file=layout.key_file("svc-consent"), identity_address="127.0.0.1:1",
        ledger_address="127.0.0.1:1", audit_address="127.0.0.1:1", rpc_timeout_seconds=2,
    )
    register, closers = build(settings)
    running = start_service("consent", settings, register, closers)
    channel = grpc.insecure_channel(running.address)
    try:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(RECORDS_CALLER, audience("consent")), 60)
        with pytest.raises(grpc.RpcError) as raised:  # the real issuer key is not IDENTITY's
            stub.Decide(consent_pb2.DecideRequest(actor_id="a", record_id="r", purpose=TREAT),
                        metadata=[("authorization", f"Bearer {token}")], timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()
        running.stop()


class _Records(logging.Handler):
    """Keeps the records of one logger (the server's JSON log setup does not matter to it)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("segment", ["header", "payload"])
def test_a_deeply_nested_bearer_token_is_unauthenticated_without_a_traceback(env: Env, segment: str) -> None:
    # Issue 12: a deep JSON array in a bearer token made json.loads raise RecursionError before any
    # auth check: UNKNOWN on every authenticated RPC, with a traceback logged each time. 2,000 levels
    # recurse past Python's limit yet keep the header under gRPC's 8 KiB metadata soft limit, above which
    # gRPC refuses a random share of calls with RESOURCE_EXHAUSTED before our code runs.
    deep = base64.urlsafe_b64encode(b"[" * 2000 + b"]" * 2000).rstrip(b"=").decode()
    real_header, real_payload, signature = issue_token(
        IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(PATIENT_CALLER, audience("consent")), 60)[0].split(".")
    token = f"{deep}.{real_payload}.{signature}" if segment == "header" else f"{real_header}.{deep}.{signature}"
    server_log = logging.getLogger("carechain.runtime.server")
    seen, level = _Records(), server_log.level
    server_log.addHandler(seen)
    server_log.setLevel(logging.DEBUG)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            env.stub.ListConsents(consent_pb2.ListConsentsRequest(),
                                  metadata=[("authorization", f"Bearer {token}")], timeout=10)
    finally:
        server_log.removeHandler(seen)
        server_log.setLevel(level)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "token" in raised.value.details() and deep not in raised.value.details()
    # Other calls of the in-process network may log meanwhile (e.g. the consent follower's ledger reads).
    assert "request refused" in [r.getMessage() for r in seen.records]
    assert not [r for r in seen.records if r.exc_info or r.levelno >= logging.ERROR]
