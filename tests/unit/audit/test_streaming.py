"""StreamEvents (carechain.audit.streaming) through gRPC: replay from a cursor, follow live events, filters."""

from __future__ import annotations

import pathlib
import queue
import threading
from collections.abc import Iterator

import grpc
import pytest
from audit_fixtures import (
    CONSENT,
    OPERATOR,
    PATIENT,
    PRACTITIONER,
    RECORDS,
    AuditEnv,
    metadata,
    running_audit,
    status_of,
    wait_until,
)

from carechain.audit.streaming import EventTail
from carechain.audit.v1 import audit_pb2


@pytest.fixture()
def env(tmp_path: pathlib.Path) -> Iterator[AuditEnv]:
    with running_audit(tmp_path) as running:
        yield running


def test_stream_resumes_from_a_cursor_without_gap_or_duplicate(env: AuditEnv) -> None:
    for i in range(5):
        env.record(reason=f"before {i}")
    stream = env.stream()
    received = [next(stream) for _ in range(3)]
    stream.cancel()  # disconnect
    for i in range(3):
        env.record(reason=f"while away {i}")
    resumed = env.stream(after_sequence=received[-1].sequence, replay_only=True)
    received += list(resumed)
    assert [s.sequence for s in received] == list(range(1, 9))
    assert [s.event.reason for s in received] == [f"before {i}" for i in range(5)] + [
        f"while away {i}" for i in range(3)]


def test_stream_follows_live_events_after_replaying(env: AuditEnv) -> None:
    env.record(reason="stored")
    stream = env.stream()
    got: queue.Queue[audit_pb2.StoredAuditEvent] = queue.Queue()

    def consume() -> None:
        try:
            for stored in stream:
                got.put(stored)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert got.get(timeout=5).event.reason == "stored"
    env.record(reason="live 1")
    env.record(reason="live 2")
    assert [got.get(timeout=5).event.reason for _ in range(2)] == ["live 1", "live 2"]
    stream.cancel()
    thread.join(timeout=5)


def test_stream_filters(env: AuditEnv) -> None:
    env.record(reason="a")
    env.record(reason="b", outcome=audit_pb2.AUDIT_OUTCOME_DENIED)
    env.record(reason="c", patient_id="psn-2", actor_id="prac-2")
    env.record(reason="d", alert=True)
    env.record(CONSENT, reason="e", service="consent", action=audit_pb2.AUDIT_ACTION_DECIDE)

    def reasons(**filters: object) -> list[str]:
        return [s.event.reason for s in env.stream(replay_only=True, **filters)]

    assert reasons() == ["a", "b", "c", "d", "e"]
    assert reasons(service="consent") == ["e"]
    assert reasons(outcome=audit_pb2.AUDIT_OUTCOME_DENIED) == ["b"]
    assert reasons(patient_id="psn-2") == ["c"]
    assert reasons(actor_id="prac-2") == ["c"]
    assert reasons(alerts_only=True) == ["d"]
    assert reasons(after_sequence=3, service="records") == ["d"]


def test_an_unknown_outcome_filter_is_rejected(env: AuditEnv) -> None:
    code, details = status_of(lambda: list(env.stream(replay_only=True, outcome=99)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("outcome:")


def test_stream_is_for_services_and_the_operator(env: AuditEnv) -> None:
    env.record()
    for caller in (PATIENT, PRACTITIONER):
        code, _ = status_of(lambda caller=caller: list(env.stream(caller, replay_only=True)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    assert len(list(env.stream(RECORDS, replay_only=True))) == 1


def test_64_following_tails_cost_appends_no_store_reads(tmp_path: pathlib.Path) -> None:
    # 64 tails open (each holds a worker today; streams get at most half the workers), then 8 writers append 25 each.
    with running_audit(tmp_path, max_workers=160, max_streams=64, max_streams_per_caller=64,
                       max_concurrent_rpcs=256) as env:
        env.record(reason="before the tails")
        tails = [env.stub.StreamEvents(audit_pb2.StreamEventsRequest(), metadata=metadata(OPERATOR), timeout=60)
                 for _ in range(64)]
        received: list[list[str]] = [[] for _ in tails]

        def consume(i: int) -> None:
            try:
                for stored in tails[i]:
                    received[i].append(stored.event.reason)
            except grpc.RpcError:
                pass  # cancelled at the end

        consumers = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(64)]
        for t in consumers:
            t.start()
        wait_until(lambda: all(r == ["before the tails"] for r in received), "every tail replayed the stored event")
        reads: list[int] = []
        real_read = env.store.events_after

        def counting_read(after_sequence: int, limit: int):  # type: ignore[no-untyped-def]
            reads.append(after_sequence)
            return real_read(after_sequence, limit)

        env.store.events_after = counting_read  # type: ignore[method-assign]

        def write(w: int) -> None:
            for i in range(25):
                env.record(reason=f"w{w} #{i}")

        writers = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for t in writers:
            t.start()
        for t in writers:
            t.join(timeout=60)
        wait_until(lambda: all(len(r) == 201 for r in received), "every tail received every event", timeout=30)
        expected = [s.event.reason for s in real_read(0, 1000)]
        assert all(r == expected for r in received)  # in sequence order, no gap, no duplicate
        # Following tails read the shared window: at most the one read that learns the chain's tip, not 64 per wake.
        assert len(reads) <= 1, reads
        for tail in tails:
            tail.cancel()


def test_idle_tails_are_not_woken_by_events_their_filter_refuses(tmp_path: pathlib.Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 alert-only tails stay asleep through 40 ordinary appends (no window read, no wake-up), then each one
    # receives the alert, in order after nothing else; a tail with no filter sees all 41 in sequence order.
    wakes: list[int] = []
    real_recent_after = EventTail._recent_after

    def counting(self: EventTail, cursor: int, limit: int):  # type: ignore[no-untyped-def]
        wakes.append(cursor)
        return real_recent_after(self, cursor, limit)

    monkeypatch.setattr(EventTail, "_recent_after", counting)
    with running_audit(tmp_path, max_workers=64, max_streams=32, max_streams_per_caller=32,
                       max_concurrent_rpcs=128) as env:
        idle = [env.stub.StreamEvents(audit_pb2.StreamEventsRequest(alerts_only=True), metadata=metadata(OPERATOR),
                                      timeout=60) for _ in range(16)]
        everything = env.stub.StreamEvents(audit_pb2.StreamEventsRequest(), metadata=metadata(OPERATOR), timeout=60)
        received: list[list[str]] = [[] for _ in range(17)]

        def consume(i: int, stream: object) -> None:
            try:
                for stored in stream:  # type: ignore[attr-defined]
                    received[i].append(stored.event.reason)
            except grpc.RpcError:
                pass  # cancelled at the end

        consumers = [threading.Thread(target=consume, args=(i, s), daemon=True)
                     for i, s in enumerate([*idle, everything])]
        for t in consumers:
            t.start()
        env.record(reason="first")  # every tail is registered once the unfiltered one has this
        wait_until(lambda: received[16] == ["first"], "the unfiltered tail follows")
        wakes.clear()
        for i in range(40):
            env.record(reason=f"ordinary {i}")
        wait_until(lambda: len(received[16]) == 41, "the unfiltered tail received every event")
        assert len(wakes) <= 41  # only the unfiltered tail was woken (at most once per append)
        env.record(reason="alert", alert=True)
        wait_until(lambda: all(r == ["alert"] for r in received[:16]), "every alert-only tail received the alert")
        assert received[16] == ["first", *[f"ordinary {i}" for i in range(40)], "alert"]
        for stream in [*idle, everything]:
            stream.cancel()


def test_event_batches_hold_the_same_events_in_order_and_follow_live_ones(env: AuditEnv) -> None:
    for i in range(5):
        env.record(reason=f"stored {i}", outcome=audit_pb2.AUDIT_OUTCOME_DENIED if i % 2 else
                   audit_pb2.AUDIT_OUTCOME_SUCCESS)
    replay = list(env.stub.StreamEventBatches(audit_pb2.StreamEventsRequest(replay_only=True),
                                              metadata=metadata(OPERATOR), timeout=10))
    assert all(batch.events for batch in replay)  # never an empty batch
    assert [s for b in replay for s in b.events] == list(env.stream(replay_only=True))  # the same messages
    denied = env.stub.StreamEventBatches(
        audit_pb2.StreamEventsRequest(replay_only=True, outcome=audit_pb2.AUDIT_OUTCOME_DENIED),
        metadata=metadata(OPERATOR), timeout=10)
    assert [s.event.reason for b in denied for s in b.events] == ["stored 1", "stored 3"]

    live = env.stub.StreamEventBatches(audit_pb2.StreamEventsRequest(after_sequence=5), metadata=metadata(OPERATOR),
                                       timeout=30)
    got: queue.Queue[audit_pb2.StoredAuditEvent] = queue.Queue()

    def consume() -> None:
        try:
            for batch in live:
                for stored in batch.events:
                    got.put(stored)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    writers = [threading.Thread(target=lambda w=w: [env.record(reason=f"live {w}.{i}") for i in range(10)])
               for w in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=30)
    received = [got.get(timeout=10) for _ in range(40)]
    assert [s.sequence for s in received] == list(range(6, 46))  # every live event, in order, no duplicate
    assert received == list(env.store.events_after(5, 100))  # each exactly as stored (encoded once, shared)
    live.cancel()
    thread.join(timeout=5)


def test_the_sdk_tail_hands_out_batches_event_by_event(env: AuditEnv) -> None:
    from carechain.client.sdk import AuditEventStream

    for i in range(3):
        env.record(reason=f"e{i}")
    stream = AuditEventStream(env.stub.StreamEventBatches(audit_pb2.StreamEventsRequest(replay_only=True),
                                                          metadata=metadata(OPERATOR), timeout=10))
    assert [s.event.reason for s in stream] == ["e0", "e1", "e2"]


def test_the_sdk_tail_falls_back_to_stream_events_on_an_audit_service_without_batches(env: AuditEnv) -> None:
    from carechain.client.sdk import AuditEventStream

    class OldAudit(grpc.RpcError):  # what an audit service from before StreamEventBatches answers
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNIMPLEMENTED

    def unimplemented():  # type: ignore[no-untyped-def]
        raise OldAudit()
        yield  # a stream

    for i in range(3):
        env.record(reason=f"e{i}")
    stream = AuditEventStream(unimplemented(), per_event=lambda: env.stream(replay_only=True))
    assert [s.event.reason for s in stream] == ["e0", "e1", "e2"]
    # Any other failure, or one after events were received, is the caller's to see.
    with pytest.raises(grpc.RpcError):
        next(AuditEventStream(env.stub.StreamEventBatches(audit_pb2.StreamEventsRequest(replay_only=True),
                                                          metadata=metadata(PATIENT), timeout=10),
                              per_event=lambda: env.stream(replay_only=True)))
