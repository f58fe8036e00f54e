"""Load loops and process counters shared by the benchmarks (they start threads and read /proc)."""

from __future__ import annotations

import collections
import os
import pathlib
import statistics
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from bench.figures import count_rpc_lines, proc_stat_cpu_ticks, proc_status_rss_kib

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOAD_AVERAGES: list[float] = []  # every load average printed during this run (the final table quotes the range)


def load_average() -> float:
    """The 1-minute load average now, remembered for the final table."""
    value = os.getloadavg()[0]
    LOAD_AVERAGES.append(value)
    return value


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (its threads included)."""
    return proc_stat_cpu_ticks(pathlib.Path(f"/proc/{pid}/stat").read_text()) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of a process now, in MiB."""
    return proc_status_rss_kib(pathlib.Path(f"/proc/{pid}/status").read_text()) / 1024


def rpc_lines(log_file: pathlib.Path) -> int:
    """How many calls a service has logged so far."""
    return count_rpc_lines(log_file.read_bytes()) if log_file.exists() else 0


@dataclass
class Window:
    """CPU (and, for services with a log, RPC) counters of a set of processes between two points in time.

    pids: name -> pid; logs: name -> the service's JSON log (RPC lines); extra: name -> a function returning a
    count so far (e.g. OpenBao requests from its audit log), reported per operation like the others.
    """

    pids: dict[str, int]
    logs: dict[str, pathlib.Path] = field(default_factory=dict)
    extra: dict[str, Callable[[], int]] = field(default_factory=dict)
    _cpu: dict[str, float] = field(default_factory=dict)
    _rpcs: dict[str, int] = field(default_factory=dict)
    _extra: dict[str, int] = field(default_factory=dict)
    _client_cpu: float = 0.0

    def open(self) -> Window:
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._rpcs = {name: rpc_lines(log) for name, log in self.logs.items()}
        self._extra = {name: count() for name, count in self.extra.items()}
        self._client_cpu = time.process_time()
        return self

    def close(self, operations: int) -> dict[str, dict[str, float]]:
        """Per process: CPU ms and RPCs per operation; "client": this process; each extra counter per operation."""
        time.sleep(0.3)  # let the last log lines reach the files
        operations = max(operations, 1)
        result: dict[str, dict[str, float]] = {}
        for name, pid in self.pids.items():
            result[name] = {"cpu_ms": (cpu_seconds(pid) - self._cpu[name]) * 1000 / operations}
            if name in self.logs:
                result[name]["rpcs"] = (rpc_lines(self.logs[name]) - self._rpcs[name]) / operations
        result["client"] = {"cpu_ms": (time.process_time() - self._client_cpu) * 1000 / operations}
        for name, count in self.extra.items():
            result[name] = {"count": (count() - self._extra[name]) / operations}
        return result


FAILED_CALLS: collections.Counter[str] = collections.Counter()  # status -> calls that failed during this run


def _failed(exc: grpc.RpcError, failures: collections.Counter[str], lock: threading.Lock) -> None:
    with lock:
        failures[f"{exc.code().name}: {exc.details()}"] += 1


def report_failures(failures: collections.Counter[str], what: str) -> None:
    """Print (and remember for the final table) the calls of a loop that failed: they are not counted as done."""
    if failures:
        FAILED_CALLS.update(failures)
        cells = "; ".join(f"{count} x {status}" for status, count in failures.most_common(3))
        print(f"  ! {sum(failures.values())} {what} calls failed (not counted): {cells}")


def closed_loop(operation: Callable[[int], object], clients: int, seconds: float) -> tuple[int, list[float]]:
    """clients threads call operation back to back for seconds; (operations done, latencies).

    A call failing with a gRPC error is not counted (nor its latency); the failures are printed.
    """
    stop_at = time.monotonic() + seconds
    latencies: list[float] = []
    counter = iter(range(10**12))
    lock = threading.Lock()
    failures: collections.Counter[str] = collections.Counter()

    def worker() -> None:
        while time.monotonic() < stop_at:
            with lock:
                index = next(counter)
            started = time.perf_counter()
            try:
                operation(index)
            except grpc.RpcError as exc:
                _failed(exc, failures, lock)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report_failures(failures, f"closed-loop ({clients} clients)")
    return len(latencies), latencies


def rate_runs(operation: Callable[[int], object], clients: int, seconds: float, runs: int) -> list[float]:
    """Operations per second of each of runs closed-loop runs."""
    return [closed_loop(operation, clients, seconds)[0] / seconds for _ in range(runs)]


def count_loop(operation: Callable[[int], object], count: int, clients: int) -> tuple[float, list[float]]:
    """operation(i) for i < count on clients threads; (elapsed seconds, per-call latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    failures: collections.Counter[str] = collections.Counter()

    def one(index: int) -> None:
        started = time.perf_counter()
        try:
            operation(index)
        except grpc.RpcError as exc:
            _failed(exc, failures, lock)
            return
        with lock:
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - started
    report_failures(failures, f"{count:,}-call ({clients} clients)")
    return elapsed, latencies


def open_loop(operation: Callable[[int], object], rate: float, seconds: float, clients: int) -> list[float]:
    """Calls started at a fixed rate (not when the previous one returns); latency includes queueing."""
    total = max(1, int(rate * seconds))
    started_at = time.perf_counter()
    latencies: list[float] = []
    lock = threading.Lock()
    failures: collections.Counter[str] = collections.Counter()

    def call(index: int) -> None:
        scheduled = started_at + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        try:
            operation(index)
        except grpc.RpcError as exc:
            _failed(exc, failures, lock)
            return
        with lock:
            latencies.append(time.perf_counter() - scheduled)

    with futures.ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(call, range(total)))
    report_failures(failures, f"open-loop ({rate:.0f}/s)")
    return latencies


class PeakRss:
    """Samples a process's RSS in a thread while a block runs; ``peak`` is the highest seen (MiB)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except (OSError, ValueError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def median_cells(breakdown: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The per-run breakdowns of :meth:`Window.close` reduced to their medians."""
    return {name: {key: statistics.median(run[name][key] for run in breakdown) for key in breakdown[0][name]}
            for name in breakdown[0]}
