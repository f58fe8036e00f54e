"""Following the ledger (carechain.consent.following): consent changes audited however submitted, commits seen."""

# ruff: noqa: F811 - test parameters named like the imported fixtures are how pytest injects them
from __future__ import annotations

import uuid

import grpc
from consent_fixtures import (  # noqa: F401 - clock and env are fixtures
    PATIENT,
    PATIENT_CALLER,
    Env,
    clock,
    decide,
    env,
    grant,
    oncology_policy,
    revoke_tx,
    status_of,
)
from consent_ledger_fake import (
    SEALER,
    sealed_grant,
)

from carechain.audit.v1 import audit_pb2
from carechain.consent.state import ConsentState
from carechain.consent.v1 import consent_pb2
from carechain.ledger.v1 import ledger_pb2


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


def test_revocation_committed_by_another_consent_instance_is_seen(env: Env) -> None:
    consent_id = grant(env).consent_id
    assert decide(env).effect == consent_pb2.DECISION_EFFECT_PERMIT
    env.ledger.submit(None, revoke_tx(consent_id))  # straight to the ledger
    assert decide(env).effect == consent_pb2.DECISION_EFFECT_DENY


def test_audit_outage_fails_the_grant(env: Env) -> None:
    env.audit.down = True
    code, details = status_of(lambda: grant(env))
    assert code == grpc.StatusCode.UNAVAILABLE and "audit" in details
