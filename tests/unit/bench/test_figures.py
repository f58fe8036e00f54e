"""The pure parts of `make bench`: verdicts against issue 13's targets, the final table, counter parsing.

No timing and no processes here: the values are given, as a run would have measured them.
"""

from __future__ import annotations

import json

import pytest

from bench.figures import (
    TARGETS,
    TARGETS_BY_KEY,
    Result,
    count_rpc_lines,
    count_vault_requests,
    growth_per_thousand,
    missing_sdk_call,
    percentile,
    proc_stat_cpu_ticks,
    proc_status_rss_kib,
    render_table,
    spread,
    strace_sync_calls,
    verdict,
)


def test_result_median_of_runs_and_ratio_to_the_same_run_baseline() -> None:
    result = Result(values=[30.0, 50.0, 40.0], baseline=[1000.0, 2000.0, 1500.0])
    assert result.median == 40.0
    assert result.baseline_median == 1500.0
    assert result.ratio == pytest.approx(40 / 1500)
    assert Result(values=[1.0]).ratio is None  # no baseline, no ratio
    assert Result(values=[1.0], baseline=[0.0]).ratio is None


def test_spread_prints_median_with_min_and_max() -> None:
    assert spread([35.0, 71.0, 40.0]) == "40.0 (35.0-71.0)"
    assert spread([1747.0, 1600.0, 1800.0]) == "1,747 (1,600-1,800)"
    assert spread([3.25]) == "3.25"
    assert spread([]) == "-"


@pytest.mark.parametrize(("key", "values", "baseline", "expected"), [
    ("put_embedded", [71.0], [1747.0], "BELOW must"),
    ("put_embedded", [450.0], [1747.0], "must reached"),
    ("put_embedded", [1000.0], [1747.0], "goal reached"),
    ("get_p99", [86.0, 524.0, 100.0], [], "BELOW must"),  # lower is better
    ("get_p99", [24.0], [], "must reached"),
    ("get_p99", [9.0], [], "goal reached"),
    ("cpu_put", [3.9], [0.01], "must reached"),  # no goal beyond: must is the best verdict
    ("cpu_get", [42.0], [0.01], "BELOW must"),
    ("ledger_final", [70.0], [1000.0], "BELOW must"),  # held to the ratio, not the value
    ("ledger_final", [600.0], [1000.0], "must reached"),
    ("ledger_final", [800.0], [1000.0], "goal reached"),
    ("tails", [99.0], [100.0], "must reached"),  # "64 open tails do not slow writes": within noise
    ("tails", [80.0], [100.0], "BELOW must"),
    ("restart_scale", [9.0], [1.0], "measured"),  # no numeric threshold: printed, not judged
])
def test_verdict_against_issue_13s_table(key: str, values: list[float], baseline: list[float], expected: str) -> None:
    assert verdict(TARGETS_BY_KEY[key], Result(values, baseline)) == expected


def test_verdict_of_missing_and_skipped_figures() -> None:
    target = TARGETS_BY_KEY["bulk_embedded"]
    assert verdict(target, None) == "not run"
    skipped = Result(skipped="not available: RPC ImportResources missing (CareChainClient.import_resources)")
    assert verdict(target, skipped) == skipped.skipped
    assert verdict(TARGETS_BY_KEY["ledger_final"], Result([70.0])) == "no baseline"


def test_table_has_every_figure_of_the_issue_with_value_baseline_ratio_must_and_goal() -> None:
    results = {
        "put_embedded": Result([35.0, 40.0, 38.0], [1700.0, 1750.0, 1800.0], note="64 clients"),
        "ledger_final": Result([70.0], [1000.0]),
        "bulk_embedded": Result(skipped="not available: RPC X missing"),
    }
    table = render_table(results, load_averages=[3.2, 9.8])
    lines = table.splitlines()
    for target in TARGETS:
        assert any(line.startswith(target.title) for line in lines), target.title
    put = next(line for line in lines if line.startswith("PutRecord/s embedded"))
    assert "38.0 (35.0-40.0) /s" in put
    assert "1,750 (1,700-1,800) (gRPC echo, 64 clients)" in put
    assert "0.022x" in put
    assert ">= 400" in put and ">= 1,000" in put and "BELOW must" in put
    ledger = next(line for line in lines if line.startswith("ledger final"))
    assert ">= 0.50x" in ledger and ">= 0.80x" in ledger and "0.070x" in ledger
    assert "not available: RPC X missing" in next(line for line in lines if line.startswith("bulk import"))
    assert "not run" in next(line for line in lines if line.startswith("GetRecord/s embedded"))
    assert "PutRecord/s embedded, 64 clients: 64 clients" in table
    assert "load average (1 min) during the run: 3.2-9.8" in table


def test_rpc_lines_are_the_services_json_rpc_records() -> None:
    log = b"\n".join([
        json.dumps({"msg": "rpc", "method": "/x/Put"}).encode(),
        b'{"msg":"rpc","method":"/x/Get"}',
        json.dumps({"msg": "started"}).encode(),
        b"plain text line mentioning rpc",
    ])
    assert count_rpc_lines(log) == 2


def test_vault_requests_are_the_audit_devices_request_lines() -> None:
    lines = [
        {"type": "request", "request": {"path": "transit/encrypt/hmac:abc"}},
        {"type": "response", "request": {"path": "transit/encrypt/hmac:abc"}},
        {"type": "request", "request": {"path": "auth/approle/login"}},
    ]
    log = b"\n".join(json.dumps(line).encode() for line in lines) + b'\n{"type": "requ'  # a line being written
    assert count_vault_requests(log) == 2


def test_strace_summary_counts_calls_not_microseconds() -> None:
    # strace -c -e trace=fsync,fdatasync as printed by strace 6 (blank errors cells).
    summary = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 96.08    0.000539          77         7           fsync
  3.92    0.000022          22         1           fdatasync
------ ----------- ----------- --------- --------- ----------------
100.00    0.000561          70         8           total
"""
    assert strace_sync_calls(summary) == 8
    with_errors = " 50.00    0.000100          10        10         2 fsync\n"
    assert strace_sync_calls(with_errors) == 10


def test_proc_counters() -> None:
    # The command name may contain spaces and parentheses; utime and stime are fields 14 and 15.
    stat = "4242 (python (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000 200"
    assert proc_stat_cpu_ticks(stat) == 300
    assert proc_status_rss_kib("Name:\tpython\nVmHWM:\t  90000 kB\nVmRSS:\t   81920 kB\n") == 81920
    with pytest.raises(ValueError):
        proc_status_rss_kib("Name:\tzombie\n")


def test_growth_per_thousand_writes_is_the_least_squares_slope() -> None:
    leaking = [(0, 100.0), (5000, 111.0), (10000, 122.0)]  # +2.2 MiB per 1k writes
    assert growth_per_thousand(leaking) == pytest.approx(2.2)
    assert growth_per_thousand([(0, 100.0), (5000, 101.0), (10000, 100.0)]) == pytest.approx(0.0)
    assert growth_per_thousand([(0, 100.0)]) == 0.0


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_missing_sdk_call_names_the_rpc_and_the_method() -> None:
    class Client:
        def put_record(self) -> None:
            pass

    assert missing_sdk_call(Client(), "put_record", "PutRecord") == ""
    assert missing_sdk_call(Client(), "import_resources", "ImportResources") == (
        "not available: RPC ImportResources missing (CareChainClient.import_resources)")
