"""History does not slow the present: figures at growing ledger sizes (issue 13, "What must also hold at scale").

At each level (e.g. 0, 20k and 200k ledger transactions) the ledger is grown to that many transactions with
:func:`bench.ledger.grow_history`, then measured: the restart time of the ledger and of every service that
follows it (consent, identity, records, audit; process start to healthy: whatever they rebuild from history at
start shows here), the latency of one GetAccessHistory page
(the patient's own history; ``page_size`` is sent when the RPC has that field) and the time of VerifyChain
through the ledger service.
"""

from __future__ import annotations

import statistics
import time

from bench.figures import Result
from bench.harness import cpu_seconds, load_average
from bench.ledger import grow_history, new_submitter
from bench.records import Workload
from carechain.audit.v1 import audit_pb2
from carechain.dev.localnet import LocalNetwork
from carechain.ledger.v1 import ledger_pb2

PAGE_SIZE = 50
#: Restarted at each level, the ledger first: every service that derives state from the ledger at start.
RESTARTED = ("ledger", "consent", "identity", "records", "audit")


def ledger_transactions(workload: Workload) -> int:
    """Transactions on the ledger now (the log size of its checkpoint)."""
    checkpoint = workload.operator.ledger.GetCheckpoint(ledger_pb2.GetCheckpointRequest(), timeout=30)  # type: ignore[union-attr]
    return int(checkpoint.tree_size)


def restart_seconds(network: LocalNetwork, name: str) -> tuple[float, float]:
    """Stop one service process and start it again; (seconds from start to healthy, CPU seconds it took).

    The CPU of the new process up to healthy (from /proc) moves far less with the machine's load than the wall
    time, which on a shared machine is mostly waiting for a core.
    """
    network.stop_service(name)
    started = time.perf_counter()
    network.start_service(name, timeout=1800)
    elapsed = time.perf_counter() - started
    return elapsed, cpu_seconds(network.processes[name].pid)


def history_page_ms(workload: Workload, calls: int = 10) -> float:
    """Median latency (ms) of the patient's GetAccessHistory, one page when the RPC pages."""
    request = audit_pb2.GetAccessHistoryRequest(patient_id=workload.patient.principal_id)  # type: ignore[union-attr]
    if "page_size" in audit_pb2.GetAccessHistoryRequest.DESCRIPTOR.fields_by_name:
        request.page_size = PAGE_SIZE  # type: ignore[attr-defined]
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        workload.patient.audit.GetAccessHistory(request, timeout=120)  # type: ignore[union-attr]
        latencies.append((time.perf_counter() - started) * 1000)
    return statistics.median(latencies)


def verify_seconds(workload: Workload) -> float:
    """Seconds of one VerifyChain through the ledger service (raises if the chain does not verify)."""
    started = time.perf_counter()
    response = workload.operator.ledger.VerifyChain(ledger_pb2.VerifyChainRequest(), timeout=1800)  # type: ignore[union-attr]
    elapsed = time.perf_counter() - started
    if not response.ok:
        raise RuntimeError(f"VerifyChain failed at block {response.first_bad_height}")
    return elapsed


def scale_figures(network: LocalNetwork, workload: Workload, levels: list[int], results: dict[str, Result]) -> None:
    """Grow the ledger through each level; restart, history page and verify figures at each (ratios vs the first)."""
    submitter = new_submitter(network)
    print(f"\n[scale] ledger transactions {', '.join(f'{level:,}' for level in levels)}, "
          f"load average {load_average():.1f}")
    restart, page, verify = Result(), Result(), Result()
    seen: dict[str, list[str]] = {"restart_scale": [], "history_page_scale": [], "verify_scale": []}
    try:
        for level in levels:
            now = ledger_transactions(workload)
            if level > now:
                rate = grow_history(submitter, level - now)
                print(f"  grew the ledger by {level - now:,} transactions at {rate:.0f} tx/s")
            size = ledger_transactions(workload)
            restarts = {name: restart_seconds(network, name) for name in RESTARTED}
            ledger_s = restarts["ledger"][0]
            page_ms = history_page_ms(workload)
            verify_s = verify_seconds(workload)
            print(f"  at {size:,} transactions: restart (wall, CPU) "
                  + ", ".join(f"{n} {wall:.2f} s, {cpu:.2f} s" for n, (wall, cpu) in restarts.items())
                  + f"; GetAccessHistory page {page_ms:.1f} ms; VerifyChain {verify_s:.2f} s; "
                  f"load {load_average():.1f}")
            for key, result, value, unit in (("restart_scale", restart, ledger_s, "s"),
                                              ("history_page_scale", page, page_ms, "ms"),
                                              ("verify_scale", verify, verify_s, "s")):
                if not result.baseline:
                    result.baseline = [value]
                result.values = [value]
                seen[key].append(f"{value:.2f} {unit} at {size:,}")
    finally:
        submitter.close()
    for key, result in (("restart_scale", restart), ("history_page_scale", page), ("verify_scale", verify)):
        result.note = "; ".join(seen[key]) + " transactions (one measurement each)"
        results[key] = result
