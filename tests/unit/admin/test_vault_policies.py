"""The OpenBao/Vault policy files and how the bootstrap adapts them (no server needed)."""

from __future__ import annotations

import re

import pytest

from carechain.admin.vault_bootstrap import DEFAULT_POLICY_DIR, OPERATOR_POLICY, Mounts, load_policy, render_policy
from carechain.core.layout import SERVICES

_PATHS = re.compile(r'path\s+"([^"]+)"')


def _paths(text: str) -> list[str]:
    return _PATHS.findall(text)


@pytest.mark.parametrize("name", [*SERVICES, OPERATOR_POLICY])
def test_every_service_and_the_operator_has_a_policy_file(name: str) -> None:
    assert _paths(load_policy(DEFAULT_POLICY_DIR, name, Mounts())), f"{name}.hcl grants nothing"


METADATA_KEY_PATHS = ["transit/datakey/plaintext/ledger-metadata", "transit/decrypt/ledger-metadata"]


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "identity"])
def test_other_services_may_only_sign_with_their_own_key(service: str) -> None:
    paths = _paths(load_policy(DEFAULT_POLICY_DIR, service, Mounts()))
    metadata = METADATA_KEY_PATHS if service in ("records", "consent") else []
    assert sorted(paths) == sorted([f"transit/keys/svc-{service}", f"transit/sign/svc-{service}", *metadata])


def test_only_records_and_consent_may_use_the_ledger_metadata_key() -> None:
    """Ledger privacy: validators (and identity, audit, storage) cannot open sealed ledger metadata."""
    for name in [*SERVICES, OPERATOR_POLICY]:
        paths = _paths(load_policy(DEFAULT_POLICY_DIR, name, Mounts()))
        uses = [p for p in paths if "ledger-metadata" in p and not p.startswith("transit/keys/")]
        assert uses == (METADATA_KEY_PATHS if name in ("records", "consent") else []), name
        # No wildcard that would reach it either.
        assert not any(p.endswith(("/*", "/+")) and p.startswith(("transit/datakey", "transit/decrypt"))
                       and "patient-" not in p for p in paths), name


def test_identity_policy_has_no_wildcards_beyond_patient_keys_and_its_kv_folder() -> None:
    paths = _paths(load_policy(DEFAULT_POLICY_DIR, "identity", Mounts()))
    wildcards = {p for p in paths if "*" in p}
    assert wildcards == {
        "transit/keys/patient-*", "transit/datakey/plaintext/patient-*", "transit/encrypt/patient-*",
        "transit/decrypt/patient-*",
        "transit/rewrap/patient-*", "carechain/data/identity/*", "carechain/metadata/identity/*",
    }
    assert not any(p.startswith(("transit/export", "transit/backup", "sys/")) for p in paths)


def test_no_policy_lets_anyone_export_or_back_up_keys() -> None:
    for name in [*SERVICES, OPERATOR_POLICY]:
        for path in _paths(load_policy(DEFAULT_POLICY_DIR, name, Mounts())):
            assert not path.startswith(("transit/export", "transit/backup", "transit/restore")), (name, path)


def test_policies_follow_configured_mount_names() -> None:
    mounts = Mounts(transit="keys/transit", kv="cc-kv", approle="ar", kubernetes="k8s")
    identity = _paths(render_policy((DEFAULT_POLICY_DIR / "identity.hcl").read_text(), mounts))
    operator = _paths(render_policy((DEFAULT_POLICY_DIR / "operator.hcl").read_text(), mounts))

    assert "keys/transit/datakey/plaintext/patient-*" in identity
    assert "cc-kv/data/identity/*" in identity
    assert not any(p.startswith(("transit/", "carechain/")) for p in identity)
    assert {"sys/mounts/keys/transit", "sys/mounts/cc-kv", "sys/auth/ar", "sys/auth/k8s",
            "auth/ar/role/carechain-*", "auth/k8s/config"} <= set(operator)


def test_default_mounts_leave_policies_unchanged() -> None:
    text = (DEFAULT_POLICY_DIR / "identity.hcl").read_text()
    assert render_policy(text, Mounts()) == text
