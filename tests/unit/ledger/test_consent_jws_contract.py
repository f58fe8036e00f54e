"""Validators hold a FHIR-gateway grant to the patient's JWS: svc-consent alone cannot forge one.

A grant relayed from the REST gateway is a GrantConsent signed by svc-consent carrying the patient's compact
JWS over the Consent bytes (docs/fhir.md, "Consent"). Each test is an attack a compromised svc-consent (or a
replaying client) could try, and the rule of :mod:`carechain.ledger.contract` that stops it.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from ledger_fixtures import CHAIN, Chain, Kind, Net, cid, onboarding, register, sealed_grant, tx

from carechain.consent.rules import attest_policy
from carechain.consent.v1 import policy_pb2
from carechain.core.consent_jws import body_sha256, sign_consent
from carechain.core.crypto import Ed25519Signer
from carechain.ledger.contract import NOT_PERMITTED
from carechain.ledger.state import CONSENT_REVOKED
from carechain.ledger.v1 import ledger_pb2

BODY = b'{"resourceType":"Consent","status":"active"}'


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
def chain(net: Net) -> Chain:
    return Chain(net)


@pytest.fixture
def keys(net: Net, chain: Chain) -> dict[str, Ed25519Signer]:
    txs, keys = onboarding(net)
    other, other_key = register(net, "pat-2", Kind.PRINCIPAL_KIND_PATIENT, "org-1")
    for t in [*txs, other]:
        chain.ok(t)
    keys["pat-2"] = other_key
    return keys


def relayed(net: Net, jws: str | None, patient_id: str = "pat-1", consent: str = "c-1", body: bytes = BODY,
            bound: str | None = None) -> ledger_pb2.Transaction:
    """svc-consent's GrantConsent for patient_id carrying jws, its attestation bound to bound (default: body)."""
    consent_id = cid(consent)
    grant = sealed_grant(consent_id, patient_id, attested_by=None)
    grant.policy_attestation = attest_policy(net.consent, CHAIN, consent_id, patient_id, grant.sealed_policy,
                                             body_sha256(body) if bound is None else bound)
    if jws is not None:
        grant.patient_jws = jws.encode()
    return tx(net.consent, grant_consent=grant)


def test_a_grant_the_patient_signed_as_a_jws_is_valid_once(net, chain, keys):
    jws = sign_consent(keys["pat-1"], BODY, "pat-1", CHAIN)
    chain.ok(relayed(net, jws))
    assert chain.state.consent(cid("c-1")).patient_id == "pat-1"
    # The same signature again (another consent id, a fresh transaction nonce): the jti is spent.
    chain.rejects(relayed(net, jws, consent="c-2"), "jti was used before")


def test_an_active_delegate_signs_for_the_patient(net, chain, keys):
    chain.ok(tx(keys["pat-1"], register_delegate=ledger_pb2.RegisterDelegate(
        patient_id="pat-1", delegate_id="pat-2", relationship=policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN)))
    chain.ok(relayed(net, sign_consent(keys["pat-2"], BODY, "pat-1", CHAIN)))


def test_a_revoked_delegate_signs_nothing(net, chain, keys):
    chain.ok(tx(keys["pat-1"], register_delegate=ledger_pb2.RegisterDelegate(
        patient_id="pat-1", delegate_id="pat-2", relationship=policy_pb2.DELEGATE_RELATIONSHIP_GUARDIAN)))
    chain.ok(tx(keys["pat-1"], revoke_delegate=ledger_pb2.RevokeDelegate(patient_id="pat-1", delegate_id="pat-2")))
    reason = chain.rejects(relayed(net, sign_consent(keys["pat-2"], BODY, "pat-1", CHAIN)), "only the patient")
    assert reason.startswith(NOT_PERMITTED)
    assert chain.state.consent(cid("c-1")) is None


def test_another_patients_jws_is_not_permitted(net, chain, keys):
    # pat-2 signs a consent naming pat-1 (sub = pat-1), or its own consent relayed as pat-1's.
    reason = chain.rejects(relayed(net, sign_consent(keys["pat-2"], BODY, "pat-1", CHAIN)), "only the patient")
    assert reason.startswith(NOT_PERMITTED)
    reason = chain.rejects(relayed(net, sign_consent(keys["pat-2"], BODY, "pat-2", CHAIN)), "sub is not")
    assert reason.startswith(NOT_PERMITTED)


def test_a_jws_by_a_rotated_out_key_does_not_verify(net, chain, keys):
    old = keys["pat-1"]
    new = Ed25519Signer.generate("pat-1")
    chain.ok(tx(net.identity, rotate_principal_key=ledger_pb2.RotatePrincipalKey(
        principal_id="pat-1", public_key=new.public_key_bytes())))
    reason = chain.rejects(relayed(net, sign_consent(old, BODY, "pat-1", CHAIN)), "does not verify")
    assert reason.startswith(NOT_PERMITTED)
    chain.ok(relayed(net, sign_consent(new, BODY, "pat-1", CHAIN), consent="c-2"))


def test_a_key_the_signer_never_registered_does_not_verify(net, chain, keys):
    forger = Ed25519Signer.generate("pat-1")  # svc-consent's own key posing as the patient's
    chain.rejects(relayed(net, sign_consent(forger, BODY, "pat-1", CHAIN)), "does not verify")


def test_an_altered_body_hash_is_not_what_the_attestation_binds(net, chain, keys):
    # The patient signed BODY; svc-consent seals another Consent's policy and binds that body's hash.
    jws = sign_consent(keys["pat-1"], BODY, "pat-1", CHAIN)
    reason = chain.rejects(relayed(net, jws, bound=body_sha256(b'{"resourceType":"Consent","other":1}')),
                           "not attested")
    assert reason.startswith(NOT_PERMITTED)
    # An attestation without the binding (plain SealPolicy) does not do either.
    chain.rejects(relayed(net, jws, consent="c-2", bound=""), "not attested")


def test_svc_consent_cannot_grant_without_the_patients_jws(net, chain, keys):
    reason = chain.rejects(relayed(net, None), "only the patient grants")
    assert reason.startswith(NOT_PERMITTED)


def test_only_svc_consent_relays_a_jws_grant(net, chain, keys):
    jws = sign_consent(keys["pat-1"], BODY, "pat-1", CHAIN)
    grant = sealed_grant(cid("c-1"), "pat-1")
    grant.patient_jws = jws.encode()
    reason = chain.rejects(tx(keys["dr-1"], grant_consent=grant), "only svc-consent relays")
    assert reason.startswith(NOT_PERMITTED)


def test_a_backdated_or_postdated_iat_is_invalid(net, chain, keys):
    now = int(time.time())
    chain.rejects(relayed(net, sign_consent(keys["pat-1"], BODY, "pat-1", CHAIN, iat=now - 3600)), "iat is more")
    chain.rejects(relayed(net, sign_consent(keys["pat-1"], BODY, "pat-1", CHAIN, iat=now + 3600), consent="c-2"),
                  "iat is more")
    chain.ok(relayed(net, sign_consent(keys["pat-1"], BODY, "pat-1", CHAIN, iat=now - 60), consent="c-3"))


def test_a_jws_for_another_chain_is_invalid(net, chain, keys):
    chain.rejects(relayed(net, sign_consent(keys["pat-1"], BODY, "pat-1", "other-chain")), "another chain")


def test_a_malformed_or_deactivated_signers_jws_is_invalid(net, chain, keys):
    chain.rejects(relayed(net, "not.a-jws"), "patient_jws: malformed")
    chain.ok(tx(keys["org-1"], deactivate_principal=ledger_pb2.DeactivatePrincipal(principal_id="pat-2")))
    chain.ok(tx(keys["pat-1"], register_delegate=ledger_pb2.RegisterDelegate(
        patient_id="pat-1", delegate_id="dr-1", relationship=policy_pb2.DELEGATE_RELATIONSHIP_PROXY)))
    reason = chain.rejects(relayed(net, sign_consent(keys["pat-2"], BODY, "pat-1", CHAIN), consent="c-2"),
                           "not an active registered")
    assert reason.startswith(NOT_PERMITTED)


def test_a_rejected_grant_does_not_spend_the_jti(net, chain, keys):
    # An attack that fails (e.g. a mis-bound attestation) must not burn the patient's genuine signature.
    jws = sign_consent(keys["pat-1"], BODY, "pat-1", CHAIN, jti=os.urandom(16))
    chain.rejects(relayed(net, jws, bound=""), "not attested")
    chain.ok(relayed(net, jws, consent="c-2"))


# --- revocation signed as a JWS ------------------------------------------------------------------------

def revocation(consent: str = "c-1") -> bytes:
    return json.dumps({"resourceType": "Consent", "id": cid(consent), "status": "inactive"}).encode()


def relayed_revoke(net: Net, jws: str | None, body: bytes, patient_id: str = "pat-1",
                   consent: str = "c-1") -> ledger_pb2.Transaction:
    revoke = ledger_pb2.RevokeConsent(consent_id=cid(consent), patient_id=patient_id, revocation_json=body)
    if jws is not None:
        revoke.patient_jws = jws.encode()
    return tx(net.consent, revoke_consent=revoke)


@pytest.fixture
def granted(net, chain, keys) -> dict[str, Ed25519Signer]:
    chain.ok(relayed(net, sign_consent(keys["pat-1"], BODY, "pat-1", CHAIN)))
    return keys


def test_a_revocation_the_patient_signed_as_a_jws_is_valid_once(net, chain, granted):
    body = revocation()
    jws = sign_consent(granted["pat-1"], body, "pat-1", CHAIN)
    chain.ok(relayed_revoke(net, jws, body))
    assert chain.state.consent(cid("c-1")).status == CONSENT_REVOKED
    chain.ok(relayed(net, sign_consent(granted["pat-1"], BODY, "pat-1", CHAIN), consent="c-2"))
    chain.rejects(relayed_revoke(net, jws, revocation("c-2"), consent="c-2"), "jti was used before")


def test_a_revocation_jws_binds_the_consent_it_names(net, chain, granted):
    chain.ok(relayed(net, sign_consent(granted["pat-1"], BODY, "pat-1", CHAIN), consent="c-2"))
    body = revocation("c-1")
    jws = sign_consent(granted["pat-1"], body, "pat-1", CHAIN)
    # svc-consent turns the patient's revocation of c-1 into one of c-2: the named consent differs.
    reason = chain.rejects(relayed_revoke(net, jws, body, consent="c-2"), "names another consent")
    assert reason.startswith(NOT_PERMITTED)
    # ... or swaps the signed bytes: they are no longer what the JWS covers.
    reason = chain.rejects(relayed_revoke(net, jws, revocation("c-2"), consent="c-2"), "not what the patient")
    assert reason.startswith(NOT_PERMITTED)
    # A revocation carrying anything else (PHI could hide there) is invalid even when signed.
    fat = json.dumps({"resourceType": "Consent", "id": cid("c-2"), "status": "inactive", "note": "x"}).encode()
    chain.rejects(relayed_revoke(net, sign_consent(granted["pat-1"], fat, "pat-1", CHAIN), fat, consent="c-2"),
                  "exactly resourceType, id and status")
    assert chain.state.consent(cid("c-2")).status != CONSENT_REVOKED


def test_a_revocation_by_another_patient_or_without_a_jws_is_not_permitted(net, chain, granted):
    body = revocation()
    reason = chain.rejects(relayed_revoke(net, sign_consent(granted["pat-2"], body, "pat-1", CHAIN), body),
                           "only the patient revokes")
    assert reason.startswith(NOT_PERMITTED)
    assert chain.rejects(relayed_revoke(net, None, b""), "only the patient revokes").startswith(NOT_PERMITTED)
    chain.rejects(relayed_revoke(net, None, body), "only with patient_jws")
    assert chain.state.consent(cid("c-1")).status != CONSENT_REVOKED
