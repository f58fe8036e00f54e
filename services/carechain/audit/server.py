"""The audit service: a durable, hash-chained audit trail and patients' access history.

RecordEvent is for services only and returns once the event is durable; if
the store cannot write, the call fails with UNAVAILABLE so the reporting
service fails closed. Patients read their own access history; services may
read any patient's. The chain can be re-verified by services and the operator.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc

from carechain.audit.etcd_store import EtcdAuditStore
from carechain.audit.store import AuditStore, SQLiteAuditStore
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.auth import Authenticator
from carechain.common.v1 import common_pb2
from carechain.config import AuditSettings
from carechain.errors import CareChainError, InvalidArgument, PermissionDenied, Unavailable
from carechain.etcd import EtcdClient
from carechain.network import TrustBundle, audience, service_principal_id
from carechain.server import Register, run_service

Kind = common_pb2.PrincipalKind


def validate_event(event: audit_pb2.AuditEvent, now_ms: int) -> audit_pb2.AuditEvent:
    """A checked copy of event, with time_ms filled in when 0; InvalidArgument naming the field."""
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
    if not event.service:
        raise InvalidArgument("event.service", "required")
    if not event.actor_id:
        raise InvalidArgument("event.actor_id", "required")
    if event.time_ms < 0:
        raise InvalidArgument("event.time_ms", "must not be negative")
    checked = audit_pb2.AuditEvent()
    checked.CopyFrom(event)
    if checked.time_ms == 0:
        checked.time_ms = now_ms
    return checked


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """AuditService over an :class:`AuditStore`."""

    def __init__(
        self, authenticator: Authenticator, store: AuditStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._auth = authenticator
        self._store = store
        self._clock = clock

    def RecordEvent(
        self, request: audit_pb2.RecordEventRequest, context: grpc.ServicerContext
    ) -> audit_pb2.AuditReceipt:
        caller = self._auth.require_service(context)
        if not request.HasField("event"):
            raise InvalidArgument("event", "required")
        event = validate_event(request.event, int(self._clock() * 1000))
        # A service reports its own events only, so the trail says truthfully who reported what.
        if caller.principal_id != service_principal_id(event.service):
            raise PermissionDenied(f"event.service must be the calling service ({caller.principal_id})")
        try:
            sequence, event_hash = self._store.append(event)
        except CareChainError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure means "not durable": fail closed
            raise Unavailable("audit store", f"cannot write event: {type(exc).__name__}") from exc
        return audit_pb2.AuditReceipt(sequence=sequence, event_hash=event_hash)

    def GetAccessHistory(
        self, request: audit_pb2.GetAccessHistoryRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetAccessHistoryResponse:
        caller = self._auth.require(context, Kind.PRINCIPAL_KIND_PATIENT, Kind.PRINCIPAL_KIND_SERVICE)
        patient_id = request.patient_id
        if caller.kind == Kind.PRINCIPAL_KIND_PATIENT:
            patient_id = patient_id or caller.principal_id
            if patient_id != caller.principal_id:
                raise PermissionDenied("a patient may only read its own access history")
        elif not patient_id:
            raise InvalidArgument("patient_id", "required")
        if request.since_ms < 0:
            raise InvalidArgument("since_ms", "must not be negative")
        if request.until_ms < 0:
            raise InvalidArgument("until_ms", "must not be negative")
        if request.since_ms and request.until_ms and request.until_ms <= request.since_ms:
            raise InvalidArgument("until_ms", "must be after since_ms")
        events = self._store.history(patient_id, request.since_ms, request.until_ms)
        return audit_pb2.GetAccessHistoryResponse(events=events)

    def VerifyAuditChain(
        self, request: audit_pb2.VerifyAuditChainRequest, context: grpc.ServicerContext
    ) -> audit_pb2.VerifyAuditChainResponse:
        self._auth.require(context, Kind.PRINCIPAL_KIND_SERVICE, Kind.PRINCIPAL_KIND_OPERATOR)
        result = self._store.verify()
        return audit_pb2.VerifyAuditChainResponse(
            ok=result.ok,
            events_checked=result.events_checked,
            first_bad_sequence=result.first_bad_sequence,
            problem=result.problem,
        )


def register_audit(servicer: AuditServicer) -> Register:
    """A register function adding servicer to a server."""

    def register(server: grpc.Server) -> list[str]:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)
        return [audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name]

    return register


def build(settings: AuditSettings) -> tuple[Register, list[Callable[[], None]]]:
    """The audit service's register function and closers, from settings."""
    trust = TrustBundle.load(settings.trust_dir)
    store = build_store(settings)
    servicer = AuditServicer(Authenticator(trust, audience("audit")), store)
    return register_audit(servicer), [store.close]


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
