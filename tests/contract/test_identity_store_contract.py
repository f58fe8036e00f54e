"""Contract suite for the identity registry seam (IdentityStore).

The same tests run against the embedded SQLite Registry and VaultRegistry on a
real OpenBao dev server (KV v2 for state, Transit HMAC for pseudonyms; a fresh
KV and Transit mount per test).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable, Iterator

import hvac
import pytest

from carechain.common.v1 import common_pb2
from carechain.core.errors import AlreadyExists, FailedPrecondition
from carechain.identity.registry import IdentityStore, PrincipalRecord, StoredDataKey
from carechain.identity.sqlite_registry import Registry
from carechain.identity.vault_registry import PSEUDONYM_KEY, VaultRegistry

pytest_plugins = ["servers_openbao"]

# Makes a store; calling it again gives the same store reopened (a restart).
Opener = Callable[[], IdentityStore]


def _sqlite(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Opener:
    return lambda: Registry(tmp_path / "identity")


def _vault(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Opener:
    client: hvac.Client = request.getfixturevalue("vault_root")
    transit = request.getfixturevalue("transit_mount")
    kv = request.getfixturevalue("kv_mount")
    client.secrets.transit.create_key(PSEUDONYM_KEY, exportable=False, mount_point=transit)
    return lambda: VaultRegistry(client, kv_mount=kv, transit_mount=transit)


IMPLEMENTATIONS: dict[str, Callable[[pytest.FixtureRequest, pathlib.Path], Opener]] = {
    "sqlite": _sqlite,
    "vault": _vault,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def opener(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Opener:
    return IMPLEMENTATIONS[request.param](request, tmp_path)


@pytest.fixture
def store(opener: Opener) -> Iterator[IdentityStore]:
    opened = opener()
    yield opened
    opened.close()


PRACTITIONER = PrincipalRecord("prac-1", common_pb2.PRINCIPAL_KIND_PRACTITIONER, "Dr. X", bytes(range(32)), "org-1",
                               "oncology", "", 7)


def test_pseudonyms_are_stable_distinct_and_opaque(opener: Opener) -> None:
    first = opener()
    psn = first.patient_pseudonym("org-a", "pat-1")
    first.close()
    again = opener()
    try:
        assert re.fullmatch(r"psn-[0-9a-f]{32}", psn)
        assert again.patient_pseudonym("org-a", "pat-1") == psn, "a pseudonym must survive a restart"
        assert again.patient_pseudonym("org-b", "pat-1") != psn
        assert again.patient_pseudonym("org-a", "pat-2") != psn
        assert "pat-1" not in psn
    finally:
        again.close()


def test_principal_is_stored_once_and_survives_reopen(opener: Opener) -> None:
    first = opener()
    first.add_principal(PRACTITIONER)
    with pytest.raises(AlreadyExists):
        first.add_principal(PRACTITIONER)
    first.close()
    again = opener()
    try:
        assert again.principal("prac-1") == PRACTITIONER
        assert again.principal("prac-unknown") is None
    finally:
        again.close()


def test_patient_principal_keeps_its_fhir_id(store: IdentityStore) -> None:
    patient = PrincipalRecord("psn-1", common_pb2.PRINCIPAL_KIND_PATIENT, "Jane Doe", bytes(32), "org-1", "",
                              "fhir-42", 3)
    store.add_principal(patient)
    assert store.principal("psn-1") == patient


def test_challenge_is_taken_once_by_its_principal_before_expiry(store: IdentityStore) -> None:
    store.add_challenge("p", b"c1", expires_at_ms=2000, now_ms=1000)
    store.add_challenge("p", b"c2", expires_at_ms=2000, now_ms=1000)
    store.add_challenge("p", b"c3", expires_at_ms=2000, now_ms=1000)

    assert store.take_challenge("p", b"c1", now_ms=1500)
    assert not store.take_challenge("p", b"c1", now_ms=1500)
    assert not store.take_challenge("q", b"c2", now_ms=1500)
    assert not store.take_challenge("p", b"c2", now_ms=1500), "a failed attempt still consumes the challenge"
    assert not store.take_challenge("p", b"c3", now_ms=2001)
    assert not store.take_challenge("p", b"never-issued", now_ms=1500)


def test_expired_challenges_are_forgotten_later(store: IdentityStore) -> None:
    store.add_challenge("p", b"old", expires_at_ms=2000, now_ms=1000)
    store.add_challenge("p", b"new", expires_at_ms=200_000, now_ms=100_000)
    assert not store.take_challenge("p", b"old", now_ms=100_001)
    assert store.take_challenge("p", b"new", now_ms=100_001)


def test_decision_token_id_is_accepted_once_until_it_expires(store: IdentityStore) -> None:
    assert store.use_decision_token("jti-1", expires_at_ms=2000, now_ms=1000)
    assert not store.use_decision_token("jti-1", expires_at_ms=2000, now_ms=1500)
    assert store.use_decision_token("jti-2", expires_at_ms=2000, now_ms=1500)
    # After expiry the id may go; the token itself is then refused as expired.
    assert store.use_decision_token("jti-1", expires_at_ms=4000, now_ms=3000)
    assert not store.use_decision_token("jti-1", expires_at_ms=4000, now_ms=3500)


def test_decision_token_ids_with_odd_characters_are_fine(store: IdentityStore) -> None:
    jti = "a/b?c#d e%2F..//x"
    assert store.use_decision_token(jti, expires_at_ms=2000, now_ms=1000)
    assert not store.use_decision_token(jti, expires_at_ms=2000, now_ms=1000)


def test_one_wrapped_key_per_record(store: IdentityStore) -> None:
    key = StoredDataKey("rec-1", "psn-1", "patient-psn-1", 1, "vault:v1:AAAA")
    store.add_data_key(key)
    with pytest.raises(AlreadyExists):
        store.add_data_key(StoredDataKey("rec-1", "psn-2", "patient-psn-2", 1, "vault:v1:BBBB"))
    assert store.data_key("rec-1") == key
    assert store.data_key("rec-unknown") is None
    assert store.patient_data_keys("psn-1") == [key]
    assert store.patient_data_keys("psn-2") == [], "a refused key must not show up under the other patient"


def test_record_ids_with_colons_work(store: IdentityStore) -> None:
    key = StoredDataKey("urn:rec:1", "psn-1", "patient-psn-1", 1, "vault:v1:AAAA")
    store.add_data_key(key)
    assert store.data_key("urn:rec:1") == key
    assert store.patient_data_keys("psn-1") == [key]


def test_patient_data_keys_are_ordered_by_record(store: IdentityStore) -> None:
    keys = [StoredDataKey(f"rec-{i}", "psn-1", "patient-psn-1", 1, f"vault:v1:{i}AAA") for i in (3, 1, 2)]
    for key in keys:
        store.add_data_key(key)
    store.add_data_key(StoredDataKey("rec-9", "psn-2", "patient-psn-2", 1, "vault:v1:ZZZZ"))
    assert [k.record_id for k in store.patient_data_keys("psn-1")] == ["rec-1", "rec-2", "rec-3"]


def test_rewrapped_keys_replace_the_stored_ones(store: IdentityStore) -> None:
    store.add_data_key(StoredDataKey("rec-1", "psn-1", "patient-psn-1", 1, "vault:v1:AAAA"))
    store.add_data_key(StoredDataKey("rec-2", "psn-1", "patient-psn-1", 1, "vault:v1:BBBB"))
    rewrapped = [StoredDataKey("rec-1", "psn-1", "patient-psn-1", 2, "vault:v2:CCCC"),
                 StoredDataKey("rec-2", "psn-1", "patient-psn-1", 2, "vault:v2:DDDD")]

    store.replace_wrapped_keys(rewrapped)

    assert store.patient_data_keys("psn-1") == rewrapped


def test_a_rewrap_may_move_a_patients_key_under_another_key_encryption_key(store: IdentityStore) -> None:
    # A patient identity link: the linked patient's data keys are wrapped under the network identity's key.
    store.add_data_key(StoredDataKey("rec-1", "psn-2", "patient-psn-2", 1, "vault:v1:AAAA"))
    moved = StoredDataKey("rec-1", "psn-2", "patient-psn-1", 3, "vault:v3:BBBB")
    store.replace_wrapped_keys([moved])
    assert store.data_key("rec-1") == moved
    assert store.patient_data_keys("psn-2") == [moved]


def test_rewrap_of_an_unknown_record_stores_nothing(store: IdentityStore) -> None:
    original = StoredDataKey("rec-1", "psn-1", "patient-psn-1", 1, "vault:v1:AAAA")
    store.add_data_key(original)
    with pytest.raises(FailedPrecondition):
        store.replace_wrapped_keys([
            StoredDataKey("rec-1", "psn-1", "patient-psn-1", 2, "vault:v2:CCCC"),
            StoredDataKey("rec-404", "psn-1", "patient-psn-1", 2, "vault:v2:DDDD"),
        ])
    assert store.data_key("rec-1") == original


def test_rewrap_cannot_move_a_key_to_another_patient(store: IdentityStore) -> None:
    original = StoredDataKey("rec-1", "psn-1", "patient-psn-1", 1, "vault:v1:AAAA")
    store.add_data_key(original)
    with pytest.raises(FailedPrecondition):
        store.replace_wrapped_keys([StoredDataKey("rec-1", "psn-2", "patient-psn-2", 2, "vault:v2:CCCC")])
    assert store.data_key("rec-1") == original


# --- batches: several wrapped keys and decision tokens at once --------------------------


def test_a_batch_of_wrapped_keys_stores_each_record_once(store: IdentityStore) -> None:
    taken = StoredDataKey("rec-0", "psn-a", "patient-psn-a", 1, "vault:v1:AAAA")
    store.add_data_key(taken)
    batch = [StoredDataKey(f"rec-{i}", "psn-a" if i % 2 else "psn-b", "k", 1, f"vault:v1:{'B' * 4 * (i + 1)}")
             for i in range(4)]

    assert store.add_data_keys([*batch, batch[1]]) == [False, True, True, True, False]
    assert store.data_key("rec-0") == taken  # not overwritten
    assert store.data_keys(["rec-1", "rec-3", "rec-missing", "rec-1"]) == {"rec-1": batch[1], "rec-3": batch[3]}
    assert [k.record_id for k in store.patient_data_keys("psn-b")] == ["rec-2"]
    assert store.add_data_keys([]) == [] and store.data_keys([]) == {}


def test_a_batch_of_decision_tokens_accepts_each_id_once(store: IdentityStore) -> None:
    now = 1_000_000
    assert store.use_decision_token("jti-used", now + 60_000, now)

    assert store.use_decision_tokens([("jti-1", now + 60_000), ("jti-used", now + 60_000), ("jti-2", now + 60_000),
                                      ("jti-1", now + 60_000)], now) == [True, False, True, False]
    assert not store.use_decision_token("jti-2", now + 60_000, now + 1)
    assert store.use_decision_tokens([], now) == []


JWKS = '{"keys":[{"alg":"ES384","crv":"P-384","kid":"k1","kty":"EC","x":"AAAA","y":"BBBB"}]}'
REPLACEMENT = '{"keys":[{"alg":"RS384","e":"AQAB","kid":"k2","kty":"RSA","n":"CCCC"}]}'


def test_client_keys_are_stored_replaced_and_survive_reopen(opener: Opener) -> None:
    first = opener()
    try:
        assert first.client_keys("org-1") is None
        first.set_client_keys("org-1", JWKS)
        assert first.client_keys("org-1") == JWKS
        first.set_client_keys("org-1", REPLACEMENT)
        assert first.client_keys("org-1") == REPLACEMENT, "registering again replaces the keys"
        first.set_client_keys("prac-1", JWKS)
    finally:
        first.close()
    again = opener()
    try:
        assert again.client_keys("org-1") == REPLACEMENT, "client keys must survive a restart"
        assert again.client_keys("prac-1") == JWKS
        assert again.client_keys("org-2") is None
    finally:
        again.close()
