"""Stream caps: open tails never starve unary calls; a stream beyond a cap is RESOURCE_EXHAUSTED."""

from __future__ import annotations

import pathlib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from runtime_fixtures import SHA, TRUST, bearer

from carechain.audit.server import AuditServicer, register_audit
from carechain.audit.sqlite_store import SQLiteAuditStore
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.common.v1 import common_pb2
from carechain.core.layout import audience
from carechain.runtime.access import ANY, AccessTable, Allow
from carechain.runtime.auth import Authenticator, Caller
from carechain.runtime.config import AuditSettings, StorageSettings
from carechain.runtime.server import register_servicer, start_service, stream_limiter
from carechain.runtime.streams import ResourceExhausted, StreamLimiter, limited_stream
from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

OPERATOR = Caller("operator", common_pb2.PRINCIPAL_KIND_OPERATOR)
SERVICES = [Caller(f"svc-{name}", common_pb2.PRINCIPAL_KIND_SERVICE)
            for name in ("records", "consent", "identity", "ledger", "storage")]
RECORDS = SERVICES[0]


def test_the_limiter_caps_per_caller_and_in_total_and_frees_slots() -> None:
    limiter = StreamLimiter(max_streams=3, max_per_caller=2)
    with limiter.slot("a"), limiter.slot("a"):
        with pytest.raises(ResourceExhausted, match="this caller"), limiter.slot("a"):
            pass
        with limiter.slot("b"):
            assert limiter.open_streams == 3
            with pytest.raises(ResourceExhausted, match="maximum of 3"), limiter.slot("c"):
                pass
    assert limiter.open_streams == 0
    with pytest.raises(RuntimeError), limiter.slot("a"):
        raise RuntimeError("a stream that failed")
    assert limiter.open_streams == 0  # failed streams give their slot back


def test_the_stream_caps_are_as_configured_and_the_per_caller_cap_never_above_the_total() -> None:
    assert stream_limiter(AuditSettings()).max_streams == 64  # the default: on top of the 16 unary workers
    assert stream_limiter(AuditSettings(max_workers=4, max_streams=100)).max_streams == 100
    assert stream_limiter(AuditSettings(max_streams=10, max_streams_per_caller=50)).max_per_caller == 10


@pytest.fixture()
def audit(tmp_path: pathlib.Path) -> Iterator[grpc.Channel]:
    """The audit service with its default settings (16 workers) and at most 6 open streams."""
    store = SQLiteAuditStore(tmp_path)
    servicer = AuditServicer(Authenticator(TRUST, audience("audit")), store)
    running = start_service("audit", AuditSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0,
                                                   max_streams=6),
                            register_audit(servicer), [store.close])
    try:
        with grpc.insecure_channel(running.address) as channel:
            yield channel
    finally:
        running.stop()


def _tail(stub: audit_pb2_grpc.AuditServiceStub, caller: Caller):
    return stub.StreamEvents(audit_pb2.StreamEventsRequest(), metadata=bearer(caller, "audit"), timeout=60)


def _record(stub: audit_pb2_grpc.AuditServiceStub) -> int:
    event = audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()), time_ms=int(time.time() * 1000), service="records", actor_id="prac-1",
        patient_id="pat-1", record_id="rec-1", action=audit_pb2.AUDIT_ACTION_READ,
        outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS, purpose=common_pb2.PURPOSE_OF_USE_TREAT)
    return stub.RecordEvent(audit_pb2.RecordEventRequest(event=event), metadata=bearer(RECORDS, "audit"),
                            timeout=5).sequence


def _refusal(tail) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        next(tail)
    return caught.value.code(), caught.value.details()


def test_tails_beyond_the_caps_are_refused_and_writes_stay_prompt(audit: grpc.Channel) -> None:
    stub = audit_pb2_grpc.AuditServiceStub(audit)
    _record(stub)  # one stored event, so that an admitted tail answers with it
    # The attack: sixteen tails (the worker count) used to take every worker.
    operator_tails = [_tail(stub, OPERATOR) for _ in range(3)]
    for tail in operator_tails:
        assert next(tail).sequence == 1  # admitted and replaying
    code, details = _refusal(_tail(stub, OPERATOR))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "this caller" in details
    service_tails = [_tail(stub, caller) for caller in SERVICES[:3]]
    for tail in service_tails:
        assert next(tail).sequence == 1
    refused = [_refusal(_tail(stub, caller)) for caller in SERVICES[3:] for _ in range(5)]
    assert {code for code, _ in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all("maximum of 6 open streams" in details for _, details in refused)

    # Six tails are open: writes (and health) still find workers, concurrently and promptly.
    started = time.monotonic()
    with futures.ThreadPoolExecutor(max_workers=12) as pool:
        sequences = list(pool.map(lambda _: _record(stub), range(24)))
    assert sorted(sequences) == list(range(2, 26))
    assert time.monotonic() - started < 10
    health = health_pb2_grpc.HealthStub(audit).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    # An open tail still follows the new events; a closed one gives its slot back.
    assert next(operator_tails[0]).sequence == 2
    operator_tails[0].cancel()
    deadline = time.monotonic() + 10
    while True:  # the tail's worker notices the cancel at its next poll
        replacement = _tail(stub, OPERATOR)
        try:
            assert next(replacement).sequence == 1
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
            time.sleep(0.2)
    for tail in [*operator_tails, *service_tails, replacement]:
        tail.cancel()


def test_a_refused_tail_does_not_hold_a_slot(audit: grpc.Channel) -> None:
    stub = audit_pb2_grpc.AuditServiceStub(audit)
    _record(stub)
    barrier = threading.Barrier(10)

    def open_one(caller: Caller):
        barrier.wait()
        tail = _tail(stub, caller)
        try:
            return next(tail).sequence, tail
        except grpc.RpcError as exc:
            return exc.code(), None

    with futures.ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(open_one, [SERVICES[i % 5] for i in range(10)]))
    admitted = [tail for outcome, tail in results if outcome == 1]
    assert len(admitted) == 6  # exactly the cap, even when they all arrive at once
    assert {outcome for outcome, _ in results if outcome != 1} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    for tail in admitted:
        tail.cancel()


# --- 64 open streams, a handful of unary workers: unary calls still complete (issue 13) -------------------

class HeldStreams(storage_pb2_grpc.StorageServiceServicer):
    """GetBlob is a long-lived stream (one chunk, then held open until released); StatBlob a unary call."""

    def __init__(self) -> None:
        self.release = threading.Event()

    @limited_stream
    def GetBlob(self, request, context):  # noqa: N802 - gRPC method name
        yield storage_pb2.BlobChunk(data=b"open")
        while not self.release.wait(0.05) and context.is_active():
            pass

    def StatBlob(self, request, context):  # noqa: N802 - gRPC method name
        return storage_pb2.BlobRef(sha256=request.sha256, size=1)


STREAMS_TABLE = AccessTable(storage_pb2.DESCRIPTOR.services_by_name["StorageService"],
                            {"GetBlob": Allow.of(service=ANY), "StatBlob": Allow.of(service=ANY)})


def test_64_open_streams_leave_the_unary_workers_and_call_slots_free(tmp_path: pathlib.Path) -> None:
    servicer = HeldStreams()
    settings = StorageSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0, max_workers=4,
                               max_concurrent_rpcs=8, max_streams=64, max_streams_per_caller=64)
    running = start_service("storage", settings, register_servicer(
        storage_pb2_grpc.add_StorageServiceServicer_to_server, servicer, STREAMS_TABLE,
        Authenticator(TRUST, audience("storage"))))
    metadata = bearer(RECORDS, "storage")
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            streams = [stub.GetBlob(storage_pb2.GetBlobRequest(sha256=SHA), metadata=metadata, timeout=60)
                       for _ in range(64)]
            # Each stream is admitted and running in a worker of its own (not queued behind the others).
            assert [next(stream).data for stream in streams] == [b"open"] * 64
            refused = stub.GetBlob(storage_pb2.GetBlobRequest(sha256=SHA), metadata=bearer(SERVICES[1], "storage"),
                                   timeout=60)
            code, details = _refusal(refused)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "maximum of 64 open streams" in details

            # With all 64 open: as many concurrent unary calls as max_concurrent_rpcs, several rounds.
            def stat(i: int) -> grpc.StatusCode:
                try:
                    # Generous deadlines: a loaded machine is slow, not wrong (the test is about slots, not speed).
                    stub.StatBlob(storage_pb2.StatBlobRequest(sha256=str(i)), metadata=metadata, timeout=60)
                except grpc.RpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            # One client fewer than the slots: a slot is freed just after its answer is sent, so a client
            # calling again at once could find all of them still taken for a moment.
            with futures.ThreadPoolExecutor(max_workers=settings.max_concurrent_rpcs - 1) as pool:
                outcomes = list(pool.map(stat, range(5 * settings.max_concurrent_rpcs)))
            assert set(outcomes) == {grpc.StatusCode.OK}, outcomes
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=60)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            servicer.release.set()
            for stream in streams:
                assert list(stream) == []  # each ends cleanly once released
    finally:
        servicer.release.set()
        running.stop()
