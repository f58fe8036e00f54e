"""Obtaining access tokens in clients: proof of key possession to the identity service, cached per audience.

A principal proves possession of its Ed25519 key to the identity service (challenge, signature) and gets a
short-lived access token for one audience; :func:`bearer_interceptor` adds it to every call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from carechain.core.crypto import Signer

TOKEN_REQUEST_CONTEXT = b"carechain-token-request/v1\n"



def token_request_message(audience: str, challenge: bytes) -> bytes:
    """What a principal signs to prove possession of its key."""
    return TOKEN_REQUEST_CONTEXT + audience.encode() + b"\n" + challenge



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
