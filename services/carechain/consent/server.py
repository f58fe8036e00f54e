"""The consent service: patients' consent contracts on the ledger, and access decisions.

Consent state is derived only from ledger transactions (see
:mod:`carechain.consent.state`) and synchronised before every answer, so a
revocation committed before a decision is always seen. Grants and revocations
are transactions signed by the patient, validated here (fast, field-named
errors), committed by the ledger and audited. Decisions follow
:mod:`carechain.consent.policy`; a permit carries a short-lived decision token
signed by this service for ``IdentityService.ReleaseDataKey``, which asks
:meth:`ConsentServicer.CheckDecision` just before unwrapping the key, so a
revocation committed after the decision still stops the release.

Ledger privacy: a grant's policy is on the ledger only sealed under the
ledger metadata key. :meth:`ConsentServicer.SealPolicy` validates and seals a
policy for one consent id; the patient (or delegate) puts the sealed bytes
into ``GrantConsent.sealed_policy`` and signs the transaction over them, so
the signature covers exactly what the ledger stores. Ledger data is read
through :class:`carechain.ledger.reader.VerifiedLedgerReader`.

Delegates (guardians, proxies) registered by the patient on the ledger may
sign grants and revocations for the patient. Break-glass windows are recorded
on the ledger (``BreakGlassAccess``, signed by this service) at their first
use, so every replica and every restart sees the same window: it cannot be
extended by restarting the service or asking another replica.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.consent import rules as consent_rules
from carechain.consent.fhir_consent import consent_json
from carechain.consent.policy import (
    AccessRequest,
    BreakGlassRules,
    BreakGlassWindow,
    PolicyDecision,
    decide,
    evaluate,
)
from carechain.consent.state import ConsentChange, ConsentState, ListTransactions, RecordInfo
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc, policy_pb2
from carechain.core.crypto import Signer
from carechain.core.errors import (
    AlreadyExists,
    CareChainError,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from carechain.core.layout import DECISION_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import DECISION_TOKEN_TYPE, issue_token, verify_token
from carechain.ledger.reader import VerifiedLedgerReader, configured_validators
from carechain.ledger.sealing import LedgerSealer, metadata_sealer
from carechain.ledger.transactions import decode_body, new_body, sign_transaction
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime import metrics
from carechain.runtime.access import ANY, AccessTable, Allow, Scope
from carechain.runtime.access import caller as caller_of
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import ConsentSettings
from carechain.runtime.peers import service_peers
from carechain.runtime.principal_status import PrincipalStatus
from carechain.runtime.server import Register, register_servicer, run_service
from carechain.runtime.vault import service_signer

log = logging.getLogger("carechain.consent")

Kind = common_pb2.PrincipalKind
# Namespace of the audit event ids of consent changes (uuid5 of chain id and log index).
_CONSENT_CHANGE_EVENTS = uuid.UUID("5f0c3e8a-6a43-4f0e-9a35-0c6f2b9d7e11")
# How often the consent service follows the ledger on its own, to audit directly submitted changes.
FOLLOW_SECONDS = 1.0
# How long a grant or revocation waits for its block to be certified in the verified state.
COMMIT_VISIBLE_SECONDS = 10.0
# submit(ledger_stub, tx) -> SubmitTransactionResponse; raises when the validator rejects tx.
Submit = Callable[[Any, ledger_pb2.Transaction], ledger_pb2.SubmitTransactionResponse]


def ledger_submit(ledger_stub: Any, tx: ledger_pb2.Transaction) -> ledger_pb2.SubmitTransactionResponse:
    """Submit through the ledger client (imported late: the ledger package may load after this one)."""
    from carechain.ledger.submission import submit

    return submit(ledger_stub, tx)


def token_id(token: str) -> str:
    """The jti claim of a token this service just issued (no verification needed: we signed it)."""
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def _signed(payload: str, allow_delegate: bool) -> Scope:
    """The transaction is signed by the caller, for themselves or (if allowed) as the patient's active delegate."""

    def check(caller: Caller, request: Any, servicer: ConsentServicer) -> None:
        servicer._signed_for_patient(caller, request.transaction, request.HasField("transaction"), payload,
                                    allow_delegate)

    who = "signed by the caller for themselves" + (" or as an active delegate" if allow_delegate else "")
    return Scope("signed", who, check)


def _readable(what: str) -> Scope:
    def check(caller: Caller, request: Any, servicer: ConsentServicer) -> None:
        servicer._readable_patient(caller, request.patient_id, what)

    return Scope("own or delegated", "own, or as an active delegate", check)


def _readable_consent(caller: Caller, request: consent_pb2.ExportConsentRequest, servicer: ConsentServicer) -> None:
    servicer.readable_consent(caller, request.consent_id)


_GRANT = _signed("grant_consent", allow_delegate=True)
_REVOKE = _signed("revoke_consent", allow_delegate=True)
_READ_CONSENTS = _readable("list its own consents")
_READ_DELEGATES = _readable("list its own delegates")
_SEAL = _readable("seal its own policies")
_EXPORT = Scope("own or delegated", "own, or as an active delegate", _readable_consent)

SERVICE = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"]
# Who may call what (docs/security.md).
ACCESS = AccessTable(SERVICE, {
    "GrantConsent": Allow.of(patient=_GRANT, practitioner=_GRANT),
    "RevokeConsent": Allow.of(patient=_REVOKE, practitioner=_REVOKE),
    "ListConsents": Allow.of(patient=_READ_CONSENTS, practitioner=_READ_CONSENTS, service=ANY),
    "Decide": Allow.of(service=ANY, services=["records"], note="the reason never names a category"),
    "CheckDecision": Allow.of(service=ANY, services=["identity"], note="at key release"),
    "ExportConsent": Allow.of(patient=_EXPORT, practitioner=_EXPORT, service=ANY,
                              note="not yours and unknown are the same NOT_FOUND"),
    "RegisterDelegate": Allow.of(patient=_signed("register_delegate", allow_delegate=False)),
    "RevokeDelegate": Allow.of(patient=_signed("revoke_delegate", allow_delegate=False)),
    "ListDelegates": Allow.of(patient=_READ_DELEGATES, practitioner=_READ_DELEGATES, service=ANY),
    "SealPolicy": Allow.of(patient=_SEAL, practitioner=_SEAL, note="before the patient signs the grant"),
})


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    """ConsentService over ledger-derived state."""

    def __init__(
        self,
        authenticator: Authenticator,
        state: ConsentState,
        ledger: Any,
        audit: AuditReporter,
        decision_signer: Signer,
        decision_token_ttl_seconds: float,
        submit: Submit = ledger_submit,
        clock: Callable[[], float] = time.time,
        break_glass: BreakGlassRules | None = None,
        chain_id: str = "carechain-local",
        sealer: LedgerSealer | None = None,
        read_transactions: ListTransactions | None = None,
    ) -> None:
        """sealer defaults to the state's; read_transactions (how sync reads the ledger) to
        ``ledger.ListTransactions``. build() passes a VerifiedLedgerReader: production never
        folds unverified ledger data."""
        self._auth = authenticator
        self._sealer = sealer or state.sealer
        self._read_transactions = read_transactions or ledger.ListTransactions
        self._break_glass = break_glass
        self._chain_id = chain_id
        self._state = state
        self._ledger = ledger
        self._audit = audit
        self._signer = decision_signer
        self._ttl = decision_token_ttl_seconds
        self._submit = submit
        self._clock = clock
        self._audit_lock = threading.Lock()  # one auditor of consent changes at a time

    def sync(self) -> None:
        """Catch up with the ledger (UNAVAILABLE if it is down: never decide on stale state).

        Consent changes newly seen are audited (best effort here: see :meth:`audit_consent_changes`).
        """
        self._state.sync(self._read_transactions)
        try:
            self.audit_consent_changes()
        except Exception:  # noqa: BLE001 - the changes stay queued; the follower or the next sync retries
            log.warning("consent changes not audited yet; will retry")

    def audit_consent_changes(self) -> int:
        """Audit every committed grant and revocation not audited yet; returns how many were reported.

        Derived from the committed ledger, so a grant submitted straight to the
        ledger is audited too. The event id is derived from the chain and log
        index, so replicas, retries and restarts (which replay the log) store
        each event once. Errors propagate with the unreported changes kept.
        """
        with self._audit_lock:
            changes = self._state.take_changes()
            for done, change in enumerate(changes):
                try:
                    self._report_change(change)
                except BaseException:
                    self._state.put_back_changes(changes[done:])
                    raise
            return len(changes)

    # --- grants and revocations ----------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _signed_for_patient(
        self,
        caller: Caller,
        transaction: ledger_pb2.Transaction,
        has_transaction: bool,
        payload: str,
        allow_delegate: bool = True,
    ) -> tuple[Any, Any, str]:
        """Check the caller signed the transaction and may act for its patient; decode it.

        Returns (caller, payload message, how the caller acts: "patient" or
        "delegate"). The caller must have signed the transaction and be the
        patient, or (when allowed) an active delegate of the patient.
        """
        if not has_transaction:
            raise InvalidArgument("transaction", "required")
        if transaction.signer_id != caller.principal_id:
            raise PermissionDenied("the transaction must be signed by the calling patient or delegate")
        body = decode_body(transaction)
        if body.WhichOneof("payload") != payload:
            raise InvalidArgument("transaction.body", f"payload must be {payload}")
        message = getattr(body, payload)
        if message.patient_id == caller.principal_id and caller.kind == Kind.PRINCIPAL_KIND_PATIENT:
            return caller, message, "patient"
        if allow_delegate and message.patient_id:
            self.sync()
            if self._state.active_delegate(message.patient_id, caller.principal_id, self._now_ms()) is not None:
                return caller, message, "delegate"
            raise PermissionDenied(
                "a patient may only manage its own consents; a delegate only those of its patients while active"
            )
        raise PermissionDenied("a patient may only manage its own consents and delegates")

    def _commit(self, transaction: ledger_pb2.Transaction) -> ledger_pb2.SubmitTransactionResponse:
        response = self._submit(self._ledger, transaction)
        if not response.valid:  # the client raises for invalid ones; never trust that blindly
            raise FailedPrecondition(f"ledger rejected the transaction: {response.reason}")
        # State holds only verified, quorum-certified blocks: wait until ours is in (read your writes,
        # so a revocation this call confirms is seen by the next decision).
        deadline = time.monotonic() + COMMIT_VISIBLE_SECONDS
        self.sync()
        while self._state.cursor <= response.log_index and time.monotonic() < deadline:
            time.sleep(0.02)
            self.sync()
        if self._state.cursor <= response.log_index:
            log.warning("committed transaction not yet certified on the validator read",
                        extra={"log_index": response.log_index})
        return response

    def SealPolicy(
        self, request: consent_pb2.SealPolicyRequest, context: grpc.ServicerContext
    ) -> consent_pb2.SealPolicyResponse:
        """Check a policy against the consent rules, seal it and attest it (the only way to a valid grant)."""
        # Who may seal for this patient (the patient, or an active delegate) is the access table's _SEAL scope.
        if not request.patient_id:
            raise InvalidArgument("patient_id", "required")
        consent_rules.require_uuid(request.consent_id, "consent_id")
        if not request.HasField("policy"):
            raise InvalidArgument("policy", "required")
        consent_rules.validate_grant_policy(request.policy)
        if self._state.consent(request.consent_id) is not None:
            raise AlreadyExists(f"consent {request.consent_id} already exists")
        sealed = self._sealer.seal_policy(request.consent_id, request.patient_id, request.policy)
        # The validators cannot open the policy: this signature tells them it passed the rules above.
        attestation = consent_rules.attest_policy(
            self._signer, self._chain_id, request.consent_id, request.patient_id, sealed
        )
        return consent_pb2.SealPolicyResponse(sealed_policy=sealed, policy_attestation=attestation)

    def _open_grant(self, grant: ledger_pb2.GrantConsent) -> policy_pb2.ConsentPolicy:
        """The policy sealed in a submitted grant (already checked by consent_rules.validate_grant), validated."""
        field = "transaction.body.grant_consent"
        try:
            policy = self._sealer.open_policy(grant)
        except IntegrityError as exc:
            raise InvalidArgument(f"{field}.sealed_policy",
                                  "does not open: seal the policy with SealPolicy for this consent id and patient"
                                  ) from exc
        if not consent_rules.policy_attested(grant, self._chain_id, self._signer.public_key_bytes()):
            raise InvalidArgument(f"{field}.policy_attestation",
                                  "not this service's attestation of sealed_policy (use SealPolicy's answer)")
        consent_rules.validate_grant_policy(policy)  # named "policy", as in SealPolicyRequest
        return policy

    def GrantConsent(
        self, request: consent_pb2.GrantConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentRecord:
        caller, grant, _ = self._signed_for_patient(
            caller_of(context), request.transaction, request.HasField("transaction"), "grant_consent"
        )
        consent_rules.validate_grant(grant, "transaction.body.grant_consent")
        policy = self._open_grant(grant)
        self.sync()
        if self._state.consent(grant.consent_id) is not None:
            raise AlreadyExists(f"consent {grant.consent_id} already exists")
        response = self._commit(request.transaction)
        self.audit_consent_changes()  # this grant's audit event is durable before the caller hears of it
        record = self._state.consent(grant.consent_id) or consent_pb2.ConsentRecord(
            consent_id=grant.consent_id,
            patient_id=grant.patient_id,
            policy=policy,
            status=consent_pb2.CONSENT_STATUS_ACTIVE,
            granted_log_index=response.log_index,
            granted_by=caller.principal_id,
        )
        return record

    def RevokeConsent(
        self, request: consent_pb2.RevokeConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentRecord:
        _, revoke, _ = self._signed_for_patient(
            caller_of(context), request.transaction, request.HasField("transaction"), "revoke_consent"
        )
        consent_rules.validate_revoke(revoke, "transaction.body.revoke_consent")
        self.sync()
        existing = self._state.consent(revoke.consent_id)
        if existing is None:
            raise NotFound(f"consent {revoke.consent_id} does not exist")
        if existing.patient_id != revoke.patient_id:
            raise PermissionDenied("the consent belongs to another patient")
        if existing.status == consent_pb2.CONSENT_STATUS_REVOKED:
            raise FailedPrecondition(f"consent {revoke.consent_id} is already revoked")
        response = self._commit(request.transaction)
        self.audit_consent_changes()
        record = self._state.consent(revoke.consent_id)
        if record is None or record.status != consent_pb2.CONSENT_STATUS_REVOKED:
            record = existing
            record.status = consent_pb2.CONSENT_STATUS_REVOKED
            record.revoked_log_index = response.log_index
        return record

    def _report_change(self, change: ConsentChange) -> None:
        """Audit (and log) one committed grant or revocation, idempotently."""
        verb = "granted" if change.granted else "revoked"
        signer = self._state.principal(change.signer_id)
        by = " by a delegate of the patient" if change.signer_id != change.patient_id else ""
        self._audit.report(
            audit_pb2.AUDIT_ACTION_GRANT_CONSENT if change.granted else audit_pb2.AUDIT_ACTION_REVOKE_CONSENT,
            audit_pb2.AUDIT_OUTCOME_SUCCESS,
            actor_id=change.signer_id,
            organization_id=signer.organization_id if signer is not None else "",
            patient_id=change.patient_id,
            reason=f"consent {change.consent_id} {verb} at log index {change.log_index}{by}",
            consent_id=change.consent_id,
            event_id=str(uuid.uuid5(_CONSENT_CHANGE_EVENTS, f"{self._chain_id}/{change.log_index}")),
        )
        log.info(f"consent {verb}", extra={"consent_id": change.consent_id, "log_index": change.log_index})

    def ListConsents(
        self, request: consent_pb2.ListConsentsRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ListConsentsResponse:
        patient_id = self._readable_patient(caller_of(context), request.patient_id, "list its own consents")
        return consent_pb2.ListConsentsResponse(consents=self._state.consents_of(patient_id))

    def _readable_patient(self, caller: Caller, patient_id: str, what: str) -> str:
        """The patient whose consents the caller may read (the patient, an active delegate or a service); syncs."""
        if caller.kind == Kind.PRINCIPAL_KIND_SERVICE:
            if not patient_id:
                raise InvalidArgument("patient_id", "required")
            self.sync()
            return patient_id
        if caller.kind == Kind.PRINCIPAL_KIND_PATIENT:
            patient_id = patient_id or caller.principal_id
        elif not patient_id:
            raise InvalidArgument("patient_id", "required")
        self.sync()
        if patient_id != caller.principal_id and (
            self._state.active_delegate(patient_id, caller.principal_id, self._now_ms()) is None
        ):
            raise PermissionDenied(f"a patient (or its active delegate) may only {what}")
        return patient_id

    def readable_consent(self, caller: Caller, consent_id: str) -> consent_pb2.ConsentRecord:
        """A consent the caller may read; NotFound if unknown or not theirs (ids cannot be probed); syncs."""
        if not consent_id:
            raise InvalidArgument("consent_id", "required")
        self.sync()
        consent = self._state.consent(consent_id)
        try:
            if consent is not None:
                self._readable_patient(caller, consent.patient_id, "export its own consents")
        except (PermissionDenied, InvalidArgument):
            consent = None
        if consent is None:
            raise NotFound(f"consent {consent_id} does not exist or is not yours")
        return consent

    def ExportConsent(
        self, request: consent_pb2.ExportConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ExportConsentResponse:
        consent = self.readable_consent(caller_of(context), request.consent_id)
        return consent_pb2.ExportConsentResponse(consent_json=consent_json(consent))

    # --- delegates -------------------------------------------------------------

    def RegisterDelegate(
        self, request: consent_pb2.RegisterDelegateRequest, context: grpc.ServicerContext
    ) -> consent_pb2.Delegation:
        caller, delegate, _ = self._signed_for_patient(
            caller_of(context), request.transaction, request.HasField("transaction"), "register_delegate",
            allow_delegate=False,
        )
        field = "transaction.body.register_delegate"
        if not delegate.delegate_id:
            raise InvalidArgument(f"{field}.delegate_id", "required")
        if delegate.delegate_id == delegate.patient_id:
            raise InvalidArgument(f"{field}.delegate_id", "a patient cannot be their own delegate")
        if delegate.relationship not in (
            policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN, policy_pb2.DELEGATE_RELATIONSHIP_PROXY
        ):
            raise InvalidArgument(f"{field}.relationship", "must be GUARDIAN or PROXY")
        _validate_period(delegate.period, f"{field}.period")
        self.sync()
        principal = self._state.principal(delegate.delegate_id)
        if principal is None or principal.kind not in (Kind.PRINCIPAL_KIND_PATIENT, Kind.PRINCIPAL_KIND_PRACTITIONER):
            raise InvalidArgument(f"{field}.delegate_id", "not a registered patient or practitioner")
        if any(d.delegate_id == delegate.delegate_id and d.status == consent_pb2.DELEGATION_STATUS_ACTIVE
               for d in self._state.delegations_of(delegate.patient_id)):
            raise AlreadyExists(f"{delegate.delegate_id} is already a delegate (revoke first)")
        response = self._commit(request.transaction)
        self._audit.report(
            audit_pb2.AUDIT_ACTION_GRANT_CONSENT,
            audit_pb2.AUDIT_OUTCOME_SUCCESS,
            actor_id=caller.principal_id,
            organization_id=caller.organization_id,
            patient_id=delegate.patient_id,
            reason=f"delegate {delegate.delegate_id} registered as "
            f"{policy_pb2.DelegateRelationship.Name(delegate.relationship).removeprefix('DELEGATE_RELATIONSHIP_')}"
            f" at log index {response.log_index}",
        )
        return self._delegation(delegate.patient_id, delegate.delegate_id)

    def RevokeDelegate(
        self, request: consent_pb2.RevokeDelegateRequest, context: grpc.ServicerContext
    ) -> consent_pb2.Delegation:
        caller, revoke, _ = self._signed_for_patient(
            caller_of(context), request.transaction, request.HasField("transaction"), "revoke_delegate",
            allow_delegate=False,
        )
        if not revoke.delegate_id:
            raise InvalidArgument("transaction.body.revoke_delegate.delegate_id", "required")
        self.sync()
        if not any(d.delegate_id == revoke.delegate_id and d.status == consent_pb2.DELEGATION_STATUS_ACTIVE
                   for d in self._state.delegations_of(revoke.patient_id)):
            raise NotFound(f"{revoke.delegate_id} is not an active delegate")
        response = self._commit(request.transaction)
        self._audit.report(
            audit_pb2.AUDIT_ACTION_REVOKE_CONSENT,
            audit_pb2.AUDIT_OUTCOME_SUCCESS,
            actor_id=caller.principal_id,
            organization_id=caller.organization_id,
            patient_id=revoke.patient_id,
            reason=f"delegate {revoke.delegate_id} revoked at log index {response.log_index}",
        )
        return self._delegation(revoke.patient_id, revoke.delegate_id)

    def ListDelegates(
        self, request: consent_pb2.ListDelegatesRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ListDelegatesResponse:
        patient_id = self._readable_patient(caller_of(context), request.patient_id, "list its own delegates")
        return consent_pb2.ListDelegatesResponse(delegations=self._state.delegations_of(patient_id))

    def _delegation(self, patient_id: str, delegate_id: str) -> consent_pb2.Delegation:
        found = [d for d in self._state.delegations_of(patient_id) if d.delegate_id == delegate_id]
        if not found:
            raise FailedPrecondition("the ledger accepted the transaction but the delegation is not visible yet")
        return found[-1]

    # --- decisions -------------------------------------------------------------

    def Decide(self, request: consent_pb2.DecideRequest, context: grpc.ServicerContext) -> consent_pb2.Decision:
        if not request.actor_id:
            raise InvalidArgument("actor_id", "required")
        if not request.record_id:
            raise InvalidArgument("record_id", "required")
        if (
            request.purpose == common_pb2.PURPOSE_OF_USE_UNSPECIFIED
            or request.purpose not in common_pb2.PurposeOfUse.values()
        ):
            raise InvalidArgument("purpose", "must be a known PurposeOfUse")
        if request.action not in common_pb2.ConsentAction.values():
            raise InvalidArgument("action", "must be a known ConsentAction")
        consent_rules.validate_break_glass_request(request.break_glass, request.break_glass_reason)
        action = request.action or common_pb2.CONSENT_ACTION_ACCESS

        self.sync()
        record = self._state.record(request.record_id)
        if record is None:
            raise NotFound(f"record {request.record_id} is not registered")

        def deny(reason: str, consent_id: str = "", path: str = "") -> consent_pb2.Decision:
            metrics.CONSENT_DECISIONS.add(1, {"effect": "deny"})
            return consent_pb2.Decision(
                effect=consent_pb2.DECISION_EFFECT_DENY,
                reason=reason,
                consent_id=consent_id,
                provision_path=path,
                patient_id=record.patient_id,
            )

        if record.erased:
            return deny("denied: record erased")
        actor = self._state.principal(request.actor_id)
        if actor is None or not actor.is_practitioner:
            return deny(f"denied: actor {request.actor_id} is not a registered practitioner")

        access = self._access_request(actor, record, request.purpose, action, request.break_glass)
        window = None
        if self._break_glass is not None and request.break_glass:
            window = self._state.break_glass_window(actor.principal_id, record.patient_id, access.now_ms)
        decision = decide(self._state.consents_of(record.patient_id), access, self._break_glass, window)
        if not decision.permitted:
            return deny(decision.reason, decision.consent_id, decision.provision_path)
        if decision.break_glass and window is None:
            self._record_break_glass(actor.principal_id, record.patient_id, decision)

        claims: dict[str, object] = {
            "sub": actor.principal_id,
            "aud": audience("identity"),
            "rid": record.record_id,
            "psn": record.patient_id,
            "pou": common_pb2.PurposeOfUse.Name(request.purpose),
            "act": common_pb2.ConsentAction.Name(action),
            "cid": decision.consent_id,
        }
        ttl = self._ttl
        if decision.break_glass:
            claims.update(bg=True, bgs=decision.break_glass_started_at_ms, bge=decision.break_glass_expires_at_ms)
            ttl = max(0.001, min(ttl, (decision.break_glass_expires_at_ms - access.now_ms) / 1000))
        token, expires_at_ms = issue_token(self._signer, DECISION_TOKEN_TYPE, claims, ttl)
        metrics.CONSENT_DECISIONS.add(1, {"effect": "permit"})
        if decision.break_glass:
            metrics.BREAK_GLASS_USES.add(1)
            log.warning("break-glass access permitted", extra={
                "actor_id": actor.principal_id, "record_id": record.record_id,
                "break_glass_expires_at_ms": decision.break_glass_expires_at_ms})
        return consent_pb2.Decision(
            effect=consent_pb2.DECISION_EFFECT_PERMIT,
            reason=decision.reason,
            consent_id=decision.consent_id,
            provision_path=decision.provision_path,
            decision_token=token,
            expires_at_ms=expires_at_ms,
            patient_id=record.patient_id,
            decision_id=token_id(token),
            break_glass=decision.break_glass,
            break_glass_expires_at_ms=decision.break_glass_expires_at_ms,
        )

    def _access_request(
        self, actor: Any, record: RecordInfo, purpose: int, action: int, break_glass: bool = False
    ) -> AccessRequest:
        patient = self._state.principal(record.patient_id)
        return AccessRequest(
            actor_id=actor.principal_id,
            actor_organization_id=actor.organization_id,
            actor_specialty=actor.specialty,
            purpose=purpose,
            action=action,
            categories=record.categories,
            record_id=record.record_id,
            patient_id=record.patient_id,
            now_ms=self._now_ms(),
            data_date_ms=record.data_date_ms,
            resource_type=record.resource_type,
            patient_organization_id=patient.organization_id if patient is not None else "",
            break_glass=break_glass,
            record_author_id=record.author_id,
            record_organization_id=record.organization_id,
            codes=record.codes,
        )

    def _record_break_glass(self, actor_id: str, patient_id: str, decision: PolicyDecision) -> None:
        """Put the new window on the ledger before any token for it exists (fail closed if the ledger is down)."""
        body = new_body(
            self._chain_id,
            self._signer.key_id,
            break_glass_access=ledger_pb2.BreakGlassAccess(
                actor_id=actor_id,
                patient_id=patient_id,
                started_at_ms=decision.break_glass_started_at_ms,
                expires_at_ms=decision.break_glass_expires_at_ms,
            ),
        )
        self._commit(sign_transaction(body, self._signer))

    def CheckDecision(
        self, request: consent_pb2.CheckDecisionRequest, context: grpc.ServicerContext
    ) -> consent_pb2.CheckDecisionResponse:
        if not request.decision_token:
            raise InvalidArgument("decision_token", "required")
        try:
            claims = verify_token(
                request.decision_token,
                {DECISION_ISSUER_ID: self._signer.public_key_bytes()},
                DECISION_TOKEN_TYPE,
                audience("identity"),
            )
        except Unauthenticated as exc:
            return _no(f"decision token rejected: {exc.message}")
        self.sync()
        held = self._recheck(claims)
        if not held.permitted:
            log.info("decision no longer holds", extra={"decision_id": claims.get("jti"), "reason": held.reason})
        return consent_pb2.CheckDecisionResponse(permitted=held.permitted, reason=held.reason)

    def _recheck(self, claims: dict[str, Any]) -> PolicyDecision:
        """Re-decide a token's request on the current state; the token's own consent must still be active."""
        consent_id = str(claims.get("cid") or "")
        if consent_id:
            consent = self._state.consent(consent_id)
            if consent is None or consent.status != consent_pb2.CONSENT_STATUS_ACTIVE:
                at = f" at log index {consent.revoked_log_index}" if consent is not None else ""
                return PolicyDecision(consent_pb2.DECISION_EFFECT_DENY,
                                      f"consent revoked: consent {consent_id} was revoked{at}")
        record = self._state.record(str(claims.get("rid", "")))
        actor = self._state.principal(str(claims.get("sub", "")))
        if record is None or record.erased or record.patient_id != claims.get("psn"):
            return PolicyDecision(consent_pb2.DECISION_EFFECT_DENY, "denied: record erased or unknown")
        if actor is None or not actor.is_practitioner:
            return PolicyDecision(consent_pb2.DECISION_EFFECT_DENY, "denied: actor is no longer a practitioner")
        try:
            purpose = common_pb2.PurposeOfUse.Value(str(claims.get("pou")))
            action = common_pb2.ConsentAction.Value(str(claims.get("act")))
        except ValueError:
            return PolicyDecision(consent_pb2.DECISION_EFFECT_DENY, "denied: decision token claims are malformed")
        access = self._access_request(actor, record, purpose, action, break_glass=bool(claims.get("bg")))
        consents = self._state.consents_of(record.patient_id)
        if claims.get("bg"):
            window = BreakGlassWindow(int(claims.get("bgs", 0)), int(claims.get("bge", 0)))
            return decide(consents, access, self._break_glass or BreakGlassRules(frozenset(), 0), window)
        return evaluate(consents, access)


def _no(reason: str) -> consent_pb2.CheckDecisionResponse:
    return consent_pb2.CheckDecisionResponse(permitted=False, reason=reason)


def _validate_period(period: common_pb2.Period, field: str) -> None:
    if period.start_ms < 0 or period.end_ms < 0:
        raise InvalidArgument(field, "must not be negative")
    if period.start_ms and period.end_ms and period.end_ms <= period.start_ms:
        raise InvalidArgument(f"{field}.end_ms", "must be after start_ms")


def register_consent(servicer: ConsentServicer) -> Register:
    """A register function adding servicer to a server."""
    return register_servicer(consent_pb2_grpc.add_ConsentServiceServicer_to_server, servicer, ACCESS, servicer._auth)


def build(settings: ConsentSettings) -> tuple[Register, list[Callable[[], None]]]:
    """The consent service's register function and closers, from settings."""
    signer = service_signer(settings, "consent")
    trust = TrustBundle.load(settings.trust_dir)
    peers = service_peers(settings, signer)
    principal_status = PrincipalStatus.following(lambda: peers.ledger).start()
    reader = VerifiedLedgerReader(
        peers.ledger, settings.chain_id, trust,
        configured_validators(settings.ledger_validators, settings.ledger_quorum),
        timeout=settings.rpc_timeout_seconds, max_skew_ms=settings.tx_max_skew_ms,
    )
    servicer = ConsentServicer(
        Authenticator(trust, audience("consent"), principal_status),
        ConsentState(metadata_sealer(settings)),
        peers.ledger,
        AuditReporter(peers.audit, "consent"),
        signer,
        settings.decision_token_ttl_seconds,
        break_glass=BreakGlassRules(
            settings.break_glass_specialty_set, int(settings.break_glass_window_seconds * 1000)
        ),
        chain_id=settings.chain_id,
        read_transactions=reader.list_transactions,
    )
    # Rebuild state from the ledger now; if the ledger (or identity) is not up yet,
    # the first request catches up instead, since every RPC syncs first.
    try:
        servicer.sync()
    except (CareChainError, grpc.RpcError) as exc:
        log.warning("consent state not loaded at start; will load on first request", extra={"reason": str(exc)})
    stop_following = follow_ledger(servicer, FOLLOW_SECONDS)
    return register_consent(servicer), [stop_following, principal_status.close, peers.close]


def follow_ledger(servicer: ConsentServicer, every_seconds: float) -> Callable[[], None]:
    """Sync (and so audit consent changes, however submitted) every every_seconds; returns the stopper."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_seconds):
            try:
                servicer.sync()
            except Exception:  # noqa: BLE001 - ledger down: the next round retries
                log.debug("consent follower could not sync")

    thread = threading.Thread(target=run, name="consent-follower", daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(timeout=1)  # daemon thread: do not hold up shutdown for a sync in flight

    return close


def main() -> None:
    """Entry point of ``carechain serve consent``."""
    settings = ConsentSettings()
    register, closers = build(settings)
    run_service("consent", settings, register, closers)
