"""The reconciler: what crashed record writes left behind, decided from the ledger.

A write (:mod:`carechain.records.gateway`) audits its attempt, then creates a
data key (identity), a blob (storage) and finally commits RegisterRecord on the
ledger, the source of truth. A crash before the commit leaves parts no record
references; a crash after it leaves a record whose commit was never audited.
One pass of :class:`Reconciler`, for everything older than the grace period:

- blobs no valid RegisterRecord references are deleted (storage ``DeleteBlob``,
  which re-checks the blob's age, so a blob written again meanwhile stays);
- temporary upload files are removed (storage ``PruneIncoming``);
- a write attempt whose record is not on the ledger gets its data key deleted
  (identity ``DeleteDataKey``) and is closed with a WRITE/FAILED event;
- a write attempt whose record is on the ledger but has no WRITE/SUCCESS event
  gets one (the commit, derived from the ledger);
- a record tombstoned on the ledger (EraseRecords) whose data keys or blobs are
  still there, because the erasure (:mod:`carechain.records.erasure`) crashed or
  a peer failed after the tombstone, has them destroyed (now, not after the
  grace period: the tombstone is the commit point of an erasure).

A record version is the unit (UpdateRecord writes version 2, 3, ... of a record with their own data key
and blob): write events carry the version (``AuditEvent.record_version``), so an amendment that crashed
loses its own key, never the committed versions'.

Safe while writes continue: candidates are listed before the ledger is read,
and only things older than the grace period are candidates, while a write gives
up unless it reaches the ledger within half of it. Idempotent: the events it
adds carry event ids derived from the record id (the audit store keeps one),
and a closed attempt or a deleted key or blob is not found again. It runs in the
records service (a background thread, and ``Reconcile`` for ``carechain admin
reconcile``) with records' own credentials: storage and identity allow these
calls to records only.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.core.decision_claims import data_key_id
from carechain.identity.v1 import identity_pb2
from carechain.records.erasure import LedgerRecords, deleted, destroy, erasure_parts, read_ledger_records
from carechain.records.v1 import records_pb2
from carechain.storage.v1 import storage_pb2

log = logging.getLogger("carechain.records.reconcile")

Action = audit_pb2.AuditAction
Outcome = audit_pb2.AuditOutcome
ABANDONED_REASON = "write abandoned: not on the ledger after the grace period; its data key and blob were removed"
CONFIRMED_REASON = "write committed: confirmed from the ledger"
# Event ids of the events the reconciler adds: one per record and kind, whoever adds it, however often.
_EVENT_NAMESPACE = uuid.UUID("5d0c8f7e-2b8e-4f6a-9a51-6c0f3e1d2a47")


def reconciler_event_id(record_id: str, outcome: int) -> str:
    """The event id of the closing event the reconciler adds for a record's write attempt.

    record_id names the record version (``data_key_id``: the record id itself for version 1).
    """
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{record_id}|{outcome}"))


@dataclass
class _Attempt:
    """A write attempt on the audit trail and how (if at all) it ended."""

    event: audit_pb2.AuditEvent
    committed_event: bool = False  # a WRITE/SUCCESS event exists
    closed_by_reconciler: bool = False  # the reconciler's FAILED event exists


class Reconciler:
    """Finds and removes (or reports) what crashed writes left behind; see the module docstring."""

    def __init__(self, peers: Any, grace_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._peers = peers
        self._grace_ms = int(grace_seconds * 1000)
        self._clock = clock
        self._audit = AuditReporter(peers.audit, "records")
        self._lock = threading.Lock()  # one pass at a time in this process
        self._shredded: set[str] = set()  # erased records whose parts this process saw destroyed

    def run(self, dry_run: bool = False) -> records_pb2.ReconcileReport:
        """One pass; returns counts (never ids: they would name patients' records)."""
        with self._lock:
            cutoff_ms = int(self._clock() * 1000) - self._grace_ms
            # Candidates first, ledger last: whatever committed before the ledger is read is seen.
            attempts = self._write_attempts(cutoff_ms)
            blobs = self._blobs(cutoff_ms)
            ledger = read_ledger_records(self._peers.ledger)
            referenced = {r.content_sha256 for registrations in ledger.registrations.values() for r in registrations}
            report = records_pb2.ReconcileReport(cutoff_ms=cutoff_ms, ledger_records=len(ledger.registrations),
                                                 dry_run=dry_run)
            for sha256 in blobs:
                if sha256 not in referenced and self._delete_blob(sha256, cutoff_ms, dry_run):
                    report.orphan_blobs += 1
            if not dry_run:
                report.erased_leftovers = self._finish_erasures(ledger)
                report.stale_uploads = self._peers.storage.PruneIncoming(
                    storage_pb2.PruneIncomingRequest(created_before_ms=cutoff_ms)).removed
            versions = {data_key_id(r.record_id, r.version)
                        for registrations in ledger.registrations.values() for r in registrations}
            for version_key, attempt in attempts.items():
                if version_key in versions:
                    if not attempt.committed_event:
                        report.unconfirmed_commits += 1
                        if not dry_run:
                            self._close(attempt.event, Outcome.AUDIT_OUTCOME_SUCCESS, CONFIRMED_REASON)
                elif not attempt.closed_by_reconciler:
                    if self._delete_data_key(attempt.event, dry_run):
                        report.orphan_data_keys += 1
                    report.abandoned_writes += 1
                    if not dry_run:
                        self._close(attempt.event, Outcome.AUDIT_OUTCOME_FAILED, ABANDONED_REASON)
        log.info("reconciled", extra={
            "orphan_blobs": report.orphan_blobs, "orphan_data_keys": report.orphan_data_keys,
            "stale_uploads": report.stale_uploads, "abandoned_writes": report.abandoned_writes,
            "unconfirmed_commits": report.unconfirmed_commits, "erased_leftovers": report.erased_leftovers,
            "dry_run": dry_run})
        return report

    # --- reading ---------------------------------------------------------------------

    def _write_attempts(self, cutoff_ms: int) -> dict[str, _Attempt]:
        """Write attempts older than cutoff_ms, by record version (its data key id), with how each ended."""
        attempts: dict[str, _Attempt] = {}
        ends: list[audit_pb2.AuditEvent] = []
        stream = self._peers.audit.StreamEvents(audit_pb2.StreamEventsRequest(service="records", replay_only=True))
        for stored in stream:
            event = stored.event
            if event.action != Action.AUDIT_ACTION_WRITE or not event.record_id:
                continue
            if event.outcome == Outcome.AUDIT_OUTCOME_ATTEMPTED:
                if event.time_ms < cutoff_ms:
                    attempts[_version_key(event)] = _Attempt(event)
            else:
                ends.append(event)
        for event in ends:
            attempt = attempts.get(_version_key(event))
            if attempt is None:
                continue
            if event.outcome == Outcome.AUDIT_OUTCOME_SUCCESS:
                attempt.committed_event = True
            elif event.event_id == reconciler_event_id(_version_key(event), Outcome.AUDIT_OUTCOME_FAILED):
                attempt.closed_by_reconciler = True
        return attempts

    def _blobs(self, cutoff_ms: int) -> list[str]:
        """Addresses of blobs last written before cutoff_ms."""
        found: list[str] = []
        token = ""
        while True:
            page = self._peers.storage.ListBlobs(
                storage_pb2.ListBlobsRequest(written_before_ms=cutoff_ms, page_token=token))
            found.extend(blob.sha256 for blob in page.blobs)
            token = page.next_page_token
            if not token:
                return found

    # --- changing --------------------------------------------------------------------

    def _finish_erasures(self, ledger: LedgerRecords) -> int:
        """Destroy what tombstoned records still have (data keys, blobs); how many parts had something left."""
        leftovers = 0
        now_ms = int(self._clock() * 1000)
        for record_id in sorted(ledger.erased - self._shredded):
            for part in erasure_parts(ledger.registrations.get(record_id, [])):
                done = destroy(self._peers, [part], now_ms)
                leftovers += bool(done.data_keys or done.blobs)
            self._shredded.add(record_id)
        return leftovers

    def _delete_blob(self, sha256: str, cutoff_ms: int, dry_run: bool) -> bool:
        # FAILED_PRECONDITION: written again since it was listed; NOT_FOUND: gone already (another pass).
        return dry_run or deleted(lambda: self._peers.storage.DeleteBlob(
            storage_pb2.DeleteBlobRequest(sha256=sha256, written_before_ms=cutoff_ms)),
            grpc.StatusCode.FAILED_PRECONDITION)

    def _delete_data_key(self, attempt: audit_pb2.AuditEvent, dry_run: bool) -> bool:
        # NOT_FOUND: the write crashed before it got a key.
        return dry_run or deleted(lambda: self._peers.identity.DeleteDataKey(
            identity_pb2.DeleteDataKeyRequest(record_id=_version_key(attempt), patient_id=attempt.patient_id)))

    def _close(self, attempt: audit_pb2.AuditEvent, outcome: int, reason: str) -> None:
        """Add the event that ends an attempt (the same one however often this runs)."""
        self._audit.report(
            Action.AUDIT_ACTION_WRITE, outcome, actor_id=attempt.actor_id, organization_id=attempt.organization_id,
            patient_id=attempt.patient_id, record_id=attempt.record_id, resource_type=attempt.resource_type,
            categories=attempt.categories, reason=reason, record_version=attempt.record_version,
            event_id=reconciler_event_id(_version_key(attempt), outcome),
        )


def _version_key(event: audit_pb2.AuditEvent) -> str:
    """The record version a write event is about, as identity names its data key (the record id for version 1)."""
    return data_key_id(event.record_id, event.record_version)


class BackgroundReconciler:
    """Runs a :class:`Reconciler` every interval on a daemon thread until closed (failures are logged, retried)."""

    def __init__(self, reconciler: Reconciler, interval_seconds: float) -> None:
        self._reconciler = reconciler
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)

    def start(self) -> BackgroundReconciler:
        if self._interval > 0:
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._reconciler.run()
            except Exception as exc:  # noqa: BLE001 - a peer being down must not end the loop
                log.warning("reconciliation pass failed; will retry", extra={"error": type(exc).__name__})

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
