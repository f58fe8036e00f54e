"""Key-encryption keys and envelope encryption with Vault Transit semantics.

:class:`KeyManager` is the seam: the embedded :class:`LocalKeyring` fills it
today, a Vault/OpenBao Transit client (hvac) fills it in production. Both
behave the same way:

- a named key (one per patient) has numbered versions; ``rotate`` adds one;
- ``generate_data_key`` returns a fresh 32-byte data key and its wrapped form
  ``vault:v<N>:<base64>`` (Transit ``datakey/plaintext``), bound to a context;
  ``generate_data_keys`` makes many under one key in one step (Transit
  ``encrypt`` with ``batch_input``);
- ``decrypt_data_key`` unwraps, refusing versions below the key's
  ``min_decryption_version``; ``decrypt_data_keys`` unwraps many under one key
  in one step, with an error per item; ``rewrap`` re-encrypts under the latest
  version without exposing the plaintext to the caller;
- ``delete_key`` destroys every version: wrapped keys become undecryptable
  (crypto-shredding).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import pathlib
import re
import sqlite3
import time
from typing import Protocol

from carechain.core.crypto import AES_KEY_BYTES, new_aes_key, open_sealed, seal, write_private_file
from carechain.core.errors import CareChainError, FailedPrecondition, IntegrityError, InvalidArgument, NotFound
from carechain.core.files import private_dir
from carechain.runtime.sqlite import Database

WRAPPED_PREFIX = "vault:v"
DATA_KEY_CONTEXT = b"carechain-datakey/v1|"
KEY_VERSION_CONTEXT = b"carechain-kek/v1|"
MASTER_KEY_FILE = "master.key"
KEYRING_DB_FILE = "keyring.db"

_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_WRAPPED = re.compile(r"^vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]+={0,2})$")


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """Public facts about a named key (Transit ``GET /transit/keys/:name``)."""

    name: str
    latest_version: int
    min_decryption_version: int
    key_type: str = "aes256-gcm96"
    exportable: bool = False
    deletion_allowed: bool = True


class KeyManager(Protocol):
    """Named key-encryption keys that never leave the key manager (Vault Transit semantics)."""

    def create_key(self, name: str) -> KeyInfo:
        """Create an aes256-gcm96, non-exportable, deletable key; a no-op if it exists."""
        ...

    def generate_data_key(self, name: str, context: bytes) -> tuple[bytes, str]:
        """A fresh 32-byte data key and its wrapped form under the latest version, bound to context."""
        ...

    def generate_data_keys(self, name: str, contexts: list[bytes]) -> list[tuple[bytes, str]]:
        """generate_data_key for each context, in order, in one step (one Vault request)."""
        ...

    def decrypt_data_key(self, name: str, wrapped: str, context: bytes) -> bytes:
        """Unwrap a data key; IntegrityError if it or the context was changed."""
        ...

    def decrypt_data_keys(self, name: str, items: list[tuple[str, bytes]]) -> list[bytes | CareChainError]:
        """decrypt_data_key for each (wrapped, context) in one step: a plaintext or that item's error, in order.

        An item's error is what decrypt_data_key would raise for it alone (IntegrityError, FailedPrecondition,
        InvalidArgument); a missing key or an unreachable backend raises for the whole call.
        """
        ...

    def rewrap(self, name: str, wrapped: str, context: bytes) -> str:
        """Re-wrap a data key under the latest version of the key."""
        ...

    def wrap_data_keys(self, name: str, items: list[tuple[bytes, bytes]]) -> list[str]:
        """Wrap existing 32-byte data keys, each (plaintext, context), under the latest version of the key,
        in order, in one step; NotFound if there is no such key. Moves data keys from one key-encryption key
        to another (a patient identity link), together with decrypt_data_keys."""
        ...

    def rewrap_many(self, name: str, items: list[tuple[str, bytes]]) -> list[str]:
        """rewrap for each (wrapped, context), in order, in few steps (Transit rewrap with batch_input);
        all or nothing: the first item that does not unwrap raises (IntegrityError, FailedPrecondition)."""
        ...

    def rotate(self, name: str) -> int:
        """Add a new key version; returns it."""
        ...

    def key_info(self, name: str) -> KeyInfo:
        """Versions of a key; NotFound if there is no such key."""
        ...

    def set_min_decryption_version(self, name: str, version: int) -> KeyInfo:
        """Refuse to unwrap data keys wrapped under versions below version."""
        ...

    def delete_key(self, name: str) -> None:
        """Destroy every version of the key (crypto-shred); NotFound if there is no such key."""
        ...


def wrapped_key_version(wrapped: str) -> int:
    """The key version a ``vault:v<N>:...`` wrapped key was made with."""
    return _parse_wrapped(wrapped)[0]


def _parse_wrapped(wrapped: str) -> tuple[int, bytes]:
    match = _WRAPPED.match(wrapped)
    if match is None:
        raise InvalidArgument("wrapped_key", "not a vault:v<N>:<base64> wrapped key")
    try:
        return int(match.group(1)), base64.b64decode(match.group(2), validate=True)
    except binascii.Error as exc:
        raise InvalidArgument("wrapped_key", "not a vault:v<N>:<base64> wrapped key") from exc


def _data_key_associated_data(name: str, context: bytes) -> bytes:
    return DATA_KEY_CONTEXT + name.encode() + b"|" + context


def _check_name(name: str) -> None:
    if not _KEY_NAME.match(name):
        raise InvalidArgument("key_name", "must be 1-128 characters of letters, digits, '_', '.', '-'")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    latest_version INTEGER NOT NULL,
    min_decryption_version INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS key_versions (
    name TEXT NOT NULL REFERENCES keys(name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    sealed_material BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
"""


class LocalKeyring:
    """Embedded key manager: key versions in SQLite, sealed under a master key file.

    ``<directory>/master.key`` holds 32 random bytes (mode 0600); every key
    version is stored AES-256-GCM-sealed under it with associated data binding
    the key name and version, so rows cannot be swapped between keys or versions.
    """

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        private_dir(directory)
        self._master_key = self._load_or_create_master_key(directory / MASTER_KEY_FILE)
        self._db = Database(directory / KEYRING_DB_FILE, _SCHEMA, secure_delete=True)

    @staticmethod
    def _load_or_create_master_key(path: pathlib.Path) -> bytes:
        if not path.exists():
            write_private_file(path, os.urandom(AES_KEY_BYTES))
        master = path.read_bytes()
        if len(master) != AES_KEY_BYTES:
            raise FailedPrecondition(f"keyring master key {path} must be {AES_KEY_BYTES} bytes")
        return master

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # --- key lifecycle ---------------------------------------------------------

    def create_key(self, name: str) -> KeyInfo:
        _check_name(name)
        now = _now_ms()
        with self._db.transaction() as conn:
            exists = conn.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone()
            if not exists:
                conn.execute("INSERT INTO keys VALUES (?, 1, 1, ?)", (name, now))
                self._insert_version(conn, name, 1, now)
        return self.key_info(name)

    def rotate(self, name: str) -> int:
        _check_name(name)
        with self._db.transaction() as conn:
            row = conn.execute("SELECT latest_version FROM keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise _no_such_key(name)
            version = int(row["latest_version"]) + 1
            conn.execute("UPDATE keys SET latest_version = ? WHERE name = ?", (version, name))
            self._insert_version(conn, name, version, _now_ms())
        return version

    def key_info(self, name: str) -> KeyInfo:
        _check_name(name)
        rows = self._db.query("SELECT latest_version, min_decryption_version FROM keys WHERE name = ?", (name,))
        if not rows:
            raise _no_such_key(name)
        return KeyInfo(name, int(rows[0]["latest_version"]), int(rows[0]["min_decryption_version"]))

    def set_min_decryption_version(self, name: str, version: int) -> KeyInfo:
        info = self.key_info(name)
        if not 1 <= version <= info.latest_version:
            raise InvalidArgument("min_decryption_version", f"must be between 1 and {info.latest_version}")
        with self._db.transaction() as conn:
            conn.execute("UPDATE keys SET min_decryption_version = ? WHERE name = ?", (version, name))
        return self.key_info(name)

    def delete_key(self, name: str) -> None:
        _check_name(name)
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM keys WHERE name = ?", (name,)).rowcount
            conn.execute("DELETE FROM key_versions WHERE name = ?", (name,))
        if not deleted:
            raise _no_such_key(name)
        # secure_delete zeroed the rows; the checkpoint also drops the old pages kept in the WAL.
        self._db.checkpoint()

    # --- envelope encryption ---------------------------------------------------

    def generate_data_key(self, name: str, context: bytes) -> tuple[bytes, str]:
        return self.generate_data_keys(name, [context])[0]

    def generate_data_keys(self, name: str, contexts: list[bytes]) -> list[tuple[bytes, str]]:
        plaintexts = [new_aes_key() for _ in contexts]
        return list(zip(plaintexts, self.wrap_data_keys(name, list(zip(plaintexts, contexts, strict=True))),
                        strict=True))

    def wrap_data_keys(self, name: str, items: list[tuple[bytes, bytes]]) -> list[str]:
        # One key lookup and one unseal of the key version for the whole batch.
        version = self.key_info(name).latest_version
        kek = self._key_version(name, version)
        return [f"{WRAPPED_PREFIX}{version}:"
                f"{base64.b64encode(seal(kek, plaintext, _data_key_associated_data(name, context))).decode()}"
                for plaintext, context in items]

    def decrypt_data_key(self, name: str, wrapped: str, context: bytes) -> bytes:
        _parse_wrapped(wrapped)  # InvalidArgument before NotFound, as before batching
        result = self.decrypt_data_keys(name, [(wrapped, context)])[0]
        if isinstance(result, CareChainError):
            raise result
        return result

    def decrypt_data_keys(self, name: str, items: list[tuple[str, bytes]]) -> list[bytes | CareChainError]:
        info = self.key_info(name)  # NotFound for the whole call
        keks: dict[int, bytes | CareChainError] = {}
        results: list[bytes | CareChainError] = []
        for wrapped, context in items:
            try:
                version, sealed = _parse_wrapped(wrapped)
                if version not in keks:  # each key version unsealed once per batch
                    try:
                        keks[version] = self._key_version(name, version, info)
                    except (FailedPrecondition, IntegrityError) as exc:
                        keks[version] = exc
                kek = keks[version]
                if isinstance(kek, CareChainError):
                    raise kek
                plaintext = open_sealed(kek, sealed, _data_key_associated_data(name, context))
                if len(plaintext) != AES_KEY_BYTES:
                    raise IntegrityError("unwrapped data key has the wrong length")
                results.append(plaintext)
            except (InvalidArgument, FailedPrecondition, IntegrityError) as exc:
                results.append(exc)
        return results

    def rewrap(self, name: str, wrapped: str, context: bytes) -> str:
        return self._wrap(name, self.decrypt_data_key(name, wrapped, context), context)

    def rewrap_many(self, name: str, items: list[tuple[str, bytes]]) -> list[str]:
        plaintexts = self.decrypt_data_keys(name, items)
        for plaintext in plaintexts:
            if isinstance(plaintext, CareChainError):
                raise plaintext
        return self.wrap_data_keys(name, [(p, c) for p, (_, c) in zip(plaintexts, items, strict=True)])  # type: ignore[misc]

    def _wrap(self, name: str, plaintext: bytes, context: bytes) -> str:
        version = self.key_info(name).latest_version
        sealed = seal(self._key_version(name, version), plaintext, _data_key_associated_data(name, context))
        return f"{WRAPPED_PREFIX}{version}:{base64.b64encode(sealed).decode()}"

    # --- key material ----------------------------------------------------------

    def _insert_version(self, conn: sqlite3.Connection, name: str, version: int, now_ms: int) -> None:
        sealed = seal(self._master_key, new_aes_key(), _version_associated_data(name, version))
        conn.execute("INSERT INTO key_versions VALUES (?, ?, ?, ?)", (name, version, sealed, now_ms))

    def _key_version(self, name: str, version: int, info: KeyInfo | None = None) -> bytes:
        info = info or self.key_info(name)
        if version < info.min_decryption_version:
            raise FailedPrecondition(
                f"key {name} version {version} is below min_decryption_version {info.min_decryption_version}"
            )
        rows = self._db.query(
            "SELECT sealed_material FROM key_versions WHERE name = ? AND version = ?", (name, version)
        )
        if not rows:
            raise IntegrityError(f"wrapped key names version {version} of key {name}, which does not exist")
        return open_sealed(self._master_key, bytes(rows[0]["sealed_material"]), _version_associated_data(name, version))


def _version_associated_data(name: str, version: int) -> bytes:
    return KEY_VERSION_CONTEXT + name.encode() + b"|" + str(version).encode()


def _no_such_key(name: str) -> NotFound:
    return NotFound(f"key {name} does not exist (never created, or deleted)")


def _now_ms() -> int:
    return int(time.time() * 1000)
