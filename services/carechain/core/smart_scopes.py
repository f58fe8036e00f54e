"""SMART on FHIR scopes and the purpose of use a SMART access token is bound to: one place for both.

A SMART Backend Services client asks for scopes (SMART App Launch 2.0 §"Scopes and Launch Context"):
v2 ``system/Condition.rs`` (context / resource type . interactions out of ``c r u d s``) or v1
``system/*.read`` (``read`` = ``rs``, ``write`` = ``cud``, ``*`` = all). CareChain grants ``system/``
scopes to organisations and ``user/`` scopes to practitioners; ``patient/`` (an app launched for one
patient) is not offered. The identity service validates requested scopes (:func:`parse_scopes`) and
writes the granted ones, normalised to v2 (:func:`format_scopes`), into the access token's ``scope``
claim; the records gateway checks each request against them (:func:`require_scope`). A token without
a ``scope`` claim (CareChain's own proof-of-possession tokens) is not limited by scopes. Scopes only
ever narrow: consent still decides every read.

The token's ``purpose_of_use`` claim is the HL7 v3 PurposeOfUse code the client stated when it got the
token (IHE IUA carries it the same way); a read with that token must state the same purpose
(:func:`require_purpose`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from carechain.common.v1 import common_pb2
from carechain.core.errors import InvalidArgument, PermissionDenied
from carechain.core.fhir import PATIENT_REFERENCE_FIELDS

SYSTEM = "system"
USER = "user"
CONTEXTS = (SYSTEM, USER)
# SMART v2 interactions, in the order a v2 scope must list them.
INTERACTIONS = "cruds"
CREATE, READ, UPDATE, DELETE, SEARCH = INTERACTIONS
INTERACTION_NAMES = {CREATE: "create", READ: "read", UPDATE: "update", DELETE: "delete", SEARCH: "search"}
# SMART v1 permissions as v2 interactions.
_V1 = {"read": "rs", "write": "cud", "*": INTERACTIONS}
WILDCARD = "*"
# Resource types a scope may name: those CareChain stores, plus what the FHIR gateway answers itself.
RESOURCE_TYPES = frozenset({"Patient", "AuditEvent", *PATIENT_REFERENCE_FIELDS})
MAX_SCOPES = 32
MAX_SCOPE_CHARS = 2048
FIELD = "scope"
_SCOPE = re.compile(r"^(?P<context>[a-z]+)/(?P<type>\*|[A-Z][A-Za-z]{0,63})\.(?P<perm>read|write|\*|[a-z]{1,5})$")
_PURPOSE_PREFIX = "PURPOSE_OF_USE_"


@dataclass(frozen=True, order=True)
class SmartScope:
    """One granted scope: a context (system or user), a resource type (or ``*``) and v2 interactions."""

    context: str
    resource_type: str
    interactions: str  # a subsequence of INTERACTIONS

    def __str__(self) -> str:
        return f"{self.context}/{self.resource_type}.{self.interactions}"

    def permits(self, resource_type: str, interaction: str) -> bool:
        """Whether this scope allows interaction on resource_type."""
        return self.resource_type in (WILDCARD, resource_type) and interaction in self.interactions


def parse_scope(text: str) -> SmartScope:
    """One scope string in v2 or v1 syntax; InvalidArgument naming ``scope`` if it is not a supported scope."""
    match = _SCOPE.match(text)
    if match is None:
        raise InvalidArgument(FIELD, f"{text[:80]!r} is not a SMART system/ or user/ resource scope")
    context, resource_type, permission = match["context"], match["type"], match["perm"]
    if context not in CONTEXTS:
        raise InvalidArgument(FIELD, f"{text!r}: only system/ and user/ scopes are offered")
    if resource_type != WILDCARD and resource_type not in RESOURCE_TYPES:
        raise InvalidArgument(FIELD, f"{text!r}: {resource_type} is not a resource type CareChain serves")
    interactions = _V1.get(permission)
    if interactions is None:
        # v2: distinct letters of c r u d s, in that order (SMART App Launch 2.0).
        if not re.fullmatch("c?r?u?d?s?", permission):
            raise InvalidArgument(FIELD, f"{text!r}: interactions are letters of 'cruds', in that order")
        interactions = permission
    return SmartScope(context, resource_type, interactions)


def parse_scopes(text: str) -> tuple[SmartScope, ...]:
    """The scopes of a space-separated scope parameter or claim: at least one, at most MAX_SCOPES, deduplicated."""
    if len(text) > MAX_SCOPE_CHARS:
        raise InvalidArgument(FIELD, f"is longer than {MAX_SCOPE_CHARS} characters")
    words = text.split()
    if not words:
        raise InvalidArgument(FIELD, "is required: e.g. system/Condition.rs")
    if len(words) > MAX_SCOPES:
        raise InvalidArgument(FIELD, f"at most {MAX_SCOPES} scopes")
    return tuple(sorted({parse_scope(word) for word in words}))


def format_scopes(scopes: tuple[SmartScope, ...]) -> str:
    """The scope claim / OAuth2 ``scope`` answer for scopes (v2 syntax, space-separated)."""
    return " ".join(str(scope) for scope in scopes)


def require_context(scopes: tuple[SmartScope, ...], context: str) -> None:
    """InvalidArgument unless every scope has context (system/ for organisations, user/ for practitioners)."""
    for scope in scopes:
        if scope.context != context:
            raise InvalidArgument(FIELD, f"this client may only request {context}/ scopes")


def permits(scopes: tuple[SmartScope, ...], resource_type: str, interaction: str) -> bool:
    """Whether any of scopes allows interaction (one of ``c r u d s``) on resource_type."""
    if interaction not in INTERACTION_NAMES:
        raise ValueError(f"unknown SMART interaction {interaction!r}")
    return any(scope.permits(resource_type, interaction) for scope in scopes)


def require_scope(scope_claim: str, resource_type: str, interaction: str) -> None:
    """PermissionDenied unless the token's scope claim allows interaction on resource_type.

    An empty claim (a token not issued through SMART) is not limited. The message never names the
    resource type: for a read that is the record's (sealed) metadata.
    """
    if not scope_claim:
        return
    if not permits(parse_scopes(scope_claim), resource_type, interaction):
        raise PermissionDenied(f"the access token's SMART scopes do not permit this {INTERACTION_NAMES[interaction]}")


def searchable_types(scope_claim: str, requested: Iterable[str]) -> frozenset[str]:
    """The resource types a search (or a patient summary) may cover under the token's scope claim.

    Types asked for explicitly must each have the ``s`` interaction (else PermissionDenied); when none are
    asked for, the search is limited to the types the scopes allow ``s`` on, so that it never reveals other
    types (not even by counts). The empty set means every type: a token without a scope claim (not
    issued through SMART) or a wildcard ``s`` scope.
    """
    wanted = frozenset(requested)
    if not scope_claim:
        return wanted
    scopes = parse_scopes(scope_claim)
    denied = PermissionDenied(f"the access token's SMART scopes do not permit this {INTERACTION_NAMES[SEARCH]}")
    if wanted:
        if not all(permits(scopes, resource_type, SEARCH) for resource_type in wanted):
            raise denied
        return wanted
    if any(scope.resource_type == WILDCARD and SEARCH in scope.interactions for scope in scopes):
        return frozenset()
    allowed = frozenset(scope.resource_type for scope in scopes if SEARCH in scope.interactions)
    if not allowed:
        raise denied
    return allowed


def purpose_code(purpose: int) -> str:
    """The HL7 v3 PurposeOfUse code of a PurposeOfUse value, e.g. ``TREAT``."""
    return common_pb2.PurposeOfUse.Name(purpose).removeprefix(_PURPOSE_PREFIX)


def purpose_value(code: str, field: str = "purpose_of_use") -> int:
    """The PurposeOfUse value of an HL7 v3 code (``TREAT``) or enum name; InvalidArgument naming field."""
    name = code.strip().upper()
    if not name.startswith(_PURPOSE_PREFIX):
        name = _PURPOSE_PREFIX + name
    if name == "PURPOSE_OF_USE_UNSPECIFIED" or name not in common_pb2.PurposeOfUse.keys():
        raise InvalidArgument(field, "must be an HL7 v3 PurposeOfUse code such as TREAT or ETREAT")
    return common_pb2.PurposeOfUse.Value(name)


def require_purpose(token_purpose: str, purpose: int) -> None:
    """InvalidArgument naming ``purpose`` unless a read states the purpose its token was issued for.

    An empty token_purpose (a token not issued through SMART) binds no purpose.
    """
    if token_purpose and purpose_code(purpose) != token_purpose:
        raise InvalidArgument("purpose", f"must be the access token's purpose of use ({token_purpose})")
