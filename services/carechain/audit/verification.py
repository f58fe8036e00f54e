"""Checking the trail: event inclusion proofs, the chain and batches, their anchors and the ledger checkpoints.

- :meth:`TrailVerification.event_proof`: an event's inclusion proof in its
  sealed batch (FAILED_PRECONDITION until the batch is sealed).
- :meth:`TrailVerification.verify`: the store recomputes every link and batch
  root (from a trusted checkpoint: only those after it, O(new)); with
  ``check_ledger``, the recorded ledger checkpoints are checked first
  (a rewritten history is the finding to name), then every anchored batch
  against its ledger transaction, and no batch may stay unanchored past the
  anchoring deadline (``CARECHAIN_ANCHOR_DEADLINE_SECONDS``).
"""

from __future__ import annotations

from collections.abc import Callable

from carechain.audit.anchoring import LedgerAnchorer
from carechain.audit.checkpoints import CheckpointRecorder
from carechain.audit.hashchain import ChainCheckpoint, event_proof
from carechain.audit.store import AuditStore
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import FailedPrecondition, InvalidArgument, NotFound


class TrailVerification:
    """Proofs and verification over a store; anchorer and checkpoints are None when anchoring is off."""

    def __init__(
        self,
        store: AuditStore,
        now_ms: Callable[[], int],
        anchorer: LedgerAnchorer | None = None,
        checkpoints: CheckpointRecorder | None = None,
        anchor_deadline_seconds: float = 900.0,
    ) -> None:
        self._store = store
        self._now_ms = now_ms
        self._anchorer = anchorer
        self._checkpoints = checkpoints
        self._anchor_deadline_ms = int(anchor_deadline_seconds * 1000)

    def stored_event(self, sequence: int) -> audit_pb2.StoredAuditEvent | None:
        """The stored event with this sequence number, or None."""
        if sequence < 1:
            raise InvalidArgument("sequence", "must be at least 1")
        found = self._store.events_after(sequence - 1, 1)
        return found[0] if found and found[0].sequence == sequence else None

    def event_proof(self, sequence: int) -> audit_pb2.EventProof:
        """The inclusion proof of the event at sequence in its sealed batch."""
        if self.stored_event(sequence) is None:
            raise NotFound(f"audit event {sequence} does not exist")
        batch = self._store.batch_containing(sequence)
        if batch is None:
            raise FailedPrecondition(
                f"audit event {sequence} is not sealed in a batch yet; retry after the next batch is sealed"
            )
        events = self._store.events_after(batch.first_sequence - 1, batch.size)
        return event_proof(batch, [e.event_hash for e in events], sequence)

    def verify(
        self, check_ledger: bool, from_checkpoint: audit_pb2.AuditChainCheckpoint | None = None
    ) -> audit_pb2.VerifyAuditChainResponse:
        """Re-check the chain and batches; with check_ledger also checkpoints, anchors and the deadline.

        From a trusted checkpoint (one an earlier verification returned), only what follows it: O(new).
        """
        start = _start(from_checkpoint)
        result = self._store.verify(start)
        response = audit_pb2.VerifyAuditChainResponse(
            ok=result.ok, events_checked=result.events_checked, first_bad_sequence=result.first_bad_sequence,
            problem=result.problem, batches_checked=result.batches_checked, batches_anchored=result.batches_anchored,
        )
        if result.ok and result.checkpoint is not None:
            reached = result.checkpoint
            response.checkpoint.CopyFrom(audit_pb2.AuditChainCheckpoint(
                sequence=reached.sequence, event_hash=reached.event_hash, batch_number=reached.batch_number))
        if check_ledger and result.ok:
            if self._anchorer is None:
                raise FailedPrecondition("this audit service does not anchor batches (CARECHAIN_ANCHOR_BATCHES)")
            # Checkpoints first: a rewritten ledger history is the finding to name, not the anchors it moved.
            if self._checkpoints is not None:
                checked, sequence, problem = self._checkpoints.check_all(newest_only=start is not None)
                response.checkpoints_checked = checked
                if problem:
                    response.ok, response.first_bad_sequence, response.problem = False, sequence, problem
                    response.ClearField("checkpoint")
                    return response
            anchors_known = start is not None and from_checkpoint is not None and from_checkpoint.anchors_checked
            all_anchored = self._check_anchors(response, start.batch_number if anchors_known and start else 0)
            if not response.ok:
                response.ClearField("checkpoint")
            elif response.HasField("checkpoint"):
                response.checkpoint.anchors_checked = all_anchored
        return response

    def _check_anchors(self, response: audit_pb2.VerifyAuditChainResponse, after_batch: int = 0) -> bool:
        """Each anchored batch after after_batch matches its ledger transaction; none waited past the anchoring
        deadline. Whether every one of them was anchored."""
        assert self._anchorer is not None
        now = self._now_ms()
        all_anchored = True
        for batch in self._store.batches(after_batch):
            if not batch.anchored:
                all_anchored = False
                if now - batch.sealed_ms > self._anchor_deadline_ms:
                    response.ok, response.first_bad_sequence = False, batch.first_sequence
                    response.problem = (
                        f"batch {batch.batch_number}: sealed {(now - batch.sealed_ms) // 1000} s ago and not "
                        f"anchored on the ledger within the deadline of {self._anchor_deadline_ms // 1000} s "
                        "(CARECHAIN_ANCHOR_DEADLINE_SECONDS)")
                    return False
                continue
            problem = self._anchorer.check(batch)
            if problem:
                response.ok, response.first_bad_sequence, response.problem = False, batch.first_sequence, problem
                return False
            response.anchors_checked += 1
        return all_anchored


def _start(checkpoint: audit_pb2.AuditChainCheckpoint | None) -> ChainCheckpoint | None:
    """The store's starting point from a request's from_checkpoint (None: verify everything)."""
    if checkpoint is None:
        return None
    if checkpoint.sequence == 0 and checkpoint.batch_number == 0:
        return None
    if checkpoint.sequence == 0 or checkpoint.batch_number == 0:
        raise InvalidArgument("from_checkpoint", "sequence and batch_number go together (a checkpoint returned by "
                                                 "VerifyAuditChain)")
    if len(checkpoint.event_hash) != 32:
        raise InvalidArgument("from_checkpoint.event_hash", "must be 32 bytes")
    return ChainCheckpoint(checkpoint.sequence, bytes(checkpoint.event_hash), checkpoint.batch_number)
