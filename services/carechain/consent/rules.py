"""The consent contract rules shared by the consent service and the ledger validator.

One place: :class:`carechain.consent.server.ConsentServicer` calls these before it
submits (fast, field-named ``INVALID_ARGUMENT``), and
:class:`carechain.ledger.validator.Validator` calls the same functions on every
committed transaction, so a ``GrantConsent`` submitted directly to the ledger
that the consent service would refuse is marked invalid. Pure and
deterministic: no clock, no state; each raises :class:`InvalidArgument` naming
the field (prefixed by ``field``) and why, never a value.
"""

from __future__ import annotations

import uuid

from carechain.consent.policy import validate_policy
from carechain.consent.v1 import policy_pb2
from carechain.errors import InvalidArgument
from carechain.ledger.v1 import ledger_pb2


def require_uuid(value: str, field: str) -> None:
    """value is a non-empty UUID."""
    if not value:
        raise InvalidArgument(field, "required")
    try:
        uuid.UUID(value)
    except ValueError as exc:
        raise InvalidArgument(field, "must be a UUID") from exc


def validate_grant(grant: ledger_pb2.GrantConsent, field: str = "grant_consent") -> None:
    """Every rule a GrantConsent must meet: a UUID consent id and a valid policy.

    On top of :func:`carechain.consent.policy.validate_policy` (which already
    needs a purpose on every top-level permit), a top-level permit must name
    at least one actor: a permit for "anyone" is not a consent a patient can
    give by accident through a raw transaction.
    """
    require_uuid(grant.consent_id, f"{field}.consent_id")
    if not grant.patient_id:
        raise InvalidArgument(f"{field}.patient_id", "required")
    validate_policy(grant.policy, f"{field}.policy")
    for i, provision in enumerate(grant.policy.provisions):
        if provision.type == policy_pb2.PROVISION_TYPE_PERMIT and not provision.actors:
            raise InvalidArgument(
                f"{field}.policy.provisions[{i}].actors", "a top-level permit needs at least one actor"
            )


MAX_BREAK_GLASS_REASON = 500


def validate_break_glass_request(break_glass: bool, reason: str, field: str = "") -> None:
    """A break-glass request carries a reason; a reason comes only with a break-glass request."""
    prefix = f"{field}." if field else ""
    if break_glass and not reason.strip():
        raise InvalidArgument(f"{prefix}break_glass_reason", "required when break_glass is set")
    if reason and not break_glass:
        raise InvalidArgument(f"{prefix}break_glass_reason", "only with break_glass")
    if len(reason) > MAX_BREAK_GLASS_REASON:
        raise InvalidArgument(f"{prefix}break_glass_reason", f"at most {MAX_BREAK_GLASS_REASON} characters")


def validate_revoke(revoke: ledger_pb2.RevokeConsent, field: str = "revoke_consent") -> None:
    """Every stateless rule a RevokeConsent must meet."""
    require_uuid(revoke.consent_id, f"{field}.consent_id")
