"""Contract rules of the ledger validator: each rule accepts the right transaction and rejects the wrong one."""

from __future__ import annotations

import pytest
from ledger_fixtures import Chain, Kind, Net, cid, grant, onboarding, record, register, sealed_grant, tx

from carechain.common.v1 import common_pb2
from carechain.consent import rules as consent_rules
from carechain.consent.v1 import policy_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import InvalidArgument
from carechain.ledger import transactions
from carechain.ledger.contract import NOT_PERMITTED
from carechain.ledger.state import CONSENT_REVOKED
from carechain.ledger.submission import rejection
from carechain.ledger.v1 import ledger_pb2


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
def chain(net: Net) -> Chain:
    return Chain(net)


@pytest.fixture
def keys(net: Net, chain: Chain) -> dict[str, Ed25519Signer]:
    txs, keys = onboarding(net)
    for t in txs:
        chain.ok(t)
    return keys


# --- envelope ---------------------------------------------------------------------------------

def test_a_transaction_for_another_chain_is_invalid(net, chain):
    org, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    body = transactions.decode_body(org)
    body.chain_id = "other"
    chain.rejects(transactions.sign_transaction(body, net.identity), "another chain")


def test_an_unknown_signer_is_not_permitted(net, chain):
    stranger = Ed25519Signer.generate("stranger")
    reason = chain.rejects(grant(stranger), "unknown signer")
    assert reason.startswith(NOT_PERMITTED)


def test_a_forged_signature_is_invalid(net, chain):
    org, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    org.signature = Ed25519Signer.generate("svc-identity").sign(transactions.TX_SIGNING_CONTEXT + org.body)
    chain.rejects(org, "invalid signature")
    assert chain.state.principal("org-1") is None


def test_a_malformed_body_is_invalid(net, chain):
    chain.rejects(ledger_pb2.Transaction(body=b"\xff\xff", signer_id="svc-identity", signature=b"x"), "malformed")


def test_a_replayed_transaction_is_invalid_and_changes_nothing(net, chain):
    org, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    chain.ok(org)
    chain.rejects(org, "replayed nonce")


def test_an_invalid_transaction_consumes_its_nonce_so_it_cannot_be_replayed(net, chain):
    bad = tx(net.records, register_principal=ledger_pb2.RegisterPrincipal(
        principal_id="x", kind=Kind.PRINCIPAL_KIND_ORGANIZATION, public_key=bytes(32)))
    chain.rejects(bad, "only svc-identity")
    chain.rejects(bad, "replayed nonce")


# --- RegisterPrincipal ------------------------------------------------------------------------

def test_identity_registers_organizations_practitioners_and_patients(net, chain, keys):
    assert chain.state.principal("pat-1").kind == Kind.PRINCIPAL_KIND_PATIENT
    assert chain.state.principal("dr-1").organization_id == "org-1"


def test_only_identity_registers_principals(net, chain):
    payload = ledger_pb2.RegisterPrincipal(principal_id="org-9", kind=Kind.PRINCIPAL_KIND_ORGANIZATION,
                                           public_key=bytes(32))
    reason = chain.rejects(tx(net.records, register_principal=payload), "registers principals")
    assert reason.startswith(NOT_PERMITTED)


def test_a_principal_id_is_registered_once(net, chain, keys):
    again, _ = register(net, "org-1", Kind.PRINCIPAL_KIND_ORGANIZATION)
    chain.rejects(again, "principal_id: already registered")


def test_a_service_id_from_the_trust_bundle_cannot_be_registered(net, chain):
    t, _ = register(net, "svc-records", Kind.PRINCIPAL_KIND_ORGANIZATION)
    chain.rejects(t, "already registered")


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("public_key", b"short", "public_key"),
    ("kind", Kind.PRINCIPAL_KIND_UNSPECIFIED, "kind: must be specified"),
    ("principal_id", "", "principal_id: required"),
])
def test_register_principal_fields_are_checked(net, chain, field, value, reason):
    payload = ledger_pb2.RegisterPrincipal(principal_id="org-2", kind=Kind.PRINCIPAL_KIND_ORGANIZATION,
                                           public_key=bytes(32))
    setattr(payload, field, value)
    chain.rejects(tx(net.identity, register_principal=payload), reason)


def test_patients_and_practitioners_need_a_registered_organization(net, chain):
    t, _ = register(net, "pat-9", Kind.PRINCIPAL_KIND_PATIENT, "org-unknown")
    chain.rejects(t, "organization_id: not a registered organization")
    t, _ = register(net, "dr-9", Kind.PRINCIPAL_KIND_PRACTITIONER, "")
    chain.rejects(t, "organization_id")


# --- RegisterRecord ---------------------------------------------------------------------------

def test_records_registers_a_record_of_a_registered_patient(net, chain, keys):
    chain.ok(tx(net.records, register_record=record("pat-1", "org-1", "r-1")))
    assert chain.state.record("r-1").patient_id == "pat-1"


def test_only_records_registers_records(net, chain, keys):
    chain.rejects(tx(net.identity, register_record=record("pat-1", "org-1")), "only svc-records")


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"patient_id": "dr-1"}, "patient_id: not a registered patient"),
    ({"patient_id": "nobody"}, "patient_id: not a registered patient"),
    ({"organization_id": "pat-1"}, "organization_id: not a registered organization"),
    ({"content_sha256": "ab" * 31}, "content_sha256"),
    ({"content_sha256": "AB" * 32}, "content_sha256"),
    # Ledger privacy: clinical metadata only sealed; validators refuse it in clear.
    ({"resource_type": "Condition"}, "must be sealed in sealed_metadata"),
    ({"categories": [common_pb2.SENSITIVITY_CATEGORY_NORMAL]}, "must be sealed in sealed_metadata"),
    ({"data_date_ms": 1_700_000_000_000}, "must be sealed in sealed_metadata"),
    ({"author_id": "dr-1"}, "must be sealed in sealed_metadata"),
    ({"sealed_metadata": None}, "sealed_metadata: required"),
    ({"sealed_metadata": ledger_pb2.SealedData(key_name="ledger-metadata")}, "sealed_metadata: required"),
    ({"record_id": ""}, "record_id: required"),
])
def test_register_record_fields_are_checked(net, chain, keys, overrides, reason):
    fields = {"patient_id": "pat-1", "organization_id": "org-1", **overrides}
    chain.rejects(tx(net.records, register_record=record(**fields)), reason)


def test_a_record_id_is_registered_once(net, chain, keys):
    chain.ok(tx(net.records, register_record=record("pat-1", "org-1", "r-1")))
    chain.rejects(tx(net.records, register_record=record("pat-1", "org-1", "r-1")), "record_id: already registered")


# --- GrantConsent / RevokeConsent -------------------------------------------------------------

def test_a_patient_grants_consent(net, chain, keys):
    chain.ok(grant(keys["pat-1"], cid("c-1")))
    assert chain.state.consent(cid("c-1")).status == "ACTIVE"


def test_nobody_else_grants_a_patients_consent(net, chain, keys):
    forged = tx(keys["dr-1"], grant_consent=sealed_grant(cid("c-1"), "pat-1"))
    reason = chain.rejects(forged, "only the patient grants")
    assert isinstance(rejection(reason), type(rejection(NOT_PERMITTED + "x")))
    assert chain.state.consent(cid("c-1")) is None


def test_a_practitioner_cannot_grant_as_a_patient_of_their_own(net, chain, keys):
    chain.rejects(grant(keys["dr-1"], cid("c-2")), "patient_id: not a registered patient")


def test_a_consent_needs_a_sealed_policy_and_a_new_id(net, chain, keys):
    pat = keys["pat-1"]
    clear = policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision()])
    chain.rejects(tx(pat, grant_consent=ledger_pb2.GrantConsent(consent_id=cid("c-1"), patient_id="pat-1",
                                                                policy=clear)),
                  "grant_consent.policy: must be sealed")
    both = sealed_grant(cid("c-1"), "pat-1")
    both.policy.CopyFrom(clear)
    chain.rejects(tx(pat, grant_consent=both), "grant_consent.policy: must be sealed")
    chain.rejects(tx(pat, grant_consent=ledger_pb2.GrantConsent(consent_id=cid("c-1"), patient_id="pat-1")),
                  "grant_consent.sealed_policy: required")
    chain.ok(grant(pat, cid("c-1")))
    chain.rejects(grant(pat, cid("c-1")), "consent_id: already exists")


def test_a_grant_needs_svc_consents_attestation_of_its_sealed_policy(net, chain, keys):
    """Validators cannot open the policy: only one the consent service checked (and signed) is valid."""
    pat = keys["pat-1"]
    chain.rejects(tx(pat, grant_consent=sealed_grant(cid("c-1"), "pat-1", attested_by=None)),
                  "grant_consent.policy_attestation: required")
    # Signed by someone else than svc-consent (here the patient itself), or by svc-consent for other bytes.
    chain.rejects(tx(pat, grant_consent=sealed_grant(cid("c-1"), "pat-1", attested_by=pat)),
                  "not attested by svc-consent")
    other = sealed_grant(cid("c-1"), "pat-1")
    sealed = other.sealed_policy.ciphertext
    other.sealed_policy.ciphertext = sealed[:-1] + bytes([sealed[-1] ^ 1])  # always other bytes
    chain.rejects(tx(pat, grant_consent=other), "not attested by svc-consent")
    moved = sealed_grant(cid("c-2"), "pat-1")
    moved.consent_id = cid("c-1")  # an attestation for another consent id
    chain.rejects(tx(pat, grant_consent=moved), "not attested by svc-consent")
    chain.rejects(tx(pat, grant_consent=sealed_grant(cid("c-1"), "pat-1", chain="another-chain")),
                  "not attested by svc-consent")
    assert chain.state.consent(cid("c-1")) is None
    chain.ok(grant(pat, cid("c-1")))


def test_a_patient_revokes_an_active_consent_once(net, chain, keys):
    pat = keys["pat-1"]
    chain.ok(grant(pat, cid("c-1")))
    revoke = ledger_pb2.RevokeConsent(consent_id=cid("c-1"), patient_id="pat-1")
    chain.ok(tx(pat, revoke_consent=revoke))
    assert chain.state.consent(cid("c-1")).status == CONSENT_REVOKED
    chain.rejects(tx(pat, revoke_consent=revoke), "not active")


def test_revoking_needs_the_owning_patient_and_a_known_consent(net, chain, keys):
    pat = keys["pat-1"]
    chain.ok(grant(pat, cid("c-1")))
    t, other = register(net, "pat-2", Kind.PRINCIPAL_KIND_PATIENT, "org-1")
    chain.ok(t)
    chain.rejects(tx(other, revoke_consent=ledger_pb2.RevokeConsent(consent_id=cid("c-1"), patient_id="pat-2")),
                  "belongs to another patient")
    chain.rejects(tx(other, revoke_consent=ledger_pb2.RevokeConsent(consent_id=cid("c-1"), patient_id="pat-1")),
                  "only the patient revokes")
    chain.rejects(tx(pat, revoke_consent=ledger_pb2.RevokeConsent(consent_id=cid("c-x"), patient_id="pat-1")),
                  "unknown consent")
    assert chain.state.consent(cid("c-1")).status == "ACTIVE"


# --- AnchorAuditBatch -------------------------------------------------------------------------

def anchor(number: int) -> ledger_pb2.AnchorAuditBatch:
    return ledger_pb2.AnchorAuditBatch(batch_number=number, first_sequence=0, last_sequence=9, merkle_root=bytes(32))


def test_audit_anchors_batches_with_increasing_numbers(net, chain):
    chain.ok(tx(net.audit, anchor_audit_batch=anchor(1)))
    chain.ok(tx(net.audit, anchor_audit_batch=anchor(2)))
    chain.rejects(tx(net.audit, anchor_audit_batch=anchor(2)), "batch_number: must be greater")
    chain.rejects(tx(net.audit, anchor_audit_batch=anchor(1)), "batch_number")
    assert chain.state.last_audit_batch() == 2


def test_only_audit_anchors_batches(net, chain):
    chain.rejects(tx(net.records, anchor_audit_batch=anchor(1)), "only svc-audit")


def test_an_anchor_needs_a_32_byte_root(net, chain):
    bad = anchor(1)
    bad.merkle_root = b"x"
    chain.rejects(tx(net.audit, anchor_audit_batch=bad), "merkle_root")


# --- EraseRecords -----------------------------------------------------------------------------

def test_a_patient_erases_all_their_records(net, chain, keys):
    for rid in ("r-1", "r-2"):
        chain.ok(tx(net.records, register_record=record("pat-1", "org-1", rid)))
    chain.ok(tx(keys["pat-1"], erase_records=ledger_pb2.EraseRecords(patient_id="pat-1")))
    assert chain.state.record("r-1").erased and chain.state.record("r-2").erased


def test_identity_erases_named_records(net, chain, keys):
    for rid in ("r-1", "r-2"):
        chain.ok(tx(net.records, register_record=record("pat-1", "org-1", rid)))
    chain.ok(tx(net.identity, erase_records=ledger_pb2.EraseRecords(patient_id="pat-1", record_ids=["r-1"])))
    assert chain.state.record("r-1").erased and not chain.state.record("r-2").erased


def test_nobody_else_erases_and_only_the_patients_records(net, chain, keys):
    chain.ok(tx(net.records, register_record=record("pat-1", "org-1", "r-1")))
    chain.rejects(tx(keys["dr-1"], erase_records=ledger_pb2.EraseRecords(patient_id="pat-1")), "only the patient")
    t, other = register(net, "pat-2", Kind.PRINCIPAL_KIND_PATIENT, "org-1")
    chain.ok(t)
    chain.rejects(tx(other, erase_records=ledger_pb2.EraseRecords(patient_id="pat-2", record_ids=["r-1"])),
                  "not the patient's")
    assert not chain.state.record("r-1").erased


def _erase_for(requested_by: str, patient_id: str = "pat-1", record_ids=("r-1",)) -> dict:
    return {"erase_records": ledger_pb2.EraseRecords(patient_id=patient_id, record_ids=list(record_ids),
                                                     requested_by=requested_by)}


def test_records_erases_for_the_patient_a_delegate_or_the_operator(net, chain, keys):
    for rid in ("r-1", "r-2", "r-3", "r-4"):
        chain.ok(tx(net.records, register_record=record("pat-1", "org-1", rid)))
    chain.ok(tx(net.records, **_erase_for("pat-1")))
    chain.ok(tx(keys["pat-1"], register_delegate=ledger_pb2.RegisterDelegate(
        patient_id="pat-1", delegate_id="dr-1", relationship=policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN)))
    chain.ok(tx(net.records, **_erase_for("dr-1", record_ids=["r-2"])))
    chain.ok(tx(net.records, **_erase_for(net.operator.key_id, record_ids=["r-3"])))
    erased = chain.state.record("r-1"), chain.state.record("r-2"), chain.state.record("r-3")
    assert all(r.erased for r in erased) and not chain.state.record("r-4").erased
    assert erased[0].erased_log_index < erased[1].erased_log_index < erased[2].erased_log_index


def test_records_erases_for_nobody_else(net, chain, keys):
    chain.ok(tx(net.records, register_record=record("pat-1", "org-1", "r-1")))
    t, _ = register(net, "pat-2", Kind.PRINCIPAL_KIND_PATIENT, "org-1")
    chain.ok(t)
    for requested_by in ("", "pat-2", "dr-1", "org-1", net.identity.key_id):
        chain.rejects(tx(net.records, **_erase_for(requested_by)), "erase_records.requested_by")
    chain.rejects(tx(keys["dr-1"], **_erase_for("pat-1")), "only the patient")
    assert not chain.state.record("r-1").erased


# --- KeyRotation ------------------------------------------------------------------------------

def test_identity_records_increasing_key_versions(net, chain, keys):
    chain.ok(tx(net.identity, key_rotation=ledger_pb2.KeyRotation(patient_id="pat-1", key_version=2)))
    chain.rejects(tx(net.identity, key_rotation=ledger_pb2.KeyRotation(patient_id="pat-1", key_version=2)),
                  "key_version")
    chain.rejects(tx(keys["pat-1"], key_rotation=ledger_pb2.KeyRotation(patient_id="pat-1", key_version=3)),
                  "only svc-identity")
    chain.rejects(tx(net.identity, key_rotation=ledger_pb2.KeyRotation(patient_id="dr-1", key_version=3)),
                  "not a registered patient")


# --- determinism ------------------------------------------------------------------------------

def test_the_same_transactions_give_the_same_results_and_state(net):
    txs, keys = onboarding(net)
    txs += [
        tx(net.records, register_record=record("pat-1", "org-1", "r-1")),
        grant(keys["pat-1"], cid("c-1")),
        grant(keys["dr-1"], cid("c-2")),
        tx(keys["pat-1"], erase_records=ledger_pb2.EraseRecords(patient_id="pat-1")),
    ]
    runs = []
    for _ in range(2):
        chain = Chain(net)
        results = [transactions.encode(chain.apply(t)) for t in txs]
        s = chain.state
        runs.append((results, list(s.principals.items()), list(s.nonces.items()), list(s.records.items()),
                     list(s.consents.items())))
    assert runs[0] == runs[1]


def test_rejection_maps_who_reasons_to_permission_denied():
    from carechain.core.errors import FailedPrecondition, PermissionDenied

    assert isinstance(rejection("not permitted: only svc-records registers records"), PermissionDenied)
    assert isinstance(rejection("register_record.record_id: already registered"), FailedPrecondition)


# --- the whole rule set on the ledger (issue 9 part C) ------------------------------------------


def _grant_with(patient: Ed25519Signer, provision: policy_pb2.Provision, consent_id: str | None = None):
    return tx(patient, grant_consent=ledger_pb2.GrantConsent(
        consent_id=consent_id or cid("c-direct"), patient_id=patient.key_id,
        policy=policy_pb2.ConsentPolicy(provisions=[provision])))


_TREAT = [common_pb2.PURPOSE_OF_USE_TREAT]
_DR_1 = [policy_pb2.ConsentActor(practitioner_id="dr-1")]
_PERMIT = policy_pb2.PROVISION_TYPE_PERMIT


@pytest.mark.parametrize(("provision", "reason"), [
    (policy_pb2.Provision(type=_PERMIT, actors=_DR_1), "provisions[0].purposes"),
    (policy_pb2.Provision(type=_PERMIT, purposes=_TREAT), "provisions[0].actors"),
    (policy_pb2.Provision(type=_PERMIT, purposes=[99], actors=_DR_1), "purposes"),
])
def test_a_directly_submitted_grant_must_meet_the_consent_services_rules(chain, keys, provision, reason):
    """Validators cannot see a sealed policy, so the rules hold through svc-consent's attestation.

    SealPolicy runs validate_grant_policy before it seals and attests, so no attestation exists for a
    policy breaking the rules; a direct grant of it in clear, or sealed without the attestation, is invalid.
    """
    with pytest.raises(InvalidArgument) as refused:
        consent_rules.validate_grant_policy(policy_pb2.ConsentPolicy(provisions=[provision]))
    assert reason in refused.value.message
    chain.rejects(_grant_with(keys["pat-1"], provision), "grant_consent.policy: must be sealed")
    unattested = sealed_grant(cid("c-direct"), "pat-1", attested_by=keys["pat-1"])
    assert chain.rejects(tx(keys["pat-1"], grant_consent=unattested), "not attested by svc-consent").startswith(
        NOT_PERMITTED)
    assert chain.state.consent(cid("c-direct")) is None


def test_a_directly_submitted_grant_needs_a_uuid_consent_id(chain, keys):
    reason = chain.rejects(tx(keys["pat-1"], grant_consent=sealed_grant("c-1", "pat-1")), "must be a UUID")
    assert reason.startswith("grant_consent.consent_id")
    assert chain.state.consent("c-1") is None


def test_records_are_registered_only_for_the_writing_organizations_patients(net, chain, keys):
    for transaction in (register(net, "org-2", Kind.PRINCIPAL_KIND_ORGANIZATION)[0],
                        register(net, "dr-2", Kind.PRINCIPAL_KIND_PRACTITIONER, "org-2")[0]):
        chain.ok(transaction)
    # org-2 (or its practitioner) writing for org-1's patient: refused even though svc-records signs.
    reason = chain.rejects(tx(net.records, register_record=record("pat-1", "org-2")), "only for its own patients")
    assert reason.startswith(NOT_PERMITTED)
    chain.ok(tx(net.records, register_record=record("pat-1", "org-1")))


# --- principal lifecycle -------------------------------------------------------------------------


def test_the_registering_organization_deactivates_a_practitioner_who_then_signs_nothing(net, chain, keys):
    chain.ok(register(net, "org-2", Kind.PRINCIPAL_KIND_ORGANIZATION)[0])
    deactivate = ledger_pb2.DeactivatePrincipal(principal_id="dr-1")
    for outsider in (keys["pat-1"], keys["dr-1"]):
        assert chain.rejects(tx(outsider, deactivate_principal=deactivate), "registering authority").startswith(
            NOT_PERMITTED)
    org_2 = register(net, "org-2b", Kind.PRINCIPAL_KIND_ORGANIZATION)
    chain.ok(org_2[0])
    chain.rejects(tx(org_2[1], deactivate_principal=deactivate), "registering authority")
    chain.ok(tx(keys["org-1"], deactivate_principal=deactivate))
    assert not chain.state.principal("dr-1").active
    chain.rejects(tx(keys["org-1"], deactivate_principal=deactivate), "already deactivated")
    reason = chain.rejects(tx(keys["dr-1"], register_delegate=ledger_pb2.RegisterDelegate()), "deactivated")
    assert reason.startswith(NOT_PERMITTED)
    # Organisations are deactivated by the operator (or identity), not by themselves.
    chain.rejects(tx(keys["org-1"], deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="org-1")),
                  "registering authority")
    chain.ok(tx(net.operator, deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="org-1")))


def test_a_rotated_key_replaces_the_old_one_for_transactions(net, chain, keys):
    new_key = Ed25519Signer.generate("pat-1")
    rotate = ledger_pb2.RotatePrincipalKey(principal_id="pat-1", public_key=new_key.public_key_bytes())
    chain.rejects(tx(keys["pat-1"], rotate_principal_key=rotate), "registering authority")
    chain.rejects(tx(keys["org-1"], rotate_principal_key=ledger_pb2.RotatePrincipalKey(
        principal_id="pat-1", public_key=b"short")), "public_key")
    chain.ok(tx(net.identity, rotate_principal_key=rotate))
    assert chain.state.principal("pat-1").public_key == new_key.public_key_bytes()
    chain.rejects(grant(keys["pat-1"], cid("c-old")), "invalid signature")
    chain.ok(grant(new_key, cid("c-new")))


def test_a_specialty_is_attested_by_the_practitioners_own_organization(net, chain, keys):
    def practitioner(signer, principal_id: str, **fields):
        payload = ledger_pb2.RegisterPrincipal(principal_id=principal_id, kind=Kind.PRINCIPAL_KIND_PRACTITIONER,
                                               public_key=Ed25519Signer.generate(principal_id).public_key_bytes(),
                                               organization_id="org-1", **fields)
        return tx(signer, register_principal=payload)

    chain.rejects(practitioner(net.identity, "dr-a", specialty="psychiatry"), "attested")
    chain.rejects(practitioner(net.identity, "dr-b", specialty="psychiatry", specialty_attested_by="org-9"),
                  "attested")
    chain.rejects(practitioner(net.identity, "dr-c", specialty="Psychiatry!", specialty_attested_by="org-1"),
                  "specialty")
    chain.ok(practitioner(net.identity, "dr-d", specialty="psychiatry", specialty_attested_by="org-1"))
    # The organisation registers (and attests) its practitioner itself; another signer cannot.
    chain.ok(practitioner(keys["org-1"], "dr-e", specialty="emergency", specialty_attested_by="org-1"))
    assert chain.state.principal("dr-e").specialty == "emergency"
    chain.rejects(practitioner(keys["dr-1"], "dr-f"), "registers principals")
