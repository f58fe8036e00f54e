"""The identity registry on Vault / OpenBao: KV v2 for state, Transit HMAC for pseudonyms.

In production identity runs as a stateless Deployment, so with
``key_backend=vault`` its registry lives in Vault next to the keys. Layout
under ``<kv_mount>/<prefix>/`` (prefix ``identity``):

=====================================  =============================================
``principals/<principal_id>``          principal metadata (name, key, FHIR id, ...)
``datakeys/<record_id>``               a record's wrapped data key and its patient
``patients/<patient_id>/datakeys/<r>`` index: the records of a patient (for rotation)
``challenges/<hex challenge>``         one-time proof-of-possession challenges
``used-decision-tokens/<sha256 jti>``  consent decision tokens (and SMART client assertions) already used
``client-keys/<client_id>``            a SMART client's registered public JWKS
=====================================  =============================================

Single use without transactions: KV v2 check-and-set. ``cas=0`` writes only
if the entry does not exist (create-only), ``cas=<version>`` only if nobody
wrote since we read. A challenge is taken by CAS-writing a "taken" version
over the version we read: of two concurrent takers exactly one wins.

Patient pseudonyms are Transit HMAC-SHA256 under ``identity-pseudonym``
(version 1, never rotated: a pseudonym must never change), so the pseudonym
secret never leaves Vault.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import hvac
import hvac.exceptions

from carechain.core.errors import AlreadyExists, CareChainError, FailedPrecondition, NotFound
from carechain.identity.registry import PATIENT_ID_PREFIX, PrincipalRecord, StoredDataKey
from carechain.runtime.vault import vault_errors, vault_message

DEFAULT_PREFIX = "identity"
PSEUDONYM_KEY = "identity-pseudonym"
PSEUDONYM_KEY_VERSION = 1
# Expired challenges and decision-token ids are swept at most this often (store time, ms).
SWEEP_INTERVAL_MS = 60_000

_CAS_MISMATCH = "check-and-set"


class _CasConflict(Exception):
    """A KV v2 check-and-set write lost: the entry exists or changed since it was read."""


# KV requests a batch call (add_data_keys, data_keys, use_decision_tokens) has in flight at once.
BATCH_PARALLELISM = 8
_T = TypeVar("_T")
_R = TypeVar("_R")


class VaultRegistry:
    """:class:`carechain.identity.registry.IdentityStore` on Vault KV v2 (and Transit for pseudonyms)."""

    def __init__(self, client: hvac.Client, *, kv_mount: str = "carechain", transit_mount: str = "transit",
                 prefix: str = DEFAULT_PREFIX, pseudonym_key: str = PSEUDONYM_KEY) -> None:
        self._client = client
        self._kv = client.secrets.kv.v2
        self._kv_mount = kv_mount
        self._transit_mount = transit_mount
        self._prefix = prefix.strip("/")
        self._pseudonym_key = pseudonym_key
        self._sweep_lock = threading.Lock()
        self._next_sweep_ms: dict[str, int] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        with vault_errors(f"read Transit key {pseudonym_key}", _missing_pseudonym_key(pseudonym_key)):
            client.secrets.transit.read_key(pseudonym_key, mount_point=transit_mount)

    def close(self) -> None:
        """Stop the batch pool; the hvac client belongs to the caller."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def patient_pseudonym(self, organization_id: str, fhir_patient_id: str) -> str:
        message = base64.b64encode(f"{organization_id}|{fhir_patient_id}".encode()).decode()
        with vault_errors(f"HMAC with Transit key {self._pseudonym_key}"):
            result = self._client.secrets.transit.generate_hmac(
                self._pseudonym_key, hash_input=message, key_version=PSEUDONYM_KEY_VERSION,
                algorithm="sha2-256", mount_point=self._transit_mount,
            )
        digest = base64.b64decode(result["data"]["hmac"].rsplit(":", 1)[1])
        return PATIENT_ID_PREFIX + digest.hex()[:32]

    # --- principals ------------------------------------------------------------

    def add_principal(self, principal: PrincipalRecord) -> None:
        entry = {
            "kind": principal.kind,
            "display_name": principal.display_name,
            "public_key": base64.b64encode(principal.public_key).decode(),
            "organization_id": principal.organization_id,
            "specialty": principal.specialty,
            "fhir_patient_id": principal.fhir_patient_id,
            "ledger_log_index": principal.ledger_log_index,
        }
        try:
            self._write(f"principals/{principal.principal_id}", entry, cas=0)
        except _CasConflict:
            raise AlreadyExists(f"principal {principal.principal_id} is already registered") from None

    def principal(self, principal_id: str) -> PrincipalRecord | None:
        found = self._read(f"principals/{principal_id}")
        if found is None:
            return None
        entry, _ = found
        return PrincipalRecord(
            principal_id=principal_id,
            kind=int(entry["kind"]),
            display_name=str(entry["display_name"]),
            public_key=base64.b64decode(entry["public_key"]),
            organization_id=str(entry["organization_id"]),
            specialty=str(entry["specialty"]),
            fhir_patient_id=str(entry["fhir_patient_id"]),
            ledger_log_index=int(entry["ledger_log_index"]),
        )

    # --- proof-of-possession challenges ---------------------------------------

    def add_challenge(self, principal_id: str, challenge: bytes, expires_at_ms: int, now_ms: int) -> None:
        self._sweep("challenges", now_ms)
        try:
            self._write(f"challenges/{challenge.hex()}", {"principal_id": principal_id,
                                                          "expires_at_ms": expires_at_ms}, cas=0)
        except _CasConflict:
            raise AlreadyExists("challenge was issued before") from None

    def take_challenge(self, principal_id: str, challenge: bytes, now_ms: int) -> bool:
        path = f"challenges/{challenge.hex()}"
        found = self._read(path)
        if found is None:
            return False
        entry, version = found
        if entry.get("taken"):
            return False
        try:
            # Whoever writes "taken" over the version read has consumed the challenge.
            self._write(path, {"taken": True}, cas=version)
        except _CasConflict:
            return False
        self._forget(path)
        return entry.get("principal_id") == principal_id and now_ms <= int(entry.get("expires_at_ms", 0))

    # --- wrapped data keys -----------------------------------------------------

    def add_data_key(self, key: StoredDataKey) -> None:
        # Index first: an index entry without its key is skipped when read, while a key
        # missing from the index would be skipped by rotation and shredded by min_decryption_version.
        self._write(f"patients/{key.patient_id}/datakeys/{key.record_id}", {"record_id": key.record_id})
        try:
            self._write(f"datakeys/{key.record_id}", _data_key_entry(key), cas=0)
        except _CasConflict:
            raise AlreadyExists(f"record {key.record_id} already has a data key") from None

    def add_data_keys(self, keys: list[StoredDataKey]) -> list[bool]:
        # KV has no multi-entry write: two CAS-guarded writes per key, as add_data_key, several keys at once.
        def add(key: StoredDataKey) -> bool:
            try:
                self.add_data_key(key)
                return True
            except AlreadyExists:
                return False

        return self._each_first(add, [(key.record_id, key) for key in keys])

    def data_key(self, record_id: str) -> StoredDataKey | None:
        found = self._read(f"datakeys/{record_id}")
        return _data_key(record_id, found[0]) if found else None

    def data_keys(self, record_ids: list[str]) -> dict[str, StoredDataKey]:
        unique = sorted(set(record_ids))
        found = dict(zip(unique, self._each(self.data_key, unique), strict=True))
        return {record_id: key for record_id, key in found.items() if key is not None}

    def patient_data_keys(self, patient_id: str) -> list[StoredDataKey]:
        keys = []
        for record_id in sorted(self._list(f"patients/{patient_id}/datakeys/")):
            stored = self.data_key(record_id)
            if stored is not None and stored.patient_id == patient_id:
                keys.append(stored)
        return keys

    def replace_wrapped_keys(self, keys: list[StoredDataKey]) -> None:
        """Store re-wrapped data keys, after checking every one of them exists.

        KV has no multi-entry transaction. Every entry is checked before the
        first write; each write is CAS-guarded. If a write still fails half way,
        the entries not yet written keep their old wrapping, which stays
        decryptable because min_decryption_version is only raised afterwards.
        """
        versions: list[tuple[StoredDataKey, int]] = []
        for key in keys:
            found = self._read(f"datakeys/{key.record_id}")
            if found is None or found[0].get("patient_id") != key.patient_id:
                raise FailedPrecondition(f"record {key.record_id} has no data key of patient {key.patient_id}")
            versions.append((key, found[1]))
        for key, version in versions:
            try:
                self._write(f"datakeys/{key.record_id}", _data_key_entry(key), cas=version)
            except _CasConflict:
                raise FailedPrecondition(f"data key of record {key.record_id} changed during the re-wrap") from None

    def remove_data_key(self, record_id: str, patient_id: str) -> bool:
        found = self._read(f"datakeys/{record_id}")
        if found is None or found[0].get("patient_id") != patient_id:
            return False
        # Key first, index entry after: an index entry without its key is skipped when read.
        self._forget(f"datakeys/{record_id}")
        self._forget(f"patients/{patient_id}/datakeys/{record_id}")
        return True

    # --- single-use decision tokens -------------------------------------------

    def use_decision_token(self, jti: str, expires_at_ms: int, now_ms: int) -> bool:
        self._sweep("used-decision-tokens", now_ms)
        # jti comes from a token: hash it into a safe, fixed-length path segment.
        path = f"used-decision-tokens/{hashlib.sha256(jti.encode()).hexdigest()}"
        entry = {"expires_at_ms": expires_at_ms}
        try:
            self._write(path, entry, cas=0)
            return True
        except _CasConflict:
            pass
        found = self._read(path)
        if found is None:  # swept between our write and read: try once more
            try:
                self._write(path, entry, cas=0)
                return True
            except _CasConflict:
                return False
        previous, version = found
        if now_ms <= int(previous.get("expires_at_ms", 0)):
            return False
        # The earlier use has expired (the token would be refused as expired anyway): reuse the slot.
        try:
            self._write(path, entry, cas=version)
            return True
        except _CasConflict:
            return False

    def use_decision_tokens(self, tokens: list[tuple[str, int]], now_ms: int) -> list[bool]:
        return self._each_first(lambda token: self.use_decision_token(token[0], token[1], now_ms),
                                [(jti, (jti, expires)) for jti, expires in tokens])

    # --- SMART client keys -------------------------------------------------------

    def set_client_keys(self, client_id: str, jwks: str) -> None:
        self._write(f"client-keys/{client_id}", {"jwks": jwks})

    def client_keys(self, client_id: str) -> str | None:
        found = self._read(f"client-keys/{client_id}")
        return str(found[0]["jwks"]) if found else None

    def _each_first(self, call: Callable[[_T], bool], keyed: list[tuple[str, _T]]) -> list[bool]:
        """call for the first item of each key, in parallel; a repeated key is False (it must not race itself)."""
        first: dict[str, int] = {}
        for i, (key, _) in enumerate(keyed):
            first.setdefault(key, i)
        answers = dict(zip(first.values(), self._each(call, [keyed[i][1] for i in first.values()]), strict=True))
        return [answers.get(i, False) for i in range(len(keyed))]

    def _each(self, call: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
        """call(item) for each item, in order, BATCH_PARALLELISM at a time (KV has no batch requests)."""
        items = list(items)
        if len(items) <= 1:
            return [call(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(BATCH_PARALLELISM, thread_name_prefix="vault-kv")
            pool = self._pool
        return list(pool.map(call, items))

    # --- housekeeping ----------------------------------------------------------

    def _sweep(self, folder: str, now_ms: int) -> None:
        """Forget expired or taken entries of a folder, at most once per SWEEP_INTERVAL_MS."""
        with self._sweep_lock:
            if now_ms < self._next_sweep_ms.get(folder, now_ms):
                return
            self._next_sweep_ms[folder] = now_ms + SWEEP_INTERVAL_MS
        for name in self._list(f"{folder}/"):
            found = self._read(f"{folder}/{name}")
            if found is not None and (found[0].get("taken") or int(found[0].get("expires_at_ms", 0)) < now_ms):
                self._forget(f"{folder}/{name}")

    # --- KV v2 -----------------------------------------------------------------

    def _path(self, relative: str) -> str:
        return f"{self._prefix}/{relative}"

    def _read(self, relative: str) -> tuple[dict[str, Any], int] | None:
        """Current data and version of an entry, or None if it does not exist (or was deleted)."""
        path = self._path(relative)
        try:
            with vault_errors(f"read KV {self._kv_mount}/{path}", _kv_errors):
                response = self._kv.read_secret_version(path, mount_point=self._kv_mount,
                                                        raise_on_deleted_version=False)
        except NotFound:
            return None
        data = response["data"]
        if data.get("data") is None:  # soft-deleted version
            return None
        return data["data"], int(data["metadata"]["version"])

    def _write(self, relative: str, entry: dict[str, Any], cas: int | None = None) -> None:
        """Write an entry; with cas, only if its current version is cas (0: does not exist)."""
        path = self._path(relative)
        try:
            with vault_errors(f"write KV {self._kv_mount}/{path}", _kv_errors):
                self._kv.create_or_update_secret(path, secret=entry, cas=cas, mount_point=self._kv_mount)
        except _CasFailed:
            raise _CasConflict(path) from None

    def _list(self, relative: str) -> list[str]:
        path = self._path(relative)
        try:
            with vault_errors(f"list KV {self._kv_mount}/{path}", _kv_errors):
                response = self._kv.list_secrets(path, mount_point=self._kv_mount)
        except NotFound:
            return []
        return [k for k in response["data"]["keys"] if not k.endswith("/")]

    def _forget(self, relative: str) -> None:
        """Delete an entry and all its versions (housekeeping; a failure only leaves garbage)."""
        path = self._path(relative)
        try:
            with vault_errors(f"delete KV {self._kv_mount}/{path}", _kv_errors):
                self._kv.delete_metadata_and_all_versions(path, mount_point=self._kv_mount)
        except NotFound:
            pass


class _CasFailed(CareChainError):
    """Internal marker raised through vault_errors for a check-and-set mismatch."""


def _kv_errors(exc: hvac.exceptions.VaultError) -> CareChainError:
    message = vault_message(exc)
    if _CAS_MISMATCH in message:
        return _CasFailed(message)
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return NotFound("KV entry does not exist")
    return FailedPrecondition(f"Vault KV refused the request: {message}")


def _missing_pseudonym_key(name: str) -> Callable[[hvac.exceptions.VaultError], CareChainError]:
    def mapped(exc: hvac.exceptions.VaultError) -> CareChainError:
        return FailedPrecondition(
            f"Transit key {name} is missing: run `carechain admin vault-bootstrap` ({vault_message(exc)})"
        )

    return mapped


def _data_key_entry(key: StoredDataKey) -> dict[str, Any]:
    return {"patient_id": key.patient_id, "key_name": key.key_name, "key_version": key.key_version,
            "wrapped": key.wrapped}


def _data_key(record_id: str, entry: dict[str, Any]) -> StoredDataKey:
    return StoredDataKey(record_id, str(entry["patient_id"]), str(entry["key_name"]), int(entry["key_version"]),
                         str(entry["wrapped"]))
