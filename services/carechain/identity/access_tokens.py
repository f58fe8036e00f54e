"""Proof of possession and access tokens: a one-time challenge, signed by the principal's key, buys a token.

Challenges are issued for any well-formed id, known or not, and a failed proof
says the same for an unknown principal, a bad signature and a deactivated
principal, so the answers reveal nothing about who is registered.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from carechain.client.auth import TokenSource, token_request_message
from carechain.common.v1 import common_pb2
from carechain.core.crypto import Signer, verify_signature
from carechain.core.errors import InvalidArgument, Unauthenticated
from carechain.core.layout import SERVICES, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.identity.principals import Principals, require_principal_id
from carechain.runtime.auth import Caller, caller_claims

log = logging.getLogger("carechain.identity")

Kind = common_pb2.PrincipalKind

CHALLENGE_BYTES = 32
AUDIENCES = frozenset(audience(s) for s in SERVICES)
# Same message for an unknown principal and a bad signature, so ids cannot be probed.
_NOT_PROVEN = "unknown principal or invalid signature"


def local_token_source(signer: Signer, ttl_seconds: float) -> TokenSource:
    """Access tokens for the identity service itself, minted locally (it is the issuer)."""
    caller = Caller(signer.key_id, Kind.PRINCIPAL_KIND_SERVICE)

    def fetch(token_audience: str) -> tuple[str, int]:
        return issue_token(signer, ACCESS_TOKEN_TYPE, caller_claims(caller, token_audience), ttl_seconds)

    return TokenSource(fetch)


class AccessTokens:
    """Issues challenges and, against a valid proof of possession, access tokens signed by this service."""

    def __init__(
        self,
        principals: Principals,
        signer: Signer,
        token_ttl_seconds: float,
        challenge_ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._principals = principals
        self._registry = principals.registry
        self._signer = signer
        self._token_ttl = token_ttl_seconds
        self._challenge_ttl = challenge_ttl_seconds
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def challenge(self, principal_id: str) -> tuple[bytes, int]:
        """A fresh one-time challenge for principal_id and its expiry (Unix ms)."""
        principal_id = require_principal_id(principal_id)
        # Issued for any id, known or not, so the answer does not reveal who is registered.
        challenge = os.urandom(CHALLENGE_BYTES)
        now_ms = self._now_ms()
        expires_at_ms = now_ms + int(self._challenge_ttl * 1000)
        self._registry.add_challenge(principal_id, challenge, expires_at_ms, now_ms)
        return challenge, expires_at_ms

    def issue(self, principal_id: str, token_audience: str, challenge: bytes, signature: bytes) -> tuple[str, int]:
        """An access token for token_audience, if signature proves possession of principal_id's key."""
        principal_id = require_principal_id(principal_id)
        if token_audience not in AUDIENCES:
            raise InvalidArgument("audience", f"must be one of {', '.join(sorted(AUDIENCES))}")
        if not challenge:
            raise InvalidArgument("challenge", "is required (from CreateChallenge)")
        if not self._registry.take_challenge(principal_id, challenge, self._now_ms()):
            raise Unauthenticated("challenge is unknown, already used or expired")
        status = self._principals.status
        if status is not None:
            self._principals.refresh_status()  # first: the key _resolve returns must be the current (rotated) one
        resolved = self._resolve(principal_id)
        if resolved is not None and status is not None and status.deactivated(principal_id):
            # The same answer as a failed proof: a token request learns nothing about lifecycle.
            log.info("token refused: principal deactivated", extra={"principal_id": principal_id})
            raise Unauthenticated(_NOT_PROVEN)
        message = token_request_message(token_audience, challenge)
        if resolved is None or not verify_signature(resolved[1], signature, message):
            raise Unauthenticated(_NOT_PROVEN)
        caller, _ = resolved
        token, expires_at_ms = issue_token(
            self._signer, ACCESS_TOKEN_TYPE, caller_claims(caller, token_audience), self._token_ttl
        )
        log.info("token issued", extra={"principal_id": principal_id, "audience": token_audience})
        return token, expires_at_ms

    def _resolve(self, principal_id: str) -> tuple[Caller, bytes] | None:
        """The caller identity and public key of a trusted or registered principal."""
        trusted = self._principals.trusted(principal_id)
        if trusted is not None:
            return trusted, self._principals.trust.key(principal_id) or b""
        principal = self._registry.principal(principal_id)
        if principal is None:
            return None
        # An organisation acts for itself: its own id is its organisation claim.
        organization_id = (
            principal.principal_id if principal.kind == Kind.PRINCIPAL_KIND_ORGANIZATION else principal.organization_id
        )
        caller = Caller(principal.principal_id, principal.kind, organization_id, principal.specialty)
        # After a RotatePrincipalKey only the new key proves possession.
        status = self._principals.status
        rotated = status.current_key(principal_id) if status is not None else None
        return caller, rotated or principal.public_key
