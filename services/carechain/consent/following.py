"""The consent service's view of the ledger: followed, audited, written to.

:class:`FollowedLedger` keeps the ledger-derived :class:`carechain.consent.state.ConsentState`
up to date (before every answer, and every :data:`FOLLOW_SECONDS` on its own), audits
every committed grant and revocation however it was submitted, and commits the
transactions the service accepts, waiting until they are visible in the
verified state (read your writes: a revocation this service confirmed is seen by
the next decision).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from carechain.audit.events import AuditReporter
from carechain.audit.v1 import audit_pb2
from carechain.consent.state import ConsentChange, ConsentState, ListTransactions
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.v1 import ledger_pb2

log = logging.getLogger("carechain.consent")

# Namespace of the audit event ids of consent changes (uuid5 of chain id and log index).
_CONSENT_CHANGE_EVENTS = uuid.UUID("5f0c3e8a-6a43-4f0e-9a35-0c6f2b9d7e11")
# How often the consent service follows the ledger on its own, to audit directly submitted changes.
FOLLOW_SECONDS = 1.0
# How long a grant or revocation waits for its block to be certified in the verified state.
COMMIT_VISIBLE_SECONDS = 10.0


class FollowedLedger:
    """Consent state synchronised from the ledger, consent changes audited, transactions committed."""

    def __init__(
        self,
        state: ConsentState,
        read_transactions: ListTransactions,
        submitter: ServiceSubmitter,
        audit: AuditReporter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.submitter = submitter
        self._read_transactions = read_transactions
        self._audit = audit
        self._clock = clock
        self._audit_lock = threading.Lock()  # one auditor of consent changes at a time

    @property
    def chain_id(self) -> str:
        """The chain this service's transactions and audit event ids are for."""
        return self.submitter.chain_id

    def now_ms(self) -> int:
        """The service clock, in Unix ms (decisions, validity windows)."""
        return int(self._clock() * 1000)

    def sync(self) -> None:
        """Catch up with the ledger (UNAVAILABLE if it is down: never decide on stale state).

        Consent changes newly seen are audited (best effort here: see :meth:`audit_consent_changes`).
        """
        self.state.sync(self._read_transactions)
        try:
            self.audit_consent_changes()
        except Exception:  # noqa: BLE001 - the changes stay queued; the follower or the next sync retries
            log.warning("consent changes not audited yet; will retry")

    def audit_consent_changes(self) -> int:
        """Audit every committed grant and revocation not audited yet; returns how many were reported.

        Derived from the committed ledger, so a grant submitted straight to the
        ledger is audited too. The event id is derived from the chain and log
        index, so replicas, retries and restarts (which replay the log) store
        each event once. Errors propagate with the unreported changes kept.
        """
        with self._audit_lock:
            changes = self.state.take_changes()
            for done, change in enumerate(changes):
                try:
                    self._report_change(change)
                except BaseException:
                    self.state.put_back_changes(changes[done:])
                    raise
            return len(changes)

    def _report_change(self, change: ConsentChange) -> None:
        """Audit (and log) one committed grant or revocation, idempotently."""
        verb = "granted" if change.granted else "revoked"
        signer = self.state.principal(change.signer_id)
        by = " by a delegate of the patient" if change.signer_id != change.patient_id else ""
        self._audit.report(
            audit_pb2.AUDIT_ACTION_GRANT_CONSENT if change.granted else audit_pb2.AUDIT_ACTION_REVOKE_CONSENT,
            audit_pb2.AUDIT_OUTCOME_SUCCESS,
            actor_id=change.signer_id,
            organization_id=signer.organization_id if signer is not None else "",
            patient_id=change.patient_id,
            reason=f"consent {change.consent_id} {verb} at log index {change.log_index}{by}",
            consent_id=change.consent_id,
            event_id=str(uuid.uuid5(_CONSENT_CHANGE_EVENTS, f"{self.chain_id}/{change.log_index}")),
        )
        log.info(f"consent {verb}", extra={"consent_id": change.consent_id, "log_index": change.log_index})

    def report(self, action: int, *, actor_id: str, organization_id: str, patient_id: str, reason: str) -> None:
        """Audit one successful change this service made (delegations); errors propagate (fail closed)."""
        self._audit.report(action, audit_pb2.AUDIT_OUTCOME_SUCCESS, actor_id=actor_id,
                           organization_id=organization_id, patient_id=patient_id, reason=reason)

    def commit(self, transaction: ledger_pb2.Transaction) -> ledger_pb2.SubmitTransactionResponse:
        """Submit a signed transaction (a rejection raises) and wait until it is in the verified state."""
        return self._visible(self.submitter.submit(transaction))

    def sign_and_commit(self, **payload: object) -> ledger_pb2.SubmitTransactionResponse:
        """Sign payload as this service, submit it and wait until it is in the verified state."""
        return self._visible(self.submitter.sign_and_submit(**payload))

    def _visible(self, response: ledger_pb2.SubmitTransactionResponse) -> ledger_pb2.SubmitTransactionResponse:
        # State holds only verified, quorum-certified blocks: wait until ours is in.
        deadline = time.monotonic() + COMMIT_VISIBLE_SECONDS
        self.sync()
        while self.state.cursor <= response.log_index and time.monotonic() < deadline:
            time.sleep(0.02)
            self.sync()
        if self.state.cursor <= response.log_index:
            log.warning("committed transaction not yet certified on the validator read",
                        extra={"log_index": response.log_index})
        return response

    def follow(self, every_seconds: float = FOLLOW_SECONDS,
               snapshot: Callable[[bool], object] | None = None) -> Callable[[], None]:
        """Sync (and so audit consent changes, however submitted) every every_seconds; returns the stopper.

        snapshot(final) runs after each round (final=False: save when due) and once at stop (final=True).
        """
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(every_seconds):
                try:
                    self.sync()
                    if snapshot is not None:
                        snapshot(False)
                except Exception:  # noqa: BLE001 - ledger down: the next round retries
                    log.debug("consent follower could not sync")

        thread = threading.Thread(target=run, name="consent-follower", daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            thread.join(timeout=1)  # daemon thread: do not hold up shutdown for a sync in flight
            if snapshot is not None:
                try:
                    snapshot(True)  # the next start resumes from here
                except Exception:  # noqa: BLE001 - a snapshot is an optimisation: the next start replays
                    log.warning("consent snapshot not saved at stop")

        return close
