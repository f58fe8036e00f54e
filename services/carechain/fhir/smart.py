"""SMART Backend Services on the FHIR gateway: the token endpoint, its discovery document, bearer credentials.

The FHIR app mounts :func:`smart_routes`:

- ``POST /token``: OAuth2 client credentials with a ``private_key_jwt`` client assertion (SMART App Launch
  2.0 "Backend Services", RFC 7523). Form parameters: ``grant_type=client_credentials``,
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``, ``client_assertion``,
  ``scope`` (e.g. ``system/Condition.rs``) and :data:`PURPOSE_PARAMETER` (``purpose_of_use``: the HL7 v3
  PurposeOfUse code, e.g. ``TREAT`` or ``ETREAT``, as IHE IUA carries it; required, since every read states
  a purpose). Identity's ExchangeClientAssertion verifies the assertion and issues the token; the answer
  is OAuth2 JSON (``access_token``, ``token_type`` bearer, ``expires_in``, ``scope``, ``purpose_of_use``)
  or an OAuth2 error (:func:`oauth_error_of`).
- ``GET /.well-known/smart-configuration``: :func:`smart_configuration`.

The SMART access token IS a CareChain access token (audience ``carechain.records``) with ``scope`` and
``purpose_of_use`` claims: per request the app turns the ``Authorization`` header into
:class:`BearerCredentials` (:func:`bearer_credentials`) and passes the token on as the gRPC call
credentials. The records gateway enforces the scopes and the purpose (carechain.core.smart_scopes); consent
still decides every read.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from carechain.core.errors import InvalidArgument, Unauthenticated
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.smart_scopes import CONTEXTS, SmartScope, parse_scopes, purpose_code, purpose_value
from carechain.core.tokens import ACCESS_TOKEN_TYPE, TokenVerifier
from carechain.identity.v1 import identity_pb2
from carechain.runtime.auth import Caller, caller_from_claims

GRANT_TYPE = "client_credentials"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The token request parameter carrying the purpose of use (an HL7 v3 PurposeOfUse code such as TREAT).
PURPOSE_PARAMETER = "purpose_of_use"
SIGNING_ALGORITHMS = ["RS384", "ES384"]
TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a secret
CONFIGURATION_PATH = "/.well-known/smart-configuration"
TOKEN_AUDIENCE = audience("records")
# A token request is a few form fields and one JWT: anything far larger is refused unread.
MAX_TOKEN_REQUEST_BYTES = 16 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
IdentityStub = Callable[[], Any]  # returns an IdentityServiceStub (no call credentials needed)


def smart_configuration(token_url: str) -> dict[str, Any]:
    """The ``.well-known/smart-configuration`` document for a token endpoint at token_url."""
    return {
        "token_endpoint": token_url,
        "grant_types_supported": [GRANT_TYPE],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": SIGNING_ALGORITHMS,
        "scopes_supported": [f"{context}/*.{p}" for context in CONTEXTS for p in ("cruds", "rs", "c", "read")],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        # CareChain's extension: the purpose of use every token request must state (IHE IUA).
        "purpose_of_use_parameter": PURPOSE_PARAMETER,
    }


def oauth_error_of(code: grpc.StatusCode, details: str) -> tuple[int, str]:
    """The HTTP status and OAuth2 error (RFC 6749 §5.2) for identity's answer to a token exchange."""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return 401, "invalid_client"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return 400, "invalid_scope" if details.startswith("scope") else "invalid_request"
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION):
        return 400, "invalid_grant"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return 503, "temporarily_unavailable"
    return 500, "server_error"


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    """An OAuth2 error answer (never cached; 401 names the client authentication scheme)."""
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_client"'
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


class _BadRequest(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _token_form(content_type: str, body: bytes) -> dict[str, str]:
    """The token request's form parameters; _BadRequest if it is not one well-formed form."""
    if content_type.split(";", 1)[0].strip().lower() != FORM_TYPE:
        raise _BadRequest("invalid_request", f"the token request must be {FORM_TYPE}")
    if len(body) > MAX_TOKEN_REQUEST_BYTES:
        raise _BadRequest("invalid_request", f"the token request is larger than {MAX_TOKEN_REQUEST_BYTES} bytes")
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                                       max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        raise _BadRequest("invalid_request", "the token request is not a well-formed form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:  # RFC 6749 §3.2: parameters must not be included more than once
            raise _BadRequest("invalid_request", f"{name} is given more than once")
        form[name] = value
    return form


def _exchange_request(form: dict[str, str]) -> identity_pb2.ExchangeClientAssertionRequest:
    """The ExchangeClientAssertion request of a token request's parameters; _BadRequest naming the parameter."""
    grant_type = form.get("grant_type", "")
    if grant_type != GRANT_TYPE:
        raise _BadRequest("unsupported_grant_type" if grant_type else "invalid_request",
                          f"grant_type must be {GRANT_TYPE}")
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise _BadRequest("invalid_client", f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
    if not form.get("client_assertion"):
        raise _BadRequest("invalid_request", "client_assertion is required")
    if not form.get("scope"):
        raise _BadRequest("invalid_scope", "scope is required, e.g. system/Condition.rs")
    try:
        purpose = purpose_value(form.get(PURPOSE_PARAMETER, ""), PURPOSE_PARAMETER)
    except InvalidArgument as exc:
        raise _BadRequest("invalid_request", str(exc)) from None
    return identity_pb2.ExchangeClientAssertionRequest(
        client_assertion=form["client_assertion"], scope=form["scope"], purpose_of_use=purpose,  # type: ignore[arg-type]
        audience=TOKEN_AUDIENCE)


def token_endpoint(identity: IdentityStub, timeout_seconds: float = 10.0) -> Callable[[Request], Any]:
    """The Starlette endpoint answering SMART token requests through identity's ExchangeClientAssertion."""

    async def token(request: Request) -> Response:
        try:
            form = _token_form(request.headers.get("content-type", ""), await request.body())
            exchange = _exchange_request(form)
        except _BadRequest as bad:
            return oauth_error(400 if bad.error != "invalid_client" else 401, bad.error, bad.description)
        try:
            answer = await run_in_threadpool(
                lambda: identity().ExchangeClientAssertion(exchange, timeout=timeout_seconds))
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
            status, error = oauth_error_of(code, details)
            return oauth_error(status, error, details if status < 500 else "the token service is unavailable")
        expires_in = max(0, round(answer.expires_at_ms / 1000 - time.time()))
        return JSONResponse({
            "access_token": answer.token, "token_type": "bearer", "expires_in": expires_in, "scope": answer.scope,
            PURPOSE_PARAMETER: purpose_code(answer.purpose_of_use),
        }, headers=_NO_STORE)

    return token


def smart_routes(identity: IdentityStub, token_url: str) -> list[Route]:
    """The token endpoint and the discovery document, for the FHIR app's routes.

    token_url is the token endpoint's public URL: what clients put in their assertions' ``aud`` and what
    identity's CARECHAIN_SMART_TOKEN_URL must be.
    """
    document = smart_configuration(token_url)

    async def configuration(request: Request) -> Response:
        return JSONResponse(document)

    return [Route(TOKEN_PATH, token_endpoint(identity), methods=["POST"]),
            Route(CONFIGURATION_PATH, configuration, methods=["GET"])]


@dataclass(frozen=True)
class BearerCredentials:
    """A request's access token (pass it on as ``authorization: Bearer``), its caller, scopes and purpose."""

    token: str
    caller: Caller
    scopes: tuple[SmartScope, ...]  # empty: not a SMART token (not limited by scopes)
    purpose: int  # PurposeOfUse the token binds; 0 if none

    @property
    def metadata(self) -> list[tuple[str, str]]:
        """gRPC call metadata carrying the token."""
        return [("authorization", f"Bearer {self.token}")]


def token_verifier(trust: TrustBundle) -> TokenVerifier[Caller]:
    """Verifies access tokens for the records gateway (the audience SMART tokens are issued for)."""
    issuer_key = trust.key(TOKEN_ISSUER_ID)
    if issuer_key is None:
        raise FileNotFoundError(f"trust bundle lacks the token issuer key {TOKEN_ISSUER_ID}")
    return TokenVerifier({TOKEN_ISSUER_ID: issuer_key}, ACCESS_TOKEN_TYPE, TOKEN_AUDIENCE, caller_from_claims)


def bearer_credentials(authorization_header: str | None, verifier: TokenVerifier[Caller]) -> BearerCredentials:
    """The credentials of an ``Authorization: Bearer <token>`` header; Unauthenticated (HTTP 401) otherwise.

    The token is verified here too (signature, audience, lifetime) so the app can answer 401 before any
    gRPC call; the records service verifies it again and enforces scopes, purpose and consent.
    """
    scheme, _, token = (authorization_header or "").strip().partition(" ")
    if not authorization_header:
        raise Unauthenticated("missing access token (Authorization: Bearer <token>)")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be a Bearer token")
    token = token.strip()
    caller = verifier.verify(token)
    scopes = parse_scopes(caller.scope) if caller.scope else ()
    purpose = purpose_value(caller.purpose_of_use) if caller.purpose_of_use else 0
    return BearerCredentials(token, caller, scopes, purpose)
