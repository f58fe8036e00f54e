"""Real in-process servers for the server runtime's tests: a storage service over any blob store, tokens."""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import StorageSettings
from carechain.runtime.server import RunningService, register_servicer, start_service
from carechain.storage.blobstore import BlobRef
from carechain.storage.file_blobstore import LocalBlobStore
from carechain.storage.server import ACCESS, StorageServicer
from carechain.storage.v1 import storage_pb2_grpc

IDENTITY = Ed25519Signer.generate(TOKEN_ISSUER_ID)
TRUST = TrustBundle({TOKEN_ISSUER_ID: IDENTITY.public_key_bytes()})
RECORDS = Caller("svc-records", common_pb2.PRINCIPAL_KIND_SERVICE)
SHA = hashlib.sha256(b"blob").hexdigest()


def bearer(caller: Caller, service: str) -> list[tuple[str, str]]:
    """Call metadata carrying a valid access token of caller for service."""
    token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(caller, audience(service)), 60)
    return [("authorization", f"Bearer {token}")]


class BlockingBlobStore(LocalBlobStore):
    """A slow backend: stat() waits until released (or gives up after wait_seconds), counting the waiters."""

    def __init__(self, directory: pathlib.Path, wait_seconds: float = 10.0) -> None:
        super().__init__(directory)
        self.release = threading.Event()
        self.waiting = threading.Semaphore(0)
        self._wait_seconds = wait_seconds

    def stat(self, sha256: str) -> int:
        self.waiting.release()
        self.release.wait(self._wait_seconds)
        return 4


class BrokenBlobStore(LocalBlobStore):
    """A backend with a bug: its exceptions carry a request value (what must never reach a client or a log)."""

    SECRET = "Jane Doe, MRN 12345"

    def stat(self, sha256: str) -> int:
        raise KeyError(self.SECRET)

    def open(self, sha256: str) -> Iterator[bytes]:
        yield b"first chunk"
        raise ZeroDivisionError(self.SECRET)

    def put(self, chunks: Iterable[bytes], expected_sha256: str | None = None) -> BlobRef:
        raise RecursionError(self.SECRET)


@contextlib.contextmanager
def storage_server(tmp_path: pathlib.Path, store: Any = None, servicer: Any = None,
                   **settings: Any) -> Iterator[tuple[RunningService, grpc.Channel]]:
    """A storage service (its real servicer and access table unless servicer is given) and a channel to it."""
    servicer = servicer or StorageServicer(store or LocalBlobStore(tmp_path / "blobs"), TRUST)
    config = StorageSettings(listen_address="127.0.0.1:0", data_dir=tmp_path, shutdown_grace_seconds=0, **settings)
    running = start_service("storage", config, register_servicer(
        storage_pb2_grpc.add_StorageServiceServicer_to_server, servicer, ACCESS, servicer._auth))
    channel = grpc.insecure_channel(running.address)
    try:
        yield running, channel
    finally:
        channel.close()
        running.stop()
