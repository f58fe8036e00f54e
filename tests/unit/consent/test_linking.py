"""Consent after a patient identity link: the network identity's consents govern the linked patient's records."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import uuid

from consent_fixtures import (  # noqa: F401 - clock and env are fixtures
    OTHER_PATIENT,
    PATIENT,
    PATIENT_CALLER,
    RECORDS,
    Env,
    clock,
    decide,
    env,
    grant,
    oncology_policy,
    revoke_tx,
)
from consent_ledger_fake import register_record, sealed_grant

from carechain.common.v1 import common_pb2 as c
from carechain.consent.v1 import consent_pb2
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller

IDENTITY_CALLER = Caller("svc-identity", c.PRINCIPAL_KIND_SERVICE)

PERMIT = consent_pb2.DECISION_EFFECT_PERMIT


def link(env: Env, network: str = "pat-1", linked: str = "pat-2") -> None:
    """Commit a valid LinkPatientIdentity (the contract rules are the ledger's, tested in tests/unit/ledger)."""
    env.ledger.append(PATIENT, link_patient_identity=ledger_pb2.LinkPatientIdentity(
        network_patient_id=network, linked_patient_id=linked, organization_id="org-a"))


def unlink(env: Env, network: str = "pat-1", linked: str = "pat-2") -> None:
    env.ledger.append(PATIENT, unlink_patient_identity=ledger_pb2.UnlinkPatientIdentity(
        network_patient_id=network, linked_patient_id=linked))


def test_a_record_written_before_the_link_is_governed_by_the_network_identitys_consent(env: Env) -> None:
    register_record(env.ledger, RECORDS, "rec-onc-2", "pat-2", [c.SENSITIVITY_CATEGORY_ONCOLOGY])
    consent_id = grant(env).consent_id  # pat-1's consent: oncologists may read oncology records
    before = decide(env, record_id="rec-onc-2")
    assert before.effect != PERMIT
    link(env)
    after = decide(env, record_id="rec-onc-2")
    assert after.effect == PERMIT and after.consent_id == consent_id
    # The token stays bound to the record's own pseudonym (its data key's), as the key release checks; the
    # read is the network patient's.
    assert (after.patient_id, after.network_patient_id) == ("pat-2", "pat-1")
    assert (before.patient_id, before.network_patient_id) == ("pat-2", "pat-2")
    # The network identity's revocation governs it too, and so does an unlink.
    env.call("RevokeConsent", consent_pb2.RevokeConsentRequest(transaction=revoke_tx(consent_id)), PATIENT_CALLER)
    assert decide(env, record_id="rec-onc-2").effect != PERMIT


def test_after_an_unlink_the_linked_patients_own_consents_apply_again(env: Env) -> None:
    register_record(env.ledger, RECORDS, "rec-onc-2", "pat-2", [c.SENSITIVITY_CATEGORY_ONCOLOGY])
    grant(env)
    link(env)
    assert decide(env, record_id="rec-onc-2").effect == PERMIT
    unlink(env)
    assert decide(env, record_id="rec-onc-2").effect != PERMIT
    # The linked patient's own consent (not the network identity's) now decides.
    env.ledger.append(OTHER_PATIENT, grant_consent=sealed_grant(str(uuid.uuid4()), "pat-2", oncology_policy()))
    assert decide(env, record_id="rec-onc-2").effect == PERMIT


def test_a_check_after_the_unlink_refuses_a_token_issued_under_the_link(env: Env) -> None:
    register_record(env.ledger, RECORDS, "rec-onc-2", "pat-2", [c.SENSITIVITY_CATEGORY_ONCOLOGY])
    grant(env)
    link(env)
    decision = decide(env, record_id="rec-onc-2")
    assert decision.effect == PERMIT
    unlink(env)
    checked = env.call("CheckDecision", consent_pb2.CheckDecisionRequest(decision_token=decision.decision_token),
                       IDENTITY_CALLER)
    assert not checked.permitted

