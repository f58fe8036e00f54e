"""OpenBao, MinIO and etcd together, bootstrapped for a local CareChain network.

``carechain up --with-backends`` and the end-to-end tests use this to run the
six services on the real systems a health network runs: keys and signing in
OpenBao Transit (AppRole login per service), blobs in MinIO, ordering and the
audit trail in etcd (TLS with client certificates, authentication on: see
:mod:`carechain.dev.backends.etcd`). Ports and credentials are kept in
``stack.json`` (etcd's: its CA and certificates under ``etcd/tls``, passwords
under ``etcd/credentials``) under the stack's directory, so a restarted network
finds its data again.
"""

from __future__ import annotations

import json
import pathlib
import secrets
from typing import Any

import hvac

from carechain.admin.vault_bootstrap import BootstrapOptions, bootstrap
from carechain.core.crypto import write_private_file
from carechain.dev.backends.etcd import EtcdCluster
from carechain.dev.backends.minio import MinioServer
from carechain.dev.backends.openbao import OpenBaoDevServer, OpenBaoServer
from carechain.dev.backends.process import free_port

STATE_FILE = "stack.json"


class BackendStack:
    """The three backend servers of a local network, with the Vault bootstrap done."""

    def __init__(self, root: pathlib.Path, etcd_members: int = 1, persistent_vault: bool = True) -> None:
        self.root = pathlib.Path(root)
        state = self._load_state(etcd_members)
        vault_dir = self.root / "openbao"
        if persistent_vault:
            self.openbao: OpenBaoServer | OpenBaoDevServer = OpenBaoServer(
                vault_dir, port=state["vault_port"], cluster_port=state["vault_cluster_port"])
        else:
            self.openbao = OpenBaoDevServer(vault_dir, port=state["vault_port"])
        self.minio = MinioServer(
            self.root / "minio", port=state["minio_port"], console_port=state["minio_console_port"],
            access_key=state["minio_access_key"], secret_key=state["minio_secret_key"],
        )
        self.etcd = EtcdCluster(self.root / "etcd", members=etcd_members, ports=[tuple(p) for p in state["etcd_ports"]])
        self.role_ids: dict[str, str] = {}
        self.secret_id_files: dict[str, pathlib.Path] = {}
        #: Ledger validator ids that get their own Transit key and AppRole (set before start()).
        self.validators: tuple[str, ...] = ()

    def _load_state(self, etcd_members: int) -> dict[str, Any]:
        path = self.root / STATE_FILE
        if path.exists():
            state = json.loads(path.read_text())
            if len(state["etcd_ports"]) == etcd_members:
                return state
        state = {
            "vault_port": free_port(),
            "vault_cluster_port": free_port(),
            "minio_port": free_port(),
            "minio_console_port": free_port(),
            "minio_access_key": "carechain-" + secrets.token_hex(6),
            "minio_secret_key": secrets.token_urlsafe(24),
            "etcd_ports": [[free_port(), free_port()] for _ in range(etcd_members)],
        }
        write_private_file(path, json.dumps(state, indent=2).encode())
        return state

    def start(self, trust_dir: pathlib.Path) -> BackendStack:
        """Start the servers, run the Vault bootstrap, export the services' public keys to trust_dir."""
        try:
            self.etcd.start()
            self.minio.start()
            self.openbao.start()
            result = bootstrap(
                hvac.Client(url=self.openbao.address, token=self.openbao.root_token),
                BootstrapOptions(trust_dir=trust_dir, secret_id_dir=self.root / "approle", validators=self.validators),
            )
        except BaseException:
            self.stop()
            raise
        self.role_ids = result.role_ids
        self.secret_id_files = result.secret_id_files
        return self

    def service_env(self, service: str) -> dict[str, str]:
        """CARECHAIN_* variables putting one service on these backends."""
        env = {
            "CARECHAIN_SIGNING_BACKEND": "vault",
            "CARECHAIN_VAULT_ADDRESS": self.openbao.address,
            "CARECHAIN_VAULT_AUTH_METHOD": "approle",
            "CARECHAIN_VAULT_ROLE_ID": self.role_ids[service],
            "CARECHAIN_VAULT_SECRET_ID_FILE": str(self.secret_id_files[service]),
            # TLS with the stack's client certificate, logged in as the least-privilege carechain user.
            **self.etcd.client_env(),
        }
        if service == "identity":
            env["CARECHAIN_KEY_BACKEND"] = "vault"
        elif service in ("records", "consent"):
            env["CARECHAIN_LEDGER_METADATA_KEY_BACKEND"] = "vault"  # the Transit key only they may use
        elif service == "storage":
            env.update(self.minio.settings_env())
        elif service == "ledger":
            env["CARECHAIN_ORDERER"] = "etcd"
        elif service == "audit":
            env["CARECHAIN_AUDIT_STORE"] = "etcd"
        return env

    def validator_env(self, validator_id: str) -> dict[str, str]:
        """CARECHAIN_* variables for one ledger validator signing with its own Transit key."""
        return {
            **self.service_env("ledger"),
            "CARECHAIN_VAULT_ROLE_ID": self.role_ids[validator_id],
            "CARECHAIN_VAULT_SECRET_ID_FILE": str(self.secret_id_files[validator_id]),
            "CARECHAIN_SIGNING_KEY_NAME": validator_id,
        }

    def describe(self) -> dict[str, str]:
        """Where each backend listens (for `carechain up` to print)."""
        return {"openbao": self.openbao.address, "minio": self.minio.url, "etcd": self.etcd.endpoints}

    def stop(self) -> None:
        """Stop all three (data stays on disk)."""
        for server in (self.openbao, self.minio, self.etcd):
            server.stop()
