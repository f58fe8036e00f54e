"""Ledger contract rules for delegates (guardians, proxies) and recorded break-glass windows."""

from __future__ import annotations

import time

import pytest
from ledger_fixtures import CHAIN, Kind, Net, cid, onboarding, register, sealed_grant, tx

from carechain.common.v1 import common_pb2
from carechain.consent.v1 import policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.ledger import transactions
from carechain.ledger.contract import NOT_PERMITTED, Validator
from carechain.ledger.sqlite_store import LedgerStore
from carechain.ledger.state import CONSENT_ACTIVE, CONSENT_REVOKED, EmptyState, PendingState
from carechain.ledger.v1 import ledger_pb2

GUARDIAN = policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN


class Chain:
    def __init__(self, net: Net) -> None:
        self.validator = Validator(CHAIN, net.trust)
        self.block_time_ms: int | None = None  # None = now: the time a block cut now would carry
        self.state = PendingState(EmptyState())
        self.index = 0

    def apply(self, transaction: ledger_pb2.Transaction) -> ledger_pb2.TransactionResult:
        block_time_ms = self.block_time_ms if self.block_time_ms is not None else int(time.time() * 1000)
        result = self.validator.apply(transaction, self.state, self.index, block_time_ms=block_time_ms)
        self.index += 1
        return result

    def ok(self, transaction: ledger_pb2.Transaction) -> None:
        result = self.apply(transaction)
        assert result.valid, result.reason

    def rejects(self, transaction: ledger_pb2.Transaction, reason: str) -> str:
        result = self.apply(transaction)
        assert not result.valid and reason in result.reason, result.reason
        return result.reason


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
def setup(net: Net) -> tuple[Chain, dict[str, Ed25519Signer]]:
    chain = Chain(net)
    txs, keys = onboarding(net)
    guardian_tx, guardian = register(net, "guardian-1", Kind.PRINCIPAL_KIND_PATIENT, "org-1")
    for t in [*txs, guardian_tx]:
        chain.ok(t)
    return chain, {**keys, "guardian-1": guardian}


def delegate(signer: Ed25519Signer, delegate_id: str = "guardian-1", patient_id: str = "pat-1",
             relationship: int = GUARDIAN, start_ms: int = 0, end_ms: int = 0) -> ledger_pb2.Transaction:
    return tx(signer, register_delegate=ledger_pb2.RegisterDelegate(
        patient_id=patient_id, delegate_id=delegate_id, relationship=relationship,
        period=common_pb2.Period(start_ms=start_ms, end_ms=end_ms)))


def revoke_delegate(signer: Ed25519Signer, delegate_id: str = "guardian-1") -> ledger_pb2.Transaction:
    return tx(signer, revoke_delegate=ledger_pb2.RevokeDelegate(patient_id="pat-1", delegate_id=delegate_id))


def grant_for(signer: Ed25519Signer, consent_id: str, created_at_ms: int | None = None) -> ledger_pb2.Transaction:
    body = transactions.new_body(CHAIN, signer.key_id, grant_consent=sealed_grant(consent_id, "pat-1"))
    if created_at_ms is not None:
        body.created_at_ms = created_at_ms
    return transactions.sign_transaction(body, signer)


def test_an_active_delegate_grants_and_revokes_for_the_patient(setup) -> None:
    chain, keys = setup
    chain.ok(delegate(keys["pat-1"]))
    assert chain.state.delegation("pat-1", "guardian-1").status == CONSENT_ACTIVE
    chain.ok(grant_for(keys["guardian-1"], cid("c-1")))
    chain.ok(tx(keys["guardian-1"], revoke_consent=ledger_pb2.RevokeConsent(consent_id=cid("c-1"), patient_id="pat-1")))
    assert chain.state.consent(cid("c-1")).status == CONSENT_REVOKED


def test_without_delegation_or_after_revocation_no_one_else_grants(setup) -> None:
    chain, keys = setup
    reason = chain.rejects(grant_for(keys["guardian-1"], cid("c-1")), "only the patient grants")
    assert reason.startswith(NOT_PERMITTED)
    chain.ok(delegate(keys["pat-1"]))
    chain.ok(revoke_delegate(keys["pat-1"]))
    assert chain.state.delegation("pat-1", "guardian-1").status == CONSENT_REVOKED
    chain.rejects(grant_for(keys["guardian-1"], cid("c-2")), "only the patient grants")
    chain.rejects(revoke_delegate(keys["pat-1"]), "not an active delegate")


def test_the_delegation_period_is_checked_at_block_time_not_the_signed_creation_time(setup) -> None:
    chain, keys = setup
    now = int(time.time() * 1000)
    start, end = now - 3_600_000, now + 3_600_000
    chain.ok(delegate(keys["pat-1"], start_ms=start, end_ms=end))
    chain.block_time_ms = now
    chain.ok(grant_for(keys["guardian-1"], cid("c-1"), created_at_ms=now))
    # The attack: once the period is over, the delegate backdates its grant into it; block time decides.
    chain.block_time_ms = end
    chain.rejects(grant_for(keys["guardian-1"], cid("c-2"), created_at_ms=end - 1_000), "only the patient grants")
    chain.block_time_ms = start - 1
    chain.rejects(grant_for(keys["guardian-1"], cid("c-3"), created_at_ms=start + 1_000), "only the patient grants")


def test_a_creation_time_far_from_block_time_is_invalid(setup) -> None:
    chain, keys = setup
    chain.ok(delegate(keys["pat-1"]))
    now = chain.block_time_ms = int(time.time() * 1000)
    limit = chain.validator.max_skew_ms
    chain.ok(grant_for(keys["guardian-1"], cid("c-1"), created_at_ms=now - limit))
    chain.rejects(grant_for(keys["guardian-1"], cid("c-2"), created_at_ms=now - limit - 1), "created_at_ms")
    chain.rejects(grant_for(keys["guardian-1"], cid("c-3"), created_at_ms=now + limit + 1), "created_at_ms")
    chain.rejects(grant_for(keys["pat-1"], cid("c-4"), created_at_ms=1), "from the block (ordering) time")


@pytest.mark.parametrize(("make", "reason"), [
    (lambda k: delegate(k["guardian-1"]), "only the patient registers their delegate"),
    (lambda k: delegate(k["pat-1"], delegate_id="nobody"), "not a registered patient or practitioner"),
    (lambda k: delegate(k["pat-1"], delegate_id="org-1"), "not a registered patient or practitioner"),
    (lambda k: delegate(k["pat-1"], delegate_id="pat-1"), "their own delegate"),
    (lambda k: delegate(k["pat-1"], relationship=0), "relationship"),
    (lambda k: delegate(k["pat-1"], start_ms=5, end_ms=5), "period.end_ms"),
    (lambda k: revoke_delegate(k["guardian-1"]), "only the patient revokes their delegate"),
])
def test_invalid_delegations_are_rejected(setup, make, reason) -> None:
    chain, keys = setup
    chain.rejects(make(keys), reason)
    assert chain.state.delegation("pat-1", "guardian-1") is None


def test_a_practitioner_may_be_a_delegate_and_registering_twice_is_rejected(setup) -> None:
    chain, keys = setup
    chain.ok(delegate(keys["pat-1"], delegate_id="dr-1"))
    chain.rejects(delegate(keys["pat-1"], delegate_id="dr-1"), "already a delegate")


def test_break_glass_windows_are_recorded_only_by_the_consent_service(net, setup) -> None:
    chain, keys = setup
    now = chain.block_time_ms = int(time.time() * 1000)
    window = ledger_pb2.BreakGlassAccess(actor_id="dr-1", patient_id="pat-1", started_at_ms=now,
                                         expires_at_ms=now + 10)
    chain.ok(tx(net.consent, break_glass_access=window))
    chain.rejects(tx(keys["dr-1"], break_glass_access=window), "only svc-consent")
    bad = ledger_pb2.BreakGlassAccess(actor_id="pat-1", patient_id="pat-1", started_at_ms=now, expires_at_ms=now + 10)
    chain.rejects(tx(net.consent, break_glass_access=bad), "actor_id")
    backwards = ledger_pb2.BreakGlassAccess(actor_id="dr-1", patient_id="pat-1", started_at_ms=now, expires_at_ms=now)
    chain.rejects(tx(net.consent, break_glass_access=backwards), "window")
    # A window cannot be backdated (or post-dated) past the skew: it starts at its ordering time.
    old = ledger_pb2.BreakGlassAccess(actor_id="dr-1", patient_id="pat-1", started_at_ms=10, expires_at_ms=20)
    chain.rejects(tx(net.consent, break_glass_access=old), "block) time")


def test_delegations_persist_in_the_store(tmp_path, setup) -> None:
    chain, keys = setup
    chain.ok(delegate(keys["pat-1"], start_ms=7, end_ms=9))
    store = LedgerStore.open(tmp_path)
    store._apply(chain.state)  # noqa: SLF001 - the block-commit path, without a block
    stored = store.delegation("pat-1", "guardian-1")
    store.close()
    assert stored == chain.state.delegation("pat-1", "guardian-1")
    assert (stored.start_ms, stored.end_ms, stored.relationship) == (7, 9, GUARDIAN)
