"""The identity registry seam: principals, challenges, wrapped data keys, used decision tokens, SMART client keys.

:class:`IdentityStore` is the seam, with the types it stores. Its implementations are named
``<backend>_registry``: :class:`carechain.identity.sqlite_registry.Registry` (one SQLite file under the
service's data directory, the embedded default) and
:class:`carechain.identity.vault_registry.VaultRegistry` (Vault KV v2 and Transit, for identity running
as a stateless Deployment). Only the registry holds patients' display names and FHIR ids; the ledger
sees their pseudonyms, which are keyed hashes (HMAC-SHA256) under a secret that never leaves the store's
directory (or Vault), so nobody can recompute a pseudonym from a FHIR id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import uuid
from typing import Protocol

PATIENT_ID_PREFIX = "psn-"
ORGANIZATION_ID_PREFIX = "org-"
PRACTITIONER_ID_PREFIX = "prac-"


@dataclasses.dataclass(frozen=True)
class PrincipalRecord:
    """A registered organisation, practitioner or patient."""

    principal_id: str
    kind: int  # common_pb2.PrincipalKind
    display_name: str
    public_key: bytes
    organization_id: str = ""
    specialty: str = ""
    fhir_patient_id: str = ""
    ledger_log_index: int = 0


@dataclasses.dataclass(frozen=True)
class StoredDataKey:
    """A record's data key, wrapped under its patient's key-encryption key."""

    record_id: str
    patient_id: str
    key_name: str
    key_version: int
    wrapped: str


def new_organization_id() -> str:
    """A fresh organisation id."""
    return ORGANIZATION_ID_PREFIX + uuid.uuid4().hex


def new_practitioner_id() -> str:
    """A fresh practitioner id."""
    return PRACTITIONER_ID_PREFIX + uuid.uuid4().hex


def patient_pseudonym(secret: bytes, organization_id: str, fhir_patient_id: str) -> str:
    """A patient's network-wide pseudonym: keyed hash of their organisation and FHIR id."""
    digest = hmac.new(secret, f"{organization_id}|{fhir_patient_id}".encode(), hashlib.sha256).hexdigest()
    return PATIENT_ID_PREFIX + digest[:32]


class IdentityStore(Protocol):
    """Durable identity state; every implementation passes tests/contract/test_identity_store_contract.py."""

    def close(self) -> None:
        """Release the store's resources."""
        ...

    def patient_pseudonym(self, organization_id: str, fhir_patient_id: str) -> str:
        """The pseudonym (principal id) of the patient fhir_patient_id at organization_id; stable forever."""
        ...

    def add_principal(self, principal: PrincipalRecord) -> None:
        """Store a principal; AlreadyExists if its id is taken."""
        ...

    def principal(self, principal_id: str) -> PrincipalRecord | None:
        """A registered principal, or None."""
        ...

    def add_challenge(self, principal_id: str, challenge: bytes, expires_at_ms: int, now_ms: int) -> None:
        """Remember a one-time challenge for principal_id (and forget expired ones)."""
        ...

    def take_challenge(self, principal_id: str, challenge: bytes, now_ms: int) -> bool:
        """Consume a challenge; True only if it was issued to principal_id and has not expired."""
        ...

    def add_data_key(self, key: StoredDataKey) -> None:
        """Store a record's wrapped data key; AlreadyExists if the record has one."""
        ...

    def add_data_keys(self, keys: list[StoredDataKey]) -> list[bool]:
        """Store several records' wrapped data keys (one transaction where the store has them); per key,
        False if its record had one already (that key is not stored, the others are)."""
        ...

    def data_key(self, record_id: str) -> StoredDataKey | None:
        """A record's wrapped data key, or None."""
        ...

    def data_keys(self, record_ids: list[str]) -> dict[str, StoredDataKey]:
        """The wrapped data keys of those of record_ids that have one, by record id."""
        ...

    def patient_data_keys(self, patient_id: str) -> list[StoredDataKey]:
        """Every wrapped data key of a patient, ordered by record id."""
        ...

    def replace_wrapped_keys(self, keys: list[StoredDataKey]) -> None:
        """Store re-wrapped data keys (key name, version and wrapped form; the patient never changes);
        FailedPrecondition (and nothing stored) if one has no stored key of its patient."""
        ...

    def remove_data_key(self, record_id: str, patient_id: str) -> bool:
        """Delete a record's wrapped data key if it belongs to patient_id; False if there is none."""
        ...

    def use_decision_token(self, jti: str, expires_at_ms: int, now_ms: int) -> bool:
        """Mark a decision token used; False if it was used before and has not expired."""
        ...

    def use_decision_tokens(self, tokens: list[tuple[str, int]], now_ms: int) -> list[bool]:
        """use_decision_token for each (jti, expires_at_ms) (one transaction where the store has them)."""
        ...

    def set_client_keys(self, client_id: str, jwks: str) -> None:
        """Store the SMART client keys (a validated public JWKS, as JSON) of client_id, replacing earlier ones."""
        ...

    def client_keys(self, client_id: str) -> str | None:
        """The SMART client keys (JWKS JSON) registered for client_id, or None."""
        ...
