"""Ledger benchmark: final transactions/s and time-to-final for 1 and 3 validators on etcd.

Everything runs on this machine in one run, so numbers read as ratios:

- a raw etcd baseline: put/s of small values through the same client, sequential
  and with the same number of concurrent writers as the ledger runs;
- the ledger with 1 validator and with 3 validators (quorum 2), each validator
  its own chain store and etcd client, ordering through the same 3-member etcd
  cluster. Writers submit RegisterPrincipal transactions with ``ACK_LEVEL_FINAL``
  (answered once a quorum signed the block); time-to-final is measured per
  transaction from submit to that answer.

Block cutting is configurable (``--block-max-transactions``, ``--block-max-wait-ms``).
The validators share this process (threads), so on few cores the 3-validator
numbers include the cost of running all three.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures

from carechain.common.v1 import common_pb2
from carechain.core.crypto import Ed25519Signer
from carechain.core.layout import TrustBundle, service_principal_id
from carechain.dev.backends.etcd import EtcdCluster
from carechain.ledger import transactions
from carechain.ledger.chain import Ledger
from carechain.ledger.etcd_orderer import EtcdOrderer
from carechain.ledger.quorum import ValidatorSet
from carechain.ledger.v1 import ledger_pb2

CHAIN = "carechain-bench"


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def print_row(name: str, count: int, elapsed: float, latencies: list[float] | None = None) -> None:
    rate = count / elapsed if elapsed else 0.0
    if latencies:
        ordered = sorted(latencies)
        print(f"{name:44} {rate:10.1f}/s  p50 {statistics.median(ordered) * 1000:8.2f} ms  "
              f"p99 {percentile(ordered, 0.99) * 1000:8.2f} ms")
    else:
        print(f"{name:44} {rate:10.1f}/s")


def run_concurrently(operation, count: int, concurrency: int) -> tuple[float, list[float]]:
    """Run operation(i) for i < count on concurrency threads; (elapsed seconds, per-call latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        started = time.perf_counter()
        operation(index)
        with lock:
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - started, latencies


def etcd_baseline(cluster: EtcdCluster, count: int, concurrency: int) -> None:
    client = cluster.client()  # TLS and auth, like the services: keys under the /carechain prefix
    value = b"x" * 300
    seq, par = "/carechain-bench/seq", "/carechain-bench/par"
    try:
        elapsed, latencies = run_concurrently(lambda i: client.put(f"{seq}/{i}", value), count, 1)
        print_row("baseline: raw etcd put (sequential)", count, elapsed, latencies)
        elapsed, latencies = run_concurrently(lambda i: client.put(f"{par}/{i}", value), count, concurrency)
        print_row(f"baseline: raw etcd put ({concurrency} writers)", count, elapsed, latencies)
    finally:
        client.close()


def ledger_run(cluster: EtcdCluster, root: pathlib.Path, validators: int, count: int, concurrency: int,
               block_max_transactions: int, block_max_wait_ms: int) -> None:
    identity = Ed25519Signer.generate(service_principal_id("identity"))
    signers = [Ed25519Signer.generate(f"validator-{i}") for i in range(1, validators + 1)]
    trust = TrustBundle({identity.key_id: identity.public_key_bytes(),
                         **{s.key_id: s.public_key_bytes() for s in signers}})
    validator_set = ValidatorSet.of([s.key_id for s in signers])
    prefix = f"/carechain-bench-{validators}-{time.time_ns()}"
    orderers = [EtcdOrderer(cluster.client(), prefix, CHAIN, owns_client=True) for _ in signers]
    ledgers = [
        Ledger.open(root / f"v{validators}-{s.key_id}", CHAIN, s, trust, orderer=orderer, validators=validator_set,
                    block_max_transactions=block_max_transactions, block_max_wait_ms=block_max_wait_ms)
        for s, orderer in zip(signers, orderers, strict=True)
    ]
    txs = [
        transactions.sign_transaction(transactions.new_body(CHAIN, identity.key_id, register_principal=(
            ledger_pb2.RegisterPrincipal(principal_id=f"org-{i}", kind=common_pb2.PRINCIPAL_KIND_ORGANIZATION,
                                         public_key=Ed25519Signer.generate("k").public_key_bytes()))), identity)
        for i in range(count + concurrency)
    ]
    try:
        # Warm-up (connections, first blocks), then the measured run; submissions spread over the validators.
        run_concurrently(lambda i: ledgers[i % validators].submit(txs[count + i], 60, final=True), concurrency,
                         concurrency)
        elapsed, latencies = run_concurrently(
            lambda i: ledgers[i % validators].submit(txs[i], 60, final=True), count, concurrency)
        name = f"ledger: {validators} validator{'s' if validators > 1 else ''} (quorum {validator_set.quorum}), final"
        print_row(name, count, elapsed, latencies)
    finally:
        for ledger in ledgers:
            ledger.close()
        for orderer in orderers:
            orderer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=400, help="transactions per run")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent submitters")
    parser.add_argument("--block-max-transactions", type=int, default=100, help="cut a block at this size")
    parser.add_argument("--block-max-wait-ms", type=int, default=20, help="cut a block after this long")
    args = parser.parse_args(argv)
    print(f"ledger benchmark: {args.transactions} transactions, {args.concurrency} concurrent submitters, "
          f"blocks of <= {args.block_max_transactions} or {args.block_max_wait_ms} ms, 3-member etcd")
    with tempfile.TemporaryDirectory(prefix="carechain-bench-ledger-") as directory:
        root = pathlib.Path(directory)
        cluster = EtcdCluster(root / "etcd", members=3).start()
        try:
            etcd_baseline(cluster, args.transactions, args.concurrency)
            for validators in (1, 3):
                ledger_run(cluster, root, validators, args.transactions, args.concurrency,
                           args.block_max_transactions, args.block_max_wait_ms)
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
