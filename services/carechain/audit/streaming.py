"""The live event tail (StreamEvents): stored events after a cursor, then new ones, in sequence order.

Appends in this process are published to :class:`EventTail` (:meth:`EventTail.appended`):
the events go into a shared window of the most recent ones (:data:`RECENT_EVENTS`), and
only the following streams with something new to send are woken: each waiting stream
has its own wake-up, and the appender checks the new events against each distinct filter
once (64 tails with the same filter: one check per event, not 64 thread wake-ups). A tail
whose filter no new event passes stays asleep, so open tails cost the append path almost
nothing while idle; a cancelled stream is woken by its call's callback, not by a poll.
A following stream reads new events from the window, not from the store, so 64 open
tails cost the store no reads at all; a stream whose cursor is older than the window (a
replay, a slow consumer, a filtered tail that slept through more than the window) reads
the store. Events appended by another process (the etcd store with several audit
replicas) are found by polling every :data:`STREAM_POLL_SECONDS` (only for a store with
``shared_writers``; a quiet tail on SQLite reads nothing), and fill the window's gap from
the store when this process appends after them.
"""

from __future__ import annotations

import threading
import time
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
#: How long a woken StreamEventBatches stream lets more events arrive before it reads and sends them as one
#: message (a tail sees events at most this much later; 64 tails of a busy trail send several times fewer).
BATCH_GATHER_SECONDS = 0.1


def matches(request: audit_pb2.StreamEventsRequest, event: audit_pb2.AuditEvent) -> bool:
    """Whether an event passes a StreamEvents request's filters."""
    return (
        (not request.service or event.service == request.service)
        and (not request.outcome or event.outcome == request.outcome)
        and (not request.patient_id or event.patient_id == request.patient_id)
        and (not request.actor_id or event.actor_id == request.actor_id)
        and (not request.alerts_only or event.alert)
    )


_Filter = tuple[str, int, str, str, bool]


def _filter_of(request: audit_pb2.StreamEventsRequest) -> _Filter:
    return (request.service, request.outcome, request.patient_id, request.actor_id, request.alerts_only)


class _Follower:
    """One following stream waiting for events its filter passes (woken by the appender, close or cancel)."""

    __slots__ = ("request", "filter", "wake")

    def __init__(self, request: audit_pb2.StreamEventsRequest) -> None:
        self.request = request
        self.filter = _filter_of(request)
        self.wake = threading.Event()


# How long a following stream on an unshared store sleeps between checks that its call is still active
# (a cancelled call wakes it at once through its callback; this only bounds a missed callback).
IDLE_CHECK_SECONDS = 30.0


class EventTail:
    """Streams a store's events to StreamEvents callers; :meth:`close` ends following streams."""

    def __init__(self, store: AuditStore, poll_seconds: float = STREAM_POLL_SECONDS) -> None:
        self._store = store
        self._poll = poll_seconds
        # Whether other processes append to the same trail (etcd): only then does a quiet tail poll the store.
        self._shared = bool(getattr(store, "shared_writers", True))
        # Guards the window, the tip and the followers.
        self._lock = threading.Lock()
        self._followers: set[_Follower] = set()
        self._closed = False
        # The window of recent events, contiguous and chained from _tip (sequence, hash) backwards.
        self._recent: list[audit_pb2.StoredAuditEvent] = []
        self._tip: tuple[int, bytes] | None = None  # None: learn it from the store at the first append
        # Sequence -> the event encoded as a one-event StoredAuditEventBatch, for window events sent in batches:
        # encoded once however many tails send it (concatenated encodings are the encoding of the batch).
        self._encoded: dict[int, bytes] = {}

    def appended(self, stored: Sequence[audit_pb2.StoredAuditEvent] = ()) -> None:
        """Publish events this process appended (in commit order) and wake the following streams they concern.

        An event joins the window only if it chains to the window's tip (so a retried event id, stored
        before with other content, never shows its retry's content); a gap (another process appended
        meanwhile) is filled from the store first. A follower is woken when a published event passes its
        filter, or always when the window could not be kept (it then reads the store).
        """
        with self._lock:
            published: list[audit_pb2.StoredAuditEvent] | None = []
            try:
                for entry in stored:
                    tip_sequence, tip_hash = self._tip if self._tip is not None else (entry.sequence - 1, b"")
                    if entry.sequence <= tip_sequence:
                        continue  # a retry of an event published already
                    if entry.sequence == tip_sequence + 1 and \
                            chain_hash(tip_hash, encode_event(entry.event)) == entry.event_hash:
                        published.append(self._keep([entry])[-1])
                        continue
                    # A gap, the first append, or content that is not what was stored: the store's own copy.
                    published.extend(self._keep(self._store.events_after(tip_sequence,
                                                                         entry.sequence - tip_sequence)))
            except Exception:  # noqa: BLE001 - the events are durable; streams then read them from the store
                self._recent.clear()
                self._encoded.clear()
                published = None
            self._wake(published)

    def _wake(self, published: list[audit_pb2.StoredAuditEvent] | None) -> None:
        """Wake the followers a published event concerns (every follower when published is None); lock held."""
        concerned: dict[_Filter, bool] = {}  # one filter check per distinct filter, not per follower
        for follower in self._followers:
            if published is None:
                follower.wake.set()
                continue
            hit = concerned.get(follower.filter)
            if hit is None:
                hit = concerned[follower.filter] = any(matches(follower.request, e.event) for e in published)
            if hit:
                follower.wake.set()

    def _keep(self, entries: Sequence[audit_pb2.StoredAuditEvent]) -> list[audit_pb2.StoredAuditEvent]:
        for entry in entries:
            if self._tip is None or entry.sequence != self._tip[0] + 1:
                self._recent.clear()  # not contiguous: start a new window
                self._encoded.clear()
            self._recent.append(entry)
            self._tip = (entry.sequence, entry.event_hash)
        if len(self._recent) > 2 * RECENT_EVENTS:
            del self._recent[:-RECENT_EVENTS]
            first = self._recent[0].sequence
            self._encoded = {seq: data for seq, data in self._encoded.items() if seq >= first}
        return list(entries)

    def encoded_batch(self, batch: Sequence[audit_pb2.StoredAuditEvent]) -> bytes:
        """batch encoded as a StoredAuditEventBatch, each window event encoded once for every stream."""
        parts = []
        with self._lock:
            first = self._recent[0].sequence if self._recent else None
            tip = self._recent[-1].sequence if self._recent else None
            for stored in batch:
                data = self._encoded.get(stored.sequence)
                if data is None:
                    data = audit_pb2.StoredAuditEventBatch(events=[stored]).SerializeToString()
                    # Only a window event's encoding is kept: it is the same object every stream sends.
                    if first is not None and first <= stored.sequence <= tip and \
                            self._recent[stored.sequence - first] is stored:  # type: ignore[operator]
                        self._encoded[stored.sequence] = data
                parts.append(data)
        return b"".join(parts)

    def _recent_after(self, cursor: int, limit: int) -> list[audit_pb2.StoredAuditEvent] | None:
        """Up to limit events after cursor from the window, or None when the window does not reach back there."""
        with self._lock:
            if not self._recent or not self._recent[0].sequence <= cursor + 1 <= self._recent[-1].sequence + 1:
                return None
            start = cursor + 1 - self._recent[0].sequence
            return self._recent[start:start + limit]

    def close(self) -> None:
        """End following streams (server shutdown)."""
        with self._lock:
            self._closed = True
            for follower in self._followers:
                follower.wake.set()

    def stream(
        self, request: audit_pb2.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.StoredAuditEvent]:
        """The events after request.after_sequence that pass its filters; follows new ones unless replay_only."""
        for batch in self.stream_batches(request, context, gather=0.0):  # one message per event anyway
            yield from batch

    def stream_batches(
        self, request: audit_pb2.StreamEventsRequest, context: grpc.ServicerContext,
        gather: float = BATCH_GATHER_SECONDS,
    ) -> Iterator[list[audit_pb2.StoredAuditEvent]]:
        """What :meth:`stream` yields, as the non-empty lists of events found at once (StreamEventBatches).

        gather: once woken by an append, wait this long for more before reading (0: read at once).
        """
        if request.outcome not in audit_pb2.AuditOutcome.values():
            raise InvalidArgument("outcome", "must be a known AuditOutcome")
        follower = _Follower(request)
        with self._lock:
            if self._closed:
                return
            self._followers.add(follower)
        # A cancelled or finished call wakes its stream at once (it then sees is_active() False and ends).
        context.add_callback(follower.wake.set)
        try:
            yield from self._follow(request, context, follower, gather)
        finally:
            with self._lock:
                self._followers.discard(follower)

    def _follow(self, request: audit_pb2.StreamEventsRequest, context: grpc.ServicerContext,
                follower: _Follower, gather: float) -> Iterator[list[audit_pb2.StoredAuditEvent]]:
        cursor = request.after_sequence
        read_store = True  # the replay; then only when the window does not reach back, or to poll a shared store
        woken = False  # by an append in this process (the window has it), not by the poll timeout
        wait = self._poll if self._shared else IDLE_CHECK_SECONDS
        while context.is_active():
            # Cleared before reading: an append after this read sets it again, so no event is missed.
            follower.wake.clear()
            page = self._recent_after(cursor, STREAM_PAGE) if woken else None
            if page is None:
                page = self._store.events_after(cursor, STREAM_PAGE) if read_store or woken or self._shared else []
            if page:
                cursor = page[-1].sequence
                batch = [stored for stored in page if matches(request, stored.event)]
                if batch:
                    yield batch
            if len(page) == STREAM_PAGE:
                continue
            read_store = False
            if request.replay_only:
                return
            if self._closed:
                return
            woken = follower.wake.wait(wait)
            if woken and gather > 0 and not self._closed:
                time.sleep(gather)  # let the events of the next few appends join this message
            if self._closed:
                return
