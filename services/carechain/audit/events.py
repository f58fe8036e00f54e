"""Reporting audit events from any service.

Every service reports what it did through :class:`AuditReporter`, which fills
the event id (for idempotent retries), time, service name and trace id and
sends it to the audit service: concurrent report() calls share one
``RecordEvents`` request and one store transaction (group commit, through
:class:`carechain.runtime.batching.MicroBatcher`); each call still returns only
its own receipt, once its event is durable; a lone call is one ``RecordEvent``. Failures propagate: a caller that
must not act without an audit trail (reads, key releases) fails closed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from carechain.audit.v1 import audit_pb2
from carechain.core.errors import CareChainError, Unavailable
from carechain.core.telemetry import current_trace_id
from carechain.runtime import metrics
from carechain.runtime.batching import MicroBatcher

#: Most events one RecordEvents request of a reporter carries.
MAX_REPORT_BATCH = 128


class AuditRefused(CareChainError):
    """The audit service refused one reported event (its status code and message, as RecordEvent answers)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]


def _status_code(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


class AuditReporter:
    """Sends audit events for one service through an AuditService stub (ideally a PeerStub), group-committed."""

    def __init__(
        self, audit_stub: Any, service_name: str, attempts: int = 2, clock: Callable[[], float] = time.time
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._stub = audit_stub
        self.service_name = service_name
        self._attempts = attempts
        self._clock = clock
        # Natural batching: events reported while a request is in flight go together in the next one.
        self._batcher: MicroBatcher[audit_pb2.AuditEvent, audit_pb2.AuditReceipt] = MicroBatcher(
            "audit_report", self._send, max_batch=MAX_REPORT_BATCH, max_in_flight=2)

    def report(
        self,
        action: int,
        outcome: int,
        *,
        actor_id: str,
        organization_id: str = "",
        patient_id: str = "",
        record_id: str = "",
        purpose: int = 0,
        reason: str = "",
        resource_type: str = "",
        categories: Iterable[int] = (),
        alert: bool = False,
        event_id: str = "",
        consent_id: str = "",
        record_version: int = 0,
    ) -> audit_pb2.AuditReceipt:
        """Record one event durably and return its receipt.

        action is an ``AuditAction``, outcome an ``AuditOutcome``, purpose a
        ``PurposeOfUse``. resource_type and categories (``SensitivityCategory``
        values) describe the record for the patient's accounting of
        disclosures; alert raises a patient notification and a privacy-officer
        review item (break-glass); consent_id names the consent a grant or
        revocation event is about; record_version the version an update's write events are about (0: the
        first). Identifiers only, never PHI. event_id (a UUID)
        makes the event idempotent across callers: events derived from the
        ledger use one derived from the log index, so they are stored once. A call that finds the
        audit service down is retried with the same event id (the store is
        idempotent on it); then Unavailable propagates. A refusal of this event
        sent in a batch (e.g. INVALID_ARGUMENT naming the field) raises
        :class:`AuditRefused` with RecordEvent's status (alone: that RpcError).
        Concurrent calls share one RecordEvents request (group commit).
        """
        event = audit_pb2.AuditEvent(
            event_id=event_id or str(uuid.uuid4()),
            time_ms=int(self._clock() * 1000),
            service=self.service_name,
            actor_id=actor_id,
            organization_id=organization_id,
            patient_id=patient_id,
            record_id=record_id,
            action=action,  # type: ignore[arg-type]
            purpose=purpose,  # type: ignore[arg-type]
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            trace_id=current_trace_id(),
            alert=alert,
            resource_type=resource_type,
            categories=list(categories),  # type: ignore[arg-type]
            consent_id=consent_id,
            record_version=record_version,
        )
        return self._batcher.submit(event)

    def _send(self, events: list[audit_pb2.AuditEvent]) -> list[audit_pb2.AuditReceipt | BaseException]:
        """Send a batch: alone, RecordEvent (unchanged); several, one RecordEvents request (group commit).

        Retried with the same event ids while the audit service is down (the store is idempotent on them).
        """
        for attempt in range(1, self._attempts + 1):
            try:
                if len(events) == 1:
                    return [self._stub.RecordEvent(audit_pb2.RecordEventRequest(event=events[0]))]
                response = self._stub.RecordEvents(audit_pb2.RecordEventsRequest(events=events))
                break
            except Unavailable:
                if attempt == self._attempts:
                    metrics.AUDIT_FAIL_CLOSED.add(len(events), {"service": self.service_name})
                    raise
        if len(response.results) != len(events):
            raise Unavailable("audit service", f"answered {len(response.results)} results for {len(events)} events")
        return [
            result.receipt if result.WhichOneof("result") == "receipt"
            else AuditRefused(_status_code(result.refusal.code), result.refusal.message)
            for result in response.results
        ]

    def close(self) -> None:
        """Refuse further reports (shutdown); reports already queued are still sent."""
        self._batcher.close()
