"""Probe: CPU-ms per PutRecord and GetRecord per service process, optionally with py-spy (issue 13).

Starts an embedded network (``carechain up``: six processes), runs closed loops of PutRecord then GetRecord
and prints the rate and CPU-ms per operation of each service (utime+stime from /proc). ``--pyspy DIR`` then
records every service with ``py-spy --gil`` during one more run of each and prints the hottest functions.

    PYTHONPATH=services .venv/bin/python scripts/ops_probe.py --clients 64 --seconds 4 --runs 2 [--pyspy DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.harness import closed_loop, cpu_seconds, load_average  # noqa: E402
from bench.records import Workload, profile, service_pids  # noqa: E402
from carechain.dev.localnet import LocalNetwork  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--pyspy", type=pathlib.Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="carechain-ops-") as tmp:
        network = LocalNetwork(pathlib.Path(tmp) / "net")
        network.start(timeout=180)
        workload = Workload(network)
        try:
            workload.start()
            pids = service_pids(network)
            for label, operation in (("PutRecord", workload.put), ("GetRecord", workload.get)):
                for _ in range(args.runs):
                    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    done, _ = closed_loop(operation, args.clients, args.seconds)
                    cells = {name: (cpu_seconds(pid) - before[name]) * 1000 / max(done, 1)
                             for name, pid in pids.items()}
                    print(f"{label}: {done / args.seconds:.0f}/s (load {load_average():.1f}), CPU ms/op "
                          f"{sum(cells.values()):.2f}: "
                          + ", ".join(f"{n} {v:.2f}" for n, v in sorted(cells.items(), key=lambda kv: -kv[1])),
                          flush=True)
                if args.pyspy is not None:
                    profile(network, operation, args.clients, args.seconds + 2, args.pyspy, label, top=args.top)
        finally:
            workload.close()
            network.stop()


if __name__ == "__main__":
    main()
