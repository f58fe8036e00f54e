"""Probe: PutRecord/s and CPU-ms per PutRecord per process with N open audit tails vs none (issue 13).

Starts an embedded network (``carechain up``) with the bench's stream caps, then alternates runs without and
with ``--tails`` operator StreamEvents tails open. The tails are drained in a child process of their own (as an
operator's tail would be), so their client cost is not charged to the writers' process; its CPU is printed
apart ("tails client"). ``--pyspy DIR`` records the audit and records processes during the tails runs.

    PYTHONPATH=services .venv/bin/python scripts/tails_probe.py --tails 64 --clients 16 --seconds 5 --runs 2
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.harness import closed_loop, cpu_seconds  # noqa: E402
from bench.records import Workload, close_tails, open_tails, service_pids, tail_stream_settings  # noqa: E402
from carechain.dev.localnet import LocalNetwork  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tails", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--pyspy", type=pathlib.Path)
    parser.add_argument("--idle", action="store_true", help="tails filter alerts only: open, receiving nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="carechain-tails-") as tmp:
        network = LocalNetwork(pathlib.Path(tmp) / "net", extra_env=tail_stream_settings(args.tails))
        network.start(timeout=180)
        workload = Workload(network)
        try:
            workload.start()
            pids = service_pids(network)
            for run in range(args.runs):
                for with_tails in (False, True):
                    drainer = open_tails(network, args.tails, args.idle) if with_tails else None
                    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    tails_before = cpu_seconds(drainer.pid) if drainer else 0.0
                    client_before = time.process_time()
                    spies = []
                    if with_tails and args.pyspy and run == 0:
                        args.pyspy.mkdir(parents=True, exist_ok=True)
                        for name in ("audit", "records"):
                            spies.append(subprocess.Popen(
                                [str(pathlib.Path(sys.executable).with_name("py-spy")), "record", "-p", str(pids[name]),
                                 "-d", str(int(args.seconds)), "-r", "50", "--gil", "-f", "raw",
                                 "-o", str(args.pyspy / f"{name}.txt")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    done, _ = closed_loop(workload.put, args.clients, args.seconds)
                    cells = {name: (cpu_seconds(pid) - before[name]) * 1000 / max(done, 1)
                             for name, pid in pids.items()}
                    client_ms = (time.process_time() - client_before) * 1000 / max(done, 1)
                    streamed = ""
                    if drainer is not None:
                        tails_ms = (cpu_seconds(drainer.pid) - tails_before) * 1000 / max(done, 1)
                        streamed = f"; tails client {tails_ms:.1f} ms/op, {close_tails(drainer)}"
                    for spy in spies:
                        spy.wait(timeout=60)
                    print(f"run {run} tails={args.tails if with_tails else 0}: {done / args.seconds:.1f} PutRecord/s, "
                          f"CPU ms/op all services {sum(cells.values()):.1f} ("
                          + ", ".join(f"{n} {v:.1f}" for n, v in sorted(cells.items(), key=lambda kv: -kv[1]))
                          + f"), writers' client {client_ms:.1f}{streamed}", flush=True)
        finally:
            workload.close()
            network.stop()


if __name__ == "__main__":
    main()
