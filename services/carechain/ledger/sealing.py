"""Sealing clinical metadata for the ledger (docs/security.md, "Ledger privacy").

Every validator keeps a full copy of the chain, so what consent needs about a
record (resource type, sensitivity categories, clinical date) and a consent's
policy go onto the ledger only sealed: AES-256-GCM under a data key that is
wrapped by the *ledger metadata key*. That key is a named key of the
:class:`~carechain.runtime.keyring.KeyManager` seam: a key in the embedded
keyring shared by the records and consent services, or a Vault/OpenBao Transit
key whose policy only those two services hold (never the validators, never
identity).

- One data key seals many payloads (Transit ``datakey/plaintext`` once per
  :data:`MAX_SEALS_PER_DATA_KEY` seals or :data:`DATA_KEY_LIFETIME_SECONDS`);
  each payload has its own random GCM nonce. Openers cache unwrapped data keys,
  so replaying the ledger costs one unwrap per data key, not per transaction.
- The associated data binds each payload to where it sits on the ledger
  (chain id, record id, version, patient pseudonym, organisation and content
  hash; or chain id, consent id and patient pseudonym): a sealed payload copied
  into another transaction does not open.
- Plaintexts are padded to a multiple of :data:`PAD_BYTES` so the ciphertext
  length reveals nothing (a longer resource type name or more categories).
"""

from __future__ import annotations

import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from carechain.consent.v1 import policy_pb2
from carechain.core.crypto import open_sealed, seal
from carechain.core.errors import IntegrityError, InvalidArgument
from carechain.ledger.transactions import encode
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.config import LedgerMetadataKeySettings
from carechain.runtime.keyring import KeyManager, LocalKeyring

#: Name of the ledger metadata key in the keyring / Transit mount.
LEDGER_METADATA_KEY = "ledger-metadata"
MAX_SEALS_PER_DATA_KEY = 100_000  # far below the 2^32 random-nonce limit of AES-GCM
DATA_KEY_LIFETIME_SECONDS = 3600.0
PAD_BYTES = 256
_CACHE_SIZE = 1024
_CONTEXT = b"carechain-ledger-metadata/v1|"


def record_metadata_associated_data(chain_id: str, record: ledger_pb2.RegisterRecord) -> bytes:
    """What a record's sealed metadata is bound to."""
    return "|".join((
        "carechain-ledger-metadata/v1", "record", chain_id, record.record_id, str(record.version),
        record.patient_id, record.organization_id, record.content_sha256,
    )).encode()


def policy_associated_data(chain_id: str, consent_id: str, patient_id: str) -> bytes:
    """What a consent's sealed policy is bound to."""
    return "|".join(("carechain-ledger-metadata/v1", "consent", chain_id, consent_id, patient_id)).encode()


def _pad(plaintext: bytes) -> bytes:
    framed = struct.pack(">I", len(plaintext)) + plaintext
    return framed + bytes(-len(framed) % PAD_BYTES)


def _unpad(padded: bytes) -> bytes:
    if len(padded) < 4:
        raise IntegrityError("sealed ledger metadata is too short")
    (length,) = struct.unpack(">I", padded[:4])
    if length > len(padded) - 4 or any(padded[4 + length:]):
        raise IntegrityError("sealed ledger metadata has bad padding")
    return padded[4:4 + length]


class LedgerSealer:
    """Seals and opens ledger payloads under the ledger metadata key; thread-safe.

    Raises what the key manager raises when the key is unreachable (e.g.
    UNAVAILABLE for Vault), and IntegrityError when a payload does not open
    (changed, moved to another transaction, or not sealed under this key).
    """

    def __init__(self, keys: KeyManager, chain_id: str, key_name: str = LEDGER_METADATA_KEY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._chain_id = chain_id
        self._key_name = key_name
        self._clock = clock
        self._context = _CONTEXT + chain_id.encode()
        self._lock = threading.Lock()
        self._current: tuple[bytes, str] | None = None  # (data key, wrapped form)
        self._uses = 0
        self._created = 0.0
        self._opened: OrderedDict[str, bytes] = OrderedDict()  # wrapped -> data key

    @property
    def chain_id(self) -> str:
        """The chain whose payloads this sealer binds."""
        return self._chain_id

    # --- records ---------------------------------------------------------------

    def seal_record(self, record: ledger_pb2.RegisterRecord, metadata: ledger_pb2.RecordMetadata
                    ) -> ledger_pb2.SealedData:
        """metadata sealed for record (whose other fields must be final: they are bound)."""
        return self._seal(encode(metadata), record_metadata_associated_data(self._chain_id, record))

    def open_record(self, record: ledger_pb2.RegisterRecord) -> ledger_pb2.RecordMetadata:
        """The RecordMetadata sealed in record; IntegrityError if it is missing or does not open."""
        if not record.HasField("sealed_metadata"):
            raise IntegrityError("register_record.sealed_metadata is missing")
        plaintext = self._open(record.sealed_metadata, record_metadata_associated_data(self._chain_id, record))
        return _parse(ledger_pb2.RecordMetadata, plaintext)

    # --- consent policies ------------------------------------------------------

    def seal_policy(self, consent_id: str, patient_id: str, policy: policy_pb2.ConsentPolicy
                    ) -> ledger_pb2.SealedData:
        """policy sealed for one consent id of one patient."""
        return self._seal(encode(policy), policy_associated_data(self._chain_id, consent_id, patient_id))

    def open_policy(self, grant: ledger_pb2.GrantConsent) -> policy_pb2.ConsentPolicy:
        """The ConsentPolicy sealed in grant; IntegrityError if it is missing or does not open."""
        if not grant.HasField("sealed_policy"):
            raise IntegrityError("grant_consent.sealed_policy is missing")
        plaintext = self._open(grant.sealed_policy,
                               policy_associated_data(self._chain_id, grant.consent_id, grant.patient_id))
        return _parse(policy_pb2.ConsentPolicy, plaintext)

    # --- a service's own files (e.g. consent's snapshot) ------------------------

    def seal_local(self, purpose: str, plaintext: bytes) -> ledger_pb2.SealedData:
        """plaintext sealed for this service's own storage, bound to the chain and purpose (never on the ledger)."""
        return self._seal(plaintext, _local_associated_data(self._chain_id, purpose))

    def open_local(self, purpose: str, sealed: ledger_pb2.SealedData) -> bytes:
        """What seal_local sealed for purpose; IntegrityError if it does not open."""
        return self._open(sealed, _local_associated_data(self._chain_id, purpose))

    # --- envelope --------------------------------------------------------------

    def _data_key(self) -> tuple[bytes, str]:
        now = self._clock()
        with self._lock:
            fresh = (self._current is not None and self._uses < MAX_SEALS_PER_DATA_KEY
                     and now - self._created < DATA_KEY_LIFETIME_SECONDS)
            if not fresh:
                self._current = self._keys.generate_data_key(self._key_name, self._context)
                self._uses, self._created = 0, now
            self._uses += 1
            assert self._current is not None
            return self._current

    def _seal(self, plaintext: bytes, associated_data: bytes) -> ledger_pb2.SealedData:
        key, wrapped = self._data_key()
        return ledger_pb2.SealedData(key_name=self._key_name, wrapped_key=wrapped,
                                     ciphertext=seal(key, _pad(plaintext), associated_data))

    def _open(self, sealed: ledger_pb2.SealedData, associated_data: bytes) -> bytes:
        if sealed.key_name != self._key_name:
            raise IntegrityError("sealed ledger metadata names another key")
        with self._lock:
            key = self._opened.get(sealed.wrapped_key)
            if key is not None:
                self._opened.move_to_end(sealed.wrapped_key)
        if key is None:
            try:
                key = self._keys.decrypt_data_key(self._key_name, sealed.wrapped_key, self._context)
            except InvalidArgument as exc:  # a malformed wrapped key on the ledger is a forgery
                raise IntegrityError("sealed ledger metadata has a malformed wrapped key") from exc
            with self._lock:
                self._opened[sealed.wrapped_key] = key
                while len(self._opened) > _CACHE_SIZE:
                    self._opened.popitem(last=False)
        return _unpad(open_sealed(key, sealed.ciphertext, associated_data))


def _local_associated_data(chain_id: str, purpose: str) -> bytes:
    return b"carechain-local-seal/v1\n" + chain_id.encode() + b"\n" + purpose.encode()


def _parse(message_type: type, plaintext: bytes):  # noqa: ANN202 - returns an instance of message_type
    try:
        return message_type.FromString(plaintext)
    except Exception as exc:  # noqa: BLE001 - authenticated but undecodable: still not trusted
        raise IntegrityError("sealed ledger metadata does not decode") from exc


def metadata_sealer(settings: LedgerMetadataKeySettings, vault: object | None = None) -> LedgerSealer:
    """The sealer of settings.ledger_metadata_key_backend (records and consent services).

    Local: the keyring in settings.ledger_metadata_keyring_dir (the key is created on first use).
    Vault: the Transit key made by ``carechain admin vault-bootstrap``; the service's policy may
    only generate and unwrap data keys under it.
    """
    name = settings.ledger_metadata_key_name
    keys: KeyManager
    if settings.ledger_metadata_key_backend == "local":
        local = LocalKeyring(settings.ledger_metadata_keyring_dir)
        local.create_key(name)
        keys = local
    else:
        from carechain.runtime.vault import vault_client
        from carechain.runtime.vault_keyring import VaultTransitKeyManager

        keys = VaultTransitKeyManager(vault or vault_client(settings), settings.vault_transit_mount)  # type: ignore[arg-type]
    return LedgerSealer(keys, settings.chain_id, name)
