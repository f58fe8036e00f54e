"""FHIR Consent meaning through the public ConsentService API: what a patient grants is what is enforced.

Each test plays the patient (granting a FHIR Consent read by the real import) and the records service
(asking Decide), against the in-process ConsentService of test_consent_server.
"""
# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them

from __future__ import annotations

import json

import grpc
from consent_fixtures import (  # noqa: F401 - clock and env are the fixtures of the in-process service
    PATIENT_CALLER,
    RECORDS_CALLER,
    Env,
    clock,
    env,
    grant,
    status_of,
)
from consent_ledger_fake import register_record

from carechain.common.v1 import common_pb2 as c
from carechain.consent import fhir_consent as f
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.crypto import Ed25519Signer

PERMIT = consent_pb2.DECISION_EFFECT_PERMIT
DENY = consent_pb2.DECISION_EFFECT_DENY
GP = Ed25519Signer.generate("prac-gp")  # signs the records prac-gp writes (author_id = prac-gp)


def fhir_policy(*provisions: dict, **extra) -> f.ImportedConsent:
    return f.consent_from_fhir({
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": f.CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": f.LOINC, "code": "59284-0"}]}],
        "provision": {"type": "deny", "provision": list(provisions)}, **extra})


def role_actor(reference: str, role: str = "IRCP") -> dict:
    return {"role": {"coding": [{"system": f.PARTICIPATION_TYPE, "code": role}]}, "reference": {"reference": reference}}


TREAT = [{"system": f.ACT_REASON, "code": "TREAT"}]


def ask(env: Env, record_id: str, actor_id: str = "prac-onc", purpose: int = c.PURPOSE_OF_USE_TREAT,
        action: int = c.CONSENT_ACTION_ACCESS) -> consent_pb2.Decision:
    return env.call("Decide", consent_pb2.DecideRequest(actor_id=actor_id, record_id=record_id, purpose=purpose,
                                                        action=action), RECORDS_CALLER)


def test_a_mental_health_permit_does_not_open_normal_data(env: Env) -> None:
    grant(env, policy=fhir_policy({"type": "permit", "purpose": TREAT,
                                   "actor": [role_actor("Practitioner/prac-onc")],
                                   "securityLabel": [{"system": f.ACT_CODE, "code": "PSY"}]}).policy)
    assert ask(env, "rec-psy").effect == PERMIT
    normal = ask(env, "rec-normal")
    assert normal.effect == DENY and "is limited to security labels this record does not carry" in normal.reason


def test_withholding_data_authored_by_a_practitioner_is_not_denying_them(env: Env) -> None:
    register_record(env.ledger, GP, "rec-by-gp", "pat-1", organization_id="org-b")
    # A top-level permit names its recipients (consent rules): here org-a's practitioners and prac-gp.
    grant(env, policy=fhir_policy(
        {"type": "permit", "purpose": TREAT,
         "actor": [role_actor("Organization/org-a"), role_actor("Practitioner/prac-gp")]},
        {"type": "deny", "actor": [role_actor("Practitioner/prac-gp", "AUT")]}).policy)
    withheld = ask(env, "rec-by-gp")
    assert withheld.effect == DENY and "records authored by practitioner prac-gp" in withheld.reason
    assert ask(env, "rec-normal").effect == PERMIT  # written by another author
    assert ask(env, "rec-normal", actor_id="prac-gp").effect == PERMIT  # prac-gp still reads other data


def test_a_deny_without_action_also_denies_disclosure_and_purposes_follow_the_hierarchy(env: Env) -> None:
    grant(env, policy=fhir_policy(
        {"type": "permit", "purpose": TREAT,
         "actor": [role_actor("Organization/org-a"), role_actor("Practitioner/prac-gp")],
         "action": [{"coding": [{"system": f.CONSENT_ACTION, "code": c}]} for c in ("access", "disclose")]},
        {"type": "deny", "actor": [role_actor("Practitioner/prac-gp")]}).policy)
    assert ask(env, "rec-normal", action=c.CONSENT_ACTION_DISCLOSE).effect == PERMIT
    assert ask(env, "rec-normal", purpose=c.PURPOSE_OF_USE_ETREAT).effect == PERMIT  # ETREAT is a kind of TREAT
    assert ask(env, "rec-normal", purpose=c.PURPOSE_OF_USE_HRESCH).effect == DENY
    disclose = ask(env, "rec-normal", actor_id="prac-gp", action=c.CONSENT_ACTION_DISCLOSE)
    assert disclose.effect == DENY and "denied by consent" in disclose.reason


def test_an_open_substance_use_permit_is_refused(env: Env) -> None:
    # What a client could sign directly, bypassing the FHIR import (which refuses it too).
    open_permit = policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision(
        type=policy_pb2.PROVISION_TYPE_PERMIT, purposes=[c.PURPOSE_OF_USE_TREAT],
        categories=[c.SENSITIVITY_CATEGORY_SUBSTANCE_USE])])
    code, details = status_of(lambda: grant(env, policy=open_permit))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("policy.provisions[0].actors:") and "42 CFR Part 2" in details


def test_export_returns_what_the_patient_signed(env: Env) -> None:
    imported = fhir_policy(
        {"type": "permit", "purpose": TREAT, "actor": [role_actor("Practitioner/prac-onc")]},
        dateTime="2025-01-02T10:00:00+01:00", performer=[{"reference": "RelatedPerson/guardian-1"}],
        policyRule={"coding": [{"system": f.ACT_CODE, "code": "OPTOUT"}]},
        verification=[{"verified": True, "verifiedWith": {"reference": "RelatedPerson/guardian-1"}}])
    record = grant(env, policy=imported.policy)
    exported = json.loads(env.call("ExportConsent", consent_pb2.ExportConsentRequest(
        consent_id=record.consent_id), PATIENT_CALLER).consent_json)
    assert exported["policyRule"]["coding"][0]["code"] == "OPTOUT"
    assert exported["performer"] == [{"reference": "RelatedPerson/guardian-1"}]
    assert exported["dateTime"] == "2025-01-02T10:00:00+01:00"
    assert exported["verification"][0]["verifiedWith"] == {"reference": "RelatedPerson/guardian-1"}
    assert f.consent_from_fhir(exported).policy == record.policy
