"""The live event tail (StreamEvents): stored events after a cursor, then new ones, in sequence order.

Appends in this process are published to :class:`EventTail` (:meth:`EventTail.appended`):
the events go into a shared window of the most recent ones (:data:`RECENT_EVENTS`) and
following streams are woken with one notify. A following stream reads new events from
that window, not from the store, so 64 open tails cost the append path one notify and
the store no reads at all; a stream whose cursor is older than the window (a replay, a
slow consumer) reads the store. Events appended by another process (the etcd store with
several audit replicas) are found by polling every :data:`STREAM_POLL_SECONDS` (only
for a store with ``shared_writers``; a quiet tail on SQLite reads nothing), and fill the
window's gap from the store when this process appends after them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import grpc

from carechain.audit.hashchain import chain_hash, encode_event
from carechain.audit.store import AuditStore
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import InvalidArgument

# Events read per store call while streaming; how often a following stream looks for events
# appended by another process (etcd store with several audit replicas).
STREAM_PAGE = 200
STREAM_POLL_SECONDS = 0.5
#: Recent events kept in memory for following streams.
RECENT_EVENTS = 4096


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
        # Whether other processes append to the same trail (etcd): only then does a quiet tail poll the store.
        self._shared = bool(getattr(store, "shared_writers", True))
        # Wakes following streams when this process appends (other processes are polled).
        self._appended = threading.Condition()
        self._generation = 0
        self._closed = False
        # The window of recent events, contiguous and chained from _tip (sequence, hash) backwards.
        self._recent: list[audit_pb2.StoredAuditEvent] = []
        self._tip: tuple[int, bytes] | None = None  # None: learn it from the store at the first append

    def appended(self, stored: Sequence[audit_pb2.StoredAuditEvent] = ()) -> None:
        """Publish events this process appended (in commit order) and wake following streams with one notify.

        An event joins the window only if it chains to the window's tip (so a retried event id, stored
        before with other content, never shows its retry's content); a gap (another process appended
        meanwhile) is filled from the store first.
        """
        with self._appended:
            try:
                for entry in stored:
                    tip_sequence, tip_hash = self._tip if self._tip is not None else (entry.sequence - 1, b"")
                    if entry.sequence <= tip_sequence:
                        continue  # a retry of an event published already
                    if entry.sequence == tip_sequence + 1 and \
                            chain_hash(tip_hash, encode_event(entry.event)) == entry.event_hash:
                        self._keep([entry])
                        continue
                    # A gap, the first append, or content that is not what was stored: the store's own copy.
                    self._keep(self._store.events_after(tip_sequence, entry.sequence - tip_sequence))
            except Exception:  # noqa: BLE001 - the events are durable; streams then read them from the store
                self._recent.clear()
            self._generation += 1
            self._appended.notify_all()

    def _keep(self, entries: Sequence[audit_pb2.StoredAuditEvent]) -> None:
        for entry in entries:
            if self._tip is None or entry.sequence != self._tip[0] + 1:
                self._recent.clear()  # not contiguous: start a new window
            self._recent.append(entry)
            self._tip = (entry.sequence, entry.event_hash)
        if len(self._recent) > 2 * RECENT_EVENTS:
            del self._recent[:-RECENT_EVENTS]

    def _recent_after(self, cursor: int, limit: int) -> list[audit_pb2.StoredAuditEvent] | None:
        """Up to limit events after cursor from the window, or None when the window does not reach back there."""
        with self._appended:
            if not self._recent or not self._recent[0].sequence <= cursor + 1 <= self._recent[-1].sequence + 1:
                return None
            start = cursor + 1 - self._recent[0].sequence
            return self._recent[start:start + limit]

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
        read_store = True  # the replay; then only when the window does not reach back, or to poll a shared store
        woken = False  # by an append in this process (the window has it), not by the poll timeout
        while context.is_active():
            with self._appended:
                generation = self._generation
            page = self._recent_after(cursor, STREAM_PAGE) if woken else None
            if page is None:
                page = self._store.events_after(cursor, STREAM_PAGE) if read_store or woken or self._shared else []
            for stored in page:
                cursor = stored.sequence
                if matches(request, stored.event):
                    yield stored
            if len(page) == STREAM_PAGE:
                continue
            read_store = False
            if request.replay_only:
                return
            with self._appended:
                if self._closed:
                    return
                woken = self._appended.wait_for(lambda g=generation: self._generation != g or self._closed,
                                                self._poll)
