"""Sealing audit events into batches and anchoring each batch's root on the ledger.

- :class:`BatchSealer` decides *when* to seal: as soon as ``max_events``
  events are unsealed (a full batch of exactly that many), or when unsealed
  events have waited ``max_seconds`` (all of them, at most ``max_events``).
- :class:`LedgerAnchorer` submits one ``AnchorAuditBatch`` transaction per
  sealed batch, in batch order, signed by the audit service (``svc-audit``),
  and stores the anchor's log index with the batch. A batch whose anchor is
  already on the ledger (a retry after an answer was lost, or another audit
  replica) is found there instead of anchored twice. While the ledger is
  unreachable batches simply stay sealed locally; nothing is lost and the
  next round retries. :meth:`LedgerAnchorer.check` cross-checks an anchored
  batch against the ledger. An anchor the ledger *rejects* (a contract rule,
  a different root already anchored) raises :class:`AnchorRejected`.
- :class:`AuditMaintenance` runs both in a background thread, then records the
  ledger's checkpoint in the trail (:mod:`carechain.audit.checkpoints`). After a
  rejected anchor it does not resubmit every round: it backs off exponentially
  (1, 2, 4, ... rounds' worth of seconds, at most ``CARECHAIN_ANCHOR_BACKOFF_MAX_SECONDS``)
  and raises an alert once per distinct rejection: an ERROR log with
  ``alert=true`` and an ``AUDIT_ACTION_ANCHOR_BATCH`` FAILED event in the trail
  (``carechain audit tail --outcome failed``). Sealing goes on meanwhile, and
  ``carechain audit verify --ledger`` fails once a batch misses the anchoring
  deadline.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from carechain.audit.hashchain import AuditBatch
from carechain.audit.store import AuditStore
from carechain.audit.v1 import audit_pb2
from carechain.core.crypto import Signer
from carechain.core.errors import CareChainError, FailedPrecondition, PermissionDenied
from carechain.core.layout import service_principal_id
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.transactions import decode_body, logged_transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime import metrics

log = logging.getLogger("carechain.audit.anchoring")

AUDIT_SIGNER_ID = service_principal_id("audit")
#: Default bound of the back-off after rejected anchors.
DEFAULT_BACKOFF_MAX_SECONDS = 300.0
# gRPC codes with which the ledger refuses a transaction outright (not "down, try again").
_REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
             grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}


class AnchorRejected(CareChainError):
    """The ledger refused a batch's anchor: resubmitting the same transaction will not help."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, batch_number: int, reason: str) -> None:
        super().__init__(f"the ledger rejected the anchor of audit batch {batch_number}: {reason}")
        self.batch_number = batch_number
        self.reason = reason


class BatchSealer:
    """Seals a store's unsealed events by count or by age (see the module docstring)."""

    def __init__(
        self,
        store: AuditStore,
        max_events: int,
        max_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._store = store
        self.max_events = max_events
        self.max_seconds = max_seconds
        self._monotonic = monotonic
        self._wall = wall
        self._pending_since: float | None = None

    def seal_due(self, force: bool = False) -> list[AuditBatch]:
        """Seal what is due now (force: every unsealed event); returns the batches sealed here."""
        sealed: list[AuditBatch] = []
        head, _ = self._store.head()
        last = self._store.last_batch()
        sealed_to = last.last_sequence if last else 0
        while head - sealed_to >= self.max_events:
            batch = self._store.seal_batch(sealed_to + self.max_events, self._now_ms())
            if batch is not None:
                sealed.append(batch)
            last = self._store.last_batch()
            sealed_to = last.last_sequence if last else 0
        if head <= sealed_to:
            self._pending_since = None
            return sealed
        now = self._monotonic()
        if self._pending_since is None:
            self._pending_since = now
        if force or now - self._pending_since >= self.max_seconds:
            batch = self._store.seal_batch(head, self._now_ms())
            if batch is not None:
                sealed.append(batch)
            self._pending_since = None
        return sealed

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)


class LedgerAnchorer:
    """Anchors sealed batches on the ledger (see the module docstring).

    ledger() returns a LedgerService stub (ideally a PeerStub); signer() the
    audit service's signer. Both are called lazily, so the audit service starts
    (and records events) while Vault, identity or the ledger are still down.
    """

    def __init__(
        self, store: AuditStore, chain_id: str, ledger: Callable[[], Any], signer: Callable[[], Signer]
    ) -> None:
        self._store = store
        self._chain_id = chain_id
        self._ledger = ledger
        self._signer = signer
        self._lock = threading.Lock()
        # The newest batch known to be anchored (batches are anchored in order): where the next round starts.
        self._anchored: AuditBatch | None = None

    def anchor_pending(self) -> list[AuditBatch]:
        """Anchor every sealed, unanchored batch in order; returns them with their log indexes.

        Raises Unavailable (ledger, identity or Vault down) or AnchorRejected (the
        ledger refused the anchor, or holds a different root for the batch);
        anchored batches stay anchored.
        """
        anchored: list[AuditBatch] = []
        with self._lock:
            if self._anchored is None:
                self._anchored = self._newest_anchored()
            previous_index = self._anchored.anchor_log_index if self._anchored is not None else -1
            after = self._anchored.batch_number if self._anchored is not None else 0
            while True:
                page = self._store.batches(after, 100)
                if not page:
                    metrics.AUDIT_ANCHORING_LAG.set(0.0)  # every sealed batch is anchored
                    return anchored
                for batch in page:
                    if batch.anchored:
                        previous_index = batch.anchor_log_index  # type: ignore[assignment]
                        continue
                    metrics.AUDIT_ANCHORING_LAG.set(max(0.0, time.time() - batch.sealed_ms / 1000))
                    log_index = self._anchor(batch, previous_index + 1)
                    self._store.record_anchor(batch.batch_number, log_index)
                    metrics.AUDIT_BATCHES_ANCHORED.add(1)
                    anchored.append(_with_anchor(batch, log_index))
                    self._anchored = anchored[-1]
                    previous_index = log_index
                    log.info("audit batch anchored", extra={"batch_number": batch.batch_number,
                                                            "events": batch.size, "log_index": log_index})
                after = page[-1].batch_number

    def _newest_anchored(self) -> AuditBatch | None:
        """The newest anchored batch: anchored batches are a prefix of the sealed ones (anchored in order), so a
        binary search finds it in O(log batches) reads, not a pass over every batch (restart is O(new))."""
        last = self._store.last_batch()
        if last is None:
            return None
        if last.anchored:
            return last
        low, high = 0, last.batch_number  # batch low is anchored (0: none), batch high is not
        found: AuditBatch | None = None
        while high - low > 1:
            middle = (low + high) // 2
            [batch] = self._store.batches(middle - 1, 1)
            if batch.anchored:
                low, found = middle, batch
            else:
                high = middle
        return found

    def _anchor(self, batch: AuditBatch, search_from: int) -> int:
        payload = ledger_pb2.AnchorAuditBatch(
            batch_number=batch.batch_number, first_sequence=batch.first_sequence,
            last_sequence=batch.last_sequence, merkle_root=batch.merkle_root,
        )
        # A fresh submitter per anchor: the signer is resolved lazily (Vault may come up after the audit service).
        submitter = ServiceSubmitter(self._chain_id, self._signer(), self._ledger)
        try:
            return int(submitter.sign_and_submit(anchor_audit_batch=payload).log_index)
        except PermissionDenied as exc:
            raise AnchorRejected(batch.batch_number, _verdict(exc.message)) from None
        except grpc.RpcError as exc:
            if exc.code() in _REFUSALS:  # type: ignore[attr-defined]
                raise AnchorRejected(batch.batch_number, exc.details() or exc.code().name) from None  # type: ignore[attr-defined]
            raise
        except FailedPrecondition as exc:
            # Most likely anchored already (our earlier attempt whose answer was lost): find it.
            found = self.find_anchor(batch.batch_number, search_from)
            if found is None:
                raise AnchorRejected(batch.batch_number, _verdict(exc.message)) from None
            log_index, on_ledger = found
            if not _same_batch(on_ledger, batch):
                raise AnchorRejected(
                    batch.batch_number,
                    f"the ledger anchors this batch with a different range or root (log index {log_index})",
                ) from None
            return log_index

    def find_anchor(self, batch_number: int, from_log_index: int = 0) -> tuple[int, ledger_pb2.AnchorAuditBatch] | None:
        """The valid AnchorAuditBatch transaction of batch_number on the ledger, scanning from a log index."""
        for logged in logged_transactions(self._ledger(), from_log_index):
            anchor = _anchor_of(logged)
            if anchor is not None and anchor.batch_number == batch_number:
                return logged.log_index, anchor
        return None

    def check(self, batch: AuditBatch) -> str:
        """Compare an anchored batch with its transaction on the ledger; the problem, or "" when it matches."""
        assert batch.anchor_log_index is not None
        page = self._ledger().ListTransactions(
            ledger_pb2.ListTransactionsRequest(from_log_index=batch.anchor_log_index, limit=1)
        )
        logged = page.transactions[0] if page.transactions else None
        if logged is None or logged.log_index != batch.anchor_log_index:
            return f"batch {batch.batch_number}: no transaction at ledger log index {batch.anchor_log_index}"
        anchor = _anchor_of(logged)
        if anchor is None:
            return (f"batch {batch.batch_number}: ledger log index {batch.anchor_log_index} is not a valid "
                    f"AnchorAuditBatch by {AUDIT_SIGNER_ID}")
        if not _same_batch(anchor, batch):
            return f"batch {batch.batch_number}: the root anchored on the ledger differs from the stored batch"
        return ""


def _verdict(message: str) -> str:
    """The validator's reason in a rejection raised by :meth:`ServiceSubmitter.sign_and_submit`."""
    return message.removeprefix("ledger rejected the transaction: ")


def _anchor_of(logged: ledger_pb2.LoggedTransaction) -> ledger_pb2.AnchorAuditBatch | None:
    """The anchor a logged transaction carries, when it is a valid one signed by the audit service."""
    if not logged.result.valid or logged.transaction.signer_id != AUDIT_SIGNER_ID:
        return None
    try:
        body = decode_body(logged.transaction)
    except Exception:  # noqa: BLE001 - not ours to judge; just not an anchor
        return None
    if body.WhichOneof("payload") != "anchor_audit_batch":
        return None
    return body.anchor_audit_batch


def _same_batch(anchor: ledger_pb2.AnchorAuditBatch, batch: AuditBatch) -> bool:
    return (anchor.batch_number, anchor.first_sequence, anchor.last_sequence, bytes(anchor.merkle_root)) == (
        batch.batch_number, batch.first_sequence, batch.last_sequence, batch.merkle_root)


def _with_anchor(batch: AuditBatch, log_index: int) -> AuditBatch:
    return AuditBatch(batch.batch_number, batch.first_sequence, batch.last_sequence, batch.merkle_root,
                      batch.sealed_ms, log_index)


class AuditMaintenance:
    """Background thread: seal due batches, anchor them (backing off after rejections), record the ledger's
    checkpoint, every interval; errors are logged and retried."""

    def __init__(
        self,
        sealer: BatchSealer,
        anchorer: LedgerAnchorer | None,
        interval_seconds: float,
        checkpoints: Any = None,
        report: Callable[[audit_pb2.AuditEvent], object] | None = None,
        backoff_max_seconds: float = DEFAULT_BACKOFF_MAX_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """checkpoints: a :class:`carechain.audit.checkpoints.CheckpointRecorder` (or None); report(event)
        appends one of the audit service's own events (the alert of a rejected anchor)."""
        self._sealer = sealer
        self._anchorer = anchorer
        self._checkpoints = checkpoints
        self._report = report
        self._interval = interval_seconds
        self._backoff_max = backoff_max_seconds
        self._monotonic = monotonic
        self._wall = wall
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-maintenance", daemon=True)
        self._last_problem = ""
        self._rejections = 0  # consecutive rejected anchoring rounds
        self._anchor_not_before: float | None = None
        self._alerted = ""

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    @property
    def backing_off_until(self) -> float | None:
        """Monotonic time before which no anchor is submitted (after a rejection), or None."""
        return self._anchor_not_before

    def run_once(self) -> None:
        """One round: seal what is due, anchor what is sealed (unless backing off), record the ledger's
        checkpoint; each step runs even when an earlier one failed, then the first error propagates."""
        errors: list[Exception] = []
        for step in (self._sealer.seal_due, self._anchor_round, self._record_checkpoint):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the other steps ran
                errors.append(exc)
        if errors:
            raise errors[0]

    def _anchor_round(self) -> None:
        if self._anchorer is None:
            return
        now = self._monotonic()
        if self._anchor_not_before is not None and now < self._anchor_not_before:
            return  # backing off after a rejection: do not resubmit yet
        try:
            self._anchorer.anchor_pending()
        except AnchorRejected as exc:
            self._rejections += 1
            delay = min(max(self._interval, 1.0) * 2 ** (self._rejections - 1), self._backoff_max)
            self._anchor_not_before = now + delay
            self._alert(exc, delay)
            raise
        self._rejections, self._anchor_not_before, self._alerted = 0, None, ""

    def _alert(self, exc: AnchorRejected, delay: float) -> None:
        """Once per distinct rejection: an ERROR log marked alert and a FAILED audit event."""
        if exc.message == self._alerted:
            return
        self._alerted = exc.message
        log.error("ALERT: the ledger rejected an audit batch anchor; backing off",
                  extra={"alert": True, "batch_number": exc.batch_number, "problem": exc.message,
                         "retry_in_seconds": round(delay, 1)})
        if self._report is not None:
            self._report(audit_pb2.AuditEvent(
                event_id=str(uuid.uuid4()), time_ms=int(self._wall() * 1000), service="audit",
                actor_id=AUDIT_SIGNER_ID, action=audit_pb2.AUDIT_ACTION_ANCHOR_BATCH,
                outcome=audit_pb2.AUDIT_OUTCOME_FAILED,
                reason=f"{exc.message}; anchoring backs off (next attempt in {delay:.0f} s)",
            ))

    def _record_checkpoint(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.record_new()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once()
                self._last_problem = ""
            except Exception as exc:  # noqa: BLE001 - keep sealing and retrying; events stay stored
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._last_problem:  # log each distinct problem once, not every round
                    log.warning("audit batches not sealed or anchored, or checkpoint not recorded, yet; will retry",
                                extra={"problem": problem})
                self._last_problem = problem

    def stop(self) -> None:
        """Stop the thread (a round in progress finishes)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
