"""Baselines measured in the same run as the figures they are compared with.

The floor each CareChain figure is held against on this machine, at the same concurrency: a bare gRPC echo,
raw AES-256-GCM, a raw fsync of a small file, raw etcd puts (the network's own etcd, TLS and login like the
services) and a raw MinIO put of the large record's bytes (the network's own MinIO, the minio client).
"""

from __future__ import annotations

import os
import pathlib
import time
import uuid
from concurrent import futures

import grpc

from bench.figures import percentile
from bench.harness import closed_loop, open_loop, rate_runs
from carechain.core.crypto import new_aes_key, open_sealed, seal


class EchoServer:
    """A bare gRPC server returning the request bytes: the floor any RPC pays on this machine."""

    def __init__(self, workers: int = 16) -> None:
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        self.server.add_generic_rpc_handlers((handler,))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.echo = self.channel.unary_unary("/bench.Echo/Echo")

    def rates(self, payload: bytes, clients: int, seconds: float, runs: int) -> list[float]:
        """Echo calls/s of payload at clients concurrent callers, per run."""
        return rate_runs(lambda _i: self.echo(payload, timeout=10), clients, seconds, runs)

    def p99_ms(self, payload: bytes, rate: float, seconds: float) -> float:
        """p99 latency (ms) of echo calls started at rate/s in an open loop (as GetRecord's p99 is measured)."""
        return percentile(open_loop(lambda _i: self.echo(payload, timeout=10), rate, seconds, 64), 0.99) * 1000

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)


def aes_gcm(payload: bytes, seconds: float, runs: int) -> tuple[list[float], float]:
    """AES-256-GCM seal+open of payload on one thread: (rates per run, CPU ms per seal+open)."""
    key = new_aes_key()
    started_cpu, done_total = time.process_time(), 0
    rates = []
    for _ in range(runs):
        done, _ = closed_loop(lambda _i: open_sealed(key, seal(key, payload, b"ad"), b"ad"), 1, seconds)
        done_total += done
        rates.append(done / seconds)
    return rates, (time.process_time() - started_cpu) * 1000 / max(done_total, 1)


def fsync(directory: pathlib.Path, size: int, seconds: float, runs: int) -> list[float]:
    """Write size bytes to a new file and fsync it, back to back on one thread (the disk the data lives on)."""
    data = os.urandom(size)

    def one(index: int) -> None:
        path = directory / f"fsync-{index}"
        with path.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        path.unlink()

    directory.mkdir(parents=True, exist_ok=True)
    return rate_runs(one, 1, seconds, runs)


def etcd_puts(client: object, clients: int, seconds: float, runs: int, value_size: int = 300) -> list[float]:
    """Raw etcd put/s of value_size-byte values with clients concurrent writers (keys under /carechain)."""
    value = b"x" * value_size
    prefix = f"/carechain/bench-raw-{uuid.uuid4().hex[:8]}"
    return rate_runs(lambda i: client.put(f"{prefix}/{i}", value), clients, seconds, runs)  # type: ignore[attr-defined]


def minio_put(minio: object, source: pathlib.Path, runs: int, bucket: str = "carechain-bench-raw") -> list[float]:
    """Raw MinIO put of the file source (streamed multipart, the minio client's defaults), MiB/s per run."""
    client = minio.client()  # type: ignore[attr-defined]
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    size = source.stat().st_size
    rates = []
    for run in range(runs):
        started = time.perf_counter()
        client.fput_object(bucket, f"raw-{run}", str(source), part_size=64 * 1024 * 1024)
        rates.append(size / (1024 * 1024) / (time.perf_counter() - started))
        client.remove_object(bucket, f"raw-{run}")
    return rates

