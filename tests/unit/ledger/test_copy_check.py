"""Chain verification: an honest chain verifies; any change to the stored chain is found at the right height."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from ledger_fixtures import CHAIN, Net, cid, grant, onboarding, record, tx

from carechain.core.layout import write_public_key
from carechain.ledger import blocks, transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import TrustedCheckpoint, verify_chain, verify_data_dir
from carechain.ledger.sqlite_store import DB_FILE, LedgerStore
from carechain.ledger.v1 import ledger_pb2

TIMEOUT = 30


@pytest.fixture(scope="module")
def net() -> Net:
    return Net()


@pytest.fixture
def chain_dir(tmp_path, net):
    """A closed ledger with blocks 1..5: onboarding, a record, an invalid grant, a valid grant."""
    data_dir = tmp_path / "ledger"
    ledger = Ledger.open(data_dir, CHAIN, net.ledger, net.trust, block_max_wait_ms=1)
    txs, keys = onboarding(net)
    txs += [
        tx(net.records, register_record=record("pat-1", "org-1", "r-1")),
        grant(keys["dr-1"], cid("c-bad")),  # invalid: a practitioner is not a patient
        grant(keys["pat-1"], cid("c-1")),
    ]
    # Heights: 1 org, 2 dr, 3 pat, 4 record, 5 invalid grant, 6 grant.
    for t in txs:
        ledger.submit(t, TIMEOUT)
    ledger.close()
    return data_dir


def db(chain_dir) -> sqlite3.Connection:
    return sqlite3.connect(chain_dir / DB_FILE, isolation_level=None)


def load_block(conn, height: int) -> ledger_pb2.Block:
    row = conn.execute("SELECT block FROM blocks WHERE height = ?", (height,)).fetchone()
    return ledger_pb2.Block.FromString(row[0])


def store_block(conn, height: int, block: ledger_pb2.Block) -> None:
    conn.execute("UPDATE blocks SET block = ?, header = ? WHERE height = ?",
                 (transactions.encode(block), block.header, height))


def test_an_untouched_chain_verifies(chain_dir, net):
    result = verify_chain(chain_dir, net.trust)
    assert result.ok, result.problem
    assert result.blocks_checked == 7 and result.first_bad_height is None and result.problem == ""


def test_offline_verification_does_not_modify_the_database(chain_dir, net, tmp_path):
    trust_dir = tmp_path / "trust"
    for principal_id, key in net.trust.keys.items():
        write_public_key(trust_dir / f"{principal_id}.pub", key)
    before = hashlib.sha256((chain_dir / DB_FILE).read_bytes()).digest()
    assert verify_data_dir(chain_dir, trust_dir).ok
    assert hashlib.sha256((chain_dir / DB_FILE).read_bytes()).digest() == before


def test_one_changed_byte_of_a_stored_transaction_is_found(chain_dir, net):
    with db(chain_dir) as conn:
        blob = conn.execute("SELECT block FROM blocks WHERE height = 4").fetchone()[0]
        body = ledger_pb2.Block.FromString(blob).transactions[0].body
        tampered_body = body[:-1] + bytes([body[-1] ^ 1])
        conn.execute("UPDATE blocks SET block = ? WHERE height = 4", (blob.replace(body, tampered_body),))
    result = verify_chain(chain_dir, net.trust)
    assert not result.ok and result.first_bad_height == 4
    assert result.problem.startswith("block 4: transaction 0") and "signature" in result.problem


def test_a_changed_transaction_in_the_leaf_table_is_found(chain_dir, net):
    with db(chain_dir) as conn:
        tx_bytes = conn.execute("SELECT tx FROM log_entries WHERE log_index = 3").fetchone()[0]
        flipped = tx_bytes[:-1] + bytes([tx_bytes[-1] ^ 0x01])  # always a change, whatever the last byte was
        conn.execute("UPDATE log_entries SET tx = ? WHERE log_index = 3", (flipped,))
    result = verify_chain(chain_dir, net.trust)
    assert (result.ok, result.first_bad_height) == (False, 4)
    assert "stored log entry 3 differs" in result.problem and "tx" in result.problem


def test_a_changed_header_field_is_found(chain_dir, net):
    with db(chain_dir) as conn:
        block = load_block(conn, 3)
        header = ledger_pb2.BlockHeader.FromString(block.header)
        header.timestamp_ms += 1
        block.header = transactions.encode(header)
        store_block(conn, 3, block)
    result = verify_chain(chain_dir, net.trust)
    assert (result.ok, result.first_bad_height) == (False, 3)
    assert "block 3:" in result.problem


def test_a_re_signed_header_with_a_wrong_root_is_found(chain_dir, net):
    # Even the validator's own key cannot make a wrong root pass.
    with db(chain_dir) as conn:
        block = load_block(conn, 2)
        header = ledger_pb2.BlockHeader.FromString(block.header)
        header.transactions_root = bytes(32)
        block.header = transactions.encode(header)
        block.signatures[0].signature = net.ledger.sign(blocks.header_signing_message(block.header))
        store_block(conn, 2, block)
        conn.execute("UPDATE blocks SET header_hash = ? WHERE height = 2", (blocks.header_hash(block.header),))
    result = verify_chain(chain_dir, net.trust)
    assert (result.ok, result.first_bad_height) == (False, 2)
    assert "block 2: transactions_root mismatch (expected 0000" in result.problem


def test_a_flipped_result_flag_is_found(chain_dir, net):
    with db(chain_dir) as conn:
        block = load_block(conn, 5)
        assert not block.results[0].valid
        block.results[0].valid = True
        block.results[0].reason = ""
        store_block(conn, 5, block)
    result = verify_chain(chain_dir, net.trust)
    assert (result.ok, result.first_bad_height) == (False, 5)
    assert "result mismatch" in result.problem


def test_a_deleted_block_is_found(chain_dir, net):
    with db(chain_dir) as conn:
        conn.execute("DELETE FROM blocks WHERE height = 3")
    result = verify_chain(chain_dir, net.trust)
    assert (result.ok, result.first_bad_height, result.blocks_checked) == (False, 3, 3)
    assert result.problem.startswith("block 3: missing")


def test_a_deleted_last_block_is_found_through_the_leaf_table(chain_dir, net):
    with db(chain_dir) as conn:
        conn.execute("DELETE FROM blocks WHERE height = 6")
    result = verify_chain(chain_dir, net.trust)
    assert (result.ok, result.first_bad_height) == (False, 6)


def test_a_block_signed_by_someone_else_is_found(chain_dir, net):
    with db(chain_dir) as conn:
        block = load_block(conn, 1)
        block.signatures[0].signature = net.records.sign(blocks.header_signing_message(block.header))
        store_block(conn, 1, block)
    result = verify_chain(chain_dir, net.trust)
    assert (result.ok, result.first_bad_height) == (False, 1)
    assert "validator signature" in result.problem


def test_a_broken_hash_link_is_found(chain_dir, net):
    with db(chain_dir) as conn:
        block = load_block(conn, 2)
        header = ledger_pb2.BlockHeader.FromString(block.header)
        header.previous_header_hash = bytes(32)
        block.header = transactions.encode(header)
        block.signatures[0].signature = net.ledger.sign(blocks.header_signing_message(block.header))
        store_block(conn, 2, block)
        conn.execute("UPDATE blocks SET header_hash = ? WHERE height = 2", (blocks.header_hash(block.header),))
    result = verify_chain(chain_dir, net.trust)
    assert (result.ok, result.first_bad_height) == (False, 2)
    assert "previous_header_hash mismatch" in result.problem


def test_a_principal_key_swapped_in_state_is_found_and_does_not_fool_verification(chain_dir, net):
    # Verification replays registrations itself, then compares the stored state with the replay.
    with db(chain_dir) as conn:
        conn.execute("UPDATE principals SET public_key = ? WHERE principal_id = 'pat-1'", (bytes(32),))
    result = verify_chain(chain_dir, net.trust)
    assert result.blocks_checked == 7 and not result.ok
    assert "stored contract state differs" in result.problem and "principals" in result.problem


def test_an_edited_record_tombstone_in_state_is_found(chain_dir, net):
    with db(chain_dir) as conn:
        changed = conn.execute("UPDATE records SET erased = 1 - erased").rowcount
    assert changed
    result = verify_chain(chain_dir, net.trust)
    assert not result.ok and "table records" in result.problem


def test_a_chain_without_genesis_is_not_ok(chain_dir, net):
    with db(chain_dir) as conn:
        conn.execute("DELETE FROM blocks")
        conn.execute("DELETE FROM log_entries")
    result = verify_chain(chain_dir, net.trust)
    assert (result.ok, result.first_bad_height) == (False, 0)



# --- incremental verification from a trusted checkpoint (issue 13) ---------------------------------


def checkpoint_at(chain_dir, height: int) -> TrustedCheckpoint:
    """What a verifier remembered about block height when it last verified the chain."""
    with db(chain_dir) as conn:
        header = ledger_pb2.BlockHeader.FromString(load_block(conn, height).header)
    return TrustedCheckpoint(height, header.log_size, header.log_root)


def test_incremental_verification_checks_only_the_blocks_after_the_checkpoint(chain_dir, net):
    result = verify_chain(chain_dir, net.trust, trusted=checkpoint_at(chain_dir, 4))
    assert result.ok, result.problem
    assert (result.from_height, result.blocks_checked, result.final_height) == (4, 2, 6)


def test_incremental_verification_finds_a_transaction_changed_after_the_checkpoint(chain_dir, net):
    checkpoint = checkpoint_at(chain_dir, 3)
    with db(chain_dir) as conn:
        block = load_block(conn, 4)
        body = block.transactions[0].body
        block.transactions[0].body = body[:-1] + bytes([body[-1] ^ 1])
        store_block(conn, 4, block)
    result = verify_chain(chain_dir, net.trust, trusted=checkpoint)
    assert (result.ok, result.first_bad_height) == (False, 4)
    assert "transactions_root mismatch" in result.problem


def test_incremental_verification_finds_a_re_signed_block_after_the_checkpoint(chain_dir, net):
    # The validator's own key re-signs a changed header: its stored certificate no longer covers it.
    checkpoint = checkpoint_at(chain_dir, 2)
    with db(chain_dir) as conn:
        block = load_block(conn, 5)
        header = ledger_pb2.BlockHeader.FromString(block.header)
        header.timestamp_ms += 1
        block.header = transactions.encode(header)
        block.signatures[0].signature = net.ledger.sign(blocks.header_signing_message(block.header))
        store_block(conn, 5, block)
        conn.execute("UPDATE blocks SET header_hash = ? WHERE height = 5", (blocks.header_hash(block.header),))
    result = verify_chain(chain_dir, net.trust, trusted=checkpoint)
    assert (result.ok, result.first_bad_height) == (False, 5)
    assert "quorum certificate" in result.problem


def test_incremental_verification_reads_the_checkpoint_tree_from_its_stored_subtrees_not_its_leaves(
        chain_dir, net, monkeypatch):
    checkpoint = checkpoint_at(chain_dir, 4)

    def no_leaf_scan(self):
        raise AssertionError("verification from a checkpoint read every leaf hash")

    monkeypatch.setattr(LedgerStore, "leaf_hashes", no_leaf_scan)
    result = verify_chain(chain_dir, net.trust, trusted=checkpoint)
    assert result.ok, result.problem


def test_a_stored_subtree_root_rewritten_before_the_checkpoint_is_found_incrementally(chain_dir, net):
    checkpoint = checkpoint_at(chain_dir, 4)
    with db(chain_dir) as conn:
        level, position = conn.execute("SELECT level, position FROM log_nodes ORDER BY level DESC LIMIT 1").fetchone()
        assert (1 << level) * (position + 1) <= checkpoint.tree_size  # a node of the checkpoint's tree
        conn.execute("UPDATE log_nodes SET hash = ? WHERE level = ? AND position = ?", (bytes(32), level, position))
    result = verify_chain(chain_dir, net.trust, trusted=checkpoint)
    assert (result.ok, result.first_bad_height) == (False, 4)
    assert "do not hash to its root" in result.problem


def test_a_stored_subtree_root_rewritten_after_the_checkpoint_fails_an_inclusion_proof(chain_dir, net):
    checkpoint = checkpoint_at(chain_dir, 2)
    with db(chain_dir) as conn:
        conn.execute("UPDATE log_nodes SET hash = ? WHERE level = 2 AND position = 0", (bytes(32),))
    result = verify_chain(chain_dir, net.trust, trusted=checkpoint)
    assert not result.ok
    assert result.first_bad_height > 2 and "log index" in result.problem


def test_a_leaf_rewritten_before_the_checkpoint_is_left_to_full_verification_which_finds_it(chain_dir, net):
    # Incremental verification trusts the checkpoint's tree as the folded subtree roots the ledger serves
    # proofs from; the leaf table under them is re-hashed by a full verification (O(history)).
    checkpoint = checkpoint_at(chain_dir, 4)
    with db(chain_dir) as conn:
        conn.execute("UPDATE log_entries SET leaf_hash = ? WHERE log_index = 0", (bytes(32),))
    assert verify_chain(chain_dir, net.trust, trusted=checkpoint).ok
    result = verify_chain(chain_dir, net.trust)
    assert not result.ok and result.first_bad_height <= 4


def test_a_store_without_subtree_roots_is_verified_from_its_leaves(chain_dir, net):
    checkpoint = checkpoint_at(chain_dir, 4)
    with db(chain_dir) as conn:
        conn.execute("DELETE FROM log_nodes")
    assert verify_chain(chain_dir, net.trust, trusted=checkpoint).ok  # a store from before log_nodes
    with db(chain_dir) as conn:
        conn.execute("UPDATE log_entries SET leaf_hash = ? WHERE log_index = 0", (bytes(32),))
    result = verify_chain(chain_dir, net.trust, trusted=checkpoint)
    assert (result.ok, result.first_bad_height) == (False, 4)
    assert "do not hash to its root" in result.problem


def test_a_checkpoint_the_chain_does_not_hold_is_refused(chain_dir, net):
    honest = checkpoint_at(chain_dir, 4)
    result = verify_chain(chain_dir, net.trust, trusted=TrustedCheckpoint(4, honest.tree_size, bytes(32)))
    assert (result.ok, result.first_bad_height) == (False, 4)
    assert "differs from the trusted checkpoint" in result.problem
