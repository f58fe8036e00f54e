"""The privacy officer's break-glass review queue.

An alert event opens an item (in the store, in the same transaction as the
event: :mod:`carechain.audit.alerts`). The queue is for services and the
operator, who acts as the network's privacy officer; resolving an item is
itself audited first (``AUDIT_ACTION_REVIEW``, reported by ``audit``): if
that event cannot be recorded, nothing is resolved.
"""

from __future__ import annotations

import uuid

from carechain.audit import paging
from carechain.audit.store import AuditStore
from carechain.audit.trail import AuditTrail
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import FailedPrecondition, InvalidArgument, NotFound
from carechain.runtime.auth import Caller

#: The longest resolution note.
MAX_NOTE_CHARS = 2000


class ReviewQueue:
    """Lists and resolves review items; resolutions are appended through trail."""

    def __init__(self, store: AuditStore, trail: AuditTrail) -> None:
        self._store = store
        self._trail = trail

    def items(self, status: int, page_size: int = 0, page_token: str = "") -> audit_pb2.ListReviewItemsResponse:
        """One page of the review items with this ReviewStatus (0 = any), oldest first."""
        if status not in audit_pb2.ReviewStatus.values():
            raise InvalidArgument("status", "must be a known ReviewStatus")
        query = ("reviews", status)
        start = paging.position(page_token, query)
        limit = paging.page_size(page_size)
        items = self._store.review_items(status, limit + 1, 0 if start is None else start.get("s", 0))
        token = ""
        if len(items) > limit:
            items = items[:limit]
            token = paging.next_token(query, s=items[-1].event.sequence)
        return audit_pb2.ListReviewItemsResponse(items=items, next_page_token=token)

    def resolve(self, caller: Caller, item_id: str, note: str) -> audit_pb2.ReviewItem:
        """Close an open item with caller's note, after auditing the resolution."""
        if not item_id:
            raise InvalidArgument("item_id", "required")
        if not note.strip():
            raise InvalidArgument("note", "required: what the review concluded")
        if len(note) > MAX_NOTE_CHARS:
            raise InvalidArgument("note", f"at most {MAX_NOTE_CHARS} characters")
        item = self._store.review_item(item_id)
        if item is None:
            raise NotFound(f"review item {item_id} does not exist")
        if item.status != audit_pb2.REVIEW_STATUS_OPEN:
            raise FailedPrecondition(f"review item {item_id} is already resolved")
        reviewed = item.event.event
        # The resolution is audited first: if it cannot be recorded, nothing is resolved.
        now = self._trail.now_ms()
        resolution = audit_pb2.AuditEvent(
            event_id=str(uuid.uuid4()), time_ms=now, service="audit", actor_id=caller.principal_id,
            organization_id=caller.organization_id, patient_id=reviewed.patient_id, record_id=reviewed.record_id,
            resource_type=reviewed.resource_type, categories=reviewed.categories,
            action=audit_pb2.AUDIT_ACTION_REVIEW, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
            reason=f"resolved review item {item.item_id} (alert event {item.event.sequence})",
        )
        sequence, _ = self._trail.append(resolution)
        return self._store.resolve_review_item(item.item_id, caller.principal_id, note, now, sequence)
