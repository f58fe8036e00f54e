"""SQLiteAuditStore (carechain.audit.sqlite_store) beyond the contract suite: its listings are index ranges, so a
page costs O(page), not a pass over every event."""

from __future__ import annotations

import pathlib
import uuid

from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.v1 import audit_pb2


def _plan(store: SQLiteAuditStore, query: str, args: tuple[object, ...]) -> str:
    return " | ".join(str(row[-1]) for row in store._db.execute("EXPLAIN QUERY PLAN " + query, args))


def test_listings_are_index_ranges_without_sorting(tmp_path: pathlib.Path) -> None:
    store = SQLiteAuditStore(tmp_path)
    try:
        store.append(audit_pb2.AuditEvent(event_id=str(uuid.uuid4()), patient_id="psn-1", time_ms=1, alert=True))
        seen: list[str] = []
        real = store._read

        def recording(what: str, query: str, args=()):  # type: ignore[no-untyped-def]
            seen.append(_plan(store, query, tuple(args)))
            return real(what, query, args)

        store._read = recording  # type: ignore[method-assign]
        store.history("psn-1", 1, 10, 5, (5, 3))
        store.notifications("psn-1", 5, (5, 3))
        store.review_items(audit_pb2.REVIEW_STATUS_OPEN, 5, 3)
        history, notifications, reviews = seen
        assert "USING INDEX audit_events_by_patient" in history or "USING COVERING INDEX" in history, history
        assert "USING INDEX audit_notifications_page" in notifications, notifications
        assert "audit_review_items_by_status" in reviews, reviews
        for plan in seen:  # no full scan, no sort of all matching rows
            assert "TEMP B-TREE" not in plan and "SCAN r" not in plan and "SCAN audit_events" not in plan, plan
    finally:
        store.close()
