"""Ledger checkpoints published in the audit trail, outside the ledger's own store.

Whoever holds a quorum of validator keys (one key in the embedded network) can
rewrite the ledger store and re-sign it: the rewritten chain verifies on its
own. The audit trail is an independent store with its own hash chain and
anchors, so the audit service publishes the ledger's history there:

- :meth:`CheckpointRecorder.record_new` (every maintenance round, at most once
  per ``CARECHAIN_CHECKPOINT_INTERVAL_SECONDS``) fetches the ledger's latest
  final checkpoint, verifies its quorum certificate against the *configured*
  validator set (``CARECHAIN_VALIDATORS`` / ``CARECHAIN_QUORUM``, trust
  directory), checks an RFC 9162 consistency proof from the last checkpoint it
  recorded, and appends an ``AUDIT_ACTION_LEDGER_CHECKPOINT`` event carrying the
  co-signed checkpoint (``ledger_checkpoint``). A checkpoint that does not
  extend the recorded one is appended as a FAILED event (once per distinct
  finding), logged as an alert, and not recorded as the new reference.
- :meth:`CheckpointRecorder.check_all` (``VerifyAuditChain`` with
  ``check_ledger``, ``carechain audit verify --ledger``) checks that the
  ledger's current checkpoint extends *every* checkpoint recorded in the trail
  (one consistency proof from the newest, which extends all older ones): a
  history rewritten after a checkpoint was published fails, naming the audit
  event that holds the checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from carechain.audit.store import AuditStore
from carechain.audit.v1 import audit_pb2
from carechain.client.proofs import LedgerTrust, VerifiedCheckpoint, lags_behind, verify_checkpoint, verify_consistency
from carechain.core.errors import IntegrityError
from carechain.ledger.transactions import encode
from carechain.ledger.v1 import ledger_pb2

log = logging.getLogger("carechain.audit.checkpoints")

_SCAN_PAGE = 1000


def checkpoint_event(checkpoint: ledger_pb2.Checkpoint, verified: VerifiedCheckpoint, now_ms: int,
                     actor_id: str) -> audit_pb2.AuditEvent:
    """The audit event publishing a verified checkpoint."""
    return audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()), time_ms=now_ms, service="audit", actor_id=actor_id,
        action=audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
        reason=f"ledger checkpoint: block {verified.height}, tree size {verified.tree_size}, "
               f"root {verified.root.hex()[:16]}..",
        ledger_checkpoint=encode(checkpoint),
    )


class CheckpointRecorder:
    """Publishes the ledger's checkpoints in the audit trail and checks the ledger against them (module docstring).

    ledger() returns a LedgerService stub; trust() the configured LedgerTrust;
    report(event) appends one of the audit service's own events.
    """

    def __init__(
        self,
        store: AuditStore,
        ledger: Callable[[], Any],
        trust: Callable[[], LedgerTrust],
        report: Callable[[audit_pb2.AuditEvent], object],
        interval_seconds: float = 60.0,
        actor_id: str = "svc-audit",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._trust = trust
        self._report = report
        self._interval = interval_seconds
        self._actor_id = actor_id
        self._clock = clock
        self._lock = threading.Lock()
        self._last: VerifiedCheckpoint | None = None
        self._scanned_to = 0  # events of the trail already scanned for checkpoints
        self._last_recorded_at: float | None = None
        self._last_finding = ""

    def recorded(self) -> list[tuple[int, ledger_pb2.Checkpoint]]:
        """Every checkpoint recorded in the trail, as (audit sequence, checkpoint), oldest first."""
        found = []
        after = 0
        while True:
            page = self._store.events_after(after, _SCAN_PAGE)
            for stored in page:
                checkpoint = _recorded_checkpoint(stored.event)
                if checkpoint is not None:
                    found.append((stored.sequence, checkpoint))
            if len(page) < _SCAN_PAGE:
                return found
            after = page[-1].sequence

    def newest_recorded(self, below: int = 0) -> tuple[int, ledger_pb2.Checkpoint] | None:
        """The newest checkpoint recorded in the trail (before sequence below, 0 = anywhere), as (audit sequence,
        checkpoint): read backwards from the head, so it costs the events recorded since, not the history."""
        high = (below - 1) if below else self._store.head()[0]
        while high > 0:
            low = max(0, high - _SCAN_PAGE)
            for stored in reversed(self._store.events_after(low, high - low)):
                checkpoint = _recorded_checkpoint(stored.event)
                if checkpoint is not None:
                    return stored.sequence, checkpoint
            high = low
        return None

    def _last_recorded(self, trust: LedgerTrust) -> VerifiedCheckpoint | None:
        """The newest recorded checkpoint (scans only events appended since the previous call; after a restart,
        backwards from the head to the newest one)."""
        if self._scanned_to == 0:
            head = self._store.head()[0]
            found = self.newest_recorded()
            if found is not None:
                self._last = verify_checkpoint(found[1], trust)
            self._scanned_to = head
        while True:
            page = self._store.events_after(self._scanned_to, _SCAN_PAGE)
            for stored in page:
                checkpoint = _recorded_checkpoint(stored.event)
                if checkpoint is not None:
                    self._last = verify_checkpoint(checkpoint, trust)
                self._scanned_to = stored.sequence
            if len(page) < _SCAN_PAGE:
                return self._last

    def record_new(self, force: bool = False) -> VerifiedCheckpoint | None:
        """Record the ledger's latest final checkpoint when it is new and the interval has passed.

        Returns the recorded checkpoint (None when nothing was due or new).
        Raises IntegrityError when the ledger's history does not extend the
        recorded checkpoint (after appending a FAILED event for it), Unavailable
        when the ledger is down.
        """
        with self._lock:
            now = self._clock()
            if not force and self._last_recorded_at is not None and now - self._last_recorded_at < self._interval:
                return None
            trust = self._trust()
            last = self._last_recorded(trust)
            raw = self._ledger().GetCheckpoint(ledger_pb2.GetCheckpointRequest())
            current = verify_checkpoint(raw, trust)
            if last is not None and current.tree_size <= last.tree_size:
                if current.tree_size == last.tree_size and current.root == last.root:
                    self._last_recorded_at = now
                    return None
                if _several(trust) and lags_behind(current, last):
                    return None  # answered by a validator that is behind; ask again next round
                self._found_rewrite(last, current, "the ledger's final log is shorter than, or differs from, "
                                                   "the recorded one", now)
            if last is not None:
                proof = self._ledger().GetConsistencyProof(ledger_pb2.GetConsistencyProofRequest(
                    first_size=last.tree_size, second_size=current.tree_size))
                try:
                    verify_consistency(last, current, proof)
                except IntegrityError as exc:
                    self._found_rewrite(last, current, exc.message, now)
            self._report(checkpoint_event(raw, current, int(now * 1000), self._actor_id))
            self._last, self._last_recorded_at, self._last_finding = current, now, ""
            return current

    def _found_rewrite(self, last: VerifiedCheckpoint, current: VerifiedCheckpoint, why: str, now: float) -> None:
        problem = (f"ledger history rewritten: checkpoint of block {current.height} (tree size "
                   f"{current.tree_size}) does not extend the recorded block {last.height} (tree size "
                   f"{last.tree_size}): {why}")
        if problem != self._last_finding:  # one FAILED event per distinct finding, not one per round
            log.error("ALERT: the ledger's history does not extend the checkpoint recorded in the audit trail",
                      extra={"alert": True, "problem": problem})
            self._report(audit_pb2.AuditEvent(
                event_id=str(uuid.uuid4()), time_ms=int(now * 1000), service="audit", actor_id=self._actor_id,
                action=audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT, outcome=audit_pb2.AUDIT_OUTCOME_FAILED,
                reason=problem,
            ))
            self._last_finding = problem
        raise IntegrityError(problem)

    def check_all(self, newest_only: bool = False) -> tuple[int, int, str]:
        """Check that the ledger's current checkpoint extends every recorded one.

        newest_only (an incremental verification): the recorded checkpoints are read backwards from the
        head, only as far as the newest one the answering validator reached (O(new), not a pass over the
        trail), and the count is of the checkpoints read that way.

        Each recorded checkpoint was appended only after a consistency proof
        from the one recorded before it, and "extends" is transitive: so the
        newest recorded checkpoint that the answering validator has reached is
        checked with one consistency proof, and covers every older one. (Newer
        ones that a validator which is behind has not reached yet are skipped.)

        Returns (recorded checkpoints covered, audit sequence of the
        inconsistent one or 0, problem or "").
        """
        trust = self._trust()
        try:
            current = verify_checkpoint(self._ledger().GetCheckpoint(ledger_pb2.GetCheckpointRequest()), trust)
        except IntegrityError as exc:
            return 0, 0, (f"the ledger's checkpoint does not verify against the configured validators "
                          f"(CARECHAIN_VALIDATORS, CARECHAIN_QUORUM): {exc.message}")
        candidates = self._newest_first() if newest_only else reversed(list(enumerate(self.recorded(), start=1)))
        for position, (sequence, raw) in candidates:
            try:
                recorded = verify_checkpoint(raw, trust)
            except IntegrityError as exc:
                return 0, sequence, f"checkpoint recorded at audit event {sequence}: {exc.message}"
            try:
                if recorded.tree_size > current.tree_size:
                    if _several(trust) and lags_behind(current, recorded):
                        continue  # answered by a validator that is behind: check an older one
                    raise IntegrityError(f"the ledger's final log has only {current.tree_size} transactions")
                proof = self._ledger().GetConsistencyProof(ledger_pb2.GetConsistencyProofRequest(
                    first_size=recorded.tree_size, second_size=current.tree_size))
                verify_consistency(recorded, current, proof)
            except IntegrityError as exc:
                return 0, sequence, (
                    f"ledger history rewritten: the ledger's checkpoint (block {current.height}, tree size "
                    f"{current.tree_size}) does not extend the checkpoint recorded at audit event {sequence} "
                    f"(block {recorded.height}, tree size {recorded.tree_size}): {exc.message}")
            return position, 0, ""
        return 0, 0, ""

    def _newest_first(self) -> Iterator[tuple[int, tuple[int, ledger_pb2.Checkpoint]]]:
        """(1, newest), (2, the one before), ... read backwards from the head."""
        below, count = 0, 0
        while (found := self.newest_recorded(below)) is not None:
            count += 1
            yield count, found
            below = found[0]


def _several(trust: LedgerTrust) -> bool:
    """Several validators: the one answering may be behind the others."""
    return len(trust.validators.members) > 1


def _recorded_checkpoint(event: audit_pb2.AuditEvent) -> ledger_pb2.Checkpoint | None:
    if event.action != audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT or event.service != "audit" or \
            event.outcome != audit_pb2.AUDIT_OUTCOME_SUCCESS or not event.ledger_checkpoint:
        return None
    try:
        return ledger_pb2.Checkpoint.FromString(event.ledger_checkpoint)
    except Exception:  # noqa: BLE001 - a recorded event that does not decode is reported by check_all's caller
        return ledger_pb2.Checkpoint()
