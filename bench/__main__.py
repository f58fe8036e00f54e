"""`make bench`: issue 13's figures through the real service processes, each beside a baseline of the same run.

Two networks, started as users start them: embedded (``carechain up``: six processes, embedded backends) and
backends (``carechain up --with-backends --validators 3``: OpenBao, MinIO, etcd, three validator processes).
Every figure is the median of the runs with min-max; the final table prints each beside its same-run
baseline, the ratio, issue 13's "must reach" and "goal" values and a verdict. ``--quick`` is a laptop check
(one short run per figure, smaller scale figures, labelled as such). docs/performance.md explains each figure.
Rates depend on the machine and its load (printed); CPU-ms per operation is the figure to compare across runs.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable

import hvac

from bench import baselines, ledger, ledger_history, records, scale
from bench.figures import Result, count_vault_requests, render_table, spread
from bench.harness import FAILED_CALLS, LOAD_AVERAGES, load_average
from carechain.dev.backends.etcd_binary import etcd_binary
from carechain.dev.backends.stack import BackendStack
from carechain.dev.backends.tools import find_tool
from carechain.dev.localnet import LocalNetwork


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="laptop check: 1 run x 3 s, clients 1,64, 500 RSS writes, history 0,2000, 64 MiB record")
    parser.add_argument("--clients", help="comma-separated concurrencies (default 1,16,64; quick 1,64)")
    parser.add_argument("--seconds", type=float, help="duration of each closed-loop run (default 8; quick 3)")
    parser.add_argument("--runs", type=int, help="runs per figure: median, min-max printed (default 3; quick 1)")
    parser.add_argument("--rss-writes", type=int, help="PutRecords of the RSS figure (default 50000; quick 500)")
    parser.add_argument("--history", help="ledger sizes of the scale figures (default 0,20000,200000; quick 0,2000)")
    parser.add_argument("--restart-history",
                        help="ledger sizes of the in-process restart figures (default 0,20000,200000; quick 0,20000)")
    parser.add_argument("--large-mib", type=int, help="size of the large record in MiB (default 1024; quick 64)")
    parser.add_argument("--tails", type=int, default=64, help="open audit tails of the tails figure")
    parser.add_argument("--etcd-members", type=int, default=1, choices=(1, 3, 5),
                        help="etcd members of the backends network (carechain up's default: 1)")
    parser.add_argument("--only", choices=("embedded", "backends"), help="run one network's figures only")
    parser.add_argument("--syscalls", action="store_true", help="count fsyncs per PutRecord with strace")
    parser.add_argument("--profile", type=pathlib.Path, metavar="DIR",
                        help="py-spy each service during PutRecord and GetRecord; raw stacks into DIR")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"clients": "1,64" if quick else "1,16,64", "seconds": 3.0 if quick else 8.0, "runs": 1 if quick else 3,
                "rss_writes": 500 if quick else 50_000, "history": "0,2000" if quick else "0,20000,200000",
                "large_mib": 64 if quick else 1024,
                "restart_history": "0,20000" if quick else "0,20000,200000"}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.concurrencies = [int(c) for c in args.clients.split(",")]
    args.levels = [int(level) for level in args.history.split(",")]
    args.restart_levels = [int(level) for level in args.restart_history.split(",")]
    return args


def start(make: Callable[[pathlib.Path], LocalNetwork], directory: pathlib.Path, timeout: float,
          attempts: int = 2) -> LocalNetwork:
    """Start the network make(dir) builds; when a service does not come up, print the end of its log and try
    again in a fresh directory (on a shared machine another process may take a free port before a service)."""
    for attempt in range(1, attempts + 1):
        network = make(directory / f"attempt-{attempt}")
        try:
            network.start(timeout=timeout)
            return network
        except (RuntimeError, TimeoutError) as exc:
            print(f"  ! the network did not start (attempt {attempt} of {attempts}): {exc}")
            for log in sorted(network.log_dir.glob("*.log")):
                lines = log.read_text(errors="replace").splitlines()
                if any("Error" in line for line in lines[-5:]):
                    print(f"--- end of {log.name} ---", *lines[-5:], sep="\n")
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def embedded(args: argparse.Namespace, root: pathlib.Path, echo: baselines.EchoServer,
             results: dict[str, Result]) -> None:
    """Every figure of the embedded network (carechain up)."""
    caps = records.tail_stream_settings(args.tails)
    print("\n[embedded] bench-only setting for the audit tails figure: "
          + ", ".join(f"{name}={value}" for name, value in caps.items()) + " (one operator opens every tail)")
    network = start(lambda directory: LocalNetwork(directory, extra_env=caps, fhir=True), root / "embedded", 120)
    workload = records.Workload(network)
    try:
        workload.start()
        aes_rates, aes_cpu_ms = baselines.aes_gcm(workload.payload, args.seconds, args.runs)
        fsync_rates = baselines.fsync(network.layout.root / "fsync-baseline", 2048, min(args.seconds, 3.0), args.runs)
        print(f"  payload: a Synthea {records.RESOURCE_TYPE} of {len(workload.payload):,} bytes, "
              f"{len(workload.patient_ids)} consenting patients")
        print(f"  baseline: AES-256-GCM seal+open of {len(workload.payload)} bytes, 1 thread: {spread(aes_rates)}/s "
              f"({aes_cpu_ms * 1000:.1f} us CPU each)")
        print(f"  baseline: write 2 KiB + fsync, 1 thread: {spread(fsync_rates)}/s")
        results["cpu_put"] = Result(baseline=[aes_cpu_ms], note="baseline: CPU ms of one AES-256-GCM seal+open")
        results["cpu_get"] = Result(baseline=[aes_cpu_ms], note="baseline: CPU ms of one AES-256-GCM seal+open")
        best_get = records.run_records(network, workload, "embedded", args.concurrencies, args.seconds, args.runs,
                                       echo, results)
        records.fhir_figures(network, workload, max(args.concurrencies), args.seconds, args.runs, results)

        p99s, echo_p99s, half = [], [], best_get / 2
        for _ in range(args.runs):
            p50, p99 = records.p99_at_half_load(workload.get, best_get, max(args.seconds, 5.0))
            p99s.append(p99)
            echo_p99s.append(echo.p99_ms(workload.payload, half, max(args.seconds, 5.0)))
        results["get_p99"] = Result(p99s, echo_p99s, note=f"open loop at {half:.0f}/s (50% of {best_get:.0f}/s)")
        print(f"  GetRecord at 50% of max ({half:.0f}/s, open loop): p99 {spread(p99s)} ms (last p50 {p50:.1f} ms); "
              f"gRPC echo at the same rate: p99 {spread(echo_p99s)} ms")

        if args.syscalls:
            if records.shutil.which("strace") is None:
                print("  fsyncs per PutRecord: strace not installed")
            else:
                counts = records.fsyncs_per_put(network, workload.put, 50)
                cells = ", ".join(f"{name} {count:.1f}" for name, count in counts.items())
                print(f"  fsync+fdatasync per PutRecord (strace): {cells}; total {sum(counts.values()):.1f}")
        if args.profile:
            print("  hottest functions (py-spy, self time), 16 clients:")
            records.profile(network, workload.put, 16, args.seconds, args.profile, "PutRecord")
            records.profile(network, workload.get, 16, args.seconds, args.profile, "GetRecord")

        results["tails"] = Result(note=f"{max(args.concurrencies)} writers; runs alternate none / tails")
        records.tails_figure(network, workload, args.tails, max(args.concurrencies), args.seconds, args.runs,
                             results["tails"])

        call, why = records.sdk_call(workload.hospital, records.BULK_IMPORT_METHOD, records.BULK_IMPORT_RPC)
        call = records.bulk_import_adapter(workload.hospital) if call else None
        results["bulk_embedded"] = Result(baseline=list(results["put_embedded"].values))
        records.bulk_import_figure(call, why, workload.patient_ids, workload.payloads, 1000, args.runs,
                                   results["bulk_embedded"])

        growth = records.rss_over_writes(network, workload, args.rss_writes, max(args.concurrencies))
        results["ledger_rss_growth"] = Result([growth["ledger"]], note=f"over {args.rss_writes:,} PutRecords")

        scale.scale_figures(network, workload, args.levels, results)
    finally:
        workload.close()
        network.stop()


def restart_costs(args: argparse.Namespace, results: dict[str, Result]) -> None:
    """What a restart rebuilds from history: ledger open, a principal-status follower, consent (in-process)."""
    levels = ", ".join(f"{level:,}" for level in args.restart_levels)
    quick = " (quick: 0 and 20,000; the full mode adds 200,000)" if args.quick and args.restart_history == "0,20000" \
        else ""
    print(f"\n[restart] ledger open and service restarts over histories of {levels} transactions{quick}, built "
          f"straight into a ledger store, components called in this process; load average {load_average():.1f}")
    rows = ledger_history.print_restart_figures(args.restart_levels, indent="  ")
    first, last = rows[args.restart_levels[0]], rows[args.restart_levels[-1]]
    largest = f"{args.restart_levels[-1]:,} transactions"
    results["ledger_open_scale"] = Result([last["ledger open"]], [first["ledger open"]],
                                          note=f"CPU ms at {largest}, {last['leaves read']:.0f} leaves read")
    results["status_resume_scale"] = Result([last["status resume"]], [last["status replay"]],
                                            note=f"CPU ms at {largest}, {last['status folded']:.0f} transactions "
                                                 "folded after the snapshot")


def enable_vault_audit(stack: BackendStack, log_file: pathlib.Path, timeout: float = 30.0) -> None:
    """A file audit device on the stack's OpenBao: one JSON line per request (values HMAC'd: no secret in it).

    OpenBao refuses audit devices over the API; it creates the declarative ones of its configuration file on
    SIGHUP, so the bench appends one to the file the launcher wrote and signals the server.
    """
    config = stack.openbao.data_dir / "openbao.hcl"
    if not config.exists():
        raise RuntimeError(f"no OpenBao configuration at {config} (a dev-mode server?)")
    with config.open("a") as handle:
        handle.write(f'\naudit "file" "bench" {{\n  options {{\n    file_path = "{log_file}"\n  }}\n}}\n')
    os.kill(stack.openbao._process._process.pid, signal.SIGHUP)  # noqa: SLF001 - the launcher keeps it private
    deadline = time.monotonic() + timeout
    while not (log_file.exists() and log_file.stat().st_size):
        if time.monotonic() > deadline:
            raise RuntimeError(f"OpenBao wrote no audit log to {log_file} within {timeout:.0f} s")
        # Any authenticated request is audited: a token self-lookup.
        hvac.Client(url=stack.openbao.address, token=stack.openbao.root_token).auth.token.lookup_self()
        time.sleep(0.5)


def backends(args: argparse.Namespace, root: pathlib.Path, echo: baselines.EchoServer,
             results: dict[str, Result]) -> None:
    """Every figure of the backends network (carechain up --with-backends --validators 3)."""
    def make(directory: pathlib.Path) -> LocalNetwork:
        stack = BackendStack(directory / "backends", etcd_members=args.etcd_members)
        return LocalNetwork(directory, backends=stack, validators=3)

    print(f"\n[backends] starting OpenBao, MinIO, etcd ({args.etcd_members} member(s)) and 3 validators ...")
    network = start(make, root / "backends", 180)
    directory = network.layout.root
    workload = records.Workload(network)
    vault_log = directory / "openbao-audit.log"
    try:
        vault_requests = None
        try:
            enable_vault_audit(network.backends, vault_log)  # type: ignore[arg-type]
            vault_requests = lambda: count_vault_requests(vault_log.read_bytes()) if vault_log.exists() else 0  # noqa: E731
        except (RuntimeError, OSError, hvac.exceptions.VaultError) as exc:
            print(f"  OpenBao requests per operation: not available ({exc})")
        workload.start()
        top = max(args.concurrencies)
        records.run_records(network, workload, "backends", [top], args.seconds, args.runs, echo, results,
                            vault_requests)
        results["put_backends"].note = f"{top} clients, 3 validators, etcd {args.etcd_members} member(s)"

        results["ledger_final"] = Result()
        ledger.ledger_final_figure(network, top, args.seconds, args.runs, results["ledger_final"])

        call, why = records.sdk_call(workload.hospital, records.BULK_IMPORT_METHOD, records.BULK_IMPORT_RPC)
        call = records.bulk_import_adapter(workload.hospital) if call else None
        results["bulk_backends"] = Result(baseline=list(results["put_backends"].values))
        records.bulk_import_figure(call, why, workload.patient_ids, workload.payloads, 1000, args.runs,
                                   results["bulk_backends"])

        source = records.write_random_file(directory / "large-attachment.bin", args.large_mib * 1024 * 1024)
        size_mib = source.stat().st_size / (1024 * 1024)
        results["large_record"] = Result(baseline=baselines.minio_put(network.backends.minio, source, args.runs),
                                         note=f"a DocumentReference with a {size_mib:,.0f} MiB attachment")
        print(f"  baseline: raw MinIO put of that {size_mib:,.0f} MiB file: {spread(results['large_record'].baseline)}"
              " MiB/s")
        results["large_record_rss"] = Result()
        call, why = records.sdk_call(workload.hospital, records.LARGE_RECORD_METHOD, records.LARGE_RECORD_RPC)
        call = records.large_record_adapter(workload.hospital, workload.fhir_patient_ids[0]) if call else None
        records.large_record_figure(call, why, network, workload.patient_ids[0], source, args.runs,
                                    results["large_record"], results["large_record_rss"])
        source.unlink()
    finally:
        workload.close()
        network.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # progress shows through a pipe
    started = time.monotonic()
    print(f"CareChain benchmark (issue 13){' --quick' if args.quick else ''}: {args.runs} run(s) x "
          f"{args.seconds:.0f} s per figure, clients {args.clients}, {os.cpu_count()} CPUs, "
          f"load average {load_average():.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    results: dict[str, Result] = {}
    echo = baselines.EchoServer(workers=16)
    with tempfile.TemporaryDirectory(prefix="carechain-bench-") as directory:
        root = pathlib.Path(directory)
        try:
            if args.only != "backends":
                restart_costs(args, results)
                embedded(args, root, echo, results)
            if args.only != "embedded":
                try:
                    find_tool("minio"), etcd_binary()
                except (FileNotFoundError, RuntimeError) as exc:
                    why = "not available: the backends need `make tools`"
                    print(f"\n[backends] {why}: {exc}")
                    for key in ("put_backends", "bulk_backends", "ledger_final", "large_record", "large_record_rss"):
                        results[key] = Result(skipped=why)
                else:
                    backends(args, root, echo, results)
        finally:
            echo.close()
    load_average()
    print(f"\nissue 13's table ({'quick: 1 short run each, smaller scale; ' if args.quick else ''}"
          f"{(time.monotonic() - started) / 60:.1f} min):")
    print(render_table(results, LOAD_AVERAGES))
    if FAILED_CALLS:
        print(f"  calls that failed during the run (not counted in any rate): {sum(FAILED_CALLS.values())}, "
              + "; ".join(f"{count} x {status}" for status, count in FAILED_CALLS.most_common(5)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
