"""The call interceptor and server options: a status for every error (never UNKNOWN), uint64 ranges,
and backpressure (max_concurrent_rpcs) through real gRPC servers."""

from __future__ import annotations

import logging
import pathlib
import socket
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from runtime_fixtures import RECORDS, SHA, TRUST, BlockingBlobStore, BrokenBlobStore, bearer, storage_server

from carechain.audit.server import AuditServicer, register_audit
from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.common.v1 import common_pb2
from carechain.core.errors import InvalidArgument
from carechain.core.layout import audience
from carechain.ledger.v1 import ledger_pb2
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import AuditSettings, ServiceSettings
from carechain.runtime.server import MAX_UINT64_FIELD, ListenError, check_request_ranges, run_service, start_service
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

OPERATOR = Caller("operator", common_pb2.PRINCIPAL_KIND_OPERATOR)
PATIENT = Caller("pat-1", common_pb2.PRINCIPAL_KIND_PATIENT, "org-a")


@pytest.fixture()
def audit(tmp_path: pathlib.Path) -> Iterator[audit_pb2_grpc.AuditServiceStub]:
    store = SQLiteAuditStore(tmp_path)
    servicer = AuditServicer(Authenticator(TRUST, audience("audit")), store)
    running = start_service("audit", AuditSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0),
                            register_audit(servicer), [store.close])
    try:
        with grpc.insecure_channel(running.address) as channel:
            yield audit_pb2_grpc.AuditServiceStub(channel)
    finally:
        running.stop()


def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


# --- uint64 fields above 2^63-1 -------------------------------------------------------------------

@pytest.mark.parametrize("caller", [OPERATOR, PATIENT], ids=["operator", "patient"])
def test_a_sequence_above_int64_is_invalid_argument_naming_the_field(audit, caller: Caller) -> None:
    # The patient's scope check looks the event up before the handler: the range check comes first.
    code, details = _status(lambda: audit.GetEventProof(
        audit_pb2.GetEventProofRequest(sequence=2**64 - 1), metadata=bearer(caller, "audit"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == f"sequence: must be at most {MAX_UINT64_FIELD}"


def test_a_stream_cursor_above_int64_is_invalid_argument(audit) -> None:
    code, details = _status(lambda: list(audit.StreamEvents(
        audit_pb2.StreamEventsRequest(after_sequence=2**63, replay_only=True),
        metadata=bearer(OPERATOR, "audit"), timeout=10)))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, f"after_sequence: must be at most {MAX_UINT64_FIELD}")


def test_the_largest_int64_is_accepted_and_looked_up(audit) -> None:
    code, _ = _status(lambda: audit.GetEventProof(
        audit_pb2.GetEventProofRequest(sequence=MAX_UINT64_FIELD), metadata=bearer(OPERATOR, "audit"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    assert list(audit.StreamEvents(audit_pb2.StreamEventsRequest(after_sequence=MAX_UINT64_FIELD, replay_only=True),
                                   metadata=bearer(OPERATOR, "audit"), timeout=10)) == []


def test_the_range_check_names_nested_and_repeated_fields() -> None:
    history = audit_pb2.GetAccessHistoryResponse(disclosures=[
        audit_pb2.Disclosure(sequence=7), audit_pb2.Disclosure(sequence=2**64 - 1)])
    with pytest.raises(InvalidArgument) as caught:
        check_request_ranges(history)
    assert caught.value.field == "disclosures[1].sequence"
    history.disclosures[1].sequence = MAX_UINT64_FIELD
    check_request_ranges(history)  # in range: no error
    check_request_ranges(ledger_pb2.GetEvidenceRequest())  # nothing set


# --- unexpected errors: INTERNAL, one log line, nothing of the exception -------------------------

def _internal_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unexpected_error_is_internal_logged_once_without_its_message(tmp_path, caplog) -> None:
    with storage_server(tmp_path, BrokenBlobStore(tmp_path / "blobs")) as (_, channel), \
            caplog.at_level(logging.INFO):
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        code, details = _status(lambda: stub.StatBlob(storage_pb2.StatBlobRequest(sha256=SHA),
                                                      metadata=bearer(RECORDS, "storage"), timeout=10))
    assert code == grpc.StatusCode.INTERNAL
    assert details.startswith("internal error") and BrokenBlobStore.SECRET not in details
    [error] = _internal_errors(caplog)
    assert error.exc_info is None  # no traceback: its frames and message could carry request values
    assert (error.error_type, error.rpc_method) == ("KeyError", "/carechain.storage.v1.StorageService/StatBlob")
    assert "stat" in error.error_at
    assert BrokenBlobStore.SECRET not in repr(vars(error))


def test_an_error_while_streaming_is_internal_after_the_first_chunk(tmp_path, caplog) -> None:
    with storage_server(tmp_path, BrokenBlobStore(tmp_path / "blobs")) as (_, channel):
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        chunks = stub.GetBlob(storage_pb2.GetBlobRequest(sha256=SHA), metadata=bearer(RECORDS, "storage"), timeout=10)
        assert next(chunks).data == b"first chunk"
        code, details = _status(lambda: next(chunks))
    assert code == grpc.StatusCode.INTERNAL and BrokenBlobStore.SECRET not in details
    assert [r.error_type for r in _internal_errors(caplog)] == ["ZeroDivisionError"]


def test_a_recursion_error_in_a_request_stream_handler_is_internal(tmp_path) -> None:
    with storage_server(tmp_path, BrokenBlobStore(tmp_path / "blobs")) as (_, channel):
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        upload = iter([storage_pb2.PutBlobRequest(metadata=storage_pb2.PutBlobMetadata(expected_sha256=SHA)),
                       storage_pb2.PutBlobRequest(chunk=b"blob")])
        code, details = _status(lambda: stub.PutBlob(upload, metadata=bearer(RECORDS, "storage"), timeout=10))
    assert code == grpc.StatusCode.INTERNAL and BrokenBlobStore.SECRET not in details


def test_a_client_error_is_logged_without_traceback_at_info(tmp_path, caplog) -> None:
    with storage_server(tmp_path) as (_, channel), caplog.at_level(logging.INFO):
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        code, details = _status(lambda: stub.StatBlob(storage_pb2.StatBlobRequest(sha256="nope"),
                                                      metadata=bearer(RECORDS, "storage"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("sha256")
    assert not _internal_errors(caplog)
    assert all(r.exc_info is None for r in caplog.records)


# --- backpressure: maximum_concurrent_rpcs ----------------------------------------------------------

def test_calls_beyond_max_concurrent_rpcs_are_refused_at_once_and_the_rest_complete(tmp_path) -> None:
    store = BlockingBlobStore(tmp_path / "blobs")
    with storage_server(tmp_path, store, max_workers=4, max_concurrent_rpcs=3) as (_, channel), \
            futures.ThreadPoolExecutor(max_workers=12) as pool:
        stub = storage_pb2_grpc.StorageServiceStub(channel)

        def stat() -> grpc.StatusCode:
            try:
                stub.StatBlob(storage_pb2.StatBlobRequest(sha256=SHA), metadata=bearer(RECORDS, "storage"), timeout=20)
                return grpc.StatusCode.OK
            except grpc.RpcError as exc:
                return exc.code()

        started = time.monotonic()
        held = [pool.submit(stat) for _ in range(3)]
        for _ in range(3):
            assert store.waiting.acquire(timeout=10), "the first calls never reached the backend"
        flood = [pool.submit(stat) for _ in range(8)]
        refused = [f.result(timeout=5) for f in flood]
        assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 8
        assert time.monotonic() - started < 5, "excess calls waited instead of being refused"
        store.release.set()
        assert [f.result(timeout=10) for f in held] == [grpc.StatusCode.OK] * 3
        # And the server serves again once the load is gone.
        assert stat() == grpc.StatusCode.OK
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


# --- a listen address it cannot bind is a one-line configuration error naming the setting ---


def _no_servicers(server):
    return []


@pytest.fixture
def busy_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield f"127.0.0.1:{taken.getsockname()[1]}"


def test_a_busy_port_names_the_setting(busy_address: str) -> None:
    with pytest.raises(ListenError, match=f"^CARECHAIN_LISTEN_ADDRESS: cannot listen on {busy_address} "):
        start_service("test", ServiceSettings(listen_address=busy_address), _no_servicers)


def test_a_busy_health_port_names_its_setting(busy_address: str) -> None:
    settings = ServiceSettings(listen_address="127.0.0.1:0", health_listen_address=busy_address)
    with pytest.raises(ListenError, match="^CARECHAIN_HEALTH_LISTEN_ADDRESS: cannot listen on "):
        start_service("test", settings, _no_servicers)


def test_run_service_exits_with_the_message_not_a_traceback(busy_address: str) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(SystemExit) as exited:
            run_service("storage", ServiceSettings(listen_address=busy_address), _no_servicers)
    finally:  # run_service configures the process's logging: give the test session its own back
        root.handlers[:], root.level = handlers, level
    assert str(exited.value.code).startswith(f"storage: CARECHAIN_LISTEN_ADDRESS: cannot listen on {busy_address}")
