"""Access and decision tokens: forged, expired, wrong audience or type are refused."""

from __future__ import annotations

import time

import pytest

from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import Unauthenticated
from carechain.core.tokens import ACCESS_TOKEN_TYPE, DECISION_TOKEN_TYPE, issue_token, verify_token

ISSUER = Ed25519Signer.generate("svc-identity")
KEYS = {"svc-identity": ISSUER.public_key_bytes()}


def _token(ttl: float = 60, audience: str = "carechain.records", signer: Ed25519Signer = ISSUER) -> str:
    token, _ = issue_token(signer, ACCESS_TOKEN_TYPE, {"sub": "prac-1", "aud": audience}, ttl)
    return token


def test_valid_token_yields_its_claims() -> None:
    claims = verify_token(_token(), KEYS, ACCESS_TOKEN_TYPE, "carechain.records")
    assert claims["sub"] == "prac-1" and claims["iss"] == "svc-identity" and claims["jti"]


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (lambda: _token(audience="carechain.audit"), "audience"),
        (lambda: _token(ttl=-60), "expired"),
        (lambda: _token(signer=Ed25519Signer.generate("svc-identity")), "signature"),
        (lambda: _token(signer=Ed25519Signer.generate("svc-other")), "unknown issuer"),
        (lambda: "not-a-token", "compact JWS"),
        (lambda: "a.b.c", "well-formed"),
        (lambda: _token()[:-4] + "AAAA", "signature"),
    ],
    ids=["wrong-audience", "expired", "forged", "unknown-issuer", "garbage", "undecodable", "truncated-signature"],
)
def test_bad_tokens_are_unauthenticated(token, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        verify_token(token(), KEYS, ACCESS_TOKEN_TYPE, "carechain.records")


def test_payload_edit_breaks_the_signature() -> None:
    import base64
    import json

    header, payload, signature = _token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "prac-attacker"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="signature"):
        verify_token(f"{header}.{forged_payload}.{signature}", KEYS, ACCESS_TOKEN_TYPE, "carechain.records")


def test_a_decision_token_is_not_an_access_token() -> None:
    token, _ = issue_token(ISSUER, DECISION_TOKEN_TYPE, {"sub": "prac-1", "aud": "carechain.records"}, 60)
    with pytest.raises(Unauthenticated, match="type"):
        verify_token(token, KEYS, ACCESS_TOKEN_TYPE, "carechain.records")


def test_expiry_is_checked_against_the_given_clock() -> None:
    token = _token(ttl=60)
    verify_token(token, KEYS, ACCESS_TOKEN_TYPE, "carechain.records", now=time.time() + 30)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_token(token, KEYS, ACCESS_TOKEN_TYPE, "carechain.records", now=time.time() + 120)
