"""LocalKeyring storage details that the KeyManager contract does not cover."""

from __future__ import annotations

import pathlib

import pytest

from carechain.core.errors import FailedPrecondition, IntegrityError
from carechain.runtime.keyring import LocalKeyring

CONTEXT = b"psn-1|rec-1"


def test_key_material_rows_cannot_be_swapped_between_keys(tmp_path: pathlib.Path) -> None:
    keyring = LocalKeyring(tmp_path)
    keyring.create_key("patient-a")
    keyring.create_key("patient-b")
    _, wrapped = keyring.generate_data_key("patient-a", CONTEXT)
    # Someone with write access to the database copies b's sealed material over a's.
    with keyring._db.transaction() as conn:
        conn.execute(
            "UPDATE key_versions SET sealed_material = "
            "(SELECT sealed_material FROM key_versions WHERE name = 'patient-b') WHERE name = 'patient-a'"
        )
    with pytest.raises(IntegrityError):
        keyring.decrypt_data_key("patient-a", wrapped, CONTEXT)


def test_wrapped_key_naming_a_future_version_is_refused(tmp_path: pathlib.Path) -> None:
    keyring = LocalKeyring(tmp_path)
    keyring.create_key("patient-a")
    _, wrapped = keyring.generate_data_key("patient-a", CONTEXT)
    with pytest.raises(IntegrityError, match="version 9"):
        keyring.decrypt_data_key("patient-a", wrapped.replace("vault:v1:", "vault:v9:"), CONTEXT)


def test_truncated_master_key_stops_the_keyring(tmp_path: pathlib.Path) -> None:
    (tmp_path / "master.key").write_bytes(b"short")
    with pytest.raises(FailedPrecondition, match="master key"):
        LocalKeyring(tmp_path)
