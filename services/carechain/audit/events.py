"""Reporting audit events from any service.

Every service reports what it did through :class:`AuditReporter`, which fills
the event id (for idempotent retries), time, service name and trace id and
calls ``AuditService.RecordEvent``. Failures propagate: a caller that must not
act without an audit trail (reads, key releases) fails closed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from carechain.audit.v1 import audit_pb2
from carechain.core.errors import Unavailable
from carechain.core.telemetry import current_trace_id
from carechain.runtime import metrics


class AuditReporter:
    """Sends audit events for one service through an AuditService stub (ideally a PeerStub)."""

    def __init__(
        self, audit_stub: Any, service_name: str, attempts: int = 2, clock: Callable[[], float] = time.time
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._stub = audit_stub
        self.service_name = service_name
        self._attempts = attempts
        self._clock = clock

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
    ) -> audit_pb2.AuditReceipt:
        """Record one event durably and return its receipt.

        action is an ``AuditAction``, outcome an ``AuditOutcome``, purpose a
        ``PurposeOfUse``. resource_type and categories (``SensitivityCategory``
        values) describe the record for the patient's accounting of
        disclosures; alert raises a patient notification and a privacy-officer
        review item (break-glass); consent_id names the consent a grant or
        revocation event is about. Identifiers only, never PHI. event_id (a UUID)
        makes the event idempotent across callers: events derived from the
        ledger use one derived from the log index, so they are stored once. A call that finds the
        audit service down is retried with the same event id (the store is
        idempotent on it); then Unavailable propagates.
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
        )
        request = audit_pb2.RecordEventRequest(event=event)
        for attempt in range(1, self._attempts + 1):
            try:
                return self._stub.RecordEvent(request)
            except Unavailable:
                if attempt == self._attempts:
                    metrics.AUDIT_FAIL_CLOSED.add(1, {"service": self.service_name})
                    raise
        raise AssertionError("unreachable")
