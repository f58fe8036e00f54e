"""SMART Backend Services clients: registered public keys, and client assertions exchanged for access tokens.

An organisation (``system/`` scopes) or a practitioner (``user/`` scopes) registers its client's public
keys as a JWK Set (:func:`validate_jwks`: RS384 or ES384 only, public keys only, each with a kid); its
OAuth2 client_id is its principal id. It then signs a ``private_key_jwt`` client assertion (RFC 7523,
SMART App Launch 2.0 "Backend Services") and exchanges it for an ordinary CareChain access token
carrying ``scope`` and ``purpose_of_use`` claims (:meth:`SmartClients.exchange`). The assertion must have
``iss`` = ``sub`` = client_id, ``aud`` = the token endpoint URL this service is configured with, ``exp``
at most five minutes ahead, a ``jti`` not used before (remembered in the registry's used-token store until
the assertion expires: bounded by the assertions' lifetime, shared by every identity replica and kept
across restarts), and a signature by a registered key whose kid and alg match the header.

As for IssueToken, an unknown client, an unknown kid, a bad signature and a deactivated principal get
the same answer, so assertions reveal nothing about who is registered.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from carechain.common.v1 import common_pb2
from carechain.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from carechain.core.layout import audience
from carechain.core.smart_scopes import SYSTEM, USER, format_scopes, parse_scopes, purpose_code, require_context
from carechain.core.tokens import ACCESS_TOKEN_TYPE, CLOCK_SKEW_SECONDS, MAX_TOKEN_CHARS, issue_token
from carechain.identity.access_tokens import AUDIENCES
from carechain.identity.principals import Principals, require_principal_id
from carechain.runtime.auth import Caller, caller_claims

log = logging.getLogger("carechain.identity")

Kind = common_pb2.PrincipalKind

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Signing algorithms SMART Backend Services requires servers to support; nothing else is accepted.
ALGORITHMS = {"RS384": "RSA", "ES384": "EC"}
MAX_CLIENT_KEYS = 4
MAX_JWKS_CHARS = 16 * 1024
MAX_KID_CHARS = 128
MAX_JTI_CHARS = 256
MIN_RSA_BITS = 2048
# SMART: "exp ... no more than five minutes in the future".
MAX_ASSERTION_SECONDS = 300
# SMART access tokens live at most this long (the service's token lifetime, if shorter).
MAX_SMART_TOKEN_SECONDS = 300
DEFAULT_AUDIENCE = audience("records")
# The context each kind of client may request scopes in.
SCOPE_CONTEXTS = {Kind.PRINCIPAL_KIND_ORGANIZATION: SYSTEM, Kind.PRINCIPAL_KIND_PRACTITIONER: USER}
# JWK members that only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}
_NOT_PROVEN = "unknown client or invalid client assertion signature"
# Replay-store ids of used assertions: apart from consent decision tokens' jtis.
_JTI_NAMESPACE = "smart-client-assertion"
_FIELD = "client_assertion"


def validate_jwks(text: str) -> tuple[str, list[str]]:
    """The canonical public JWKS (JSON) and key ids of a client's JWKS; InvalidArgument naming ``jwks``.

    1 to MAX_CLIENT_KEYS keys, each RSA (alg RS384, at least MIN_RSA_BITS bits) or EC P-384 (alg ES384),
    public members only, with a unique kid. Only the public members are kept.
    """
    if not text:
        raise InvalidArgument("jwks", "is required: a JWK Set of the client's public RS384 or ES384 keys")
    if len(text) > MAX_JWKS_CHARS:
        raise InvalidArgument("jwks", f"is longer than {MAX_JWKS_CHARS} characters")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgument("jwks", "is not JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_CLIENT_KEYS:
        raise InvalidArgument("jwks.keys", f"must hold 1 to {MAX_CLIENT_KEYS} keys")
    public: list[dict[str, str]] = []
    for i, key in enumerate(keys):
        public.append(_public_jwk(key, f"jwks.keys[{i}]"))
    kids = [key["kid"] for key in public]
    if len(set(kids)) != len(kids):
        raise InvalidArgument("jwks.keys", "kid values must be unique")
    return json.dumps({"keys": public}, separators=(",", ":"), sort_keys=True), kids


def _public_jwk(key: Any, path: str) -> dict[str, str]:
    """One validated public JWK, reduced to kty, kid, alg and its public members."""
    if not isinstance(key, dict):
        raise InvalidArgument(path, "must be a JWK object")
    if _PRIVATE_MEMBERS & set(key):
        raise InvalidArgument(path, "is a private or symmetric key: register public keys only")
    kid = key.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
        raise InvalidArgument(f"{path}.kid", f"is required: 1-{MAX_KID_CHARS} characters")
    kty = key.get("kty")
    algs = [alg for alg, family in ALGORITHMS.items() if family == kty]
    if not algs:
        raise InvalidArgument(f"{path}.kty", "must be RSA (RS384) or EC (ES384)")
    alg = key.get("alg", algs[0])
    if alg not in algs:
        raise InvalidArgument(f"{path}.alg", f"must be {' or '.join(algs)} for a {kty} key")
    if key.get("use", "sig") != "sig":
        raise InvalidArgument(f"{path}.use", "must be sig")
    members = {name: key.get(name) for name in _PUBLIC_MEMBERS[kty]}
    if not all(isinstance(value, str) and value for value in members.values()):
        raise InvalidArgument(path, f"a {kty} key needs {', '.join(_PUBLIC_MEMBERS[kty])}")
    jwk = {"kty": kty, "kid": kid, "alg": alg, **members}
    try:
        loaded = _load_public_key(jwk)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidArgument(path, f"is not a valid {kty} public key") from None
    if isinstance(loaded, rsa.RSAPublicKey) and loaded.key_size < MIN_RSA_BITS:
        raise InvalidArgument(path, f"an RSA key needs at least {MIN_RSA_BITS} bits")
    if isinstance(loaded, ec.EllipticCurvePublicKey) and not isinstance(loaded.curve, ec.SECP384R1):
        raise InvalidArgument(f"{path}.crv", "must be P-384 for ES384")
    return jwk


def _load_public_key(jwk: dict[str, str]) -> Any:
    family = RSAAlgorithm if jwk["kty"] == "RSA" else ECAlgorithm
    return family.from_jwk(jwk)


class SmartClients:
    """Registers SMART clients' keys and exchanges their client assertions for access tokens."""

    def __init__(self, principals: Principals, signer: Any, token_ttl_seconds: float, token_url: str,
                 clock: Callable[[], float] = time.time) -> None:
        """token_url is the token endpoint URL assertions must name as aud (empty: the exchange is off)."""
        self._principals = principals
        self._registry = principals.registry
        self._signer = signer
        self._token_ttl = min(token_ttl_seconds, MAX_SMART_TOKEN_SECONDS)
        self._token_url = token_url
        self._clock = clock

    def register_keys(self, caller: Caller, jwks: str) -> tuple[str, list[str]]:
        """Store the caller's client keys (replacing earlier ones); returns (client_id, key ids)."""
        if caller.kind not in SCOPE_CONTEXTS:
            raise PermissionDenied("only organisations and practitioners register SMART client keys")
        canonical, kids = validate_jwks(jwks)
        self._registry.set_client_keys(caller.principal_id, canonical)
        log.info("SMART client keys registered", extra={"principal_id": caller.principal_id, "keys": len(kids)})
        return caller.principal_id, kids

    def exchange(self, assertion: str, scope: str, purpose: int, token_audience: str = ""
                 ) -> tuple[str, int, str, int]:
        """(access token, expiry Unix ms, granted scope, purpose) for a valid client assertion.

        Request problems are InvalidArgument naming the field (``scope`` for scopes); a bad, expired or
        replayed assertion is Unauthenticated.
        """
        if not assertion:
            raise InvalidArgument(_FIELD, "is required: a JWT signed with a registered client key")
        scopes = parse_scopes(scope)
        if purpose == common_pb2.PURPOSE_OF_USE_UNSPECIFIED or purpose not in common_pb2.PurposeOfUse.values():
            raise InvalidArgument("purpose_of_use", "is required: an HL7 v3 PurposeOfUse code such as TREAT")
        token_audience = token_audience or DEFAULT_AUDIENCE
        if token_audience not in AUDIENCES:
            raise InvalidArgument("audience", f"must be one of {', '.join(sorted(AUDIENCES))}")
        if not self._token_url:
            raise FailedPrecondition("SMART token exchange is off: CARECHAIN_SMART_TOKEN_URL is not configured")
        caller = self._verified_client(assertion)
        require_context(scopes, SCOPE_CONTEXTS[caller.kind])
        granted = format_scopes(scopes)
        smart_caller = Caller(caller.principal_id, caller.kind, caller.organization_id, caller.specialty,
                              granted, purpose_code(purpose))
        token, expires_at_ms = issue_token(self._signer, ACCESS_TOKEN_TYPE,
                                           caller_claims(smart_caller, token_audience), self._token_ttl)
        log.info("SMART token issued", extra={"principal_id": caller.principal_id, "audience": token_audience})
        return token, expires_at_ms, granted, purpose

    def _verified_client(self, assertion: str) -> Caller:
        """The client a valid, unused assertion authenticates; Unauthenticated otherwise."""
        if len(assertion) > MAX_TOKEN_CHARS or assertion.count(".") != 2:
            raise Unauthenticated("client assertion is not a compact JWS")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except (jwt.PyJWTError, RecursionError):
            raise Unauthenticated("client assertion is not well-formed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise Unauthenticated("client assertion algorithm must be RS384 or ES384")
        client_id, kid = unverified.get("iss"), header.get("kid")
        if not isinstance(client_id, str) or not client_id or unverified.get("sub") != client_id:
            raise Unauthenticated("client assertion iss and sub must both be the client_id")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("client assertion header needs the kid of a registered key")
        try:
            require_principal_id(client_id)
        except InvalidArgument:
            raise Unauthenticated(_NOT_PROVEN) from None
        caller = self._active_client(client_id)
        key = self._registered_key(client_id, kid, alg) if caller is not None else None
        if caller is None or key is None:
            raise Unauthenticated(_NOT_PROVEN)
        claims = self._verified_claims(assertion, key, alg, client_id)
        now_ms = int(self._clock() * 1000)
        # Remembered until the assertion expires; after that it is refused as expired anyway.
        if not self._registry.use_decision_token(f"{_JTI_NAMESPACE}|{client_id}|{claims['jti']}",
                                                 int(float(claims["exp"]) * 1000), now_ms):
            raise Unauthenticated("client assertion was used before (jti)")
        return caller

    def _active_client(self, client_id: str) -> Caller | None:
        """The registered, active organisation or practitioner client_id names, or None."""
        principal = self._registry.principal(client_id)
        if principal is None or principal.kind not in SCOPE_CONTEXTS:
            return None
        status = self._principals.status
        if status is not None:
            self._principals.refresh_status()
            if status.deactivated(client_id):
                log.info("SMART token refused: principal deactivated", extra={"principal_id": client_id})
                return None
        organization_id = (principal.principal_id if principal.kind == Kind.PRINCIPAL_KIND_ORGANIZATION
                           else principal.organization_id)
        return Caller(principal.principal_id, principal.kind, organization_id, principal.specialty)

    def _registered_key(self, client_id: str, kid: str, alg: str) -> Any | None:
        """The registered public key of client_id with this kid and alg, or None."""
        stored = self._registry.client_keys(client_id)
        if stored is None:
            return None
        for jwk in json.loads(stored)["keys"]:
            if jwk["kid"] == kid and jwk["alg"] == alg:
                return _load_public_key(jwk)
        return None

    def _verified_claims(self, assertion: str, key: Any, alg: str, client_id: str) -> dict[str, Any]:
        """The claims of an assertion whose signature verified: aud, lifetime and jti checked."""
        try:
            claims = jwt.decode(
                assertion, key, algorithms=[alg], audience=self._token_url, issuer=client_id,
                options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False},
            )
        except jwt.InvalidSignatureError:
            raise Unauthenticated(_NOT_PROVEN) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("client assertion aud must be the token endpoint URL") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"client assertion lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise Unauthenticated("client assertion is not well-formed") from None
        now = self._clock()
        exp, jti = claims["exp"], claims["jti"]
        # Checked against this service's clock (not PyJWT's), with the usual skew.
        if not isinstance(exp, (int, float)) or exp <= now - CLOCK_SKEW_SECONDS:
            raise Unauthenticated("client assertion has expired")
        if exp > now + MAX_ASSERTION_SECONDS + CLOCK_SKEW_SECONDS:
            raise Unauthenticated(f"client assertion exp is more than {MAX_ASSERTION_SECONDS} seconds ahead")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf > now + CLOCK_SKEW_SECONDS:
            raise Unauthenticated("client assertion is not valid yet (nbf)")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            raise Unauthenticated(f"client assertion jti must be 1-{MAX_JTI_CHARS} characters")
        return claims
