"""The bench's load loops count only calls that succeeded and report the ones that failed (never on time)."""

from __future__ import annotations

import grpc
import pytest

from bench import harness


class _Refused(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return "Concurrent RPC limit exceeded!"


def _every_third_refused(index: int) -> None:
    if index % 3 == 0:
        raise _Refused()


def test_count_loop_counts_failures_apart(capsys: pytest.CaptureFixture[str]) -> None:
    harness.FAILED_CALLS.clear()
    _elapsed, latencies = harness.count_loop(_every_third_refused, 30, 4)
    assert len(latencies) == 20
    assert harness.FAILED_CALLS == {"RESOURCE_EXHAUSTED: Concurrent RPC limit exceeded!": 10}
    assert "10 30-call (4 clients) calls failed (not counted)" in capsys.readouterr().out


def test_closed_loop_does_not_count_failed_calls() -> None:
    harness.FAILED_CALLS.clear()
    done, latencies = harness.closed_loop(_every_third_refused, 2, 0.05)
    failed = sum(harness.FAILED_CALLS.values())
    assert done == len(latencies) > 0
    assert failed > 0
    assert abs(done - 2 * failed) <= 2  # one in three refused, whatever the speed of the machine


def test_other_errors_stop_the_loop() -> None:
    def broken(_index: int) -> None:
        raise KeyError("a bug in the bench, not a refusal")

    with pytest.raises(KeyError):
        harness.count_loop(broken, 3, 1)


def test_window_reports_extra_counters_per_operation() -> None:
    counts = iter([100, 130])
    window = harness.Window({}, extra={"openbao requests": lambda: next(counts)}).open()
    result = window.close(operations=10)
    assert result["openbao requests"] == {"count": 3.0}
    assert "cpu_ms" in result["client"]


def test_median_cells() -> None:
    runs = [{"ledger": {"cpu_ms": 3.0, "rpcs": 1.0}}, {"ledger": {"cpu_ms": 9.0, "rpcs": 2.0}},
            {"ledger": {"cpu_ms": 4.0, "rpcs": 1.0}}]
    assert harness.median_cells(runs) == {"ledger": {"cpu_ms": 4.0, "rpcs": 1.0}}
