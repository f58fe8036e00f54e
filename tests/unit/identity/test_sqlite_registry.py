"""The identity registry: pseudonyms, challenges, wrapped keys, single-use decision tokens."""

from __future__ import annotations

import pathlib
import re

import pytest

from carechain.common.v1 import common_pb2
from carechain.core.errors import AlreadyExists
from carechain.identity.registry import PrincipalRecord, StoredDataKey, patient_pseudonym
from carechain.identity.sqlite_registry import Registry


@pytest.fixture
def registry(tmp_path: pathlib.Path) -> Registry:
    return Registry(tmp_path / "identity")


def test_pseudonym_is_a_keyed_hash_of_organisation_and_fhir_id() -> None:
    secret = bytes(range(32))
    psn = patient_pseudonym(secret, "org-a", "pat-1")
    assert re.fullmatch(r"psn-[0-9a-f]{32}", psn)
    assert psn == patient_pseudonym(secret, "org-a", "pat-1")
    assert psn != patient_pseudonym(secret, "org-b", "pat-1")
    assert psn != patient_pseudonym(bytes(32), "org-a", "pat-1")


def test_pseudonym_secret_is_private_and_stable(tmp_path: pathlib.Path) -> None:
    first = Registry(tmp_path / "identity").patient_pseudonym("org-a", "pat-1")
    mode = (tmp_path / "identity" / "pseudonym.key").stat().st_mode & 0o777
    assert mode == 0o600
    assert Registry(tmp_path / "identity").patient_pseudonym("org-a", "pat-1") == first


def test_principals_persist_and_ids_are_unique(tmp_path: pathlib.Path) -> None:
    principal = PrincipalRecord("prac-1", common_pb2.PRINCIPAL_KIND_PRACTITIONER, "Dr. X", bytes(32), "org-1",
                                "oncology", "", 7)
    registry = Registry(tmp_path)
    registry.add_principal(principal)
    with pytest.raises(AlreadyExists):
        registry.add_principal(principal)
    registry.close()
    assert Registry(tmp_path).principal("prac-1") == principal


def test_challenge_is_taken_once_by_its_principal_before_expiry(registry: Registry) -> None:
    registry.add_challenge("p", b"c1", expires_at_ms=2000, now_ms=1000)
    registry.add_challenge("p", b"c2", expires_at_ms=2000, now_ms=1000)
    registry.add_challenge("p", b"c3", expires_at_ms=2000, now_ms=1000)

    assert registry.take_challenge("p", b"c1", now_ms=1500)
    assert not registry.take_challenge("p", b"c1", now_ms=1500)
    assert not registry.take_challenge("q", b"c2", now_ms=1500)
    assert not registry.take_challenge("p", b"c2", now_ms=1500), "a failed attempt still consumes the challenge"
    assert not registry.take_challenge("p", b"c3", now_ms=2001)


def test_decision_token_id_is_accepted_once_until_it_expires(registry: Registry) -> None:
    assert registry.use_decision_token("jti-1", expires_at_ms=2000, now_ms=1000)
    assert not registry.use_decision_token("jti-1", expires_at_ms=2000, now_ms=1500)
    # After expiry the row may go; the token itself is then refused as expired.
    assert registry.use_decision_token("jti-1", expires_at_ms=4000, now_ms=3000)


def test_one_wrapped_key_per_record(registry: Registry) -> None:
    key = StoredDataKey("rec-1", "psn-1", "patient-psn-1", 1, "vault:v1:AAAA")
    registry.add_data_key(key)
    with pytest.raises(AlreadyExists):
        registry.add_data_key(StoredDataKey("rec-1", "psn-2", "patient-psn-2", 1, "vault:v1:BBBB"))
    assert registry.data_key("rec-1") == key
    assert registry.patient_data_keys("psn-1") == [key]
    assert registry.patient_data_keys("psn-2") == []
