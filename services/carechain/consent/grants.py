"""Grants, revocations and delegations: patient-signed transactions checked, committed and audited.

Grants and revocations are transactions signed by the patient (or an active
delegate), validated here (fast, field-named errors), committed by the ledger
and audited. A grant's policy is on the ledger only sealed under the ledger
metadata key: :meth:`Grants.seal_policy` validates and seals a policy for one
consent id and attests it; the patient puts the sealed bytes into
``GrantConsent.sealed_policy`` and signs the transaction over them, so the
signature covers exactly what the ledger stores.

Delegates (guardians, proxies) are registered and revoked by the patient alone.
Who may read a patient's consents and delegations is :meth:`Grants.readable_patient`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.consent import rules as consent_rules
from carechain.consent.fhir_consent import consent_from_fhir
from carechain.consent.following import FollowedLedger
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.consent_jws import (
    ConsentClaims,
    InvalidConsentJws,
    same_digest,
    unverified_signer,
    verify_consent_jws,
)
from carechain.core.crypto import Signer
from carechain.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from carechain.core.fhir import parse_json
from carechain.ledger.sealing import LedgerSealer
from carechain.ledger.transactions import decode_body
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller

Kind = common_pb2.PrincipalKind
#: The registered Ed25519 public key of a principal (None when unknown): the key a consent JWS must verify under.
SignerKey = Callable[[str], bytes | None]
_GRANT = "transaction.body.grant_consent"
_REVOKE = "transaction.body.revoke_consent"
_REGISTER_DELEGATE = "transaction.body.register_delegate"


class Grants:
    """The consent contracts and delegations of patients, changed only through the ledger."""

    def __init__(self, ledger: FollowedLedger, sealer: LedgerSealer, attester: Signer) -> None:
        """attester is this service's key: it attests sealed policies (the validators cannot open them)."""
        self._ledger = ledger
        self._state = ledger.state
        self._sealer = sealer
        self._attester = attester

    # --- who acts for whom ------------------------------------------------------

    def signed_for_patient(
        self,
        caller: Caller,
        transaction: ledger_pb2.Transaction | None,
        payload: str,
        allow_delegate: bool = True,
    ) -> tuple[Any, str]:
        """Check the caller signed the transaction and may act for its patient; decode it.

        Returns (payload message, how the caller acts: "patient" or "delegate").
        The caller must have signed the transaction (None: the request has none)
        and be the patient, or (when allowed) an active delegate of the patient.
        """
        if transaction is None:
            raise InvalidArgument("transaction", "required")
        if transaction.signer_id != caller.principal_id:
            raise PermissionDenied("the transaction must be signed by the calling patient or delegate")
        body = decode_body(transaction)
        if body.WhichOneof("payload") != payload:
            raise InvalidArgument("transaction.body", f"payload must be {payload}")
        message = getattr(body, payload)
        if message.patient_id == caller.principal_id and caller.kind == Kind.PRINCIPAL_KIND_PATIENT:
            return message, "patient"
        if allow_delegate and message.patient_id:
            self._ledger.sync()
            if self._state.active_delegate(message.patient_id, caller.principal_id, self._ledger.now_ms()) is not None:
                return message, "delegate"
            raise PermissionDenied(
                "a patient may only manage its own consents; a delegate only those of its patients while active"
            )
        raise PermissionDenied("a patient may only manage its own consents and delegates")

    def readable_patient(self, caller: Caller, patient_id: str, what: str) -> str:
        """The patient whose consents the caller may read (the patient, an active delegate or a service); syncs."""
        if caller.kind == Kind.PRINCIPAL_KIND_SERVICE:
            if not patient_id:
                raise InvalidArgument("patient_id", "required")
            self._ledger.sync()
            return patient_id
        if caller.kind == Kind.PRINCIPAL_KIND_PATIENT:
            patient_id = patient_id or caller.principal_id
        elif not patient_id:
            raise InvalidArgument("patient_id", "required")
        self._ledger.sync()
        if patient_id != caller.principal_id and (
            self._state.active_delegate(patient_id, caller.principal_id, self._ledger.now_ms()) is None
        ):
            raise PermissionDenied(f"a patient (or its active delegate) may only {what}")
        return patient_id

    def readable_consent(self, caller: Caller, consent_id: str) -> consent_pb2.ConsentRecord:
        """A consent the caller may read; NotFound if unknown or not theirs (ids cannot be probed); syncs."""
        if not consent_id:
            raise InvalidArgument("consent_id", "required")
        self._ledger.sync()
        consent = self._state.consent(consent_id)
        try:
            if consent is not None:
                self.readable_patient(caller, consent.patient_id, "export its own consents")
        except (PermissionDenied, InvalidArgument):
            consent = None
        if consent is None:
            raise NotFound(f"consent {consent_id} does not exist or is not yours")
        return consent

    # --- consents ----------------------------------------------------------------

    def seal_policy(
        self, patient_id: str, consent_id: str, policy: policy_pb2.ConsentPolicy | None
    ) -> tuple[bytes, bytes]:
        """Check a policy against the consent rules, seal it and attest it: (sealed policy, attestation).

        The only way to a valid grant; who may seal for the patient is checked before (readable_patient).
        """
        if not patient_id:
            raise InvalidArgument("patient_id", "required")
        consent_rules.require_uuid(consent_id, "consent_id")
        if policy is None:
            raise InvalidArgument("policy", "required")
        consent_rules.validate_grant_policy(policy)
        if self._state.consent(consent_id) is not None:
            raise AlreadyExists(f"consent {consent_id} already exists")
        sealed = self._sealer.seal_policy(consent_id, patient_id, policy)
        # The validators cannot open the policy: this signature tells them it passed the rules above.
        attestation = consent_rules.attest_policy(self._attester, self._ledger.chain_id, consent_id, patient_id, sealed)
        return sealed, attestation

    def _open_grant(self, grant: ledger_pb2.GrantConsent) -> policy_pb2.ConsentPolicy:
        """The policy sealed in a submitted grant (already checked by consent_rules.validate_grant), validated."""
        try:
            policy = self._sealer.open_policy(grant)
        except IntegrityError as exc:
            raise InvalidArgument(f"{_GRANT}.sealed_policy",
                                  "does not open: seal the policy with SealPolicy for this consent id and patient"
                                  ) from exc
        if not consent_rules.policy_attested(grant, self._ledger.chain_id, self._attester.public_key_bytes()):
            raise InvalidArgument(f"{_GRANT}.policy_attestation",
                                  "not this service's attestation of sealed_policy (use SealPolicy's answer)")
        consent_rules.validate_grant_policy(policy)  # named "policy", as in SealPolicyRequest
        return policy

    def grant(self, caller: Caller, transaction: ledger_pb2.Transaction | None) -> consent_pb2.ConsentRecord:
        """Commit a signed GrantConsent; the consent as now on the ledger (audited before this returns)."""
        grant, _ = self.signed_for_patient(caller, transaction, "grant_consent")
        assert transaction is not None  # signed_for_patient refused a missing one
        consent_rules.validate_grant(grant, _GRANT)
        policy = self._open_grant(grant)
        self._ledger.sync()
        if self._state.consent(grant.consent_id) is not None:
            raise AlreadyExists(f"consent {grant.consent_id} already exists")
        response = self._ledger.commit(transaction)
        self._ledger.audit_consent_changes()  # this grant's audit event is durable before the caller hears of it
        return self._state.consent(grant.consent_id) or consent_pb2.ConsentRecord(
            consent_id=grant.consent_id,
            patient_id=grant.patient_id,
            policy=policy,
            status=consent_pb2.CONSENT_STATUS_ACTIVE,
            granted_log_index=response.log_index,
            granted_by=caller.principal_id,
        )

    def submit_signed_fhir(self, caller_id: str, consent_json: bytes, jws: str, signer_key: SignerKey,
                           max_skew_ms: int) -> consent_pb2.ConsentRecord:
        """Commit a FHIR Consent the caller signed as a JWS (docs/fhir.md, "Consent"); the consent as now stored.

        An active Consent is granted; ``{"resourceType": "Consent", "id": <consent id>, "status": "inactive"}``
        revokes that consent (the revocation goes on the ledger with the JWS, so it may hold nothing else).

        The checks the validators repeat (:mod:`carechain.ledger.contract`), made here first for a clear answer:
        UNAUTHENTICATED for a signature that is missing, malformed, not under the signer's registered key, for
        another network, over other bytes or not signed just now; PERMISSION_DENIED when the signer is not the
        caller or may not act for the JWS's patient (``sub``); INVALID_ARGUMENT naming ``Consent.*`` for a
        Consent CareChain cannot enforce. The policy is sealed and attested bound to the body hash, and the
        GrantConsent, signed by this service, carries the JWS: only the patient's signature makes it valid.
        """
        if not consent_json:
            raise InvalidArgument("consent_json", "required (the FHIR Consent)")
        claims = self._verified_consent_jws(caller_id, consent_json, jws, signer_key, max_skew_ms)
        patient_id = claims.sub
        self._ledger.sync()
        patient = self._state.principal(patient_id)
        acts = patient is not None and patient.kind == Kind.PRINCIPAL_KIND_PATIENT and patient.active and (
            claims.signer_id == patient_id
            or self._state.active_delegate(patient_id, claims.signer_id, self._ledger.now_ms()) is not None)
        if not acts:  # an unknown patient and another's look the same
            raise PermissionDenied("the consent signer may grant consent only for themselves or, as an active "
                                   "delegate, for their patient")
        content = parse_json(consent_json)
        if isinstance(content, dict) and content.get("status") == "inactive":
            return self._revoke_signed(claims, consent_json, jws)
        imported = consent_from_fhir(consent_json)
        if imported.status != "active":
            raise InvalidArgument("Consent.status", "must be active to be granted")
        if imported.patient_id and imported.patient_id != patient_id:
            raise InvalidArgument("Consent.patient", "names another patient than the signature's (sub)")
        consent_id = imported.consent_id or str(uuid.uuid4())
        consent_rules.validate_grant_policy(imported.policy)
        if self._state.consent(consent_id) is not None:
            raise AlreadyExists(f"consent {consent_id} already exists")
        sealed = self._sealer.seal_policy(consent_id, patient_id, imported.policy)
        grant = ledger_pb2.GrantConsent(
            consent_id=consent_id, patient_id=patient_id, sealed_policy=sealed, patient_jws=jws.encode("ascii"),
            policy_attestation=consent_rules.attest_policy(self._attester, self._ledger.chain_id, consent_id,
                                                           patient_id, sealed, claims.consent_sha256))
        response = self._ledger.commit(self._ledger.submitter.transaction(grant_consent=grant))
        self._ledger.audit_consent_changes()
        return self._state.consent(consent_id) or consent_pb2.ConsentRecord(
            consent_id=consent_id, patient_id=patient_id, policy=imported.policy,
            status=consent_pb2.CONSENT_STATUS_ACTIVE, granted_log_index=response.log_index,
            granted_by=claims.signer_id)

    def _revoke_signed(self, claims: ConsentClaims, revocation_json: bytes, jws: str) -> consent_pb2.ConsentRecord:
        """Commit svc-consent's RevokeConsent carrying the patient's JWS over revocation_json (synced, checked)."""
        consent_id = consent_rules.revoked_consent_id(revocation_json)
        existing = self._state.consent(consent_id)
        if existing is None or existing.patient_id != claims.sub:
            raise NotFound(f"consent {consent_id} does not exist or is not the patient's")
        if existing.status == consent_pb2.CONSENT_STATUS_REVOKED:
            raise FailedPrecondition(f"consent {consent_id} is already revoked")
        revoke = ledger_pb2.RevokeConsent(consent_id=consent_id, patient_id=claims.sub,
                                          patient_jws=jws.encode("ascii"), revocation_json=revocation_json)
        response = self._ledger.commit(self._ledger.submitter.transaction(revoke_consent=revoke))
        self._ledger.audit_consent_changes()
        record = self._state.consent(consent_id)
        if record is None or record.status != consent_pb2.CONSENT_STATUS_REVOKED:
            record = existing
            record.status = consent_pb2.CONSENT_STATUS_REVOKED
            record.revoked_log_index = response.log_index
        return record

    def _verified_consent_jws(self, caller_id: str, consent_json: bytes, jws: str, signer_key: SignerKey,
                              max_skew_ms: int) -> ConsentClaims:
        """The claims of the caller's JWS over consent_json, verified now (see :meth:`grant_signed_fhir`)."""
        if not jws:
            raise Unauthenticated("consent_jws: required (the X-Consent-Signature header)")
        try:
            signer_id = unverified_signer(jws)
        except InvalidConsentJws as exc:
            raise Unauthenticated(f"consent_jws: {exc}") from None
        if signer_id != caller_id:
            raise PermissionDenied("consent_jws: signed by another principal than the caller (kid)")
        key = signer_key(signer_id)
        if not key:
            raise Unauthenticated("consent_jws: the signer has no registered key")
        try:
            claims = verify_consent_jws(jws, key)
        except InvalidConsentJws as exc:
            raise Unauthenticated(f"consent_jws: {exc}") from None
        if claims.chain_id != self._ledger.chain_id:
            raise Unauthenticated("consent_jws: chain_id is not this network's")
        if not same_digest(claims.consent_sha256, consent_json):
            raise Unauthenticated("consent_jws: consent_sha256 is not the SHA-256 of the Consent sent (sign the "
                                  "exact bytes)")
        if abs(claims.iat * 1000 - self._ledger.now_ms()) > max_skew_ms:
            raise Unauthenticated(f"consent_jws: iat is more than {max_skew_ms // 1000} s from now (sign it again)")
        return claims

    def revoke(self, caller: Caller, transaction: ledger_pb2.Transaction | None) -> consent_pb2.ConsentRecord:
        """Commit a signed RevokeConsent; the consent, now revoked (audited before this returns)."""
        revoke, _ = self.signed_for_patient(caller, transaction, "revoke_consent")
        assert transaction is not None
        consent_rules.validate_revoke(revoke, _REVOKE)
        self._ledger.sync()
        existing = self._state.consent(revoke.consent_id)
        if existing is None:
            raise NotFound(f"consent {revoke.consent_id} does not exist")
        if existing.patient_id != revoke.patient_id:
            raise PermissionDenied("the consent belongs to another patient")
        if existing.status == consent_pb2.CONSENT_STATUS_REVOKED:
            raise FailedPrecondition(f"consent {revoke.consent_id} is already revoked")
        response = self._ledger.commit(transaction)
        self._ledger.audit_consent_changes()
        record = self._state.consent(revoke.consent_id)
        if record is None or record.status != consent_pb2.CONSENT_STATUS_REVOKED:
            record = existing
            record.status = consent_pb2.CONSENT_STATUS_REVOKED
            record.revoked_log_index = response.log_index
        return record

    def consents_of(self, caller: Caller, patient_id: str) -> list[consent_pb2.ConsentRecord]:
        """The consents of a patient the caller may read (empty patient_id: the calling patient)."""
        return self._state.consents_of(self.readable_patient(caller, patient_id, "list its own consents"))

    # --- delegates -----------------------------------------------------------------

    def register_delegate(self, caller: Caller, transaction: ledger_pb2.Transaction | None) -> consent_pb2.Delegation:
        """Commit a patient-signed RegisterDelegate; the delegation (audited)."""
        delegate, _ = self.signed_for_patient(caller, transaction, "register_delegate", allow_delegate=False)
        assert transaction is not None
        if not delegate.delegate_id:
            raise InvalidArgument(f"{_REGISTER_DELEGATE}.delegate_id", "required")
        if delegate.delegate_id == delegate.patient_id:
            raise InvalidArgument(f"{_REGISTER_DELEGATE}.delegate_id", "a patient cannot be their own delegate")
        if delegate.relationship not in (
            policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN, policy_pb2.DELEGATE_RELATIONSHIP_PROXY
        ):
            raise InvalidArgument(f"{_REGISTER_DELEGATE}.relationship", "must be GUARDIAN or PROXY")
        _validate_period(delegate.period, f"{_REGISTER_DELEGATE}.period")
        self._ledger.sync()
        principal = self._state.principal(delegate.delegate_id)
        if principal is None or principal.kind not in (Kind.PRINCIPAL_KIND_PATIENT, Kind.PRINCIPAL_KIND_PRACTITIONER):
            raise InvalidArgument(f"{_REGISTER_DELEGATE}.delegate_id", "not a registered patient or practitioner")
        if self._is_active_delegate(delegate.patient_id, delegate.delegate_id):
            raise AlreadyExists(f"{delegate.delegate_id} is already a delegate (revoke first)")
        relationship = policy_pb2.DelegateRelationship.Name(delegate.relationship).removeprefix(
            "DELEGATE_RELATIONSHIP_")
        return self._commit_delegation(caller, transaction, audit_pb2.AUDIT_ACTION_GRANT_CONSENT,
                                       delegate.patient_id, delegate.delegate_id, f"registered as {relationship}")

    def revoke_delegate(self, caller: Caller, transaction: ledger_pb2.Transaction | None) -> consent_pb2.Delegation:
        """Commit a patient-signed RevokeDelegate; the delegation, now revoked (audited)."""
        revoke, _ = self.signed_for_patient(caller, transaction, "revoke_delegate", allow_delegate=False)
        assert transaction is not None
        if not revoke.delegate_id:
            raise InvalidArgument("transaction.body.revoke_delegate.delegate_id", "required")
        self._ledger.sync()
        if not self._is_active_delegate(revoke.patient_id, revoke.delegate_id):
            raise NotFound(f"{revoke.delegate_id} is not an active delegate")
        return self._commit_delegation(caller, transaction, audit_pb2.AUDIT_ACTION_REVOKE_CONSENT,
                                       revoke.patient_id, revoke.delegate_id, "revoked")

    def delegations_of(self, caller: Caller, patient_id: str) -> list[consent_pb2.Delegation]:
        """The delegations of a patient the caller may read (empty patient_id: the calling patient)."""
        return self._state.delegations_of(self.readable_patient(caller, patient_id, "list its own delegates"))

    def _commit_delegation(self, caller: Caller, transaction: ledger_pb2.Transaction, action: int,
                           patient_id: str, delegate_id: str, what: str) -> consent_pb2.Delegation:
        """Commit a delegation change, audit it (fail closed) and return the delegation as now on the ledger."""
        response = self._ledger.commit(transaction)
        self._ledger.report(action, actor_id=caller.principal_id, organization_id=caller.organization_id,
                            patient_id=patient_id, reason=f"delegate {delegate_id} {what} at log index "
                            f"{response.log_index}")
        return self._delegation(patient_id, delegate_id)

    def _is_active_delegate(self, patient_id: str, delegate_id: str) -> bool:
        return any(d.delegate_id == delegate_id and d.status == consent_pb2.DELEGATION_STATUS_ACTIVE
                   for d in self._state.delegations_of(patient_id))

    def _delegation(self, patient_id: str, delegate_id: str) -> consent_pb2.Delegation:
        found = [d for d in self._state.delegations_of(patient_id) if d.delegate_id == delegate_id]
        if not found:
            raise FailedPrecondition("the ledger accepted the transaction but the delegation is not visible yet")
        return found[-1]


def _validate_period(period: common_pb2.Period, field: str) -> None:
    if period.start_ms < 0 or period.end_ms < 0:
        raise InvalidArgument(field, "must not be negative")
    if period.start_ms and period.end_ms and period.end_ms <= period.start_ms:
        raise InvalidArgument(f"{field}.end_ms", "must be after start_ms")
