"""Typed service configuration from environment variables.

Every setting is read from ``CARECHAIN_<FIELD>`` (upper case), e.g.
``CARECHAIN_LISTEN_ADDRESS`` or ``CARECHAIN_LEDGER_ADDRESS``. Tracing is set by
the standard ``OTEL_*`` variables instead (see :mod:`carechain.core.telemetry`).
Invalid values stop the service at start-up with a message naming the variable.
"""

from __future__ import annotations

import pathlib
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CARECHAIN_"

DEFAULT_PORTS = {"records": 7100, "identity": 7101, "storage": 7102, "ledger": 7103, "consent": 7104, "audit": 7105}


class ServiceSettings(BaseSettings):
    """Settings every service has."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    listen_address: str = Field("127.0.0.1:0", description="host:port to serve gRPC on")
    data_dir: pathlib.Path = Field(pathlib.Path("var/carechain"), description="this service's own store")
    signing_key_file: pathlib.Path = Field(
        pathlib.Path("var/keys/service.pem"), description="PKCS#8 PEM Ed25519 key this service signs with (0600)"
    )
    trust_dir: pathlib.Path = Field(pathlib.Path("var/trust"), description="directory of trusted <principal>.pub keys")
    chain_id: str = Field("carechain-local", min_length=1, description="network id bound into every transaction")
    identity_address: str = Field(f"127.0.0.1:{DEFAULT_PORTS['identity']}", description="identity service host:port")
    storage_address: str = Field(f"127.0.0.1:{DEFAULT_PORTS['storage']}", description="storage service host:port")
    ledger_address: str = Field(f"127.0.0.1:{DEFAULT_PORTS['ledger']}", description="ledger service host:port")
    consent_address: str = Field(f"127.0.0.1:{DEFAULT_PORTS['consent']}", description="consent service host:port")
    audit_address: str = Field(f"127.0.0.1:{DEFAULT_PORTS['audit']}", description="audit service host:port")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="log level")
    shutdown_grace_seconds: float = Field(5.0, ge=0, description="time in-flight calls get after SIGTERM")
    max_workers: int = Field(16, ge=1, le=256, description="gRPC worker threads")
    rpc_timeout_seconds: float = Field(
        10.0, gt=0, description="deadline for calls to other services (less when the served caller has less time)"
    )
    max_concurrent_rpcs: int = Field(
        64, ge=1, le=100_000,
        description="calls in the server at once (running or waiting for a worker); one more is refused at once "
        "with RESOURCE_EXHAUSTED",
    )
    max_streams: int = Field(
        64, ge=1, le=10_000,
        description="long-lived streams (StreamEvents tails) open at once on this server; each has a worker "
        "thread of its own on top of max_workers (and a call slot on top of max_concurrent_rpcs), so open "
        "streams never take what unary calls need; one more is RESOURCE_EXHAUSTED",
    )
    max_streams_per_caller: int = Field(
        3, ge=1, le=10_000,
        description="long-lived streams one caller may hold open at once; one more is RESOURCE_EXHAUSTED",
    )
    # Spreading calls over replicas (carechain.client.balancing): peers' call policy, server connection ageing.
    peer_load_balancing: Literal["pick_first", "round_robin"] = Field(
        "pick_first", description="gRPC policy for calls to other services; round_robin: per call over every "
        "address a peer address resolves to (dns:/// headless Service, ipv4: list)")
    max_connection_age_seconds: float = Field(
        0.0, ge=0, description="close each client connection after this age so callers reconnect (0 = never)")
    max_connection_age_grace_seconds: float = Field(
        30.0, ge=0, description="time in-flight calls get when a connection reaches max_connection_age_seconds")

    # TLS for this service's listener and for its calls to peers (all PEM files).
    tls_cert_file: pathlib.Path | None = Field(None, description="server certificate chain; enables TLS when set")
    tls_key_file: pathlib.Path | None = Field(None, description="private key of tls_cert_file")
    tls_ca_file: pathlib.Path | None = Field(
        None, description="CA bundle to verify peers; when set, calls to other services use TLS"
    )
    tls_require_client_cert: bool = Field(
        False, description="mutual TLS: callers must present a certificate signed by tls_ca_file"
    )
    health_listen_address: str = Field(
        "", description="extra plaintext host:port serving only grpc.health.v1 (kubelet probes when TLS is on)"
    )
    metrics_listen_address: str = Field(
        "", description="host:port serving Prometheus metrics at /metrics over plain HTTP (empty: metrics off)"
    )

    # Where this service's Ed25519 signing key lives: a PEM file (embedded) or Vault Transit.
    signing_backend: Literal["file", "vault"] = Field("file", description="file: signing_key_file; vault: Transit")
    signing_key_name: str = Field("", description="Transit key name of the signing key (default: svc-<service>)")

    # Vault / OpenBao (keys, signing). Same HTTP API for both.
    vault_address: str = Field("http://127.0.0.1:8200", description="Vault/OpenBao URL")
    vault_auth_method: Literal["token", "approle", "kubernetes"] = Field("token", description="how to log in")
    vault_token: SecretStr = Field(SecretStr(""), description="token (token auth; development only)")
    vault_role_id: str = Field("", description="AppRole role id (approle auth)")
    vault_secret_id_file: pathlib.Path | None = Field(None, description="file holding the AppRole secret id")
    vault_kubernetes_role: str = Field("", description="Vault role for Kubernetes auth")
    vault_kubernetes_token_file: pathlib.Path = Field(
        pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="service account token presented to Vault's Kubernetes auth",
    )
    vault_kubernetes_mount: str = Field("kubernetes", description="mount path of the Kubernetes auth method")
    vault_approle_mount: str = Field("approle", description="mount path of the AppRole auth method")
    vault_transit_mount: str = Field("transit", description="mount path of the Transit engine")
    vault_kv_mount: str = Field("carechain", description="mount path of the KV v2 engine")
    vault_namespace: str = Field("", description="Vault Enterprise namespace, if any")
    vault_ca_cert: pathlib.Path | None = Field(None, description="CA bundle to verify Vault's TLS certificate")

    # etcd (ledger ordering, audit store).
    etcd_endpoints: str = Field("", description="comma-separated etcd client URLs, e.g. http://10.0.0.1:2379")
    etcd_prefix: str = Field("/carechain", description="key prefix for everything CareChain stores in etcd")
    etcd_ca_file: pathlib.Path | None = Field(
        None, description="CA bundle (PEM) to verify etcd's server certificates (https:// endpoints)"
    )
    etcd_cert_file: pathlib.Path | None = Field(
        None, description="client certificate (PEM) presented to etcd (etcd --client-cert-auth)"
    )
    etcd_key_file: pathlib.Path | None = Field(None, description="private key (PEM) of etcd_cert_file")
    etcd_username: str = Field(
        "", description="etcd user to authenticate as (etcd auth enabled); needs etcd_password or etcd_password_file"
    )
    etcd_password: SecretStr = Field(SecretStr(""), description="password of etcd_username (development only)")
    etcd_password_file: pathlib.Path | None = Field(
        None, description="file holding the password of etcd_username (e.g. a mounted Kubernetes Secret); "
        "read again at every re-authentication, so a rotated Secret is picked up"
    )


class IdentitySettings(ServiceSettings):
    """Identity and key management."""

    token_ttl_seconds: float = Field(300.0, gt=0, le=3600, description="lifetime of access tokens")
    challenge_ttl_seconds: float = Field(60.0, gt=0, le=600, description="lifetime of authentication challenges")
    key_backend: Literal["local", "vault"] = Field("local", description="local keyring or Vault/OpenBao Transit")
    check_decisions: bool = Field(
        True,
        description="before releasing a data key, ask the consent service whether the decision still holds "
        "(revocations after the decision was issued)",
    )
    smart_token_url: str = Field(
        "",
        description="URL of the SMART token endpoint (the FHIR gateway's /token) that client assertions must "
        "name as aud; empty: ExchangeClientAssertion is off",
    )


class StorageSettings(ServiceSettings):
    """Blob storage."""

    chunk_bytes: int = Field(256 * 1024, ge=1024, le=4 * 1024 * 1024, description="size of streamed chunks")
    blob_backend: Literal["local", "s3"] = Field("local", description="local directory or S3 (MinIO, AWS, ...)")
    s3_endpoint: str = Field("127.0.0.1:9000", description="S3 host:port")
    s3_access_key: SecretStr = Field(SecretStr(""), description="S3 access key")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key")
    s3_bucket: str = Field("carechain-blobs", description="bucket for ciphertext blobs (created if missing)")
    s3_region: str = Field("", description="S3 region, if the server needs one")
    s3_secure: bool = Field(False, description="use HTTPS")
    s3_ca_cert: pathlib.Path | None = Field(None, description="CA bundle to verify the S3 TLS certificate")
    s3_object_lock_days: int = Field(
        0, ge=0, le=36500, description="if > 0: bucket with Object Lock, COMPLIANCE retention of this many days"
    )
    s3_part_size: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024, description="multipart upload part size")


class LedgerSettings(ServiceSettings):
    """Ledger validator."""

    block_max_transactions: int = Field(100, ge=1, le=10_000, description="cut a block at this many transactions")
    block_max_wait_ms: int = Field(
        0, ge=0, le=10_000,
        description="linger this long after the first waiting transaction before cutting (0: cut as soon as "
        "transactions wait)",
    )
    orderer: Literal["inprocess", "etcd"] = Field("inprocess", description="transaction ordering: in-process or etcd")
    validator_id: str = Field(
        "", description="this validator's principal id, e.g. validator-north-clinic (default: svc-ledger); "
        "its public key must be <trust_dir>/<id>.pub; it signs with signing_key_file or the Transit key "
        "signing_key_name (default: the id)"
    )
    validators: str = Field(
        "", description="comma-separated ids of every validator whose signatures count (default: this one alone); "
        "more than one needs orderer=etcd"
    )
    quorum: int = Field(0, ge=0, description="signatures of the same header that make a block final (0 = majority)")
    peer_addresses: str = Field(
        "", description="comma-separated host:port of the other validators (cross-checks, `carechain ledger verify`)"
    )
    finality_poll_ms: int = Field(10, ge=1, le=10_000, description="how often validator signatures are read")
    tx_max_skew_ms: int = Field(
        120_000, ge=1_000, le=3_600_000,
        description="a transaction whose created_at_ms is further than this from its block (ordering) time is "
        "invalid; every validator of a network must use the same value",
    )


class LedgerMetadataKeySettings(ServiceSettings):
    """The ledger metadata key (records and consent only; docs/security.md, "Ledger privacy")."""

    ledger_metadata_key_backend: Literal["local", "vault"] = Field(
        "local", description="local: a keyring directory shared by records and consent; vault: a Transit key"
    )
    ledger_metadata_keyring_dir: pathlib.Path = Field(
        pathlib.Path("var/keys/ledger-metadata"),
        description="embedded keyring holding the ledger metadata key (records and consent only, never a validator)",
    )
    ledger_metadata_key_name: str = Field(
        "ledger-metadata", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="name of the ledger metadata key in the keyring or the Transit mount",
    )


class ConsentSettings(LedgerMetadataKeySettings):
    """Consent contracts."""

    ledger_validators: str = Field(
        "", description="comma-separated ids of the validators whose quorum certificates this service accepts "
        "on ledger blocks (default: svc-ledger alone); their keys come from trust_dir, never from the ledger"
    )
    ledger_quorum: int = Field(0, ge=0, description="signatures a block needs before it is applied (0 = majority)")
    tx_max_skew_ms: int = Field(
        120_000, ge=1_000, le=3_600_000,
        description="the validators' tx_max_skew_ms (consent re-runs their contract rules on what it reads)",
    )

    decision_token_ttl_seconds: float = Field(30.0, gt=0, le=300, description="lifetime of decision tokens")
    break_glass_specialties: str = Field(
        "emergency-medicine",
        description="comma-separated practitioner specialties that may break the glass (purpose ETREAT); "
        "empty disables break-glass",
    )
    break_glass_window_seconds: float = Field(
        4 * 3600.0, gt=0, le=7 * 24 * 3600,
        description="how long a break-glass window lasts from its first use by an actor for a patient",
    )

    @property
    def break_glass_specialty_set(self) -> frozenset[str]:
        """The configured break-glass specialties, normalised (lower case, trimmed)."""
        return frozenset(s.strip().casefold() for s in self.break_glass_specialties.split(",") if s.strip())


class AuditSettings(ServiceSettings):
    """Audit trail."""

    audit_store: Literal["sqlite", "etcd"] = Field("sqlite", description="where audit events are stored")
    batch_max_events: int = Field(
        1000, ge=1, le=100_000,
        description="seal a batch (and anchor its Merkle root on the ledger) at this many events",
    )
    batch_max_seconds: float = Field(
        60.0, ge=0, le=24 * 3600, description="seal unsealed events into a batch once they have waited this long"
    )
    anchor_batches: bool = Field(
        True, description="anchor each sealed batch's root on the ledger (AnchorAuditBatch signed by svc-audit)"
    )
    anchor_deadline_seconds: float = Field(
        900.0, gt=0, le=7 * 24 * 3600,
        description="a sealed batch not anchored this long after sealing fails `carechain audit verify --ledger`",
    )
    anchor_backoff_max_seconds: float = Field(
        300.0, ge=1, le=24 * 3600, description="longest pause between anchor attempts after the ledger rejected one"
    )
    record_checkpoints: bool = Field(
        True, description="publish the ledger's co-signed checkpoints in the audit trail (needs anchor_batches)"
    )
    checkpoint_interval_seconds: float = Field(
        60.0, ge=0, le=24 * 3600, description="record a new ledger checkpoint in the audit trail at most this often"
    )
    validators: str = Field(
        "", description="comma-separated ids of the ledger validators whose quorum certificates count "
        "(as the ledger's CARECHAIN_VALIDATORS; default svc-ledger alone)"
    )
    quorum: int = Field(0, ge=0, description="the ledger's quorum (as CARECHAIN_QUORUM; 0 = majority)")


class RecordsSettings(LedgerMetadataKeySettings):
    """Records gateway."""

    # Each call mostly waits on five other services: a worker per concurrent client keeps calls from
    # queueing behind those waits, and lets concurrent reads share batched calls (DecideMany).
    max_workers: int = Field(64, ge=1, le=256, description="gRPC worker threads")
    max_record_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest FHIR resource accepted")
    reconcile_grace_seconds: float = Field(
        3600.0, ge=1, le=30 * 24 * 3600,
        description="the reconciler touches only what crashed writes left behind longer ago than this; "
        "a write not committed within half of it is abandoned",
    )
    reconcile_interval_seconds: float = Field(
        600.0, ge=0, le=24 * 3600, description="run the reconciler in the background this often (0: only on request)"
    )
    # Erasure (EraseRecords, docs/security.md "Erasure"): who besides the patient may erase, and what is held.
    operator_erasure: bool = Field(
        False, description="the network operator may erase a patient's records (e.g. on a court order); "
        "off by default: only the patient and their active delegates erase"
    )
    retention_hold_days: int = Field(
        0, ge=0, le=100 * 365,
        description="refuse to erase a record registered fewer than this many days ago (0: no hold)"
    )
    retention_hold_rules: dict[str, int] = Field(
        default_factory=dict,
        description='per FHIR resource type, days after registration a record is held, as JSON, e.g. '
        '{"Immunization": 3650}; replaces retention_hold_days for that type',
    )


#: Port of the FHIR REST gateway on a local network with the documented ports (after the six gRPC services).
FHIR_DEFAULT_PORT = 7106


class FhirSettings(ServiceSettings):
    """FHIR R4 REST gateway (HTTP, in front of the records gateway; docs/fhir.md).

    listen_address is its HTTP host:port, HTTPS with https_cert_file/https_key_file (else plain HTTP, e.g.
    behind an Ingress that terminates TLS); tls_ca_file, tls_cert_file and tls_key_file are the (mutual) TLS
    of its calls to records, as for the services. It signs nothing and holds no privilege: every call to
    records carries the REST caller's bearer token, which it verifies first against the token issuer's key in
    trust_dir (CARECHAIN_TRUST_DIR).
    """

    listen_address: str = Field(f"127.0.0.1:{FHIR_DEFAULT_PORT}", description="host:port to serve HTTP on")
    records_address: str = Field(f"127.0.0.1:{DEFAULT_PORTS['records']}", description="records service host:port")
    public_base_url: str = Field(
        "", description="the FHIR base URL clients use (Location headers, CapabilityStatement.implementation.url); "
        "empty: the URL of each request")
    https_cert_file: pathlib.Path | None = Field(None, description="certificate chain to serve HTTPS with")
    https_key_file: pathlib.Path | None = Field(None, description="private key of https_cert_file")
    https_require_client_cert: bool = Field(
        False, description="HTTPS clients must present a certificate signed by tls_ca_file")
    max_resource_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="largest resource a create accepts (413 beyond; records' own limit)")
    max_bundle_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="largest batch or transaction Bundle accepted (413 beyond)")
    bundle_timeout_seconds: float = Field(
        300.0, gt=0, description="deadline of one batch or transaction import (its entries are written as records)")
    smart_token_url: str = Field(
        "", description="public URL of the SMART token endpoint (identity's CARECHAIN_SMART_TOKEN_URL, what client "
        "assertions name as aud); empty: <public_base_url>/token")


SETTINGS_BY_SERVICE: dict[str, type[ServiceSettings]] = {
    "identity": IdentitySettings,
    "storage": StorageSettings,
    "ledger": LedgerSettings,
    "consent": ConsentSettings,
    "audit": AuditSettings,
    "records": RecordsSettings,
    "fhir": FhirSettings,  # the FHIR REST gateway (HTTP; `carechain serve fhir`)
}
