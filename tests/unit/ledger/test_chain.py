"""The validator node as a whole: genesis, restart and resume, the store's chain, verification while it commits."""

from __future__ import annotations

import threading

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
)

from carechain.core import merkle
from carechain.core.crypto import sha256, verify_signature
from carechain.core.errors import AlreadyExists, FailedPrecondition
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain


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
