"""The KeyManager seam on Vault / OpenBao Transit: keys that never leave Vault.

Semantics match :class:`carechain.runtime.keyring.LocalKeyring` (the same
contract suite runs against both). Transit specifics:

- every patient key is ``aes256-gcm96``, ``exportable=false``,
  ``deletion_allowed=true`` (crypto-shredding) and ``derived=true``;
- **context binding**: Transit ``datakey`` has no associated-data parameter,
  so each key is a *derived* key and the record context (``<patient>|<record>``)
  is its KDF context: the data key is wrapped under
  HKDF(key version, context). A wrapped key moved to another record (or
  unwrapped under another patient's key) fails GCM authentication, exactly like
  the associated data of the local keyring;
- ``datakey/plaintext`` returns one fresh data key and its wrapped form
  ``vault:v<N>:...``; it has no batch form, so a batch of several is 32 random
  bytes each from this process's CSPRNG wrapped by one Transit ``encrypt`` with
  ``batch_input`` (the same wrapped form). The identity policy grants
  ``encrypt`` with ``update`` only, never ``create``, and a key not seen before
  is read first: an encrypt never creates (upserts) a missing or shredded key;
- ``decrypt`` (batched, one error per item) unwraps; ``rewrap`` re-wraps under
  the latest version inside Vault; ``min_decryption_version`` is the key's config.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import hvac
import hvac.exceptions

from carechain.core.crypto import AES_KEY_BYTES, new_aes_key
from carechain.core.errors import CareChainError, FailedPrecondition, IntegrityError, InvalidArgument, NotFound
from carechain.runtime.keyring import KeyInfo, _check_name, wrapped_key_version
from carechain.runtime.vault import vault_errors, vault_message

KEY_TYPE = "aes256-gcm96"
REWRAP_BATCH = 250  # data keys per Transit rewrap request when a rotation re-wraps a patient's keys

_NOT_FOUND_TEXTS = ("encryption key not found", "key not found", "no existing key named", "not found")
_TOO_OLD_TEXT = "disallowed by policy"


class VaultTransitKeyManager:
    """Patients' key-encryption keys in a Transit mount (Vault or OpenBao)."""

    def __init__(self, client: hvac.Client, mount: str = "transit") -> None:
        self._client = client
        self._mount = mount
        self._transit = client.secrets.transit
        # Keys seen to exist: encrypt is only sent for these, so even a token allowed to create
        # (root) never has Transit create (upsert) a missing or shredded key on encrypt.
        self._known: set[str] = set()

    def close(self) -> None:
        """Nothing to release: the hvac client belongs to the caller."""

    # --- key lifecycle ---------------------------------------------------------

    def create_key(self, name: str) -> KeyInfo:
        _check_name(name)
        with vault_errors(f"create Transit key {name}", _key_errors(name)):
            data = self._transit.create_key(
                name, key_type=KEY_TYPE, derived=True, exportable=False, mount_point=self._mount
            )
        # Creating an existing key is a no-op in Transit and may answer 204 without a body.
        info = data.get("data") if isinstance(data, dict) else None
        if info is None:
            info = self._read(name)
        if not info.get("derived") or info.get("type") != KEY_TYPE:
            raise FailedPrecondition(f"Transit key {name} exists but is not a derived {KEY_TYPE} key")
        if not info.get("deletion_allowed"):
            with vault_errors(f"configure Transit key {name}", _key_errors(name)):
                self._transit.update_key_configuration(name, deletion_allowed=True, mount_point=self._mount)
        info_now = self.key_info(name)
        self._known.add(name)
        return info_now

    def rotate(self, name: str) -> int:
        _check_name(name)
        with vault_errors(f"rotate Transit key {name}", _key_errors(name)):
            self._transit.rotate_key(name, mount_point=self._mount)
        return self.key_info(name).latest_version

    def key_info(self, name: str) -> KeyInfo:
        _check_name(name)
        data = self._read(name)
        return KeyInfo(
            name=name,
            latest_version=int(data["latest_version"]),
            min_decryption_version=int(data["min_decryption_version"]),
            key_type=str(data["type"]),
            exportable=bool(data["exportable"]),
            deletion_allowed=bool(data["deletion_allowed"]),
        )

    def set_min_decryption_version(self, name: str, version: int) -> KeyInfo:
        info = self.key_info(name)
        # Checked here: Transit silently turns 0 into 1.
        if not 1 <= version <= info.latest_version:
            raise InvalidArgument("min_decryption_version", f"must be between 1 and {info.latest_version}")
        with vault_errors(f"configure Transit key {name}", _key_errors(name)):
            self._transit.update_key_configuration(name, min_decryption_version=version, mount_point=self._mount)
        return self.key_info(name)

    def delete_key(self, name: str) -> None:
        _check_name(name)
        with vault_errors(f"delete Transit key {name}", _key_errors(name)):
            self._known.discard(name)
            self._transit.update_key_configuration(name, deletion_allowed=True, mount_point=self._mount)
            self._transit.delete_key(name, mount_point=self._mount)

    # --- envelope encryption ---------------------------------------------------

    def generate_data_key(self, name: str, context: bytes) -> tuple[bytes, str]:
        _check_name(name)
        with vault_errors(f"generate a data key under {name}", _key_errors(name)):
            data = self._transit.generate_data_key(
                name, key_type="plaintext", context=_b64(context), mount_point=self._mount
            )["data"]
        plaintext = base64.b64decode(data["plaintext"])
        if len(plaintext) != AES_KEY_BYTES:
            raise IntegrityError("Transit returned a data key of the wrong length")
        return plaintext, str(data["ciphertext"])

    def generate_data_keys(self, name: str, contexts: list[bytes]) -> list[tuple[bytes, str]]:
        _check_name(name)
        if len(contexts) <= 1:  # datakey/plaintext: one request, and it never creates a key
            return [self.generate_data_key(name, context) for context in contexts]
        plaintexts = [new_aes_key() for _ in contexts]
        return list(zip(plaintexts, self.wrap_data_keys(name, list(zip(plaintexts, contexts, strict=True))),
                        strict=True))

    def wrap_data_keys(self, name: str, items: list[tuple[bytes, bytes]]) -> list[str]:
        _check_name(name)
        if not items:
            return []
        if name not in self._known:
            self.key_info(name)  # NotFound for a missing key, before any encrypt could create it
            self._known.add(name)
        batch = [{"plaintext": _b64(p), "context": _b64(c)} for p, c in items]
        with vault_errors(f"wrap data keys under {name}", _key_errors(name)):
            results = self._transit.encrypt_data(name, batch_input=batch, mount_point=self._mount)["data"][
                "batch_results"]
        if len(results) != len(items) or any(r.get("error") or not r.get("ciphertext") for r in results):
            raise IntegrityError(f"Transit did not wrap every data key under {name}")
        return [str(r["ciphertext"]) for r in results]

    def decrypt_data_key(self, name: str, wrapped: str, context: bytes) -> bytes:
        wrapped_key_version(wrapped)  # InvalidArgument before asking Vault
        result = self.decrypt_data_keys(name, [(wrapped, context)])[0]
        if isinstance(result, CareChainError):
            raise result
        return result

    def decrypt_data_keys(self, name: str, items: list[tuple[str, bytes]]) -> list[bytes | CareChainError]:
        _check_name(name)
        results: list[bytes | CareChainError | None] = [None] * len(items)
        asked: list[int] = []
        for i, (wrapped, _) in enumerate(items):
            try:
                wrapped_key_version(wrapped)  # malformed items fail alone, before asking Vault
                asked.append(i)
            except InvalidArgument as exc:
                results[i] = exc
        for i, answer in zip(asked, self._decrypt_batch(name, [items[i] for i in asked]), strict=True):
            results[i] = answer
        return results  # type: ignore[return-value]

    def _decrypt_batch(self, name: str, items: list[tuple[str, bytes]]) -> list[bytes | CareChainError]:
        """One Transit decrypt for items; a bad item's error is its own (partial failures answer 200)."""
        if not items:
            return []
        batch = [{"ciphertext": w, "context": _b64(c)} for w, c in items]

        def decrypt() -> list[dict]:
            try:
                return self._client.adapter.post(
                    f"/v1/{self._mount}/decrypt/{name}",
                    json={"batch_input": batch, "partial_failure_response_code": 200},
                )["data"]["batch_results"]
            except hvac.exceptions.InvalidRequest as exc:
                # Every item failed: Transit answers 400, with each item's reason in the body.
                answers = _batch_results(exc)
                if answers is None:
                    raise
                return answers

        with vault_errors(f"unwrap data keys under {name}", _key_errors(name, wrapped_key_version(items[0][0]))):
            answers = decrypt()
        if len(answers) != len(items):
            raise IntegrityError(f"Transit answered {len(answers)} of {len(items)} unwraps under {name}")
        results: list[bytes | CareChainError] = []
        for (wrapped, _), answer in zip(items, answers, strict=True):
            if answer.get("error"):
                results.append(_item_error(name, wrapped_key_version(wrapped), str(answer["error"])))
                continue
            plaintext = base64.b64decode(answer.get("plaintext") or "")
            results.append(plaintext if len(plaintext) == AES_KEY_BYTES
                           else IntegrityError("unwrapped data key has the wrong length"))
        return results

    def rewrap(self, name: str, wrapped: str, context: bytes) -> str:
        _check_name(name)
        version = wrapped_key_version(wrapped)
        with vault_errors(f"rewrap a data key under {name}", _key_errors(name, version)):
            data = self._transit.rewrap_data(name, wrapped, context=_b64(context), mount_point=self._mount)["data"]
        return str(data["ciphertext"])

    def rewrap_many(self, name: str, items: list[tuple[str, bytes]]) -> list[str]:
        _check_name(name)
        rewrapped: list[str] = []
        for start in range(0, len(items), REWRAP_BATCH):
            chunk = items[start : start + REWRAP_BATCH]
            versions = [wrapped_key_version(w) for w, _ in chunk]  # InvalidArgument before asking Vault
            batch = [{"ciphertext": w, "context": _b64(c)} for w, c in chunk]
            with vault_errors(f"rewrap data keys under {name}", _key_errors(name, min(versions))):
                answers = self._client.adapter.post(f"/v1/{self._mount}/rewrap/{name}", json={"batch_input": batch}
                                                    )["data"]["batch_results"]
            if len(answers) != len(chunk) or any(a.get("error") or not a.get("ciphertext") for a in answers):
                raise IntegrityError(f"Transit did not rewrap every data key under {name}")
            rewrapped += [str(a["ciphertext"]) for a in answers]
        return rewrapped

    # --- helpers ---------------------------------------------------------------

    def _read(self, name: str) -> dict:
        with vault_errors(f"read Transit key {name}", _key_errors(name)):
            return self._transit.read_key(name, mount_point=self._mount)["data"]


def _batch_results(exc: hvac.exceptions.VaultError) -> list[dict] | None:
    """The per-item results in the body of a failed batch request, if it has them."""
    body = getattr(exc, "json", None)
    data = body.get("data") if isinstance(body, dict) else None
    results = data.get("batch_results") if isinstance(data, dict) else None
    return results if isinstance(results, list) else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _key_errors(name: str, version: int | None = None) -> Callable[[hvac.exceptions.VaultError], CareChainError]:
    """Map Transit's 400/404 answers to the errors LocalKeyring raises."""

    def mapped(exc: hvac.exceptions.VaultError) -> CareChainError:
        return _item_error(name, version, vault_message(exc), isinstance(exc, hvac.exceptions.InvalidPath))

    return mapped


def _item_error(name: str, version: int | None, message: str, missing: bool = False) -> CareChainError:
    """The LocalKeyring error for a Transit error message (a whole answer's, or one batch item's)."""
    if missing or any(t in message for t in _NOT_FOUND_TEXTS):
        return NotFound(f"key {name} does not exist (never created, or deleted)")
    if _TOO_OLD_TEXT in message:
        return FailedPrecondition(f"key {name} version {version} is below min_decryption_version")
    if version is not None:
        # Ciphertext problems: changed bytes, wrong context, wrong key, unknown version.
        return IntegrityError(f"wrapped data key does not unwrap under key {name}: {message}")
    return FailedPrecondition(f"Transit key {name}: {message}")
