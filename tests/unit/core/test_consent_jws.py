"""carechain.core.consent_jws: compact JWS encoding and strict verification (RFC 7515, RFC 8037 EdDSA)."""

from __future__ import annotations

import json

import pytest

from carechain.core.consent_jws import (
    CONSENT_JWS_TYPE,
    InvalidConsentJws,
    b64url,
    b64url_decode,
    body_sha256,
    encode_jws,
    sign_consent,
    unverified_signer,
    verify_consent_jws,
)
from carechain.core.crypto import Ed25519Signer, sha256

KEY = Ed25519Signer.generate("psn-1")
BODY = b'{"resourceType":"Consent"}'


def _claims(**overrides):
    claims = {"sub": "psn-1", "consent_sha256": body_sha256(BODY), "iat": 1_700_000_000, "jti": b64url(b"j" * 16),
              "chain_id": "c"}
    claims.update(overrides)
    return claims


def _header(**overrides):
    return {"alg": "EdDSA", "typ": CONSENT_JWS_TYPE, "kid": "psn-1", **overrides}


def test_a_signed_consent_verifies_and_reads_back() -> None:
    jws = sign_consent(KEY, BODY, "psn-1", "c", iat=1_700_000_000, jti=b"x" * 16)
    assert unverified_signer(jws) == "psn-1"
    claims = verify_consent_jws(jws, KEY.public_key_bytes())
    assert (claims.sub, claims.iat, claims.chain_id, claims.jti_bytes) == ("psn-1", 1_700_000_000, "c", b"x" * 16)
    assert b64url_decode(claims.consent_sha256) == sha256(BODY)
    header = json.loads(b64url_decode(jws.split(".")[0]))
    assert header == {"alg": "EdDSA", "typ": CONSENT_JWS_TYPE, "kid": "psn-1"}


@pytest.mark.parametrize(("header", "claims", "words"), [
    (_header(alg="none"), _claims(), "alg"),
    (_header(alg="HS256"), _claims(), "alg"),
    (_header(typ="JWT"), _claims(), "typ"),
    (_header(crit=["b64"]), _claims(), "crit"),
    (_header(kid=""), _claims(), "kid"),
    (_header(), _claims(iat="1700000000"), "iat"),
    (_header(), _claims(iat=True), "iat"),
    (_header(), _claims(jti=b64url(b"short")), "jti"),
    (_header(), _claims(sub=""), "sub"),
    (_header(), _claims(consent_sha256=b64url(b"x")), "consent_sha256"),
    (_header(), {k: v for k, v in _claims().items() if k != "chain_id"}, "chain_id"),
])
def test_malformed_headers_and_claims_are_refused(header, claims, words) -> None:
    with pytest.raises(InvalidConsentJws, match=words):
        verify_consent_jws(encode_jws(KEY, header, claims), KEY.public_key_bytes())


def test_another_key_a_changed_payload_or_a_broken_form_do_not_verify() -> None:
    jws = sign_consent(KEY, BODY, "psn-1", "c")
    with pytest.raises(InvalidConsentJws, match="does not verify"):
        verify_consent_jws(jws, Ed25519Signer.generate("x").public_key_bytes())
    header, _, signature = jws.split(".")
    forged = f"{header}.{b64url(json.dumps(_claims(sub='psn-2')).encode())}.{signature}"
    with pytest.raises(InvalidConsentJws, match="does not verify"):
        verify_consent_jws(forged, KEY.public_key_bytes())
    deep = b64url(b"[" * 3000)  # a recursion bomb in the header must be a refusal, never an exception
    for broken in ("", "a.b", "a.b.c.d", "!!.b.c", "x" * 5000, f"{deep}.e30.AA", "\u00e9.b.c", "e30.e30.AA"):
        with pytest.raises(InvalidConsentJws):
            verify_consent_jws(broken, KEY.public_key_bytes())
