"""What a break-glass (alert) event creates: the patient's notification and the privacy officer's review item.

Both ids are derived from the event id (uuid5), so a retried append creates
nothing twice; the texts carry identifiers only, never PHI. Every store calls
:func:`new_notification` and :func:`new_review_item` in the append of an alert
event, in the same transaction.
"""

from __future__ import annotations

import uuid

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2

# Ids of the notification and review item an alert event creates: uuid5(namespace, kind + event id).
_ALERT_NAMESPACE = uuid.UUID("5d0c6f55-3a8e-4d4e-9a53-2f3c0e7b9a61")
Status = audit_pb2.ReviewStatus


def notification_id(event_id: str) -> str:
    """Id of the notification an alert event creates."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, "notification/" + event_id))


def review_item_id(event_id: str) -> str:
    """Id of the review item an alert event creates."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, "review/" + event_id))


def _purpose_name(purpose: int) -> str:
    return common_pb2.PurposeOfUse.Name(purpose).removeprefix("PURPOSE_OF_USE_") if purpose else "unstated purpose"


def notification_message(event: audit_pb2.AuditEvent) -> str:
    """The patient-facing text of an alert event: who, what, why; identifiers only, no PHI."""
    what = f"your {event.resource_type or 'health'} record {event.record_id}".strip() if event.record_id \
        else "your health data"
    who = event.actor_id + (f" of {event.organization_id}" if event.organization_id else "")
    outcome = audit_pb2.AuditOutcome.Name(event.outcome).removeprefix("AUDIT_OUTCOME_").lower()
    return f"Emergency (break-glass) access to {what} by {who} for {_purpose_name(event.purpose)} ({outcome})."


def new_notification(event: audit_pb2.AuditEvent) -> audit_pb2.Notification:
    """The notification an alert event creates (without the stored event, which readers fill in)."""
    return audit_pb2.Notification(
        notification_id=notification_id(event.event_id), patient_id=event.patient_id, time_ms=event.time_ms,
        message=notification_message(event),
    )


def new_review_item(event: audit_pb2.AuditEvent) -> audit_pb2.ReviewItem:
    """The open review item an alert event creates (without the stored event)."""
    return audit_pb2.ReviewItem(
        item_id=review_item_id(event.event_id), status=Status.REVIEW_STATUS_OPEN, created_ms=event.time_ms
    )

