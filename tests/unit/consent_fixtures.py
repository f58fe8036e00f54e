"""The in-process consent service with a fake ledger and audit trail: fixtures shared by the consent tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from consent_ledger_fake import (
    CHAIN,
    CONSENT_SIGNER,
    SEALER,
    FakeLedger,
    register_principal,
    register_record,
    sealed_grant,
)

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent.policy import BreakGlassRules
from carechain.consent.server import ConsentServicer, register_consent
from carechain.consent.state import ConsentState
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc, policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import Unavailable
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Authenticator, Caller, caller_claims
from carechain.runtime.config import ConsentSettings
from carechain.runtime.server import start_service

IDENTITY = Ed25519Signer.generate(TOKEN_ISSUER_ID)
CONSENT = CONSENT_SIGNER  # svc-consent: signs decisions and attests sealed policies
OPERATOR = Ed25519Signer.generate("operator")
RECORDS = Ed25519Signer.generate("svc-records")
PATIENT = Ed25519Signer.generate("pat-1")
OTHER_PATIENT = Ed25519Signer.generate("pat-2")

PATIENT_CALLER = Caller("pat-1", c.PRINCIPAL_KIND_PATIENT, "org-a")
RECORDS_CALLER = Caller("svc-records", c.PRINCIPAL_KIND_SERVICE)
TREAT = c.PURPOSE_OF_USE_TREAT


class FakeAudit:
    """AuditService.RecordEvent stand-in that keeps the events, or fails when down."""

    def __init__(self) -> None:
        self.events: list[audit_pb2.AuditEvent] = []
        self.down = False

    def RecordEvent(self, request: audit_pb2.RecordEventRequest, **_: object) -> audit_pb2.AuditReceipt:
        if self.down:
            raise Unavailable("audit service", "connection refused")
        self.events.append(request.event)
        return audit_pb2.AuditReceipt(sequence=len(self.events), event_hash=bytes(32))


@dataclass
class Env:
    stub: consent_pb2_grpc.ConsentServiceStub
    ledger: FakeLedger
    audit: FakeAudit

    def call(self, method: str, request: object, caller: Caller, aud: str = audience("consent")):
        token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(caller, aud), 60)
        return getattr(self.stub, method)(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)


class Clock:
    """A settable clock (seconds), so windows can end without waiting."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def env(clock: Clock) -> Iterator[Env]:
    ledger = FakeLedger()
    register_principal(ledger, OPERATOR, "pat-1", c.PRINCIPAL_KIND_PATIENT, "org-a")
    register_principal(ledger, OPERATOR, "pat-2", c.PRINCIPAL_KIND_PATIENT, "org-a")
    register_principal(ledger, OPERATOR, "prac-onc", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
    register_principal(ledger, OPERATOR, "prac-gp", c.PRINCIPAL_KIND_PRACTITIONER, "org-b", "general practice")
    register_principal(ledger, OPERATOR, "org-a", c.PRINCIPAL_KIND_ORGANIZATION)
    register_principal(ledger, OPERATOR, "prac-er", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "emergency-medicine")
    register_principal(ledger, OPERATOR, "guardian-1", c.PRINCIPAL_KIND_PATIENT, "org-a")
    register_record(ledger, RECORDS, "rec-normal", "pat-1")
    register_record(ledger, RECORDS, "rec-onc", "pat-1", [c.SENSITIVITY_CATEGORY_ONCOLOGY])
    register_record(ledger, RECORDS, "rec-psy", "pat-1", [c.SENSITIVITY_CATEGORY_MENTAL_HEALTH])
    audit = FakeAudit()
    servicer = ConsentServicer(
        Authenticator(TrustBundle({TOKEN_ISSUER_ID: IDENTITY.public_key_bytes()}), audience("consent")),
        ConsentState(SEALER), ledger, AuditReporter(audit, "consent"), CONSENT, 30.0,
        clock=clock, break_glass=BreakGlassRules(frozenset({"emergency-medicine"}), 4 * 3_600_000), chain_id=CHAIN,
    )
    running = start_service("consent", ConsentSettings(listen_address="127.0.0.1:0"), register_consent(servicer))
    channel = grpc.insecure_channel(running.address)
    try:
        yield Env(consent_pb2_grpc.ConsentServiceStub(channel), ledger, audit)
    finally:
        channel.close()
        running.stop()


def oncology_policy() -> policy_pb2.ConsentPolicy:
    return policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision(
        type=policy_pb2.PROVISION_TYPE_PERMIT,
        actors=[policy_pb2.ConsentActor(specialty="oncology")],
        purposes=[TREAT],
        categories=[c.SENSITIVITY_CATEGORY_ONCOLOGY],
    )])


def grant_tx(signer=PATIENT, patient_id="pat-1", policy=None, consent_id=None) -> ledger_pb2.Transaction:
    body = transactions.new_body(CHAIN, signer.key_id, grant_consent=sealed_grant(
        consent_id or str(uuid.uuid4()), patient_id, policy or oncology_policy()))
    return transactions.sign_transaction(body, signer)


def revoke_tx(consent_id: str, signer=PATIENT, patient_id="pat-1") -> ledger_pb2.Transaction:
    body = transactions.new_body(CHAIN, signer.key_id, revoke_consent=ledger_pb2.RevokeConsent(
        consent_id=consent_id, patient_id=patient_id))
    return transactions.sign_transaction(body, signer)


def grant(env: Env, **kwargs) -> consent_pb2.ConsentRecord:
    return env.call("GrantConsent", consent_pb2.GrantConsentRequest(transaction=grant_tx(**kwargs)), PATIENT_CALLER)


def decide(env: Env, record_id="rec-onc", actor_id="prac-onc", purpose=TREAT, caller=RECORDS_CALLER,
           break_glass_reason=""):
    return env.call("Decide", consent_pb2.DecideRequest(
        actor_id=actor_id, record_id=record_id, purpose=purpose, break_glass=bool(break_glass_reason),
        break_glass_reason=break_glass_reason), caller)


DENY = consent_pb2.DECISION_EFFECT_DENY
GLASS = "unconscious on arrival, no consent on file"


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


# --- grants and revocations ---------------------------------------------------------------

