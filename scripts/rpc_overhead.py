"""Per-call overhead of the CareChain call stack beside a bare gRPC call (issue 13), in one process.

Client and server run in this process, so CPU time (``time.process_time``) covers both sides of every
call. Each variant runs in its own subprocess (tracing and metrics are process-wide):

- ``bare``: a plain ``grpc.server`` with the same servicer and the same 2 KiB request and response
  (StorageService/StatBlob, the request's sha256 field carrying the payload), a plain channel;
- ``carechain``: the full stack: :func:`carechain.runtime.server.start_service` (OpenTelemetry server
  interceptor, call interceptor with range check, access table, bearer token verification, principal
  status, JSON ``rpc`` log line to /dev/null, metrics into an in-memory reader), and the client of the
  services (:func:`carechain.client.channels.open_channel` with a token source and the OTel client
  interceptor, behind :class:`carechain.runtime.peers.PeerStub`), tracing with no exporter;
- ``carechain-exporter``: the same with a span exporter (batching into a processor that drops spans),
  to show what exporting costs on top.

Prints CPU-ms per call (client + server) for each and the difference to bare. Not a test: it never
asserts on time. To profile one variant, run it alone under py-spy (dev extras)::

    .venv/bin/python scripts/rpc_overhead.py [--calls 3000] [--threads 1]
    .venv/bin/py-spy record --gil -f raw -o prof.txt -- \
        .venv/bin/python scripts/rpc_overhead.py --variant carechain
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from concurrent import futures
from typing import Any

import grpc

PAYLOAD = "x" * 2048
VARIANTS = ("bare", "carechain", "carechain-exporter")


def _servicer() -> Any:
    from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

    class Echo(storage_pb2_grpc.StorageServiceServicer):
        def StatBlob(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
            return storage_pb2.BlobRef(sha256=request.sha256, size=len(request.sha256))

    return Echo()


def _bare() -> tuple[Any, Any]:
    from carechain.storage.v1 import storage_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    storage_pb2_grpc.add_StorageServiceServicer_to_server(_servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return storage_pb2_grpc.StorageServiceStub(channel), lambda: (channel.close(), server.stop(0))


def _carechain(exporter: bool) -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from carechain.client.auth import TokenSource
    from carechain.client.channels import open_channel
    from carechain.common.v1 import common_pb2
    from carechain.core.crypto import Ed25519Signer
    from carechain.core.layout import TOKEN_ISSUER_ID, TrustBundle, audience
    from carechain.core.telemetry import configure_tracing
    from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
    from carechain.runtime import metrics
    from carechain.runtime.access import ANY, AccessTable, Allow
    from carechain.runtime.auth import Authenticator, Caller, caller_claims
    from carechain.runtime.config import StorageSettings
    from carechain.runtime.logs import configure_logging
    from carechain.runtime.peers import PeerStub
    from carechain.runtime.principal_status import PrincipalStatus
    from carechain.runtime.server import register_servicer, start_service
    from carechain.storage.v1 import storage_pb2, storage_pb2_grpc

    # As run_service sets a service up, with the log going nowhere (the formatting still happens).
    configure_logging("storage", "INFO")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # type: ignore[attr-defined]  # noqa: SIM115
    provider = configure_tracing("storage")
    if exporter:
        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                for span in spans:
                    span.to_json(indent=None)  # what an exporter does: encode every span
                return SpanExportResult.SUCCESS

        provider.add_span_processor(BatchSpanProcessor(Drop()))
    metrics.configure_metrics("storage", "", readers=[InMemoryMetricReader()])

    issuer = Ed25519Signer.generate(TOKEN_ISSUER_ID)
    trust = TrustBundle({TOKEN_ISSUER_ID: issuer.public_key_bytes()})
    status = PrincipalStatus(lambda request: _no_transactions())
    table = AccessTable(storage_pb2.DESCRIPTOR.services_by_name["StorageService"],
                        {"StatBlob": Allow.of(service=ANY, services=["records"])})
    running = start_service("storage", StorageSettings(listen_address="127.0.0.1:0", shutdown_grace_seconds=0),
                            register_servicer(storage_pb2_grpc.add_StorageServiceServicer_to_server, _servicer(),
                                              table, Authenticator(trust, audience("storage"), status)))
    records = Caller("svc-records", common_pb2.PRINCIPAL_KIND_SERVICE)

    def fetch(aud: str) -> tuple[str, int]:
        return issue_token(issuer, ACCESS_TOKEN_TYPE, caller_claims(records, aud), 300)

    channel = open_channel(running.address, "storage", TokenSource(fetch))
    stub = PeerStub("storage", storage_pb2_grpc.StorageServiceStub(channel), 10.0)
    return stub, lambda: (channel.close(), running.stop(), provider.shutdown())


def _no_transactions() -> Any:
    from carechain.ledger.v1 import ledger_pb2

    return ledger_pb2.ListTransactionsResponse()


def measure(variant: str, calls: int, threads: int) -> dict[str, float]:
    """CPU-ms and wall-ms per call of variant (after a warm-up)."""
    from carechain.storage.v1 import storage_pb2

    stub, close = _bare() if variant == "bare" else _carechain(variant == "carechain-exporter")
    request = storage_pb2.StatBlobRequest(sha256=PAYLOAD)

    def run(count: int) -> None:
        for _ in range(count):
            assert stub.StatBlob(request, timeout=10).size == len(PAYLOAD)

    try:
        run(200)  # warm-up: connections, token fetch, caches
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        with futures.ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(run, [calls // threads] * threads))
        cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    finally:
        close()
    done = (calls // threads) * threads
    return {"cpu_ms": cpu * 1000 / done, "wall_ms": wall * 1000 / done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1, help="concurrent callers")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (the median is printed)")
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process, print JSON")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.calls, args.threads)))
        return
    results: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeat):
        for variant in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--variant", variant, "--calls", str(args.calls),
                                  "--threads", str(args.threads)], check=True, capture_output=True, text=True)
            results.setdefault(variant, []).append(json.loads(out.stdout.splitlines()[-1]))
    print(f"{args.calls} unary calls of 2 KiB, {args.threads} caller thread(s), median of {args.repeat} runs, "
          "client + server CPU in one process:")
    bare = sorted(r["cpu_ms"] for r in results["bare"])[len(results["bare"]) // 2]
    for variant, runs in results.items():
        cpu = sorted(r["cpu_ms"] for r in runs)[len(runs) // 2]
        wall = sorted(r["wall_ms"] for r in runs)[len(runs) // 2]
        print(f"  {variant:20} {cpu:6.3f} CPU-ms/call ({cpu / bare:4.1f}x bare, +{cpu - bare:.3f})  "
              f"{wall:6.3f} wall-ms/call")


if __name__ == "__main__":
    main()
