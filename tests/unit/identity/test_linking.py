"""One key-encryption key per person: a link moves the linked patient's data keys under the network identity's."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from identity_fixtures import FakeLedger, Kind, decision_token

from carechain.core.crypto import Ed25519Signer
from carechain.core.errors import InvalidArgument, NotFound, PermissionDenied
from carechain.core.layout import DECISION_ISSUER_ID, TOKEN_ISSUER_ID, TrustBundle
from carechain.identity.data_keys import DataKeys, patient_key_name
from carechain.identity.linking import PatientLinks, signed_by_caller
from carechain.identity.principals import Principals
from carechain.identity.registry import PrincipalRecord
from carechain.identity.sqlite_registry import Registry
from carechain.ledger import transactions
from carechain.ledger.submission import ServiceSubmitter
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Caller
from carechain.runtime.keyring import LocalKeyring

NETWORK, LINKED = "psn-network", "psn-linked"


@dataclass
class Consent:
    """What identity_fixtures.decision_token needs: svc-consent's signer."""

    consent: Ed25519Signer


CONSENT = Consent(Ed25519Signer.generate(DECISION_ISSUER_ID))


@dataclass
class Keys:
    data_keys: DataKeys
    registry: Registry
    links: dict[str, str]
    principals: Principals


@pytest.fixture
def keys(tmp_path: pathlib.Path) -> Iterator[Keys]:
    identity = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    registry = Registry(tmp_path / "identity")
    keyring = LocalKeyring(tmp_path / "identity" / "keyring")
    submitter = ServiceSubmitter("test-chain", identity, lambda: FakeLedger(identity.public_key_bytes()))
    trust = TrustBundle({TOKEN_ISSUER_ID: identity.public_key_bytes(),
                         DECISION_ISSUER_ID: CONSENT.consent.public_key_bytes()})
    principals = Principals(registry, trust, submitter)
    links: dict[str, str] = {}
    data_keys = DataKeys(principals, keyring, trust, submitter, network_patient=lambda p: links.get(p, p),
                         linked_patients=lambda n: [p for p, m in links.items() if m == n])
    for patient_id, org in ((NETWORK, "org-a"), (LINKED, "org-b")):
        registry.add_principal(PrincipalRecord(patient_id, Kind.PRINCIPAL_KIND_PATIENT, "Pat", bytes(32), org,
                                               fhir_patient_id="p-1"))
        data_keys.create_patient_key(patient_id)
    try:
        yield Keys(data_keys, registry, links, principals)
    finally:
        registry.close()
        keyring.close()


def released(keys: Keys, record_id: str, patient_id: str) -> bytes:
    return keys.data_keys.release(record_id, decision_token(CONSENT, record_id, patient_id))


def test_a_link_moves_the_linked_patients_keys_and_new_keys_use_the_network_key(keys: Keys) -> None:
    before, _, _ = keys.data_keys.generate(LINKED, "rec-b-1")
    keys.links[LINKED] = NETWORK
    assert keys.data_keys.move_patient_keys(LINKED, NETWORK) == 1
    stored = keys.registry.data_key("rec-b-1")
    assert stored.key_name == patient_key_name(NETWORK) and stored.patient_id == LINKED
    assert released(keys, "rec-b-1", LINKED) == before
    _, key_name, _ = keys.data_keys.generate(LINKED, "rec-b-2")
    assert key_name == patient_key_name(NETWORK)
    assert keys.data_keys.move_patient_keys(LINKED, NETWORK) == 0  # nothing left to move


def test_rotating_the_network_key_rewraps_the_linked_patients_keys_too(keys: Keys) -> None:
    own, _, _ = keys.data_keys.generate(NETWORK, "rec-a-1")
    linked, _, _ = keys.data_keys.generate(LINKED, "rec-b-1")
    keys.links[LINKED] = NETWORK
    keys.data_keys.move_patient_keys(LINKED, NETWORK)
    version, rewrapped = keys.data_keys.rotate_patient_key(LINKED)  # the linked patient's key is the network key
    assert (version, rewrapped) == (2, 2)
    assert released(keys, "rec-a-1", NETWORK) == own
    assert released(keys, "rec-b-1", LINKED) == linked


def test_a_rotation_moves_keys_a_failed_link_time_move_left_behind(keys: Keys) -> None:
    plaintext, _, _ = keys.data_keys.generate(LINKED, "rec-b-1")
    keys.links[LINKED] = NETWORK  # linked on the ledger, but the keys were not moved (key manager was down)
    assert keys.data_keys.rotate_patient_key(NETWORK)[1] == 1
    assert keys.registry.data_key("rec-b-1").key_name == patient_key_name(NETWORK)
    assert released(keys, "rec-b-1", LINKED) == plaintext


def test_an_unlink_moves_the_keys_back_under_the_patients_own_key(keys: Keys) -> None:
    plaintext, _, _ = keys.data_keys.generate(LINKED, "rec-b-1")
    keys.links[LINKED] = NETWORK
    keys.data_keys.move_patient_keys(LINKED, NETWORK)
    del keys.links[LINKED]
    assert keys.data_keys.move_patient_keys(LINKED, LINKED) == 1
    assert keys.registry.data_key("rec-b-1").key_name == patient_key_name(LINKED)
    assert released(keys, "rec-b-1", LINKED) == plaintext


def test_an_organization_resolves_only_its_own_ids(keys: Keys) -> None:
    links = PatientLinks(keys.principals, keys.data_keys, keys.data_keys._submitter, None,
                         lambda p: keys.links.get(p, p), lambda n: [p for p, m in keys.links.items() if m == n])
    org_b = Caller("org-b", Kind.PRINCIPAL_KIND_ORGANIZATION, "org-b")
    local = keys.registry.patient_pseudonym("org-b", "mrn-7")
    keys.registry.add_principal(PrincipalRecord(local, Kind.PRINCIPAL_KIND_PATIENT, "Pat", bytes(32), "org-b",
                                                fhir_patient_id="mrn-7"))
    keys.links[local] = NETWORK
    resolved = links.resolve(org_b, "mrn-7")
    # The network id, and org-b's own pseudonyms only (NETWORK is org-a's; LINKED is not linked).
    assert resolved.network_patient_id == NETWORK and list(resolved.organization_patient_ids) == [local]
    practitioner = Caller("prac-b", Kind.PRINCIPAL_KIND_PRACTITIONER, "org-b")
    assert links.resolve(practitioner, "mrn-7").network_patient_id == NETWORK
    org_c = Caller("org-c", Kind.PRINCIPAL_KIND_ORGANIZATION, "org-c")
    for caller, fhir_id in ((org_c, "mrn-7"), (org_b, "mrn-unknown")):
        with pytest.raises(NotFound) as refused:
            links.resolve(caller, fhir_id)
        assert "mrn" not in refused.value.message  # never echoes the identifier
    with pytest.raises(InvalidArgument) as bad:
        links.resolve(org_b, "not an id!")
    assert bad.value.field == "fhir_patient_id"


def test_a_link_request_must_be_signed_by_the_caller() -> None:
    patient = Ed25519Signer.generate(NETWORK)
    link = ledger_pb2.LinkPatientIdentity(network_patient_id=NETWORK, linked_patient_id=LINKED)
    tx = transactions.sign_transaction(transactions.new_body("test-chain", NETWORK, link_patient_identity=link),
                                       patient)
    assert signed_by_caller(Caller(NETWORK, Kind.PRINCIPAL_KIND_PATIENT), tx, "link_patient_identity") == link
    with pytest.raises(PermissionDenied):
        signed_by_caller(Caller(LINKED, Kind.PRINCIPAL_KIND_PATIENT), tx, "link_patient_identity")
    with pytest.raises(InvalidArgument):
        signed_by_caller(Caller(NETWORK, Kind.PRINCIPAL_KIND_PATIENT), tx, "unlink_patient_identity")
    with pytest.raises(InvalidArgument):
        signed_by_caller(Caller(NETWORK, Kind.PRINCIPAL_KIND_PATIENT), None, "link_patient_identity")
