"""Signed short-lived tokens: EdDSA JWTs (RFC 7519, RFC 8037) through PyJWT.

Two kinds are used: access tokens issued by the identity service to
authenticated principals, and consent decision tokens issued by the consent
service. Both are verified against keys from the network trust bundle.

Verification (:func:`verify_token`) checks, in this order: the compact form
and size, ``alg`` EdDSA, ``typ``, no ``crit`` extensions (CareChain
understands none, so RFC 7515 requires refusing any), ``kid`` naming an
allowed issuer key, the signature, then the claims with PyJWT: ``iss`` equal
to ``kid``; ``aud`` a string or a list containing the audience; ``exp``,
``iat`` and ``nbf`` (when present) with :data:`CLOCK_SKEW_SECONDS` leeway.

Servers verify the same access token on every call its holder makes until it expires;
:class:`TokenVerifier` does the signature and claim checks once per token and remembers the result
(bounded LRU keyed by a keyed digest of the token), checking expiry again on every call. Public key
objects are built once per issuer key (:func:`issuer_public_key`).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.algorithms import Algorithm
from jwt.utils import base64url_decode, base64url_encode

from carechain.core.crypto import Signer, load_public_key
from carechain.core.errors import Unauthenticated

T = TypeVar("T")

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JWT "typ", not a secret
DECISION_TOKEN_TYPE = "carechain-decision+jwt"  # noqa: S105 - a JWT "typ", not a secret
# Tolerated clock difference between services.
CLOCK_SKEW_SECONDS = 5
# CareChain's tokens are well under 1 KiB; anything far longer is refused before it is decoded.
MAX_TOKEN_CHARS = 8192
ALGORITHM = "EdDSA"
# Every token CareChain issues has these; one without them is not ours.
_REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]
_UNSUPPORTED_CRIT = "token has critical header extensions (crit) this service does not support"


class _SignerAlgorithm(Algorithm):
    """EdDSA signing with a :class:`Signer`, whose private key may never leave Vault Transit.

    Only for issuing: verification uses PyJWT's own EdDSA with the issuer's public key.
    """

    def prepare_key(self, key: Any) -> Any:
        return key

    def sign(self, msg: bytes, key: Any) -> bytes:
        return key.sign(msg)

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        raise NotImplementedError("tokens are verified with PyJWT's EdDSA, not with a Signer")

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        raise NotImplementedError("a Signer is not exported as a JWK")

    @staticmethod
    def from_jwk(jwk: Any) -> Any:
        raise NotImplementedError("a Signer is not loaded from a JWK")


def _signing_jws() -> jwt.PyJWS:
    jws = jwt.PyJWS(algorithms=[ALGORITHM])
    jws.unregister_algorithm(ALGORITHM)
    jws.register_algorithm(ALGORITHM, _SignerAlgorithm())
    return jws


_SIGNING = _signing_jws()

_BASE64URL_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")


class _SegmentCheckedJWS(jwt.PyJWS):
    """PyJWS with its segment check done by a regular expression instead of a Python loop per character.

    PyJWT 2.15 checks each segment's alphabet with a generator over its bytes (~30 us for a decision
    token's payload, and the payload is decoded twice per verification: header read, then decode). The
    rules are PyJWT's own, unchanged: at most two trailing '=', and only where the length is a multiple of
    4; base64url characters only; not 1 mod 4; canonical (re-encoding gives the segment back).
    """

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if (padding > 2 or (padding and len(segment) % 4 != 0) or len(stripped) % 4 == 1
                or _BASE64URL_SEGMENT.fullmatch(stripped) is None):
            raise jwt.DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64url_decode(stripped)
        except (TypeError, binascii.Error) as err:
            raise jwt.DecodeError(f"Invalid {name} padding") from err
        if base64url_encode(decoded) != stripped:
            raise jwt.DecodeError(f"Invalid {name} padding")
        return decoded


class _VerifyingJWT(jwt.PyJWT):
    """PyJWT's claim checks over :class:`_SegmentCheckedJWS`."""

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._jws = _SegmentCheckedJWS(options=self._get_sig_options())

    def unverified_header(self, token: str) -> dict[str, Any]:
        """The token's JOSE header, not verified (PyJWT's get_unverified_header on the same parser)."""
        return self._jws.get_unverified_header(token)


_VERIFYING = _VerifyingJWT({"require": _REQUIRED_CLAIMS})


def issue_token(signer: Signer, token_type: str, claims: Mapping[str, Any], ttl_seconds: float) -> tuple[str, int]:
    """Sign claims into a token valid for ttl_seconds; returns (token, expiry in Unix ms).

    Adds iss (the signer's key id), iat, exp and a random jti; the header names the type and kid.
    """
    token, _, exp = _signed(signer, token_type, claims, ttl_seconds)
    return token, int(exp * 1000)


def issue_token_with_claims(signer: Signer, token_type: str, claims: Mapping[str, Any],
                            ttl_seconds: float) -> tuple[str, dict[str, Any]]:
    """:func:`issue_token`, returning the token and every claim it carries (iss, iat, exp, jti added).

    The claims are parsed from the very bytes that were signed: what a verifier of the token will read,
    without decoding the token again.
    """
    token, payload, _ = _signed(signer, token_type, claims, ttl_seconds)
    return token, json.loads(payload)


def _signed(signer: Signer, token_type: str, claims: Mapping[str, Any],
            ttl_seconds: float) -> tuple[str, bytes, float]:
    """The token, its signed payload (JSON bytes) and its expiry (Unix seconds)."""
    now = time.time()
    exp = now + ttl_seconds
    payload = {**claims, "iss": signer.key_id, "iat": int(now), "exp": round(exp, 3), "jti": str(uuid.uuid4())}
    encoded = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    token = _SIGNING.encode(encoded, signer, algorithm=ALGORITHM, headers={"typ": token_type, "kid": signer.key_id})
    return token, encoded, exp


def verify_token(
    token: str,
    issuer_keys: Mapping[str, bytes],
    token_type: str,
    audience: str,
) -> dict[str, Any]:
    """Check a token's signature, type, audience and lifetime; return its claims.

    issuer_keys maps key ids (principal ids) to raw Ed25519 public keys allowed
    to issue this kind of token. Raises Unauthenticated saying what is wrong
    (never quoting the token); a malformed token of any shape or depth is just
    "not well-formed".
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated(f"token is longer than {MAX_TOKEN_CHARS} characters")
    if token.count(".") != 2:
        raise Unauthenticated("token is not a compact JWS")
    try:
        header = _VERIFYING.unverified_header(token)
    except (jwt.PyJWTError, RecursionError) as exc:
        # PyJWT refuses a crit it does not support itself; say so rather than "not well-formed".
        raise Unauthenticated(_UNSUPPORTED_CRIT if "crit" in str(exc).lower()
                              else "token is not well-formed") from exc
    if header.get("alg") != ALGORITHM:
        raise Unauthenticated("token algorithm must be EdDSA")
    if header.get("typ") != token_type:
        raise Unauthenticated(f"token type must be {token_type}")
    if "crit" in header:  # even those PyJWT understands (b64): CareChain's tokens use none
        raise Unauthenticated(_UNSUPPORTED_CRIT)
    key_id = header.get("kid")
    raw_key = issuer_keys.get(key_id) if isinstance(key_id, str) else None
    if raw_key is None:
        raise Unauthenticated("token signed by an unknown issuer")
    try:
        claims = _VERIFYING.decode(
            token, issuer_public_key(raw_key), algorithms=[ALGORITHM], audience=audience, issuer=key_id,
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.InvalidSignatureError as exc:
        raise Unauthenticated("token signature is invalid") from exc
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise Unauthenticated(
            "token is not valid yet (nbf)" if "nbf" in str(exc) else "token is issued in the future"
        ) from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthenticated("token issuer does not match its key") from exc
    except jwt.InvalidAudienceError as exc:
        raise Unauthenticated(f"token audience is not {audience}") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(f"token lacks the {exc.claim} claim") from exc
    except jwt.exceptions.InvalidSubjectError as exc:
        raise Unauthenticated("token claim sub must be a string") from exc
    except jwt.exceptions.InvalidJTIError as exc:
        raise Unauthenticated("token claim jti must be a string") from exc
    except (jwt.PyJWTError, RecursionError) as exc:
        raise Unauthenticated("token is not well-formed") from exc
    return claims


@functools.lru_cache(maxsize=256)
def issuer_public_key(raw: bytes) -> Ed25519PublicKey:
    """The key object of a raw Ed25519 issuer key, built once per key (parsing it costs as much as a verify)."""
    return load_public_key(raw)


#: Verified tokens a :class:`TokenVerifier` remembers (least recently used beyond that are verified again).
VERIFIED_TOKEN_CACHE_SIZE = 10_000


class TokenVerifier(Generic[T]):
    """Verifies tokens of one type for one audience, each token's signature and claims once until it expires.

    ``verify(token)`` returns ``parse(claims)`` (parse also runs once per token; its Unauthenticated is
    not remembered). A token seen before is looked up by its BLAKE2b digest keyed with a per-verifier
    secret: a bearer token is a secret, and the dictionary's comparisons then only ever compare digests
    an attacker cannot compute, so their timing reveals nothing about any token (a tampered token that
    shares a prefix with a remembered one has an unrelated digest and is verified in full). It is refused
    once past ``exp`` (plus :data:`CLOCK_SKEW_SECONDS`, as :func:`verify_token`), whatever the cache holds.
    Only successes are remembered, so a refused token is checked in full each time; what depends on state that changes
    (deactivation, access rules) is the caller's to check on every call.
    """

    def __init__(self, issuer_keys: Mapping[str, bytes], token_type: str, audience: str,
                 parse: Callable[[dict[str, Any]], T], max_entries: int = VERIFIED_TOKEN_CACHE_SIZE) -> None:
        self._issuer_keys = dict(issuer_keys)
        self._token_type = token_type
        self.audience = audience
        self._parse = parse
        self._max_entries = max_entries
        self._digest_key = os.urandom(32)
        self._lock = threading.Lock()
        self._verified: OrderedDict[bytes, tuple[float, T]] = OrderedDict()  # digest -> (exp, parsed)

    def _digest(self, token: str) -> bytes:
        return hashlib.blake2b(token.encode(), key=self._digest_key, digest_size=32).digest()

    def verify(self, token: str) -> T:
        """The parsed claims of a valid token; Unauthenticated saying what is wrong."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(f"token is longer than {MAX_TOKEN_CHARS} characters")
        digest = self._digest(token)
        with self._lock:
            entry = self._verified.get(digest)
            if entry is not None:
                self._verified.move_to_end(digest)
        if entry is not None:
            expires, parsed = entry
            if expires > time.time() - CLOCK_SKEW_SECONDS:
                return parsed
            with self._lock:
                self._verified.pop(digest, None)
            raise Unauthenticated("token has expired")
        claims = verify_token(token, self._issuer_keys, self._token_type, self.audience)
        parsed = self._parse(claims)
        with self._lock:
            self._verified[digest] = (float(claims["exp"]), parsed)
            while len(self._verified) > self._max_entries:
                self._verified.popitem(last=False)
        return parsed

    def remembered(self, token: str) -> bool:
        """Whether token's verification is remembered (tests and diagnostics)."""
        digest = self._digest(token)
        with self._lock:
            return digest in self._verified
