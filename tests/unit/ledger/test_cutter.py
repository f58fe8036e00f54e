"""The block cutter: validated, signed, hash-linked blocks of at most block_max_transactions from the order."""

from __future__ import annotations

import threading

from ledger_fixtures import (  # noqa: F401 - net and ledger are fixtures
    TIMEOUT,
    Kind,
    Net,
    header,
    ledger_fixture,
    net_fixture,
    onboarding,
    open_ledger,
    register,
)

from carechain.core import merkle
from carechain.core.crypto import sha256, verify_signature
from carechain.ledger import blocks, transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.memory_orderer import InProcessOrderer
from carechain.ledger.v1 import ledger_pb2


def test_a_submitted_transaction_is_committed_in_a_new_signed_linked_block(ledger: Ledger, net: Net):
    t, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    committed = ledger.submit(t, TIMEOUT)
    assert committed.valid and committed.reason == ""
    assert (committed.height, committed.index, committed.log_index) == (1, 0, 0)
    assert committed.transaction_hash == transactions.transaction_hash(t)
    block = ledger.block(1)
    h = ledger_pb2.BlockHeader.FromString(block.header)
    assert h.previous_header_hash == sha256(ledger.block(0).header)
    assert h.transactions_root == merkle.root([merkle.leaf_hash(transactions.encode(t))])
    assert h.log_size == 1 and h.log_root == h.transactions_root
    assert h.results_hash == blocks.results_hash(block.results)
    assert list(block.transactions) == [t]
    assert verify_signature(net.ledger.public_key_bytes(), block.signatures[0].signature,
                            blocks.header_signing_message(block.header))


def test_invalid_transactions_are_stored_with_a_reason(ledger: Ledger, net: Net):
    t, _ = register(net, "pat-1", Kind.PRINCIPAL_KIND_PATIENT, "org-none")
    committed = ledger.submit(t, TIMEOUT)
    assert not committed.valid and "organization_id" in committed.reason
    logged = ledger.list_transactions(0, 10)
    assert [(e.log_index, e.result.valid) for e in logged] == [(0, False)]
    assert logged[0].result.reason == committed.reason


def test_blocks_chain_by_header_hash(ledger: Ledger, net: Net):
    txs, _ = onboarding(net)
    for t in txs:
        ledger.submit(t, TIMEOUT)
    head, _ = ledger.head()
    assert head.height == 3 and head.log_size == 3
    for height in range(1, head.height + 1):
        assert header(ledger, height).previous_header_hash == sha256(ledger.block(height - 1).header)
        assert header(ledger, height).timestamp_ms >= header(ledger, height - 1).timestamp_ms


def test_blocks_hold_at_most_block_max_transactions(tmp_path, net: Net):
    ledger = open_ledger(tmp_path, net, block_max_transactions=2, block_max_wait_ms=200)
    try:
        txs = [register(net, f"org-{i}", Kind.PRINCIPAL_KIND_ORGANIZATION)[0] for i in range(7)]
        threads = [threading.Thread(target=ledger.submit, args=(t, TIMEOUT)) for t in txs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        head, _ = ledger.head()
        sizes = [len(ledger.block(h).transactions) for h in range(1, head.height + 1)]
        assert sum(sizes) == 7 and max(sizes) <= 2
        assert verify_chain(ledger.store, net.trust).ok
    finally:
        ledger.close()


def test_an_external_orderer_can_be_plugged_in(tmp_path, net: Net):
    orderer = InProcessOrderer()
    ledger = open_ledger(tmp_path, net, orderer=orderer)
    try:
        t, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
        ledger.submit(t, TIMEOUT)
        # Ordered through it, then released by the cutter once committed.
        assert (orderer.appended, orderer.retained) == (1, 0)
    finally:
        ledger.close()
        orderer.close()
