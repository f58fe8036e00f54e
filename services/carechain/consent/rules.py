"""The consent contract rules shared by the consent service and the ledger validator.

One place for each rule. Since ledger privacy (docs/security.md, "Ledger
privacy") a ``GrantConsent`` carries its policy only sealed, so the rules fall
into two kinds:

- what validators can see (:func:`validate_grant`: a UUID consent id, a
  patient, no clear policy, a sealed one, and :func:`policy_attested`: the
  consent service's attestation of the sealed policy).
  :class:`carechain.ledger.contract.Validator` runs them on every committed
  transaction and the consent service before it submits;
- what only holders of the ledger metadata key can see
  (:func:`validate_grant_policy`: :func:`carechain.consent.policy.validate_policy`
  plus the rules below). The consent service runs them in ``SealPolicy``
  before it seals and attests a policy, on a submitted grant once it has
  opened it, and again whenever it folds a committed grant from the ledger
  (:mod:`carechain.consent.state`): a policy that breaks them is never applied.

So a ``GrantConsent`` submitted directly to the ledger whose policy the
consent service did not validate has no valid attestation and is marked
invalid, and one whose attestation is valid holds a policy that passed these
rules. Pure and deterministic: no clock, no state; each raises
:class:`InvalidArgument` naming the field (prefixed by ``field``) and why,
never a value.
"""

from __future__ import annotations

import struct
import uuid

from carechain.consent.policy import validate_policy
from carechain.consent.v1 import policy_pb2
from carechain.core.consent_jws import InvalidConsentJws, unverified_signer
from carechain.core.crypto import Signer, verify_signature
from carechain.core.errors import InvalidArgument
from carechain.core.fhir import parse_json
from carechain.ledger.v1 import ledger_pb2

#: Domain separation of svc-consent's policy attestations (never valid as a transaction or token signature).
POLICY_ATTESTATION_CONTEXT = b"carechain-policy-attestation/v1"
#: The same, for a policy mapped from a FHIR Consent the patient signed (binds the Consent's body hash).
SIGNED_CONSENT_ATTESTATION_CONTEXT = b"carechain-signed-consent-attestation/v1"


def require_uuid(value: str, field: str) -> None:
    """value is a non-empty UUID."""
    if not value:
        raise InvalidArgument(field, "required")
    try:
        uuid.UUID(value)
    except ValueError as exc:
        raise InvalidArgument(field, "must be a UUID") from exc


def validate_grant(grant: ledger_pb2.GrantConsent, field: str = "grant_consent") -> None:
    """Every rule on what a GrantConsent shows in clear (validators and the consent service).

    A UUID consent id, a patient, the policy only sealed (never in clear) and
    an attestation present (:func:`policy_attested` checks its signature).
    """
    require_uuid(grant.consent_id, f"{field}.consent_id")
    if not grant.patient_id:
        raise InvalidArgument(f"{field}.patient_id", "required")
    if grant.HasField("policy"):
        raise InvalidArgument(f"{field}.policy", "must be sealed in sealed_policy, not in clear (use SealPolicy)")
    sealed = grant.sealed_policy
    if not grant.HasField("sealed_policy") or not (sealed.key_name and sealed.wrapped_key and sealed.ciphertext):
        raise InvalidArgument(f"{field}.sealed_policy",
                              "required (key_name, wrapped_key and ciphertext, from SealPolicy)")
    if not grant.policy_attestation:
        raise InvalidArgument(f"{field}.policy_attestation", "required (from SealPolicy)")


def validate_grant_policy(policy: policy_pb2.ConsentPolicy, field: str = "policy") -> None:
    """Every rule a granted policy must meet (checked on the clear policy, before sealing and after opening).

    On top of :func:`carechain.consent.policy.validate_policy` (which already
    needs a purpose on every top-level permit), a top-level permit must name
    at least one actor: a permit for "anyone" is not a consent a patient can
    give by accident.
    """
    validate_policy(policy, field)
    for i, provision in enumerate(policy.provisions):
        if provision.type == policy_pb2.PROVISION_TYPE_PERMIT and not provision.actors:
            raise InvalidArgument(f"{field}.provisions[{i}].actors", "a top-level permit needs at least one actor")


def policy_attestation_message(chain_id: str, consent_id: str, patient_id: str,
                               sealed: ledger_pb2.SealedData, consent_sha256: str = "") -> bytes:
    """What svc-consent signs for a sealed policy: length-prefixed, so no two inputs give the same bytes.

    consent_sha256 (a FHIR Consent the patient signed as a JWS, :mod:`carechain.core.consent_jws`) ties the
    sealed policy to exactly what the patient signed; it is signed under its own context, so an attestation
    with it is never valid without it and the other way round.
    """
    parts = [chain_id.encode(), consent_id.encode(), patient_id.encode(), sealed.key_name.encode(),
             sealed.wrapped_key.encode(), bytes(sealed.ciphertext)]
    context = POLICY_ATTESTATION_CONTEXT
    if consent_sha256:
        context = SIGNED_CONSENT_ATTESTATION_CONTEXT
        parts.append(consent_sha256.encode())
    return context + b"".join(struct.pack(">I", len(p)) + p for p in parts)


def attest_policy(signer: Signer, chain_id: str, consent_id: str, patient_id: str,
                  sealed: ledger_pb2.SealedData, consent_sha256: str = "") -> bytes:
    """svc-consent's signature that the policy sealed in sealed passed :func:`validate_grant_policy`
    (and, with consent_sha256, that it is the policy of the FHIR Consent with that body hash)."""
    return signer.sign(policy_attestation_message(chain_id, consent_id, patient_id, sealed, consent_sha256))


def policy_attested(grant: ledger_pb2.GrantConsent, chain_id: str, consent_key: bytes | None,
                    consent_sha256: str = "") -> bool:
    """Whether grant.policy_attestation is svc-consent's signature (consent_key) over its sealed policy
    (bound to consent_sha256 when given: the body hash of the patient's consent JWS)."""
    if consent_key is None or not grant.policy_attestation:
        return False
    message = policy_attestation_message(chain_id, grant.consent_id, grant.patient_id, grant.sealed_policy,
                                         consent_sha256)
    return verify_signature(consent_key, bytes(grant.policy_attestation), message)


#: The largest signed revocation (its only elements are resourceType, a UUID id and status).
MAX_REVOCATION_BYTES = 256
_REVOCATION_KEYS = ("id", "resourceType", "status")
_REVOCATION_FORM = (f'a revocation has exactly resourceType, id and status "inactive" (at most {MAX_REVOCATION_BYTES} '
                    "bytes): it goes on the ledger")


def revoked_consent_id(revocation_json: bytes, field: str = "Consent") -> str:
    """The consent id a signed revocation names: exactly ``{"resourceType": "Consent", "id": <UUID>,
    "status": "inactive"}`` (any key order and spacing), else InvalidArgument. It goes on the ledger for the
    validators to check the patient's JWS against, so it may hold nothing else (no PHI)."""
    if len(revocation_json) > MAX_REVOCATION_BYTES:
        raise InvalidArgument(field, _REVOCATION_FORM)
    content = parse_json(revocation_json)  # strict (no duplicate keys), bounded depth
    if not isinstance(content, dict) or sorted(content) != list(_REVOCATION_KEYS):
        raise InvalidArgument(field, _REVOCATION_FORM)
    if content["resourceType"] != "Consent":
        raise InvalidArgument(f"{field}.resourceType", "must be Consent")
    if content["status"] != "inactive":
        raise InvalidArgument(f"{field}.status", "must be inactive to revoke")
    if not isinstance(content["id"], str):
        raise InvalidArgument(f"{field}.id", "must be the consent id")
    require_uuid(content["id"], f"{field}.id")
    return content["id"]


def signed_by(body: ledger_pb2.TransactionBody) -> str:
    """Who granted or revoked in a committed (valid) GrantConsent / RevokeConsent: the JWS signer of one
    relayed from the FHIR gateway (svc-consent submitted it; the validators verified the JWS), else the
    transaction's signer."""
    kind = body.WhichOneof("payload")
    jws = getattr(body, kind).patient_jws if kind in ("grant_consent", "revoke_consent") else b""
    if jws:
        try:
            return unverified_signer(bytes(jws).decode("ascii"))
        except (UnicodeDecodeError, InvalidConsentJws):
            pass  # not on a valid grant (validators refuse it); the submitter is all that is known
    return body.submitter_id


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
