"""The audit service: a durable, hash-chained audit trail anchored on the ledger.

This module is the gRPC surface: who may call what (:data:`ACCESS`, docs/security.md),
proto <-> domain, and wiring (:func:`build`). The domain lives in:

- :mod:`~carechain.audit.trail`: RecordEvent's checks (the reporter's clock too) and
  the fail-closed append: UNAVAILABLE when the store cannot write, so the
  reporting service fails closed;
- :mod:`~carechain.audit.accounting`: a patient's accounting of disclosures (also
  for their active guardian), notifications and FHIR export;
- :mod:`~carechain.audit.reviews`: the break-glass review queue (services and the
  operator, who acts as the network's privacy officer);
- :mod:`~carechain.audit.streaming`: StreamEvents, the event tail;
- :mod:`~carechain.audit.verification`: event proofs and VerifyAuditChain (chain,
  anchors, anchoring deadline, ledger checkpoints);
- :mod:`~carechain.audit.anchoring` / :mod:`~carechain.audit.checkpoints`: the
  background sealing, anchoring and checkpoint recording;
- the stores: :mod:`~carechain.audit.store` (the seam), ``sqlite_store``, ``etcd_store``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc

from carechain.audit.accounting import Accounting, PrincipalDirectory
from carechain.audit.anchoring import AuditMaintenance, BatchSealer, LedgerAnchorer
from carechain.audit.checkpoints import CheckpointRecorder
from carechain.audit.etcd_store import EtcdAuditStore
from carechain.audit.peers import LedgerAccess
from carechain.audit.reviews import ReviewQueue
from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.store import AuditStore
from carechain.audit.streaming import STREAM_POLL_SECONDS, EventTail
from carechain.audit.trail import MAX_BATCH_EVENTS, MAX_CLOCK_SKEW_MS, AuditTrail
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.audit.verification import TrailVerification
from carechain.client.proofs import LedgerTrust
from carechain.core.errors import CareChainError, InvalidArgument, NotFound, PermissionDenied
from carechain.core.layout import TrustBundle, audience, service_principal_id
from carechain.ledger.quorum import configured_validator_set
from carechain.runtime.access import ANY, AccessTable, Allow, Scope, own_patient_field
from carechain.runtime.access import caller as caller_of
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import AuditSettings
from carechain.runtime.etcd import EtcdClient
from carechain.runtime.logs import configure_logging
from carechain.runtime.principal_status import PrincipalStatus, StatusSnapshots
from carechain.runtime.server import Register, register_servicer, run_service
from carechain.runtime.streams import Serialized, limited_stream


def _own_service_events(caller: Caller, request: audit_pb2.RecordEventRequest, servicer: AuditServicer) -> None:
    # A service reports its own events only, so the trail says truthfully who reported what.
    # (A missing event or service is left to validate_event, which names the field.)
    if request.event.service and caller.principal_id != service_principal_id(request.event.service):
        raise PermissionDenied(f"event.service must be the calling service ({caller.principal_id})")


def _refusal_of_foreign_event(caller: Caller, event: audit_pb2.AuditEvent) -> PermissionDenied | None:
    """RecordEvent's OWN_EVENTS check for one event of a RecordEvents request (refuses that event alone)."""
    try:
        _own_service_events(caller, audit_pb2.RecordEventRequest(event=event), None)  # type: ignore[arg-type]
    except PermissionDenied as exc:
        return exc
    return None


def _events_checked_each(caller: Caller, request: audit_pb2.RecordEventsRequest, servicer: AuditServicer) -> None:
    # Each event is checked as RecordEvent's OWN_EVENTS scope checks it, in the handler, so that a foreign
    # event is refused alone (its result carries PERMISSION_DENIED) and the others are stored.
    return None


def _own_event(caller: Caller, request: audit_pb2.GetEventProofRequest, servicer: AuditServicer) -> None:
    found = servicer.stored_event(request.sequence)
    if found is None or found.event.patient_id != caller.principal_id:
        # Same answer as a missing event: a patient learns nothing about other patients' events.
        raise NotFound(f"audit event {request.sequence} does not exist")


OWN_EVENTS = Scope("own events", "events naming itself as `service`", _own_service_events)
EACH_OWN_EVENT = Scope("own events", "events naming itself as `service` (each event checked alone)",
                       _events_checked_each)
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
    "RecordEvents": Allow.of(service=EACH_OWN_EVENT, note="group commit of RecordEvent"),
    "GetAccessHistory": Allow.of(patient=OWN_OR_GUARDIAN, practitioner=OWN_OR_GUARDIAN, service=ANY,
                                 note="services name the patient"),
    "VerifyAuditChain": Allow.of(service=ANY, operator=ANY, auditor=ANY, note="counts and hashes only"),
    "StreamEvents": Allow.of(service=ANY, operator=ANY),
    "StreamEventBatches": Allow.of(service=ANY, operator=ANY),
    "ExportFhirBundle": Allow.of(patient=OWN_PATIENT, service=ANY, operator=ANY),
    "GetEventProof": Allow.of(patient=OWN_EVENT, service=ANY, operator=ANY, auditor=ANY,
                              note="hashes only; another patient's event is NOT_FOUND"),
    "ListNotifications": Allow.of(patient=OWN_PATIENT, service=ANY),
    "ListReviewItems": Allow.of(service=ANY, operator=ANY, note="the operator is the privacy officer"),
    "ResolveReviewItem": Allow.of(service=ANY, operator=ANY),
})


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """AuditService over an :class:`AuditStore`: proto <-> domain (see the module docstring)."""

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
        """anchorer and checkpoints (optional) let VerifyAuditChain check the ledger; directory answers
        guardians' delegations and recipients' names."""
        self._auth = authenticator
        self._tail = EventTail(store, stream_poll_seconds)
        self._trail = AuditTrail(store, clock, max_clock_skew_ms, on_append=self._tail.appended)
        self._accounting = Accounting(store, self._trail.now_ms, directory)
        self._reviews = ReviewQueue(store, self._trail)
        self._verification = TrailVerification(store, self._trail.now_ms, anchorer, checkpoints,
                                               anchor_deadline_seconds)

    def report_own(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        """Append one of the audit service's own events (checkpoints, anchoring alerts)."""
        return self._trail.append(event)

    def close(self) -> None:
        """End following streams (server shutdown)."""
        self._tail.close()

    def stored_event(self, sequence: int) -> audit_pb2.StoredAuditEvent | None:
        """The stored event with this sequence number, or None (the OWN_EVENT scope asks)."""
        return self._verification.stored_event(sequence)

    def accounting_patient(self, caller: Caller, patient_id: str) -> str:
        """The patient whose accounting caller may read (the OWN_OR_GUARDIAN scope asks)."""
        return self._accounting.accounting_patient(caller, patient_id)

    # --- recording -----------------------------------------------------------------------------

    def RecordEvent(
        self, request: audit_pb2.RecordEventRequest, context: grpc.ServicerContext
    ) -> audit_pb2.AuditReceipt:
        if not request.HasField("event"):
            raise InvalidArgument("event", "required")
        sequence, event_hash = self._trail.record(request.event)
        return audit_pb2.AuditReceipt(sequence=sequence, event_hash=event_hash)

    def RecordEvents(
        self, request: audit_pb2.RecordEventsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.RecordEventsResponse:
        if not request.events:
            raise InvalidArgument("events", "required: at least one event")
        if len(request.events) > MAX_BATCH_EVENTS:
            raise InvalidArgument("events", f"at most {MAX_BATCH_EVENTS} events per request")
        caller = caller_of(context)
        outcomes = self._trail.record_many(
            request.events, [_refusal_of_foreign_event(caller, e) for e in request.events])
        return audit_pb2.RecordEventsResponse(results=[
            audit_pb2.RecordEventResult(refusal=audit_pb2.EventRefusal(code=o.code.value[0], message=o.message))
            if isinstance(o, CareChainError) else
            audit_pb2.RecordEventResult(receipt=audit_pb2.AuditReceipt(sequence=o[0], event_hash=o[1]))
            for o in outcomes
        ])

    # --- patients ------------------------------------------------------------------------------

    def GetAccessHistory(
        self, request: audit_pb2.GetAccessHistoryRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetAccessHistoryResponse:
        return self._accounting.access_history(caller_of(context), request.patient_id, request.since_ms,
                                               request.until_ms, request.page_size, request.page_token)

    def ExportFhirBundle(
        self, request: audit_pb2.ExportFhirBundleRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ExportFhirBundleResponse:
        return self._accounting.fhir_export(caller_of(context), request.patient_id, request.since_ms,
                                            request.until_ms, request.page_size, request.page_token)

    def ListNotifications(
        self, request: audit_pb2.ListNotificationsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListNotificationsResponse:
        return self._accounting.notifications(caller_of(context), request.patient_id, request.page_size,
                                              request.page_token)

    def GetEventProof(
        self, request: audit_pb2.GetEventProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.EventProof:
        return self._verification.event_proof(request.sequence)

    # --- SREs and privacy officers -------------------------------------------------------------

    def VerifyAuditChain(
        self, request: audit_pb2.VerifyAuditChainRequest, context: grpc.ServicerContext
    ) -> audit_pb2.VerifyAuditChainResponse:
        return self._verification.verify(
            request.check_ledger, request.from_checkpoint if request.HasField("from_checkpoint") else None)

    @limited_stream  # a tail holds a worker: per-caller and per-server caps (runtime.streams)
    def StreamEvents(
        self, request: audit_pb2.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.StoredAuditEvent]:
        yield from self._tail.stream(request, context)

    @limited_stream  # counted with StreamEvents: the same caps
    def StreamEventBatches(
        self, request: audit_pb2.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.StoredAuditEventBatch | Serialized]:
        for batch in self._tail.stream_batches(request, context):
            yield Serialized(self._tail.encoded_batch(batch))  # each event encoded once for every tail

    def ListReviewItems(
        self, request: audit_pb2.ListReviewItemsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListReviewItemsResponse:
        return self._reviews.items(request.status, request.page_size, request.page_token)

    def ResolveReviewItem(
        self, request: audit_pb2.ResolveReviewItemRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ReviewItem:
        return self._reviews.resolve(caller_of(context), request.item_id, request.note)


def register_audit(servicer: AuditServicer) -> Register:
    """A register function adding servicer to a server."""

    return register_servicer(audit_pb2_grpc.add_AuditServiceServicer_to_server, servicer, ACCESS, servicer._auth)


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
    # Resumes from its signed snapshot: a restart reads only the lifecycle transactions since.
    principal_status = PrincipalStatus.following(
        access.ledger, snapshots=StatusSnapshots.in_data_dir(settings.data_dir, access.signer)).start()
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
    configure_logging("audit", settings.log_level)  # what build logs (e.g. a resume) is kept
    register, closers = build(settings)
    run_service("audit", settings, register, closers)
