"""Cryptographic building blocks, all from the `cryptography` library.

- AES-256-GCM with associated data for records and wrapped keys;
- Ed25519 keys and signatures with domain-separation prefixes;
- SHA-256 helpers and constant-time comparison.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import pathlib
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carechain.core.errors import IntegrityError
from carechain.core.files import private_dir

AES_KEY_BYTES = 32
GCM_NONCE_BYTES = 12


def new_aes_key() -> bytes:
    """A fresh random AES-256 key."""
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM encrypt; returns nonce || ciphertext || tag."""
    if len(key) != AES_KEY_BYTES:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    nonce = os.urandom(GCM_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """Decrypt what :func:`seal` produced; IntegrityError if anything was changed."""
    if len(sealed) < GCM_NONCE_BYTES + 16:
        raise IntegrityError("ciphertext too short")
    try:
        return AESGCM(key).decrypt(sealed[:GCM_NONCE_BYTES], sealed[GCM_NONCE_BYTES:], associated_data)
    except InvalidTag as exc:
        raise IntegrityError("authentication tag mismatch: ciphertext, key or associated data changed") from exc


def sha256(data: bytes) -> bytes:
    """SHA-256 digest."""
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 digest."""
    return hashlib.sha256(data).hexdigest()


def same(a: bytes | str, b: bytes | str) -> bool:
    """Constant-time equality for digests, tokens and MACs."""
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)


# --- Ed25519 -----------------------------------------------------------------

class Signer(Protocol):
    """Something that signs with an Ed25519 key it may not expose (file, Vault Transit)."""

    @property
    def key_id(self) -> str:
        """Principal id this key belongs to."""
        ...

    def public_key_bytes(self) -> bytes:
        """Raw 32-byte public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature over message."""
        ...


class Ed25519Signer:
    """A signer holding an Ed25519 private key in memory (embedded mode, clients)."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        self._key_id = key_id
        self._private_key = private_key

    @classmethod
    def generate(cls, key_id: str) -> Ed25519Signer:
        """A signer with a fresh key."""
        return cls(key_id, Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, key_id: str, path: pathlib.Path) -> Ed25519Signer:
        """Load a PKCS#8 PEM private key."""
        return cls.from_pem(key_id, path.read_bytes(), str(path))

    @classmethod
    def from_pem(cls, key_id: str, pem: bytes, source: str = "the key") -> Ed25519Signer:
        """Parse a PKCS#8 PEM private key; ValueError naming source (never echoing the key) otherwise."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ValueError(f"{source}: not a PEM private key file") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{source}: not an Ed25519 private key")
        return cls(key_id, key)

    def with_key_id(self, key_id: str) -> Ed25519Signer:
        """The same key under another principal id (ids are assigned at registration)."""
        return Ed25519Signer(key_id, self._private_key)

    @property
    def key_id(self) -> str:
        return self._key_id

    def public_key_bytes(self) -> bytes:
        return public_key_bytes(self._private_key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)

    def private_pem(self) -> bytes:
        """The private key as PKCS#8 PEM (for key files only: never log or send it)."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def save(self, path: pathlib.Path) -> None:
        """Write the private key as PKCS#8 PEM, readable by the owner only (0600)."""
        write_private_file(path, self.private_pem())


def write_private_file(path: pathlib.Path, data: bytes) -> None:
    """Create a file with mode 0600 from the start (no window where others can read it), in a 0700 directory."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """Raw 32-byte encoding of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """Parse a raw 32-byte Ed25519 public key; ValueError if malformed."""
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


@functools.lru_cache(maxsize=4096)
def _verifying_key(raw: bytes) -> Ed25519PublicKey:
    """The key object of a raw public key, built once per key: the ledger's readers verify every
    transaction's and block's signature against the few keys of the network's principals."""
    return load_public_key(raw)


def verify_signature(public_key: bytes | Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """True when signature is a valid Ed25519 signature of message."""
    try:
        key = public_key if isinstance(public_key, Ed25519PublicKey) else _verifying_key(bytes(public_key))
        key.verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False
