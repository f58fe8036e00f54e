"""`make bench`: record write/read throughput and latency on the local network, with baselines.

Baselines measured in the same run so results read as ratios:
- a bare gRPC echo round trip (same machine, same payload size, no work);
- raw AES-256-GCM seal + open of the same payload.
Writes and reads are sequential from one client (latency-bound); numbers vary by machine.
The ledger's own benchmark (final transactions/s, time-to-final for 1 and 3 validators, raw
etcd put/s) is bench/ledger.py; `make bench` runs both.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent import futures

import grpc

from carechain.client.sdk import CareChainClient, Kind, Purpose, permit
from carechain.core.crypto import Ed25519Signer, new_aes_key, open_sealed, seal
from carechain.dev.localnet import LocalNetwork
from carechain.labels.sensitivity import NORMAL, SENSITIVE_CATEGORIES

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "synthea-10"


def measure(operation: Callable[[int], object], count: int) -> list[float]:
    """Latencies in seconds of count sequential calls."""
    latencies = []
    for index in range(count):
        started = time.perf_counter()
        operation(index)
        latencies.append(time.perf_counter() - started)
    return latencies


def report(name: str, latencies: list[float], baseline_p50: float | None = None) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    rate = len(ordered) / sum(ordered)
    ratio = f"{p50 / baseline_p50:9.2f}x" if baseline_p50 else " " * 10
    print(f"{name:34} {rate:10.1f}/s  p50 {p50 * 1000:8.3f} ms  p99 {p99 * 1000:8.3f} ms  {ratio}")


def echo_baseline(payload: bytes, count: int) -> list[float]:
    """Round trips to a gRPC server that returns the request bytes unchanged."""
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/bench.Echo/Echo")
            echo(payload)
            return measure(lambda _: echo(payload, timeout=10), count)
    finally:
        server.stop(0)


def aes_baseline(payload: bytes, count: int) -> list[float]:
    key = new_aes_key()
    return measure(lambda _: open_sealed(key, seal(key, payload, b"ad"), b"ad"), count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300, help="records to write and read")
    args = parser.parse_args()

    with gzip.open(FIXTURES / "Condition.000.ndjson.gz", "rb") as handle:
        conditions = [line.rstrip(b"\n") for line in handle][: args.records]
    with gzip.open(FIXTURES / "Patient.000.ndjson.gz", "rb") as handle:
        patient_resource = handle.readline().rstrip(b"\n")

    fhir_id = json.loads(patient_resource)["id"]
    payload = next(c for c in conditions if fhir_id in c.decode())
    conditions = [c for c in conditions if f"Patient/{fhir_id}".encode() in c] or [payload]
    count = args.records

    print(f"CareChain benchmark: {count} sequential operations each, payload {len(payload)} bytes (Synthea Condition)")
    print(f"{'operation':34} {'throughput':>12}  {'latency':>12}  {'':>14}  {'p50 vs echo':>9}")
    echo = echo_baseline(payload, count)
    echo_p50 = statistics.median(echo)
    report("baseline: gRPC echo round trip", echo, echo_p50)
    report("baseline: AES-256-GCM seal+open", aes_baseline(payload, count), echo_p50)

    with tempfile.TemporaryDirectory(prefix="carechain-bench-") as directory:
        network = LocalNetwork(pathlib.Path(directory))
        network.start()
        try:
            operator = CareChainClient(network.endpoints, network.layout.operator_signer())

            def enrol(registrar: CareChainClient, kind: int, **fields: str) -> CareChainClient:
                key = Ed25519Signer.generate("pending")
                principal = registrar.register(kind, "bench", key.public_key_bytes(), **fields)
                return CareChainClient(network.endpoints, key.with_key_id(principal.principal_id))

            hospital = enrol(operator, Kind.PRINCIPAL_KIND_ORGANIZATION)
            reader = enrol(hospital, Kind.PRINCIPAL_KIND_PRACTITIONER, specialty="general-practice")
            patient = enrol(hospital, Kind.PRINCIPAL_KIND_PATIENT, fhir_patient_id=fhir_id)
            patient.grant_consent(permit([Purpose.PURPOSE_OF_USE_TREAT], practitioner_id=reader.principal_id,
                                         categories=[NORMAL, *sorted(SENSITIVE_CATEGORIES)]))
            hospital.put_record(patient.principal_id, payload)  # warm-up: tokens, channels, keys
            record_ids: list[str] = []
            writes = measure(
                lambda i: record_ids.append(
                    hospital.put_record(patient.principal_id, conditions[i % len(conditions)]).record_id
                ),
                count,
            )
            report("PutRecord (validate..ledger..audit)", writes, echo_p50)
            reads = measure(lambda i: reader.get_record(record_ids[i], Purpose.PURPOSE_OF_USE_TREAT), count)
            report("GetRecord (consent..key..decrypt)", reads, echo_p50)
            for client in (operator, hospital, reader, patient):
                client.close()
        finally:
            network.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
