"""Ledger checkpoints in the trail (carechain.audit.checkpoints): after a restart the newest recorded checkpoint is
found reading backwards from the head, not by a pass over the whole trail."""

from __future__ import annotations

import pathlib
import uuid

from carechain.audit.checkpoints import CheckpointRecorder
from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.v1 import audit_pb2
from carechain.ledger.v1 import ledger_pb2


def _checkpoint_event(height: int) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()), time_ms=1, service="audit", actor_id="svc-audit",
        action=audit_pb2.AUDIT_ACTION_LEDGER_CHECKPOINT, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
        ledger_checkpoint=ledger_pb2.Checkpoint(height=height).SerializeToString(deterministic=True),
    )


def test_the_newest_recorded_checkpoint_is_found_from_the_head(tmp_path: pathlib.Path) -> None:
    store = SQLiteAuditStore(tmp_path)
    try:
        events = [audit_pb2.AuditEvent(event_id=str(uuid.uuid4()), time_ms=1, service="records", actor_id="p",
                                       action=audit_pb2.AUDIT_ACTION_READ, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS)
                  for _ in range(5000)]
        events[99] = _checkpoint_event(7)
        events[4700] = _checkpoint_event(9)
        for start in range(0, len(events), 500):
            store.append_batch(events[start:start + 500])
        read: list[int] = []
        real = store.events_after

        def counting(after_sequence: int, limit: int):  # type: ignore[no-untyped-def]
            found = real(after_sequence, limit)
            read.append(len(found))
            return found

        store.events_after = counting  # type: ignore[method-assign]
        recorder = CheckpointRecorder(store, lambda: None, lambda: None, lambda e: None)  # type: ignore[arg-type]
        sequence, checkpoint = recorder.newest_recorded()  # type: ignore[misc]
        assert (sequence, checkpoint.height) == (4701, 9)
        assert sum(read) <= 1000, read  # the events since the newest checkpoint (a page), not all 5000
        older = recorder.newest_recorded(below=4701)
        assert older is not None and (older[0], older[1].height) == (100, 7)
        assert recorder.newest_recorded(below=100) is None
    finally:
        store.close()
