"""Baselines measured in the same run as the figures they are compared with.

The floor each CareChain figure is held against on this machine, at the same concurrency: a bare gRPC echo,
raw AES-256-GCM, a raw fsync of a small file, raw etcd puts (the network's own etcd, TLS and login like the
services) and a raw MinIO put of the large record's bytes (the network's own MinIO, the minio client).
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import ssl
import time
import uuid
from concurrent import futures

import grpc
import urllib3

from bench.figures import percentile
from bench.harness import closed_loop, open_loop, rate_runs
from carechain.core.crypto import new_aes_key, open_sealed, seal
from carechain.dev.backends.etcd import SERVICE_USER, EtcdCluster


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


class RawEtcd:
    """etcd's own v3 JSON gateway over HTTPS, with no client logic of CareChain's: the floor the ledger orders on.

    One keep-alive connection per writer (a pool as large as the concurrency, so no writer waits for a
    connection or pays a TLS handshake per put), the cluster's client certificate and the services' etcd user.
    """

    def __init__(self, cluster: EtcdCluster, clients: int) -> None:
        cert = cluster.client_certificate
        context = ssl.create_default_context(cafile=str(cluster.ca_file))
        context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
        self.url = cluster.client_urls[0]
        self.http = urllib3.PoolManager(maxsize=clients, block=True, ssl_context=context, retries=False)
        login = self._post("/v3/auth/authenticate", {
            "name": SERVICE_USER, "password": cluster.password_file(SERVICE_USER).read_text().strip()})
        self.headers = {"Authorization": login["token"]}
        self.prefix = f"{cluster.key_prefix}/bench-raw-{uuid.uuid4().hex[:8]}/"

    def _post(self, path: str, body: dict[str, str], headers: dict[str, str] | None = None) -> dict[str, str]:
        response = self.http.request("POST", self.url + path, body=json.dumps(body).encode(), headers=headers,
                                     timeout=30)
        if response.status != 200:
            raise RuntimeError(f"etcd {path}: HTTP {response.status} {response.data[:200]!r}")
        return json.loads(response.data)

    def put(self, index: int, value: bytes) -> None:
        key = base64.b64encode(f"{self.prefix}{index}".encode()).decode()
        self._post("/v3/kv/put", {"key": key, "value": base64.b64encode(value).decode()}, self.headers)

    def close(self) -> None:
        self.http.clear()


def etcd_puts(cluster: EtcdCluster, clients: int, seconds: float, runs: int, value_size: int = 300
              ) -> tuple[list[float], float]:
    """Raw etcd put/s of value_size-byte values (about a ledger transaction) with clients concurrent writers.

    Also returns this process's CPU ms per put: when it nears the wall time per put, the Python client (not
    etcd) is what limits the baseline on this machine.
    """
    value = b"x" * value_size
    raw = RawEtcd(cluster, clients)
    try:
        started = time.process_time()
        rates = rate_runs(lambda i: raw.put(i, value), clients, seconds, runs)
        puts = sum(rates) * seconds
        return rates, (time.process_time() - started) * 1000 / max(puts, 1)
    finally:
        raw.close()


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

