"""The validator node as a whole: genesis, restart and resume, the store's chain, verification while it commits."""

from __future__ import annotations

import threading
import tracemalloc

import pytest
from ledger_fixtures import (  # noqa: F401 - net and ledger are fixtures
    CHAIN,
    TIMEOUT,
    Kind,
    Net,
    grant,
    header,
    ledger_fixture,
    net_fixture,
    onboarding,
    open_ledger,
    register,
    tx,
)

from carechain.core import merkle
from carechain.core.crypto import sha256, verify_signature
from carechain.core.errors import AlreadyExists, FailedPrecondition
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.v1 import ledger_pb2


def test_first_start_creates_an_empty_signed_genesis_block(ledger: Ledger, net: Net):
    head, head_hash = ledger.head()
    assert head.height == 0 and head.chain_id == CHAIN
    assert head.previous_header_hash == bytes(32)
    assert head.log_size == 0 and head.log_root == merkle.EMPTY_ROOT == head.transactions_root
    genesis = ledger.block(0)
    assert head_hash == sha256(genesis.header)
    assert verify_signature(net.ledger.public_key_bytes(), genesis.signatures[0].signature,
                            b"carechain-block/v1\n" + genesis.header)


def test_a_restart_resumes_at_the_same_head_and_keeps_accepting(tmp_path, net: Net):
    txs, keys = onboarding(net)
    ledger = open_ledger(tmp_path, net)
    for t in txs:
        ledger.submit(t, TIMEOUT)
    before = ledger.head()
    ledger.close()

    reopened = open_ledger(tmp_path, net)
    try:
        assert reopened.head() == before
        # State survived: the patient registered before the restart can sign, and old nonces stay spent.
        committed = reopened.submit(grant(keys["pat-1"]), TIMEOUT)
        assert committed.valid and committed.height == before[0].height + 1 and committed.log_index == 3
        with pytest.raises(AlreadyExists):
            reopened.submit(txs[0], TIMEOUT)
        assert header(reopened, committed.height).previous_header_hash == before[1]
        result = verify_chain(reopened.store, net.trust)
        assert result.ok, result.problem
        assert result.blocks_checked == committed.height + 1
    finally:
        reopened.close()


def test_a_store_of_another_chain_is_refused(tmp_path, net: Net):
    open_ledger(tmp_path, net).close()
    with pytest.raises(FailedPrecondition, match="chain"):
        Ledger.open(tmp_path / "ledger", "other-chain", net.ledger, net.trust)


def test_verification_during_commits_sees_a_consistent_chain(ledger: Ledger, net: Net):
    txs = [register(net, f"org-{i}", Kind.PRINCIPAL_KIND_ORGANIZATION)[0] for i in range(30)]
    writer = threading.Thread(target=lambda: [ledger.submit(t, TIMEOUT) for t in txs])
    writer.start()
    outcomes = []
    while writer.is_alive():
        outcomes.append(verify_chain(ledger.store, net.trust))
    writer.join()
    outcomes.append(verify_chain(ledger.store, net.trust))
    assert all(o.ok for o in outcomes), [o.problem for o in outcomes if not o.ok]
    assert outcomes[-1].blocks_checked == 31


# Modules of the write path whose allocations must not grow with the history (the log's Merkle tree, kept for
# proofs, is the read side's: queries.py / core.merkle).
_WRITE_PATH = ("memory_orderer.py", "admission.py", "cutter.py", "finality.py", "chain.py", "sqlite_store.py",
               "state.py", "contract.py", "transactions.py")


def _write_path_bytes(snapshot: tracemalloc.Snapshot) -> int:
    return sum(stat.size for stat in snapshot.statistics("filename")
               if stat.traceback[0].filename.endswith(_WRITE_PATH) and "/carechain/ledger/" in
               stat.traceback[0].filename)


def test_memory_stays_flat_over_thousands_of_writes(tmp_path, net: Net):
    """No leak: once blocks are committed, orderer, admission and finality hold O(window), not O(history)."""
    ledger = open_ledger(tmp_path, net, block_max_wait_ms=0)
    key = bytes(range(32))
    written = 0

    def write(count: int) -> None:
        nonlocal written
        for start in range(written, written + count, 500):
            txs = [tx(net.identity, register_principal=ledger_pb2.RegisterPrincipal(
                principal_id=f"org-leak-{i}", kind=Kind.PRINCIPAL_KIND_ORGANIZATION, public_key=key))
                for i in range(start, start + 500)]
            outcomes = ledger.submit_many(txs, TIMEOUT)
            assert all(not isinstance(o, Exception) and o.valid for o in outcomes), outcomes[:3]
            # Everything answered is committed: nothing of it is still held on the write path.
            assert ledger.orderer.retained == 0 and ledger._admission.waiting == 0
            assert ledger._finality.retained == 0
        written += count

    tracemalloc.start()
    try:
        write(500)  # warm-up: caches, SQLite statements, first blocks
        before = _write_path_bytes(tracemalloc.take_snapshot())
        write(2500)
        after = _write_path_bytes(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
        ledger.close()
    # The old leak was ~2 KiB per transaction (every ordered entry kept): 2,500 more would be ~5 MiB.
    assert after - before < 64 * 1024, f"the write path kept {after - before} more bytes after 2,500 more writes"
    assert written == 3000 and ledger.log_size() == 3000
