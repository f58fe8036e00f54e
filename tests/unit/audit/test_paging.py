"""Pages of the audit listings (carechain.audit.paging) through gRPC: page sizes, tokens bound to their query, and
no way to read another patient's events with a token."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import pytest
from audit_fixtures import NOW_MS, OPERATOR, OTHER_PATIENT, PATIENT, RECORDS, AuditEnv, event, running_audit, status_of

from carechain.audit.paging import MAX_PAGE_SIZE
from carechain.audit.v1 import audit_pb2


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[AuditEnv]:
    with running_audit(tmp_path) as running:
        running.call("RecordEvents", audit_pb2.RecordEventsRequest(events=[
            event(time_ms=NOW_MS - 60_000 + (i // 2) * 1_000, reason=f"psn-1 #{i}", alert=i % 3 == 0)
            for i in range(25)
        ] + [event(patient_id="psn-2", reason="psn-2 only", alert=True)]), RECORDS)
        yield running


def history_pages(env: AuditEnv, caller, page_size: int, **fields: object) -> list[audit_pb2.GetAccessHistoryResponse]:
    pages = []
    request = audit_pb2.GetAccessHistoryRequest(page_size=page_size, **fields)  # type: ignore[arg-type]
    while True:
        page = env.call("GetAccessHistory", request, caller)
        pages.append(page)
        if not page.next_page_token:
            return pages
        request.page_token = page.next_page_token


def test_a_patient_pages_through_their_history_newest_first(env: AuditEnv) -> None:
    pages = history_pages(env, PATIENT, 10)
    assert [len(p.events) for p in pages] == [10, 10, 5]
    sequences = [e.sequence for p in pages for e in p.events]
    assert sequences == [s.sequence for s in env.store.history("psn-1")]  # no gap, no duplicate
    assert all(len(p.disclosures) == len(p.events) for p in pages)
    assert len({(p.since_ms, p.until_ms) for p in pages}) == 1  # every page covers the same period
    assert len(history_pages(env, PATIENT, 0)[0].events) == 25  # default page size


def test_a_page_token_cannot_read_another_patients_history(env: AuditEnv) -> None:
    token = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(page_size=5), PATIENT).next_page_token
    # Another patient replaying psn-1's token over their own history, or a service naming another patient.
    for caller, patient in ((OTHER_PATIENT, ""), (RECORDS, "psn-2")):
        code, details = status_of(lambda caller=caller, patient=patient: env.call(
            "GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id=patient, page_token=token), caller))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_token:")
        assert "psn-1" not in details
    # ... and naming psn-1 with it is refused by the access check, as without a token.
    code, _ = status_of(lambda: env.call(
        "GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id="psn-1", page_token=token), OTHER_PATIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # A token for another period, or a forged one, is refused naming the field.
    for request in (audit_pb2.GetAccessHistoryRequest(since_ms=NOW_MS - 90_000, page_token=token),
                    audit_pb2.GetAccessHistoryRequest(page_token="not-a-token"),
                    audit_pb2.GetAccessHistoryRequest(page_token=token[:-4] + "AAAA")):
        code, details = status_of(lambda request=request: env.call("GetAccessHistory", request, PATIENT))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_token:")


def test_a_history_token_is_not_an_export_token(env: AuditEnv) -> None:
    token = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(page_size=5), PATIENT).next_page_token
    code, details = status_of(lambda: env.call(
        "ExportFhirBundle", audit_pb2.ExportFhirBundleRequest(page_token=token), PATIENT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_token:")


def test_the_fhir_export_pages(env: AuditEnv) -> None:
    first = env.call("ExportFhirBundle", audit_pb2.ExportFhirBundleRequest(page_size=20), PATIENT)
    rest = env.call("ExportFhirBundle",
                    audit_pb2.ExportFhirBundleRequest(page_size=20, page_token=first.next_page_token), PATIENT)
    assert (first.count, rest.count, rest.next_page_token) == (20, 5, "")


def test_notifications_page(env: AuditEnv) -> None:
    first = env.call("ListNotifications", audit_pb2.ListNotificationsRequest(page_size=5), PATIENT)
    rest = env.call("ListNotifications", audit_pb2.ListNotificationsRequest(page_token=first.next_page_token),
                    PATIENT)
    assert len(first.notifications) == 5 and len(rest.notifications) == 4 and not rest.next_page_token
    assert {n.patient_id for n in (*first.notifications, *rest.notifications)} == {"psn-1"}
    code, _ = status_of(lambda: env.call(
        "ListNotifications", audit_pb2.ListNotificationsRequest(page_token=first.next_page_token), OTHER_PATIENT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_review_items_page_by_status(env: AuditEnv) -> None:
    request = audit_pb2.ListReviewItemsRequest(status=audit_pb2.REVIEW_STATUS_OPEN, page_size=4)
    sequences = []
    while True:
        page = env.call("ListReviewItems", request, OPERATOR)
        sequences += [i.event.sequence for i in page.items]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert sequences == sorted(sequences) and len(sequences) == 10
    open_token = request.page_token  # a token of the OPEN queue is not one of the RESOLVED queue
    code, details = status_of(lambda: env.call("ListReviewItems", audit_pb2.ListReviewItemsRequest(
        status=audit_pb2.REVIEW_STATUS_RESOLVED, page_token=open_token), OPERATOR))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_token:")


def test_a_page_is_at_most_the_maximum(env: AuditEnv) -> None:
    for size in (500, 500, 1):
        env.call("RecordEvents", audit_pb2.RecordEventsRequest(events=[event(patient_id="psn-3") for _ in range(size)]),
                 RECORDS)
    page = env.call("GetAccessHistory", audit_pb2.GetAccessHistoryRequest(patient_id="psn-3", page_size=5000), RECORDS)
    assert len(page.events) == MAX_PAGE_SIZE and page.next_page_token
