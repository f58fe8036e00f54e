"""The consent service: patients' consent contracts on the ledger, and access decisions.

A thin gRPC layer (requests to domain calls, answers back; who may call what is :data:`ACCESS`) over
the domain modules:

- :mod:`carechain.consent.following`: the consent state derived only from ledger transactions
  (:mod:`carechain.consent.state`), synchronised before every answer so a revocation committed
  before a decision is always seen; consent changes audited however they were submitted; this
  service's commits, waited for until visible. Ledger data is read through
  :class:`carechain.ledger.reader.VerifiedLedgerReader`.
- :mod:`carechain.consent.grants`: patient-signed grants, revocations and delegations (sealed,
  attested policies: ``SealPolicy`` first).
- :mod:`carechain.consent.decisions`: ``Decide`` (a permit carries a signed decision token for
  ``IdentityService.ReleaseDataKey``) and ``CheckDecision`` (identity's re-check just before it
  unwraps the key), break-glass windows recorded on the ledger at first use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from carechain.audit.events import AuditReporter
from carechain.consent.decisions import Decisions, validate_decide_request
from carechain.consent.fhir_consent import consent_json
from carechain.consent.following import FOLLOW_SECONDS, FollowedLedger
from carechain.consent.grants import Grants, SignerKey
from carechain.consent.policy import BreakGlassRules
from carechain.consent.snapshot import FILE_NAME as SNAPSHOT_FILE
from carechain.consent.snapshot import ConsentSnapshots
from carechain.consent.state import ConsentState, ListTransactions
from carechain.consent.v1 import consent_pb2, consent_pb2_grpc
from carechain.core.crypto import Signer
from carechain.core.errors import CareChainError, InvalidArgument
from carechain.core.layout import TrustBundle, audience
from carechain.identity.v1 import identity_pb2
from carechain.ledger.contract import DEFAULT_MAX_SKEW_MS
from carechain.ledger.reader import VerifiedLedgerReader, configured_validators
from carechain.ledger.sealing import LedgerSealer, metadata_sealer
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.access import ANY, AccessTable, Allow, Scope
from carechain.runtime.access import caller as caller_of
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import ConsentSettings
from carechain.runtime.logs import configure_logging
from carechain.runtime.peers import service_peers
from carechain.runtime.principal_status import PrincipalStatus, StatusSnapshots
from carechain.runtime.server import Register, register_servicer, run_service
from carechain.runtime.vault import service_signer

log = logging.getLogger("carechain.consent")
#: Decision tokens one CheckDecisions call may carry.
MAX_CHECKS_PER_CALL = 1000


def _transaction(request: Any) -> ledger_pb2.Transaction | None:
    """The request's signed transaction, None when it has none."""
    return request.transaction if request.HasField("transaction") else None


def _signed(payload: str, allow_delegate: bool) -> Scope:
    """The transaction is signed by the caller, for themselves or (if allowed) as the patient's active delegate."""

    def check(caller: Caller, request: Any, servicer: ConsentServicer) -> None:
        servicer.grants.signed_for_patient(caller, _transaction(request), payload, allow_delegate)

    who = "signed by the caller for themselves" + (" or as an active delegate" if allow_delegate else "")
    return Scope("signed", who, check)


def _readable(what: str) -> Scope:
    def check(caller: Caller, request: Any, servicer: ConsentServicer) -> None:
        servicer.grants.readable_patient(caller, request.patient_id, what)

    return Scope("own or delegated", "own, or as an active delegate", check)


def _readable_consent(caller: Caller, request: consent_pb2.ExportConsentRequest, servicer: ConsentServicer) -> None:
    servicer.grants.readable_consent(caller, request.consent_id)


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
    "DecideMany": Allow.of(service=ANY, services=["records"], note="as Decide, one result per request"),
    "CheckDecision": Allow.of(service=ANY, services=["identity"], note="at key release"),
    "CheckDecisions": Allow.of(service=ANY, services=["identity"], note="a key-release batch"),
    "ExportConsent": Allow.of(patient=_EXPORT, practitioner=_EXPORT, service=ANY,
                              note="not yours and unknown are the same NOT_FOUND"),
    "RegisterDelegate": Allow.of(patient=_signed("register_delegate", allow_delegate=False)),
    "RevokeDelegate": Allow.of(patient=_signed("revoke_delegate", allow_delegate=False)),
    "ListDelegates": Allow.of(patient=_READ_DELEGATES, practitioner=_READ_DELEGATES, service=ANY),
    "SealPolicy": Allow.of(patient=_SEAL, practitioner=_SEAL, note="before the patient signs the grant"),
    "SubmitFhirConsent": Allow.of(service=ANY, services=["records"],
                                  note="for the caller records authenticated; the patient's JWS is the authority"),
})



class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    """ConsentService: requests to :class:`Grants` and :class:`Decisions` calls over the followed ledger."""

    def __init__(
        self,
        authenticator: Authenticator,
        state: ConsentState,
        ledger: Any,
        audit: AuditReporter,
        decision_signer: Signer,
        decision_token_ttl_seconds: float,
        clock: Callable[[], float] = time.time,
        break_glass: BreakGlassRules | None = None,
        chain_id: str = "carechain-local",
        sealer: LedgerSealer | None = None,
        read_transactions: ListTransactions | None = None,
        signer_key: SignerKey | None = None,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        """ledger is the LedgerService stub (submissions); sealer defaults to the state's; read_transactions
        (how sync reads the ledger) to ``ledger.ListTransactions``. build() passes a VerifiedLedgerReader:
        production never folds unverified ledger data. signer_key (a principal's registered key, for consent
        JWSs; default: none known) and max_skew_ms (how old a JWS may be) serve SubmitFhirConsent."""
        self._auth = authenticator
        self._signer_key = signer_key or (lambda principal_id: None)
        self._max_skew_ms = max_skew_ms
        self.ledger = FollowedLedger(
            state,
            read_transactions or ledger.ListTransactions,
            ServiceSubmitter(chain_id, decision_signer, lambda: ledger),
            audit,
            clock,
        )
        self.grants = Grants(self.ledger, sealer or state.sealer, decision_signer)
        self.decisions = Decisions(self.ledger, decision_signer, decision_token_ttl_seconds, break_glass)

    # --- grants and revocations ----------------------------------------------

    def SealPolicy(
        self, request: consent_pb2.SealPolicyRequest, context: grpc.ServicerContext
    ) -> consent_pb2.SealPolicyResponse:
        """Check a policy against the consent rules, seal it and attest it (the only way to a valid grant)."""
        # Who may seal for this patient (the patient, or an active delegate) is the access table's _SEAL scope.
        sealed, attestation = self.grants.seal_policy(
            request.patient_id, request.consent_id, request.policy if request.HasField("policy") else None)
        return consent_pb2.SealPolicyResponse(sealed_policy=sealed, policy_attestation=attestation)

    def GrantConsent(
        self, request: consent_pb2.GrantConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentRecord:
        return self.grants.grant(caller_of(context), _transaction(request))

    def SubmitFhirConsent(
        self, request: consent_pb2.SubmitFhirConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentRecord:
        """A FHIR Consent the patient (or a delegate) signed as a JWS, granted (or revoked) on the ledger."""
        if not request.caller_id:
            raise InvalidArgument("caller_id", "required (the principal the records gateway authenticated)")
        return self.grants.submit_signed_fhir(request.caller_id, request.consent_json, request.consent_jws,
                                             self._signer_key, self._max_skew_ms)

    def RevokeConsent(
        self, request: consent_pb2.RevokeConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentRecord:
        return self.grants.revoke(caller_of(context), _transaction(request))

    def ListConsents(
        self, request: consent_pb2.ListConsentsRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ListConsentsResponse:
        return consent_pb2.ListConsentsResponse(consents=self.grants.consents_of(caller_of(context),
                                                                                 request.patient_id))

    def ExportConsent(
        self, request: consent_pb2.ExportConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ExportConsentResponse:
        consent = self.grants.readable_consent(caller_of(context), request.consent_id)
        return consent_pb2.ExportConsentResponse(consent_json=consent_json(consent))

    # --- delegates -------------------------------------------------------------

    def RegisterDelegate(
        self, request: consent_pb2.RegisterDelegateRequest, context: grpc.ServicerContext
    ) -> consent_pb2.Delegation:
        return self.grants.register_delegate(caller_of(context), _transaction(request))

    def RevokeDelegate(
        self, request: consent_pb2.RevokeDelegateRequest, context: grpc.ServicerContext
    ) -> consent_pb2.Delegation:
        return self.grants.revoke_delegate(caller_of(context), _transaction(request))

    def ListDelegates(
        self, request: consent_pb2.ListDelegatesRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ListDelegatesResponse:
        return consent_pb2.ListDelegatesResponse(delegations=self.grants.delegations_of(caller_of(context),
                                                                                        request.patient_id))

    # --- decisions -------------------------------------------------------------

    def Decide(self, request: consent_pb2.DecideRequest, context: grpc.ServicerContext) -> consent_pb2.Decision:
        purpose, action = validate_decide_request(request)
        return self.decisions.decide(request.actor_id, request.record_id, purpose, action, request.break_glass)

    def DecideMany(self, request: consent_pb2.DecideManyRequest, context: grpc.ServicerContext
                   ) -> consent_pb2.DecideManyResponse:
        """Decide's answers for several requests, on one synchronised state (per-request errors in place)."""
        results = []
        for answer in self.decisions.decide_many(list(request.requests)):
            if isinstance(answer, CareChainError):
                results.append(consent_pb2.DecideResult(error=consent_pb2.DecideError(
                    code=answer.code.value[0], message=answer.message)))
            else:
                results.append(consent_pb2.DecideResult(decision=answer))
        return consent_pb2.DecideManyResponse(results=results)

    def CheckDecision(
        self, request: consent_pb2.CheckDecisionRequest, context: grpc.ServicerContext
    ) -> consent_pb2.CheckDecisionResponse:
        if not request.decision_token:
            raise InvalidArgument("decision_token", "required")
        held = self.decisions.check(request.decision_token)
        return consent_pb2.CheckDecisionResponse(permitted=held.permitted, reason=held.reason)

    def CheckDecisions(
        self, request: consent_pb2.CheckDecisionsRequest, context: grpc.ServicerContext
    ) -> consent_pb2.CheckDecisionsResponse:
        tokens = list(request.decision_tokens)
        if not tokens:
            raise InvalidArgument("decision_tokens", "required")
        if len(tokens) > MAX_CHECKS_PER_CALL:
            raise InvalidArgument("decision_tokens", f"at most {MAX_CHECKS_PER_CALL} per call")
        for index, token in enumerate(tokens):
            if not token:
                raise InvalidArgument(f"decision_tokens[{index}]", "required")
        return consent_pb2.CheckDecisionsResponse(results=[
            consent_pb2.CheckDecisionResponse(permitted=held.permitted, reason=held.reason)
            for held in self.decisions.check_many(tokens)])


def registered_key(identity: Callable[[], Any]) -> SignerKey:
    """A principal's current registered key, asked of identity (which registers and rotates keys on the
    ledger); None for an unknown principal. The validators check the JWS again under the ledger's key."""

    def key(principal_id: str) -> bytes | None:
        try:
            principal = identity().GetPrincipal(identity_pb2.GetPrincipalRequest(principal_id=principal_id))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                return None
            raise
        return bytes(principal.public_key) or None

    return key


def register_consent(servicer: ConsentServicer) -> Register:
    """A register function adding servicer to a server."""
    return register_servicer(consent_pb2_grpc.add_ConsentServiceServicer_to_server, servicer, ACCESS, servicer._auth)


def build(settings: ConsentSettings) -> tuple[Register, list[Callable[[], None]]]:
    """The consent service's register function and closers, from settings."""
    signer = service_signer(settings, "consent")
    trust = TrustBundle.load(settings.trust_dir)
    peers = service_peers(settings, signer)
    principal_status = PrincipalStatus.following(
        lambda: peers.ledger, snapshots=StatusSnapshots.in_data_dir(settings.data_dir, signer)).start()
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
        signer_key=registered_key(lambda: peers.identity),
        max_skew_ms=settings.tx_max_skew_ms,
    )
    # Resume from the signed snapshot (checked against the certified chain), then catch up; if the ledger
    # (or identity) is not up yet, the first request catches up instead, since every RPC syncs first.
    state = servicer.ledger.state
    snapshots = ConsentSnapshots(settings.data_dir / SNAPSHOT_FILE, signer)
    snapshots.load(state, reader)
    try:
        servicer.ledger.sync()
    except (CareChainError, grpc.RpcError) as exc:
        log.warning("consent state not loaded at start; will load on first request", extra={"reason": str(exc)})

    def snapshot(final: bool) -> object:
        return snapshots.save(state, reader) if final else snapshots.save_if_due(state, reader)

    stop_following = servicer.ledger.follow(FOLLOW_SECONDS, snapshot)
    stop_watching = reader.watch()  # new final blocks pushed by the ledger: syncs then make no call
    return register_consent(servicer), [stop_following, stop_watching, principal_status.close, peers.close]


def main() -> None:
    """Entry point of ``carechain serve consent``."""
    settings = ConsentSettings()
    configure_logging("consent", settings.log_level)  # what build logs (e.g. a resume) is kept
    register, closers = build(settings)
    run_service("consent", settings, register, closers)
