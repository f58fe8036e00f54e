"""The etcd orderer and client on a real 3-member cluster: one dense order for many appenders, agreed cuts."""

from __future__ import annotations

import socket
import threading

import pytest

from carechain.ledger.cutter import BlockCut
from carechain.ledger.etcd_orderer import EtcdOrderer
from carechain.runtime.etcd import Compare, Op, prefix_end

pytest_plugins = ["servers_etcd"]

CHAIN = "order-chain"


def rotated(urls: list[str], by: int) -> list[str]:
    return urls[by:] + urls[:by]


@pytest.fixture()
def orderers(etcd_cluster, etcd_prefix):
    """One orderer per member (each with its own client, preferring a different member), as separate validators."""
    made = [
        EtcdOrderer(etcd_cluster.client(rotated(etcd_cluster.client_urls, i)), etcd_prefix, CHAIN, owns_client=True)
        for i in range(3)
    ]
    yield made
    for orderer in made:
        orderer.close()


def test_appenders_on_every_member_get_one_dense_order_without_duplicates(orderers):
    sequences: dict[bytes, int] = {}
    lock = threading.Lock()

    def appender(orderer: EtcdOrderer, name: str) -> None:
        for i in range(20):
            entry = f"{name}-{i}".encode()
            sequence = orderer.append(entry)
            with lock:
                sequences[entry] = sequence

    threads = [
        threading.Thread(target=appender, args=(orderer, f"v{v}t{t}"))
        for v, orderer in enumerate(orderers)
        for t in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(sequences.values()) == list(range(120))
    order = orderers[0].read(0, 1000)
    assert [seq for seq, _ in order] == list(range(120))
    # Each entry sits exactly at the sequence its appender was told, and every validator reads the same order.
    assert {entry: seq for seq, entry in order} == sequences
    assert orderers[1].read(0, 1000) == order == orderers[2].read(0, 1000)
    # Each appender's own entries keep their submission order.
    for name in {entry.rsplit(b"-", 1)[0] for entry in sequences}:
        own = [sequences[f"{name.decode()}-{i}".encode()] for i in range(20)]
        assert own == sorted(own)


def test_the_order_survives_the_orderer_and_continues_densely(etcd_cluster, etcd_prefix):
    first = EtcdOrderer(etcd_cluster.client(), etcd_prefix, CHAIN, owns_client=True)
    assert [first.append(b"a"), first.append(b"b")] == [0, 1]
    first.close()

    again = EtcdOrderer(etcd_cluster.client(), etcd_prefix, CHAIN, owns_client=True)
    try:
        assert again.read(0, 10) == [(0, b"a"), (1, b"b")]
        assert again.append(b"c") == 2
        assert again.wait(1, timeout=5) is True
    finally:
        again.close()


def test_a_wait_sees_entries_appended_by_another_validator(orderers):
    result: list[bool] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        result.append(orderers[0].wait(-1, timeout=30))

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait()
    orderers[2].append(b"from elsewhere")
    thread.join(timeout=30)
    assert result == [True]


def test_the_first_recorded_block_cut_holds_for_every_validator(orderers):
    for orderer in orderers:
        orderer.append(b"x")
    assert orderers[0].recorded_cut(1) is None
    proposals = [BlockCut(1, 0, count, 1_000 + count) for count in (1, 2, 3)]
    agreed: list[BlockCut] = []
    lock = threading.Lock()

    def propose(orderer: EtcdOrderer, cut: BlockCut) -> None:
        held = orderer.record_cut(cut)
        with lock:
            agreed.append(held)

    threads = [threading.Thread(target=propose, args=pair) for pair in zip(orderers, proposals, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(agreed)) == 1 and agreed[0] in proposals
    assert all(orderer.recorded_cut(1) == agreed[0] for orderer in orderers)
    assert orderers[1].record_cut(BlockCut(1, 0, 1, 5)) == agreed[0]  # later proposals never change it


def test_the_order_is_scoped_by_prefix_and_chain(etcd_cluster, etcd_prefix):
    client = etcd_cluster.client()
    a = EtcdOrderer(client, etcd_prefix, "chain-a")
    b = EtcdOrderer(client, etcd_prefix, "chain-b")
    try:
        a.append(b"only a")
        assert b.read(0, 10) == [] and b.append(b"only b") == 0
        assert a.read(0, 10) == [(0, b"only a")]
    finally:
        a.close()
        b.close()
        client.close()


def test_the_client_fails_over_past_a_member_that_does_not_answer(etcd_cluster, etcd_prefix):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once the socket is closed
    client = etcd_cluster.client([dead, *etcd_cluster.client_urls])
    try:
        client.put(f"{etcd_prefix}/k", b"v1")
        assert client.get(f"{etcd_prefix}/k").value == b"v1"
        swapped = client.txn(
            [Compare.value(f"{etcd_prefix}/k", "==", b"v1")], [Op.put(f"{etcd_prefix}/k", b"v2")]
        )
        stale = client.txn(
            [Compare.value(f"{etcd_prefix}/k", "==", b"v1")],
            [Op.put(f"{etcd_prefix}/k", b"v3")],
            [Op.get(f"{etcd_prefix}/k")],
        )
        assert swapped.succeeded and not stale.succeeded
        assert stale.responses[0].kvs[0].value == b"v2"
        for i in range(5):
            client.put(f"{etcd_prefix}/p/{i}", str(i))
        page = client.get_prefix(f"{etcd_prefix}/p/", limit=2)
        assert [kv.value for kv in page.kvs] == [b"0", b"1"] and page.more and page.count == 5
        assert [kv.value for kv in client.scan(f"{etcd_prefix}/p/", f"{etcd_prefix}/p0", page=2)] == [
            str(i).encode() for i in range(5)
        ]
    finally:
        client.close()


def test_a_watch_pushes_each_change_of_its_range_and_nothing_else(etcd_cluster, etcd_prefix):
    client = etcd_cluster.client()
    watched = f"{etcd_prefix}/watched/"
    received: list[tuple[bytes, bytes]] = []
    created = threading.Event()

    def watch() -> None:
        for batch in client.watch(watched, prefix_end(watched), idle_timeout=3):
            created.set()  # the first response confirms the watch
            received.extend((kv.key, kv.value) for kv in batch.changes)
            if len(received) >= 2:
                return

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        assert created.wait(30), "etcd never confirmed the watch"
        client.put(f"{watched}a", b"1")
        client.put(f"{etcd_prefix}/elsewhere", b"not watched")
        client.put(f"{watched}b", b"2")
    finally:
        thread.join(30)
        client.close()
    assert received == [(f"{watched}a".encode(), b"1"), (f"{watched}b".encode(), b"2")]


def test_other_validators_appends_reach_a_waiting_orderer_by_push(orderers):
    first, second = orderers[0], orderers[1]
    assert not second.wait(-1, 0.2)  # nothing yet; starts its watch of order-next
    deadline = threading.Event()
    for _ in range(300):
        if second.pushed:
            break
        deadline.wait(0.1)
    assert second.pushed, "the orderer's watch of order-next never ran"
    first.append_many([b"a", b"b"])
    assert second.wait(-1, 30) and second.read(0, 10) == [(0, b"a"), (1, b"b")]
