"""`make bench`: PutRecord / GetRecord through the six real service processes, beside baselines of the same run.

For each concurrency (closed loop: C client threads calling back to back for a fixed time) it prints, as the
median of the runs with min-max:

- the baselines: a bare gRPC echo of the same payload at the same concurrency, in this process, and raw
  AES-256-GCM seal + open of the payload;
- PutRecord/s and GetRecord/s (2 KiB-class Synthea resources), their ratio to the echo;
- CPU milliseconds per operation, per service process and all together (from /proc/<pid>/stat, so noise from
  other work on a shared machine does not inflate it the way it inflates wall-clock rates), and the client's;
- RPCs per operation per service (the services' JSON ``rpc`` log lines);

then GetRecord p50/p99 in an open loop at half the highest measured GetRecord rate, and (``--syscalls``, needs
strace) fsync/fdatasync calls per PutRecord. The issue 13 targets print beside each figure. Rates vary with the
machine and its load; CPU-ms per operation is the figure to compare across runs. Tests never assert on any of it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from carechain.client.sdk import CareChainClient, Kind, Purpose, permit
from carechain.core.crypto import Ed25519Signer, new_aes_key, open_sealed, seal
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "synthea-10"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PATIENTS = 8

# Issue 13's table: figure -> (must reach, goal beyond).
TARGETS = {
    "PutRecord/s": (400, 1000),
    "GetRecord/s": (800, 2000),
    "GetRecord p99 ms at 50% load": (25, 10),
    "CPU ms per PutRecord": (4, None),
    "CPU ms per GetRecord": (2, None),
}


def target_text(figure: str) -> str:
    must, goal = TARGETS.get(figure, (None, None))
    if must is None:
        return ""
    return f"[must reach {must}" + (f", goal {goal}]" if goal is not None else "]")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (its threads included)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rpc_lines(log_file: pathlib.Path) -> int:
    """How many calls a service has logged so far (one JSON ``rpc`` line per call)."""
    if not log_file.exists():
        return 0
    pattern = re.compile(rb'"msg": ?"rpc"')
    return sum(1 for line in log_file.read_bytes().splitlines() if pattern.search(line))


@dataclass
class Window:
    """CPU and RPC counters of every service process between two points in time."""

    network: LocalNetwork
    cpu: dict[str, float] = field(default_factory=dict)
    rpcs: dict[str, int] = field(default_factory=dict)
    client_cpu: float = 0.0

    def open(self) -> Window:
        self.cpu = {name: cpu_seconds(p.pid) for name, p in self.network.processes.items()}
        self.rpcs = {name: rpc_lines(self.network.log_dir / f"{name}.log") for name in self.network.processes}
        self.client_cpu = time.process_time()
        return self

    def close(self, operations: int) -> dict[str, dict[str, float]]:
        """Per service: CPU ms and RPCs per operation, plus the client's CPU ms per operation."""
        time.sleep(0.3)  # let the last log lines reach the files
        result: dict[str, dict[str, float]] = {}
        for name, process in self.network.processes.items():
            result[name] = {
                "cpu_ms": (cpu_seconds(process.pid) - self.cpu[name]) * 1000 / operations,
                "rpcs": (rpc_lines(self.network.log_dir / f"{name}.log") - self.rpcs[name]) / operations,
            }
        result["client"] = {"cpu_ms": (time.process_time() - self.client_cpu) * 1000 / operations, "rpcs": 0.0}
        return result


def closed_loop(operation: Callable[[int], object], clients: int, seconds: float) -> tuple[int, list[float]]:
    """clients threads call operation back to back for seconds; (operations done, latencies)."""
    stop_at = time.monotonic() + seconds
    latencies: list[float] = []
    counter = iter(range(10**12))
    lock = threading.Lock()

    def worker() -> None:
        while time.monotonic() < stop_at:
            with lock:
                index = next(counter)
            started = time.perf_counter()
            operation(index)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), latencies


def open_loop(operation: Callable[[int], object], rate: float, seconds: float, clients: int) -> list[float]:
    """Calls started at a fixed rate (not when the previous one returns); latency includes queueing."""
    total = max(1, int(rate * seconds))
    started_at = time.perf_counter()
    latencies: list[float] = []
    lock = threading.Lock()

    def call(index: int) -> None:
        scheduled = started_at + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        operation(index)
        with lock:
            latencies.append(time.perf_counter() - scheduled)

    with futures.ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(call, range(total)))
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


class EchoServer:
    """A bare gRPC server returning the request bytes: the floor any RPC pays on this machine."""

    def __init__(self, workers: int) -> None:
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        self.server.add_generic_rpc_handlers((handler,))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.echo = self.channel.unary_unary("/bench.Echo/Echo")

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):9.1f} (min {min(values):.1f}, max {max(values):.1f})"


def print_services(breakdown: list[dict[str, dict[str, float]]], what: str) -> float:
    """Median per-service CPU ms / RPCs per operation; returns the services' CPU ms total."""
    names = list(breakdown[0])
    cells = []
    total = 0.0
    for name in names:
        cpu = statistics.median(run[name]["cpu_ms"] for run in breakdown)
        rpcs = statistics.median(run[name]["rpcs"] for run in breakdown)
        if name != "client":
            total += cpu
        cells.append(f"{name} {cpu:.2f} ms" + (f" {rpcs:.1f} rpc" if name != "client" else ""))
    print(f"      per {what}: " + ", ".join(cells))
    print(f"      CPU ms per {what}, all services together: {total:.2f}   {target_text(f'CPU ms per {what}')}")
    return total


def fsyncs_per_put(network: LocalNetwork, put: Callable[[int], object], operations: int) -> dict[str, float]:
    """fsync + fdatasync calls per PutRecord per service, counted by strace attached to each process."""
    tracers = {}
    for name, process in network.processes.items():
        out = pathlib.Path(tempfile.mkstemp(prefix=f"strace-{name}-")[1])
        tracers[name] = (subprocess.Popen(  # noqa: S603 - fixed argv
            ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out), "-p", str(process.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out)
    time.sleep(1.0)  # strace attaches to every thread
    for index in range(operations):
        put(index)
    counts = {}
    for name, (tracer, out) in tracers.items():
        tracer.terminate()
        tracer.wait(10)
        calls = 0
        for line in out.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync"):
                calls += int(parts[3] if len(parts) >= 6 else parts[2])
        out.unlink()
        counts[name] = calls / operations
    return counts


def profile(network: LocalNetwork, operation: Callable[[int], object], clients: int, seconds: float,
            out_dir: pathlib.Path, label: str, top: int = 8) -> None:
    """py-spy every service process while operation runs; print where each one spends CPU.

    Only samples of the thread holding the GIL count (``--gil``): waits are not work. Printed: the hottest
    functions by self time, and the CareChain functions by inclusive time.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy", path=pathlib.Path(sys.executable).parent) or "py-spy"
    spies = {}
    for name, process in network.processes.items():
        out = out_dir / f"{label}-{name}.txt"
        spies[name] = (subprocess.Popen(  # noqa: S603 - fixed argv
            [py_spy, "record", "--gil", "--nonblocking", "-r", "200", "-f", "raw", "-d", str(int(seconds) + 1),
             "-o", str(out), "-p", str(process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out)
    time.sleep(0.5)
    closed_loop(operation, clients, seconds)
    for name, (spy, out) in spies.items():
        spy.wait(30)
        self_time: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        total = 0
        for line in out.read_text().splitlines() if out.exists() else []:
            stack, _, count = line.rpartition(" ")
            frames = [re.sub(r" \(.*?([\w/]+\.py):\d+\)", r" (\1)", f) for f in stack.split(";")]
            self_time[frames[-1]] = self_time.get(frames[-1], 0) + int(count)
            for frame in set(frames):
                if "carechain/" in frame:
                    inclusive[frame] = inclusive.get(frame, 0) + int(count)
            total += int(count)
        for kind, table in (("self", self_time), ("carechain inclusive", inclusive)):
            hottest = sorted(table.items(), key=lambda item: -item[1])[:top]
            cells = "; ".join(f"{frame} {count * 100 / max(total, 1):.0f}%" for frame, count in hottest)
            print(f"    {label} {name} ({kind}): {cells}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run of 3 s per figure (a laptop check)")
    parser.add_argument("--clients", default="1,16,64", help="comma-separated concurrencies")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each closed-loop run")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median, min-max printed)")
    parser.add_argument("--syscalls", action="store_true", help="count fsyncs per PutRecord with strace")
    parser.add_argument("--profile", type=pathlib.Path, metavar="DIR",
                        help="py-spy each service during PutRecord and GetRecord; raw stacks into DIR")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 3.0
        args.clients = "1,64" if args.clients == parser.get_default("clients") else args.clients
    concurrencies = [int(c) for c in args.clients.split(",")]

    with gzip.open(FIXTURES / "Condition.000.ndjson.gz", "rb") as handle:
        conditions = [line.rstrip(b"\n") for line in handle]
    with gzip.open(FIXTURES / "Patient.000.ndjson.gz", "rb") as handle:
        patients = [json.loads(line) for line in handle][:PATIENTS]
    payload = max(conditions, key=lambda c: -abs(len(c) - 2048))  # the Condition closest to 2 KiB
    subject = json.loads(payload)["subject"]["reference"].removeprefix("urn:uuid:").removeprefix("Patient/")
    # The same resource for each patient (a record must reference its own patient).
    payloads = [payload.replace(subject.encode(), resource["id"].encode()) for resource in patients]

    print(f"CareChain records benchmark: {args.runs} run(s) x {args.seconds:.0f} s per figure, payload "
          f"{len(payload)} bytes (a Synthea Condition), {PATIENTS} patients, embedded backends, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="carechain-bench-") as directory:
        network = LocalNetwork(pathlib.Path(directory))
        network.start()
        echo_server = EchoServer(workers=16)
        try:
            operator = CareChainClient(network.endpoints, network.layout.operator_signer())

            def enrol(registrar: CareChainClient, kind: int, **fields: str) -> CareChainClient:
                key = Ed25519Signer.generate("pending")
                principal = registrar.register(kind, "bench", key.public_key_bytes(), **fields)
                return CareChainClient(network.endpoints, key.with_key_id(principal.principal_id))

            hospital = enrol(operator, Kind.PRINCIPAL_KIND_ORGANIZATION)
            reader = enrol(hospital, Kind.PRINCIPAL_KIND_PRACTITIONER, specialty="general-practice")
            patient_ids = []
            for resource in patients:
                patient = enrol(hospital, Kind.PRINCIPAL_KIND_PATIENT, fhir_patient_id=resource["id"])
                patient.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                             categories=[NORMAL, *sorted(SENSITIVE_CATEGORIES)]))
                patient_ids.append(patient.principal_id)
                patient.close()
            record_ids: list[str] = []
            ids_lock = threading.Lock()

            def put(index: int) -> None:
                which = index % len(patient_ids)
                record = hospital.put_record(patient_ids[which], payloads[which])
                with ids_lock:
                    record_ids.append(record.record_id)

            def get(index: int) -> None:
                reader.get_record(record_ids[index % len(record_ids)], Purpose.PURPOSE_OF_USE_TREAT)

            for index in range(len(patient_ids) * 2):  # warm-up: tokens, channels, each patient's key
                put(index)
            get(0)

            best_get_rate = 0.0
            print(f"\n{'figure':42} {'median (min, max)':>30} {'x echo':>8}")
            key = new_aes_key()
            aes_rates = [closed_loop(lambda _i: open_sealed(key, seal(key, payload, b"ad"), b"ad"), 1,
                                     args.seconds)[0] / args.seconds for _ in range(args.runs)]
            print(f"  baseline: AES-256-GCM seal+open, 1 thread{'':3} {summary(aes_rates)}/s")
            for clients in concurrencies:
                echo_rates = []
                for _ in range(args.runs):
                    done, _ = closed_loop(lambda _i: echo_server.echo(payload, timeout=10), clients, args.seconds)
                    echo_rates.append(done / args.seconds)
                echo = statistics.median(echo_rates)
                print(f"  baseline: gRPC echo, {clients:2} clients{'':14} {summary(echo_rates)}/s")
                for name, operation in (("PutRecord", put), ("GetRecord", get)):
                    rates, breakdown = [], []
                    for _ in range(args.runs):
                        window = Window(network).open()
                        done, latencies = closed_loop(operation, clients, args.seconds)
                        breakdown.append(window.close(done))
                        rates.append(done / args.seconds)
                    if name == "GetRecord":
                        best_get_rate = max(best_get_rate, statistics.median(rates))
                    ratio = statistics.median(rates) / echo
                    targets = target_text(f"{name}/s") if clients == 64 else ""
                    print(f"  {name}/s, {clients:2} clients{'':18} {summary(rates)}/s {ratio:7.3f}x  {targets}")
                    print_services(breakdown, name)

            half = best_get_rate / 2
            latencies = open_loop(get, half, max(args.seconds, 5.0), clients=64)
            p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
            print(f"  GetRecord at 50% of max ({half:.0f}/s, open loop): p50 {p50:.1f} ms, p99 {p99:.1f} ms   "
                  f"{target_text('GetRecord p99 ms at 50% load')}")
            if args.syscalls:
                if shutil.which("strace") is None:
                    print("  fsyncs per PutRecord: strace not installed")
                else:
                    counts = fsyncs_per_put(network, put, 50)
                    cells = ", ".join(f"{name} {count:.1f}" for name, count in counts.items())
                    print(f"  fsync+fdatasync per PutRecord (strace): {cells}; total {sum(counts.values()):.1f}")
            if args.profile:
                print("  hottest functions (py-spy, self time), 16 clients:")
                profile(network, put, 16, args.seconds, args.profile, "PutRecord")
                profile(network, get, 16, args.seconds, args.profile, "GetRecord")
            for client in (operator, hospital, reader):
                client.close()
        finally:
            echo_server.close()
            network.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
