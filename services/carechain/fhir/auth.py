"""Who a REST request acts as: the caller's bearer token, passed on to records, and its purpose of use.

The gateway holds no privilege of its own: each call to records carries the caller's
``Authorization: Bearer`` token (a CareChain access token for ``carechain.records``), so records checks
the caller exactly as on the gRPC path. When :mod:`carechain.fhir.smart` (SMART Backend Services) is
installed, its ``authorize_request(authorization)`` turns the header into the CareChain token, the granted
scopes and the token's purpose of use; until then the token is passed on as it is, and the purpose of use of
a read comes from the ``X-Purpose-Of-Use`` header (an HL7 v3 ActReason code such as ``TREAT``).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from carechain.common.v1 import common_pb2
from carechain.fhir.outcomes import WWW_AUTHENTICATE, FhirError

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
    #: SMART scopes granted to the token (empty before SMART authorisation lands).
    scopes: tuple[str, ...] = ()


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


def smart_module() -> Any:
    """carechain.fhir.smart (SMART Backend Services), when installed, else None."""
    if importlib.util.find_spec("carechain.fhir.smart") is None:
        return None
    return importlib.import_module("carechain.fhir.smart")


def _smart_authorizer() -> Callable[[str], Any] | None:
    """carechain.fhir.smart's authorize_request, when that module is installed."""
    return getattr(smart_module(), "authorize_request", None)


def unauthenticated(why: str) -> FhirError:
    """A 401 with the RFC 6750 challenge."""
    return FhirError(401, "login", why, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def request_credentials(headers: Mapping[str, str]) -> RequestCredentials:
    """The credentials of a request from its headers; 401 without a well-formed bearer token."""
    header = headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(header) > MAX_AUTHORIZATION_CHARS:
        raise unauthenticated("an Authorization: Bearer access token is required")
    header_purpose = headers.get(PURPOSE_HEADER, "")
    purpose = purpose_of_use(header_purpose) if header_purpose else 0
    authorize = _smart_authorizer()
    if authorize is None:
        return RequestCredentials(f"Bearer {token.strip()}", purpose)
    granted = authorize(header)
    return RequestCredentials(f"Bearer {granted.token}", granted.purpose or purpose, tuple(granted.scopes))
