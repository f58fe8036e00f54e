"""SubmitFhirConsent: a FHIR Consent the patient signed as a JWS becomes svc-consent's grant carrying it.

Through in-process gRPC with the fake ledger (the validators' own checks of the JWS are
tests/unit/ledger/test_consent_jws_contract.py). Each refusal names what is wrong, never a value.
"""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import grpc
import pytest
from consent_fixtures import (  # noqa: F401 - clock is a fixture
    CONSENT,
    IDENTITY,
    OPERATOR,
    OTHER_PATIENT,
    PATIENT,
    RECORDS_CALLER,
    Clock,
    Env,
    FakeAudit,
    clock,
    status_of,
)
from consent_ledger_fake import CHAIN, SEALER, FakeLedger, register_principal

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent import rules as consent_rules
from carechain.consent.server import ConsentServicer, register_consent
from carechain.consent.state import ConsentState
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc, policy_pb2
from carechain.core.consent_jws import body_sha256, sign_consent
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import ConsentSettings
from carechain.runtime.server import start_service

GUARDIAN = Ed25519Signer.generate("guardian-1")
PSEUDONYM = "https://carechain.dev/fhir/NamingSystem/patient-pseudonym"
PATIENT_CALLER = Caller("pat-1", c.PRINCIPAL_KIND_PATIENT, "org-a")
KEYS = {s.key_id: s.public_key_bytes() for s in (PATIENT, OTHER_PATIENT, GUARDIAN)}


def fhir_consent(patient_id: str = "pat-1", consent_id: str = "") -> bytes:
    content = {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": PSEUDONYM, "value": patient_id}},
        "provision": {"type": "deny", "provision": [{
            "type": "permit",
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                            "code": "IRCP"}]},
                       "reference": {"reference": "Practitioner/prac-onc"}}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
        }]},
    }
    if consent_id:
        content["id"] = consent_id
    return json.dumps(content).encode()


@pytest.fixture()
def env(clock: Clock) -> Iterator[Env]:
    ledger = FakeLedger()
    register_principal(ledger, OPERATOR, "pat-1", c.PRINCIPAL_KIND_PATIENT, "org-a")
    register_principal(ledger, OPERATOR, "pat-2", c.PRINCIPAL_KIND_PATIENT, "org-a")
    register_principal(ledger, OPERATOR, "guardian-1", c.PRINCIPAL_KIND_PATIENT, "org-a")
    register_principal(ledger, OPERATOR, "prac-onc", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")
    audit = FakeAudit()
    servicer = ConsentServicer(
        Authenticator(TrustBundle({TOKEN_ISSUER_ID: IDENTITY.public_key_bytes()}), audience("consent")),
        ConsentState(SEALER), ledger, AuditReporter(audit, "consent"), CONSENT, 30.0, clock=clock, chain_id=CHAIN,
        signer_key=KEYS.get, max_skew_ms=120_000,
    )
    running = start_service("consent", ConsentSettings(listen_address="127.0.0.1:0"), register_consent(servicer))
    channel = grpc.insecure_channel(running.address)
    try:
        yield Env(consent_pb2_grpc.ConsentServiceStub(channel), ledger, audit)
    finally:
        channel.close()
        running.stop()


def submit(env: Env, body: bytes, jws: str, caller_id: str = "pat-1", caller: Caller = RECORDS_CALLER):
    return env.call("SubmitFhirConsent", consent_pb2.SubmitFhirConsentRequest(
        consent_json=body, consent_jws=jws, caller_id=caller_id), caller)


def signed(clock: Clock, signer: Ed25519Signer = PATIENT, body: bytes | None = None, patient_id: str = "pat-1",
           **kwargs) -> tuple[bytes, str]:
    body = fhir_consent(patient_id) if body is None else body
    return body, sign_consent(signer, body, patient_id, kwargs.pop("chain", CHAIN), iat=int(clock.now), **kwargs)


def test_a_signed_consent_is_granted_by_svc_consent_carrying_the_patients_jws(env: Env, clock: Clock) -> None:
    body, jws = signed(clock)
    record = submit(env, body, jws)
    assert record.patient_id == "pat-1" and record.granted_by == "pat-1"
    assert record.status == consent_pb2.CONSENT_STATUS_ACTIVE
    assert [a.practitioner_id for a in record.policy.provisions[0].actors] == ["prac-onc"]
    tx = env.ledger.log[-1]
    assert tx.result.valid and tx.transaction.signer_id == "svc-consent"
    grant = transactions.decode_body(tx.transaction).grant_consent
    assert grant.patient_jws.decode() == jws and not grant.HasField("policy")
    # The attestation binds the body hash the patient signed (and not without it).
    assert consent_rules.policy_attested(grant, CHAIN, CONSENT.public_key_bytes(), body_sha256(body))
    assert not consent_rules.policy_attested(grant, CHAIN, CONSENT.public_key_bytes())
    [event] = env.audit.events
    assert (event.action, event.actor_id, event.patient_id) == (audit_pb2.AUDIT_ACTION_GRANT_CONSENT, "pat-1",
                                                                "pat-1")


def test_a_consent_id_given_in_the_resource_is_kept(env: Env, clock: Clock) -> None:
    consent_id = str(uuid.uuid4())
    body, jws = signed(clock, body=fhir_consent(consent_id=consent_id))
    assert submit(env, body, jws).consent_id == consent_id
    body, jws = signed(clock, body=fhir_consent(consent_id=consent_id))
    assert status_of(lambda: submit(env, body, jws))[0] == grpc.StatusCode.ALREADY_EXISTS


def test_an_active_delegate_signs_for_the_patient(env: Env, clock: Clock) -> None:
    delegate = consent_pb2.RegisterDelegateRequest(transaction=transactions.sign_transaction(transactions.new_body(
        CHAIN, "pat-1", register_delegate=ledger_pb2.RegisterDelegate(
            patient_id="pat-1", delegate_id="guardian-1", relationship=policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN)),
        PATIENT))
    env.call("RegisterDelegate", delegate, PATIENT_CALLER)
    body, jws = signed(clock, signer=GUARDIAN)
    record = submit(env, body, jws, caller_id="guardian-1")
    assert record.patient_id == "pat-1" and record.granted_by == "guardian-1"


@pytest.mark.parametrize(("case", "expected", "words"), [
    ("no signature", grpc.StatusCode.UNAUTHENTICATED, "required"),
    ("not a jws", grpc.StatusCode.UNAUTHENTICATED, "compact JWS"),
    ("another key", grpc.StatusCode.UNAUTHENTICATED, "does not verify"),
    ("altered body", grpc.StatusCode.UNAUTHENTICATED, "consent_sha256"),
    ("other chain", grpc.StatusCode.UNAUTHENTICATED, "chain_id"),
    ("stale", grpc.StatusCode.UNAUTHENTICATED, "iat"),
    ("not the caller", grpc.StatusCode.PERMISSION_DENIED, "another principal than the caller"),
    ("another patient", grpc.StatusCode.PERMISSION_DENIED, "only for themselves"),
    ("unknown patient", grpc.StatusCode.PERMISSION_DENIED, "only for themselves"),
    ("names another patient", grpc.StatusCode.INVALID_ARGUMENT, "Consent.patient"),
])
def test_refusals(env: Env, clock: Clock, case: str, expected: grpc.StatusCode, words: str) -> None:
    body, jws, caller_id = *signed(clock), "pat-1"
    if case == "no signature":
        jws = ""
    elif case == "not a jws":
        jws = "abc"
    elif case == "another key":
        body, jws = signed(clock, signer=Ed25519Signer.generate("pat-1"))
    elif case == "altered body":
        body = body.replace(b"TREAT", b"HMARKT")
    elif case == "other chain":
        body, jws = signed(clock, chain="other-chain")
    elif case == "stale":
        clock.now += 3600
    elif case == "not the caller":
        caller_id = "pat-2"
    elif case == "another patient":  # pat-2 signs a consent for pat-1 (not its delegate)
        body, jws = signed(clock, signer=OTHER_PATIENT)
        caller_id = "pat-2"
    elif case == "unknown patient":
        body, jws = signed(clock, patient_id="nobody")
    elif case == "names another patient":
        body, jws = signed(clock, body=fhir_consent("pat-2"))
    code, details = status_of(lambda: submit(env, body, jws, caller_id))
    assert code == expected and words in details, details
    assert "pat-2" not in details and "nobody" not in details
    assert not any(transactions.decode_body(t.transaction).WhichOneof("payload") == "grant_consent"
                   for t in env.ledger.log)


def test_a_bad_consent_is_invalid_argument_naming_the_element(env: Env, clock: Clock) -> None:
    content = json.loads(fhir_consent())
    content["provision"]["provision"][0]["purpose"][0]["code"] = "NOPE"
    body, jws = signed(clock, body=json.dumps(content).encode())
    code, details = status_of(lambda: submit(env, body, jws))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("Consent.provision"), details


def test_only_records_may_relay(env: Env, clock: Clock) -> None:
    body, jws = signed(clock)
    code, _ = status_of(lambda: submit(env, body, jws, caller=PATIENT_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def revocation(consent_id: str) -> bytes:
    return json.dumps({"resourceType": "Consent", "id": consent_id, "status": "inactive"}).encode()


def test_a_signed_revocation_revokes_through_svc_consent(env: Env, clock: Clock) -> None:
    granted = submit(env, *signed(clock))
    body, jws = signed(clock, body=revocation(granted.consent_id))
    revoked = submit(env, body, jws)
    assert revoked.consent_id == granted.consent_id and revoked.status == consent_pb2.CONSENT_STATUS_REVOKED
    tx = env.ledger.log[-1]
    revoke = transactions.decode_body(tx.transaction).revoke_consent
    assert tx.result.valid and tx.transaction.signer_id == "svc-consent"
    assert (revoke.patient_jws.decode(), revoke.revocation_json) == (jws, body)
    assert env.audit.events[-1].action == audit_pb2.AUDIT_ACTION_REVOKE_CONSENT
    assert env.audit.events[-1].actor_id == "pat-1"
    again_body, again = signed(clock, body=revocation(granted.consent_id))
    assert status_of(lambda: submit(env, again_body, again))[0] == grpc.StatusCode.FAILED_PRECONDITION


def test_revocations_of_what_is_not_the_patients_or_with_more_than_the_id_are_refused(env: Env,
                                                                                      clock: Clock) -> None:
    granted = submit(env, *signed(clock))
    unknown_body, unknown = signed(clock, body=revocation(str(uuid.uuid4())))
    assert status_of(lambda: submit(env, unknown_body, unknown))[0] == grpc.StatusCode.NOT_FOUND
    # pat-2 signs a revocation of pat-1's consent for themselves: not theirs (the same answer as unknown).
    other_body, other = signed(clock, signer=OTHER_PATIENT, body=revocation(granted.consent_id), patient_id="pat-2")
    code, details = status_of(lambda: submit(env, other_body, other, caller_id="pat-2"))
    assert code == grpc.StatusCode.NOT_FOUND and "pat-1" not in details
    content = json.loads(fhir_consent(consent_id=granted.consent_id))
    content["status"] = "inactive"
    full_body, full = signed(clock, body=json.dumps(content).encode())
    code, details = status_of(lambda: submit(env, full_body, full))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exactly resourceType, id and status" in details
    assert env.call("ListConsents", consent_pb2.ListConsentsRequest(), PATIENT_CALLER).consents[0].status == \
        consent_pb2.CONSENT_STATUS_ACTIVE
