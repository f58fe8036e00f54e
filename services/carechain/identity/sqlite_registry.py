"""The embedded identity registry: one SQLite file (``identity.db``) under the service's data directory.

:class:`Registry` is the embedded :class:`carechain.identity.registry.IdentityStore`; the pseudonym
secret (``pseudonym.key``, 0600) lives next to it and never leaves the directory.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3

from carechain.core.crypto import write_private_file
from carechain.core.errors import AlreadyExists, FailedPrecondition
from carechain.core.files import private_dir
from carechain.identity.registry import PrincipalRecord, StoredDataKey, patient_pseudonym
from carechain.runtime.sqlite import Database

REGISTRY_DB_FILE = "identity.db"
PSEUDONYM_SECRET_FILE = "pseudonym.key"  # noqa: S105 - a file name, not a secret
PSEUDONYM_SECRET_BYTES = 32


_SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
    principal_id TEXT PRIMARY KEY,
    kind INTEGER NOT NULL,
    display_name TEXT NOT NULL,
    public_key BLOB NOT NULL,
    organization_id TEXT NOT NULL,
    specialty TEXT NOT NULL,
    fhir_patient_id TEXT NOT NULL,
    ledger_log_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS challenges (
    challenge BLOB PRIMARY KEY,
    principal_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS data_keys (
    record_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    key_version INTEGER NOT NULL,
    wrapped TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS data_keys_by_patient ON data_keys (patient_id);
CREATE TABLE IF NOT EXISTS used_decision_tokens (
    jti TEXT PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS client_keys (
    client_id TEXT PRIMARY KEY,
    jwks TEXT NOT NULL
)
"""


class Registry:
    """Durable identity state of one identity service in SQLite (the embedded :class:`IdentityStore`)."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        private_dir(data_dir)
        self._pseudonym_secret = _load_or_create_secret(data_dir / PSEUDONYM_SECRET_FILE)
        self._db = Database(data_dir / REGISTRY_DB_FILE, _SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def patient_pseudonym(self, organization_id: str, fhir_patient_id: str) -> str:
        """The pseudonym (principal id) of the patient fhir_patient_id at organization_id."""
        return patient_pseudonym(self._pseudonym_secret, organization_id, fhir_patient_id)

    # --- principals ------------------------------------------------------------

    def add_principal(self, principal: PrincipalRecord) -> None:
        """Store a principal; AlreadyExists if its id is taken."""
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO principals VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        principal.principal_id,
                        principal.kind,
                        principal.display_name,
                        principal.public_key,
                        principal.organization_id,
                        principal.specialty,
                        principal.fhir_patient_id,
                        principal.ledger_log_index,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"principal {principal.principal_id} is already registered") from exc

    def principal(self, principal_id: str) -> PrincipalRecord | None:
        """A registered principal, or None."""
        rows = self._db.query("SELECT * FROM principals WHERE principal_id = ?", (principal_id,))
        if not rows:
            return None
        row = rows[0]
        return PrincipalRecord(
            principal_id=row["principal_id"],
            kind=int(row["kind"]),
            display_name=row["display_name"],
            public_key=bytes(row["public_key"]),
            organization_id=row["organization_id"],
            specialty=row["specialty"],
            fhir_patient_id=row["fhir_patient_id"],
            ledger_log_index=int(row["ledger_log_index"]),
        )

    # --- proof-of-possession challenges ---------------------------------------

    def add_challenge(self, principal_id: str, challenge: bytes, expires_at_ms: int, now_ms: int) -> None:
        """Remember a one-time challenge for principal_id (and forget expired ones)."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM challenges WHERE expires_at_ms < ?", (now_ms,))
            conn.execute("INSERT INTO challenges VALUES (?, ?, ?)", (challenge, principal_id, expires_at_ms))

    def take_challenge(self, principal_id: str, challenge: bytes, now_ms: int) -> bool:
        """Consume a challenge; True only if it was issued to principal_id and has not expired."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "DELETE FROM challenges WHERE challenge = ? RETURNING principal_id, expires_at_ms", (challenge,)
            ).fetchone()
        return row is not None and row["principal_id"] == principal_id and now_ms <= int(row["expires_at_ms"])

    # --- wrapped data keys -----------------------------------------------------

    def add_data_key(self, key: StoredDataKey) -> None:
        """Store a record's wrapped data key; AlreadyExists if the record has one."""
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO data_keys VALUES (?, ?, ?, ?, ?)",
                    (key.record_id, key.patient_id, key.key_name, key.key_version, key.wrapped),
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"record {key.record_id} already has a data key") from exc

    def add_data_keys(self, keys: list[StoredDataKey]) -> list[bool]:
        """Store wrapped data keys in one transaction (one fsync); False for a record that had one already."""
        if not keys:
            return []
        with self._db.transaction() as conn:
            return [conn.execute(
                "INSERT OR IGNORE INTO data_keys VALUES (?, ?, ?, ?, ?)",
                (key.record_id, key.patient_id, key.key_name, key.key_version, key.wrapped),
            ).rowcount == 1 for key in keys]

    def data_key(self, record_id: str) -> StoredDataKey | None:
        """A record's wrapped data key, or None."""
        rows = self._db.query("SELECT * FROM data_keys WHERE record_id = ?", (record_id,))
        return _data_key(rows[0]) if rows else None

    def data_keys(self, record_ids: list[str]) -> dict[str, StoredDataKey]:
        """The wrapped data keys of those records that have one, by record id (one query per 500)."""
        found: dict[str, StoredDataKey] = {}
        unique = sorted(set(record_ids))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            rows = self._db.query(
                f"SELECT * FROM data_keys WHERE record_id IN ({','.join('?' * len(chunk))})", tuple(chunk))
            found.update((row["record_id"], _data_key(row)) for row in rows)
        return found

    def patient_data_keys(self, patient_id: str) -> list[StoredDataKey]:
        """Every wrapped data key of a patient."""
        rows = self._db.query("SELECT * FROM data_keys WHERE patient_id = ? ORDER BY record_id", (patient_id,))
        return [_data_key(row) for row in rows]

    def replace_wrapped_keys(self, keys: list[StoredDataKey]) -> None:
        """Store re-wrapped data keys, all or none."""
        with self._db.transaction() as conn:
            for key in keys:
                updated = conn.execute(
                    "UPDATE data_keys SET key_name = ?, key_version = ?, wrapped = ? "
                    "WHERE record_id = ? AND patient_id = ?",
                    (key.key_name, key.key_version, key.wrapped, key.record_id, key.patient_id),
                ).rowcount
                if updated != 1:
                    raise FailedPrecondition(f"record {key.record_id} has no data key of patient {key.patient_id}")

    def remove_data_key(self, record_id: str, patient_id: str) -> bool:
        """Delete a record's wrapped data key if it belongs to patient_id; False if there is none."""
        with self._db.transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM data_keys WHERE record_id = ? AND patient_id = ?", (record_id, patient_id)
            ).rowcount
        return deleted == 1

    # --- single-use decision tokens -------------------------------------------

    def use_decision_token(self, jti: str, expires_at_ms: int, now_ms: int) -> bool:
        """Mark a decision token used; False if it was used before.

        A jti is remembered until the token expires; after that the token itself
        is refused as expired, so the row can go.
        """
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM used_decision_tokens WHERE expires_at_ms < ?", (now_ms,))
            inserted = conn.execute(
                "INSERT OR IGNORE INTO used_decision_tokens VALUES (?, ?)", (jti, expires_at_ms)
            ).rowcount
        return inserted == 1

    def use_decision_tokens(self, tokens: list[tuple[str, int]], now_ms: int) -> list[bool]:
        """use_decision_token for each (jti, expires_at_ms), in one transaction; False for a jti used before."""
        if not tokens:
            return []
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM used_decision_tokens WHERE expires_at_ms < ?", (now_ms,))
            return [conn.execute(
                "INSERT OR IGNORE INTO used_decision_tokens VALUES (?, ?)", (jti, expires_at_ms)
            ).rowcount == 1 for jti, expires_at_ms in tokens]

    # --- SMART client keys -------------------------------------------------------

    def set_client_keys(self, client_id: str, jwks: str) -> None:
        """Store client_id's JWKS, replacing earlier keys."""
        with self._db.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO client_keys VALUES (?, ?)", (client_id, jwks))

    def client_keys(self, client_id: str) -> str | None:
        """client_id's JWKS, or None."""
        rows = self._db.query("SELECT jwks FROM client_keys WHERE client_id = ?", (client_id,))
        return str(rows[0]["jwks"]) if rows else None


# Record ids per "IN (...)" query: well below SQLite's limit on bound parameters.
_IN_CHUNK = 500


def _data_key(row: sqlite3.Row) -> StoredDataKey:
    return StoredDataKey(row["record_id"], row["patient_id"], row["key_name"], int(row["key_version"]), row["wrapped"])


def _load_or_create_secret(path: pathlib.Path) -> bytes:
    if not path.exists():
        write_private_file(path, os.urandom(PSEUDONYM_SECRET_BYTES))
    secret = path.read_bytes()
    if len(secret) != PSEUDONYM_SECRET_BYTES:
        raise FailedPrecondition(f"pseudonym secret {path} must be {PSEUDONYM_SECRET_BYTES} bytes")
    return secret
