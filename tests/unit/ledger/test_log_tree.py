"""The log's Merkle tree kept in the chain store: a reopen reads the head's frontier, not every leaf.

Restart cost is counted (leaves read to rebuild the stored subtrees), never timed.
"""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from ledger_fixtures import TIMEOUT, Net, grant, net_fixture, onboarding, open_ledger  # noqa: F401 - net fixture

from carechain.core import merkle
from carechain.core.errors import DataLoss
from carechain.ledger import transactions
from carechain.ledger.queries import ChainView, StoredLogTree
from carechain.ledger.sqlite_store import DB_FILE, LedgerStore, LogEntry, StoredBlock
from carechain.ledger.state import PendingState
from carechain.ledger.v1 import ledger_pb2


def _leaf(index: int) -> bytes:
    return merkle.leaf_hash(f"tx-{index}".encode())


def _commit_blocks(store: LedgerStore, block_sizes: list[int]) -> list[bytes]:
    """Commit blocks of synthetic log entries (one height per size, genesis first); the leaf hashes, in order."""
    leaves: list[bytes] = []
    frontier = merkle.Frontier()
    for height, count in enumerate(block_sizes):
        entries = []
        for offset in range(count):
            index = len(leaves)
            leaves.append(_leaf(index))
            frontier.append(leaves[-1])
            entries.append(LogEntry(index, height, offset, f"tx-{index}".encode(), leaves[-1], True, ""))
        header = transactions.encode(ledger_pb2.BlockHeader(height=height, log_size=frontier.size,
                                                            log_root=frontier.root()))
        stored = StoredBlock(height, header, hashlib.sha256(header).digest(), header)
        store.commit_block(stored, entries, PendingState(store))
    return leaves


def test_completed_subtrees_are_the_perfect_subtree_roots_of_the_tree():
    leaves = [_leaf(i) for i in range(37)]
    reference = merkle.MerkleTree(leaves)
    first = merkle.completed_subtrees(0, leaves[:20], lambda level, position: pytest.fail("no earlier tree"))
    known = {**first, **{(0, i): leaf for i, leaf in enumerate(leaves[:20])}}
    rest = merkle.completed_subtrees(20, leaves[20:], lambda level, position: known[(level, position)])
    nodes = {**first, **rest}
    expected = {(level, lo >> level): reference._range_root(lo, lo + (1 << level))
                for level in range(1, 6) for lo in range(0, 37 - (1 << level) + 1, 1 << level)}
    assert nodes == expected


def test_a_frontier_from_subtrees_equals_the_one_built_from_every_leaf():
    leaves = [_leaf(i) for i in range(45)]
    nodes = merkle.completed_subtrees(0, leaves, lambda level, position: pytest.fail("no earlier tree"))
    for size in range(46):
        rebuilt = merkle.Frontier.from_subtrees(
            size, lambda level, position: leaves[position] if level == 0 else nodes[(level, position)])
        assert rebuilt.size == size
        assert rebuilt.root() == merkle.Frontier.from_leaf_hashes(leaves[:size]).root()


def test_proofs_from_the_stored_tree_equal_those_of_the_in_memory_tree(tmp_path):
    store = LedgerStore.open(tmp_path)
    try:
        leaves = _commit_blocks(store, [0, 1, 3, 7, 2, 16, 1, 5])
        stored, reference = StoredLogTree(store, len(leaves)), merkle.MerkleTree(leaves)
        for size in range(1, len(leaves) + 1):
            assert stored.root(size) == reference.root(size)
            for index in range(size):
                assert stored.inclusion_proof(index, size) == reference.inclusion_proof(index, size)
            for first in range(size + 1):
                assert stored.consistency_proof(first, size) == reference.consistency_proof(first, size)
    finally:
        store.close()


def test_reopening_reads_no_leaves_when_the_stored_subtrees_match_the_head(tmp_path):
    store = LedgerStore.open(tmp_path)
    try:
        leaves = _commit_blocks(store, [0, 100, 28, 255, 1])
        view = ChainView(store)
        assert view.replayed_leaves == 0
        assert view.frontier().root() == merkle.root(leaves) and view.log_size() == len(leaves)
    finally:
        store.close()


def _tamper(tmp_path, sql: str) -> None:
    db = sqlite3.connect(tmp_path / DB_FILE)
    try:
        db.execute(sql)
        db.commit()
    finally:
        db.close()


def test_a_tampered_frontier_node_is_refused_and_rebuilt_from_the_leaves(tmp_path):
    store = LedgerStore.open(tmp_path)
    leaves = _commit_blocks(store, [0, 64, 36])  # 100 leaves: frontier subtrees of 64, 32 and 4
    store.close()
    _tamper(tmp_path, "UPDATE log_nodes SET hash = zeroblob(32) WHERE level = 6 AND position = 0")
    store = LedgerStore.open(tmp_path)
    try:
        view = ChainView(store)
        assert view.replayed_leaves == len(leaves)
        assert view.frontier().root() == merkle.root(leaves)
        assert store.log_node(6, 0) == merkle.MerkleTree(leaves).root(64)
        assert ChainView(store).replayed_leaves == 0  # repaired once, then O(log n) again
    finally:
        store.close()


def test_a_store_from_before_log_nodes_is_rebuilt_once(tmp_path):
    store = LedgerStore.open(tmp_path)
    leaves = _commit_blocks(store, [0, 9, 30])
    store.close()
    _tamper(tmp_path, "DELETE FROM log_nodes")
    store = LedgerStore.open(tmp_path)
    try:
        assert ChainView(store).replayed_leaves == len(leaves)
        assert ChainView(store).replayed_leaves == 0
    finally:
        store.close()


def test_leaves_that_do_not_hash_to_the_head_root_are_data_loss(tmp_path):
    store = LedgerStore.open(tmp_path)
    _commit_blocks(store, [0, 12])
    store.close()
    _tamper(tmp_path, "UPDATE log_entries SET leaf_hash = zeroblob(32) WHERE log_index = 5")
    _tamper(tmp_path, "DELETE FROM log_nodes")
    store = LedgerStore.open(tmp_path)
    try:
        with pytest.raises(DataLoss, match="log root"):
            ChainView(store)
    finally:
        store.close()


def test_a_damaged_inner_node_is_never_served_in_a_proof(tmp_path):
    store = LedgerStore.open(tmp_path)
    _commit_blocks(store, [0, 64, 36])
    store.close()
    # Not on the frontier, so the open check cannot see it; a proof through it is refused.
    _tamper(tmp_path, "UPDATE log_nodes SET hash = zeroblob(32) WHERE level = 1 AND position = 3")
    store = LedgerStore.open(tmp_path)
    try:
        view = ChainView(store)
        view.inclusion_proof(0)  # its path does not pass through the damaged node
        with pytest.raises(DataLoss, match="damaged"):
            view.inclusion_proof(4)
        with pytest.raises(DataLoss, match="damaged"):
            view.consistency_proof(6, 100)
    finally:
        store.close()


def test_a_restarted_ledger_reads_no_history_and_its_proofs_verify(tmp_path, net: Net):
    txs, keys = onboarding(net)
    ledger = open_ledger(tmp_path, net)
    for t in txs:
        ledger.submit(t, TIMEOUT)
    ledger.close()
    reopened = open_ledger(tmp_path, net)
    try:
        assert reopened.replayed_leaves == 0
        committed = reopened.submit(grant(keys["pat-1"]), TIMEOUT)
        head, _ = reopened.head()
        for index in range(committed.log_index + 1):
            proof = reopened.inclusion_proof(index)
            merkle.verify_inclusion(merkle.leaf_hash(proof.leaf), index, head.log_size, list(proof.hashes),
                                    head.log_root)
    finally:
        reopened.close()


def test_ledger_verify_names_a_damaged_stored_log_tree_node(tmp_path, net: Net):
    from carechain.ledger.copy_check import verify_chain

    ledger = open_ledger(tmp_path, net)
    for t in onboarding(net)[0]:
        ledger.submit(t, TIMEOUT)
    ledger.close()
    store = LedgerStore.open_read_only(tmp_path / "ledger")
    try:
        assert verify_chain(store, net.trust).ok
    finally:
        store.close()
    _tamper(tmp_path / "ledger", "UPDATE log_nodes SET hash = zeroblob(32) WHERE level = 1 AND position = 0")
    store = LedgerStore.open_read_only(tmp_path / "ledger")
    try:
        result = verify_chain(store, net.trust)
        assert not result.ok and "log tree node (level 1, position 0)" in result.problem
    finally:
        store.close()
