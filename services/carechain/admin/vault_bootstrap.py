"""``carechain admin vault-bootstrap``: prepare a Vault/OpenBao for a CareChain network.

Idempotent: running it again changes nothing that is already right (role ids
and signing keys stay the same). It

1. enables Transit and KV v2 at the configured mounts (CARECHAIN_VAULT_TRANSIT_MOUNT,
   CARECHAIN_VAULT_KV_MOUNT);
2. enables AppRole auth, and optionally Kubernetes auth configured with the
   cluster's API URL and CA;
3. writes one least-privilege policy per service (``carechain-<service>``) and
   ``carechain-operator`` from ``deploy/openbao/policies/*.hcl``;
4. creates one AppRole role per service bound to its policy with short token
   TTLs (and, with Kubernetes, one role per service bound to its service account
   ``carechain-<service>`` in the namespace);
5. creates each service's non-exportable ed25519 signing key ``svc-<service>``,
   identity's pseudonym HMAC key and the ledger metadata key (derived, non-exportable,
   not deletable; only the records and consent policies may use it) in Transit, and
   exports the public keys into a trust directory;
6. for each ledger validator named (``--validator validator-north-clinic``):
   its own signing key (named like the validator), a policy
   ``carechain-<validator>`` derived from ``ledger.hcl`` that may sign with
   that key only, and an AppRole (and Kubernetes role, bound to the ledger's
   service account) of that name.

Secret ids are only written to files (mode 0600), never printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import sys
from typing import TextIO

import hvac
import hvac.exceptions
from pydantic import SecretStr

from carechain.core.crypto import write_private_file
from carechain.core.errors import CareChainError, FailedPrecondition
from carechain.core.layout import SERVICES, service_principal_id
from carechain.runtime.config import ServiceSettings
from carechain.runtime.vault import ensure_signing_key, export_public_key, vault_client, vault_errors

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
# The policies live in the repository under deploy/; the container image copies them to
# <venv>/share/carechain/openbao-policies (see deploy/Dockerfile).
_POLICY_DIRS = (REPO_ROOT / "deploy" / "openbao" / "policies",
                pathlib.Path(sys.prefix) / "share" / "carechain" / "openbao-policies")
DEFAULT_POLICY_DIR = next((d for d in _POLICY_DIRS if d.is_dir()), _POLICY_DIRS[0])
OPERATOR_POLICY = "operator"
PSEUDONYM_KEY = "identity-pseudonym"
LEDGER_METADATA_KEY = "ledger-metadata"  # = carechain.ledger.sealing.LEDGER_METADATA_KEY
DEFAULT_TOKEN_TTL = "20m"  # noqa: S105 - a duration, not a secret
DEFAULT_TOKEN_MAX_TTL = "1h"  # noqa: S105 - a duration, not a secret

_PATH = re.compile(r'^(\s*path\s+")([^"]+)(")', re.MULTILINE)


def policy_name(service: str) -> str:
    """Vault policy (and role) name of a service, e.g. ``carechain-ledger``."""
    return f"carechain-{service}"


@dataclasses.dataclass(frozen=True)
class Mounts:
    """Where the engines and auth methods live (the CARECHAIN_VAULT_*_MOUNT settings)."""

    transit: str = "transit"
    kv: str = "carechain"
    approle: str = "approle"
    kubernetes: str = "kubernetes"


@dataclasses.dataclass(frozen=True)
class KubernetesAuth:
    """Kubernetes auth: the API server Vault checks service account tokens against."""

    host: str
    ca_pem: str = ""
    namespace: str = "carechain"


@dataclasses.dataclass(frozen=True)
class BootstrapOptions:
    """What to set up."""

    mounts: Mounts = Mounts()
    policy_dir: pathlib.Path = DEFAULT_POLICY_DIR
    services: tuple[str, ...] = SERVICES
    kubernetes: KubernetesAuth | None = None
    trust_dir: pathlib.Path | None = None
    secret_id_dir: pathlib.Path | None = None
    token_ttl: str = DEFAULT_TOKEN_TTL
    token_max_ttl: str = DEFAULT_TOKEN_MAX_TTL
    #: Ledger validator ids, each with its own Transit key, policy and role (several validators).
    validators: tuple[str, ...] = ()


def validator_policy(ledger_policy: str, validator_id: str) -> str:
    """The ledger policy rewritten to allow signing with the validator's own key only."""
    return ledger_policy.replace(service_principal_id("ledger"), validator_id)


@dataclasses.dataclass
class BootstrapResult:
    """What the bootstrap found or made."""

    role_ids: dict[str, str] = dataclasses.field(default_factory=dict)
    policies: list[str] = dataclasses.field(default_factory=list)
    public_keys: dict[str, bytes] = dataclasses.field(default_factory=dict)
    exported: list[pathlib.Path] = dataclasses.field(default_factory=list)
    secret_id_files: dict[str, pathlib.Path] = dataclasses.field(default_factory=dict)
    changes: list[str] = dataclasses.field(default_factory=list)


def render_policy(text: str, mounts: Mounts) -> str:
    """Rewrite the default mount names in a policy's ``path "..."`` lines to the configured ones."""
    defaults = Mounts()
    prefixes = [
        (f"{defaults.transit}/", f"{mounts.transit}/"),
        (f"{defaults.kv}/", f"{mounts.kv}/"),
        (f"sys/mounts/{defaults.transit}", f"sys/mounts/{mounts.transit}"),
        (f"sys/mounts/{defaults.kv}", f"sys/mounts/{mounts.kv}"),
        (f"auth/{defaults.approle}/", f"auth/{mounts.approle}/"),
        (f"sys/auth/{defaults.approle}", f"sys/auth/{mounts.approle}"),
        (f"auth/{defaults.kubernetes}/", f"auth/{mounts.kubernetes}/"),
        (f"sys/auth/{defaults.kubernetes}", f"sys/auth/{mounts.kubernetes}"),
    ]

    def rewrite(match: re.Match[str]) -> str:
        path = match.group(2)
        for old, new in prefixes:
            if path == old.rstrip("/") or path.startswith(old):
                path = new + path[len(old):]
                break
        return match.group(1) + path + match.group(3)

    return _PATH.sub(rewrite, text)


def load_policy(policy_dir: pathlib.Path, name: str, mounts: Mounts) -> str:
    """The HCL policy ``<policy_dir>/<name>.hcl`` for the configured mounts."""
    path = policy_dir / f"{name}.hcl"
    try:
        return render_policy(path.read_text(), mounts)
    except FileNotFoundError:
        raise FailedPrecondition(f"policy file {path} is missing") from None


def bootstrap(client: hvac.Client, options: BootstrapOptions) -> BootstrapResult:
    """Set up engines, auth methods, policies, roles and signing keys; safe to run again."""
    result = BootstrapResult()
    mounts = options.mounts
    _ensure_secrets_engine(client, mounts.transit, "transit", {}, result)
    _ensure_secrets_engine(client, mounts.kv, "kv", {"version": "2"}, result)
    _ensure_auth_method(client, mounts.approle, "approle", result)
    if options.kubernetes is not None:
        _ensure_auth_method(client, mounts.kubernetes, "kubernetes", result)
        with vault_errors("configure Kubernetes auth"):
            client.auth.kubernetes.configure(
                kubernetes_host=options.kubernetes.host,
                kubernetes_ca_cert=options.kubernetes.ca_pem or None,
                mount_point=mounts.kubernetes,
            )

    for name in [*options.services, OPERATOR_POLICY]:
        policy = load_policy(options.policy_dir, name, mounts)
        with vault_errors(f"write policy {policy_name(name)}"):
            client.sys.create_or_update_policy(policy_name(name), policy)
        result.policies.append(policy_name(name))
    for validator_id in options.validators:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", validator_id):
            raise FailedPrecondition(f"validator id {validator_id!r} must be lower-case letters, digits and '-'")
        policy = validator_policy(load_policy(options.policy_dir, "ledger", mounts), validator_id)
        with vault_errors(f"write policy {policy_name(validator_id)}"):
            client.sys.create_or_update_policy(policy_name(validator_id), policy)
        result.policies.append(policy_name(validator_id))

    # A validator's role is bound to the ledger's service account (its pods run as carechain-ledger).
    accounts = {**{s: s for s in options.services}, **{v: "ledger" for v in options.validators}}
    for service, account in accounts.items():
        role = policy_name(service)
        with vault_errors(f"write AppRole role {role}"):
            client.auth.approle.create_or_update_approle(
                role,
                token_policies=[role],
                token_ttl=options.token_ttl,
                token_max_ttl=options.token_max_ttl,
                token_type="service",  # noqa: S106 - a token kind, not a secret
                secret_id_num_uses=0,
                mount_point=mounts.approle,
            )
            result.role_ids[service] = client.auth.approle.read_role_id(role, mount_point=mounts.approle)["data"][
                "role_id"
            ]
        if options.kubernetes is not None:
            with vault_errors(f"write Kubernetes role {role}"):
                client.auth.kubernetes.create_role(
                    role,
                    bound_service_account_names=[f"carechain-{account}"],
                    bound_service_account_namespaces=[options.kubernetes.namespace],
                    policies=[role],
                    ttl=options.token_ttl,
                    max_ttl=options.token_max_ttl,
                    mount_point=mounts.kubernetes,
                )
        if options.secret_id_dir is not None:
            result.secret_id_files[service] = _write_secret_id(client, service, options.secret_id_dir, mounts)

    key_names = [service_principal_id(s) for s in options.services] + list(options.validators)
    for principal_id in key_names:
        result.public_keys[principal_id] = ensure_signing_key(client, principal_id, mounts.transit)
        if options.trust_dir is not None:
            result.exported.append(export_public_key(client, principal_id, options.trust_dir, principal_id,
                                                     mounts.transit))
    if "identity" in options.services:
        _ensure_pseudonym_key(client, mounts.transit, result)
    if {"records", "consent"} & set(options.services):
        _ensure_ledger_metadata_key(client, mounts.transit, result)
    return result


def _ensure_secrets_engine(client: hvac.Client, path: str, engine: str, options: dict[str, str],
                           result: BootstrapResult) -> None:
    with vault_errors("list secrets engines"):
        mounted = client.sys.list_mounted_secrets_engines()["data"]
    existing = mounted.get(f"{path}/")
    if existing is None:
        with vault_errors(f"enable {engine} at {path}/"):
            client.sys.enable_secrets_engine(engine, path=path, options=options or None)
        result.changes.append(f"enabled {engine} at {path}/")
        return
    if existing.get("type") != engine:
        raise FailedPrecondition(f"{path}/ is already a {existing.get('type')} mount, not {engine}")
    version = (existing.get("options") or {}).get("version")
    if engine == "kv" and version != "2":
        raise FailedPrecondition(f"{path}/ is a KV version {version or 1} mount; CareChain needs KV version 2")


def _ensure_auth_method(client: hvac.Client, path: str, method: str, result: BootstrapResult) -> None:
    with vault_errors("list auth methods"):
        enabled = client.sys.list_auth_methods()["data"]
    existing = enabled.get(f"{path}/")
    if existing is None:
        with vault_errors(f"enable {method} auth at {path}/"):
            client.sys.enable_auth_method(method, path=path)
        result.changes.append(f"enabled {method} auth at {path}/")
    elif existing.get("type") != method:
        raise FailedPrecondition(f"auth/{path}/ is already a {existing.get('type')} auth method, not {method}")


def _ensure_pseudonym_key(client: hvac.Client, mount: str, result: BootstrapResult) -> None:
    """Identity's HMAC key for patient pseudonyms: never exported, never deleted, never rotated."""
    transit = client.secrets.transit
    with vault_errors(f"create Transit key {PSEUDONYM_KEY}"):
        try:
            transit.read_key(PSEUDONYM_KEY, mount_point=mount)
        except hvac.exceptions.InvalidPath:
            transit.create_key(PSEUDONYM_KEY, key_type="aes256-gcm96", exportable=False, mount_point=mount)
            result.changes.append(f"created Transit key {PSEUDONYM_KEY}")


def _ensure_ledger_metadata_key(client: hvac.Client, mount: str, result: BootstrapResult) -> None:
    """The key sealing clinical metadata on the ledger: derived (the chain id is the context),
    never exported, never deleted (that would make every sealed record and policy unreadable)."""
    transit = client.secrets.transit
    with vault_errors(f"create Transit key {LEDGER_METADATA_KEY}"):
        try:
            transit.read_key(LEDGER_METADATA_KEY, mount_point=mount)
        except hvac.exceptions.InvalidPath:
            transit.create_key(LEDGER_METADATA_KEY, key_type="aes256-gcm96", derived=True, exportable=False,
                               mount_point=mount)
            result.changes.append(f"created Transit key {LEDGER_METADATA_KEY}")


def _write_secret_id(client: hvac.Client, service: str, directory: pathlib.Path, mounts: Mounts) -> pathlib.Path:
    """A new secret id for the service's role, in ``<directory>/<service>.secret-id`` (0600)."""
    role = policy_name(service)
    with vault_errors(f"generate a secret id for {role}"):
        secret_id = client.auth.approle.generate_secret_id(role, mount_point=mounts.approle)["data"]["secret_id"]
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / f"{service}.secret-id"
    write_private_file(path, secret_id.encode())
    return path


# --- command line ----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``carechain admin vault-bootstrap``."""
    parser.add_argument("--vault-address", default=os.environ.get("VAULT_ADDR") or os.environ.get("BAO_ADDR"),
                        help="Vault/OpenBao URL (default: $VAULT_ADDR, then $CARECHAIN_VAULT_ADDRESS)")
    parser.add_argument("--token-file", type=pathlib.Path,
                        help="file holding an admin token (default: $VAULT_TOKEN or $BAO_TOKEN)")
    parser.add_argument("--namespace", default=None, help="Vault Enterprise namespace")
    parser.add_argument("--ca-cert", type=pathlib.Path, default=None, help="CA bundle for Vault's TLS certificate")
    parser.add_argument("--kubernetes-host", help="enable Kubernetes auth against this API server URL")
    parser.add_argument("--kubernetes-ca-file", type=pathlib.Path, help="PEM CA of the Kubernetes API server")
    parser.add_argument("--kubernetes-namespace", default="carechain",
                        help="namespace of the carechain-<service> service accounts (default: carechain)")
    parser.add_argument("--trust-dir", type=pathlib.Path, help="export the services' public keys here (<id>.pub)")
    parser.add_argument("--secret-id-dir", type=pathlib.Path,
                        help="write a new AppRole secret id per service to <dir>/<service>.secret-id (0600)")
    parser.add_argument("--policy-dir", type=pathlib.Path, default=DEFAULT_POLICY_DIR,
                        help=f"directory of <service>.hcl policies (default: {DEFAULT_POLICY_DIR})")
    parser.add_argument("--validator", action="append", default=[], dest="validators",
                        help="a ledger validator id (repeatable): its own signing key, policy and role")
    parser.add_argument("--token-ttl", default=DEFAULT_TOKEN_TTL, help="service token TTL")
    parser.add_argument("--token-max-ttl", default=DEFAULT_TOKEN_MAX_TTL, help="service token max TTL")


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the bootstrap from parsed arguments; mounts come from CARECHAIN_VAULT_*_MOUNT."""
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    else:
        token = os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN") or ""
    if not token:
        print("no admin token: set VAULT_TOKEN or pass --token-file", file=sys.stderr)
        return 2
    env_settings = ServiceSettings()
    overrides: dict[str, object] = {"vault_auth_method": "token", "vault_token": SecretStr(token)}
    if args.vault_address:
        overrides["vault_address"] = args.vault_address
    if args.namespace is not None:
        overrides["vault_namespace"] = args.namespace
    if args.ca_cert is not None:
        overrides["vault_ca_cert"] = args.ca_cert
    settings = env_settings.model_copy(update=overrides)
    kubernetes = None
    if args.kubernetes_host:
        ca_pem = args.kubernetes_ca_file.read_text() if args.kubernetes_ca_file else ""
        kubernetes = KubernetesAuth(args.kubernetes_host, ca_pem, args.kubernetes_namespace)
    options = BootstrapOptions(
        mounts=Mounts(settings.vault_transit_mount, settings.vault_kv_mount, settings.vault_approle_mount,
                      settings.vault_kubernetes_mount),
        policy_dir=args.policy_dir,
        kubernetes=kubernetes,
        trust_dir=args.trust_dir,
        secret_id_dir=args.secret_id_dir,
        token_ttl=args.token_ttl,
        token_max_ttl=args.token_max_ttl,
        validators=tuple(getattr(args, "validators", ()) or ()),
    )
    try:
        result = bootstrap(vault_client(settings), options)
    except CareChainError as exc:
        print(f"vault-bootstrap failed: {exc.message}", file=sys.stderr)
        return 1
    for change in result.changes:
        print(change, file=out)
    print(f"policies: {', '.join(result.policies)}", file=out)
    print("AppRole role ids (CARECHAIN_VAULT_ROLE_ID):", file=out)
    for service, role_id in result.role_ids.items():
        print(f"  {service:9} {role_id}", file=out)
    for service, path in result.secret_id_files.items():
        print(f"  secret id of {service} written to {path}", file=out)
    for path in result.exported:
        print(f"  public key {path}", file=out)
    return 0
