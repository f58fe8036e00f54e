"""A real MinIO server for tests (built by `make tools`), shared by the whole session.

List this module in a test module's ``pytest_plugins`` so every module shares the one
session-scoped server (importing the fixture instead would start one per module); the
helpers below may be imported as well. Each test uses its own bucket, so tests never
see each other's objects.

PYTEST_DONT_REWRITE: no assertions here, and test modules import it before pytest loads it as a plugin.
"""

from __future__ import annotations

import contextlib
import pathlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from minio import Minio

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, audience, write_public_key
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.dev.backends.minio import MinioServer
from carechain.dev.backends.tools import find_tool
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import StorageSettings
from carechain.runtime.server import start_service
from carechain.storage.s3_blobstore import S3BlobStore, s3_http_client
from carechain.storage.server import build
from carechain.storage.v1 import storage_pb2_grpc


def minio_binary() -> pathlib.Path:
    """The pinned MinIO binary; fails the test with the fix if it is not installed."""
    try:
        return find_tool("minio")
    except FileNotFoundError as missing:
        pytest.fail(f"{missing} (builds the pinned MinIO with `go install`)")


@pytest.fixture(scope="session")
def minio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    """One MinIO for the session, on free ports with a temporary data directory."""
    with MinioServer(tmp_path_factory.mktemp("minio"), minio_binary()) as server:
        yield server


def new_bucket_name() -> str:
    """A fresh, valid bucket name."""
    return f"cc-test-{uuid.uuid4().hex[:20]}"


def s3_store(server: MinioServer, bucket: str, **options: int) -> S3BlobStore:
    """An S3BlobStore on ``server`` with the fail-fast connection pool the service uses."""
    client = Minio(server.endpoint, access_key=server.access_key, secret_key=server.secret_key, secure=False,
                   http_client=s3_http_client())
    return S3BlobStore(client, bucket, **options)


def object_versions(server: MinioServer, bucket: str) -> list[str]:
    """Every object version and delete marker in a bucket (what is physically stored), as names."""
    client = server.client()
    return [o.object_name or "" for o in client.list_objects(bucket, recursive=True, include_version=True)]


@dataclass
class StorageOnS3:
    """The real storage gRPC service (in-process) on a MinIO bucket, called as the records service."""

    stub: storage_pb2_grpc.StorageServiceStub
    identity: Ed25519Signer
    settings: StorageSettings

    def records_metadata(self) -> list[tuple[str, str]]:
        """Call metadata with a fresh access token of the records service."""
        claims = caller_claims(Caller("svc-records", common_pb2.PrincipalKind.PRINCIPAL_KIND_SERVICE),
                               audience("storage"))
        token = issue_token(self.identity, ACCESS_TOKEN_TYPE, claims, 300)[0]
        return [("authorization", f"Bearer {token}")]


@contextlib.contextmanager
def storage_service_on_s3(
    server: MinioServer, bucket: str, work_dir: pathlib.Path, **settings: object
) -> Iterator[StorageOnS3]:
    """start_service("storage", ...) built by storage.server.build with blob_backend=s3."""
    identity = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    trust_dir = work_dir / "trust"
    write_public_key(trust_dir / f"{TOKEN_ISSUER_ID}.pub", identity.public_key_bytes())
    config = StorageSettings(
        listen_address="127.0.0.1:0", data_dir=work_dir / "storage", trust_dir=trust_dir, shutdown_grace_seconds=0,
        blob_backend="s3", s3_endpoint=server.endpoint, s3_access_key=server.access_key,
        s3_secret_key=server.secret_key, s3_bucket=bucket, **settings,
    )
    register, closers = build(config)
    running = start_service("storage", config, register, closers)
    channel = grpc.insecure_channel(running.address, options=[("grpc.max_receive_message_length", 8 << 20)])
    try:
        yield StorageOnS3(storage_pb2_grpc.StorageServiceStub(channel), identity, config)
    finally:
        channel.close()
        running.stop()
