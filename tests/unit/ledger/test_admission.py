"""Admission: what is refused before it is ordered (encoding, chain, signer, signature, nonce, clear PHI)."""

from __future__ import annotations

import threading

import pytest
from ledger_fixtures import (  # noqa: F401 - net and ledger are fixtures
    TIMEOUT,
    Kind,
    Net,
    grant,
    ledger_fixture,
    net_fixture,
    onboarding,
    open_ledger,
    record,
    register,
    tx,
)

from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import AlreadyExists, InvalidArgument, PermissionDenied
from carechain.ledger.chain import Ledger
from carechain.ledger.v1 import ledger_pb2


def test_a_replayed_nonce_is_refused_before_ordering(ledger: Ledger, net: Net):
    t, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    ledger.submit(t, TIMEOUT)
    with pytest.raises(AlreadyExists, match="replayed nonce"):
        ledger.submit(t, TIMEOUT)
    assert ledger.log_size() == 1


def test_a_nonce_pending_in_the_order_is_refused_and_close_commits_what_is_ordered(tmp_path, net: Net):
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
def test_admission_refuses_malformed_or_forged_transactions(ledger: Ledger, net: Net, mutate, error, match):
    t, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    mutate(t)
    with pytest.raises(error, match=match):
        ledger.submit(t, TIMEOUT)
    assert ledger.log_size() == 0


def test_admission_refuses_another_chain_and_unknown_signers(ledger: Ledger, net: Net):
    with pytest.raises(InvalidArgument, match="chain_id"):
        ledger.submit(tx(net.identity, chain="elsewhere", key_rotation=ledger_pb2.KeyRotation(patient_id="p")), TIMEOUT)
    with pytest.raises(PermissionDenied, match="unknown signer"):
        ledger.submit(grant(Ed25519Signer.generate("pat-x")), TIMEOUT)


def test_a_registered_principal_can_then_sign_transactions(ledger: Ledger, net: Net):
    txs, keys = onboarding(net)
    for t in txs:
        assert ledger.submit(t, TIMEOUT).valid
    assert ledger.submit(grant(keys["pat-1"]), TIMEOUT).valid


def test_clinical_metadata_in_clear_is_refused_before_ordering(ledger: Ledger, net: Net):
    """Even an in-process submitter cannot order clear clinical fields: an invalid entry keeps its contents."""
    txs, keys = onboarding(net)
    for t in txs:
        ledger.submit(t, TIMEOUT)
    before = ledger.log_size()
    leaky = tx(net.records, register_record=record("pat-1", "org-1", "r-clear", resource_type="Condition"))
    with pytest.raises(InvalidArgument, match="transaction.body: .*must be sealed"):
        ledger.submit(leaky, TIMEOUT)
    grant_in_clear = ledger_pb2.GrantConsent(consent_id="9f7a3c2e-0000-4000-8000-00000000c1ea", patient_id="pat-1")
    grant_in_clear.policy.SetInParent()
    with pytest.raises(InvalidArgument, match="grant_consent.policy"):
        ledger.submit(tx(keys["pat-1"], grant_consent=grant_in_clear), TIMEOUT)
    assert ledger.log_size() == before
    assert ledger.orderer.appended == before  # nothing was ordered
