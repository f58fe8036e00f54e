"""Access and decision tokens: forged, expired, wrong audience or type are refused."""

from __future__ import annotations

import base64
import time

import jwt
import pytest

from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import Unauthenticated
from carechain.core.tokens import (
    ACCESS_TOKEN_TYPE,
    CLOCK_SKEW_SECONDS,
    DECISION_TOKEN_TYPE,
    MAX_TOKEN_CHARS,
    TokenVerifier,
    issue_token,
    issuer_public_key,
    verify_token,
)

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


def _signed(payload: dict, **header: object) -> str:
    """A token with exactly this payload and these extra header fields, signed by ISSUER (an attacker's own mint)."""
    headers = {"typ": ACCESS_TOKEN_TYPE, "kid": "svc-identity", **header}
    return jwt.encode(payload, ISSUER._private_key, algorithm="EdDSA", headers=headers)


def _claims(**overrides: object) -> dict:
    now = int(time.time())
    return {"sub": "prac-1", "aud": "carechain.records", "iss": "svc-identity", "iat": now, "exp": now + 60,
            "jti": "j-1", **overrides}


def _verify(token: str) -> dict:
    return verify_token(token, KEYS, ACCESS_TOKEN_TYPE, "carechain.records")


def test_expiry_and_issue_time_have_the_clock_skew_leeway() -> None:
    now = int(time.time())
    assert _verify(_signed(_claims(exp=now - CLOCK_SKEW_SECONDS + 2)))["sub"] == "prac-1"
    assert _verify(_signed(_claims(iat=now + CLOCK_SKEW_SECONDS - 2)))["sub"] == "prac-1"
    with pytest.raises(Unauthenticated, match="expired"):
        _verify(_signed(_claims(exp=now - CLOCK_SKEW_SECONDS - 5)))
    with pytest.raises(Unauthenticated, match="issued in the future"):
        _verify(_signed(_claims(iat=now + 60, exp=now + 120)))


def test_a_future_not_before_is_refused_and_a_past_one_accepted() -> None:
    now = int(time.time())
    with pytest.raises(Unauthenticated, match="not valid yet"):
        _verify(_signed(_claims(nbf=now + 60)))
    assert _verify(_signed(_claims(nbf=now - 1)))["sub"] == "prac-1"


def test_an_audience_list_naming_this_service_is_accepted() -> None:
    assert _verify(_signed(_claims(aud=["carechain.audit", "carechain.records"])))["sub"] == "prac-1"
    with pytest.raises(Unauthenticated, match="audience"):
        _verify(_signed(_claims(aud=["carechain.audit", "carechain.storage"])))
    token, _ = issue_token(ISSUER, ACCESS_TOKEN_TYPE, {"sub": "prac-1", "aud": ["carechain.records"]}, 60)
    assert _verify(token)["aud"] == ["carechain.records"]


@pytest.mark.parametrize("crit", [["exp-ext"], ["b64"], [], "exp-ext"], ids=["unknown", "b64", "empty", "not-a-list"])
def test_critical_header_extensions_are_refused(crit: object) -> None:
    with pytest.raises(Unauthenticated, match="crit"):
        _verify(_signed(_claims(), crit=crit, **({"exp-ext": 1} if crit == ["exp-ext"] else {})))


def test_kid_picks_the_issuer_key_and_iss_must_match_it() -> None:
    other = Ed25519Signer.generate("svc-consent")
    keys = {**KEYS, "svc-consent": other.public_key_bytes()}
    token, _ = issue_token(other, ACCESS_TOKEN_TYPE, {"sub": "prac-1", "aud": "carechain.records"}, 60)
    assert verify_token(token, keys, ACCESS_TOKEN_TYPE, "carechain.records")["iss"] == "svc-consent"
    # Signed by svc-identity but naming svc-consent's key: that key does not verify it.
    with pytest.raises(Unauthenticated, match="signature"):
        verify_token(_signed(_claims(), kid="svc-consent"), keys, ACCESS_TOKEN_TYPE, "carechain.records")
    with pytest.raises(Unauthenticated, match="issuer does not match"):
        _verify(_signed(_claims(iss="svc-consent")))
    with pytest.raises(Unauthenticated, match="unknown issuer"):
        _verify(_signed(_claims(), kid="svc-nobody"))


def test_the_header_type_and_algorithm_are_checked() -> None:
    with pytest.raises(Unauthenticated, match="type must be at[+]jwt"):
        _verify(_signed(_claims(), typ="JWT"))
    forged_none = jwt.encode(_claims(), None, algorithm="none",
                             headers={"typ": ACCESS_TOKEN_TYPE, "kid": "svc-identity"})
    with pytest.raises(Unauthenticated, match="EdDSA"):
        _verify(forged_none)


@pytest.mark.parametrize("claim", ["exp", "iat", "jti", "aud", "iss"])
def test_a_token_without_a_required_claim_is_refused(claim: str) -> None:
    claims = _claims()
    del claims[claim]
    with pytest.raises(Unauthenticated):
        _verify(_signed(claims))


def test_a_deeply_nested_header_is_not_well_formed_not_a_crash() -> None:
    # Issue 12: json.loads raised RecursionError (an UNKNOWN status with a traceback on every RPC).
    deep = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="well-formed"):
        _verify(f"{deep}.e30.AAAA")


def test_an_oversized_token_is_refused_before_decoding() -> None:
    with pytest.raises(Unauthenticated, match="longer than"):
        _verify("a" * (MAX_TOKEN_CHARS + 1))


@pytest.mark.parametrize("claim", ["sub", "jti"])
def test_a_mistyped_subject_or_token_id_is_named(claim: str) -> None:
    with pytest.raises(Unauthenticated, match=f"claim {claim} must be a string"):
        _verify(_signed(_claims(**{claim: 42})))


# --- TokenVerifier: verified once, expiry checked on every use (issue 13) --------------------------------

def _verifier(max_entries: int = 100) -> TokenVerifier[str]:
    return TokenVerifier(KEYS, ACCESS_TOKEN_TYPE, "carechain.records", lambda claims: claims["sub"], max_entries)


def test_the_verifier_remembers_valid_tokens_only_and_forgets_the_least_recently_used() -> None:
    verifier = _verifier(max_entries=2)
    first, second, third = _token(), _token(), _token()
    assert verifier.verify(first) == "prac-1" and verifier.remembered(first)
    verifier.verify(second)
    verifier.verify(first)  # used again: second is now the least recently used
    verifier.verify(third)
    assert verifier.remembered(first) and verifier.remembered(third) and not verifier.remembered(second)
    assert verifier.verify(second) == "prac-1"  # forgotten means verified again, not refused
    forged = _token(signer=Ed25519Signer.generate("svc-identity"))
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="signature"):
            verifier.verify(forged)
    assert not verifier.remembered(forged)


def test_a_remembered_token_is_refused_once_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = _verifier()
    token, expires_at_ms = issue_token(ISSUER, ACCESS_TOKEN_TYPE, {"sub": "prac-1", "aud": "carechain.records"}, 60)
    verifier.verify(token)
    later = expires_at_ms / 1000 + CLOCK_SKEW_SECONDS + 1
    monkeypatch.setattr("carechain.core.tokens.time.time", lambda: later)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(token)
    assert not verifier.remembered(token)


def test_what_parse_refuses_is_not_remembered() -> None:
    def parse(claims: dict) -> str:
        raise Unauthenticated("token claim sub must be a non-empty string")

    verifier = TokenVerifier(KEYS, ACCESS_TOKEN_TYPE, "carechain.records", parse)
    token = _token()
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="sub"):
            verifier.verify(token)
    assert not verifier.remembered(token)


def test_issuer_key_objects_are_built_once_per_key() -> None:
    raw = ISSUER.public_key_bytes()
    assert issuer_public_key(raw) is issuer_public_key(bytes(raw))
    assert issuer_public_key(Ed25519Signer.generate("x").public_key_bytes()) is not issuer_public_key(raw)


@pytest.mark.parametrize("segment", [
    b"", b"QQ", b"QQ==", b"QQ=", b"QQ===", b"Q", b"QUJD", b"QUJ=", b"QU!D", b"QU+D", b"QU/D", b"QUJDRA",
    b"QR", b"QR==", b"a-_b", b"a b=", b"=", b"==", b"QUJDRA\n",
])
def test_segment_check_keeps_pyjwt_rules(segment: bytes) -> None:
    # The regex check must accept and refuse exactly what PyJWT's own per-character loop does.
    from carechain.core.tokens import _SegmentCheckedJWS

    def outcome(decode: object) -> object:
        try:
            return decode(segment, "payload")  # type: ignore[operator]
        except jwt.DecodeError as exc:
            return str(exc)

    assert outcome(_SegmentCheckedJWS._decode_base64url_segment) == outcome(jwt.PyJWS._decode_base64url_segment)


def test_a_payload_with_a_non_base64url_character_is_refused() -> None:
    header, payload, signature = _token().split(".")
    with pytest.raises(Unauthenticated, match="not well-formed"):
        verify_token(f"{header}.{payload[:-1]}+.{signature}", KEYS, ACCESS_TOKEN_TYPE, "carechain.records")


def test_the_claims_returned_at_issue_are_those_a_verifier_reads() -> None:
    from carechain.core.tokens import issue_token_with_claims

    token, claims = issue_token_with_claims(ISSUER, ACCESS_TOKEN_TYPE, {"sub": "prac-1", "aud": "carechain.records"},
                                            60)
    assert claims == verify_token(token, KEYS, ACCESS_TOKEN_TYPE, "carechain.records")
    assert claims["jti"] and claims["iss"] == "svc-identity"
