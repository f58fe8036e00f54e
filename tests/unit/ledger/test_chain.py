"""The validator node: admission, blocks, the hash chain, commit and restart."""

from __future__ import annotations

import threading

import pytest
from ledger_fixtures import CHAIN, Kind, Net, grant, onboarding, record, register, tx

from carechain.core import merkle
from carechain.core.crypto import Ed25519Signer, sha256, verify_signature
from carechain.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from carechain.ledger import blocks, transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.memory_orderer import InProcessOrderer
from carechain.ledger.v1 import ledger_pb2

TIMEOUT = 30


@pytest.fixture
def net() -> Net:
    return Net()


def open_ledger(tmp_path, net, **kwargs) -> Ledger:
    kwargs.setdefault("block_max_wait_ms", 1)
    return Ledger.open(tmp_path / "ledger", CHAIN, net.ledger, net.trust, **kwargs)


@pytest.fixture
def ledger(tmp_path, net):
    instance = open_ledger(tmp_path, net)
    yield instance
    instance.close()


def header(ledger: Ledger, height: int) -> ledger_pb2.BlockHeader:
    return ledger_pb2.BlockHeader.FromString(ledger.block(height).header)


def test_first_start_creates_an_empty_signed_genesis_block(ledger, net):
    head, head_hash = ledger.head()
    assert head.height == 0 and head.chain_id == CHAIN
    assert head.previous_header_hash == bytes(32)
    assert head.log_size == 0 and head.log_root == merkle.EMPTY_ROOT == head.transactions_root
    genesis = ledger.block(0)
    assert head_hash == sha256(genesis.header)
    assert verify_signature(net.ledger.public_key_bytes(), genesis.signatures[0].signature,
                            b"carechain-block/v1\n" + genesis.header)


def test_a_submitted_transaction_is_committed_in_a_new_signed_linked_block(ledger, net):
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


def test_invalid_transactions_are_stored_with_a_reason(ledger, net):
    t, _ = register(net, "pat-1", Kind.PRINCIPAL_KIND_PATIENT, "org-none")
    committed = ledger.submit(t, TIMEOUT)
    assert not committed.valid and "organization_id" in committed.reason
    logged = ledger.list_transactions(0, 10)
    assert [(e.log_index, e.result.valid) for e in logged] == [(0, False)]
    assert logged[0].result.reason == committed.reason


def test_blocks_chain_by_header_hash(ledger, net):
    txs, _ = onboarding(net)
    for t in txs:
        ledger.submit(t, TIMEOUT)
    head, _ = ledger.head()
    assert head.height == 3 and head.log_size == 3
    for height in range(1, head.height + 1):
        assert header(ledger, height).previous_header_hash == sha256(ledger.block(height - 1).header)
        assert header(ledger, height).timestamp_ms >= header(ledger, height - 1).timestamp_ms


def test_a_replayed_nonce_is_refused_before_ordering(ledger, net):
    t, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    ledger.submit(t, TIMEOUT)
    with pytest.raises(AlreadyExists, match="replayed nonce"):
        ledger.submit(t, TIMEOUT)
    assert ledger.log_size() == 1


def test_a_nonce_pending_in_the_order_is_refused_and_close_commits_what_is_ordered(tmp_path, net):
    # A long block wait keeps the first submission pending in the order.
    ledger = open_ledger(tmp_path, net, block_max_wait_ms=10_000)
    t, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    results = []
    worker = threading.Thread(target=lambda: results.append(ledger.submit(t, TIMEOUT)))
    worker.start()
    assert ledger.orderer.wait(-1, TIMEOUT)
    with pytest.raises(AlreadyExists, match="replayed nonce"):
        ledger.submit(t, TIMEOUT)
    ledger.close()
    worker.join(TIMEOUT)
    assert results and results[0].valid


@pytest.mark.parametrize(("mutate", "error", "match"), [
    (lambda t: setattr(t, "body", b"garbage"), InvalidArgument, "transaction.body"),
    (lambda t: setattr(t, "signature", bytes(64)), InvalidArgument, "transaction.signature"),
    (lambda t: setattr(t, "signer_id", "svc-records"), InvalidArgument, "signer_id"),
])
def test_admission_refuses_malformed_or_forged_transactions(ledger, net, mutate, error, match):
    t, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    mutate(t)
    with pytest.raises(error, match=match):
        ledger.submit(t, TIMEOUT)
    assert ledger.log_size() == 0


def test_admission_refuses_another_chain_and_unknown_signers(ledger, net):
    with pytest.raises(InvalidArgument, match="chain_id"):
        ledger.submit(tx(net.identity, chain="elsewhere", key_rotation=ledger_pb2.KeyRotation(patient_id="p")), TIMEOUT)
    with pytest.raises(PermissionDenied, match="unknown signer"):
        ledger.submit(grant(Ed25519Signer.generate("pat-x")), TIMEOUT)


def test_a_registered_principal_can_then_sign_transactions(ledger, net):
    txs, keys = onboarding(net)
    for t in txs:
        assert ledger.submit(t, TIMEOUT).valid
    assert ledger.submit(grant(keys["pat-1"]), TIMEOUT).valid


def test_blocks_hold_at_most_block_max_transactions(tmp_path, net):
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


def test_record_entries_show_registration_and_tombstone(ledger, net):
    txs, keys = onboarding(net)
    for t in txs:
        ledger.submit(t, TIMEOUT)
    committed = ledger.submit(tx(net.records, register_record=record("pat-1", "org-1", "r-1")), TIMEOUT)
    entry = ledger.record_entry("r-1")
    assert entry.record.patient_id == "pat-1" and entry.log_index == committed.log_index and not entry.erased
    ledger.submit(tx(keys["pat-1"], erase_records=ledger_pb2.EraseRecords(patient_id="pat-1")), TIMEOUT)
    assert ledger.record_entry("r-1").erased
    with pytest.raises(NotFound):
        ledger.record_entry("r-unknown")


def test_proofs_from_the_ledger_verify_against_block_roots(ledger, net):
    txs, _ = onboarding(net)
    for t in txs:
        ledger.submit(t, TIMEOUT)
    roots = {header(ledger, h).log_size: header(ledger, h).log_root for h in range(4)}
    for size, root in roots.items():
        for index in range(size):
            proof = ledger.inclusion_proof(index, size)
            assert proof.root == root
            merkle.verify_inclusion(merkle.leaf_hash(proof.leaf), index, size, list(proof.hashes), root)
        for first in range(size + 1):
            c = ledger.consistency_proof(first, size)
            merkle.verify_consistency(first, size, list(c.hashes), roots[first], root)
    with pytest.raises(InvalidArgument, match="tree_size"):
        ledger.inclusion_proof(0, 4)
    with pytest.raises(InvalidArgument, match="log_index"):
        ledger.inclusion_proof(3, 0)
    with pytest.raises(InvalidArgument, match="first_size"):
        ledger.consistency_proof(3, 2)


def test_a_restart_resumes_at_the_same_head_and_keeps_accepting(tmp_path, net):
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


def test_a_store_of_another_chain_is_refused(tmp_path, net):
    open_ledger(tmp_path, net).close()
    with pytest.raises(FailedPrecondition, match="chain"):
        Ledger.open(tmp_path / "ledger", "other-chain", net.ledger, net.trust)


def test_an_external_orderer_can_be_plugged_in(tmp_path, net):
    orderer = InProcessOrderer()
    ledger = open_ledger(tmp_path, net, orderer=orderer)
    try:
        t, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
        ledger.submit(t, TIMEOUT)
        assert orderer.read(0, 10) == [(0, transactions.encode(t))]
    finally:
        ledger.close()
        orderer.close()


def test_verification_during_commits_sees_a_consistent_chain(ledger, net):
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
