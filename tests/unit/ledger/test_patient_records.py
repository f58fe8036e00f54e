"""ListPatientRecords: a patient's record entries in log order, a page at a time, with their block's time;
for svc-records only; every identity of the patient (searched_identities)."""

from __future__ import annotations

import grpc
import pytest
from ledger_fixtures import Kind, Net, onboarding, record, register, tx
from ledger_service_fixtures import ServiceStub, ledger_service

from carechain.ledger import submission
from carechain.ledger.queries import PageToken, searched_identities
from carechain.ledger.v1 import ledger_pb2


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    net = Net()
    with ledger_service(tmp_path_factory.mktemp("patient-records"), net) as running, \
            grpc.insecure_channel(running.address) as channel:
        records = ServiceStub(channel, net, "svc-records")
        txs, _ = onboarding(net)
        txs.append(register(net, "pat-2", Kind.PRINCIPAL_KIND_PATIENT, "org-1")[0])
        for t in txs:
            assert submission.submit(records, t).valid
        written: dict[str, list[int]] = {"pat-1": [], "pat-2": []}
        for i in range(7):
            patient = "pat-1" if i % 3 != 2 else "pat-2"
            done = submission.submit(records, tx(net.records, register_record=record(patient, "org-1", f"r-{i}")))
            assert done.valid
            written[patient].append(done.log_index)
        yield net, channel, records, written


def _all_pages(stub, patient_id: str, page_size: int) -> tuple[list[ledger_pb2.RecordEntry], int]:
    entries, pages = [], 0
    request = ledger_pb2.ListPatientRecordsRequest(patient_id=patient_id, page_size=page_size)
    while True:
        page = stub.ListPatientRecords(request, timeout=30)
        entries += page.entries
        pages += 1
        if not page.next_page_token:
            return entries, pages
        request = ledger_pb2.ListPatientRecordsRequest(patient_id=patient_id, page_size=page_size,
                                                       page_token=page.next_page_token)


def test_a_patients_records_come_in_log_order_by_pages_with_their_blocks_time(world):
    _, _, stub, written = world
    entries, pages = _all_pages(stub, "pat-1", 2)
    assert [e.log_index for e in entries] == written["pat-1"] and pages == 3  # 5 entries: 2 + 2 + 1
    assert {e.record.patient_id for e in entries} == {"pat-1"}  # never another patient's
    for entry in entries:
        found = stub.ListTransactions(ledger_pb2.ListTransactionsRequest(from_log_index=entry.log_index, limit=1),
                                      timeout=30).transactions[0]
        block = stub.GetBlock(ledger_pb2.GetBlockRequest(height=found.height), timeout=30)
        assert entry.last_updated_ms == ledger_pb2.BlockHeader.FromString(block.header).timestamp_ms > 0
    assert [e.log_index for e in _all_pages(stub, "pat-2", 0)[0]] == written["pat-2"]


def test_from_log_index_resumes_after_an_entry_and_an_unknown_patient_has_none(world):
    _, _, stub, written = world
    after = written["pat-1"][1] + 1
    page = stub.ListPatientRecords(ledger_pb2.ListPatientRecordsRequest(patient_id="pat-1", from_log_index=after),
                                   timeout=30)
    assert [e.log_index for e in page.entries] == written["pat-1"][2:] and not page.next_page_token
    unknown = stub.ListPatientRecords(ledger_pb2.ListPatientRecordsRequest(patient_id="psn-nobody"), timeout=30)
    assert not unknown.entries and not unknown.next_page_token


def test_bad_requests_name_the_field(world):
    _, _, stub, _ = world
    for request, field in [
        (ledger_pb2.ListPatientRecordsRequest(), "patient_id"),
        (ledger_pb2.ListPatientRecordsRequest(patient_id="pat-1", page_size=1001), "page_size"),
        (ledger_pb2.ListPatientRecordsRequest(patient_id="pat-1", page_token="not a token"), "page_token"),
        (ledger_pb2.ListPatientRecordsRequest(patient_id="pat-1", page_token=PageToken("log", 1).encode()),
         "page_token"),
    ]:
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListPatientRecords(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith(field)


def test_only_the_records_service_lists_a_patients_records(world):
    net, channel, _, _ = world
    consent = ServiceStub(channel, net, "svc-consent")
    with pytest.raises(grpc.RpcError) as refused:
        consent.ListPatientRecords(ledger_pb2.ListPatientRecordsRequest(patient_id="pat-1"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


class _LinkedState:
    """A state that knows links (what issue 14 part 1 adds to the chain store)."""

    def linked_patients(self, patient_id: str) -> list[str]:
        return {"psn-net": ["psn-a", "psn-net", "psn-b"]}.get(patient_id, [])


def test_the_identities_searched_are_the_patient_then_its_linked_ones():
    assert searched_identities(object(), "psn-1") == ["psn-1"]  # no links in the state: one identity
    assert searched_identities(_LinkedState(), "psn-net") == ["psn-net", "psn-a", "psn-b"]
    assert searched_identities(_LinkedState(), "psn-a") == ["psn-a"]
