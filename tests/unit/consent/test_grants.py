"""Grants, revocations and delegations (carechain.consent.grants) through in-process gRPC."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import uuid

import grpc
from consent_fixtures import (  # noqa: F401 - clock and env are fixtures
    CONSENT,
    OTHER_PATIENT,
    PATIENT,
    PATIENT_CALLER,
    RECORDS_CALLER,
    TREAT,
    Clock,
    Env,
    clock,
    decide,
    env,
    grant,
    grant_tx,
    oncology_policy,
    revoke_tx,
    status_of,
)
from consent_ledger_fake import (
    CHAIN,
    sealed_grant,
)

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent import rules as consent_rules
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller


def test_patient_grants_consent_which_is_committed_and_audited(env: Env) -> None:
    record = grant(env)
    assert record.status == consent_pb2.CONSENT_STATUS_ACTIVE
    assert record.patient_id == "pat-1" and record.policy == oncology_policy()
    assert record.granted_log_index == len(env.ledger.log) - 1
    [event] = env.audit.events
    assert event.action == audit_pb2.AUDIT_ACTION_GRANT_CONSENT
    assert event.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS
    assert (event.actor_id, event.patient_id, event.service) == ("pat-1", "pat-1", "consent")
    listed = env.call("ListConsents", consent_pb2.ListConsentsRequest(), PATIENT_CALLER)
    assert [x.consent_id for x in listed.consents] == [record.consent_id]


def test_patient_may_not_grant_for_another_patient(env: Env) -> None:
    request = consent_pb2.GrantConsentRequest(transaction=grant_tx(signer=PATIENT, patient_id="pat-2"))
    code, details = status_of(lambda: env.call("GrantConsent", request, PATIENT_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "its own" in details
    # nor submit another patient's signed transaction
    request = consent_pb2.GrantConsentRequest(transaction=grant_tx(signer=OTHER_PATIENT, patient_id="pat-2"))
    code, details = status_of(lambda: env.call("GrantConsent", request, PATIENT_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "signed by the calling patient" in details
    assert not env.audit.events


def test_invalid_policy_is_rejected_naming_the_field(env: Env) -> None:
    policy = oncology_policy()
    del policy.provisions[0].purposes[:]
    request = consent_pb2.GrantConsentRequest(transaction=grant_tx(policy=policy))
    code, details = status_of(lambda: env.call("GrantConsent", request, PATIENT_CALLER))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # The opened policy, named like SealPolicyRequest.policy (validate_grant_policy, as SealPolicy checks it).
    assert details.startswith("policy.provisions[0].purposes:")


def test_wrong_payload_is_rejected(env: Env) -> None:
    consent_id = grant(env).consent_id
    request = consent_pb2.GrantConsentRequest(transaction=revoke_tx(consent_id))
    code, details = status_of(lambda: env.call("GrantConsent", request, PATIENT_CALLER))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("transaction.body:")
    code, details = status_of(lambda: env.call("GrantConsent", consent_pb2.GrantConsentRequest(), PATIENT_CALLER))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("transaction:")


def test_duplicate_consent_id_is_refused_and_not_audited(env: Env) -> None:
    consent_id = grant(env).consent_id
    env.audit.events.clear()
    # Same consent id again: refused before reaching the ledger.
    request = consent_pb2.GrantConsentRequest(transaction=grant_tx(consent_id=consent_id))
    code, _ = status_of(lambda: env.call("GrantConsent", request, PATIENT_CALLER))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert not env.audit.events


def test_revoke_then_next_decision_denies(env: Env) -> None:
    consent_id = grant(env).consent_id
    permit = decide(env)
    assert permit.effect == consent_pb2.DECISION_EFFECT_PERMIT

    revoked = env.call("RevokeConsent", consent_pb2.RevokeConsentRequest(transaction=revoke_tx(consent_id)),
                       PATIENT_CALLER)
    assert revoked.status == consent_pb2.CONSENT_STATUS_REVOKED and revoked.revoked_log_index > 0
    assert env.audit.events[-1].action == audit_pb2.AUDIT_ACTION_REVOKE_CONSENT

    denied = decide(env)
    assert denied.effect == consent_pb2.DECISION_EFFECT_DENY
    assert denied.reason == f"denied: consent {consent_id} was revoked"
    assert not denied.decision_token


def test_patient_cannot_revoke_another_patients_consent(env: Env) -> None:
    consent_id = grant(env).consent_id
    other = Caller("pat-2", c.PRINCIPAL_KIND_PATIENT)
    request = consent_pb2.RevokeConsentRequest(transaction=revoke_tx(consent_id, OTHER_PATIENT, "pat-2"))
    code, _ = status_of(lambda: env.call("RevokeConsent", request, other))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    request = consent_pb2.RevokeConsentRequest(transaction=revoke_tx(str(uuid.uuid4())))
    code, _ = status_of(lambda: env.call("RevokeConsent", request, PATIENT_CALLER))
    assert code == grpc.StatusCode.NOT_FOUND


def test_list_consents_is_for_the_patient_or_services(env: Env) -> None:
    consent_id = grant(env).consent_id
    by_service = env.call("ListConsents", consent_pb2.ListConsentsRequest(patient_id="pat-1"), RECORDS_CALLER)
    assert [x.consent_id for x in by_service.consents] == [consent_id]
    code, _ = status_of(lambda: env.call("ListConsents", consent_pb2.ListConsentsRequest(patient_id="pat-1"),
                                         Caller("pat-2", c.PRINCIPAL_KIND_PATIENT)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = status_of(lambda: env.call("ListConsents", consent_pb2.ListConsentsRequest(patient_id="pat-1"),
                                         Caller("prac-onc", c.PRINCIPAL_KIND_PRACTITIONER)))
    assert code == grpc.StatusCode.PERMISSION_DENIED


# --- delegates ----------------------------------------------------------------------------------

GUARDIAN = Ed25519Signer.generate("guardian-1")
GUARDIAN_CALLER = Caller("guardian-1", c.PRINCIPAL_KIND_PATIENT, "org-a")


def delegate_tx(delegate_id="guardian-1", signer=PATIENT, revoke=False, **period) -> ledger_pb2.Transaction:
    if revoke:
        payload = {"revoke_delegate": ledger_pb2.RevokeDelegate(patient_id="pat-1", delegate_id=delegate_id)}
    else:
        payload = {"register_delegate": ledger_pb2.RegisterDelegate(
            patient_id="pat-1", delegate_id=delegate_id, relationship=policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN,
            period=c.Period(**period))}
    return transactions.sign_transaction(transactions.new_body(CHAIN, signer.key_id, **payload), signer)


def test_a_delegate_grants_and_revokes_for_the_patient(env: Env) -> None:
    delegation = env.call("RegisterDelegate", consent_pb2.RegisterDelegateRequest(transaction=delegate_tx()),
                          PATIENT_CALLER)
    assert delegation.status == consent_pb2.DELEGATION_STATUS_ACTIVE
    assert delegation.relationship == policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN
    record = env.call("GrantConsent", consent_pb2.GrantConsentRequest(transaction=grant_tx(signer=GUARDIAN)),
                      GUARDIAN_CALLER)
    assert record.patient_id == "pat-1" and record.granted_by == "guardian-1"
    assert decide(env).effect == consent_pb2.DECISION_EFFECT_PERMIT
    assert "by a delegate of the patient" in env.audit.events[-1].reason
    listed = env.call("ListConsents", consent_pb2.ListConsentsRequest(patient_id="pat-1"), GUARDIAN_CALLER)
    assert [x.consent_id for x in listed.consents] == [record.consent_id]
    env.call("RevokeConsent", consent_pb2.RevokeConsentRequest(
        transaction=revoke_tx(record.consent_id, signer=GUARDIAN)), GUARDIAN_CALLER)
    assert decide(env).effect == consent_pb2.DECISION_EFFECT_DENY


def test_a_revoked_or_expired_delegate_may_not_act(env: Env, clock: Clock) -> None:
    env.call("RegisterDelegate", consent_pb2.RegisterDelegateRequest(transaction=delegate_tx()), PATIENT_CALLER)
    env.call("RevokeDelegate", consent_pb2.RevokeDelegateRequest(transaction=delegate_tx(revoke=True)),
             PATIENT_CALLER)
    [listed] = env.call("ListDelegates", consent_pb2.ListDelegatesRequest(), PATIENT_CALLER).delegations
    assert listed.status == consent_pb2.DELEGATION_STATUS_REVOKED
    request = consent_pb2.GrantConsentRequest(transaction=grant_tx(signer=GUARDIAN))
    code, details = status_of(lambda: env.call("GrantConsent", request, GUARDIAN_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "delegate" in details
    # Registered again with a period that has ended: still not allowed.
    now_ms = int(clock.now * 1000)
    env.call("RegisterDelegate", consent_pb2.RegisterDelegateRequest(
        transaction=delegate_tx(start_ms=now_ms - 1000, end_ms=now_ms)), PATIENT_CALLER)
    code, _ = status_of(lambda: env.call("GrantConsent", consent_pb2.GrantConsentRequest(
        transaction=grant_tx(signer=GUARDIAN)), GUARDIAN_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_only_the_patient_registers_delegates_and_they_must_exist(env: Env) -> None:
    code, _ = status_of(lambda: env.call("RegisterDelegate", consent_pb2.RegisterDelegateRequest(
        transaction=delegate_tx(signer=GUARDIAN)), GUARDIAN_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, details = status_of(lambda: env.call("RegisterDelegate", consent_pb2.RegisterDelegateRequest(
        transaction=delegate_tx("nobody")), PATIENT_CALLER))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(
        "transaction.body.register_delegate.delegate_id")
    code, _ = status_of(lambda: env.call("RegisterDelegate", consent_pb2.RegisterDelegateRequest(
        transaction=delegate_tx("org-a")), PATIENT_CALLER))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# --- FHIR export --------------------------------------------------------------------------------

def test_export_consent_as_fhir_round_trips(env: Env) -> None:
    from carechain.consent.fhir_consent import consent_from_fhir

    record = grant(env)
    exported = env.call("ExportConsent", consent_pb2.ExportConsentRequest(consent_id=record.consent_id),
                        PATIENT_CALLER)
    imported = consent_from_fhir(exported.consent_json)
    assert imported.policy == record.policy and imported.patient_id == "pat-1"
    assert imported.consent_id == record.consent_id
    other = Caller("pat-2", c.PRINCIPAL_KIND_PATIENT, "org-a")
    code, _ = status_of(lambda: env.call("ExportConsent", consent_pb2.ExportConsentRequest(
        consent_id=record.consent_id), other))
    assert code == grpc.StatusCode.NOT_FOUND
    assert env.call("ExportConsent", consent_pb2.ExportConsentRequest(consent_id=record.consent_id),
                    RECORDS_CALLER).consent_json == exported.consent_json


# --- ledger privacy: sealed policies (docs/security.md, "Ledger privacy") -----------------------


def test_seal_policy_then_grant_keeps_the_policy_off_the_ledger_in_clear(env: Env) -> None:
    consent_id = str(uuid.uuid4())
    answer = env.call("SealPolicy", consent_pb2.SealPolicyRequest(
        patient_id="pat-1", consent_id=consent_id, policy=oncology_policy()), PATIENT_CALLER)
    sealed = answer.sealed_policy
    assert consent_rules.policy_attested(ledger_pb2.GrantConsent(
        consent_id=consent_id, patient_id="pat-1", sealed_policy=sealed,
        policy_attestation=answer.policy_attestation), CHAIN, CONSENT.public_key_bytes())
    grant = ledger_pb2.GrantConsent(consent_id=consent_id, patient_id="pat-1", sealed_policy=sealed,
                                    policy_attestation=answer.policy_attestation)
    tx = transactions.sign_transaction(transactions.new_body(CHAIN, "pat-1", grant_consent=grant), PATIENT)

    record = env.call("GrantConsent", consent_pb2.GrantConsentRequest(transaction=tx), PATIENT_CALLER)
    assert record.policy == oncology_policy()
    committed = transactions.decode_body(env.ledger.log[-1].transaction).grant_consent
    assert not committed.HasField("policy") and committed.sealed_policy == sealed


def test_seal_policy_checks_the_caller_the_policy_and_the_consent_id(env: Env) -> None:
    def seal(caller: Caller, **fields: object):
        request = consent_pb2.SealPolicyRequest(**{"patient_id": "pat-1", "consent_id": str(uuid.uuid4()),
                                                   "policy": oncology_policy(), **fields})
        return status_of(lambda: env.call("SealPolicy", request, caller))

    code, details = seal(Caller("pat-2", c.PRINCIPAL_KIND_PATIENT, "org-a"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert seal(RECORDS_CALLER)[0] == grpc.StatusCode.PERMISSION_DENIED
    code, details = seal(PATIENT_CALLER, policy=policy_pb2.ConsentPolicy())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "policy.provisions" in details
    # The consent rules (what validators rely on through the attestation): a purpose and an actor on
    # every top-level permit.
    no_purpose = policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision(
        type=policy_pb2.PROVISION_TYPE_PERMIT, actors=[policy_pb2.ConsentActor(practitioner_id="prac-onc")])])
    code, details = seal(PATIENT_CALLER, policy=no_purpose)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "policy.provisions[0].purposes" in details
    no_actor = policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision(
        type=policy_pb2.PROVISION_TYPE_PERMIT, purposes=[TREAT])])
    code, details = seal(PATIENT_CALLER, policy=no_actor)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "policy.provisions[0].actors" in details
    code, details = seal(PATIENT_CALLER, consent_id="not-a-uuid")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "consent_id" in details
    existing = grant(env)
    code, _ = seal(PATIENT_CALLER, consent_id=existing.consent_id)
    assert code == grpc.StatusCode.ALREADY_EXISTS


def test_grant_refuses_a_clear_policy_or_one_sealed_for_another_consent(env: Env) -> None:
    clear = ledger_pb2.GrantConsent(consent_id=str(uuid.uuid4()), patient_id="pat-1", policy=oncology_policy())
    moved = sealed_grant(str(uuid.uuid4()), "pat-1", oncology_policy())
    moved.consent_id = str(uuid.uuid4())  # the sealed bytes belong to another consent id
    unattested = sealed_grant(str(uuid.uuid4()), "pat-1", oncology_policy(), attested_by=None)
    self_attested = sealed_grant(str(uuid.uuid4()), "pat-1", oncology_policy(), attested_by=PATIENT)
    for grant_message, field in ((clear, "grant_consent.policy"), (moved, "grant_consent.sealed_policy"),
                                 (unattested, "grant_consent.policy_attestation"),
                                 (self_attested, "grant_consent.policy_attestation")):
        tx = transactions.sign_transaction(transactions.new_body(CHAIN, "pat-1", grant_consent=grant_message),
                                           PATIENT)
        code, details = status_of(lambda t=tx: env.call("GrantConsent", consent_pb2.GrantConsentRequest(transaction=t),
                                                        PATIENT_CALLER))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details
    assert not env.audit.events and not env.call("ListConsents", consent_pb2.ListConsentsRequest(),
                                                 PATIENT_CALLER).consents
