"""The Orderer contract, run against every implementation.

To add an implementation, add a factory to ORDERER_FACTORIES; a factory gets
the test's request (to reach server fixtures such as the etcd cluster) and may
call pytest.skip() when its backend is not installed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from carechain.ledger.cutter import BlockCut, BlockCutRegistry
from carechain.ledger.etcd_orderer import EtcdOrderer
from carechain.ledger.memory_orderer import InProcessOrderer, SharedOrder
from carechain.ledger.ordering import Orderer
from carechain.ledger.quorum import VoteBoard

pytest_plugins = ["servers_etcd"]


def _in_process(request: pytest.FixtureRequest) -> Orderer:
    return InProcessOrderer()


def _etcd(request: pytest.FixtureRequest) -> Orderer:
    cluster = request.getfixturevalue("etcd_cluster")
    prefix = request.getfixturevalue("etcd_prefix")
    return EtcdOrderer(cluster.client(), prefix, "contract-chain", owns_client=True)


ORDERER_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], Orderer]] = {
    "in-process": _in_process,
    "etcd": _etcd,
    "shared-in-memory": lambda request: SharedOrder(),
}
#: Orderers that several validators can share: agreed cuts and a vote board.
SHARED = ("etcd", "shared-in-memory")


@pytest.fixture(params=sorted(ORDERER_FACTORIES))
def orderer(request: pytest.FixtureRequest) -> Iterator[Orderer]:
    instance = ORDERER_FACTORIES[request.param](request)
    yield instance
    instance.close()


def test_implements_the_protocol(orderer: Orderer):
    assert isinstance(orderer, Orderer)
    assert isinstance(orderer.durable, bool)


def test_sequence_numbers_are_dense_from_zero(orderer: Orderer):
    assert [orderer.append(f"tx{i}".encode()) for i in range(5)] == [0, 1, 2, 3, 4]


def test_read_returns_entries_in_order_from_a_sequence_with_a_limit(orderer: Orderer):
    for i in range(6):
        orderer.append(bytes([i]))
    assert orderer.read(0, 100) == [(i, bytes([i])) for i in range(6)]
    assert orderer.read(2, 3) == [(2, b"\x02"), (3, b"\x03"), (4, b"\x04")]
    assert orderer.read(6, 10) == []
    assert orderer.read(0, 0) == []


def test_empty_and_duplicate_entries_are_kept(orderer: Orderer):
    assert orderer.append(b"") == 0
    assert orderer.append(b"same") == 1
    assert orderer.append(b"same") == 2
    assert [entry for _, entry in orderer.read(0, 10)] == [b"", b"same", b"same"]


def test_wait_returns_at_once_when_entries_exist(orderer: Orderer):
    orderer.append(b"a")
    assert orderer.wait(-1, timeout=5) is True


def test_wait_times_out_without_new_entries(orderer: Orderer):
    orderer.append(b"a")
    assert orderer.wait(0, timeout=0.01) is False


def test_wait_wakes_when_another_thread_appends(orderer: Orderer):
    started = threading.Event()
    result: list[bool] = []

    def waiter() -> None:
        started.set()
        result.append(orderer.wait(-1, timeout=30))

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait()
    orderer.append(b"x")
    thread.join(timeout=30)
    assert result == [True]


def test_concurrent_appends_get_distinct_dense_sequences(orderer: Orderer):
    sequences: list[int] = []
    lock = threading.Lock()

    def worker(worker_id: int) -> None:
        for i in range(50):
            seq = orderer.append(f"{worker_id}-{i}".encode())
            with lock:
                sequences.append(seq)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sequences) == list(range(200))
    entries = orderer.read(0, 1000)
    assert len({entry for _, entry in entries}) == 200
    # Every reader sees the same order.
    assert entries == orderer.read(0, 1000)


def test_append_many_orders_a_batch_in_order_among_concurrent_appends(orderer: Orderer):
    singles: list[int] = []
    batches: list[list[int]] = []
    lock = threading.Lock()

    def single(worker_id: int) -> None:
        for i in range(20):
            seq = orderer.append(f"single-{worker_id}-{i}".encode())
            with lock:
                singles.append(seq)

    def batch(worker_id: int) -> None:
        for i in range(5):
            seqs = orderer.append_many([f"batch-{worker_id}-{i}-{j}".encode() for j in range(30)])
            with lock:
                batches.append(seqs)

    threads = [threading.Thread(target=single, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=batch, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = singles + [seq for seqs in batches for seq in seqs]
    assert sorted(every) == list(range(60 + 300))
    order = dict(orderer.read(0, 1000))
    for seqs in batches:
        assert seqs == sorted(seqs)  # a batch keeps its own order
        names = [order[seq].decode() for seq in seqs]
        assert len({name.rsplit("-", 1)[0] for name in names}) == 1 and names == sorted(names, key=lambda n: int(
            n.rsplit("-", 1)[1]))
    assert orderer.append_many([]) == []


def test_released_entries_are_forgotten_only_by_a_non_durable_orderer(orderer: Orderer):
    for i in range(10):
        orderer.append(f"tx{i}".encode())
    orderer.release(6)
    if orderer.durable:
        # Shared and durable: other validators (and catch-up) still read every entry.
        assert [seq for seq, _ in orderer.read(0, 100)] == list(range(10))
    else:
        assert orderer.read(6, 100) == [(i, f"tx{i}".encode()) for i in range(6, 10)]
        with pytest.raises(ValueError, match="released"):
            orderer.read(0, 100)
    assert orderer.append(b"next") == 10


@pytest.fixture(params=SHARED)
def shared(request: pytest.FixtureRequest) -> Iterator[Orderer]:
    instance = ORDERER_FACTORIES[request.param](request)
    yield instance
    instance.close()


def test_shared_orderers_agree_cuts_and_carry_votes(shared: Orderer):
    assert isinstance(shared, BlockCutRegistry) and isinstance(shared, VoteBoard) and shared.durable


def test_the_first_recorded_cut_holds(shared):
    assert shared.recorded_cut(1) is None
    first = BlockCut(1, 0, 3, 1000)
    assert shared.record_cut(first) == first
    assert shared.record_cut(BlockCut(1, 0, 5, 2000)) == first
    assert shared.recorded_cut(1) == first


def test_a_vote_is_written_once_and_read_back_by_height_range(shared):
    assert shared.publish_vote(3, "validator-a", b"vote-a3") == b"vote-a3"
    assert shared.publish_vote(3, "validator-a", b"another") == b"vote-a3", "a validator cannot change its vote"
    shared.publish_vote(3, "validator-b", b"vote-b3")
    shared.publish_vote(4, "validator-a", b"vote-a4")
    shared.publish_vote(12, "validator-a", b"vote-a12")
    assert shared.votes(3, 4) == {3: {"validator-a": b"vote-a3", "validator-b": b"vote-b3"},
                                  4: {"validator-a": b"vote-a4"}}
    assert shared.votes(5, 11) == {}
    assert shared.votes(12, 12) == {12: {"validator-a": b"vote-a12"}}
