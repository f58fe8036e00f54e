"""`carechain admin vault-bootstrap` against a real OpenBao, and what its policies allow."""

from __future__ import annotations

import base64
import pathlib
import stat

import hvac
import pytest
from pydantic import SecretStr
from servers_openbao import Bootstrapped, root_client

from carechain.admin.vault_bootstrap import (
    DEFAULT_POLICY_DIR,
    BootstrapOptions,
    KubernetesAuth,
    Mounts,
    bootstrap,
    policy_name,
)
from carechain.cli import build_parser
from carechain.core.crypto import verify_signature
from carechain.core.errors import PermissionDenied
from carechain.core.layout import SERVICES, TrustBundle, service_principal_id
from carechain.dev.backends.openbao import OpenBaoDevServer
from carechain.identity.vault_registry import VaultRegistry
from carechain.runtime.config import ServiceSettings
from carechain.runtime.vault import VaultTransitSigner, vault_client, vault_errors
from carechain.runtime.vault_keyring import VaultTransitKeyManager

pytest_plugins = ["servers_openbao"]

K8S_CA = """-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Vy
dmVyLWNhQDE3MDAwMDAwMDAwHhcNMjMxMTE0MjIxMzIwWhcNMzMxMTExMjIxMzIw
WjAjMSEwHwYDVQQDDBhrM3Mtc2VydmVyLWNhQDE3MDAwMDAwMDAwWTATBgcqhkjO
PQIBBggqhkjOPQMBBwNCAAS7YqSCNQwJJBYmf/dxRcH9jW7cwN1ZfF1LpXHYP1aU
jk0Y7jbT1xaHiKqF1Pno5K3q1nmPpgPSk26Y7oJQrCGPo0IwQDAOBgNVHQ8BAf8E
BAMCAqQwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQU2m5mqnqXo8N3k5uVLzPd
9cV9c7AwCgYIKoZIzj0EAwIDSAAwRQIhAJ1n6r0rW9xZnS8cN5dW4pJ3wqWjEXcC
rN8GMPqg0lmPAiAV1LgvCk9lpnWnAqXZB+9x2bA2tKXz3rQFqH5Mzm6H0g==
-----END CERTIFICATE-----
"""


def _service_client(boot: Bootstrapped, service: str) -> hvac.Client:
    return vault_client(boot.settings(service))


def test_bootstrap_is_idempotent(openbao_bootstrapped: Bootstrapped, tmp_path: pathlib.Path) -> None:
    first = openbao_bootstrapped.result
    again = bootstrap(root_client(openbao_bootstrapped.server),
                      BootstrapOptions(trust_dir=tmp_path / "trust", secret_id_dir=tmp_path / "ids"))

    assert again.changes == [], "a second run must find everything in place"
    assert again.role_ids == first.role_ids
    assert again.public_keys == first.public_keys
    assert sorted(again.policies) == sorted([*(policy_name(s) for s in SERVICES), "carechain-operator"])
    assert TrustBundle.load(tmp_path / "trust").keys == first.public_keys


def test_bootstrap_exports_every_service_key_to_the_trust_dir(openbao_bootstrapped: Bootstrapped) -> None:
    trust = TrustBundle.load(openbao_bootstrapped.options.trust_dir)  # type: ignore[arg-type]
    assert set(trust.keys) == {service_principal_id(s) for s in SERVICES}
    assert all(len(key) == 32 for key in trust.keys.values())


def test_secret_ids_are_written_to_private_files(openbao_bootstrapped: Bootstrapped) -> None:
    files = openbao_bootstrapped.result.secret_id_files
    assert set(files) == set(SERVICES)
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_logs_in_with_approle_and_signs_with_its_own_key(
    openbao_bootstrapped: Bootstrapped, service: str
) -> None:
    client = _service_client(openbao_bootstrapped, service)
    signer = VaultTransitSigner(client, service_principal_id(service))

    lookup = client.auth.token.lookup_self()["data"]
    assert policy_name(service) in lookup["policies"]
    assert 0 < lookup["ttl"] <= 20 * 60, "service tokens are short-lived"
    assert signer.public_key_bytes() == openbao_bootstrapped.result.public_keys[service_principal_id(service)]
    assert verify_signature(signer.public_key_bytes(), signer.sign(b"hello"), b"hello")


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "identity"])
def test_other_services_cannot_touch_patient_keys_or_the_registry(
    openbao_bootstrapped: Bootstrapped, service: str
) -> None:
    root = root_client(openbao_bootstrapped.server)
    VaultTransitKeyManager(root).create_key("patient-policy-test")
    keys = VaultTransitKeyManager(_service_client(openbao_bootstrapped, service))
    client = _service_client(openbao_bootstrapped, service)

    with pytest.raises(PermissionDenied, match="transit/datakey/plaintext/patient-policy-test"):
        keys.generate_data_key("patient-policy-test", b"psn|rec")
    with pytest.raises(PermissionDenied, match="transit/decrypt/patient-policy-test"):
        keys.decrypt_data_key("patient-policy-test", "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", b"psn|rec")
    with pytest.raises(PermissionDenied):
        keys.create_key("patient-made-by-" + service)
    with pytest.raises(PermissionDenied, match="carechain/data/identity/principals"), vault_errors("read principal"):
        client.secrets.kv.v2.read_secret_version("identity/principals/org-1", mount_point="carechain",
                                                 raise_on_deleted_version=False)
    with pytest.raises(PermissionDenied, match="identity-pseudonym"):
        VaultRegistry(client)


def test_records_cannot_sign_as_the_ledger(openbao_bootstrapped: Bootstrapped) -> None:
    records = _service_client(openbao_bootstrapped, "records")
    with pytest.raises(PermissionDenied, match="svc-ledger"):
        VaultTransitSigner(records, "svc-ledger")
    with pytest.raises(PermissionDenied, match="transit/sign/svc-ledger"), vault_errors("sign as svc-ledger"):
        records.secrets.transit.sign_data("svc-ledger", hash_input=base64.b64encode(b"block").decode())


def test_identity_cannot_sign_as_consent_nor_export_keys(openbao_bootstrapped: Bootstrapped) -> None:
    identity = _service_client(openbao_bootstrapped, "identity")
    with pytest.raises(PermissionDenied), vault_errors("sign as svc-consent"):
        identity.secrets.transit.sign_data("svc-consent", hash_input=base64.b64encode(b"decision").decode())
    with pytest.raises(PermissionDenied), vault_errors("export"):
        identity.secrets.transit.export_key("svc-identity", key_type="signing-key")
    with pytest.raises(PermissionDenied), vault_errors("read another service's KV"):
        identity.secrets.kv.v2.read_secret_version("ledger/x", mount_point="carechain", raise_on_deleted_version=False)


def test_identity_can_do_its_work(openbao_bootstrapped: Bootstrapped) -> None:
    identity = _service_client(openbao_bootstrapped, "identity")
    keys = VaultTransitKeyManager(identity)
    registry = VaultRegistry(identity)

    keys.create_key("patient-identity-work")
    plaintext, wrapped = keys.generate_data_key("patient-identity-work", b"psn|rec")
    keys.rotate("patient-identity-work")
    rewrapped = keys.rewrap("patient-identity-work", wrapped, b"psn|rec")
    keys.set_min_decryption_version("patient-identity-work", 2)
    assert keys.decrypt_data_key("patient-identity-work", rewrapped, b"psn|rec") == plaintext
    assert registry.patient_pseudonym("org-1", "pat-1").startswith("psn-")
    assert registry.use_decision_token("jti-identity-work", expires_at_ms=10**13, now_ms=0)
    keys.delete_key("patient-identity-work")
    signer = VaultTransitSigner(identity, "svc-identity")
    assert verify_signature(signer.public_key_bytes(), signer.sign(b"token"), b"token")


def test_identity_wraps_batches_but_its_encrypt_never_creates_a_patient_key(openbao_bootstrapped: Bootstrapped) -> None:
    identity = _service_client(openbao_bootstrapped, "identity")
    keys = VaultTransitKeyManager(identity)
    keys.create_key("patient-batch-work")
    contexts = [b"psn|rec-1", b"psn|rec-2", b"psn|rec-3"]

    made = keys.generate_data_keys("patient-batch-work", contexts)  # one Transit encrypt with batch_input
    assert keys.decrypt_data_keys("patient-batch-work", [(w, c) for (_, w), c in zip(made, contexts, strict=True)]
                                  ) == [p for p, _ in made]

    # Straight to Transit, as a compromised identity could: encrypt under a key that does not exist
    # would upsert it if the policy allowed "create"; identity's allows only "update".
    with pytest.raises(PermissionDenied, match="transit/encrypt/patient-never-made"), vault_errors("encrypt"):
        identity.secrets.transit.encrypt_data("patient-never-made", batch_input=[
            {"plaintext": base64.b64encode(bytes(32)).decode(), "context": base64.b64encode(b"c").decode()}])
    with pytest.raises(hvac.exceptions.InvalidPath):
        root_client(openbao_bootstrapped.server).secrets.transit.read_key("patient-never-made")
    keys.delete_key("patient-batch-work")


def test_only_records_and_consent_can_seal_and_open_ledger_metadata(openbao_bootstrapped: Bootstrapped) -> None:
    """Ledger privacy: what records seals on the ledger, consent opens; no validator, identity,
    audit or storage can, nor can a validator's own policy (--validator)."""
    from carechain.common.v1 import common_pb2
    from carechain.consent.v1 import policy_pb2
    from carechain.ledger.sealing import LEDGER_METADATA_KEY, LedgerSealer, metadata_sealer
    from carechain.ledger.v1 import ledger_pb2
    from carechain.runtime.config import RecordsSettings

    settings = openbao_bootstrapped.settings("records", RecordsSettings, ledger_metadata_key_backend="vault",
                                             chain_id="vault-chain")
    record = ledger_pb2.RegisterRecord(record_id="rec-v", patient_id="psn-v", organization_id="org-v",
                                       content_sha256="ab" * 32, version=1)
    metadata = ledger_pb2.RecordMetadata(resource_type="Condition",
                                         categories=[common_pb2.SENSITIVITY_CATEGORY_HIV_STI])
    record.sealed_metadata.CopyFrom(metadata_sealer(settings).seal_record(record, metadata))

    consent = LedgerSealer(VaultTransitKeyManager(_service_client(openbao_bootstrapped, "consent")), "vault-chain")
    assert consent.open_record(record) == metadata
    policy = policy_pb2.ConsentPolicy(provisions=[policy_pb2.Provision(type=policy_pb2.PROVISION_TYPE_PERMIT)])
    sealed_policy = consent.seal_policy("c-v", "psn-v", policy)
    assert consent.open_policy(ledger_pb2.GrantConsent(consent_id="c-v", patient_id="psn-v",
                                                       sealed_policy=sealed_policy)) == policy
    key = root_client(openbao_bootstrapped.server).secrets.transit.read_key(LEDGER_METADATA_KEY)["data"]
    assert key["derived"] and not key["exportable"] and not key["deletion_allowed"]
    for service in ("ledger", "identity", "audit", "storage"):
        outsider = LedgerSealer(VaultTransitKeyManager(_service_client(openbao_bootstrapped, service)), "vault-chain")
        with pytest.raises(PermissionDenied, match="transit/decrypt/ledger-metadata"):
            outsider.open_record(record)
        with pytest.raises(PermissionDenied, match="transit/datakey/plaintext/ledger-metadata"):
            outsider.seal_record(record, metadata)


def test_wrong_secret_id_is_permission_denied(openbao_bootstrapped: Bootstrapped, tmp_path: pathlib.Path) -> None:
    bogus = tmp_path / "bogus.secret-id"
    bogus.write_text("00000000-0000-0000-0000-000000000000")
    settings = ServiceSettings(vault_address=openbao_bootstrapped.server.address, vault_auth_method="approle",
                               vault_role_id=openbao_bootstrapped.result.role_ids["ledger"],
                               vault_secret_id_file=bogus)
    with pytest.raises(PermissionDenied, match="approle login") as refused:
        vault_client(settings)
    assert "00000000-0000" not in refused.value.message


def test_kubernetes_auth_is_configured_with_one_role_per_service(tmp_path: pathlib.Path) -> None:
    # A server of its own: other mount names, Kubernetes auth, CLI entry point.
    with OpenBaoDevServer(tmp_path / "bao") as server:
        ca_file = tmp_path / "k8s-ca.pem"
        ca_file.write_text(K8S_CA)
        token_file = tmp_path / "token"
        token_file.write_text(server.root_token)
        args = build_parser().parse_args([
            "admin", "vault-bootstrap", "--vault-address", server.address, "--token-file", str(token_file),
            "--kubernetes-host", "https://kubernetes.default.svc", "--kubernetes-ca-file", str(ca_file),
            "--kubernetes-namespace", "health", "--trust-dir", str(tmp_path / "trust"),
        ])
        assert args.func(args) == 0

        root = root_client(server)
        config = root.read("auth/kubernetes/config")["data"]
        role = root.read("auth/kubernetes/role/carechain-ledger")["data"]
        assert config["kubernetes_host"] == "https://kubernetes.default.svc"
        assert "BEGIN CERTIFICATE" in config["kubernetes_ca_cert"]
        assert role["bound_service_account_names"] == ["carechain-ledger"]
        assert role["bound_service_account_namespaces"] == ["health"]
        assert "carechain-ledger" in role["token_policies"]
        assert TrustBundle.load(tmp_path / "trust").keys.keys() == {service_principal_id(s) for s in SERVICES}


def test_custom_mounts_are_used_by_policies(tmp_path: pathlib.Path) -> None:
    with OpenBaoDevServer(tmp_path / "bao") as server:
        mounts = Mounts(transit="keys", kv="state", approle="services")
        result = bootstrap(root_client(server), BootstrapOptions(mounts=mounts, secret_id_dir=tmp_path / "ids",
                                                                 services=("identity",)))
        settings = ServiceSettings(vault_address=server.address, vault_auth_method="approle",
                                   vault_role_id=result.role_ids["identity"],
                                   vault_secret_id_file=result.secret_id_files["identity"],
                                   vault_approle_mount="services")
        identity = vault_client(settings)
        keys = VaultTransitKeyManager(identity, "keys")
        keys.create_key("patient-1")
        plaintext, wrapped = keys.generate_data_key("patient-1", b"c")
        registry = VaultRegistry(identity, kv_mount="state", transit_mount="keys")
        registry.add_challenge("p", b"x", 2, 1)

        assert keys.decrypt_data_key("patient-1", wrapped, b"c") == plaintext
        assert registry.take_challenge("p", b"x", 1)


def test_operator_policy_is_enough_to_run_the_bootstrap(tmp_path: pathlib.Path) -> None:
    with OpenBaoDevServer(tmp_path / "bao") as server:
        root = root_client(server)
        root.sys.create_or_update_policy("carechain-operator", (DEFAULT_POLICY_DIR / "operator.hcl").read_text())
        token = root.auth.token.create(policies=["carechain-operator"], ttl="10m")["auth"]["client_token"]
        operator = vault_client(ServiceSettings(vault_address=server.address, vault_token=SecretStr(token)))

        result = bootstrap(operator, BootstrapOptions(
            kubernetes=KubernetesAuth("https://kubernetes.default.svc", K8S_CA), secret_id_dir=tmp_path / "ids"))

        assert set(result.role_ids) == set(SERVICES)
        with pytest.raises(PermissionDenied), vault_errors("operator signs as ledger"):
            operator.secrets.transit.sign_data("svc-ledger", hash_input=base64.b64encode(b"x").decode())
