"""Sealing and anchoring (carechain.audit.anchoring) against a fake ledger that applies the validator's anchor
rule: by count or time, lost answers, the ledger down, rejected anchors backing off with one alert."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from audit_fixtures import AUDIT_SIGNER, AuditEnv, running_audit, wait_until

from carechain.audit.anchoring import AnchorRejected, AuditMaintenance, BatchSealer, LedgerAnchorer
from carechain.audit.v1 import audit_pb2
from carechain.core.errors import Unavailable
from carechain.ledger.transactions import decode_body


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[AuditEnv]:
    with running_audit(tmp_path) as running:
        yield running


def test_an_anchor_is_svc_audits_transaction_of_the_batch(env: AuditEnv) -> None:
    env.record()
    env.record()
    [batch] = env.sealer.seal_due(force=True)
    [anchored] = env.anchorer.anchor_pending()
    [logged] = env.ledger.log
    body = decode_body(logged.transaction)
    assert (logged.transaction.signer_id, body.chain_id) == ("svc-audit", "test-chain")
    anchor = body.anchor_audit_batch
    assert (anchor.batch_number, anchor.first_sequence, anchor.last_sequence, anchor.merkle_root) == (
        1, 1, 2, batch.merkle_root)
    assert anchored.anchor_log_index == 0 and env.store.batches()[0].anchored


def test_anchoring_waits_for_the_ledger_and_loses_nothing(env: AuditEnv) -> None:
    env.record()
    env.ledger.down = True
    env.sealer.seal_due(force=True)
    with pytest.raises(Unavailable):
        env.anchorer.anchor_pending()
    env.record()
    env.sealer.seal_due(force=True)
    assert [b.anchored for b in env.store.batches()] == [False, False]
    env.ledger.down = False
    env.anchorer.anchor_pending()
    assert [b.anchor_log_index for b in env.store.batches()] == [0, 1]


def test_an_anchor_whose_answer_was_lost_is_found_not_duplicated(env: AuditEnv) -> None:
    env.record()
    env.sealer.seal_due(force=True)
    env.ledger.lose_answers = 1
    with pytest.raises(Unavailable):
        env.anchorer.anchor_pending()
    [batch] = env.anchorer.anchor_pending()  # resubmitted, refused as a duplicate, found on the ledger
    assert batch.anchor_log_index == 0
    assert [t.result.valid for t in env.ledger.log] == [True, False]


def test_batches_are_sealed_by_count_or_by_time(env: AuditEnv) -> None:
    now = [0.0]
    sealer = BatchSealer(env.store, max_events=3, max_seconds=10, monotonic=lambda: now[0])
    for _ in range(7):
        env.record()
    assert [(b.first_sequence, b.last_sequence) for b in sealer.seal_due()] == [(1, 3), (4, 6)]
    now[0] = 9.0
    assert sealer.seal_due() == []  # event 7 has waited 9 s
    now[0] = 19.5
    assert [(b.first_sequence, b.last_sequence) for b in sealer.seal_due()] == [(7, 7)]
    assert sealer.seal_due() == []


def test_maintenance_keeps_retrying_until_the_ledger_is_back(env: AuditEnv) -> None:
    env.ledger.down = True
    maintenance = AuditMaintenance(BatchSealer(env.store, 1, 0), env.anchorer, 0.02)
    maintenance.start()
    try:
        env.record()
        wait_until(lambda: bool(env.store.batches()), "the batch is sealed while the ledger is down")
        assert not env.store.batches()[0].anchored
        env.ledger.down = False
        wait_until(lambda: env.store.batches()[0].anchored, "the batch is anchored once the ledger is back")
    finally:
        maintenance.stop()


@pytest.mark.parametrize("reason", ["not permitted: only svc-audit anchors audit batches",
                                    "anchor_audit_batch.merkle_root: must be 32 bytes"])
def test_a_rejected_anchor_backs_off_and_alerts_instead_of_resubmitting_in_a_loop(env: AuditEnv, reason: str) -> None:
    env.ledger.reject = reason
    now = [0.0]
    maintenance = AuditMaintenance(BatchSealer(env.store, 1000, 3600), env.anchorer, 1.0,
                                   report=env.store.append, backoff_max_seconds=8, monotonic=lambda: now[0])
    env.record()
    env.sealer.seal_due(force=True)
    submitted_at = []
    for second in range(41):  # one maintenance round a second for 40 s
        now[0] = float(second)
        before = len(env.ledger.log)
        try:
            maintenance.run_once()
        except AnchorRejected as exc:
            assert exc.batch_number == 1 and reason.removeprefix("not permitted: ") in exc.message
        if len(env.ledger.log) > before:
            submitted_at.append(second)
    # Exponential (1, 2, 4, 8 s) and bounded (8 s), not every round.
    assert submitted_at == [0, 1, 3, 7, 15, 23, 31, 39]
    alerts = [e.event for e in env.store.events_after(0, 100) if e.event.action == audit_pb2.AUDIT_ACTION_ANCHOR_BATCH]
    assert len(alerts) == 1  # one alert per distinct rejection, not one per attempt
    assert alerts[0].outcome == audit_pb2.AUDIT_OUTCOME_FAILED and "audit batch 1" in alerts[0].reason
    assert not env.store.batches()[0].anchored
    # Once the ledger accepts again, the next attempt anchors and the back-off ends.
    env.ledger.reject = ""
    now[0] = 47.0
    maintenance.run_once()
    assert env.store.batches()[0].anchored and maintenance.backing_off_until is None


def test_a_restarted_anchorer_finds_where_to_continue_without_reading_every_batch(env: AuditEnv) -> None:
    for _ in range(40):  # 40 anchored batches, then 2 sealed and not anchored yet
        env.record()
        env.seal_and_anchor()
    for _ in range(2):
        env.record()
        env.sealer.seal_due(force=True)
    read: list[int] = []
    real_batches = env.store.batches

    def counting(after_number: int = 0, limit: int = 0):  # type: ignore[no-untyped-def]
        found = real_batches(after_number, limit)
        read.append(len(found))
        return found

    env.store.batches = counting  # type: ignore[method-assign]
    restarted = LedgerAnchorer(env.store, "test-chain", lambda: env.ledger, lambda: AUDIT_SIGNER)
    anchored = restarted.anchor_pending()
    assert [b.batch_number for b in anchored] == [41, 42]
    assert [b.anchor_log_index for b in anchored] == [40, 41]
    assert sum(read) <= 12, read  # a binary search and the two new batches, not all 42
    read.clear()
    assert restarted.anchor_pending() == [] and sum(read) == 0  # the next round starts after the last anchored
