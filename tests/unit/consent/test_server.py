"""ConsentService through in-process gRPC, with a fake ledger and a fake audit service."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import uuid

import grpc
import pytest
from consent_fixtures import (  # noqa: F401 - clock and env are fixtures
    CONSENT,
    DENY,
    GLASS,
    IDENTITY,
    OPERATOR,
    OTHER_PATIENT,
    PATIENT,
    PATIENT_CALLER,
    RECORDS,
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
    SEALER,
    register_record,
    sealed_grant,
)

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c
from carechain.consent import rules as consent_rules
from carechain.consent.state import ConsentState
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc, policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import DECISION_ISSUER_ID, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, DECISION_TOKEN_TYPE, issue_token, verify_token
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import ConsentSettings
from carechain.runtime.server import start_service


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


def test_a_grant_submitted_straight_to_the_ledger_is_audited_once(env: Env) -> None:
    # The attack: skip the consent service's GrantConsent (and so, before, its audit) by submitting to the
    # ledger directly, with a policy sealed and attested by SealPolicy (the only way to a valid grant).
    direct = sealed_grant(str(uuid.uuid4()), "pat-1", oncology_policy())
    logged = env.ledger.append(PATIENT, grant_consent=direct)
    env.ledger.append(PATIENT, revoke_consent=ledger_pb2.RevokeConsent(consent_id=direct.consent_id,
                                                                       patient_id="pat-1"))
    assert not env.audit.events
    env.call("ListConsents", consent_pb2.ListConsentsRequest(), PATIENT_CALLER)  # any sync derives the events
    granted, revoked = env.audit.events
    assert granted.action == audit_pb2.AUDIT_ACTION_GRANT_CONSENT and granted.actor_id == "pat-1"
    assert granted.reason == f"consent {direct.consent_id} granted at log index {logged.log_index}"
    assert revoked.action == audit_pb2.AUDIT_ACTION_REVOKE_CONSENT
    env.call("ListConsents", consent_pb2.ListConsentsRequest(), PATIENT_CALLER)
    assert len(env.audit.events) == 2
    # A replica (or a restart) replays the log: the same events, under the same ids (the store keeps one).
    replica = ConsentState(SEALER)
    replica.sync(env.ledger.ListTransactions)
    assert [c.log_index for c in replica.take_changes()] == [logged.log_index, logged.log_index + 1]


def test_consent_changes_wait_for_the_audit_service_and_are_not_lost(env: Env) -> None:
    env.audit.down = True
    direct = sealed_grant(str(uuid.uuid4()), "pat-1", oncology_policy())
    env.ledger.append(PATIENT, grant_consent=direct)
    env.call("ListConsents", consent_pb2.ListConsentsRequest(), PATIENT_CALLER)
    assert not env.audit.events
    env.audit.down = False
    env.call("ListConsents", consent_pb2.ListConsentsRequest(), PATIENT_CALLER)
    [event] = env.audit.events
    assert direct.consent_id in event.reason


def test_patient_may_not_grant_for_another_patient(env: Env) -> None:
    request = consent_pb2.GrantConsentRequest(transaction=grant_tx(signer=PATIENT, patient_id="pat-2"))
    code, details = status_of(lambda: env.call("GrantConsent", request, PATIENT_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "its own" in details
    # nor submit another patient's signed transaction
    request = consent_pb2.GrantConsentRequest(transaction=grant_tx(signer=OTHER_PATIENT, patient_id="pat-2"))
    code, details = status_of(lambda: env.call("GrantConsent", request, PATIENT_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "signed by the calling patient" in details
    assert not env.audit.events


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


def test_revocation_committed_by_another_consent_instance_is_seen(env: Env) -> None:
    consent_id = grant(env).consent_id
    assert decide(env).effect == consent_pb2.DECISION_EFFECT_PERMIT
    env.ledger.submit(None, revoke_tx(consent_id))  # straight to the ledger
    assert decide(env).effect == consent_pb2.DECISION_EFFECT_DENY


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


# --- decisions ------------------------------------------------------------------------------

def test_permit_carries_a_verifiable_decision_token(env: Env) -> None:
    consent_id = grant(env).consent_id
    decision = decide(env)
    assert decision.effect == consent_pb2.DECISION_EFFECT_PERMIT
    assert decision.consent_id == consent_id and decision.provision_path == "provision[0]"
    assert decision.patient_id == "pat-1"
    assert "actor specialty oncology" in decision.reason and "ONCOLOGY" in decision.reason
    claims = verify_token(decision.decision_token, {DECISION_ISSUER_ID: CONSENT.public_key_bytes()},
                          DECISION_TOKEN_TYPE, audience("identity"))
    assert claims["sub"] == "prac-onc"
    assert claims["rid"] == "rec-onc"
    assert claims["psn"] == "pat-1"
    assert claims["pou"] == "PURPOSE_OF_USE_TREAT"
    assert claims["act"] == "CONSENT_ACTION_ACCESS"
    assert claims["cid"] == consent_id
    assert claims["jti"] == decision.decision_id
    assert decision.expires_at_ms == pytest.approx(claims["exp"] * 1000, abs=1)


@pytest.mark.parametrize("caller", [
    PATIENT_CALLER,
    Caller("prac-onc", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology"),
    Caller("svc-ledger", c.PRINCIPAL_KIND_SERVICE),
])
def test_decide_is_only_for_the_records_service(env: Env, caller: Caller) -> None:
    grant(env)
    code, _ = status_of(lambda: decide(env, caller=caller))
    assert code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(("record_id", "actor_id", "reason"), [
    ("rec-psy", "prac-onc", "denied: a sensitive category of the record is named by no consent"),
    ("rec-onc", "prac-gp", "denied: no active consent permits practitioner prac-gp for TREAT"),
    ("rec-onc", "org-a", "denied: actor org-a is not a registered practitioner"),
    ("rec-onc", "nobody", "denied: actor nobody is not a registered practitioner"),
])
def test_denials_explain_why(env: Env, record_id: str, actor_id: str, reason: str) -> None:
    grant(env)
    decision = decide(env, record_id=record_id, actor_id=actor_id)
    assert decision.effect == consent_pb2.DECISION_EFFECT_DENY
    assert decision.reason == reason
    assert decision.patient_id == "pat-1" and not decision.decision_token


def test_erased_record_is_denied(env: Env) -> None:
    grant(env)
    env.ledger.append(PATIENT, erase_records=ledger_pb2.EraseRecords(patient_id="pat-1", record_ids=["rec-onc"]))
    decision = decide(env)
    assert decision.effect == consent_pb2.DECISION_EFFECT_DENY and decision.reason == "denied: record erased"


def test_unknown_record_and_bad_requests(env: Env) -> None:
    code, _ = status_of(lambda: decide(env, record_id="rec-missing"))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = status_of(lambda: decide(env, purpose=c.PURPOSE_OF_USE_UNSPECIFIED))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("purpose:")
    code, details = status_of(lambda: decide(env, actor_id=""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("actor_id:")


def test_audit_outage_fails_the_grant(env: Env) -> None:
    env.audit.down = True
    code, details = status_of(lambda: grant(env))
    assert code == grpc.StatusCode.UNAVAILABLE and "audit" in details


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


# --- break-glass ------------------------------------------------------------------------------

IDENTITY_CALLER = Caller("svc-identity", c.PRINCIPAL_KIND_SERVICE)
ETREAT = c.PURPOSE_OF_USE_ETREAT


def check(env: Env, token: str) -> consent_pb2.CheckDecisionResponse:
    return env.call("CheckDecision", consent_pb2.CheckDecisionRequest(decision_token=token), IDENTITY_CALLER)


def _break_glass_windows(env: Env) -> list[ledger_pb2.BreakGlassAccess]:
    bodies = [ledger_pb2.TransactionBody.FromString(x.transaction.body) for x in env.ledger.log if x.result.valid]
    return [b.break_glass_access for b in bodies if b.WhichOneof("payload") == "break_glass_access"]


def test_break_glass_opens_a_normal_record_once_recorded_on_the_ledger(env: Env, clock: Clock) -> None:
    decision = decide(env, "rec-normal", "prac-er", ETREAT, break_glass_reason=GLASS)
    assert decision.effect == consent_pb2.DECISION_EFFECT_PERMIT and decision.break_glass
    assert decision.reason.startswith("break-glass: emergency access by practitioner prac-er")
    start = int(clock.now * 1000)
    assert decision.break_glass_expires_at_ms == start + 4 * 3_600_000
    [window] = _break_glass_windows(env)
    assert (window.actor_id, window.patient_id, window.started_at_ms) == ("prac-er", "pat-1", start)
    claims = verify_token(decision.decision_token, {DECISION_ISSUER_ID: CONSENT.public_key_bytes()},
                          DECISION_TOKEN_TYPE, audience("identity"))
    assert claims["bg"] is True and claims["bge"] == decision.break_glass_expires_at_ms
    # A second use inside the window reuses it: nothing new on the ledger.
    clock.now += 3600
    again = decide(env, "rec-normal", "prac-er", ETREAT, break_glass_reason=GLASS)
    assert again.break_glass and again.break_glass_expires_at_ms == decision.break_glass_expires_at_ms
    assert len(_break_glass_windows(env)) == 1
    assert check(env, again.decision_token).permitted


def test_break_glass_never_opens_sensitive_records(env: Env) -> None:
    for record_id in ("rec-psy", "rec-onc"):
        decision = decide(env, record_id, "prac-er", ETREAT, break_glass_reason=GLASS)
        assert decision.effect == consent_pb2.DECISION_EFFECT_DENY and not decision.break_glass
        assert "break-glass never opens sensitive categories" in decision.reason
    assert not _break_glass_windows(env)


def test_break_glass_needs_an_emergency_specialty_and_etreat(env: Env) -> None:
    assert decide(env, "rec-normal", "prac-onc", ETREAT, break_glass_reason=GLASS).effect == DENY
    assert decide(env, "rec-normal", "prac-er", TREAT, break_glass_reason=GLASS).effect == DENY
    assert not _break_glass_windows(env)


def test_etreat_alone_never_breaks_the_glass(env: Env) -> None:
    # The attack: an emergency physician asks with purpose ETREAT only, hoping for an implied break-glass.
    decision = decide(env, "rec-normal", "prac-er", ETREAT)
    assert decision.effect == DENY and not decision.break_glass and not decision.decision_token
    assert not _break_glass_windows(env)


def test_a_break_glass_request_needs_a_reason(env: Env) -> None:
    for request in (
        consent_pb2.DecideRequest(actor_id="prac-er", record_id="rec-normal", purpose=ETREAT, break_glass=True),
        consent_pb2.DecideRequest(actor_id="prac-er", record_id="rec-normal", purpose=ETREAT,
                                  break_glass_reason="no flag"),
        consent_pb2.DecideRequest(actor_id="prac-er", record_id="rec-normal", purpose=ETREAT, break_glass=True,
                                  break_glass_reason="x" * 501),
    ):
        code, details = status_of(lambda r=request: env.call("Decide", r, RECORDS_CALLER))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("break_glass_reason:"), details
    assert not _break_glass_windows(env)


def test_break_glass_token_stops_holding_when_its_window_ends(env: Env, clock: Clock) -> None:
    decision = decide(env, "rec-normal", "prac-er", ETREAT, break_glass_reason=GLASS)
    assert check(env, decision.decision_token).permitted
    clock.now += 4 * 3600 - 10  # the token itself is verified with real time; the window with the service clock
    assert check(env, decision.decision_token).permitted
    clock.now += 10
    held = check(env, decision.decision_token)
    assert not held.permitted and "break-glass window" in held.reason
    # A new emergency later starts a new recorded window (with its own alert at read time).
    later = decide(env, "rec-normal", "prac-er", ETREAT, break_glass_reason=GLASS)
    assert later.break_glass and later.break_glass_expires_at_ms > decision.break_glass_expires_at_ms
    assert len(_break_glass_windows(env)) == 2


# --- revocation reaches decisions issued before it ---------------------------------------------

def test_check_decision_denies_after_revocation(env: Env) -> None:
    consent = grant(env)
    decision = decide(env)
    assert decision.effect == consent_pb2.DECISION_EFFECT_PERMIT
    assert check(env, decision.decision_token).permitted
    env.call("RevokeConsent", consent_pb2.RevokeConsentRequest(transaction=revoke_tx(consent.consent_id)),
             PATIENT_CALLER)
    held = check(env, decision.decision_token)
    assert not held.permitted
    assert held.reason.startswith(f"consent revoked: consent {consent.consent_id} was revoked at log index")


def test_check_decision_is_for_identity_only_and_rejects_foreign_tokens(env: Env) -> None:
    grant(env)
    decision = decide(env)
    code, _ = status_of(lambda: env.call("CheckDecision", consent_pb2.CheckDecisionRequest(
        decision_token=decision.decision_token), RECORDS_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    forged, _ = issue_token(Ed25519Signer.generate(DECISION_ISSUER_ID), DECISION_TOKEN_TYPE,
                            {"sub": "prac-onc", "aud": audience("identity"), "rid": "rec-onc"}, 30)
    held = check(env, forged)
    assert not held.permitted and held.reason.startswith("decision token rejected")


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


def test_a_deactivated_practitioner_gets_no_decision_and_its_earlier_ones_stop_holding(env: Env) -> None:
    grant(env)
    decision = decide(env)
    assert decision.effect == consent_pb2.DECISION_EFFECT_PERMIT
    env.ledger.append(OPERATOR, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="prac-onc"))
    held = check(env, decision.decision_token)
    assert not held.permitted and "no longer a practitioner" in held.reason
    assert decide(env).effect == DENY


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


def test_a_consent_by_code_decides_on_the_sealed_codes_of_the_record(env: Env) -> None:
    """The record's codes come from its sealed ledger metadata, through consent state, into the decision."""
    sct = "http://snomed.info/sct"
    register_record(env.ledger, RECORDS, "rec-htn", "pat-1", codes=[f"{sct}|38341003"])
    register_record(env.ledger, RECORDS, "rec-dm", "pat-1", codes=[f"{sct}|44054006"])
    grant(env, policy=policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision(
        type=policy_pb2.PROVISION_TYPE_PERMIT, purposes=[TREAT],
        actors=[policy_pb2.ConsentActor(practitioner_id="prac-gp")],
        codes=[policy_pb2.FhirCoding(system="urn:oid:2.16.840.1.113883.6.96", code="38341003")])]))
    permitted = decide(env, "rec-htn", "prac-gp")
    assert permitted.effect == consent_pb2.DECISION_EFFECT_PERMIT and "codes" in permitted.reason
    denied = decide(env, "rec-dm", "prac-gp")
    assert denied.effect == consent_pb2.DECISION_EFFECT_DENY
    assert "44054006" not in denied.reason and "38341003" not in denied.reason
    assert decide(env, "rec-normal", "prac-gp").effect == consent_pb2.DECISION_EFFECT_DENY  # no codes
