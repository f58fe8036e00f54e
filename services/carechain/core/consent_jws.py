"""A patient's signature over a FHIR Consent: a compact JWS (RFC 7515) with Ed25519 (RFC 8037 ``EdDSA``).

A REST client cannot build the deterministic protobuf a ledger transaction is, so it signs the exact bytes
of the FHIR ``Consent`` it sends instead. The JWS, sent as ``X-Consent-Signature``, has the protected header
``{"alg":"EdDSA","typ":"carechain-consent+jws","kid":<signer principal id>}`` and the claims:

- ``sub``: the patient's pseudonym (the patient the consent is for);
- ``consent_sha256``: base64url (no padding) of SHA-256 over the exact request body bytes;
- ``iat``: when it was signed (Unix seconds);
- ``jti``: at least 16 random bytes, base64url: a signature is accepted once per signer;
- ``chain_id``: the network, so a signature cannot be replayed on another one.

The claims hold no PHI, so the JWS goes on the ledger inside ``GrantConsent.patient_jws``, where the
validators check it (:mod:`carechain.ledger.contract`). This module only encodes and verifies (the signature
is :mod:`carechain.core.crypto`'s Ed25519); it reads no clock, so the validators stay deterministic.
"""

from __future__ import annotations

import binascii
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jwt.utils import base64url_decode, base64url_encode

from carechain.core.crypto import Signer, same, sha256, verify_signature

ALGORITHM = "EdDSA"
CONSENT_JWS_TYPE = "carechain-consent+jws"
#: Far above a real consent signature (about 400 characters); anything longer is refused undecoded.
MAX_JWS_CHARS = 4096
MIN_JTI_BYTES = 16
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class InvalidConsentJws(ValueError):
    """The consent signature is malformed or does not verify; the message names what, never a value."""


@dataclass(frozen=True)
class ConsentClaims:
    """The verified claims of a consent JWS, and who signed it (the header's ``kid``)."""

    signer_id: str
    sub: str
    consent_sha256: str
    iat: int
    jti: str
    chain_id: str

    @property
    def jti_bytes(self) -> bytes:
        """The jti's random bytes (what replay protection records)."""
        return b64url_decode(self.jti)


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64url_encode(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded base64url text; InvalidConsentJws if it is not that."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise InvalidConsentJws("not base64url")
    try:
        return base64url_decode(text)
    except (binascii.Error, ValueError):
        raise InvalidConsentJws("not base64url") from None


def body_sha256(body: bytes) -> str:
    """The ``consent_sha256`` claim of a request body: base64url SHA-256 of its exact bytes."""
    return b64url(sha256(body))


def same_digest(consent_sha256: str, body: bytes) -> bool:
    """Whether a ``consent_sha256`` claim is the hash of body (constant time)."""
    return same(consent_sha256, body_sha256(body))


def sign_consent(signer: Signer, body: bytes, patient_id: str, chain_id: str, *, iat: int | None = None,
                 jti: bytes | None = None) -> str:
    """The compact JWS by signer (its key id is the kid) over the Consent body bytes for patient_id."""
    header = {"alg": ALGORITHM, "typ": CONSENT_JWS_TYPE, "kid": signer.key_id}
    claims = {"sub": patient_id, "consent_sha256": body_sha256(body),
              "iat": int(time.time()) if iat is None else iat,
              "jti": b64url(os.urandom(MIN_JTI_BYTES) if jti is None else jti), "chain_id": chain_id}
    return encode_jws(signer, header, claims)


def encode_jws(signer: Signer, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    """Compact JWS serialisation of claims under header, signed by signer (Ed25519)."""
    signing_input = ".".join(b64url(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
                             for part in (header, claims))
    return f"{signing_input}.{b64url(signer.sign(signing_input.encode('ascii')))}"


def unverified_signer(jws: str) -> str:
    """The kid of a consent JWS's header, before verification (to look up the signer's key)."""
    header, _, _, _ = _parts(jws)
    return header["kid"]


def verify_consent_jws(jws: str, public_key: bytes) -> ConsentClaims:
    """The claims of a consent JWS whose Ed25519 signature verifies under public_key; InvalidConsentJws else.

    Checks form, header (alg EdDSA, typ, kid, no ``crit``), signature and claim types. What the claims must
    equal (patient, body hash, chain, time, replay) is for the caller, who knows the request and the state.
    """
    header, claims, signing_input, signature = _parts(jws)
    if not verify_signature(public_key, signature, signing_input):
        raise InvalidConsentJws("the signature does not verify under the signer's registered key")
    for name in ("sub", "consent_sha256", "jti", "chain_id"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise InvalidConsentJws(f"claim {name}: required (a string)")
    iat = claims.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool) or iat <= 0:
        raise InvalidConsentJws("claim iat: required (Unix seconds)")
    if len(b64url_decode(claims["jti"])) < MIN_JTI_BYTES:
        raise InvalidConsentJws(f"claim jti: at least {MIN_JTI_BYTES} random bytes, base64url")
    if len(b64url_decode(claims["consent_sha256"])) != 32:
        raise InvalidConsentJws("claim consent_sha256: base64url of a SHA-256 digest")
    return ConsentClaims(header["kid"], claims["sub"], claims["consent_sha256"], iat, claims["jti"],
                         claims["chain_id"])


def _parts(jws: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature) of a compact consent JWS, its header checked."""
    if not isinstance(jws, str) or not jws or len(jws) > MAX_JWS_CHARS:
        raise InvalidConsentJws(f"a compact JWS of at most {MAX_JWS_CHARS} characters is required")
    pieces = jws.split(".")
    if len(pieces) != 3:
        raise InvalidConsentJws("not a compact JWS (header.payload.signature)")
    header = _json_object(b64url_decode(pieces[0]), "header")
    claims = _json_object(b64url_decode(pieces[1]), "payload")
    if header.get("alg") != ALGORITHM:
        raise InvalidConsentJws(f"header alg: must be {ALGORITHM}")
    if header.get("typ") != CONSENT_JWS_TYPE:
        raise InvalidConsentJws(f"header typ: must be {CONSENT_JWS_TYPE}")
    if "crit" in header:  # RFC 7515 4.1.11: refuse extensions not understood (CareChain understands none)
        raise InvalidConsentJws("header crit: no critical extensions are supported")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise InvalidConsentJws("header kid: the signer's principal id is required")
    return header, claims, f"{pieces[0]}.{pieces[1]}".encode("ascii"), b64url_decode(pieces[2])


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting too: validators must never raise
        raise InvalidConsentJws(f"{what}: not JSON") from None
    if not isinstance(value, dict):
        raise InvalidConsentJws(f"{what}: not a JSON object")
    return value

