"""MicroBatcher: concurrent callers share flushes, each gets its own result or error."""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace

from carechain.runtime.batching import BatchClosed, MicroBatcher


def test_a_lone_call_is_a_batch_of_one_on_the_callers_thread() -> None:
    seen: list[tuple[list[int], str]] = []

    def flush(items: list[int]) -> list[int]:
        seen.append((items, threading.current_thread().name))
        return [i * 2 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher("double", flush)
    assert batcher.submit(21) == 42
    assert seen == [([21], threading.current_thread().name)]


def test_concurrent_callers_are_batched_and_each_gets_its_own_result() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def flush(items: list[int]) -> list[int]:
        sizes.append(len(items))
        gate.wait(5)  # the first batch is slow: the others queue up behind it
        return [i + 1000 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher("slow", flush, max_batch=64, max_in_flight=1)
    with ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(batcher.submit, i) for i in range(50)]
        time.sleep(0.3)
        gate.set()
        results = [f.result(10) for f in futures]
    assert results == [i + 1000 for i in range(50)]
    assert sum(sizes) == 50
    assert len(sizes) < 50  # batched, not one by one
    assert max(sizes) <= 64


def test_an_error_for_one_item_reaches_only_its_caller() -> None:
    def flush(items: list[int]) -> list[object]:
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    batcher: MicroBatcher[int, object] = MicroBatcher("odd", flush)
    with ThreadPoolExecutor(8) as pool:
        futures = {i: pool.submit(batcher.submit, i) for i in range(16)}
    for i, future in futures.items():
        if i % 2:
            with pytest.raises(ValueError, match=f"bad {i}"):
                future.result()
        else:
            assert future.result() == i


def test_a_failing_flush_fails_every_caller_of_that_batch_and_the_next_batch_still_runs() -> None:
    calls = 0

    def flush(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("peer down")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher("flaky", flush)
    with pytest.raises(ConnectionError):
        batcher.submit(1)
    assert batcher.submit(2) == 2


def test_a_wrong_number_of_results_is_an_error_not_a_mismatch() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher("short", lambda items: items[:-1])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        batcher.submit(1)


def test_under_steady_load_no_caller_waits_for_ever_and_nothing_is_lost() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher("steady", lambda items: [time.sleep(0.001) or i for i in items],
                                                   max_batch=8, max_in_flight=2)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(batcher.submit, range(600), timeout=60))
    assert results == list(range(600))


def test_a_closed_batcher_refuses_new_items() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher("closed", lambda items: items)
    batcher.close()
    with pytest.raises(BatchClosed):
        batcher.submit(1)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        MicroBatcher("x", lambda items: items, max_batch=0)


def test_a_larger_batch_does_not_run_under_the_flushing_callers_context() -> None:
    # The served call (and so its deadline) lives in a contextvar: one caller's nearly spent deadline
    # must not bound a batch that carries other callers' items. A lone call keeps its own context.
    served: contextvars.ContextVar[str] = contextvars.ContextVar("served", default="none")
    seen: list[tuple[int, str]] = []
    gate = threading.Event()

    def flush(items: list[int]) -> list[int]:
        seen.append((len(items), served.get()))
        gate.wait(5)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher("detached", flush, max_in_flight=1)

    def call(i: int) -> int:
        served.set(f"caller {i}")
        return batcher.submit(i)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, i) for i in range(8)]
        time.sleep(0.3)
        gate.set()
        assert [f.result(10) for f in futures] == list(range(8))
    assert all(value.startswith("caller ") if size == 1 else value == "none" for size, value in seen)
    assert any(size > 1 for size, _ in seen)


def test_a_batch_of_one_is_traced_as_part_of_its_callers_trace() -> None:
    traces: list[int] = []

    def flush(items: list[int]) -> list[int]:
        traces.append(trace.get_current_span().get_span_context().trace_id)
        return items

    caller = trace.NonRecordingSpan(trace.SpanContext(trace_id=0x1234, span_id=0x99, is_remote=False))
    with trace.use_span(caller):
        MicroBatcher("echo", flush).submit(1)
    assert traces == [0x1234]


def test_many_callers_with_hand_offs_all_get_their_own_result() -> None:
    # 64 threads, one flusher slot: every caller is woken (done, or promoted to flush) exactly as needed.
    def flush(items: list[int]) -> list[int]:
        time.sleep(0.0005)  # lets the queue fill, so slots are handed to waiting callers
        return [i + 1 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher("inc", flush, max_batch=8, max_in_flight=1)
    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(batcher.submit, range(3000), timeout=60))
    assert results == [i + 1 for i in range(3000)]
