"""Who a REST request acts as: the caller's bearer token, passed on to records, its scopes and purpose of use.

The gateway holds no privilege of its own: each call to records carries the caller's
``Authorization: Bearer`` token (a CareChain access token for ``carechain.records``, or a SMART Backend
Services token, which is one with ``scope`` and ``purpose_of_use`` claims), so records checks the caller
exactly as on the gRPC path. The gateway verifies the token first (:func:`carechain.fhir.smart.bearer_credentials`:
signature, audience, lifetime) so a forged or expired one is 401 before any gRPC call.

Purpose of use: a SMART token carries its own (stated at the token request, as IHE IUA does); the
``X-Purpose-Of-Use`` header (an HL7 v3 ActReason code such as ``TREAT``) is for CareChain tokens that carry
none. When both are given they must agree (400 otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from carechain.common.v1 import common_pb2
from carechain.core.errors import Unauthenticated
from carechain.core.smart_scopes import SmartScope
from carechain.core.tokens import TokenVerifier
from carechain.fhir.outcomes import WWW_AUTHENTICATE, FhirError
from carechain.fhir.smart import bearer_credentials
from carechain.runtime.auth import Caller

PURPOSE_HEADER = "x-purpose-of-use"
_PURPOSE_PREFIX = "PURPOSE_OF_USE_"
MAX_AUTHORIZATION_CHARS = 16 * 1024


@dataclass(frozen=True)
class RequestCredentials:
    """What one REST request acts with."""

    #: The ``authorization`` metadata value sent with every records call (``Bearer <CareChain token>``).
    authorization: str
    #: The purpose of use (common.v1.PurposeOfUse), 0 when none was given.
    purpose: int = 0
    #: SMART scopes granted to the token (empty: not a SMART token, not limited by scopes).
    scopes: tuple[SmartScope, ...] = ()


def purpose_of_use(code: str) -> int:
    """The PurposeOfUse of an HL7 v3 ActReason code (``TREAT``, ``ETREAT``, ``HPAYMT``, ...); 400 if unknown."""
    try:
        value = common_pb2.PurposeOfUse.Value(_PURPOSE_PREFIX + code.strip().upper())
    except ValueError:
        raise FhirError(400, "value", "X-Purpose-Of-Use: not an HL7 v3 purpose of use code CareChain knows "
                        "(e.g. TREAT)") from None
    if value == common_pb2.PURPOSE_OF_USE_UNSPECIFIED:
        raise FhirError(400, "value", "X-Purpose-Of-Use: name a purpose of use (e.g. TREAT)")
    return value


def unauthenticated(why: str) -> FhirError:
    """A 401 with the RFC 6750 challenge."""
    return FhirError(401, "login", why, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def request_credentials(headers: Mapping[str, str], verifier: TokenVerifier[Caller] | None) -> RequestCredentials:
    """The credentials of a request from its headers; 401 without a valid bearer token.

    verifier checks the token here (None: records alone checks it, e.g. a gateway without a trust bundle
    in unit tests); the purpose of use is the token's, else the header's, and both must agree.
    """
    header = headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(header) > MAX_AUTHORIZATION_CHARS:
        raise unauthenticated("an Authorization: Bearer access token is required")
    header_purpose = headers.get(PURPOSE_HEADER, "")
    purpose = purpose_of_use(header_purpose) if header_purpose else 0
    if verifier is None:
        return RequestCredentials(f"Bearer {token.strip()}", purpose)
    try:
        bearer = bearer_credentials(header, verifier)
    except Unauthenticated as exc:
        raise unauthenticated(f"the access token is not valid here ({exc.message})") from None
    if bearer.purpose and purpose and bearer.purpose != purpose:
        raise FhirError(400, "value", "X-Purpose-Of-Use: must be the access token's purpose of use (or left out)")
    return RequestCredentials(f"Bearer {bearer.token}", bearer.purpose or purpose, bearer.scopes)
