"""The consent service: patients' consent contracts on the ledger, and access decisions.

Consent state is derived only from ledger transactions (see
:mod:`carechain.consent.state`) and synchronised before every answer, so a
revocation committed before a decision is always seen. Grants and revocations
are transactions signed by the patient, validated here (fast, field-named
errors), committed by the ledger and audited. Decisions follow
:mod:`carechain.consent.policy`; a permit carries a short-lived decision token
signed by this service for ``IdentityService.ReleaseDataKey``.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.auth import Authenticator
from carechain.clients import service_peers
from carechain.common.v1 import common_pb2
from carechain.config import ConsentSettings
from carechain.consent.policy import AccessRequest, evaluate, validate_policy
from carechain.consent.state import ConsentState
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc
from carechain.crypto import Signer
from carechain.errors import (
    AlreadyExists,
    CareChainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from carechain.ledger.transactions import decode_body
from carechain.ledger.v1 import ledger_pb2
from carechain.network import TrustBundle, audience
from carechain.server import Register, run_service
from carechain.tokens import DECISION_TOKEN_TYPE, issue_token
from carechain.vault import service_signer

log = logging.getLogger("carechain.consent")

Kind = common_pb2.PrincipalKind
# submit(ledger_stub, tx) -> SubmitTransactionResponse; raises when the validator rejects tx.
Submit = Callable[[Any, ledger_pb2.Transaction], ledger_pb2.SubmitTransactionResponse]


def ledger_submit(ledger_stub: Any, tx: ledger_pb2.Transaction) -> ledger_pb2.SubmitTransactionResponse:
    """Submit through the ledger client (imported late: the ledger package may load after this one)."""
    from carechain.ledger.client import submit

    return submit(ledger_stub, tx)


def token_id(token: str) -> str:
    """The jti claim of a token this service just issued (no verification needed: we signed it)."""
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def _require_uuid(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(field, "required")
    try:
        uuid.UUID(value)
    except ValueError as exc:
        raise InvalidArgument(field, "must be a UUID") from exc


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
    ) -> None:
        self._auth = authenticator
        self._state = state
        self._ledger = ledger
        self._audit = audit
        self._signer = decision_signer
        self._ttl = decision_token_ttl_seconds
        self._submit = submit
        self._clock = clock

    def sync(self) -> None:
        """Catch up with the ledger (UNAVAILABLE if it is down: never decide on stale state)."""
        self._state.sync(self._ledger.ListTransactions)

    # --- grants and revocations ----------------------------------------------

    def _patient_transaction(
        self, transaction: ledger_pb2.Transaction, has_transaction: bool, payload: str, context: grpc.ServicerContext
    ) -> tuple[Any, Any]:
        """Authenticate the patient and decode its transaction; returns (caller, payload message)."""
        caller = self._auth.require(context, Kind.PRINCIPAL_KIND_PATIENT)
        if not has_transaction:
            raise InvalidArgument("transaction", "required")
        if transaction.signer_id != caller.principal_id:
            raise PermissionDenied("the transaction must be signed by the calling patient")
        body = decode_body(transaction)
        if body.WhichOneof("payload") != payload:
            raise InvalidArgument("transaction.body", f"payload must be {payload}")
        message = getattr(body, payload)
        if message.patient_id != caller.principal_id:
            raise PermissionDenied("a patient may only manage its own consents")
        _require_uuid(message.consent_id, f"transaction.body.{payload}.consent_id")
        return caller, message

    def _commit(self, transaction: ledger_pb2.Transaction) -> ledger_pb2.SubmitTransactionResponse:
        response = self._submit(self._ledger, transaction)
        if not response.valid:  # the client raises for invalid ones; never trust that blindly
            raise FailedPrecondition(f"ledger rejected the transaction: {response.reason}")
        self.sync()
        return response

    def GrantConsent(
        self, request: consent_pb2.GrantConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentRecord:
        caller, grant = self._patient_transaction(
            request.transaction, request.HasField("transaction"), "grant_consent", context
        )
        validate_policy(grant.policy)
        self.sync()
        if self._state.consent(grant.consent_id) is not None:
            raise AlreadyExists(f"consent {grant.consent_id} already exists")
        response = self._commit(request.transaction)
        record = self._state.consent(grant.consent_id) or consent_pb2.ConsentRecord(
            consent_id=grant.consent_id,
            patient_id=grant.patient_id,
            policy=grant.policy,
            status=consent_pb2.CONSENT_STATUS_ACTIVE,
            granted_log_index=response.log_index,
        )
        self._audit.report(
            audit_pb2.AUDIT_ACTION_GRANT_CONSENT,
            audit_pb2.AUDIT_OUTCOME_SUCCESS,
            actor_id=caller.principal_id,
            organization_id=caller.organization_id,
            patient_id=grant.patient_id,
            reason=f"consent {grant.consent_id} granted at log index {response.log_index}",
        )
        log.info("consent granted", extra={"consent_id": grant.consent_id, "log_index": response.log_index})
        return record

    def RevokeConsent(
        self, request: consent_pb2.RevokeConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentRecord:
        caller, revoke = self._patient_transaction(
            request.transaction, request.HasField("transaction"), "revoke_consent", context
        )
        self.sync()
        existing = self._state.consent(revoke.consent_id)
        if existing is None:
            raise NotFound(f"consent {revoke.consent_id} does not exist")
        if existing.patient_id != caller.principal_id:
            raise PermissionDenied("a patient may only manage its own consents")
        if existing.status == consent_pb2.CONSENT_STATUS_REVOKED:
            raise FailedPrecondition(f"consent {revoke.consent_id} is already revoked")
        response = self._commit(request.transaction)
        record = self._state.consent(revoke.consent_id)
        if record is None or record.status != consent_pb2.CONSENT_STATUS_REVOKED:
            record = existing
            record.status = consent_pb2.CONSENT_STATUS_REVOKED
            record.revoked_log_index = response.log_index
        self._audit.report(
            audit_pb2.AUDIT_ACTION_REVOKE_CONSENT,
            audit_pb2.AUDIT_OUTCOME_SUCCESS,
            actor_id=caller.principal_id,
            organization_id=caller.organization_id,
            patient_id=revoke.patient_id,
            reason=f"consent {revoke.consent_id} revoked at log index {response.log_index}",
        )
        log.info("consent revoked", extra={"consent_id": revoke.consent_id, "log_index": response.log_index})
        return record

    def ListConsents(
        self, request: consent_pb2.ListConsentsRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ListConsentsResponse:
        caller = self._auth.require(context, Kind.PRINCIPAL_KIND_PATIENT, Kind.PRINCIPAL_KIND_SERVICE)
        patient_id = request.patient_id
        if caller.kind == Kind.PRINCIPAL_KIND_PATIENT:
            patient_id = patient_id or caller.principal_id
            if patient_id != caller.principal_id:
                raise PermissionDenied("a patient may only list its own consents")
        elif not patient_id:
            raise InvalidArgument("patient_id", "required")
        self.sync()
        return consent_pb2.ListConsentsResponse(consents=self._state.consents_of(patient_id))

    # --- decisions -------------------------------------------------------------

    def Decide(self, request: consent_pb2.DecideRequest, context: grpc.ServicerContext) -> consent_pb2.Decision:
        self._auth.require_service(context, "records")
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
        action = request.action or common_pb2.CONSENT_ACTION_ACCESS

        self.sync()
        record = self._state.record(request.record_id)
        if record is None:
            raise NotFound(f"record {request.record_id} is not registered")

        def deny(reason: str, consent_id: str = "", path: str = "") -> consent_pb2.Decision:
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

        decision = evaluate(
            self._state.consents_of(record.patient_id),
            AccessRequest(
                actor_id=actor.principal_id,
                actor_organization_id=actor.organization_id,
                actor_specialty=actor.specialty,
                purpose=request.purpose,
                action=action,
                categories=record.categories,
                record_id=record.record_id,
                patient_id=record.patient_id,
                now_ms=int(self._clock() * 1000),
            ),
        )
        if not decision.permitted:
            return deny(decision.reason, decision.consent_id, decision.provision_path)

        token, expires_at_ms = issue_token(
            self._signer,
            DECISION_TOKEN_TYPE,
            {
                "sub": actor.principal_id,
                "aud": audience("identity"),
                "rid": record.record_id,
                "psn": record.patient_id,
                "pou": common_pb2.PurposeOfUse.Name(request.purpose),
                "act": common_pb2.ConsentAction.Name(action),
                "cid": decision.consent_id,
            },
            self._ttl,
        )
        return consent_pb2.Decision(
            effect=consent_pb2.DECISION_EFFECT_PERMIT,
            reason=decision.reason,
            consent_id=decision.consent_id,
            provision_path=decision.provision_path,
            decision_token=token,
            expires_at_ms=expires_at_ms,
            patient_id=record.patient_id,
            decision_id=token_id(token),
        )


def register_consent(servicer: ConsentServicer) -> Register:
    """A register function adding servicer to a server."""

    def register(server: grpc.Server) -> list[str]:
        consent_pb2_grpc.add_ConsentServiceServicer_to_server(servicer, server)
        return [consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name]

    return register


def build(settings: ConsentSettings) -> tuple[Register, list[Callable[[], None]]]:
    """The consent service's register function and closers, from settings."""
    signer = service_signer(settings, "consent")
    trust = TrustBundle.load(settings.trust_dir)
    peers = service_peers(settings, signer)
    servicer = ConsentServicer(
        Authenticator(trust, audience("consent")),
        ConsentState(),
        peers.ledger,
        AuditReporter(peers.audit, "consent"),
        signer,
        settings.decision_token_ttl_seconds,
    )
    # Rebuild state from the ledger now; if the ledger (or identity) is not up yet,
    # the first request catches up instead, since every RPC syncs first.
    try:
        servicer.sync()
    except (CareChainError, grpc.RpcError) as exc:
        log.warning("consent state not loaded at start; will load on first request", extra={"reason": str(exc)})
    return register_consent(servicer), [peers.close]


def main() -> None:
    """Entry point of ``carechain serve consent``."""
    settings = ConsentSettings()
    register, closers = build(settings)
    run_service("consent", settings, register, closers)
