"""The embedded blob store (carechain.storage.file_blobstore): what only a directory of files can get wrong.
The behaviour every BlobStore shares is tests/contract/test_blobstore_contract.py."""

from __future__ import annotations

import hashlib
import pathlib

import pytest

from carechain.core.errors import DataLoss
from carechain.storage.file_blobstore import LocalBlobStore


def test_blobs_are_files_named_by_their_hash_and_nothing_is_left_in_incoming(tmp_path: pathlib.Path) -> None:
    store = LocalBlobStore(tmp_path, chunk_bytes=4)
    data = b"ciphertext bytes"
    ref = store.put([data[:5], data[5:]])
    sha256 = hashlib.sha256(data).hexdigest()
    assert ref.sha256 == sha256 and (tmp_path / sha256[:2] / sha256).read_bytes() == data
    with pytest.raises(DataLoss):
        store.put([b"other bytes"], expected_sha256=sha256)
    assert list((tmp_path / "incoming").iterdir()) == []  # no temporary file survives, stored or refused


def test_storing_the_verified_bytes_again_repairs_a_damaged_copy(tmp_path: pathlib.Path) -> None:
    store = LocalBlobStore(tmp_path, chunk_bytes=4)
    data = b"ciphertext bytes"
    ref = store.put([data])
    store.path(ref.sha256).write_bytes(b"bit rot happened")  # the disk changed the file
    with pytest.raises(DataLoss):
        b"".join(store.open(ref.sha256))
    assert store.put([data], expected_sha256=ref.sha256) == ref
    assert b"".join(store.open(ref.sha256)) == data


def test_a_store_needs_a_positive_chunk_size(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        LocalBlobStore(tmp_path, chunk_bytes=0)
