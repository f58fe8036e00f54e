"""Queries over the committed chain: record entries and RFC 9162 proofs that verify against the block roots."""

from __future__ import annotations

import pytest
from ledger_fixtures import (  # noqa: F401 - net and ledger are fixtures
    TIMEOUT,
    Net,
    header,
    ledger_fixture,
    net_fixture,
    onboarding,
    record,
    tx,
)

from carechain.core import merkle
from carechain.core.errors import InvalidArgument, NotFound
from carechain.ledger.chain import Ledger
from carechain.ledger.v1 import ledger_pb2


def test_record_entries_show_registration_and_tombstone(ledger: Ledger, net: Net):
    txs, keys = onboarding(net)
    for t in txs:
        ledger.submit(t, TIMEOUT)
    committed = ledger.submit(tx(net.records, register_record=record("pat-1", "org-1", "r-1")), TIMEOUT)
    entry = ledger.record_entry("r-1")
    assert entry.record.patient_id == "pat-1" and entry.log_index == committed.log_index and not entry.erased
    assert entry.registered_at_ms == header(ledger, committed.height).timestamp_ms and not entry.erased_at_ms
    erasure = ledger.submit(tx(keys["pat-1"], erase_records=ledger_pb2.EraseRecords(patient_id="pat-1")), TIMEOUT)
    erased = ledger.record_entry("r-1")
    assert erased.erased and erased.erased_log_index == erasure.log_index
    assert erased.erased_at_ms == header(ledger, erasure.height).timestamp_ms >= erased.registered_at_ms
    with pytest.raises(NotFound):
        ledger.record_entry("r-unknown")


def test_proofs_from_the_ledger_verify_against_block_roots(ledger: Ledger, net: Net):
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
