"""Contract suite for KeyManager implementations (Vault Transit semantics).

Every implementation must pass the same tests: the embedded LocalKeyring and
VaultTransitKeyManager on a real OpenBao dev server (one fresh Transit mount
per test, so tests do not share keys).
"""

from __future__ import annotations

import base64
import pathlib
import stat
from collections.abc import Callable, Iterator

import pytest

from carechain.core.errors import FailedPrecondition, IntegrityError, InvalidArgument, NotFound
from carechain.runtime.keyring import KeyManager, LocalKeyring, wrapped_key_version
from carechain.runtime.vault_keyring import VaultTransitKeyManager

pytest_plugins = ["servers_openbao"]


def _local(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[KeyManager]:
    keyring = LocalKeyring(tmp_path / "keyring")
    yield keyring
    keyring.close()


def _vault(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[KeyManager]:
    client = request.getfixturevalue("vault_root")
    yield VaultTransitKeyManager(client, request.getfixturevalue("transit_mount"))


IMPLEMENTATIONS: dict[str, Callable[[pytest.FixtureRequest, pathlib.Path], Iterator[KeyManager]]] = {
    "local": _local,
    "vault": _vault,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def keys(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[KeyManager]:
    yield from IMPLEMENTATIONS[request.param](request, tmp_path)


CONTEXT = b"psn-1|record-1"


def test_data_key_round_trips(keys: KeyManager) -> None:
    info = keys.create_key("patient-a")
    plaintext, wrapped = keys.generate_data_key("patient-a", CONTEXT)

    assert info.latest_version == 1 and info.min_decryption_version == 1
    assert info.key_type == "aes256-gcm96" and not info.exportable and info.deletion_allowed
    assert len(plaintext) == 32
    assert wrapped.startswith("vault:v1:")
    assert plaintext not in base64.b64decode(wrapped.split(":", 2)[2])
    assert keys.decrypt_data_key("patient-a", wrapped, CONTEXT) == plaintext


def test_each_data_key_is_fresh(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    first, _ = keys.generate_data_key("patient-a", CONTEXT)
    second, _ = keys.generate_data_key("patient-a", CONTEXT)
    assert first != second


def test_creating_an_existing_key_keeps_it(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    plaintext, wrapped = keys.generate_data_key("patient-a", CONTEXT)
    keys.create_key("patient-a")
    assert keys.decrypt_data_key("patient-a", wrapped, CONTEXT) == plaintext


def test_wrapped_key_only_unwraps_with_its_context(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    _, wrapped = keys.generate_data_key("patient-a", CONTEXT)
    with pytest.raises(IntegrityError):
        keys.decrypt_data_key("patient-a", wrapped, b"psn-1|record-2")


def test_wrapped_key_only_unwraps_under_its_key(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    keys.create_key("patient-b")
    _, wrapped = keys.generate_data_key("patient-a", CONTEXT)
    with pytest.raises(IntegrityError):
        keys.decrypt_data_key("patient-b", wrapped, CONTEXT)


def test_tampered_wrapped_key_is_refused(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    _, wrapped = keys.generate_data_key("patient-a", CONTEXT)
    prefix, body = wrapped.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 0x01
    with pytest.raises(IntegrityError):
        keys.decrypt_data_key("patient-a", f"{prefix}:{base64.b64encode(bytes(raw)).decode()}", CONTEXT)


def test_malformed_wrapped_key_is_an_invalid_argument(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    with pytest.raises(InvalidArgument):
        keys.decrypt_data_key("patient-a", "not-a-wrapped-key", CONTEXT)


def test_data_keys_move_to_another_key_encryption_key(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    keys.create_key("patient-b")
    made = keys.generate_data_keys("patient-a", [CONTEXT, CONTEXT + b"-2"])
    plaintexts = keys.decrypt_data_keys("patient-a", [(wrapped, CONTEXT) for _, wrapped in made[:1]] +
                                        [(made[1][1], CONTEXT + b"-2")])
    moved = keys.wrap_data_keys("patient-b", [(plaintexts[0], CONTEXT), (plaintexts[1], CONTEXT + b"-2")])
    assert keys.decrypt_data_key("patient-b", moved[0], CONTEXT) == made[0][0]
    assert keys.decrypt_data_key("patient-b", moved[1], CONTEXT + b"-2") == made[1][0]
    with pytest.raises(IntegrityError):
        keys.decrypt_data_key("patient-a", moved[0], CONTEXT)
    with pytest.raises(NotFound):
        keys.wrap_data_keys("patient-missing", [(made[0][0], CONTEXT)])


def test_rotation_adds_a_version_and_rewrap_moves_keys_to_it(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    plaintext, wrapped = keys.generate_data_key("patient-a", CONTEXT)

    assert keys.rotate("patient-a") == 2
    rewrapped = keys.rewrap("patient-a", wrapped, CONTEXT)

    assert keys.key_info("patient-a").latest_version == 2
    assert wrapped_key_version(rewrapped) == 2
    assert keys.decrypt_data_key("patient-a", rewrapped, CONTEXT) == plaintext
    # Old versions stay usable until min_decryption_version says otherwise.
    assert keys.decrypt_data_key("patient-a", wrapped, CONTEXT) == plaintext
    _, fresh = keys.generate_data_key("patient-a", CONTEXT)
    assert wrapped_key_version(fresh) == 2


def test_versions_below_min_decryption_version_are_refused(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    plaintext, old = keys.generate_data_key("patient-a", CONTEXT)
    keys.rotate("patient-a")
    new = keys.rewrap("patient-a", old, CONTEXT)

    info = keys.set_min_decryption_version("patient-a", 2)

    assert info.min_decryption_version == 2
    with pytest.raises(FailedPrecondition, match="min_decryption_version"):
        keys.decrypt_data_key("patient-a", old, CONTEXT)
    with pytest.raises(FailedPrecondition):
        keys.rewrap("patient-a", old, CONTEXT)
    assert keys.decrypt_data_key("patient-a", new, CONTEXT) == plaintext


def test_min_decryption_version_must_name_an_existing_version(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    with pytest.raises(InvalidArgument):
        keys.set_min_decryption_version("patient-a", 2)
    with pytest.raises(InvalidArgument):
        keys.set_min_decryption_version("patient-a", 0)


def test_deleted_key_shreds_every_wrapped_key(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    _, wrapped = keys.generate_data_key("patient-a", CONTEXT)
    keys.rotate("patient-a")

    keys.delete_key("patient-a")

    with pytest.raises((NotFound, FailedPrecondition)):
        keys.decrypt_data_key("patient-a", wrapped, CONTEXT)
    with pytest.raises(NotFound):
        keys.key_info("patient-a")
    # A new key under the same name is different material: the old wrapped key stays dead.
    keys.create_key("patient-a")
    with pytest.raises(IntegrityError):
        keys.decrypt_data_key("patient-a", wrapped, CONTEXT)


def test_unknown_key_is_not_found(keys: KeyManager) -> None:
    with pytest.raises(NotFound):
        keys.key_info("nobody")
    with pytest.raises(NotFound):
        keys.generate_data_key("nobody", CONTEXT)
    with pytest.raises(NotFound):
        keys.rotate("nobody")
    with pytest.raises(NotFound):
        keys.delete_key("nobody")
    with pytest.raises(NotFound):
        keys.decrypt_data_key("nobody", "vault:v1:AAAA", CONTEXT)


def test_key_names_are_validated(keys: KeyManager) -> None:
    with pytest.raises(InvalidArgument, match="key_name"):
        keys.create_key("../escape")


# --- LocalKeyring specifics --------------------------------------------------


def test_local_master_key_file_is_private(tmp_path: pathlib.Path) -> None:
    keyring = LocalKeyring(tmp_path / "keyring")
    mode = stat.S_IMODE((tmp_path / "keyring" / "master.key").stat().st_mode)
    keyring.close()
    assert mode == 0o600, f"master.key has mode {oct(mode)}, expected 0o600"
    assert len((tmp_path / "keyring" / "master.key").read_bytes()) == 32


def test_local_keyring_persists_across_reopen(tmp_path: pathlib.Path) -> None:
    keyring = LocalKeyring(tmp_path / "keyring")
    keyring.create_key("patient-a")
    keyring.rotate("patient-a")
    plaintext, wrapped = keyring.generate_data_key("patient-a", CONTEXT)
    keyring.set_min_decryption_version("patient-a", 2)
    keyring.close()

    reopened = LocalKeyring(tmp_path / "keyring")
    try:
        assert reopened.decrypt_data_key("patient-a", wrapped, CONTEXT) == plaintext
        assert reopened.key_info("patient-a").min_decryption_version == 2
    finally:
        reopened.close()


def test_local_keyring_needs_its_own_master_key(tmp_path: pathlib.Path) -> None:
    keyring = LocalKeyring(tmp_path / "keyring")
    keyring.create_key("patient-a")
    _, wrapped = keyring.generate_data_key("patient-a", CONTEXT)
    keyring.close()
    (tmp_path / "keyring" / "master.key").write_bytes(bytes(32))

    other = LocalKeyring(tmp_path / "keyring")
    try:
        with pytest.raises(IntegrityError):
            other.decrypt_data_key("patient-a", wrapped, CONTEXT)
    finally:
        other.close()


def test_local_delete_removes_key_material_from_disk(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "keyring"
    keyring = LocalKeyring(directory)
    keyring.create_key("patient-a")
    keyring.create_key("patient-b")
    rows = keyring._db.query("SELECT sealed_material FROM key_versions WHERE name = 'patient-a'")
    material = bytes(rows[0]["sealed_material"])
    keyring._db.checkpoint()
    assert material in (directory / "keyring.db").read_bytes()

    keyring.delete_key("patient-a")

    on_disk = b"".join(p.read_bytes() for p in directory.iterdir() if p.name.startswith("keyring.db"))
    keyring.close()
    assert material not in on_disk, "sealed key material of a deleted key is still on disk"


# --- the ledger metadata key (carechain.ledger.sealing) on every implementation ----------------


def test_ledger_metadata_sealed_under_a_key_opens_only_where_it_was_sealed(keys: KeyManager) -> None:
    """Records seals, consent opens (another sealer on the same key); a moved or forged payload is refused."""
    from carechain.common.v1 import common_pb2
    from carechain.ledger.sealing import LedgerSealer
    from carechain.ledger.v1 import ledger_pb2

    keys.create_key("ledger-metadata")
    record = ledger_pb2.RegisterRecord(record_id="rec-1", patient_id="psn-1", organization_id="org-1",
                                       content_sha256="ab" * 32, version=1)
    metadata = ledger_pb2.RecordMetadata(resource_type="Condition",
                                         categories=[common_pb2.SENSITIVITY_CATEGORY_MENTAL_HEALTH])
    record.sealed_metadata.CopyFrom(LedgerSealer(keys, "chain-a").seal_record(record, metadata))

    assert LedgerSealer(keys, "chain-a").open_record(record) == metadata
    with pytest.raises(IntegrityError):
        LedgerSealer(keys, "chain-b").open_record(record)  # the chain id is the key derivation context
    moved = ledger_pb2.RegisterRecord()
    moved.CopyFrom(record)
    moved.patient_id = "psn-2"
    with pytest.raises(IntegrityError):
        LedgerSealer(keys, "chain-a").open_record(moved)
    forged = ledger_pb2.RegisterRecord()
    forged.CopyFrom(record)
    forged.sealed_metadata.wrapped_key = "vault:v1:" + base64.b64encode(bytes(60)).decode()
    with pytest.raises(IntegrityError):
        LedgerSealer(keys, "chain-a").open_record(forged)


# --- batches: many data keys under one key in one step -------------------------------------


def test_a_batch_of_data_keys_is_fresh_bound_to_each_context_and_unwraps_in_a_batch(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    contexts = [f"psn-1|record-{i}".encode() for i in range(5)]

    made = keys.generate_data_keys("patient-a", contexts)

    assert len({plaintext for plaintext, _ in made}) == 5 and all(len(p) == 32 for p, _ in made)
    assert all(wrapped.startswith("vault:v1:") for _, wrapped in made)
    assert keys.decrypt_data_keys("patient-a", [(w, c) for (_, w), c in zip(made, contexts, strict=True)]) == [
        p for p, _ in made]
    assert keys.decrypt_data_key("patient-a", made[3][1], contexts[3]) == made[3][0]  # one by one, too
    assert keys.generate_data_keys("patient-a", []) == [] and keys.decrypt_data_keys("patient-a", []) == []


def test_a_bad_item_of_an_unwrap_batch_fails_alone(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    (good, good_wrapped), (_, moved), (_, tampered) = keys.generate_data_keys("patient-a", [CONTEXT, b"x", b"y"])
    raw = bytearray(base64.b64decode(tampered.split(":", 2)[2]))
    raw[-1] ^= 1
    tampered = "vault:v1:" + base64.b64encode(bytes(raw)).decode()

    results = keys.decrypt_data_keys("patient-a", [
        (good_wrapped, CONTEXT), (moved, CONTEXT),  # another record's key
        (tampered, b"y"), ("not wrapped", CONTEXT), (good_wrapped, CONTEXT),
    ])

    assert results[0] == results[4] == good
    assert isinstance(results[1], IntegrityError) and isinstance(results[2], IntegrityError)
    assert isinstance(results[3], InvalidArgument)


def test_every_item_of_an_unwrap_batch_may_fail_on_its_own(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    (_, old), = keys.generate_data_keys("patient-a", [CONTEXT])
    keys.rotate("patient-a")
    keys.set_min_decryption_version("patient-a", 2)
    (_, moved), = keys.generate_data_keys("patient-a", [b"other"])

    results = keys.decrypt_data_keys("patient-a", [(old, CONTEXT), (moved, CONTEXT)])

    assert isinstance(results[0], FailedPrecondition)  # below min_decryption_version
    assert isinstance(results[1], IntegrityError)


def test_batches_under_a_missing_key_are_not_found(keys: KeyManager) -> None:
    with pytest.raises(NotFound):
        keys.generate_data_keys("patient-none", [CONTEXT])
    with pytest.raises(NotFound):
        keys.decrypt_data_keys("patient-none", [("vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", CONTEXT)])


def test_a_batch_rewrap_moves_every_key_to_the_latest_version_or_none(keys: KeyManager) -> None:
    keys.create_key("patient-a")
    contexts = [f"psn-1|record-{i}".encode() for i in range(4)]
    made = keys.generate_data_keys("patient-a", contexts)
    keys.rotate("patient-a")

    rewrapped = keys.rewrap_many("patient-a", [(w, c) for (_, w), c in zip(made, contexts, strict=True)])

    assert all(w.startswith("vault:v2:") for w in rewrapped)
    keys.set_min_decryption_version("patient-a", 2)
    assert keys.decrypt_data_keys("patient-a", list(zip(rewrapped, contexts, strict=True))) == [p for p, _ in made]
    with pytest.raises(IntegrityError):  # one moved key: the whole rewrap fails
        keys.rewrap_many("patient-a", [(rewrapped[0], contexts[0]), (rewrapped[1], contexts[0])])
    assert keys.rewrap_many("patient-a", []) == []
