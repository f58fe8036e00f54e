"""Faults on a real 3-member etcd cluster: one member down is tolerated; without a quorum calls fail with
UNAVAILABLE naming etcd and nothing is acknowledged; once the quorum is back everything works again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from unit.ledger_fixtures import CHAIN, Kind, Net, register

from carechain.audit.etcd_store import EtcdAuditStore
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import Unavailable
from carechain.dev.backends.etcd import EtcdCluster
from carechain.ledger import transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.etcd_orderer import EtcdOrderer
from carechain.runtime.etcd import EtcdClient, OutcomeUnknown

pytest_plugins = ["servers_etcd"]

TIMEOUT = 120  # a ceiling on condition waits, not a budget


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, start_etcd_cluster) -> Iterator[EtcdCluster]:
    """A cluster of our own: these tests stop and kill members."""
    own = start_etcd_cluster(tmp_path_factory.mktemp("etcd-faults"))
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture()
def restore(cluster) -> Iterator[EtcdCluster]:
    yield cluster
    for index in range(len(cluster.members)):
        cluster.start_member(index)


@pytest.fixture()
def prefix() -> str:
    return f"/carechain-faults/{uuid.uuid4().hex}"


@pytest.fixture()
def net() -> Net:
    return Net()


def audit_event() -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()), time_ms=1_000, service="records", actor_id="prac-1", patient_id="pat-1",
        action=audit_pb2.AUDIT_ACTION_READ, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
    )


def organisation(net: Net, name: str):
    return register(net, name, Kind.PRINCIPAL_KIND_ORGANIZATION)[0]


def test_writes_continue_while_one_member_is_down(restore, prefix, net, tmp_path):
    cluster = restore
    orderer = EtcdOrderer(cluster.client(), prefix, CHAIN, owns_client=True)
    audit = EtcdAuditStore(cluster.client(), prefix + "/audit", owns_client=True)
    ledger = Ledger.open(tmp_path / "ledger", CHAIN, net.ledger, net.trust, orderer=orderer, block_max_wait_ms=5)
    try:
        assert ledger.submit(organisation(net, "org-before"), TIMEOUT).valid
        cluster.kill_member(0)  # the member every client tries first
        assert ledger.submit(organisation(net, "org-during"), TIMEOUT).valid
        assert [orderer.append(b"x") for _ in range(3)] == [2, 3, 4]
        assert audit.append(audit_event())[0] == 1
        cluster.stop_member(1)
        cluster.start_member(0)  # back, with member 2 keeps the quorum
        assert orderer.append(b"y") == 5
        assert audit.verify().ok
    finally:
        ledger.close()
        orderer.close()
        audit.close()
    cluster.start_member(1)
    # A member that was down catches up: reading only from it shows the whole order.
    lagging = EtcdOrderer(cluster.client([cluster.client_urls[1]]), prefix, CHAIN, owns_client=True)
    try:
        assert [seq for seq, _ in lagging.read(0, 100)] == list(range(6))
    finally:
        lagging.close()


def test_without_a_quorum_calls_fail_with_unavailable_and_work_again_once_it_is_back(restore, prefix, net, tmp_path):
    cluster = restore
    orderer = EtcdOrderer(cluster.client(), prefix, CHAIN, owns_client=True)
    audit = EtcdAuditStore(cluster.client(), prefix + "/audit", owns_client=True)
    ledger = Ledger.open(tmp_path / "ledger", CHAIN, net.ledger, net.trust, orderer=orderer, block_max_wait_ms=5)
    try:
        acknowledged = [ledger.submit(organisation(net, f"org-{i}"), TIMEOUT) for i in range(2)]
        audit.append(audit_event())
        cluster.stop_member(1)
        cluster.kill_member(2)

        refused = organisation(net, "org-refused")
        with pytest.raises(Unavailable, match="etcd") as raised:
            ledger.submit(refused, TIMEOUT)
        assert raised.value.backend == "etcd"
        for _ in range(3):  # later calls too: each one fails, none hangs, none is acknowledged
            with pytest.raises(Unavailable, match="etcd"):
                orderer.append(b"not acknowledged")
            with pytest.raises(Unavailable, match="etcd"):
                audit.append(audit_event())
            with pytest.raises(Unavailable, match="etcd"):
                orderer.read(0, 10)

        cluster.start_member(1)
        cluster.start_member(2)
        after = ledger.submit(organisation(net, "org-after"), TIMEOUT)
        assert after.valid and after.log_index > acknowledged[-1].log_index
        assert audit.append(audit_event())[0] >= 2
        assert audit.verify().ok
        # The order stayed dense and every ordered transaction is in the log exactly once. (A refused append
        # may still have been committed by etcd after its timeout: then it is ordered, and logged once.)
        order = orderer.read(0, 100)
        assert [seq for seq, _ in order] == list(range(len(order)))
        in_log = [transactions.encode(lt.transaction) for lt in ledger.list_transactions(0, 100)]
        ordered_txs = [entry for _, entry in order if not entry.startswith(b"not acknowledged")]
        assert in_log == ordered_txs and len(set(in_log)) == len(in_log)
        result = verify_chain(ledger.store, net.trust)
        assert result.ok, result.problem
    finally:
        ledger.close()
        orderer.close()
        audit.close()


class LosesAnswers(EtcdClient):
    """A real client whose next `lose` transactions are committed by etcd but answered with OutcomeUnknown,
    as when the connection drops or the leader changes right after the commit."""

    def __init__(self, endpoints: list[str], lose: int, **options) -> None:
        super().__init__(endpoints, **options)
        self.lose = lose

    def txn(self, compare, success, failure=()):
        result = super().txn(compare, success, failure)
        if self.lose > 0:
            self.lose -= 1
            raise OutcomeUnknown("answer lost (injected)")
        return result


def test_an_append_whose_answer_was_lost_is_ordered_exactly_once(cluster, prefix):
    client = LosesAnswers(cluster.client_urls, lose=1, **cluster.client_options())
    orderer = EtcdOrderer(client, prefix, CHAIN, owns_client=True)
    try:
        assert orderer.append(b"first") == 0
        assert orderer.append(b"second") == 1
        assert orderer.read(0, 10) == [(0, b"first"), (1, b"second")]
    finally:
        orderer.close()


def test_an_audit_append_whose_answer_was_lost_is_stored_once_with_its_receipt(cluster, prefix):
    client = LosesAnswers(cluster.client_urls, lose=1, **cluster.client_options())
    store = EtcdAuditStore(client, prefix + "/audit", owns_client=True)
    try:
        event = audit_event()
        receipt = store.append(event)
        assert receipt[0] == 1 and store.append(event) == receipt
        assert store.append(audit_event())[0] == 2
        assert store.verify().ok and store.verify().events_checked == 2
    finally:
        store.close()
