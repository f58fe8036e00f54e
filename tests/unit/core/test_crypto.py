"""AES-256-GCM with associated data, Ed25519 signers and key files."""

from __future__ import annotations

import pathlib
import stat

import pytest

from carechain.core.crypto import (
    Ed25519Signer,
    new_aes_key,
    open_sealed,
    same,
    seal,
    verify_signature,
)
from carechain.core.errors import IntegrityError


def test_sealed_record_opens_only_with_the_same_key_and_associated_data() -> None:
    key = new_aes_key()
    sealed = seal(key, b'{"resourceType":"Condition"}', b"record-1|psn-a|1")
    assert open_sealed(key, sealed, b"record-1|psn-a|1") == b'{"resourceType":"Condition"}'
    with pytest.raises(IntegrityError):
        open_sealed(key, sealed, b"record-2|psn-a|1")  # moved to another record
    with pytest.raises(IntegrityError):
        open_sealed(new_aes_key(), sealed, b"record-1|psn-a|1")


def test_any_flipped_ciphertext_bit_is_detected() -> None:
    key = new_aes_key()
    sealed = bytearray(seal(key, b"x" * 100, b"ad"))
    for position in (0, 12, len(sealed) // 2, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises(IntegrityError):
            open_sealed(key, bytes(tampered), b"ad")


def test_each_seal_uses_a_fresh_nonce() -> None:
    key = new_aes_key()
    assert seal(key, b"same", b"ad") != seal(key, b"same", b"ad")


def test_seal_rejects_short_keys() -> None:
    with pytest.raises(ValueError):
        seal(b"short", b"x", b"")


def test_signer_file_is_private_and_round_trips(tmp_path: pathlib.Path) -> None:
    signer = Ed25519Signer.generate("svc-ledger")
    path = tmp_path / "keys" / "svc-ledger.pem"
    signer.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Ed25519Signer.from_file("svc-ledger", path)
    assert loaded.public_key_bytes() == signer.public_key_bytes()
    signature = loaded.sign(b"header")
    assert verify_signature(signer.public_key_bytes(), signature, b"header")
    assert not verify_signature(signer.public_key_bytes(), signature, b"headeR")
    assert not verify_signature(b"\x00" * 31, signature, b"header")


def test_constant_time_comparison_compares_values() -> None:
    assert same("abc", b"abc")
    assert not same(b"abc", b"abd")


def test_verifying_against_raw_key_bytes_keeps_refusing_wrong_keys_and_signatures() -> None:
    # Key objects are cached by their bytes: a cached key must not make another key's signature pass.
    from carechain.core.crypto import Ed25519Signer, verify_signature

    alice, mallory = Ed25519Signer.generate("alice"), Ed25519Signer.generate("mallory")
    signature = alice.sign(b"message")
    for _ in range(2):  # the second round reads the cached key objects
        assert verify_signature(alice.public_key_bytes(), signature, b"message")
        assert not verify_signature(mallory.public_key_bytes(), signature, b"message")
        assert not verify_signature(alice.public_key_bytes(), signature, b"other message")
        assert not verify_signature(b"short", signature, b"message")
