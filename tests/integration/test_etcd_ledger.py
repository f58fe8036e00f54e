"""The ledger with orderer=etcd on a real 3-member cluster: resume without loss or duplication, identical blocks."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from unit.ledger_fixtures import CHAIN, Kind, Net, register

from carechain.core.layout import audience, write_public_key
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.dev.localnet import free_port, wait_healthy
from carechain.ledger import transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.cutter import BlockCut
from carechain.ledger.etcd_orderer import EtcdOrderer
from carechain.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from carechain.runtime.auth import Caller, caller_claims

pytest_plugins = ["servers_etcd"]

TIMEOUT = 120  # a ceiling on condition waits, not a budget


@pytest.fixture()
def net() -> Net:
    return Net()


def orderer_for(cluster, prefix: str) -> EtcdOrderer:
    return EtcdOrderer(cluster.client(), prefix, CHAIN, owns_client=True)


def open_ledger(directory: pathlib.Path, net: Net, orderer: EtcdOrderer, **kwargs) -> Ledger:
    kwargs.setdefault("block_max_wait_ms", 5)
    return Ledger.open(directory, CHAIN, net.ledger, net.trust, orderer=orderer, **kwargs)


def organisations(net: Net, count: int, start: int = 0) -> list[ledger_pb2.Transaction]:
    return [register(net, f"org-{i}", Kind.PRINCIPAL_KIND_ORGANIZATION)[0] for i in range(start, start + count)]


def wait_for_log_size(ledger: Ledger, size: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while ledger.log_size() < size:
        assert time.monotonic() < deadline, f"log size stays at {ledger.log_size()}, expected {size}"
        time.sleep(0.02)


def logged(ledger: Ledger) -> list[bytes]:
    return [transactions.encode(lt.transaction) for lt in ledger.list_transactions(0, 1000)]


def headers(ledger: Ledger) -> list[bytes]:
    return [ledger.store.block(h).header for h in range(ledger.head()[0].height + 1)]


def test_ordered_but_uncut_transactions_are_committed_exactly_once_after_a_restart(
    tmp_path, net, etcd_cluster, etcd_prefix
):
    orderer = orderer_for(etcd_cluster, etcd_prefix)
    ledger = open_ledger(tmp_path / "ledger", net, orderer)
    acknowledged = [ledger.submit(t, TIMEOUT) for t in organisations(net, 3)]
    ledger.close()
    # Ordered while no validator ran (as if the ledger died between ordering and cutting).
    pending = organisations(net, 4, start=3)
    for t in pending:
        orderer.append(transactions.encode(t))
    orderer.close()

    orderer = orderer_for(etcd_cluster, etcd_prefix)
    reopened = open_ledger(tmp_path / "ledger", net, orderer)
    try:
        wait_for_log_size(reopened, 7)
        assert all(c.valid for c in acknowledged)
        assert logged(reopened) == [entry for _, entry in orderer.read(0, 100)]
        assert len(set(logged(reopened))) == 7
        assert all(lt.result.valid for lt in reopened.list_transactions(0, 100))
        after = reopened.submit(organisations(net, 1, start=7)[0], TIMEOUT)
        assert after.log_index == 7 and after.valid
        result = verify_chain(reopened.store, net.trust)
        assert result.ok, result.problem
    finally:
        reopened.close()
        orderer.close()


def test_a_recorded_cut_is_followed_exactly_after_a_restart(tmp_path, net, etcd_cluster, etcd_prefix):
    orderer = orderer_for(etcd_cluster, etcd_prefix)
    ledger = open_ledger(tmp_path / "ledger", net, orderer)
    ledger.submit(organisations(net, 1)[0], TIMEOUT)
    head = ledger.head()[0]
    ledger.close()
    # The ledger died after recording its cut of the next block but before committing it.
    for t in organisations(net, 5, start=1):
        orderer.append(transactions.encode(t))
    cut = orderer.record_cut(BlockCut(head.height + 1, head.log_size, 2, head.timestamp_ms + 7))

    reopened = open_ledger(tmp_path / "ledger", net, orderer, block_max_transactions=100)
    try:
        wait_for_log_size(reopened, 6)
        block = reopened.block(cut.height)
        header = ledger_pb2.BlockHeader.FromString(block.header)
        assert len(block.transactions) == 2 and header.timestamp_ms == cut.timestamp_ms
        assert verify_chain(reopened.store, net.trust).ok
    finally:
        reopened.close()
        orderer.close()


def test_validators_on_one_order_cut_byte_identical_blocks(tmp_path, net, etcd_cluster, etcd_prefix):
    orderers = [orderer_for(etcd_cluster, etcd_prefix) for _ in range(2)]
    # Different local cutting policies: the agreed cuts, not local timing, decide the blocks.
    first = open_ledger(tmp_path / "a", net, orderers[0], block_max_transactions=3, block_max_wait_ms=1)
    second = open_ledger(tmp_path / "b", net, orderers[1], block_max_transactions=50, block_max_wait_ms=30)
    try:
        txs = organisations(net, 24)
        submitters = [
            threading.Thread(target=lambda ledger=ledger, part=part: [ledger.submit(t, TIMEOUT) for t in part])
            for ledger, part in ((first, txs[:12]), (second, txs[12:]))
        ]
        for thread in submitters:
            thread.start()
        for thread in submitters:
            thread.join()
        wait_for_log_size(first, 24)
        wait_for_log_size(second, 24)
        assert headers(first) == headers(second)
        assert logged(first) == logged(second) == [entry for _, entry in orderers[0].read(0, 100)]
        assert verify_chain(first.store, net.trust).ok and verify_chain(second.store, net.trust).ok
    finally:
        first.close()
        second.close()
        for orderer in orderers:
            orderer.close()

    # A validator that joins later replays the order into the very same chain.
    late_orderer = orderer_for(etcd_cluster, etcd_prefix)
    late = open_ledger(tmp_path / "late", net, late_orderer)
    try:
        wait_for_log_size(late, 24)
        reference = Ledger.open(tmp_path / "a", CHAIN, net.ledger, net.trust, orderer=orderer_for(etcd_cluster,
                                                                                                  etcd_prefix))
        try:
            assert headers(late) == headers(reference)
        finally:
            reference.close()
            reference.orderer.close()
    finally:
        late.close()
        late_orderer.close()


def test_a_store_from_another_order_is_refused(tmp_path, net, etcd_cluster, etcd_prefix):
    orderer = orderer_for(etcd_cluster, etcd_prefix)
    open_ledger(tmp_path / "ledger", net, orderer).close()
    orderer.close()
    other = orderer_for(etcd_cluster, etcd_prefix + "-other")
    try:
        with pytest.raises(Exception, match="not cut from this orderer"):
            open_ledger(tmp_path / "ledger", net, other)
    finally:
        other.close()


# --- the ledger service as a real process, killed with SIGKILL ---------------------------------------


class LedgerProcess:
    """`carechain serve ledger` with orderer=etcd, as its own process."""

    def __init__(self, root: pathlib.Path, net: Net, etcd_env: dict[str, str], prefix: str) -> None:
        self.root, self.net = root, net
        self.address = f"127.0.0.1:{free_port()}"
        trust_dir = root / "trust"
        for principal_id, key in net.trust.keys.items():
            write_public_key(trust_dir / f"{principal_id}.pub", key)
        net.ledger.save(root / "svc-ledger.pem")
        self.env = {
            **os.environ,
            "CARECHAIN_LISTEN_ADDRESS": self.address,
            "CARECHAIN_DATA_DIR": str(root / "ledger"),
            "CARECHAIN_SIGNING_KEY_FILE": str(root / "svc-ledger.pem"),
            "CARECHAIN_TRUST_DIR": str(trust_dir),
            "CARECHAIN_CHAIN_ID": CHAIN,
            "CARECHAIN_ORDERER": "etcd",
            **etcd_env,
            "CARECHAIN_ETCD_PREFIX": prefix,
            "CARECHAIN_SHUTDOWN_GRACE_SECONDS": "0",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, **settings: str) -> None:
        env = {**self.env, **{f"CARECHAIN_{k.upper()}": v for k, v in settings.items()}}
        with open(self.root / "ledger.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "carechain", "serve", "ledger"], env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + 180
        while True:
            try:
                wait_healthy(self.address, 1)
                return
            except TimeoutError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ledger did not start; see {self.root / 'ledger.log'}") from None

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)

    def stub(self, channel: grpc.Channel):
        bearer = issue_token(self.net.identity, ACCESS_TOKEN_TYPE,
                             caller_claims(Caller("svc-identity", Kind.PRINCIPAL_KIND_SERVICE), audience("ledger")),
                             300)[0]
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        metadata = [("authorization", f"Bearer {bearer}")]
        return lambda method, request, timeout=TIMEOUT: getattr(stub, method)(request, metadata=metadata,
                                                                               timeout=timeout)


def test_a_killed_ledger_process_resumes_from_its_last_block_without_loss_or_duplication(
    tmp_path, net, etcd_cluster, etcd_prefix
):
    service = LedgerProcess(tmp_path, net, etcd_cluster.client_env(), etcd_prefix)
    orderer = orderer_for(etcd_cluster, etcd_prefix)
    # Blocks are cut when full (or after 10 s), so the last transactions stay ordered but uncut until the kill.
    service.start(block_max_transactions="4", block_max_wait_ms="10000")
    txs = organisations(net, 10)
    outcomes: dict[int, object] = {}
    try:
        with grpc.insecure_channel(service.address) as channel:
            call = service.stub(channel)

            def submit(index: int) -> None:
                try:
                    outcomes[index] = call("SubmitTransaction", ledger_pb2.SubmitTransactionRequest(
                        transaction=txs[index]))
                except grpc.RpcError as exc:
                    outcomes[index] = exc.code()

            threads = [threading.Thread(target=submit, args=(i,)) for i in range(10)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + TIMEOUT
            while len(orderer.read(0, 100)) < 10:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            # Two full blocks get committed and acknowledged; the last two transactions wait for a block.
            while sum(isinstance(o, ledger_pb2.SubmitTransactionResponse) for o in outcomes.values()) < 8:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            service.kill()
            for thread in threads:
                thread.join(timeout=TIMEOUT)
        acknowledged = {i for i, o in outcomes.items() if isinstance(o, ledger_pb2.SubmitTransactionResponse)}
        assert len(acknowledged) == 8
        assert all(outcomes[i] == grpc.StatusCode.UNAVAILABLE for i in set(range(10)) - acknowledged)

        service.start(block_max_transactions="4", block_max_wait_ms="5")
        with grpc.insecure_channel(service.address) as channel:
            call = service.stub(channel)
            deadline = time.monotonic() + TIMEOUT
            while call("GetChainHead", ledger_pb2.GetChainHeadRequest()).header.log_size < 10:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            listed = call("ListTransactions", ledger_pb2.ListTransactionsRequest(from_log_index=0, limit=100))
            verdict = call("VerifyChain", ledger_pb2.VerifyChainRequest())
        in_log = [transactions.encode(lt.transaction) for lt in listed.transactions]
        assert listed.log_size == 10
        assert in_log == [entry for _, entry in orderer.read(0, 100)]  # the order, once each
        assert sorted(in_log) == sorted(transactions.encode(t) for t in txs)
        assert all(lt.result.valid for lt in listed.transactions)
        assert verdict.ok, verdict.problem
    finally:
        service.stop()
        orderer.close()
