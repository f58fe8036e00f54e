"""The live event tail (StreamEvents): stored events after a cursor, then new ones, in sequence order.

Appends in this process wake following streams at once (:meth:`EventTail.appended`);
events appended by another process (the etcd store with several audit replicas)
are found by polling every :data:`STREAM_POLL_SECONDS`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from carechain.audit.store import AuditStore
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import InvalidArgument

# Events read per store call while streaming; how often a following stream looks for events
# appended by another process (etcd store with several audit replicas).
STREAM_PAGE = 200
STREAM_POLL_SECONDS = 0.5


def matches(request: audit_pb2.StreamEventsRequest, event: audit_pb2.AuditEvent) -> bool:
    """Whether an event passes a StreamEvents request's filters."""
    return (
        (not request.service or event.service == request.service)
        and (not request.outcome or event.outcome == request.outcome)
        and (not request.patient_id or event.patient_id == request.patient_id)
        and (not request.actor_id or event.actor_id == request.actor_id)
        and (not request.alerts_only or event.alert)
    )


class EventTail:
    """Streams a store's events to StreamEvents callers; :meth:`close` ends following streams."""

    def __init__(self, store: AuditStore, poll_seconds: float = STREAM_POLL_SECONDS) -> None:
        self._store = store
        self._poll = poll_seconds
        # Wakes following streams when this process appends (other processes are polled).
        self._appended = threading.Condition()
        self._generation = 0
        self._closed = False

    def appended(self) -> None:
        """Wake following streams: an event was appended in this process."""
        with self._appended:
            self._generation += 1
            self._appended.notify_all()

    def close(self) -> None:
        """End following streams (server shutdown)."""
        with self._appended:
            self._closed = True
            self._appended.notify_all()

    def stream(
        self, request: audit_pb2.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.StoredAuditEvent]:
        """The events after request.after_sequence that pass its filters; follows new ones unless replay_only."""
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
