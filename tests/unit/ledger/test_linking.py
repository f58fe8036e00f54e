"""LinkPatientIdentity / UnlinkPatientIdentity: both sides prove, aliases resolve, state derives from the chain."""

from __future__ import annotations

import pytest
from ledger_fixtures import (  # noqa: F401 - chain_fixture and net_fixture are fixtures
    CHAIN,
    Chain,
    Kind,
    Net,
    chain_fixture,
    net_fixture,
    onboarding,
    open_ledger,
    record,
    register,
    tx,
)

from carechain.core.crypto import Ed25519Signer
from carechain.ledger.contract import NOT_PERMITTED
from carechain.ledger.linking import attest_link
from carechain.ledger.sqlite_store import LedgerStore
from carechain.ledger.v1 import ledger_pb2


@pytest.fixture
def keys(net: Net, chain: Chain) -> dict[str, Ed25519Signer]:
    """org-1 with pat-1 (the network identity), org-2 with pat-2 (the same person there), org-3 with pat-3."""
    txs, keys = onboarding(net)
    for principal_id, kind, org in (("org-2", Kind.PRINCIPAL_KIND_ORGANIZATION, ""),
                                    ("pat-2", Kind.PRINCIPAL_KIND_PATIENT, "org-2"),
                                    ("org-3", Kind.PRINCIPAL_KIND_ORGANIZATION, ""),
                                    ("pat-3", Kind.PRINCIPAL_KIND_PATIENT, "org-3"),
                                    ("guardian", Kind.PRINCIPAL_KIND_PATIENT, "org-1")):
        t, keys[principal_id] = register(net, principal_id, kind, org)
        txs.append(t)
    for t in txs:
        chain.ok(t)
    return keys


def link(signer: Ed25519Signer, attestation: ledger_pb2.LinkPatientIdentity) -> ledger_pb2.Transaction:
    return tx(signer, link_patient_identity=attestation)


def unlink(signer: Ed25519Signer, network: str, linked: str) -> ledger_pb2.Transaction:
    return tx(signer, unlink_patient_identity=ledger_pb2.UnlinkPatientIdentity(network_patient_id=network,
                                                                               linked_patient_id=linked))


def test_a_link_attested_by_the_organization_and_signed_by_the_patient_resolves_the_alias(chain, keys):
    chain.ok(link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")))
    assert chain.state.network_patient("pat-2") == "pat-1"
    assert chain.state.network_patient("pat-1") == "pat-1"
    assert chain.state.network_patient("pat-3") == "pat-3"
    assert chain.state.linked_patients("pat-1") == ["pat-2"]


def test_a_missing_or_forged_attestation_is_not_permitted(chain, keys):
    attestation = attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")
    missing = ledger_pb2.LinkPatientIdentity(network_patient_id="pat-1", linked_patient_id="pat-2",
                                             organization_id="org-2")
    forged = ledger_pb2.LinkPatientIdentity()
    forged.CopyFrom(attestation)
    forged.attestation = bytes(64)
    other_pair = attest_link(keys["org-2"], CHAIN, "pat-3", "pat-2")
    other_pair.network_patient_id = "pat-1"  # an attestation for another network identity, re-pointed
    other_chain = attest_link(keys["org-2"], "another-chain", "pat-1", "pat-2")
    for bad in (missing, forged, other_pair, other_chain):
        reason = chain.rejects(link(keys["pat-1"], bad), "attestation does not verify")
        assert reason.startswith(NOT_PERMITTED)
    assert chain.state.network_patient("pat-2") == "pat-2"


def test_another_organization_cannot_attest_a_patient_it_did_not_register(chain, keys):
    by_org_3 = attest_link(keys["org-3"], CHAIN, "pat-1", "pat-2")
    reason = chain.rejects(link(keys["pat-1"], by_org_3), "did not register the linked patient")
    assert reason.startswith(NOT_PERMITTED)
    # Nor by naming the right organisation over its own signature.
    by_org_3.organization_id = "org-2"
    chain.rejects(link(keys["pat-1"], by_org_3), "attestation does not verify")


def test_only_the_network_patient_or_an_active_delegate_signs_the_link(chain, keys):
    attestation = attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")
    for outsider in ("pat-2", "pat-3", "org-2", "dr-1", "guardian"):
        chain.rejects(link(keys[outsider], attestation), NOT_PERMITTED + "only the network patient")
    chain.ok(tx(keys["pat-1"], register_delegate=ledger_pb2.RegisterDelegate(
        patient_id="pat-1", delegate_id="guardian", relationship=1)))
    chain.ok(link(keys["guardian"], attestation))
    assert chain.state.network_patient("pat-2") == "pat-1"


def test_an_attestation_links_once_even_after_an_unlink(chain, keys):
    attestation = attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")
    first = link(keys["pat-1"], attestation)
    chain.ok(first)
    chain.rejects(first, "replayed nonce")
    chain.ok(unlink(keys["org-2"], "pat-1", "pat-2"))
    chain.rejects(link(keys["pat-1"], attestation), "attestation was used before")
    # A fresh attestation links again.
    chain.ok(link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")))
    assert chain.state.network_patient("pat-2") == "pat-1"


def test_no_self_link_no_double_link_and_no_chains_of_aliases(chain, keys):
    chain.rejects(link(keys["pat-1"], attest_link(keys["org-1"], CHAIN, "pat-1", "pat-1")), "linked to itself")
    chain.ok(link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")))
    # pat-2 is linked already: not to another network identity as well.
    chain.rejects(link(keys["pat-3"], attest_link(keys["org-2"], CHAIN, "pat-3", "pat-2")), "already linked")
    # An alias is no network identity: pat-3 cannot be linked to pat-2.
    chain.rejects(link(keys["pat-2"], attest_link(keys["org-3"], CHAIN, "pat-2", "pat-3")), "is itself linked")
    # A network identity with aliases cannot become an alias.
    chain.rejects(link(keys["pat-3"], attest_link(keys["org-1"], CHAIN, "pat-3", "pat-1")),
                  "is a network identity with linked patients")


def test_unknown_and_deactivated_principals_cannot_be_linked(net, chain, keys):
    chain.rejects(link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-9")), "not a registered patient")
    chain.rejects(link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "dr-1")), "not a registered patient")
    chain.ok(tx(keys["org-3"], deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="pat-3")))
    chain.rejects(link(keys["pat-1"], attest_link(keys["org-3"], CHAIN, "pat-1", "pat-3")), "deactivated")
    chain.ok(tx(net.operator, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="org-2")))
    chain.rejects(link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")),
                  "organization was deactivated")
    chain.ok(tx(keys["org-1"], deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="pat-1")))
    chain.rejects(link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")), "deactivated")


def test_the_patient_or_the_organization_unlinks_and_nobody_else(chain, keys):
    chain.ok(link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")))
    for outsider in ("pat-2", "pat-3", "org-3", "org-1"):
        chain.rejects(unlink(keys[outsider], "pat-1", "pat-2"), NOT_PERMITTED)
    chain.rejects(unlink(keys["pat-1"], "pat-3", "pat-2"), "not linked to this network identity")
    chain.ok(unlink(keys["pat-1"], "pat-1", "pat-2"))
    assert chain.state.network_patient("pat-2") == "pat-2"
    assert chain.state.linked_patients("pat-1") == []
    chain.rejects(unlink(keys["pat-1"], "pat-1", "pat-2"), "not linked")


def test_links_persist_in_the_chain_store_and_replay_to_the_same_state(tmp_path, net):
    ledger = open_ledger(tmp_path, net)
    try:
        txs, keys = onboarding(net)
        for principal_id, kind, org in (("org-2", Kind.PRINCIPAL_KIND_ORGANIZATION, ""),
                                        ("pat-2", Kind.PRINCIPAL_KIND_PATIENT, "org-2"),
                                        ("pat-4", Kind.PRINCIPAL_KIND_PATIENT, "org-2")):
            t, keys[principal_id] = register(net, principal_id, kind, org)
            txs.append(t)
        txs += [link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")),
                link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-4")),
                unlink(keys["pat-1"], "pat-1", "pat-4")]
        for t in txs:
            committed = ledger.submit(t, timeout=10)
            assert committed.valid, committed.reason
        report = ledger.verify()
        assert report.ok, report.problem
    finally:
        ledger.close()
    store = LedgerStore.open_read_only(tmp_path / "ledger")
    try:
        assert store.network_patient("pat-2") == "pat-1"
        assert store.network_patient("pat-4") == "pat-4"
        assert store.linked_patients("pat-1") == ["pat-2"]
        assert [link.linked_patient_id for link in store.patient_links_to("pat-1")] == ["pat-2", "pat-4"]
        assert "patient_links" in store.state_rows()
    finally:
        store.close()


def test_the_network_patient_erases_the_records_of_its_linked_identities_and_nobody_elses(net, chain, keys):
    chain.ok(tx(net.records, register_record=record("pat-2", "org-2", "r-at-2")))
    chain.ok(tx(net.records, register_record=record("pat-3", "org-3", "r-at-3")))
    # Not linked yet: pat-2's record is not pat-1's to erase.
    chain.rejects(tx(keys["pat-1"], erase_records=ledger_pb2.EraseRecords(patient_id="pat-1", record_ids=["r-at-2"])),
                  "not the patient's")
    chain.ok(link(keys["pat-1"], attest_link(keys["org-2"], CHAIN, "pat-1", "pat-2")))
    chain.rejects(tx(keys["pat-1"], erase_records=ledger_pb2.EraseRecords(patient_id="pat-1", record_ids=["r-at-3"])),
                  "not the patient's")
    chain.ok(tx(keys["pat-1"], erase_records=ledger_pb2.EraseRecords(patient_id="pat-1")))  # all: links included
    assert chain.state.record("r-at-2").erased and not chain.state.record("r-at-3").erased
