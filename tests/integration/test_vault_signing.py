"""Ed25519 signing keys in OpenBao Transit: signatures verify, private keys never leave."""

from __future__ import annotations

import pathlib

import hvac
import hvac.exceptions
import pytest
from pydantic import SecretStr

from carechain.core.crypto import Ed25519Signer, verify_signature
from carechain.core.errors import FailedPrecondition, NotFound
from carechain.core.layout import TrustBundle
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token, verify_token
from carechain.dev.backends.openbao import OpenBaoDevServer
from carechain.ledger import transactions
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.config import ServiceSettings
from carechain.runtime.vault import (
    VaultTransitSigner,
    ensure_signing_key,
    export_public_key,
    service_signer,
    transit_public_key,
)

pytest_plugins = ["servers_openbao"]


def test_signature_verifies_against_the_exported_public_key(
    vault_root: hvac.Client, transit_mount: str, tmp_path: pathlib.Path
) -> None:
    ensure_signing_key(vault_root, "svc-ledger", transit_mount)
    export_public_key(vault_root, "svc-ledger", tmp_path / "trust", mount=transit_mount)
    signer = VaultTransitSigner(vault_root, "svc-ledger", mount=transit_mount)

    signature = signer.sign(b"block header")

    trusted = TrustBundle.load(tmp_path / "trust").key("svc-ledger")
    assert trusted == signer.public_key_bytes()
    assert verify_signature(trusted, signature, b"block header")
    assert not verify_signature(trusted, signature, b"another header")


def test_vault_signer_signs_tokens_and_transactions(vault_root: hvac.Client, transit_mount: str) -> None:
    ensure_signing_key(vault_root, "svc-identity", transit_mount)
    signer = VaultTransitSigner(vault_root, "svc-identity", mount=transit_mount)

    token, _ = issue_token(signer, ACCESS_TOKEN_TYPE, {"sub": "operator", "aud": "carechain.ledger"}, 60)
    claims = verify_token(token, {"svc-identity": signer.public_key_bytes()}, ACCESS_TOKEN_TYPE, "carechain.ledger")
    tx = transactions.sign_transaction(transactions.new_body(
        "chain", "svc-identity", key_rotation=ledger_pb2.KeyRotation(patient_id="psn-1", key_version=2)), signer)

    assert claims["sub"] == "operator"
    assert transactions.signature_valid(tx, signer.public_key_bytes())


def test_private_key_cannot_be_exported(vault_root: hvac.Client, transit_mount: str) -> None:
    ensure_signing_key(vault_root, "svc-consent", transit_mount)
    info = vault_root.secrets.transit.read_key("svc-consent", mount_point=transit_mount)["data"]

    assert info["exportable"] is False and info["type"] == "ed25519"
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not exportable"):
        vault_root.secrets.transit.export_key("svc-consent", key_type="signing-key", mount_point=transit_mount)


def test_ensure_signing_key_keeps_an_existing_key(vault_root: hvac.Client, transit_mount: str) -> None:
    first = ensure_signing_key(vault_root, "svc-audit", transit_mount)
    assert ensure_signing_key(vault_root, "svc-audit", transit_mount) == first


def test_signer_keeps_its_key_version_after_a_rotation(vault_root: hvac.Client, transit_mount: str) -> None:
    ensure_signing_key(vault_root, "svc-storage", transit_mount)
    signer = VaultTransitSigner(vault_root, "svc-storage", mount=transit_mount)
    vault_root.secrets.transit.rotate_key("svc-storage", mount_point=transit_mount)

    assert transit_public_key(vault_root, "svc-storage", transit_mount)[0] == 2
    assert verify_signature(signer.public_key_bytes(), signer.sign(b"m"), b"m")


def test_missing_or_wrong_type_key_is_refused(vault_root: hvac.Client, transit_mount: str) -> None:
    with pytest.raises(NotFound):
        VaultTransitSigner(vault_root, "svc-nobody", mount=transit_mount)
    vault_root.secrets.transit.create_key("patient-x", mount_point=transit_mount)
    with pytest.raises(FailedPrecondition, match="ed25519"):
        VaultTransitSigner(vault_root, "patient-x", mount=transit_mount)


def test_service_signer_follows_signing_backend(openbao: OpenBaoDevServer, transit_mount: str,
                                                tmp_path: pathlib.Path) -> None:
    vault_settings = ServiceSettings(vault_address=openbao.address, vault_token=SecretStr(openbao.root_token),
                                     signing_backend="vault", vault_transit_mount=transit_mount,
                                     signing_key_name="records-signing")
    ensure_signing_key(hvac.Client(url=openbao.address, token=openbao.root_token), "records-signing", transit_mount)
    key_file = tmp_path / "records.pem"
    Ed25519Signer.generate("x").save(key_file)

    in_vault = service_signer(vault_settings, "records")
    from_file = service_signer(ServiceSettings(signing_key_file=key_file), "records")

    assert isinstance(in_vault, VaultTransitSigner) and in_vault.key_name == "records-signing"
    assert in_vault.key_id == from_file.key_id == "svc-records"
    assert verify_signature(in_vault.public_key_bytes(), in_vault.sign(b"m"), b"m")
