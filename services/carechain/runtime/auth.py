"""Caller authentication: verifying access tokens on servers, obtaining them in clients.

A principal proves possession of its Ed25519 key to the identity service
(challenge, signature) and gets a short-lived access token for one audience.
Servers accept only ``authorization: Bearer <token>`` with a valid signature by
the identity service, their own audience and an unexpired lifetime. A token's
signature and claims are verified once (:class:`carechain.core.tokens.TokenVerifier`);
its expiry and its principal's deactivation are checked on every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from carechain.common.v1 import common_pb2
from carechain.core.errors import PermissionDenied, Unauthenticated
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle
from carechain.core.tokens import ACCESS_TOKEN_TYPE, TokenVerifier

if TYPE_CHECKING:
    from carechain.runtime.principal_status import PrincipalStatus


Kind = common_pb2.PrincipalKind


@dataclass(frozen=True)
class Caller:
    """An authenticated caller, from its access token."""

    principal_id: str
    kind: int  # common_pb2.PrincipalKind
    organization_id: str = ""
    specialty: str = ""
    # Set only in tokens issued through SMART Backend Services (carechain.core.smart_scopes): the granted
    # scopes (space-separated) and the HL7 v3 purpose-of-use code reads must state.
    scope: str = ""
    purpose_of_use: str = ""

    @property
    def is_service(self) -> bool:
        return self.kind == Kind.PRINCIPAL_KIND_SERVICE


def organization_of(caller: Caller) -> str:
    """The organisation a caller acts for: itself for an organisation, its organisation for a member."""
    return caller.principal_id if caller.kind == Kind.PRINCIPAL_KIND_ORGANIZATION else caller.organization_id


def caller_claims(caller: Caller, audience: str) -> dict[str, object]:
    """Claims of an access token for caller (read back by :func:`caller_from_claims`)."""
    claims: dict[str, object] = {
        "sub": caller.principal_id,
        "aud": audience,
        "kind": Kind.Name(caller.kind),
        "org": caller.organization_id,
        "spec": caller.specialty,
    }
    for name in _SMART_CLAIMS:
        if getattr(caller, name):
            claims[name] = getattr(caller, name)
    return claims


# Claims only tokens issued through SMART Backend Services carry.
_SMART_CLAIMS = ("scope", "purpose_of_use")


def caller_from_claims(claims: Mapping[str, Any]) -> Caller:
    """The caller an access token's verified claims name; Unauthenticated naming a missing or mistyped claim."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("token claim sub must be a non-empty string")
    try:
        kind = Kind.Value(str(claims.get("kind")))
    except ValueError as exc:
        raise Unauthenticated("token has an unknown principal kind") from exc
    attributes = {name: claims.get(name, "") for name in ("org", "spec", *_SMART_CLAIMS)}
    for name, value in attributes.items():
        if not isinstance(value, str):
            raise Unauthenticated(f"token claim {name} must be a string")
    return Caller(subject, kind, attributes["org"], attributes["spec"], attributes["scope"],
                  attributes["purpose_of_use"])


class Authenticator:
    """Verifies access tokens for one service audience.

    Each token is verified in full once and then remembered until it expires (bounded LRU,
    :class:`~carechain.core.tokens.TokenVerifier`); expiry and the principal's deactivation
    (``principal_status``) are checked on every call, so a remembered token stops at once when
    either says so.
    """

    def __init__(self, trust: TrustBundle, audience: str, principal_status: PrincipalStatus | None = None) -> None:
        issuer_key = trust.key(TOKEN_ISSUER_ID)
        if issuer_key is None:
            raise FileNotFoundError(f"trust bundle lacks the token issuer key {TOKEN_ISSUER_ID}")
        self._tokens = TokenVerifier({TOKEN_ISSUER_ID: issuer_key}, ACCESS_TOKEN_TYPE, audience, caller_from_claims)
        self.audience = audience
        # Deactivations followed from the ledger: a deactivated principal's live tokens stop at once.
        self.principal_status = principal_status

    def authenticate(self, context: grpc.ServicerContext) -> Caller:
        """The caller of this RPC; Unauthenticated if the token is missing or bad."""
        token = ""
        for key, value in context.invocation_metadata():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() != "bearer":
                    raise Unauthenticated("authorization must be a Bearer token")
                break
        if not token:
            raise Unauthenticated("missing access token (authorization: Bearer <token>)")
        caller = self._tokens.verify(token)
        if self.principal_status is not None and self.principal_status.deactivated(caller.principal_id):
            raise Unauthenticated("the principal was deactivated")
        return caller

    def require(self, context: grpc.ServicerContext, *kinds: int) -> Caller:
        """Authenticate and check the caller's kind is one of kinds (any kind if none given).

        Services declare who may call what in their access table (:mod:`carechain.runtime.access`),
        checked before the handler runs; handlers read that caller with ``access.caller``.
        """
        caller = self.authenticate(context)
        if kinds and caller.kind not in kinds:
            allowed = ", ".join(Kind.Name(k).removeprefix("PRINCIPAL_KIND_").lower() for k in kinds)
            raise PermissionDenied(f"this call is only for: {allowed}")
        return caller

    def require_service(self, context: grpc.ServicerContext, *services: str) -> Caller:
        """Authenticate a CareChain service, optionally one of the named ones (e.g. "records")."""
        caller = self.require(context, Kind.PRINCIPAL_KIND_SERVICE)
        if services and caller.principal_id not in {f"svc-{s}" for s in services}:
            raise PermissionDenied(f"this call is only for the {', '.join(services)} service")
        return caller
