"""The claims of a consent decision token, typed: one model for the writer and both readers.

The consent service issues a decision token with each permit (``Decide``) and
re-checks it at key release (``CheckDecision``); the identity service reads it
in ``ReleaseDataKey``. On the wire the claims keep their short JWT names:

=====  ==========================================  ======================================
claim  field                                       value
=====  ==========================================  ======================================
sub    :attr:`DecisionClaims.actor_id`             the practitioner the permit is for
rid    :attr:`DecisionClaims.record_id`            the record
psn    :attr:`DecisionClaims.patient_id`           the record's patient (pseudonym)
pou    :attr:`DecisionClaims.purpose`              a ``PurposeOfUse`` name
act    :attr:`DecisionClaims.action`               a ``ConsentAction`` name
cid    :attr:`DecisionClaims.consent_id`           the permitting consent ("" for break-glass)
bg     :attr:`DecisionClaims.break_glass`          present (true) only for break-glass
bgs    :attr:`DecisionClaims.break_glass_started_at_ms`  the break-glass window (Unix ms)
bge    :attr:`DecisionClaims.break_glass_expires_at_ms`
jti    :attr:`DecisionClaims.decision_id`          set when issued: single use at key release
exp    :attr:`DecisionClaims.expires_at`           set when issued (Unix seconds)
=====  ==========================================  ======================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Signer
from carechain.core.errors import Unauthenticated
from carechain.core.layout import DECISION_ISSUER_ID, audience
from carechain.core.tokens import DECISION_TOKEN_TYPE, issue_token_with_claims, verify_token

#: Decision tokens are redeemed at the identity service.
DECISION_AUDIENCE = audience("identity")
#: Separates a record id from its version in a later version's data key id (record ids are UUIDs: no ':').
_VERSION_KEY_SEPARATOR = ":v"


def data_key_id(record_id: str, version: int) -> str:
    """The id identity keeps a record version's data key under: the record id itself for version 1 (as
    before versions existed), ``<record id>:v<N>`` for a later version (each version has its own key)."""
    return record_id if version <= 1 else f"{record_id}{_VERSION_KEY_SEPARATOR}{version}"


def data_key_record_id(key_id: str) -> str:
    """The record a data key id belongs to: a decision token for that record redeems any of its versions' keys."""
    record_id, separator, version = key_id.rpartition(_VERSION_KEY_SEPARATOR)
    return record_id if separator and record_id and version.isdigit() else key_id


@dataclasses.dataclass(frozen=True)
class DecisionClaims:
    """What a consent permit allows: one actor, one record, one purpose and action (see the module table)."""

    actor_id: str
    record_id: str
    patient_id: str
    purpose: int  # common_pb2.PurposeOfUse
    action: int  # common_pb2.ConsentAction
    consent_id: str = ""
    break_glass: bool = False
    break_glass_started_at_ms: int = 0
    break_glass_expires_at_ms: int = 0
    decision_id: str = ""
    expires_at: float = 0.0

    def to_claims(self) -> dict[str, object]:
        """The JWT claims to sign (jti and exp are added by :func:`carechain.core.tokens.issue_token`)."""
        claims: dict[str, object] = {
            "sub": self.actor_id,
            "aud": DECISION_AUDIENCE,
            "rid": self.record_id,
            "psn": self.patient_id,
            "pou": common_pb2.PurposeOfUse.Name(self.purpose),
            "act": common_pb2.ConsentAction.Name(self.action),
            "cid": self.consent_id,
        }
        if self.break_glass:
            claims.update(bg=True, bgs=self.break_glass_started_at_ms, bge=self.break_glass_expires_at_ms)
        return claims

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> DecisionClaims:
        """The typed claims of a verified token; Unauthenticated naming the first missing or mistyped claim."""
        break_glass = claims.get("bg", False)
        if not isinstance(break_glass, bool):
            raise _bad("bg", "must be true or absent")
        expires_at = claims.get("exp", 0.0)
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            raise _bad("exp", "must be a number")
        return cls(
            actor_id=_text(claims, "sub"),
            record_id=_text(claims, "rid"),
            patient_id=_text(claims, "psn"),
            purpose=_enum(claims, "pou", common_pb2.PurposeOfUse, common_pb2.PURPOSE_OF_USE_UNSPECIFIED),
            action=_enum(claims, "act", common_pb2.ConsentAction, common_pb2.CONSENT_ACTION_UNSPECIFIED),
            consent_id=_text(claims, "cid", required=False),
            break_glass=break_glass,
            break_glass_started_at_ms=_millis(claims, "bgs") if break_glass else 0,
            break_glass_expires_at_ms=_millis(claims, "bge") if break_glass else 0,
            decision_id=_text(claims, "jti", required=False),
            expires_at=float(expires_at),
        )


def issue_decision_token(signer: Signer, claims: DecisionClaims, ttl_seconds: float) -> tuple[str, DecisionClaims]:
    """Sign claims into a decision token; returns it and its claims with decision_id and expires_at set."""
    # The claims as signed (parsed from the signed bytes): the jti and exp identity will see.
    token, signed = issue_token_with_claims(signer, DECISION_TOKEN_TYPE, claims.to_claims(), ttl_seconds)
    return token, DecisionClaims.from_claims(signed)


def verify_decision_token(token: str, issuer_key: bytes) -> DecisionClaims:
    """The typed claims of a decision token signed with issuer_key (svc-consent's); Unauthenticated if not valid."""
    return DecisionClaims.from_claims(
        verify_token(token, {DECISION_ISSUER_ID: issuer_key}, DECISION_TOKEN_TYPE, DECISION_AUDIENCE)
    )


def _bad(claim: str, why: str) -> Unauthenticated:
    return Unauthenticated(f"decision token claim {claim} {why}")


def _text(claims: Mapping[str, Any], name: str, required: bool = True) -> str:
    value = claims.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise _bad(name, "must be a non-empty string" if required else "must be a string")
    return value


def _enum(claims: Mapping[str, Any], name: str, enum: Any, unspecified: int) -> int:
    value = claims.get(name)
    if not isinstance(value, str) or value not in enum.keys() or enum.Value(value) == unspecified:
        raise _bad(name, f"must name a {enum.DESCRIPTOR.name}")
    return int(enum.Value(value))


def _millis(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(name, "must be a non-negative integer (Unix ms)")
    return value
