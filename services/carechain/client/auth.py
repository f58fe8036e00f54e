"""Obtaining access tokens in clients: proof of key possession to the identity service, cached per audience.

A principal proves possession of its Ed25519 key to the identity service (challenge, signature) and gets a
short-lived access token for one audience; the channels of :mod:`carechain.client.channels` add it to every call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc

from carechain.core.crypto import Signer

TOKEN_REQUEST_CONTEXT = b"carechain-token-request/v1\n"



def token_request_message(audience: str, challenge: bytes) -> bytes:
    """What a principal signs to prove possession of its key."""
    return TOKEN_REQUEST_CONTEXT + audience.encode() + b"\n" + challenge



TokenFetcher = Callable[[str], tuple[str, int]]



class TokenSource:
    """Obtains and caches access tokens per audience for one principal.

    A token is fetched once per audience and reused by every call until it is within
    :attr:`RENEW_BEFORE_SECONDS` of its expiry; concurrent callers needing a new one wait for a
    single fetch (one per audience at a time) instead of each asking identity.
    """

    # Renew a token this long before it expires.
    RENEW_BEFORE_SECONDS = 30.0

    def __init__(self, fetch: TokenFetcher) -> None:
        self._fetch = fetch
        self._headers: dict[str, tuple[str, float]] = {}  # audience -> ("Bearer <token>", renew after, Unix s)
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}

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
        return self.authorization(audience).removeprefix("Bearer ")

    def authorization(self, audience: str) -> str:
        """The ``authorization`` metadata value (``Bearer <token>``) for audience, fetched when needed."""
        cached = self._headers.get(audience)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        with self._lock:
            fetching = self._fetching.setdefault(audience, threading.Lock())
        with fetching:  # one fetch per audience; the others use its token
            cached = self._headers.get(audience)
            if cached is not None and time.time() < cached[1]:
                return cached[0]
            token, expires_at_ms = self._fetch(audience)
            header = f"Bearer {token}"
            expires = expires_at_ms / 1000
            # A token shorter-lived than twice the margin is renewed half-way, not on every call.
            margin = min(self.RENEW_BEFORE_SECONDS, max(0.0, expires - time.time()) / 2)
            self._headers[audience] = (header, expires - margin)
            return header
