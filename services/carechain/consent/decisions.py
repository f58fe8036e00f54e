"""Access decisions on the ledger-derived consent state, and their signed decision tokens.

:meth:`Decisions.decide` follows :mod:`carechain.consent.policy`; a permit
carries a short-lived decision token (:class:`carechain.core.decision_claims.DecisionClaims`)
signed by this service for ``IdentityService.ReleaseDataKey``, which asks
:meth:`Decisions.check` just before unwrapping the key, so a revocation
committed after the decision still stops the release.

Every answer is given on a state synchronised after the request arrived (a
revocation committed before it is always seen). Concurrent requests share that
synchronisation (:class:`carechain.runtime.batching.MicroBatcher`: one ledger
read for all the calls waiting, none added for a lone call), and
:meth:`Decisions.decide_many` decides a whole batch on one.

A token this replica issued is remembered (:class:`IssuedDecisions`, by its
hash, until it expires), so ``CheckDecision`` re-decides it without parsing and
verifying the JWT again; any other token is verified as before. Either way the
decision is re-made on the current state, so a revocation still stops the
release.

Break-glass windows are recorded on the ledger (``BreakGlassAccess``, signed by
this service) at their first use, so every replica and every restart sees the
same window: it cannot be extended by restarting the service or asking another
replica.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from carechain.common.v1 import common_pb2
from carechain.consent.following import FollowedLedger
from carechain.consent.policy import (
    AccessRequest,
    BreakGlassRules,
    BreakGlassWindow,
    PolicyDecision,
    decide,
    evaluate,
)
from carechain.consent.rules import validate_break_glass_request
from carechain.consent.state import PrincipalInfo, RecordInfo
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Signer
from carechain.core.decision_claims import DecisionClaims, issue_decision_token, verify_decision_token
from carechain.core.errors import CareChainError, InvalidArgument, NotFound, Unauthenticated
from carechain.core.tokens import CLOCK_SKEW_SECONDS
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime import metrics
from carechain.runtime.batching import MicroBatcher

log = logging.getLogger("carechain.consent")

_DENY = consent_pb2.DECISION_EFFECT_DENY
# The reason of a deny for an erased record (Decision.record_erased says the same to the records service).
RECORD_ERASED = "denied: record erased"
#: Most requests one DecideMany may carry.
MAX_DECIDE_MANY = 256
#: Most issued, not yet checked decision tokens remembered (the oldest are forgotten first).
MAX_REMEMBERED_TOKENS = 100_000


class IssuedDecisions:
    """The decision tokens this replica issued and has not re-checked yet: token hash -> claims.

    A token found here is byte for byte one this service signed, so its signature, type and audience
    hold; only its lifetime is checked (with a second of margin inside what verification accepts, so
    a token near its end is verified, and refused, exactly as before). Each is taken once: a second
    check of the same token verifies it in full.
    """

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = MAX_REMEMBERED_TOKENS) -> None:
        self._clock = clock
        self._max = max_entries
        self._tokens: OrderedDict[bytes, DecisionClaims] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def _usable(self, claims: DecisionClaims) -> bool:
        return self._clock() < claims.expires_at + CLOCK_SKEW_SECONDS - 1

    def remember(self, token: str, claims: DecisionClaims) -> None:
        with self._lock:
            self._tokens[self._key(token)] = claims
            # Roughly in expiry order (one TTL): drop expired ones from the front, then any excess.
            while self._tokens and (len(self._tokens) > self._max
                                    or not self._usable(next(iter(self._tokens.values())))):
                self._tokens.popitem(last=False)

    def take(self, token: str) -> DecisionClaims | None:
        """The claims of an issued, unexpired token (once); None: not known here, so verify it."""
        with self._lock:
            claims = self._tokens.pop(self._key(token), None)
        return claims if claims is not None and self._usable(claims) else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


class Decisions:
    """Decides access requests and re-checks issued decisions against the current consent state."""

    def __init__(
        self,
        ledger: FollowedLedger,
        signer: Signer,
        token_ttl_seconds: float,
        break_glass: BreakGlassRules | None = None,
    ) -> None:
        """signer signs decision tokens (svc-consent); break_glass None: no break-glass access at all."""
        self._ledger = ledger
        self._state = ledger.state
        self._signer = signer
        self._ttl = token_ttl_seconds
        self._break_glass = break_glass
        # One flush is one sync; the batcher takes a caller's request into a flush that starts after it
        # arrived, so every caller is answered on a state at least as new as the ledger at its arrival.
        self._syncs: MicroBatcher[None, None] = MicroBatcher("consent-sync", self._sync_for, max_in_flight=1)
        self._issued = IssuedDecisions()

    def _sync_for(self, waiting: list[None]) -> list[None]:
        self._ledger.sync()
        return [None] * len(waiting)

    def sync(self) -> None:
        """Catch up with the ledger as of now (shared with concurrent callers); UNAVAILABLE if it is down."""
        self._syncs.submit(None)

    def decide(
        self, actor_id: str, record_id: str, purpose: int, action: int, break_glass: bool = False
    ) -> consent_pb2.Decision:
        """Permit (with a decision token) or deny actor_id's access to record_id; NotFound for an unknown record.

        The arguments are already validated (known purpose and action, break-glass reason given).
        """
        self.sync()
        return self._decide_synced(actor_id, record_id, purpose, action, break_glass)

    def decide_many(self, requests: list[consent_pb2.DecideRequest]) -> list[consent_pb2.Decision | CareChainError]:
        """Each request decided as :meth:`decide` (after :func:`validate_decide_request`) would, on one sync.

        A request Decide would refuse gets that error in its place; a failure of the sync itself (ledger
        down) raises for all, as it would for each Decide.
        """
        if not requests:
            raise InvalidArgument("requests", "must hold at least one DecideRequest")
        if len(requests) > MAX_DECIDE_MANY:
            raise InvalidArgument("requests", f"holds {len(requests)} requests; the limit is {MAX_DECIDE_MANY}")
        self.sync()
        results: list[consent_pb2.Decision | CareChainError] = []
        for request in requests:
            try:
                purpose, action = validate_decide_request(request)
                results.append(self._decide_synced(request.actor_id, request.record_id, purpose, action,
                                                   request.break_glass))
            except CareChainError as exc:
                results.append(exc)
        return results

    def _decide_synced(
        self, actor_id: str, record_id: str, purpose: int, action: int, break_glass: bool
    ) -> consent_pb2.Decision:
        record = self._state.record(record_id)
        if record is None:
            raise NotFound(f"record {record_id} is not registered")

        owner = self._state.network_patient(record.patient_id)

        def deny(reason: str, consent_id: str = "", path: str = "", erased: bool = False) -> consent_pb2.Decision:
            metrics.CONSENT_DECISIONS.add(1, {"effect": "deny"})
            return consent_pb2.Decision(effect=_DENY, reason=reason, consent_id=consent_id, provision_path=path,
                                        patient_id=record.patient_id, network_patient_id=owner, record_erased=erased,
                                        record_version=record.version)

        actor = self._state.principal(actor_id)
        if actor is None or not actor.is_reader:
            return deny(f"denied: actor {actor_id} is not a registered practitioner or organisation")

        access = self._access_request(actor, record, purpose, action, break_glass)
        window = None
        if self._break_glass is not None and break_glass:
            window = self._state.break_glass_window(actor.principal_id, access.patient_id, access.now_ms)
        decision = decide(self._state.consents_of(access.patient_id), access, self._break_glass, window)
        if not decision.permitted:
            return deny(decision.reason, decision.consent_id, decision.provision_path)
        if record.erased:
            # Decided after the policy: only a reader consent would have let in may learn it was erased.
            return deny(RECORD_ERASED, decision.consent_id, decision.provision_path, erased=True)
        if decision.break_glass and window is None:
            self._record_break_glass(actor.principal_id, access.patient_id, decision)

        ttl = self._ttl
        if decision.break_glass:
            ttl = max(0.001, min(ttl, (decision.break_glass_expires_at_ms - access.now_ms) / 1000))
        token, issued = issue_decision_token(self._signer, DecisionClaims(
            actor_id=actor.principal_id,
            record_id=record.record_id,
            patient_id=record.patient_id,
            purpose=purpose,
            action=action,
            consent_id=decision.consent_id,
            break_glass=decision.break_glass,
            break_glass_started_at_ms=decision.break_glass_started_at_ms,
            break_glass_expires_at_ms=decision.break_glass_expires_at_ms,
        ), ttl)
        self._issued.remember(token, issued)
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
            expires_at_ms=int(issued.expires_at * 1000),
            patient_id=record.patient_id,
            decision_id=issued.decision_id,
            break_glass=decision.break_glass,
            break_glass_expires_at_ms=decision.break_glass_expires_at_ms,
            record_version=record.version,
            network_patient_id=access.patient_id,
        )

    def _access_request(
        self, actor: PrincipalInfo, record: RecordInfo, purpose: int, action: int, break_glass: bool = False
    ) -> AccessRequest:
        """The request as the policy sees it: the record's owner is its patient's network identity
        (docs/network-identity.md), whose consents, delegates and break-glass windows govern it."""
        owner = self._state.network_patient(record.patient_id)
        patient = self._state.principal(owner)
        return AccessRequest(
            actor_id=actor.principal_id,
            actor_organization_id=actor.principal_id if actor.is_organization else actor.organization_id,
            actor_is_organization=actor.is_organization,
            actor_specialty=actor.specialty,
            purpose=purpose,
            action=action,
            categories=record.categories,
            record_id=record.record_id,
            patient_id=owner,
            now_ms=self._ledger.now_ms(),
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
        self._ledger.sign_and_commit(break_glass_access=ledger_pb2.BreakGlassAccess(
            actor_id=actor_id,
            patient_id=patient_id,
            started_at_ms=decision.break_glass_started_at_ms,
            expires_at_ms=decision.break_glass_expires_at_ms,
        ))

    def check(self, decision_token: str) -> PolicyDecision:
        """Whether a decision token this service issued still holds on the current state (a deny says why)."""
        return self.check_many([decision_token])[0]

    def check_many(self, decision_tokens: list[str]) -> list[PolicyDecision]:
        """:meth:`check` of each token, in order, on one ledger sync taken after they all arrived."""
        claimed: list[DecisionClaims | PolicyDecision] = []
        for decision_token in decision_tokens:
            claims = self._issued.take(decision_token)
            if claims is None:  # issued by another replica, checked before, near its end, or not ours: verify
                try:
                    claims = verify_decision_token(decision_token, self._signer.public_key_bytes())
                except Unauthenticated as exc:
                    claimed.append(PolicyDecision(_DENY, f"decision token rejected: {exc.message}"))
                    continue
            claimed.append(claims)
        if any(isinstance(c, DecisionClaims) for c in claimed):
            self.sync()
        answers = []
        for claims in claimed:
            if isinstance(claims, PolicyDecision):
                answers.append(claims)
                continue
            held = self._recheck(claims)
            if not held.permitted:
                log.info("decision no longer holds",
                         extra={"decision_id": claims.decision_id, "reason": held.reason})
            answers.append(held)
        return answers

    def _recheck(self, claims: DecisionClaims) -> PolicyDecision:
        """Re-decide a token's request on the current state; the token's own consent must still be active."""
        if claims.consent_id:
            consent = self._state.consent(claims.consent_id)
            if consent is None or consent.status != consent_pb2.CONSENT_STATUS_ACTIVE:
                at = f" at log index {consent.revoked_log_index}" if consent is not None else ""
                return PolicyDecision(_DENY, f"consent revoked: consent {claims.consent_id} was revoked{at}")
        record = self._state.record(claims.record_id)
        actor = self._state.principal(claims.actor_id)
        if record is None or record.erased or record.patient_id != claims.patient_id:
            return PolicyDecision(_DENY, "denied: record erased or unknown")
        if actor is None or not actor.is_reader:
            return PolicyDecision(_DENY, "denied: actor is no longer a practitioner or organisation")
        access = self._access_request(actor, record, claims.purpose, claims.action, break_glass=claims.break_glass)
        consents = self._state.consents_of(access.patient_id)
        if claims.break_glass:
            window = BreakGlassWindow(claims.break_glass_started_at_ms, claims.break_glass_expires_at_ms)
            return decide(consents, access, self._break_glass or BreakGlassRules(frozenset(), 0), window)
        return evaluate(consents, access)


def validate_decide_request(request: consent_pb2.DecideRequest) -> tuple[int, int]:
    """The validated purpose and action of a DecideRequest; InvalidArgument naming the first bad field."""
    if not request.actor_id:
        raise InvalidArgument("actor_id", "required")
    if not request.record_id:
        raise InvalidArgument("record_id", "required")
    purpose, action = purpose_and_action(request.purpose, request.action)
    validate_break_glass_request(request.break_glass, request.break_glass_reason)
    return purpose, action


def purpose_and_action(purpose: int, action: int) -> tuple[int, int]:
    """Validated PurposeOfUse and ConsentAction of a DecideRequest (an unset action means ACCESS)."""
    if purpose == common_pb2.PURPOSE_OF_USE_UNSPECIFIED or purpose not in common_pb2.PurposeOfUse.values():
        raise InvalidArgument("purpose", "must be a known PurposeOfUse")
    if action not in common_pb2.ConsentAction.values():
        raise InvalidArgument("action", "must be a known ConsentAction")
    return purpose, action or common_pb2.CONSENT_ACTION_ACCESS
