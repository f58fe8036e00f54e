"""Every example value set boots against a real OpenBao: each pod logs in with its rendered role and signs.

For each value set the chart ships (tests/helm/values), the chart is rendered; a fresh OpenBao dev
server is prepared exactly as docs/deploy.md prescribes (`carechain admin vault-bootstrap` with
Kubernetes auth, the rendered mounts, one `--validator` per validator that is not svc-ledger); then
every pod that talks to Vault logs in with Kubernetes auth as the ServiceAccount the chart gives it,
with the role, mount, key names and settings of its rendered environment loaded into the service's
real settings class, and does what it needs the role for: every service signs with its Transit key
(the signature must verify against the public key the bootstrap exported into the trust bundle under
the pod's principal id), identity with keyBackend=vault wraps and unwraps a patient data key, records
and consent wrap and unwrap under the ledger metadata key. Only the Vault address and the token file
path (there is no kubelet) are rewritten. The Kubernetes API's part of the login (the TokenReview) is
played by tests/helm/token_review_api.py; OpenBao does the rest of it.

A value set that signs with files must have no pod that talks to Vault (its keys are the run test's,
test_helm_manifests_run_services.py).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from helm_chart import NAMESPACE, VALUE_SETS, Rendering, component, template
from token_review_api import TokenReviewAPI, token_review_api

from carechain.core.errors import PermissionDenied
from carechain.dev.backends.openbao import OpenBaoDevServer
from carechain.runtime.config import SETTINGS_BY_SERVICE
from carechain.runtime.vault import VaultTransitSigner, service_signer, validator_signer, vault_client
from carechain.runtime.vault_keyring import VaultTransitKeyManager

BIN = pathlib.Path(sys.executable).parent
MOUNT_VARIABLES = ("CARECHAIN_VAULT_TRANSIT_MOUNT", "CARECHAIN_VAULT_KV_MOUNT", "CARECHAIN_VAULT_KUBERNETES_MOUNT")
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path, not a secret


def _vault_workloads(rendering: Rendering) -> list[tuple[dict[str, Any], dict[str, str]]]:
    workloads = [(w, rendering.container_env(w)) for w in rendering.workloads()]
    return [(w, env) for w, env in workloads if "CARECHAIN_VAULT_ADDRESS" in env]


def _bootstrap(server: OpenBaoDevServer, api: TokenReviewAPI, envs: list[dict[str, str]],
               trust_dir: pathlib.Path) -> None:
    """`carechain admin vault-bootstrap` as docs/deploy.md says, with the mounts the chart rendered."""
    mounts = {name: {env[name] for env in envs if name in env} for name in MOUNT_VARIABLES}
    assert all(len(values) <= 1 for values in mounts.values()), f"services disagree on Vault mounts: {mounts}"
    validators = sorted({env["CARECHAIN_VALIDATOR_ID"] for env in envs
                         if env.get("CARECHAIN_VALIDATOR_ID", "svc-ledger") != "svc-ledger"})
    argv = [str(BIN / "carechain"), "admin", "vault-bootstrap", "--vault-address", server.address,
            "--kubernetes-host", api.url, "--kubernetes-ca-file", str(api.ca_file),
            "--kubernetes-namespace", NAMESPACE, "--trust-dir", str(trust_dir)]
    for validator in validators:
        argv += ["--validator", validator]
    env = {"PATH": os.environ["PATH"], "HOME": str(trust_dir.parent), "VAULT_TOKEN": server.root_token,
           **{name: values.pop() for name, values in mounts.items() if values}}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"vault-bootstrap failed:\n{result.stdout}\n{result.stderr}"


def _load_settings(service: str, env: dict[str, str]) -> Any:
    with mock.patch.dict(os.environ, env, clear=True):
        return SETTINGS_BY_SERVICE[service]()


def _mounted_vault_ca(spec: dict[str, Any]) -> str | None:
    container = spec["containers"][0]
    return next((f"{m['mountPath']}/ca.crt" for m in container["volumeMounts"] if m["name"] == "vault-ca"), None)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_of_the_value_set_logs_into_openbao_and_signs(value_set: str, tmp_path: pathlib.Path) -> None:
    rendering = Rendering.of(value_set)
    vault_workloads = _vault_workloads(rendering)
    if not vault_workloads:
        for workload in rendering.service_workloads():
            env = rendering.container_env(workload)
            assert env["CARECHAIN_SIGNING_BACKEND"] == "file", workload["metadata"]["name"]
            assert not [name for name in env if name.startswith("CARECHAIN_VAULT_")], workload["metadata"]["name"]
        return
    with OpenBaoDevServer(tmp_path / "openbao") as server, token_review_api(tmp_path / "kube-ca") as api:
        trust_dir = tmp_path / "trust"
        _bootstrap(server, api, [env for _, env in vault_workloads], trust_dir)
        for workload, env in vault_workloads:
            name = workload["metadata"]["name"]
            service = component(workload["spec"]["template"])
            spec = workload["spec"]["template"]["spec"]
            assert env["CARECHAIN_VAULT_AUTH_METHOD"] == "kubernetes", name
            assert spec["automountServiceAccountToken"] is True, f"{name} logs in with its token but does not mount it"
            if "CARECHAIN_VAULT_CA_CERT" in env:  # the dev server is plain http; the CA must be mounted
                assert env.pop("CARECHAIN_VAULT_CA_CERT") == _mounted_vault_ca(spec), name
            # The kubelet mounts the account's token where the settings look by default.
            assert env.get("CARECHAIN_VAULT_KUBERNETES_TOKEN_FILE", TOKEN_PATH) == TOKEN_PATH, name
            token_file = tmp_path / f"{name}.token"
            token_file.write_text(api.issue(NAMESPACE, spec["serviceAccountName"]))
            env.update(CARECHAIN_VAULT_ADDRESS=server.address, CARECHAIN_VAULT_KUBERNETES_TOKEN_FILE=str(token_file))
            settings = _load_settings(service, env)

            client = vault_client(settings)  # Kubernetes auth login with the rendered role
            assert api.reviews[-1] == (NAMESPACE, spec["serviceAccountName"]), name
            signer = validator_signer(settings, client) if service == "ledger" else service_signer(
                settings, service, client)
            message = f"{value_set} {name}".encode()
            public_key = load_pem_public_key((trust_dir / f"{signer.key_id}.pub").read_bytes())
            assert isinstance(public_key, Ed25519PublicKey)
            public_key.verify(signer.sign(message), message)  # raises if the key is not the trusted one
            # ... and with no other principal's key (each role may sign with its own only).
            other = "svc-audit" if signer.key_id != "svc-audit" else "svc-records"
            with pytest.raises(PermissionDenied):
                VaultTransitSigner(client, other, mount=settings.vault_transit_mount).sign(message)

            keys = VaultTransitKeyManager(client, settings.vault_transit_mount)
            if service == "identity" and settings.key_backend == "vault":
                keys.create_key("patient-chart-test")
                plaintext, wrapped = keys.generate_data_key("patient-chart-test", b"record-1")
                assert keys.decrypt_data_key("patient-chart-test", wrapped, b"record-1") == plaintext
            if getattr(settings, "ledger_metadata_key_backend", "local") == "vault":
                key_name = settings.ledger_metadata_key_name
                plaintext, wrapped = keys.generate_data_key(key_name, settings.chain_id.encode())
                assert keys.decrypt_data_key(key_name, wrapped, settings.chain_id.encode()) == plaintext


def test_a_validator_whose_key_its_role_may_not_use_is_refused_at_install() -> None:
    """The old external-backends example: a lone validator (role carechain-ledger) with another key."""
    result = template("external-backends", "--set", "ledger.validators[0].id=",
                      "--set", "ledger.validators[0].signingKeyName=validator-st-example")
    assert result.returncode != 0
    assert "ledger.validators[validator-0].signingKeyName" in result.stderr
    assert "carechain-ledger" in result.stderr and "vaultRole" in result.stderr
    fixed = Rendering.of("external-backends", "--set", "ledger.validators[0].id=",
                         "--set", "ledger.validators[0].signingKeyName=validator-st-example",
                         "--set", "ledger.validators[0].vaultRole=carechain-validator-st-example")
    env = fixed.container_env(fixed.get("StatefulSet", "cc-carechain-ledger-validator-0"))
    assert env["CARECHAIN_VAULT_KUBERNETES_ROLE"] == "carechain-validator-st-example"
