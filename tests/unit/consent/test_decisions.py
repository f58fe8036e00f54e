"""Decisions (carechain.consent.decisions) through in-process gRPC: permits, denials, break-glass, re-checks."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import concurrent.futures

import grpc
import pytest
from consent_fixtures import (  # noqa: F401 - clock and env are fixtures
    CONSENT,
    DENY,
    GLASS,
    OPERATOR,
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
    revoke_tx,
    status_of,
)
from consent_ledger_fake import (
    register_record,
)

from carechain.common.v1 import common_pb2 as c
from carechain.consent.decisions import IssuedDecisions
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.decision_claims import DecisionClaims, issue_decision_token
from carechain.core.layout import DECISION_ISSUER_ID, audience
from carechain.core.tokens import CLOCK_SKEW_SECONDS, DECISION_TOKEN_TYPE, issue_token, verify_token
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller

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


@pytest.mark.parametrize(("record_id", "actor_id", "reason"), [
    ("rec-psy", "prac-onc", "denied: a sensitive category of the record is named by no consent"),
    ("rec-onc", "prac-gp", "denied: no active consent permits practitioner prac-gp for TREAT"),
    # An organisation is decided for (a SMART Backend Services client): permitted only by a recipient naming it.
    ("rec-onc", "org-a", "denied: no active consent permits organization org-a for TREAT"),
    ("rec-onc", "nobody", "denied: actor nobody is not a registered practitioner or organisation"),
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
    assert decision.record_erased and not decision.decision_token


def test_erasure_is_told_only_to_readers_consent_would_have_permitted(env: Env) -> None:
    grant(env)
    env.ledger.append(PATIENT, erase_records=ledger_pb2.EraseRecords(patient_id="pat-1", record_ids=["rec-onc"]))
    decision = decide(env, actor_id="prac-gp")
    assert decision.effect == consent_pb2.DECISION_EFFECT_DENY and not decision.record_erased
    assert decision.reason == "denied: no active consent permits practitioner prac-gp for TREAT"


def test_unknown_record_and_bad_requests(env: Env) -> None:
    code, _ = status_of(lambda: decide(env, record_id="rec-missing"))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = status_of(lambda: decide(env, purpose=c.PURPOSE_OF_USE_UNSPECIFIED))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("purpose:")
    code, details = status_of(lambda: decide(env, actor_id=""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("actor_id:")


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


def test_check_decisions_answers_each_token_in_order_as_check_decision_does(env: Env) -> None:
    consent = grant(env)
    held_on, revoked_on = decide(env), decide(env)
    forged, _ = issue_token(Ed25519Signer.generate(DECISION_ISSUER_ID), DECISION_TOKEN_TYPE,
                            {"sub": "prac-onc", "aud": audience("identity"), "rid": "rec-onc"}, 30)
    batch = env.call("CheckDecisions", consent_pb2.CheckDecisionsRequest(
        decision_tokens=[held_on.decision_token, forged]), IDENTITY_CALLER)
    assert [r.permitted for r in batch.results] == [True, False]
    assert batch.results[1].reason.startswith("decision token rejected")
    env.call("RevokeConsent", consent_pb2.RevokeConsentRequest(transaction=revoke_tx(consent.consent_id)),
             PATIENT_CALLER)
    after = env.call("CheckDecisions", consent_pb2.CheckDecisionsRequest(
        decision_tokens=[held_on.decision_token, revoked_on.decision_token]), IDENTITY_CALLER)
    # The revocation committed before the call reaches every token of it, as each CheckDecision would say.
    assert [r.permitted for r in after.results] == [False, False]
    assert [r.reason for r in after.results] == [check(env, held_on.decision_token).reason,
                                                 check(env, revoked_on.decision_token).reason]
    assert all(r.reason.startswith(f"consent revoked: consent {consent.consent_id}") for r in after.results)
    code, _ = status_of(lambda: env.call("CheckDecisions", consent_pb2.CheckDecisionsRequest(
        decision_tokens=[held_on.decision_token]), RECORDS_CALLER))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, details = status_of(lambda: env.call("CheckDecisions", consent_pb2.CheckDecisionsRequest(
        decision_tokens=[held_on.decision_token, ""]), IDENTITY_CALLER))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("decision_tokens[1]")


def test_a_deactivated_practitioner_gets_no_decision_and_its_earlier_ones_stop_holding(env: Env) -> None:
    grant(env)
    decision = decide(env)
    assert decision.effect == consent_pb2.DECISION_EFFECT_PERMIT
    env.ledger.append(OPERATOR, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="prac-onc"))
    held = check(env, decision.decision_token)
    assert not held.permitted and "no longer a practitioner" in held.reason
    assert decide(env).effect == DENY


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


@pytest.mark.parametrize(("change", "claim"), [
    ({"bg": True, "bgs": "soon", "bge": 1}, "bgs"),
    ({"pou": "TREAT"}, "pou"),
    ({"act": None}, "act"),
    ({"rid": ["rec-onc"]}, "rid"),
])
def test_check_decision_refuses_a_token_with_a_mistyped_claim_by_name(env: Env, change: dict, claim: str) -> None:
    # Signed with consent's own key (a bug or a stolen key must not crash or widen the re-check).
    grant(env)
    permit = verify_token(decide(env).decision_token, {DECISION_ISSUER_ID: CONSENT.public_key_bytes()},
                          DECISION_TOKEN_TYPE, audience("identity"))
    claims = {k: v for k, v in {**permit, **change}.items() if v is not None and k not in ("iss", "iat", "exp", "jti")}
    token, _ = issue_token(CONSENT, DECISION_TOKEN_TYPE, claims, 30)
    held = check(env, token)
    assert not held.permitted
    assert held.reason.startswith(f"decision token rejected: decision token claim {claim} ")


# --- DecideMany: several requests on one synchronised state -------------------------------------

def decide_request(record_id="rec-onc", actor_id="prac-onc", purpose=TREAT, reason="") -> consent_pb2.DecideRequest:
    return consent_pb2.DecideRequest(actor_id=actor_id, record_id=record_id, purpose=purpose,
                                     break_glass=bool(reason), break_glass_reason=reason)


def decide_many(env: Env, *requests: consent_pb2.DecideRequest,
                caller=RECORDS_CALLER) -> list[consent_pb2.DecideResult]:
    return list(env.call("DecideMany", consent_pb2.DecideManyRequest(requests=requests), caller).results)


def test_decide_many_answers_each_request_as_decide_does_in_order(env: Env) -> None:
    grant(env)
    asked = [decide_request(), decide_request(record_id="rec-psy"), decide_request(actor_id="prac-gp"),
             decide_request(record_id="rec-missing"), decide_request(purpose=c.PURPOSE_OF_USE_UNSPECIFIED),
             decide_request(actor_id=""), decide_request(actor_id="prac-er", purpose=ETREAT, reason=" ")]
    results = decide_many(env, *asked)
    assert len(results) == len(asked)
    for request, result in zip(asked, results, strict=True):
        try:
            single = env.call("Decide", request, RECORDS_CALLER)
        except grpc.RpcError as exc:
            assert result.WhichOneof("result") == "error"
            assert (result.error.code, result.error.message) == (exc.code().value[0], exc.details())
            continue
        assert result.WhichOneof("result") == "decision"
        got = result.decision
        assert (got.effect, got.reason, got.consent_id, got.provision_path, got.patient_id) == (
            single.effect, single.reason, single.consent_id, single.provision_path, single.patient_id)
        assert bool(got.decision_token) == bool(single.decision_token)
    assert results[0].decision.effect == consent_pb2.DECISION_EFFECT_PERMIT
    assert results[1].decision.effect == results[2].decision.effect == DENY
    assert results[3].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert results[4].error.message.startswith("purpose:") and results[5].error.message.startswith("actor_id:")
    assert results[6].error.message.startswith("break_glass_reason:")


def test_decide_many_permits_are_redeemable_and_a_later_revocation_stops_them(env: Env) -> None:
    consent_id = grant(env).consent_id
    first, second = (r.decision for r in decide_many(env, decide_request(), decide_request()))
    assert first.decision_id != second.decision_id
    assert check(env, first.decision_token).permitted
    env.call("RevokeConsent", consent_pb2.RevokeConsentRequest(transaction=revoke_tx(consent_id)), PATIENT_CALLER)
    held = check(env, second.decision_token)
    assert not held.permitted and held.reason.startswith("consent revoked")
    (after,) = decide_many(env, decide_request())
    assert after.decision.effect == DENY and not after.decision.decision_token


def test_decide_many_sees_a_revocation_committed_straight_to_the_ledger(env: Env) -> None:
    consent_id = grant(env).consent_id
    env.ledger.commit(revoke_tx(consent_id))  # not through this service: only the next sync can see it
    (result,) = decide_many(env, decide_request())
    assert result.decision.effect == DENY


def test_decide_many_reads_the_ledger_once_for_the_whole_batch(env: Env) -> None:
    grant(env)
    before = env.ledger.list_calls
    decide(env)
    one = env.ledger.list_calls - before
    before = env.ledger.list_calls
    results = decide_many(env, *[decide_request() for _ in range(20)])
    assert all(r.decision.effect == consent_pb2.DECISION_EFFECT_PERMIT for r in results)
    assert env.ledger.list_calls - before == one


@pytest.mark.parametrize("count", [0, 257])
def test_decide_many_refuses_an_empty_or_oversized_batch(env: Env, count: int) -> None:
    code, details = status_of(lambda: decide_many(env, *[decide_request() for _ in range(count)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("requests:")


@pytest.mark.parametrize("caller", [PATIENT_CALLER, IDENTITY_CALLER,
                                    Caller("prac-onc", c.PRINCIPAL_KIND_PRACTITIONER, "org-a", "oncology")])
def test_decide_many_is_only_for_the_records_service(env: Env, caller: Caller) -> None:
    grant(env)
    code, _ = status_of(lambda: decide_many(env, decide_request(), caller=caller))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_concurrent_decisions_after_a_revocation_all_deny(env: Env) -> None:
    """Concurrent callers share ledger reads, but each is answered on a state read after it arrived."""
    consent_id = grant(env).consent_id
    permits = [decide(env).decision_token for _ in range(8)]
    env.ledger.commit(revoke_tx(consent_id))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        checks = list(pool.map(lambda token: check(env, token), permits))
        decisions = list(pool.map(lambda _: decide(env), range(8)))
    assert not any(held.permitted for held in checks)
    assert all(d.effect == DENY for d in decisions)


# --- CheckDecision of the tokens this replica issued ---------------------------------------------

def test_an_issued_token_is_remembered_once_and_not_past_its_lifetime() -> None:
    now = [1_000.0]
    issued = IssuedDecisions(clock=lambda: now[0])
    claims = DecisionClaims("prac-onc", "rec-onc", "pat-1", TREAT, c.CONSENT_ACTION_ACCESS, decision_id="d-1",
                            expires_at=1_030.0)
    issued.remember("token-1", claims)
    assert issued.take("token-2") is None  # never issued here
    assert issued.take("token-1") == claims
    assert issued.take("token-1") is None  # taken once; a second check verifies the token in full
    issued.remember("token-1", claims)
    now[0] = 1_030.0 + CLOCK_SKEW_SECONDS - 1  # about to expire even with the skew verification allows
    assert issued.take("token-1") is None


def test_remembered_tokens_are_bounded_and_expired_ones_dropped() -> None:
    now = [1_000.0]
    issued = IssuedDecisions(clock=lambda: now[0], max_entries=3)
    for i in range(5):
        issued.remember(f"t-{i}", DecisionClaims("a", "r", "p", TREAT, 1, decision_id=str(i), expires_at=1_030.0))
    assert len(issued) == 3 and issued.take("t-0") is None and issued.take("t-4") is not None
    now[0] = 2_000.0
    issued.remember("late", DecisionClaims("a", "r", "p", TREAT, 1, decision_id="x", expires_at=2_030.0))
    assert len(issued) == 1


def test_a_token_of_another_replica_is_verified_and_rechecked_on_the_current_state(env: Env) -> None:
    consent_id = grant(env).consent_id
    claims = DecisionClaims("prac-onc", "rec-onc", "pat-1", TREAT, c.CONSENT_ACTION_ACCESS, consent_id=consent_id)
    token, _ = issue_decision_token(CONSENT, claims, 30)  # same key, not issued by this replica
    assert check(env, token).permitted
    env.ledger.commit(revoke_tx(consent_id))
    second, _ = issue_decision_token(CONSENT, claims, 30)
    held = check(env, second)
    assert not held.permitted and held.reason.startswith("consent revoked")


def test_a_remembered_permit_is_still_stopped_by_a_revocation_at_key_release(env: Env) -> None:
    consent_id = grant(env).consent_id
    tokens = [decide(env).decision_token for _ in range(2)]
    assert check(env, tokens[0]).permitted
    env.ledger.commit(revoke_tx(consent_id))  # straight to the ledger, between decision and key release
    held = check(env, tokens[1])
    assert not held.permitted and held.reason.startswith("consent revoked")
    again = check(env, tokens[0])  # a second check of the same token: verified in full, and still revoked
    assert not again.permitted and again.reason.startswith("consent revoked")
