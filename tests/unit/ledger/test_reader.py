"""VerifiedLedgerReader following by push: no call per sync while the stream is live, and pushed blocks are verified."""

from __future__ import annotations

import base64
import time
from concurrent import futures

import grpc
import pytest
from ledger_fixtures import CHAIN, Net, onboarding, record, tx
from ledger_service_fixtures import ServiceStub, ledger_service

from carechain.core.errors import IntegrityError
from carechain.ledger import submission
from carechain.ledger.quorum import ValidatorSet
from carechain.ledger.reader import VerifiedLedgerReader
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc


def wait_for(condition, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def verified(reader: VerifiedLedgerReader, start: int = 0) -> list[ledger_pb2.LoggedTransaction]:
    return list(reader.list_transactions(ledger_pb2.ListTransactionsRequest(from_log_index=start)).transactions)


def test_pushed_blocks_reach_the_reader_and_syncs_make_no_calls(tmp_path):
    net = Net()
    with ledger_service(tmp_path, net) as running, grpc.insecure_channel(running.address) as channel:
        stub = ServiceStub(channel, net)
        for t in onboarding(net)[0]:
            submission.submit(stub, t)
        reader = VerifiedLedgerReader(stub, CHAIN, net.trust, ValidatorSet.single())
        stop = reader.watch(heartbeat_ms=100)
        try:
            wait_for(lambda: len(verified(reader)) == 3, "the onboarding to be pushed")
            on_demand = stub.calls.get("GetChainHead", 0), stub.calls.get("GetBlock", 0)
            committed = submission.submit(stub, tx(net.records, register_record=record("pat-1", "org-1", "r-1")))
            wait_for(lambda: any(t.log_index == committed.log_index for t in verified(reader, 3)),
                     "the new record to be pushed")
            for _ in range(20):  # a consumer syncing before every answer
                verified(reader, committed.log_index + 1)
            assert (stub.calls.get("GetChainHead", 0), stub.calls.get("GetBlock", 0)) == on_demand
        finally:
            stop()


class TamperingLedger(ledger_pb2_grpc.LedgerServiceServicer):
    """Serves an honest ledger's blocks, with one bit of block 2's first transaction flipped."""

    def __init__(self, honest: ServiceStub) -> None:
        self.honest = honest

    def _block(self, height: int) -> ledger_pb2.Block:
        block = self.honest.GetBlock(ledger_pb2.GetBlockRequest(height=height))
        if height == 2:
            body = block.transactions[0].body
            block.transactions[0].body = body[:-1] + bytes([body[-1] ^ 1])
        return block

    def GetChainHead(self, request, context):  # noqa: N802
        return self.honest.GetChainHead(request)

    def GetBlock(self, request, context):  # noqa: N802
        return self._block(request.height)

    def WatchBlocks(self, request, context):  # noqa: N802
        head = self.honest.GetChainHead(ledger_pb2.GetChainHeadRequest()).header.height
        yield ledger_pb2.WatchBlocksResponse(blocks=[self._block(h) for h in range(request.from_height, head + 1)],
                                             final_height=head)
        while context.is_active():
            time.sleep(0.05)
            yield ledger_pb2.WatchBlocksResponse(final_height=head)


def test_a_tampered_pushed_block_is_never_handed_out(tmp_path):
    net = Net()
    with ledger_service(tmp_path, net) as running, grpc.insecure_channel(running.address) as channel:
        honest = ServiceStub(channel, net)
        for t in onboarding(net)[0]:
            submission.submit(honest, t)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ledger_pb2_grpc.add_LedgerServiceServicer_to_server(TamperingLedger(honest), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as lying:
                reader = VerifiedLedgerReader(ledger_pb2_grpc.LedgerServiceStub(lying), CHAIN, net.trust,
                                              ValidatorSet.single())
                stop = reader.watch(heartbeat_ms=50)
                try:
                    time.sleep(0.5)  # the stream delivered the chain, tampered block included
                    with pytest.raises(IntegrityError, match="ledger block 2"):
                        verified(reader)  # nothing beyond block 1 is ever verified; on demand it is refused
                finally:
                    stop()
        finally:
            server.stop(0).wait()


def test_the_replayed_contract_state_keeps_no_record_entry_and_checks_as_before(tmp_path):
    # A follower holds one row per record of the whole history: a compact RegisterRecord. A duplicate
    # registration is still found invalid by the reader's own replay, exactly as the ledger marked it.
    net = Net()
    with ledger_service(tmp_path, net) as running, grpc.insecure_channel(running.address) as channel:
        stub = ServiceStub(channel, net)
        for t in onboarding(net)[0]:
            submission.submit(stub, t)
        submission.submit(stub, tx(net.records, register_record=record("pat-1", "org-1", "r-1")))
        duplicate = stub.SubmitTransaction(ledger_pb2.SubmitTransactionRequest(
            transaction=tx(net.records, register_record=record("pat-1", "org-1", "r-1")),
            ack=ledger_pb2.ACK_LEVEL_FINAL))
        reader = VerifiedLedgerReader(stub, CHAIN, net.trust, ValidatorSet.single())
        logged = verified(reader)
        assert [t.result.valid for t in logged] == [True, True, True, True, False]
        assert duplicate.log_index == 4
        position = reader.export_position(lambda _logged: None, len(logged))
        assert position is not None
        rows = position["contract_state"]["records"]
        assert [(r["record_id"], r["patient_id"]) for r in rows] == [("r-1", "pat-1")]
        kept = ledger_pb2.RegisterRecord.FromString(base64.b64decode(rows[0]["entry"]))
        registered = record("pat-1", "org-1", "r-1")
        # What a new version is checked against stays (Validator._check_new_version); sealed metadata goes.
        assert (kept.record_id, kept.patient_id, kept.organization_id, kept.content_sha256) == (
            "r-1", "pat-1", "org-1", registered.content_sha256)
        assert not kept.HasField("sealed_metadata") and registered.HasField("sealed_metadata")
