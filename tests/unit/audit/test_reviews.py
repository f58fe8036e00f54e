"""Break-glass alerts and the review queue (carechain.audit.reviews, carechain.audit.alerts) through gRPC."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import grpc
import pytest
from audit_fixtures import NOW_MS, OPERATOR, OTHER_PATIENT, PATIENT, PRACTITIONER, AuditEnv, running_audit, status_of

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2 as c


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[AuditEnv]:
    with running_audit(tmp_path) as running:
        yield running


def open_item(env: AuditEnv) -> audit_pb2.ReviewItem:
    env.record(alert=True, purpose=c.PURPOSE_OF_USE_ETREAT)
    [item] = env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(), OPERATOR).items
    return item


def test_break_glass_alert_notifies_the_patient_and_queues_a_review(env: AuditEnv) -> None:
    env.record(reason="routine read")
    receipt = env.record(alert=True, purpose=c.PURPOSE_OF_USE_ETREAT, actor_id="prac-er", reason="break-glass")
    [note] = env.call("ListNotifications", audit_pb2.ListNotificationsRequest(), PATIENT).notifications
    assert note.event.sequence == receipt.sequence and note.event.event.alert
    assert "prac-er" in note.message and "ETREAT" in note.message
    assert env.call("ListNotifications", audit_pb2.ListNotificationsRequest(), OTHER_PATIENT).notifications == []
    code, _ = status_of(lambda: env.call("ListNotifications",
                                         audit_pb2.ListNotificationsRequest(patient_id="psn-1"), OTHER_PATIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED

    [item] = env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(), OPERATOR).items
    assert item.status == audit_pb2.REVIEW_STATUS_OPEN and item.event.sequence == receipt.sequence
    for caller in (PATIENT, PRACTITIONER):
        code, _ = status_of(lambda caller=caller: env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(),
                                                           caller))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    history = env.history(PATIENT)
    assert [d.alert for d in history.disclosures] == [True, False]


def test_a_retried_alert_creates_one_notification_and_one_review_item(env: AuditEnv) -> None:
    event_id = str(uuid.uuid4())
    first = env.record(event_id=event_id, alert=True, purpose=c.PURPOSE_OF_USE_ETREAT)
    assert env.record(event_id=event_id, alert=True, purpose=c.PURPOSE_OF_USE_ETREAT) == first
    assert len(env.call("ListNotifications", audit_pb2.ListNotificationsRequest(), PATIENT).notifications) == 1
    assert len(env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(), OPERATOR).items) == 1


def test_resolving_a_review_item_is_itself_audited(env: AuditEnv) -> None:
    item = open_item(env)
    code, details = status_of(lambda: env.call(
        "ResolveReviewItem", audit_pb2.ResolveReviewItemRequest(item_id=item.item_id, note=" "), OPERATOR))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("note:")
    resolved = env.call("ResolveReviewItem", audit_pb2.ResolveReviewItemRequest(
        item_id=item.item_id, note="genuine emergency, documented in the ER chart"), OPERATOR)
    assert resolved.status == audit_pb2.REVIEW_STATUS_RESOLVED and resolved.reviewer_id == "operator"
    assert resolved.resolved_ms == NOW_MS
    [resolution] = env.store.events_after(resolved.resolution_sequence - 1, 1)
    assert resolution.event.action == audit_pb2.AUDIT_ACTION_REVIEW and resolution.event.service == "audit"
    assert resolution.event.actor_id == "operator" and resolution.event.patient_id == "psn-1"
    assert env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(
        status=audit_pb2.REVIEW_STATUS_OPEN), OPERATOR).items == []
    code, _ = status_of(lambda: env.call("ResolveReviewItem", audit_pb2.ResolveReviewItemRequest(
        item_id=item.item_id, note="again"), OPERATOR))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = status_of(lambda: env.call("ResolveReviewItem", audit_pb2.ResolveReviewItemRequest(
        item_id=str(uuid.uuid4()), note="x"), OPERATOR))
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("item_id", "note", "field"), [
    ("", "reviewed", "item_id"),
    ("ITEM", "x" * 2001, "note"),
])
def test_bad_resolutions_are_rejected_naming_the_field(env: AuditEnv, item_id: str, note: str, field: str) -> None:
    item = open_item(env)
    request = audit_pb2.ResolveReviewItemRequest(item_id=item_id.replace("ITEM", item.item_id), note=note)
    code, details = status_of(lambda: env.call("ResolveReviewItem", request, OPERATOR))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}:")
    assert env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(), OPERATOR).items[0].status == \
        audit_pb2.REVIEW_STATUS_OPEN


def test_an_unknown_review_status_is_rejected(env: AuditEnv) -> None:
    code, details = status_of(lambda: env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(status=99),
                                               OPERATOR))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("status:")


def test_a_resolution_that_cannot_be_audited_resolves_nothing(env: AuditEnv) -> None:
    item = open_item(env)
    # The trail refuses the resolution event (the store cannot write): the item must stay open.
    env.store._db.execute("CREATE TRIGGER no_more BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'full'); END")
    code, _ = status_of(lambda: env.call("ResolveReviewItem", audit_pb2.ResolveReviewItemRequest(
        item_id=item.item_id, note="reviewed"), OPERATOR))
    assert code == grpc.StatusCode.UNAVAILABLE
    env.store._db.execute("DROP TRIGGER no_more")
    [still] = env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(), OPERATOR).items
    assert still.status == audit_pb2.REVIEW_STATUS_OPEN and not still.reviewer_id
