"""Four validators (quorum 3) on a real 3-member etcd: finality through etcd, and a new validator joining."""

from __future__ import annotations

import time

from unit.ledger_fixtures import CHAIN, Kind, Net, register

from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TrustBundle
from carechain.ledger.chain import Ledger
from carechain.ledger.copy_check import verify_chain
from carechain.ledger.etcd_orderer import EtcdOrderer
from carechain.ledger.quorum import ValidatorSet, decode_vote

pytest_plugins = ["servers_etcd"]

TIMEOUT = 120  # a ceiling on condition waits, not a budget


def test_a_joining_validator_replays_checks_and_signs(tmp_path, etcd_cluster, etcd_prefix):
    net = Net()
    signers = [Ed25519Signer.generate(f"validator-{i}") for i in range(1, 5)]
    trust = TrustBundle({**net.trust.keys, **{s.key_id: s.public_key_bytes() for s in signers}})
    validators = ValidatorSet.of([s.key_id for s in signers])
    assert validators.quorum == 3
    orderers = [EtcdOrderer(etcd_cluster.client(), etcd_prefix, CHAIN, owns_client=True)
                for _ in signers]

    def open_validator(index: int) -> Ledger:
        return Ledger.open(tmp_path / signers[index].key_id, CHAIN, signers[index], trust, orderer=orderers[index],
                           validators=validators, block_max_wait_ms=5)

    ledgers = [open_validator(i) for i in range(3)]
    try:
        results = [ledgers[i % 3].submit(register(net, f"org-{i}", Kind.PRINCIPAL_KIND_ORGANIZATION)[0], TIMEOUT,
                                         final=True) for i in range(9)]
        assert all(r.valid and r.final for r in results)
        ledgers.append(open_validator(3))
        newcomer = ledgers[3]
        deadline = time.monotonic() + TIMEOUT
        while newcomer.final_height() < results[-1].height:
            assert time.monotonic() < deadline, "the new validator did not catch up"
            time.sleep(0.02)
        height = ledgers[0].head()[0].height
        for h in range(height + 1):
            assert len({ledger.store.block(h).header for ledger in ledgers}) == 1
        assert len({ledger.store.state_digest() for ledger in ledgers}) == 1
        # It signed the old blocks too: its votes are on etcd next to the others'.
        deadline = time.monotonic() + TIMEOUT
        while signers[3].key_id not in orderers[0].votes(height, height).get(height, {}):
            assert time.monotonic() < deadline, "the new validator did not sign"
            time.sleep(0.02)
        vote = decode_vote(orderers[0].votes(height, height)[height][signers[3].key_id])
        assert vote is not None and vote.header == ledgers[0].store.block(height).header
        for ledger in ledgers:
            verdict = verify_chain(ledger.store, trust, validators)
            assert verdict.ok, verdict.problem
    finally:
        for ledger in ledgers:
            ledger.close()
        for orderer in orderers:
            orderer.close()
