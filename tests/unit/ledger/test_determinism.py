"""Property: validators fed the same order reach byte-identical headers and state, whatever the transactions."""

from __future__ import annotations

import itertools
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_fixtures import CHAIN, Kind, Net, grant, record, register, tx

from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TrustBundle
from carechain.ledger import transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.memory_orderer import SharedOrder
from carechain.ledger.quorum import ValidatorSet
from carechain.ledger.v1 import ledger_pb2

NET = Net()
VALIDATORS = [Ed25519Signer.generate(f"validator-{i}") for i in (1, 2, 3)]
TRUST = TrustBundle({**NET.trust.keys, **{s.key_id: s.public_key_bytes() for s in VALIDATORS}})
SET = ValidatorSet.of([s.key_id for s in VALIDATORS])
ORGS = ["org-a", "org-b"]
PATIENTS = {name: Ed25519Signer.generate(name) for name in ("pat-a", "pat-b")}
_counter = itertools.count()


def _action(kind: str, pick: int) -> list[ledger_pb2.Transaction]:
    """Transactions for one random step; many are invalid on purpose (duplicates, wrong signer, unknown ids)."""
    org = ORGS[pick % len(ORGS)]
    patient = list(PATIENTS)[pick % len(PATIENTS)]
    if kind == "org":
        return [register(NET, org, Kind.PRINCIPAL_KIND_ORGANIZATION)[0]]
    if kind == "patient":
        return [register(NET, patient, Kind.PRINCIPAL_KIND_PATIENT, org, key=PATIENTS[patient])[0]]
    if kind == "record":
        return [tx(NET.records, register_record=record(patient, org, record_id=f"rec-{pick % 3}"))]
    if kind == "record_by_wrong_signer":
        return [tx(NET.audit, register_record=record(patient, org))]
    if kind == "grant":
        return [grant(PATIENTS[patient], consent_id=f"c-{pick % 3}")]
    if kind == "revoke":
        return [tx(PATIENTS[patient], revoke_consent=ledger_pb2.RevokeConsent(
            consent_id=f"c-{pick % 3}", patient_id=patient))]
    if kind == "erase":
        return [tx(NET.identity, erase_records=ledger_pb2.EraseRecords(patient_id=patient))]
    if kind == "forged":
        forged = register(NET, f"forged-{next(_counter)}", Kind.PRINCIPAL_KIND_ORGANIZATION)[0]
        forged.signature = bytes(64)
        return [forged]
    if kind == "replay":
        once = register(NET, f"org-r{next(_counter)}", Kind.PRINCIPAL_KIND_ORGANIZATION)[0]
        return [once, once]
    if kind == "other_chain":
        return [tx(NET.identity, chain="elsewhere", register_principal=ledger_pb2.RegisterPrincipal(
            principal_id="x", kind=Kind.PRINCIPAL_KIND_ORGANIZATION, public_key=bytes(32)))]
    return [b"not a transaction"]  # type: ignore[list-item]


KINDS = ["org", "patient", "record", "record_by_wrong_signer", "grant", "revoke", "erase", "forged", "replay",
         "other_chain", "garbage"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 5)), min_size=1, max_size=25),
       sizes=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)))
def test_validators_reach_identical_headers_and_state(tmp_path_factory, steps, sizes):
    root = tmp_path_factory.mktemp("determinism")
    order = SharedOrder()
    entries = [entry for kind, pick in steps for entry in _action(kind, pick)]
    # Different local cutting policies: the cuts agreed through the order decide.
    ledgers = [
        Ledger.open(root / s.key_id, CHAIN, s, TRUST, orderer=order, validators=SET, block_max_transactions=size,
                    block_max_wait_ms=1, finality_poll_seconds=0.005)
        for s, size in zip(VALIDATORS, sizes, strict=True)
    ]
    try:
        for entry in entries:
            order.append(entry if isinstance(entry, bytes) else transactions.encode(entry))
        expected = sum(1 for e in entries if not isinstance(e, bytes))
        deadline = time.monotonic() + 30

        def converged() -> bool:
            # Every validator has logged every decodable transaction, and all have cut the same
            # number of blocks (an order ending in undecodable entries may still be cut by some).
            sizes = {ledger.log_size() for ledger in ledgers}
            return sizes == {expected} and len({ledger.head()[0].height for ledger in ledgers}) == 1

        while not converged():
            assert time.monotonic() < deadline, [(ledger.log_size(), ledger.head()[0].height) for ledger in ledgers]
            time.sleep(0.005)
        height = ledgers[0].head()[0].height
        for h in range(height + 1):
            assert len({ledger.store.block(h).header for ledger in ledgers}) == 1, f"block {h} differs"
        assert len({ledger.store.state_digest() for ledger in ledgers}) == 1
        assert ledgers[0].store.state_rows() == ledgers[1].store.state_rows() == ledgers[2].store.state_rows()
    finally:
        for ledger in ledgers:
            ledger.close()
