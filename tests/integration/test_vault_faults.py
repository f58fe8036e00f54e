"""Vault down, tokens expiring or revoked: fail fast with UNAVAILABLE, or carry on logged in."""

from __future__ import annotations

import pathlib
import time

import grpc
import pytest
from pydantic import SecretStr
from servers_openbao import Bootstrapped, root_client

from carechain.core.crypto import verify_signature
from carechain.core.errors import PermissionDenied, Unavailable
from carechain.dev.backends.openbao import OpenBaoDevServer, free_port
from carechain.runtime.config import ServiceSettings
from carechain.runtime.vault import VaultTransitSigner, ensure_signing_key, vault_client
from carechain.runtime.vault_keyring import VaultTransitKeyManager

pytest_plugins = ["servers_openbao"]


def test_vault_not_listening_is_unavailable_naming_vault() -> None:
    settings = ServiceSettings(vault_address=f"http://127.0.0.1:{free_port()}", vault_token=SecretStr("t"))
    with pytest.raises(Unavailable) as down:
        vault_client(settings)
    assert down.value.backend == "vault"
    assert down.value.code == grpc.StatusCode.UNAVAILABLE
    assert "vault unavailable" in down.value.message


def test_vault_stopping_under_a_running_service_is_unavailable(tmp_path: pathlib.Path) -> None:
    server = OpenBaoDevServer(tmp_path / "bao").start()
    try:
        client = vault_client(ServiceSettings(vault_address=server.address,
                                              vault_token=SecretStr(server.root_token)))
        root_client(server).sys.enable_secrets_engine("transit", path="transit")
        ensure_signing_key(client, "svc-ledger")
        keys = VaultTransitKeyManager(client)
        keys.create_key("patient-1")
        signer = VaultTransitSigner(client, "svc-ledger")

        server.stop()

        with pytest.raises(Unavailable, match="vault") as signing:
            signer.sign(b"block")
        with pytest.raises(Unavailable, match="vault") as unwrapping:
            keys.generate_data_key("patient-1", b"c")
        assert signing.value.backend == unwrapping.value.backend == "vault"

        # Back up (dev mode starts empty): the same client works again without a new process.
        server.start()
        root_client(server).sys.enable_secrets_engine("transit", path="transit")
        assert keys.create_key("patient-1").latest_version == 1
    finally:
        server.stop()


def test_policy_refusal_names_the_path_and_never_the_token(openbao: OpenBaoDevServer) -> None:
    root = root_client(openbao)
    token = root.auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
    client = vault_client(ServiceSettings(vault_address=openbao.address, vault_token=SecretStr(token)))

    with pytest.raises(PermissionDenied) as refused:
        VaultTransitKeyManager(client).key_info("patient-anyone")

    assert "transit/keys/patient-anyone" in refused.value.message
    assert token not in refused.value.message


def test_revoked_service_token_is_replaced_by_a_new_login(openbao_bootstrapped: Bootstrapped) -> None:
    client = vault_client(openbao_bootstrapped.settings("ledger"))
    signer = VaultTransitSigner(client, "svc-ledger")
    first_token = client.token

    root_client(openbao_bootstrapped.server).auth.token.revoke(first_token)

    signature = signer.sign(b"after revocation")
    assert client.token != first_token
    assert verify_signature(signer.public_key_bytes(), signature, b"after revocation")


def test_service_keeps_working_past_its_token_ttl(openbao_bootstrapped: Bootstrapped) -> None:
    root = root_client(openbao_bootstrapped.server)
    root.auth.approle.create_or_update_approle("carechain-short-lived", token_policies=["carechain-ledger"],
                                               token_ttl="2s", token_max_ttl="2s")
    role_id = root.auth.approle.read_role_id("carechain-short-lived")["data"]["role_id"]
    secret_file = openbao_bootstrapped.secret_id_file("ledger").with_name("short-lived.secret-id")
    secret_file.write_text(root.auth.approle.generate_secret_id("carechain-short-lived")["data"]["secret_id"])
    settings = ServiceSettings(vault_address=openbao_bootstrapped.server.address, vault_auth_method="approle",
                               vault_role_id=role_id, vault_secret_id_file=secret_file)
    client = vault_client(settings)
    signer = VaultTransitSigner(client, "svc-ledger")
    signer.sign(b"first")

    time.sleep(2.5)  # let the 2-second token expire (waiting, not measuring)

    assert verify_signature(signer.public_key_bytes(), signer.sign(b"later"), b"later")


def test_static_token_that_expired_is_permission_denied_not_a_crash(openbao: OpenBaoDevServer) -> None:
    root = root_client(openbao)
    token = root.auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
    client = vault_client(ServiceSettings(vault_address=openbao.address, vault_token=SecretStr(token)))
    root.auth.token.revoke(token)

    with pytest.raises(PermissionDenied):
        VaultTransitKeyManager(client).key_info("patient-anyone")
