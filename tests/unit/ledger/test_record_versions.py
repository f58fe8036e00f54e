"""Record versions on the ledger (issue 14, part 4): the contract accepts only the author organisation's
next version, linked to the latest; the state keeps every version, GetRecordEntry reads any of them, and
offline verification (state replayed from the blocks) still agrees with the stored state."""

from __future__ import annotations

import hashlib

import pytest
from ledger_fixtures import CHAIN, Kind, Net, onboarding, record, register, tx

from carechain.core.errors import NotFound
from carechain.ledger.chain import Ledger
from carechain.ledger.contract import NOT_PERMITTED
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.v1 import ledger_pb2

TIMEOUT = 30


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def next_version(previous: ledger_pb2.RegisterRecord, log_index: int, **overrides: object) -> ledger_pb2.RegisterRecord:
    """A RegisterRecord amending previous (committed at log_index)."""
    fields: dict[str, object] = {"version": previous.version + 1, "previous_log_index": log_index,
                                 "previous_content_sha256": previous.content_sha256,
                                 "content_sha256": sha(f"v{previous.version + 1}")}
    fields.update(overrides)
    patient_id, organization_id = fields.pop("patient_id", previous.patient_id), fields.pop(
        "organization_id", previous.organization_id)
    return record(patient_id, organization_id, previous.record_id, **fields)


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
def ledger(tmp_path, net):
    instance = Ledger.open(tmp_path / "ledger", CHAIN, net.ledger, net.trust, block_max_wait_ms=1)
    txs, _ = onboarding(net)
    txs.append(register(net, "org-2", Kind.PRINCIPAL_KIND_ORGANIZATION)[0])
    for t in txs:
        instance.submit(t, TIMEOUT)
    yield instance
    instance.close()


def commit(ledger: Ledger, net: Net, registration: ledger_pb2.RegisterRecord) -> tuple[bool, str, int]:
    """Submit a RegisterRecord as svc-records: (valid, reason, log index)."""
    committed = ledger.submit(tx(net.records, register_record=registration), TIMEOUT)
    return committed.valid, committed.reason, committed.log_index


def test_versions_are_consecutive_linked_and_all_kept(ledger, net):
    v1 = record("pat-1", "org-1", "r-1", content_sha256=sha("v1"))
    _, _, index1 = commit(ledger, net, v1)
    v2 = next_version(v1, index1)
    valid, reason, index2 = commit(ledger, net, v2)
    assert valid, reason
    v3 = next_version(v2, index2)
    assert commit(ledger, net, v3)[0]

    latest = ledger.record_entry("r-1")
    assert (latest.record.version, latest.latest_version, latest.record.content_sha256) == (3, 3, sha("v3"))
    first = ledger.record_entry("r-1", 1)
    assert (first.record.version, first.log_index, first.record.content_sha256) == (1, index1, sha("v1"))
    second = ledger.record_entry("r-1", 2)
    assert (second.log_index, second.latest_version) == (index2, 3)
    assert 0 < first.registered_at_ms <= second.registered_at_ms <= latest.registered_at_ms
    with pytest.raises(NotFound):
        ledger.record_entry("r-1", 4)


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"version": 3}, "register_record.version: must be the latest version + 1"),
    ({"previous_log_index": 1}, "register_record.previous_log_index: must name the latest version"),
    ({"previous_content_sha256": sha("other")}, "register_record.previous_log_index: must name the latest version"),
    ({"patient_id": "dr-1"}, "register_record.patient_id: a new version keeps the record's patient"),
    ({"organization_id": "org-2"}, NOT_PERMITTED + "only the authoring organization writes a new version"),
])
def test_a_version_that_does_not_amend_the_latest_is_invalid(ledger, net, overrides, reason):
    v1 = record("pat-1", "org-1", "r-1", content_sha256=sha("v1"))
    _, _, index1 = commit(ledger, net, v1)
    valid, why, _ = commit(ledger, net, next_version(v1, index1, **overrides))
    assert not valid
    assert why.startswith(reason)
    assert ledger.record_entry("r-1").record.version == 1  # nothing changed


def test_a_second_update_of_the_same_version_loses(ledger, net):
    """Two writers amending version 1 at once: the first commit wins, the second is not the latest + 1."""
    v1 = record("pat-1", "org-1", "r-1", content_sha256=sha("v1"))
    _, _, index1 = commit(ledger, net, v1)
    assert commit(ledger, net, next_version(v1, index1))[0]
    valid, reason, _ = commit(ledger, net, next_version(v1, index1, content_sha256=sha("concurrent")))
    assert not valid and reason.startswith("register_record.version")


def test_a_version_needs_a_registered_record_and_a_first_version_no_link(ledger, net):
    valid, reason, _ = commit(ledger, net, record("pat-1", "org-1", "r-new", version=2))
    assert not valid and reason.startswith("register_record.version: a version > 1 needs a registered record")
    valid, reason, _ = commit(ledger, net, record("pat-1", "org-1", "r-new", previous_log_index=4))
    assert not valid and reason.startswith("register_record.previous_log_index: only a version > 1")


def test_an_erased_record_gets_no_new_version(ledger, net, tmp_path):
    v1 = record("pat-1", "org-1", "r-1", content_sha256=sha("v1"))
    _, _, index1 = commit(ledger, net, v1)
    erased = ledger.submit(tx(net.identity, erase_records=ledger_pb2.EraseRecords(patient_id="pat-1",
                                                                                  record_ids=["r-1"])), TIMEOUT)
    assert erased.valid, erased.reason
    valid, reason, _ = commit(ledger, net, next_version(v1, index1))
    assert not valid and reason.startswith("register_record.record_id: the record was erased")


def test_a_chain_with_versions_verifies_offline(tmp_path, net):
    data_dir = tmp_path / "ledger"
    ledger = Ledger.open(data_dir, CHAIN, net.ledger, net.trust, block_max_wait_ms=1)
    txs, _ = onboarding(net)
    for t in txs:
        ledger.submit(t, TIMEOUT)
    v1 = record("pat-1", "org-1", "r-1", content_sha256=sha("v1"))
    _, _, index1 = commit(ledger, net, v1)
    assert commit(ledger, net, next_version(v1, index1))[0]
    ledger.close()
    result = verify_chain(data_dir, net.trust)  # replays the state (both versions) and compares it
    assert result.ok, result.problem
