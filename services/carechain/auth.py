"""Caller authentication: verifying access tokens on servers, obtaining them in clients.

A principal proves possession of its Ed25519 key to the identity service
(challenge, signature) and gets a short-lived access token for one audience.
Servers accept only ``authorization: Bearer <token>`` with a valid signature by
the identity service, their own audience and an unexpired lifetime.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from carechain.common.v1 import common_pb2
from carechain.crypto import Signer
from carechain.errors import PermissionDenied, Unauthenticated
from carechain.network import TOKEN_ISSUER_ID, TrustBundle
from carechain.tokens import ACCESS_TOKEN_TYPE, verify_token

if TYPE_CHECKING:
    from carechain.principal_status import PrincipalStatus

TOKEN_REQUEST_CONTEXT = b"carechain-token-request/v1\n"

Kind = common_pb2.PrincipalKind


def token_request_message(audience: str, challenge: bytes) -> bytes:
    """What a principal signs to prove possession of its key."""
    return TOKEN_REQUEST_CONTEXT + audience.encode() + b"\n" + challenge


@dataclass(frozen=True)
class Caller:
    """An authenticated caller, from its access token."""

    principal_id: str
    kind: int  # common_pb2.PrincipalKind
    organization_id: str = ""
    specialty: str = ""

    @property
    def is_service(self) -> bool:
        return self.kind == Kind.PRINCIPAL_KIND_SERVICE


def caller_claims(caller: Caller, audience: str) -> dict[str, object]:
    """Claims of an access token for caller."""
    return {
        "sub": caller.principal_id,
        "aud": audience,
        "kind": Kind.Name(caller.kind),
        "org": caller.organization_id,
        "spec": caller.specialty,
    }


class Authenticator:
    """Verifies access tokens for one service audience."""

    def __init__(self, trust: TrustBundle, audience: str, principal_status: PrincipalStatus | None = None) -> None:
        issuer_key = trust.key(TOKEN_ISSUER_ID)
        if issuer_key is None:
            raise FileNotFoundError(f"trust bundle lacks the token issuer key {TOKEN_ISSUER_ID}")
        self._issuer_keys = {TOKEN_ISSUER_ID: issuer_key}
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
        claims = verify_token(token, self._issuer_keys, ACCESS_TOKEN_TYPE, self.audience)
        try:
            kind = Kind.Value(str(claims.get("kind")))
        except ValueError as exc:
            raise Unauthenticated("token has an unknown principal kind") from exc
        if self.principal_status is not None and self.principal_status.deactivated(str(claims["sub"])):
            raise Unauthenticated("the principal was deactivated")
        return Caller(str(claims["sub"]), kind, str(claims.get("org", "")), str(claims.get("spec", "")))

    def require(self, context: grpc.ServicerContext, *kinds: int) -> Caller:
        """Authenticate and check the caller's kind is one of kinds (any kind if none given).

        Services declare who may call what in their access table (:mod:`carechain.access`),
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


TokenFetcher = Callable[[str], tuple[str, int]]


class TokenSource:
    """Obtains and caches access tokens per audience for one principal."""

    # Renew a token this long before it expires.
    RENEW_BEFORE_SECONDS = 30.0

    def __init__(self, fetch: TokenFetcher) -> None:
        self._fetch = fetch
        self._tokens: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_signer(cls, identity_channel: grpc.Channel, signer: Signer) -> TokenSource:
        """A source that authenticates signer against the identity service."""
        from carechain.identity.v1 import identity_pb2, identity_pb2_grpc

        stub = identity_pb2_grpc.IdentityServiceStub(identity_channel)

        def fetch(audience: str) -> tuple[str, int]:
            challenge = stub.CreateChallenge(
                identity_pb2.CreateChallengeRequest(principal_id=signer.key_id), timeout=10
            ).challenge
            token = stub.IssueToken(
                identity_pb2.IssueTokenRequest(
                    principal_id=signer.key_id,
                    challenge=challenge,
                    audience=audience,
                    signature=signer.sign(token_request_message(audience, challenge)),
                ),
                timeout=10,
            )
            return token.token, token.expires_at_ms

        return cls(fetch)

    def token(self, audience: str) -> str:
        """A valid token for audience, fetched if missing or about to expire."""
        with self._lock:
            cached = self._tokens.get(audience)
            if cached and cached[1] / 1000 - time.time() > self.RENEW_BEFORE_SECONDS:
                return cached[0]
        token, expires_at_ms = self._fetch(audience)
        with self._lock:
            self._tokens[audience] = (token, expires_at_ms)
        return token


class _BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the caller's bearer token for the target audience to every call."""

    def __init__(self, tokens: TokenSource, audience: str) -> None:
        self._tokens = tokens
        self._audience = audience

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or []), ("authorization", f"Bearer {self._tokens.token(self._audience)}")]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: list | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


def bearer_interceptor(tokens: TokenSource, audience: str) -> _BearerInterceptor:
    """Client interceptor attaching tokens for audience."""
    return _BearerInterceptor(tokens, audience)
