"""Every database and key file is created 0600 inside 0700 directories, whatever the umask."""

from __future__ import annotations

import os
import pathlib
import stat
from collections.abc import Iterator

import pytest

from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import NetworkLayout
from carechain.dev.certificates import LocalCertificateAuthority
from carechain.identity.sqlite_registry import Registry
from carechain.ledger.sqlite_store import LedgerStore
from carechain.runtime.keyring import LocalKeyring
from carechain.runtime.sqlite import Database


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: nothing is masked, so only explicit modes protect the files."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private_tree(root: pathlib.Path, top: pathlib.Path) -> list[pathlib.Path]:
    """Every directory from top down is 0700 and every file 0600; returns the files."""
    assert mode(top) == 0o700, f"{top} is {oct(mode(top))}"
    files = []
    for path in sorted(top.rglob("*")):
        expected = 0o700 if path.is_dir() else 0o600
        assert mode(path) == expected, f"{path.relative_to(root)} is {oct(mode(path))}, not {oct(expected)}"
        if path.is_file():
            files.append(path)
    return files


def test_sqlite_database_and_its_wal_are_private(tmp_path: pathlib.Path, open_umask: None) -> None:
    db = Database(tmp_path / "a" / "b" / "store.db", "CREATE TABLE t (x INTEGER)")
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    try:
        files = assert_private_tree(tmp_path, tmp_path / "a")
        assert {f.name for f in files} >= {"store.db", "store.db-wal", "store.db-shm"}
    finally:
        db.close()


def test_identity_keyring_registry_ledger_and_audit_stores_are_private(tmp_path: pathlib.Path,
                                                                      open_umask: None) -> None:
    data = tmp_path / "data"
    keyring = LocalKeyring(data / "identity" / "keyring")
    keyring.create_key("patient-p")
    registry = Registry(data / "identity")
    ledger = LedgerStore.open(data / "ledger")
    audit = SQLiteAuditStore(data / "audit")
    try:
        files = {f.name for f in assert_private_tree(tmp_path, data)}
        assert {"master.key", "keyring.db", "identity.db", "pseudonym.key", "ledger.db", "audit.sqlite3"} <= files
    finally:
        for store in (keyring, registry, ledger, audit):
            store.close()


def test_signing_and_tls_keys_are_private(tmp_path: pathlib.Path, open_umask: None) -> None:
    Ed25519Signer.generate("svc-x").save(tmp_path / "keys" / "svc-x.pem")
    LocalCertificateAuthority(tmp_path / "tls").issue("records", ["localhost"])
    assert_private_tree(tmp_path, tmp_path / "keys")
    for key in ("ca-key.pem", "records-key.pem"):
        assert mode(tmp_path / "tls" / key) == 0o600
    assert mode(tmp_path / "tls") == 0o700


def test_a_network_layout_makes_existing_open_directories_private(tmp_path: pathlib.Path, open_umask: None) -> None:
    root = tmp_path / "network"
    (root / "ledger").mkdir(parents=True, mode=0o777)
    os.chmod(root, 0o777)
    os.chmod(root / "ledger", 0o777)
    NetworkLayout(root).ensure()
    assert mode(root) == 0o700 and mode(root / "ledger") == 0o700
    assert_private_tree(tmp_path, root / "keys")
