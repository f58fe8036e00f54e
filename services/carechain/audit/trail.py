"""Appending to the audit trail, fail closed.

- :func:`validate_event` checks a reported event (InvalidArgument naming the
  field) and the reporter's clock: an event time further than
  :data:`MAX_CLOCK_SKEW_MS` from the audit service's own clock is refused, so a
  service cannot backdate or postdate entries of an accounting.
- :class:`AuditTrail` appends to the store and returns only once the event is
  durable; any store failure is UNAVAILABLE, so the reporting service fails
  closed. Concurrent appends, and the events of one RecordEvents request, are
  group-committed: one store transaction (one fsync) for many events. Only
  the audit service itself records ledger checkpoints and anchoring alerts
  (:data:`OWN_ACTIONS`), through :meth:`AuditTrail.append`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence

from carechain.audit.store import AuditStore
from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.core.errors import CareChainError, InvalidArgument, Unavailable
from carechain.runtime import metrics
from carechain.runtime.batching import MicroBatcher

# How far a reporter's event time may be from the audit service's clock (NTP-synchronised hosts
# are within a second; five minutes leaves room for retries without allowing backdating).
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
#: Most events in one RecordEvents request, and in one group commit of concurrent RecordEvent calls.
MAX_BATCH_EVENTS = 500
#: Actions only the audit service itself records.
OWN_ACTIONS = frozenset({audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT, audit_pb2.AUDIT_ACTION_ANCHOR_BATCH})
# The known values of each enum an event carries, as sets once: Enum.values() builds a new list per call.
_ACTIONS = frozenset(audit_pb2.AuditAction.values()) - {audit_pb2.AUDIT_ACTION_UNSPECIFIED}
_OUTCOMES = frozenset(audit_pb2.AuditOutcome.values()) - {audit_pb2.AUDIT_OUTCOME_UNSPECIFIED}
_PURPOSES = frozenset(common_pb2.PurposeOfUse.values())
_CATEGORIES = frozenset(common_pb2.SensitivityCategory.values()) - {common_pb2.SENSITIVITY_CATEGORY_UNSPECIFIED}


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
    if event.action not in _ACTIONS:
        raise InvalidArgument("event.action", "must be a known AuditAction")
    if event.outcome not in _OUTCOMES:
        raise InvalidArgument("event.outcome", "must be a known AuditOutcome")
    if event.purpose not in _PURPOSES:
        raise InvalidArgument("event.purpose", "must be a known PurposeOfUse")
    for category in event.categories:
        if category not in _CATEGORIES:
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


class AuditTrail:
    """The append path of the audit service: reported events and its own, durable on return or UNAVAILABLE.

    Concurrent appends are group-committed: a :class:`MicroBatcher` hands the events of concurrent
    RecordEvent calls to one :meth:`AuditStore.append_batch` (one transaction, one fsync), and
    :meth:`record_many` appends a RecordEvents request's accepted events together. on_append runs after
    every durable batch with its stored events, in commit order (it publishes them to following event
streams: one notify, whatever the number of tails).
    """

    def __init__(
        self,
        store: AuditStore,
        clock: Callable[[], float] = time.time,
        max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS,
        on_append: Callable[[list[audit_pb2.StoredAuditEvent]], None] = lambda stored: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_skew_ms = max_clock_skew_ms
        self._on_append = on_append
        # Commits and their publication to on_append in one order (the tail's window follows the chain).
        self._commit_lock = threading.Lock()
        self._batcher: MicroBatcher[audit_pb2.AuditEvent, tuple[int, bytes]] = MicroBatcher(
            "audit_append", self._append_batch, max_batch=MAX_BATCH_EVENTS, max_in_flight=1)

    def now_ms(self) -> int:
        """The audit service's clock, in milliseconds."""
        return int(self._clock() * 1000)

    def check(self, event: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        """RecordEvent's checks of an event another service reported: the checked copy, or InvalidArgument."""
        if event.ledger_checkpoint or event.action in OWN_ACTIONS:
            # Only the audit service publishes checkpoints and anchoring alerts (verification trusts them).
            raise InvalidArgument("event.action", "ledger checkpoints and anchoring alerts are recorded by the "
                                                  "audit service itself")
        return validate_event(event, self.now_ms(), self._max_skew_ms)

    def record(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        """Check and append an event another service reported; (sequence, event_hash) once durable."""
        return self.append(self.check(event))

    def record_many(
        self, events: Sequence[audit_pb2.AuditEvent], refusals: Sequence[CareChainError | None] = ()
    ) -> list[tuple[int, bytes] | CareChainError]:
        """Check each event as :meth:`record` does and append the accepted ones in one store transaction.

        One entry per event, in order: its receipt once durable, or why it alone was refused (refusals
        given by the caller, e.g. the access check, count as such). A store failure raises Unavailable:
        nothing of the request is acknowledged.
        """
        outcomes: list[tuple[int, bytes] | CareChainError] = []
        accepted: list[audit_pb2.AuditEvent] = []
        for position, event in enumerate(events):
            refusal = refusals[position] if position < len(refusals) else None
            if refusal is None:
                try:
                    accepted.append(self.check(event))
                    outcomes.append((0, b""))  # filled below
                    continue
                except CareChainError as exc:
                    refusal = exc
            outcomes.append(refusal)
        receipts = iter(self._append_batch(accepted) if accepted else [])
        return [next(receipts) if isinstance(outcome, tuple) else outcome for outcome in outcomes]

    def append(self, event: audit_pb2.AuditEvent) -> tuple[int, bytes]:
        """Append an already checked event (or one of the audit service's own); fail closed.

        Concurrent calls share one store transaction (group commit)."""
        return self._batcher.submit(event)

    def _append_batch(self, events: list[audit_pb2.AuditEvent]) -> list[tuple[int, bytes]]:
        with self._commit_lock:
            try:
                receipts = self._store.append_batch(events)
            except CareChainError:
                raise
            except Exception as exc:  # noqa: BLE001 - any store failure means "not durable": fail closed
                raise Unavailable("audit store", f"cannot write event: {type(exc).__name__}") from exc
            metrics.AUDIT_EVENTS_APPENDED.add(len(events))
            published: dict[int, audit_pb2.StoredAuditEvent] = {}
            for event, (sequence, event_hash) in zip(events, receipts, strict=True):
                published.setdefault(sequence, audit_pb2.StoredAuditEvent(event=event, sequence=sequence,
                                                                          event_hash=event_hash))
            self._on_append(sorted(published.values(), key=lambda s: s.sequence))
        return receipts
