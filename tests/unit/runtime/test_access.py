"""The access-control mechanism: complete tables, deny by default, the documented table is the code's."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from carechain.audit.v1 import audit_pb2
from carechain.common.v1 import common_pb2
from carechain.consent.v1 import consent_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.dev.access_table import render_markdown, service_tables
from carechain.identity.v1 import identity_pb2
from carechain.ledger.v1 import ledger_pb2
from carechain.records.v1 import records_pb2
from carechain.runtime.access import ANY, AccessTable, Allow, guard
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import StorageSettings
from carechain.runtime.server import start_service
from carechain.storage.file_blobstore import LocalBlobStore
from carechain.storage.server import StorageServicer
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "security.md"
BEGIN, END = "<!-- access-table:begin -->", "<!-- access-table:end -->"
DESCRIPTORS = [
    identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
    storage_pb2.DESCRIPTOR.services_by_name["StorageService"],
    ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"],
    consent_pb2.DESCRIPTOR.services_by_name["ConsentService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    records_pb2.DESCRIPTOR.services_by_name["RecordsService"],
]
IDENTITY = Ed25519Signer.generate(TOKEN_ISSUER_ID)
RECORDS = Caller("svc-records", common_pb2.PRINCIPAL_KIND_SERVICE)


def test_every_rpc_of_every_service_has_a_row() -> None:
    tables = {table.full_name: table for table in service_tables()}
    assert set(tables) == {d.full_name for d in DESCRIPTORS}
    for descriptor in DESCRIPTORS:
        missing = [m.name for m in descriptor.methods if m.name not in tables[descriptor.full_name].rows]
        assert not missing, f"{descriptor.full_name}: no access row for {missing} (denied by default)"


def test_a_row_for_an_unknown_rpc_is_refused_at_import() -> None:
    with pytest.raises(ValueError, match="unknown RPCs"):
        AccessTable(DESCRIPTORS[1], {"DeleteEverything": Allow.everyone()})


def test_docs_security_md_holds_the_tables_of_the_code() -> None:
    text = DOC.read_text()
    assert BEGIN in text and END in text, "docs/security.md lost its access-table markers"
    documented = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert documented == render_markdown(service_tables()).strip(), (
        "docs/security.md is out of date: paste the output of "
        "`python -c 'from carechain.runtime.access import *; print(render_markdown(service_tables()))'`"
    )


def _serve(tmp_path: pathlib.Path, register) -> Iterator[grpc.Channel]:
    settings = StorageSettings(listen_address="127.0.0.1:0", data_dir=tmp_path, shutdown_grace_seconds=0)
    running = start_service("storage", settings, register)
    try:
        with grpc.insecure_channel(running.address) as channel:
            yield channel
    finally:
        running.stop()


def _records_token() -> list[tuple[str, str]]:
    token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(RECORDS, audience("storage")), 60)
    return [("authorization", f"Bearer {token}")]


def _servicer(tmp_path: pathlib.Path) -> StorageServicer:
    trust = TrustBundle({TOKEN_ISSUER_ID: IDENTITY.public_key_bytes()})
    return StorageServicer(LocalBlobStore(tmp_path / "blobs"), trust)


@pytest.fixture
def unguarded(tmp_path: pathlib.Path) -> Iterator[grpc.Channel]:
    """A service added to the server without its access table."""
    servicer = _servicer(tmp_path)

    def register(server: grpc.Server) -> list[str]:
        storage_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)
        return [DESCRIPTORS[1].full_name]

    yield from _serve(tmp_path, register)


def test_a_service_registered_without_its_table_is_refused_but_health_stays_open(unguarded: grpc.Channel) -> None:
    stub = storage_pb2_grpc.StorageServiceStub(unguarded)
    with pytest.raises(grpc.RpcError) as caught:
        stub.StatBlob(storage_pb2.StatBlobRequest(sha256="0" * 64), metadata=_records_token(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.GetBlob(storage_pb2.GetBlobRequest(sha256="0" * 64), metadata=_records_token(), timeout=10))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    health = health_pb2_grpc.HealthStub(unguarded).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def partial(tmp_path: pathlib.Path) -> Iterator[grpc.Channel]:
    """A table with a row for StatBlob only."""
    servicer = _servicer(tmp_path)
    table = AccessTable(DESCRIPTORS[1], {"StatBlob": Allow.of(service=ANY, services=["records"])})

    def register(server: grpc.Server) -> list[str]:
        storage_pb2_grpc.add_StorageServiceServicer_to_server(guard(servicer, table, servicer._auth), server)
        return [DESCRIPTORS[1].full_name]

    yield from _serve(tmp_path, register)


def test_an_rpc_without_a_row_is_denied_by_default(partial: grpc.Channel) -> None:
    stub = storage_pb2_grpc.StorageServiceStub(partial)
    with pytest.raises(grpc.RpcError) as caught:
        stub.StatBlob(storage_pb2.StatBlobRequest(sha256="0" * 64), metadata=_records_token(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # admitted: the handler looked and found nothing
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.GetBlob(storage_pb2.GetBlobRequest(sha256="0" * 64), metadata=_records_token(), timeout=10))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no access rule" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.StatBlob(storage_pb2.StatBlobRequest(sha256="0" * 64), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
