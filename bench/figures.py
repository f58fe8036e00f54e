"""The pure parts of `make bench`: issue 13's targets, results, verdicts, the final table and counter parsing.

Nothing here starts a process or reads the clock, so the unit tests (tests/unit/bench) import it cheaply.
A :class:`Result` holds every run's value of one figure and, when the figure is compared with a baseline,
that baseline's values measured in the same run; :func:`render_table` prints the issue's table with the
median (min-max), the baseline, the ratio, the "must reach" and "goal" values and a verdict.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """One row of issue 13's table: what is measured, against what, and what it must reach.

    on: "value" (the figure itself is held to must/goal) or "ratio" (figure / baseline is). higher: whether a
    larger number is better (rates) or worse (latency, CPU, memory growth).
    """

    key: str
    title: str
    unit: str
    baseline: str
    must: float | None
    goal: float | None
    on: str = "value"
    higher: bool = True


# Issue 13 ("What it must reach" and "What must also hold at scale"), in its order. The scale rows state the
# issue's words ("flat", "do not slow writes") as numbers: the bench's reading, said so in docs/performance.md.
TARGETS: tuple[Target, ...] = (
    Target("put_embedded", "PutRecord/s embedded, 64 clients", "/s", "gRPC echo, 64 clients", 400, 1000),
    Target("get_embedded", "GetRecord/s embedded, 64 clients", "/s", "gRPC echo, 64 clients", 800, 2000),
    Target("get_p99", "GetRecord p99 at 50% of max load", "ms", "gRPC echo p99, same open loop", 25, 10,
           higher=False),
    Target("put_backends", "PutRecord/s OpenBao+MinIO+etcd, 3 validators", "/s", "gRPC echo, 64 clients", 150, 500),
    Target("bulk_embedded", "bulk import resources/s embedded", "/s", "PutRecord/s, 64 clients", 2000, 5000),
    Target("bulk_backends", "bulk import resources/s backends, 3 validators", "/s", "PutRecord/s backends", 800, 2000),
    Target("ledger_final", "ledger final tx/s vs raw etcd put/s", "/s", "raw etcd put/s, same clients", 0.5, 0.8,
           on="ratio"),
    Target("large_record", "1 GiB record through the gateway vs raw MinIO put", "MiB/s", "raw MinIO put", 0.7, 0.9,
           on="ratio"),
    Target("large_record_rss", "records RSS during the 1 GiB record", "MiB", "", 200, None, higher=False),
    Target("cpu_put", "CPU ms per PutRecord, all processes", "ms", "AES-256-GCM seal+open", 4, None, higher=False),
    Target("cpu_get", "CPU ms per GetRecord, all processes", "ms", "AES-256-GCM seal+open", 2, None, higher=False),
    Target("ledger_rss_growth", "ledger RSS growth over the writes", "MiB/1k", "", 0.1, None, higher=False),
    Target("tails", "PutRecord/s with 64 audit tails vs none", "/s", "PutRecord/s, no tails", 0.9, None,
           on="ratio"),
    Target("restart_scale", "ledger restart at the largest history vs empty", "s", "restart at 0 transactions",
           None, None, on="ratio", higher=False),
    Target("ledger_open_scale", "ledger open CPU at the largest history vs empty", "ms", "open at 0 transactions",
           None, None, on="ratio", higher=False),
    Target("status_resume_scale", "principal-status restart from its snapshot vs a replay", "ms",
           "replay from index 0, same history", None, None, on="ratio", higher=False),
    Target("history_page_scale", "GetAccessHistory page at the largest history vs empty", "ms",
           "page at 0 transactions", None, None, on="ratio", higher=False),
    Target("verify_scale", "VerifyChain at the largest history vs empty", "s", "VerifyChain at 0 transactions",
           None, None, on="ratio", higher=False),
    # Issue 15: the FHIR REST gateway beside the gRPC path it fronts (goal: at least 0.8x).
    Target("fhir_create", "FHIR create/s vs gRPC PutRecord/s (issue 15)", "/s", "PutRecord/s, same clients",
           None, 0.8, on="ratio"),
    Target("fhir_read", "FHIR read/s vs gRPC GetRecord/s (issue 15)", "/s", "GetRecord/s, same clients",
           None, 0.8, on="ratio"),
)
TARGETS_BY_KEY = {target.key: target for target in TARGETS}


@dataclass
class Result:
    """Every run's value of one figure, its same-run baseline's values, or why it was not measured."""

    values: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    note: str = ""
    skipped: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        """Median over the baseline's median (None without both)."""
        if self.median is None or not self.baseline_median:
            return None
        return self.median / self.baseline_median


def spread(values: Sequence[float]) -> str:
    """"median (min-max)" of the runs, or the one value."""
    if not values:
        return "-"
    if len(values) == 1:
        return _number(values[0])
    return f"{_number(statistics.median(values))} ({_number(min(values))}-{_number(max(values))})"


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def verdict(target: Target, result: Result | None) -> str:
    """'goal reached', 'must reached', 'BELOW must', 'measured' (no threshold) or why it is missing."""
    if result is None:
        return "not run"
    if result.skipped:
        return result.skipped
    figure = result.ratio if target.on == "ratio" else result.median
    if figure is None:
        return "no baseline" if target.on == "ratio" else "not run"
    if target.must is None:
        return "measured"

    def reaches(threshold: float) -> bool:
        return figure >= threshold if target.higher else figure <= threshold

    if target.goal is not None and reaches(target.goal):
        return "goal reached"
    return "must reached" if reaches(target.must) else "BELOW must"


def threshold_text(target: Target) -> tuple[str, str]:
    """(must, goal) as '>= 400' / '<= 25' / '>= 0.5x' text for the table's columns."""
    sign = ">=" if target.higher else "<="

    def one(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{sign} {_number(value)}{'x' if target.on == 'ratio' else ''}"

    return one(target.must), one(target.goal)


def render_table(results: dict[str, Result], load_averages: Iterable[float] = ()) -> str:
    """Issue 13's table: figure, median (min-max), baseline, ratio, must reach, goal, verdict (one line each)."""
    header = ("figure", "value: median (min-max)", "baseline (same run)", "ratio", "must", "goal", "verdict")
    rows = [header]
    for target in TARGETS:
        result = results.get(target.key)
        must, goal = threshold_text(target)
        value = f"{spread(result.values)} {target.unit}" if result and result.values else "-"
        base = f"{spread(result.baseline)} ({target.baseline})" if result and result.baseline else "-"
        ratio = f"{result.ratio:.3f}x" if result and result.ratio is not None else "-"
        rows.append((target.title, value, base, ratio, must, goal, verdict(target, result)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {target.title}: {results[target.key].note}" for target in TARGETS
             if target.key in results and results[target.key].note]
    loads = list(load_averages)
    if loads:
        notes.append(f"  load average (1 min) during the run: {min(loads):.1f}-{max(loads):.1f} on this machine")
    return "\n".join(lines + (["notes:", *notes] if notes else []))


# --- counters -------------------------------------------------------------------------------------------------

_RPC_LINE = re.compile(rb'"msg": ?"rpc"')


def count_rpc_lines(log: bytes) -> int:
    """How many calls a service's JSON log records (one ``"msg": "rpc"`` line per call)."""
    return sum(1 for line in log.splitlines() if _RPC_LINE.search(line))


def count_vault_requests(audit_log: bytes) -> int:
    """Requests an OpenBao file audit device logged (one ``"type": "request"`` JSON line per request).

    Lines that are not JSON (a partly written last line) are not counted.
    """
    count = 0
    for line in audit_log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("type") == "request":
            count += 1
    return count


def strace_sync_calls(summary: str) -> int:
    """fsync + fdatasync calls in an ``strace -c`` summary.

    Columns: % time, seconds, usecs/call, calls, [errors], syscall: calls is always the fourth (the errors
    cell is blank when there were none, so a row has 5 or 6 words).
    """
    calls = 0
    for line in summary.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync"):
            calls += int(parts[3])
    return calls


def proc_stat_cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat (the command name may hold spaces)."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_status_rss_kib(status: str) -> int:
    """VmRSS (KiB) from the text of /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line (the process has exited?)")


def growth_per_thousand(samples: Sequence[tuple[int, float]]) -> float:
    """Least-squares slope of (writes done, MiB) samples, in MiB per 1,000 writes (0 with fewer than 2 points)."""
    if len(samples) < 2:
        return 0.0
    xs = [float(x) for x, _ in samples]
    ys = [y for _, y in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread_x = sum((x - mean_x) ** 2 for x in xs)
    if spread_x == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread_x * 1000


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which fraction of values lie (nearest rank; values need not be sorted)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def missing_sdk_call(client: object, method: str, rpc: str) -> str:
    """'' when client has the SDK method, else the printed reason the figure is skipped."""
    if callable(getattr(client, method, None)):
        return ""
    return f"not available: RPC {rpc} missing (CareChainClient.{method})"
