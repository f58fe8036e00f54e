"""Several validators on one in-memory shared order: quorum certificates, finality, evidence, catch-up."""

from __future__ import annotations

import pytest
from ledger_fixtures import CHAIN, Kind, Net, Validators, onboarding, register, wait_until

from carechain.core.errors import Unavailable
from carechain.ledger import quorum, transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.quorum import ValidatorSet
from carechain.ledger.v1 import ledger_pb2

TIMEOUT = 20






def headers(ledger: Ledger) -> list[bytes]:
    return [ledger.store.block(h).header for h in range(ledger.head()[0].height + 1)]


@pytest.fixture()
def three() -> Validators:
    return Validators(3)


def test_a_block_is_final_once_a_majority_signed_the_same_header(tmp_path, three):
    ledgers = [three.open(tmp_path, i) for i in range(3)]
    try:
        txs, _ = onboarding(three.net)
        results = [ledgers[i].submit(t, TIMEOUT, final=True) for i, t in enumerate(txs)]
        assert all(r.valid and r.final for r in results)
        for ledger in ledgers:
            wait_until(lambda ledger=ledger: ledger.final_height() >= results[-1].height, "not final everywhere")
        assert headers(ledgers[0]) == headers(ledgers[1]) == headers(ledgers[2])
        checkpoint = ledgers[1].checkpoint()
        quorum.check_certificate(checkpoint.header, checkpoint.certificate, three.trust, three.set)
        assert len(checkpoint.certificate.signatures) >= 2
        for ledger in ledgers:
            result = verify_chain(ledger.store, three.trust, three.set)
            assert result.ok, result.problem
            assert result.final_height >= results[-1].height
    finally:
        for ledger in ledgers:
            ledger.close()


def test_one_validator_alone_commits_but_is_not_final_until_another_catches_up(tmp_path, three):
    first = three.open(tmp_path, 0)
    second = None
    try:
        org, _ = register(three.net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
        committed = first.submit(org, TIMEOUT)
        assert committed.valid and not committed.final
        with pytest.raises(Unavailable, match="no quorum"):
            first.submit(register(three.net, "org-2", Kind.PRINCIPAL_KIND_ORGANIZATION)[0], 0.3, final=True)
        # A validator that was down replays the order, checks it, signs: the blocks become final.
        second = three.open(tmp_path, 1)
        wait_until(lambda: first.final_height() >= first.head()[0].height, "catch-up did not make blocks final")
        assert headers(second) == headers(first)
        assert second.final_height() == first.final_height()
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_validator_signing_another_header_is_reported_and_not_counted(tmp_path):
    validators = Validators(3, quorum_size=3)
    honest = [validators.open(tmp_path, i) for i in range(2)]
    try:
        honest[0].submit(register(validators.net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)[0], TIMEOUT)
        next_height = honest[0].head()[0].height + 1
        # validator-3 signs a made-up header for the next height before anyone cut it.
        fake = ledger_pb2.BlockHeader(chain_id=CHAIN, height=next_height, previous_header_hash=bytes(32))
        fake_bytes = transactions.encode(fake)
        rogue = validators.signers[2]
        validators.order.publish_vote(
            next_height, rogue.key_id, quorum.encode_vote(fake_bytes, quorum.sign_header(rogue, fake_bytes))
        )
        committed = honest[1].submit(register(validators.net, "org-2", Kind.PRINCIPAL_KIND_ORGANIZATION)[0],
                                     TIMEOUT)
        assert committed.height == next_height
        for ledger in honest:
            wait_until(lambda ledger=ledger: ledger.evidence(), "no evidence recorded")
            [evidence] = ledger.evidence()
            assert evidence.validator_id == rogue.key_id and evidence.height == next_height
            assert evidence.kind == ledger_pb2.EVIDENCE_KIND_CONFLICTING_HEADER
            assert evidence.vote.header == fake_bytes
            # Two honest signatures, quorum three: the rogue signature does not make it final.
            assert ledger.final_height() < next_height
            # The newest block is not final (and so has no certificate) yet.
            assert verify_chain(ledger.store, validators.trust, ledger.validators,
                                uncertified_after=ledger.final_height()).evidence_count == 1
    finally:
        for ledger in honest:
            ledger.close()


def test_a_validator_with_edited_state_diverges_is_caught_by_itself_and_by_the_others(tmp_path, three):
    lone = three.open(tmp_path, 2)
    txs, _ = onboarding(three.net)
    lone.submit(txs[0], TIMEOUT)  # org-1
    lone.close()
    # Someone deletes org-1 from validator-3's state behind its back.
    import sqlite3

    with sqlite3.connect(tmp_path / "v2" / "ledger.db") as conn:
        conn.execute("DELETE FROM principals WHERE principal_id = 'org-1'")
    assert not verify_chain(tmp_path / "v2", three.trust).ok
    lone = three.open(tmp_path, 2)
    others: list[Ledger] = []
    try:
        diverging = lone.submit(txs[1], TIMEOUT)  # dr-1 of org-1: invalid on the edited state
        assert not diverging.valid
        others = [three.open(tmp_path, i) for i in range(2)]
        wait_until(lambda: others[0].log_size() == 2 and others[1].log_size() == 2, "others did not catch up")
        for ledger in others:
            assert all(lt.result.valid for lt in ledger.list_transactions(0, 10))
            wait_until(lambda ledger=ledger: ledger.evidence(), "others kept no evidence")
            assert ledger.evidence()[0].validator_id == "validator-3"
        wait_until(lambda: lone.diverged_at == diverging.height, "the diverging validator did not notice")
    finally:
        lone.close()
        for ledger in others:
            ledger.close()


def test_the_embedded_single_validator_is_final_at_commit(tmp_path):
    net = Net()
    ledger = Ledger.open(tmp_path / "solo", CHAIN, net.ledger, net.trust, block_max_wait_ms=1)
    try:
        result = ledger.submit(register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)[0], TIMEOUT)
        assert result.final
        checkpoint = ledger.checkpoint()
        assert checkpoint.tree_size == 1 and checkpoint.height == result.height
        quorum.check_certificate(checkpoint.header, checkpoint.certificate, net.trust,
                                 ValidatorSet.single(net.ledger.key_id))
    finally:
        ledger.close()
