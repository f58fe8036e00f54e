"""The audit service: a durable, hash-chained audit trail anchored on the ledger.

- RecordEvent is for services only and returns once the event is durable; if
  the store cannot write, the call fails with UNAVAILABLE so the reporting
  service fails closed. An alert event also creates a patient notification
  and a review item, in the same store transaction.
- Events are sealed into batches (by count or time) whose Merkle roots a
  background thread anchors on the ledger (:mod:`carechain.audit.anchoring`);
  GetEventProof proves an event is in an anchored batch.
- Patients read their own access history (an accounting of disclosures),
  notifications and FHIR export; services may read any patient's. A patient's
  registered guardian (an active GUARDIAN delegation on the ledger, learnt
  from the consent service at read time) is their personal representative
  (45 CFR 164.502(g)) and reads the accounting too. Patients and guardians
  see each recipient's display name and organisation name (from identity, at
  read time); services get identifiers only. Who may call what is the
  :data:`ACCESS` table (docs/security.md).
- Reporters' clocks are checked: an event time further than
  :data:`MAX_CLOCK_SKEW_MS` from the audit service's own clock is refused, so
  a service cannot backdate or postdate entries of an accounting.
- StreamEvents (services and the operator) replays stored events after a
  cursor and follows new ones, in sequence order.
- The review queue is for services and the operator, who acts as the
  network's privacy officer; resolving an item is itself audited.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc

from carechain.audit import fhir_audit
from carechain.audit.anchoring import AuditMaintenance, BatchSealer, LedgerAnchorer
from carechain.audit.checkpoints import CheckpointRecorder
from carechain.audit.etcd_store import EtcdAuditStore
from carechain.audit.store import AuditStore, SQLiteAuditStore, event_proof
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.client.proofs import LedgerTrust
from carechain.common.v1 import common_pb2
from carechain.consent.v1 import consent_pb2, policy_pb2
from carechain.core.crypto import Signer
from carechain.core.errors import (
    CareChainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from carechain.core.layout import TrustBundle, audience, service_principal_id
from carechain.identity.v1 import identity_pb2
from carechain.ledger.quorum import configured_validator_set
from carechain.runtime.access import ANY, AccessTable, Allow, Scope, own_patient_field
from carechain.runtime.access import caller as caller_of
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import AuditSettings
from carechain.runtime.etcd import EtcdClient
from carechain.runtime.principal_status import PrincipalStatus
from carechain.runtime.server import Register, register_servicer, run_service
from carechain.runtime.streams import limited_stream

log = logging.getLogger("carechain.audit.server")

Kind = common_pb2.PrincipalKind
# The longest period an accounting of disclosures covers (45 CFR 164.528: up to six years);
# six calendar years hold at most two leap days.
SIX_YEARS_MS = (6 * 365 + 2) * 24 * 3600 * 1000
# Events read per store call while streaming; how often a following stream looks for events
# appended by another process (etcd store with several audit replicas).
STREAM_PAGE = 200
STREAM_POLL_SECONDS = 0.5
# How far a reporter's event time may be from the audit service's clock (NTP-synchronised hosts
# are within a second; five minutes leaves room for retries without allowing backdating).
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
# Actions only the audit service itself records.
_OWN_ACTIONS = frozenset({audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT, audit_pb2.AUDIT_ACTION_ANCHOR_BATCH})


class PrincipalDirectory(Protocol):
    """What the audit service asks other services at read time (delegations, names)."""

    def delegations(self, patient_id: str) -> list[consent_pb2.Delegation]:
        """The patient's delegations (consent service); raises when consent cannot be reached."""
        ...

    def principal(self, principal_id: str) -> identity_pb2.Principal | None:
        """A registered principal (identity service), or None when unknown or unreachable."""
        ...


def validate_event(
    event: audit_pb2.AuditEvent, now_ms: int, max_skew_ms: int = MAX_CLOCK_SKEW_MS
) -> audit_pb2.AuditEvent:
    """A checked copy of event, with time_ms filled in when 0; InvalidArgument naming the field.

    A time_ms more than max_skew_ms away from now_ms (the audit service's clock) is refused.
    """
    if not event.event_id:
        raise InvalidArgument("event.event_id", "required (a UUID chosen by the caller)")
    try:
        uuid.UUID(event.event_id)
    except ValueError as exc:
        raise InvalidArgument("event.event_id", "must be a UUID") from exc
    if event.action == audit_pb2.AUDIT_ACTION_UNSPECIFIED or event.action not in audit_pb2.AuditAction.values():
        raise InvalidArgument("event.action", "must be a known AuditAction")
    if event.outcome == audit_pb2.AUDIT_OUTCOME_UNSPECIFIED or event.outcome not in audit_pb2.AuditOutcome.values():
        raise InvalidArgument("event.outcome", "must be a known AuditOutcome")
    if event.purpose not in common_pb2.PurposeOfUse.values():
        raise InvalidArgument("event.purpose", "must be a known PurposeOfUse")
    for category in event.categories:
        if category == common_pb2.SENSITIVITY_CATEGORY_UNSPECIFIED or \
                category not in common_pb2.SensitivityCategory.values():
            raise InvalidArgument("event.categories", "must be known SensitivityCategory values")
    if not event.service:
        raise InvalidArgument("event.service", "required")
    if not event.actor_id:
        raise InvalidArgument("event.actor_id", "required")
    if event.alert and not event.patient_id:
        raise InvalidArgument("event.patient_id", "required for an alert (the patient is notified)")
    if event.time_ms < 0:
        raise InvalidArgument("event.time_ms", "must not be negative")
    if event.time_ms and abs(event.time_ms - now_ms) > max_skew_ms:
        raise InvalidArgument(
            "event.time_ms",
            f"is more than {max_skew_ms // 1000} s from the audit service's clock (send the time of the event, "
            "or 0 for now)",
        )
    checked = audit_pb2.AuditEvent()
    checked.CopyFrom(event)
    if checked.time_ms == 0:
        checked.time_ms = now_ms
    return checked


def accounting_period(since_ms: int, until_ms: int, now_ms: int) -> tuple[int, int]:
    """The (since, until) period of an accounting of disclosures; until 0 = open-ended.

    Defaults to the last six years; a longer period is INVALID_ARGUMENT.
    """
    if since_ms < 0:
        raise InvalidArgument("since_ms", "must not be negative")
    if until_ms < 0:
        raise InvalidArgument("until_ms", "must not be negative")
    end = until_ms or now_ms
    since = since_ms or max(end - SIX_YEARS_MS, 0)
    if until_ms and until_ms <= since:
        raise InvalidArgument("until_ms", "must be after since_ms")
    if end - since > SIX_YEARS_MS:
        raise InvalidArgument(
            "since_ms", "the period since_ms..until_ms (until_ms 0 = now) may span at most six years"
        )
    return since, until_ms


def _category_names(categories: Any) -> list[str]:
    return [common_pb2.SensitivityCategory.Name(c).removeprefix("SENSITIVITY_CATEGORY_").lower().replace("_", " ")
            for c in categories]


def is_active_guardian(delegation: consent_pb2.Delegation, delegate_id: str, now_ms: int) -> bool:
    """Whether delegation makes delegate_id the patient's personal representative now (a guardian in force)."""
    period = delegation.period
    return (
        delegation.delegate_id == delegate_id
        and delegation.relationship == policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN
        and delegation.status == consent_pb2.DELEGATION_STATUS_ACTIVE
        and (not period.start_ms or now_ms >= period.start_ms)
        and (not period.end_ms or now_ms < period.end_ms)
    )


def disclosure(stored: audit_pb2.StoredAuditEvent) -> audit_pb2.Disclosure:
    """The accounting-of-disclosures entry of one event."""
    event = stored.event
    if event.record_id:
        description = f"{event.resource_type or 'health'} record {event.record_id}"
        names = _category_names(event.categories)
        if names:
            description += f" ({', '.join(names)})"
    else:
        description = audit_pb2.AuditAction.Name(event.action).removeprefix("AUDIT_ACTION_").lower().replace("_", " ")
    return audit_pb2.Disclosure(
        time_ms=event.time_ms, recipient_id=event.actor_id, recipient_organization_id=event.organization_id,
        record_id=event.record_id, resource_type=event.resource_type, categories=event.categories,
        purpose=event.purpose, action=event.action, outcome=event.outcome, description=description,
        sequence=stored.sequence, alert=event.alert,
    )


def matches(request: audit_pb2.StreamEventsRequest, event: audit_pb2.AuditEvent) -> bool:
    """Whether an event passes a StreamEvents request's filters."""
    return (
        (not request.service or event.service == request.service)
        and (not request.outcome or event.outcome == request.outcome)
        and (not request.patient_id or event.patient_id == request.patient_id)
        and (not request.actor_id or event.actor_id == request.actor_id)
        and (not request.alerts_only or event.alert)
    )


def _own_service_events(caller: Caller, request: audit_pb2.RecordEventRequest, servicer: AuditServicer) -> None:
    # A service reports its own events only, so the trail says truthfully who reported what.
    # (A missing event or service is left to validate_event, which names the field.)
    if request.event.service and caller.principal_id != service_principal_id(request.event.service):
        raise PermissionDenied(f"event.service must be the calling service ({caller.principal_id})")


def _own_event(caller: Caller, request: audit_pb2.GetEventProofRequest, servicer: AuditServicer) -> None:
    found = servicer.stored_event(request.sequence)
    if found is None or found.event.patient_id != caller.principal_id:
        # Same answer as a missing event: a patient learns nothing about other patients' events.
        raise NotFound(f"audit event {request.sequence} does not exist")


OWN_EVENTS = Scope("own events", "events naming itself as `service`", _own_service_events)
OWN_EVENT = Scope("own event", "events about themselves only", _own_event)
OWN_PATIENT = own_patient_field()


def _own_or_guarded(caller: Caller, request: audit_pb2.GetAccessHistoryRequest, servicer: AuditServicer) -> None:
    servicer.accounting_patient(caller, request.patient_id)


OWN_OR_GUARDIAN = Scope("own or as guardian", "own, or as the patient's active guardian (45 CFR 164.502(g))",
                        _own_or_guarded)

SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"]
# Who may call what (docs/security.md). Audit events name patients, records and categories:
# only the patient, services and the operator (privacy officer) read them; auditors verify.
ACCESS = AccessTable(SERVICE, {
    "RecordEvent": Allow.of(service=OWN_EVENTS),
    "GetAccessHistory": Allow.of(patient=OWN_OR_GUARDIAN, practitioner=OWN_OR_GUARDIAN, service=ANY,
                                 note="services name the patient"),
    "VerifyAuditChain": Allow.of(service=ANY, operator=ANY, auditor=ANY, note="counts and hashes only"),
    "StreamEvents": Allow.of(service=ANY, operator=ANY),
    "ExportFhirBundle": Allow.of(patient=OWN_PATIENT, service=ANY, operator=ANY),
    "GetEventProof": Allow.of(patient=OWN_EVENT, service=ANY, operator=ANY, auditor=ANY,
                              note="hashes only; another patient's event is NOT_FOUND"),
    "ListNotifications": Allow.of(patient=OWN_PATIENT, service=ANY),
    "ListReviewItems": Allow.of(service=ANY, operator=ANY, note="the operator is the privacy officer"),
    "ResolveReviewItem": Allow.of(service=ANY, operator=ANY),
})


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """AuditService over an :class:`AuditStore`; anchorer (optional) cross-checks anchors on the ledger."""

    def __init__(
        self,
        authenticator: Authenticator,
        store: AuditStore,
        clock: Callable[[], float] = time.time,
        anchorer: LedgerAnchorer | None = None,
        stream_poll_seconds: float = STREAM_POLL_SECONDS,
        directory: PrincipalDirectory | None = None,
        max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS,
        checkpoints: CheckpointRecorder | None = None,
        anchor_deadline_seconds: float = 900.0,
    ) -> None:
        self._auth = authenticator
        self._directory = directory
        self._max_skew_ms = max_clock_skew_ms
        self._store = store
        self._clock = clock
        self._anchorer = anchorer
        self._checkpoints = checkpoints
        self._anchor_deadline_ms = int(anchor_deadline_seconds * 1000)
        self._poll = stream_poll_seconds
        # Wakes following streams when this process appends (other processes are polled).
        self._appended = threading.Condition()
        self._generation = 0
        self._closed = False

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _append(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        try:
            receipt = self._store.append(event)
        except CareChainError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure means "not durable": fail closed
            raise Unavailable("audit store", f"cannot write event: {type(exc).__name__}") from exc
        with self._appended:
            self._generation += 1
            self._appended.notify_all()
        return receipt

    def report_own(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        """Append one of the audit service's own events (checkpoints, anchoring alerts)."""
        return self._append(event)

    def close(self) -> None:
        """End following streams (server shutdown)."""
        with self._appended:
            self._closed = True
            self._appended.notify_all()

    def _patient_scope(self, context: grpc.ServicerContext, patient_id: str) -> tuple[Caller, str]:
        """(caller, patient id): a patient's own (ACCESS checked it), or the one another caller names."""
        caller = caller_of(context)
        if caller.kind == Kind.PRINCIPAL_KIND_PATIENT:
            return caller, caller.principal_id
        if not patient_id:
            raise InvalidArgument("patient_id", "required")
        return caller, patient_id

    def stored_event(self, sequence: int) -> audit_pb2.StoredAuditEvent | None:
        """The stored event with this sequence number, or None."""
        if sequence < 1:
            raise InvalidArgument("sequence", "must be at least 1")
        found = self._store.events_after(sequence - 1, 1)
        return found[0] if found and found[0].sequence == sequence else None

    # --- recording -----------------------------------------------------------------------------

    def RecordEvent(
        self, request: audit_pb2.RecordEventRequest, context: grpc.ServicerContext
    ) -> audit_pb2.AuditReceipt:
        if not request.HasField("event"):
            raise InvalidArgument("event", "required")
        if request.event.ledger_checkpoint or request.event.action in _OWN_ACTIONS:
            # Only the audit service publishes checkpoints and anchoring alerts (verification trusts them).
            raise InvalidArgument("event.action", "ledger checkpoints and anchoring alerts are recorded by the "
                                                  "audit service itself")
        event = validate_event(request.event, self._now_ms(), self._max_skew_ms)
        sequence, event_hash = self._append(event)
        return audit_pb2.AuditReceipt(sequence=sequence, event_hash=event_hash)

    # --- patients ------------------------------------------------------------------------------

    def GetAccessHistory(
        self, request: audit_pb2.GetAccessHistoryRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetAccessHistoryResponse:
        # The access table's OWN_OR_GUARDIAN scope has checked a patient's or guardian's right to read it.
        caller = caller_of(context)
        patient_id = request.patient_id or (caller.principal_id if caller.kind == Kind.PRINCIPAL_KIND_PATIENT else "")
        if not patient_id:
            raise InvalidArgument("patient_id", "required")
        since, until = accounting_period(request.since_ms, request.until_ms, self._now_ms())
        events = self._store.history(patient_id, since, until)
        disclosures = [disclosure(e) for e in events]
        if caller.kind != Kind.PRINCIPAL_KIND_SERVICE:
            self._name_recipients(disclosures)
        return audit_pb2.GetAccessHistoryResponse(
            events=events, disclosures=disclosures, since_ms=since, until_ms=until
        )

    def accounting_patient(self, caller: Caller, patient_id: str) -> str:
        """The patient whose accounting caller may read: their own, as the active guardian, or (a service) any."""
        if caller.kind == Kind.PRINCIPAL_KIND_SERVICE:
            if not patient_id:
                raise InvalidArgument("patient_id", "required")
            return patient_id
        if caller.kind == Kind.PRINCIPAL_KIND_PATIENT and patient_id in ("", caller.principal_id):
            return caller.principal_id
        if not patient_id:
            raise InvalidArgument("patient_id", "required: the patient whose accounting a guardian reads")
        # A personal representative: the ledger's delegations, as the consent service derives them.
        delegations = self._directory.delegations(patient_id) if self._directory is not None else []
        now = self._now_ms()
        if not any(is_active_guardian(d, caller.principal_id, now) for d in delegations):
            raise PermissionDenied("only the patient, the patient's active guardian or a service may read "
                                   "a patient's accounting of disclosures")
        return patient_id

    def _name_recipients(self, disclosures: list[audit_pb2.Disclosure]) -> None:
        """Fill recipient and organisation display names, looked up once per principal (best effort)."""
        if self._directory is None:
            return
        names: dict[str, str] = {}

        def name(principal_id: str) -> str:
            if principal_id and principal_id not in names:
                principal = self._directory.principal(principal_id)  # type: ignore[union-attr]
                names[principal_id] = principal.display_name if principal is not None else ""
            return names.get(principal_id, "")

        for entry in disclosures:
            entry.recipient_name = name(entry.recipient_id)
            entry.recipient_organization_name = name(entry.recipient_organization_id)

    def ExportFhirBundle(
        self, request: audit_pb2.ExportFhirBundleRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ExportFhirBundleResponse:
        _, patient_id = self._patient_scope(context, request.patient_id)
        now = self._now_ms()
        since, until = accounting_period(request.since_ms, request.until_ms, now)
        events = self._store.history(patient_id, since, until)
        return audit_pb2.ExportFhirBundleResponse(
            bundle_json=fhir_audit.bundle_json(events, str(uuid.uuid4()), now), count=len(events)
        )

    def ListNotifications(
        self, request: audit_pb2.ListNotificationsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListNotificationsResponse:
        _, patient_id = self._patient_scope(context, request.patient_id)
        return audit_pb2.ListNotificationsResponse(notifications=self._store.notifications(patient_id))

    def GetEventProof(
        self, request: audit_pb2.GetEventProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.EventProof:
        if self.stored_event(request.sequence) is None:
            raise NotFound(f"audit event {request.sequence} does not exist")
        batch = self._store.batch_containing(request.sequence)
        if batch is None:
            raise FailedPrecondition(
                f"audit event {request.sequence} is not sealed in a batch yet; retry after the next batch is sealed"
            )
        events = self._store.events_after(batch.first_sequence - 1, batch.size)
        return event_proof(batch, [e.event_hash for e in events], request.sequence)

    # --- SREs and privacy officers -------------------------------------------------------------

    def VerifyAuditChain(
        self, request: audit_pb2.VerifyAuditChainRequest, context: grpc.ServicerContext
    ) -> audit_pb2.VerifyAuditChainResponse:
        result = self._store.verify()
        response = audit_pb2.VerifyAuditChainResponse(
            ok=result.ok, events_checked=result.events_checked, first_bad_sequence=result.first_bad_sequence,
            problem=result.problem, batches_checked=result.batches_checked, batches_anchored=result.batches_anchored,
        )
        if request.check_ledger and result.ok:
            if self._anchorer is None:
                raise FailedPrecondition("this audit service does not anchor batches (CARECHAIN_ANCHOR_BATCHES)")
            # Checkpoints first: a rewritten ledger history is the finding to name, not the anchors it moved.
            if self._checkpoints is not None:
                checked, sequence, problem = self._checkpoints.check_all()
                response.checkpoints_checked = checked
                if problem:
                    response.ok, response.first_bad_sequence, response.problem = False, sequence, problem
                    return response
            self._check_anchors(response)
        return response

    def _check_anchors(self, response: audit_pb2.VerifyAuditChainResponse) -> None:
        """Each anchored batch matches its ledger transaction; none waited past the anchoring deadline."""
        assert self._anchorer is not None
        now = self._now_ms()
        for batch in self._store.batches():
            if not batch.anchored:
                if now - batch.sealed_ms > self._anchor_deadline_ms:
                    response.ok, response.first_bad_sequence = False, batch.first_sequence
                    response.problem = (
                        f"batch {batch.batch_number}: sealed {(now - batch.sealed_ms) // 1000} s ago and not "
                        f"anchored on the ledger within the deadline of {self._anchor_deadline_ms // 1000} s "
                        "(CARECHAIN_ANCHOR_DEADLINE_SECONDS)")
                    return
                continue
            problem = self._anchorer.check(batch)
            if problem:
                response.ok, response.first_bad_sequence, response.problem = False, batch.first_sequence, problem
                return
            response.anchors_checked += 1

    @limited_stream  # a tail holds a worker: per-caller and per-server caps (runtime.streams)
    def StreamEvents(
        self, request: audit_pb2.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.StoredAuditEvent]:
        if request.outcome not in audit_pb2.AuditOutcome.values():
            raise InvalidArgument("outcome", "must be a known AuditOutcome")
        cursor = request.after_sequence
        while context.is_active():
            with self._appended:
                generation = self._generation
            page = self._store.events_after(cursor, STREAM_PAGE)
            for stored in page:
                cursor = stored.sequence
                if matches(request, stored.event):
                    yield stored
            if len(page) == STREAM_PAGE:
                continue
            if request.replay_only:
                return
            with self._appended:
                if self._closed:
                    return
                self._appended.wait_for(lambda g=generation: self._generation != g or self._closed, self._poll)

    def ListReviewItems(
        self, request: audit_pb2.ListReviewItemsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListReviewItemsResponse:
        if request.status not in audit_pb2.ReviewStatus.values():
            raise InvalidArgument("status", "must be a known ReviewStatus")
        return audit_pb2.ListReviewItemsResponse(items=self._store.review_items(request.status))

    def ResolveReviewItem(
        self, request: audit_pb2.ResolveReviewItemRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ReviewItem:
        caller = caller_of(context)
        if not request.item_id:
            raise InvalidArgument("item_id", "required")
        if not request.note.strip():
            raise InvalidArgument("note", "required: what the review concluded")
        if len(request.note) > 2000:
            raise InvalidArgument("note", "at most 2000 characters")
        item = self._store.review_item(request.item_id)
        if item is None:
            raise NotFound(f"review item {request.item_id} does not exist")
        if item.status != audit_pb2.REVIEW_STATUS_OPEN:
            raise FailedPrecondition(f"review item {request.item_id} is already resolved")
        reviewed = item.event.event
        # The resolution is audited first: if it cannot be recorded, nothing is resolved.
        now = self._now_ms()
        resolution = audit_pb2.AuditEvent(
            event_id=str(uuid.uuid4()), time_ms=now, service="audit", actor_id=caller.principal_id,
            organization_id=caller.organization_id, patient_id=reviewed.patient_id, record_id=reviewed.record_id,
            resource_type=reviewed.resource_type, categories=reviewed.categories,
            action=audit_pb2.AUDIT_ACTION_REVIEW, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
            reason=f"resolved review item {item.item_id} (alert event {item.event.sequence})",
        )
        sequence, _ = self._append(resolution)
        return self._store.resolve_review_item(item.item_id, caller.principal_id, request.note, now, sequence)


def register_audit(servicer: AuditServicer) -> Register:
    """A register function adding servicer to a server."""

    return register_servicer(audit_pb2_grpc.add_AuditServiceServicer_to_server, servicer, ACCESS, servicer._auth)


class LedgerAccess:
    """The audit service's signer and ledger stub, created on first use (Vault or identity may start later)."""

    def __init__(self, settings: AuditSettings) -> None:
        self._settings = settings
        self._lock = threading.RLock()
        self._signer: Signer | None = None
        self._peers: Any = None

    def signer(self) -> Signer:
        """svc-audit's signer (PEM file or Vault Transit key)."""
        from carechain.runtime.vault import service_signer

        with self._lock:
            if self._signer is None:
                self._signer = service_signer(self._settings, "audit")
            return self._signer

    def ledger(self) -> Any:
        """A LedgerService PeerStub authenticated as svc-audit."""
        return self._service_peers().ledger

    def _service_peers(self) -> Any:
        from carechain.runtime.peers import service_peers

        with self._lock:
            if self._peers is None:
                self._peers = service_peers(self._settings, self.signer())
            return self._peers

    def delegations(self, patient_id: str) -> list[consent_pb2.Delegation]:
        """The patient's delegations, from the consent service (which derives them from the ledger)."""
        response = self._service_peers().consent.ListDelegates(
            consent_pb2.ListDelegatesRequest(patient_id=patient_id))
        return list(response.delegations)

    def principal(self, principal_id: str) -> identity_pb2.Principal | None:
        """A principal from the identity service; None when it is unknown or identity cannot answer."""
        try:
            return self._service_peers().identity.GetPrincipal(
                identity_pb2.GetPrincipalRequest(principal_id=principal_id))
        except (grpc.RpcError, CareChainError) as exc:
            log.warning("no display name for an accounting entry", extra={"error": type(exc).__name__})
            return None

    def close(self) -> None:
        """Close the peer channels."""
        with self._lock:
            if self._peers is not None:
                self._peers.close()


def build(settings: AuditSettings) -> tuple[Register, list[Callable[[], None]]]:
    """The audit service's register function and closers, from settings."""
    trust = TrustBundle.load(settings.trust_dir)
    store = build_store(settings)
    access = LedgerAccess(settings)
    anchorer = LedgerAnchorer(store, settings.chain_id, access.ledger, access.signer) \
        if settings.anchor_batches else None
    # The recorder appends through the servicer (built next; the lambda runs only later, in maintenance).
    checkpoints = CheckpointRecorder(
        store, access.ledger, lambda: ledger_trust(settings), lambda event: servicer.report_own(event),
        settings.checkpoint_interval_seconds,
    ) if settings.anchor_batches and settings.record_checkpoints else None
    principal_status = PrincipalStatus.following(access.ledger).start()
    servicer = AuditServicer(Authenticator(trust, audience("audit"), principal_status), store, anchorer=anchorer,
                             checkpoints=checkpoints, anchor_deadline_seconds=settings.anchor_deadline_seconds,
                             directory=access)
    sealer = BatchSealer(store, settings.batch_max_events, settings.batch_max_seconds)
    maintenance = AuditMaintenance(sealer, anchorer, min(1.0, max(0.05, settings.batch_max_seconds / 4)),
                                   checkpoints=checkpoints, report=servicer.report_own,
                                   backoff_max_seconds=settings.anchor_backoff_max_seconds)
    maintenance.start()
    return register_audit(servicer), [
        servicer.close, maintenance.stop, principal_status.close, access.close, store.close
    ]


def ledger_trust(settings: AuditSettings) -> LedgerTrust:
    """The ledger's validators and quorum as configured for this service (never read from the ledger)."""
    try:
        validators = configured_validator_set(settings.validators, settings.quorum)
    except ValueError as exc:
        raise InvalidArgument("CARECHAIN_VALIDATORS", str(exc)) from exc
    return LedgerTrust(TrustBundle.load(settings.trust_dir), validators, settings.chain_id)


def build_store(settings: AuditSettings) -> AuditStore:
    """The audit store settings.audit_store names (etcd: under ``<etcd_prefix>/<chain_id>/audit``)."""
    if settings.audit_store == "etcd":
        prefix = f"{settings.etcd_prefix.rstrip('/')}/{settings.chain_id}/audit"
        return EtcdAuditStore(EtcdClient.from_settings(settings), prefix, owns_client=True)
    return SQLiteAuditStore(settings.data_dir)


def main() -> None:
    """Entry point of ``carechain serve audit``."""
    settings = AuditSettings()
    register, closers = build(settings)
    run_service("audit", settings, register, closers)
