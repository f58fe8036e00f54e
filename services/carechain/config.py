"""Typed service configuration from environment variables.

Every setting is read from ``CARECHAIN_<FIELD>`` (upper case), e.g.
``CARECHAIN_LISTEN_ADDRESS`` or ``CARECHAIN_LEDGER_ADDRESS``. Tracing is set by
the standard ``OTEL_*`` variables instead (see :mod:`carechain.telemetry`).
Invalid values stop the service at start-up with a message naming the variable.
"""

from __future__ import annotations

import pathlib

from pydantic import Field
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
    rpc_timeout_seconds: float = Field(10.0, gt=0, description="deadline for calls to other services")


class IdentitySettings(ServiceSettings):
    """Identity and key management."""

    token_ttl_seconds: float = Field(300.0, gt=0, le=3600, description="lifetime of access tokens")
    challenge_ttl_seconds: float = Field(60.0, gt=0, le=600, description="lifetime of authentication challenges")


class StorageSettings(ServiceSettings):
    """Blob storage."""

    chunk_bytes: int = Field(256 * 1024, ge=1024, le=4 * 1024 * 1024, description="size of streamed chunks")


class LedgerSettings(ServiceSettings):
    """Ledger validator."""

    block_max_transactions: int = Field(100, ge=1, le=10_000, description="cut a block at this many transactions")
    block_max_wait_ms: int = Field(20, ge=0, le=10_000, description="cut a block after this long")


class ConsentSettings(ServiceSettings):
    """Consent contracts."""

    decision_token_ttl_seconds: float = Field(30.0, gt=0, le=300, description="lifetime of decision tokens")


class AuditSettings(ServiceSettings):
    """Audit trail."""


class RecordsSettings(ServiceSettings):
    """Records gateway."""

    max_record_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest FHIR resource accepted")


SETTINGS_BY_SERVICE: dict[str, type[ServiceSettings]] = {
    "identity": IdentitySettings,
    "storage": StorageSettings,
    "ledger": LedgerSettings,
    "consent": ConsentSettings,
    "audit": AuditSettings,
    "records": RecordsSettings,
}
