"""Decision-token claims: one typed model, written by consent and read by consent and identity."""

from __future__ import annotations

import dataclasses

import pytest

from carechain.common.v1 import common_pb2 as c
from carechain.core.crypto import Ed25519Signer
from carechain.core.decision_claims import (
    DECISION_AUDIENCE,
    DecisionClaims,
    issue_decision_token,
    verify_decision_token,
)
from carechain.core.errors import Unauthenticated
from carechain.core.layout import DECISION_ISSUER_ID
from carechain.core.tokens import ACCESS_TOKEN_TYPE, DECISION_TOKEN_TYPE, issue_token

CONSENT = Ed25519Signer.generate(DECISION_ISSUER_ID)
PERMIT = DecisionClaims("prac-1", "rec-1", "psn-1", c.PURPOSE_OF_USE_TREAT, c.CONSENT_ACTION_ACCESS, "consent-1")
GLASS = DecisionClaims("prac-er", "rec-1", "psn-1", c.PURPOSE_OF_USE_ETREAT, c.CONSENT_ACTION_ACCESS,
                       break_glass=True, break_glass_started_at_ms=1_000, break_glass_expires_at_ms=2_000)


@pytest.mark.parametrize("claims", [PERMIT, GLASS], ids=["consent", "break-glass"])
def test_issued_claims_come_back_typed_with_their_id_and_expiry(claims: DecisionClaims) -> None:
    token, issued = issue_decision_token(CONSENT, claims, 30)
    verified = verify_decision_token(token, CONSENT.public_key_bytes())
    assert verified == issued
    assert issued.decision_id and issued.expires_at > 0
    assert verified == dataclasses.replace(claims, decision_id=issued.decision_id, expires_at=issued.expires_at)


def test_the_wire_names_are_the_short_jwt_claims() -> None:
    assert PERMIT.to_claims() == {"sub": "prac-1", "aud": DECISION_AUDIENCE, "rid": "rec-1", "psn": "psn-1",
                                  "pou": "PURPOSE_OF_USE_TREAT", "act": "CONSENT_ACTION_ACCESS", "cid": "consent-1"}
    assert {"bg": True, "bgs": 1_000, "bge": 2_000}.items() <= GLASS.to_claims().items()


@pytest.mark.parametrize(("change", "claim"), [
    ({"rid": ""}, "rid"),
    ({"rid": 7}, "rid"),
    ({"sub": None}, "sub"),
    ({"psn": ["psn-1"]}, "psn"),
    ({"pou": "TREAT"}, "pou"),
    ({"pou": "PURPOSE_OF_USE_UNSPECIFIED"}, "pou"),
    ({"act": None}, "act"),
    ({"cid": 3}, "cid"),
    ({"bg": "yes"}, "bg"),
    ({"bg": True, "bgs": "1000", "bge": 2_000}, "bgs"),
    ({"bg": True, "bgs": 1_000}, "bge"),
    ({"exp": "soon"}, "exp"),
], ids=lambda value: str(value))
def test_a_missing_or_mistyped_claim_is_refused_by_name(change: dict, claim: str) -> None:
    claims = {**PERMIT.to_claims(), "jti": "j-1", "exp": 1e10, **change}
    claims = {k: v for k, v in claims.items() if v is not None}
    with pytest.raises(Unauthenticated, match=f"decision token claim {claim} "):
        DecisionClaims.from_claims(claims)


def test_a_token_signed_by_consent_with_bad_claims_does_not_verify() -> None:
    token, _ = issue_token(CONSENT, DECISION_TOKEN_TYPE, {**PERMIT.to_claims(), "pou": "TREAT"}, 30)
    with pytest.raises(Unauthenticated, match="claim pou"):
        verify_decision_token(token, CONSENT.public_key_bytes())


def test_only_consent_signed_decision_tokens_verify() -> None:
    forged, _ = issue_decision_token(Ed25519Signer.generate(DECISION_ISSUER_ID), PERMIT, 30)
    with pytest.raises(Unauthenticated, match="signature"):
        verify_decision_token(forged, CONSENT.public_key_bytes())
    access_token, _ = issue_token(CONSENT, ACCESS_TOKEN_TYPE, PERMIT.to_claims(), 30)
    with pytest.raises(Unauthenticated, match="type"):
        verify_decision_token(access_token, CONSENT.public_key_bytes())
