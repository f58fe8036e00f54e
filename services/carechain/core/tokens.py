"""Signed short-lived tokens: compact JWS with EdDSA (RFC 7515, RFC 8037).

Two kinds are used: access tokens issued by the identity service to
authenticated principals, and consent decision tokens issued by the consent
service. Both are verified against keys from the network trust bundle.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from carechain.core.crypto import Signer, verify_signature
from carechain.core.errors import Unauthenticated

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JWT "typ", not a secret
DECISION_TOKEN_TYPE = "carechain-decision+jwt"  # noqa: S105 - a JWT "typ", not a secret
# Tolerated clock difference between services.
CLOCK_SKEW_SECONDS = 5


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(signer: Signer, token_type: str, claims: Mapping[str, Any], ttl_seconds: float) -> tuple[str, int]:
    """Sign claims into a token valid for ttl_seconds; returns (token, expiry in Unix ms).

    Adds iss (the signer's key id), iat, exp and a random jti.
    """
    now = time.time()
    exp = now + ttl_seconds
    payload = {**claims, "iss": signer.key_id, "iat": int(now), "exp": round(exp, 3), "jti": str(uuid.uuid4())}
    header = {"alg": "EdDSA", "typ": token_type, "kid": signer.key_id}
    signing_input = f"{_b64(json.dumps(header, separators=(',', ':')).encode())}." + _b64(
        json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    )
    signature = signer.sign(signing_input.encode())
    return f"{signing_input}.{_b64(signature)}", int(exp * 1000)


def verify_token(
    token: str,
    issuer_keys: Mapping[str, bytes],
    token_type: str,
    audience: str,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a token's signature, type, audience and lifetime; return its claims.

    issuer_keys maps key ids (principal ids) to raw Ed25519 public keys allowed
    to issue this kind of token. Raises Unauthenticated saying what is wrong.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated("token is not a compact JWS")
    try:
        header = json.loads(_unb64(parts[0]))
        payload = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unauthenticated("token is not well-formed") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise Unauthenticated("token is not well-formed")
    if header.get("alg") != "EdDSA":
        raise Unauthenticated("token algorithm must be EdDSA")
    if header.get("typ") != token_type:
        raise Unauthenticated(f"token type must be {token_type}")
    key_id = header.get("kid")
    public_key = issuer_keys.get(key_id) if isinstance(key_id, str) else None
    if public_key is None:
        raise Unauthenticated("token signed by an unknown issuer")
    if not verify_signature(public_key, signature, f"{parts[0]}.{parts[1]}".encode()):
        raise Unauthenticated("token signature is invalid")
    if payload.get("iss") != key_id:
        raise Unauthenticated("token issuer does not match its key")
    if payload.get("aud") != audience:
        raise Unauthenticated(f"token audience is not {audience}")
    now = time.time() if now is None else now
    exp = payload.get("exp")
    if not isinstance(exp, int | float) or now > exp + CLOCK_SKEW_SECONDS:
        raise Unauthenticated("token has expired")
    iat = payload.get("iat")
    if not isinstance(iat, int | float) or iat > now + CLOCK_SKEW_SECONDS:
        raise Unauthenticated("token is issued in the future")
    return payload
