"""Issue 16: tracing exporters in a real service process.

- ``OTEL_TRACES_EXPORTER=console`` writes one JSON object per line to stderr, which `carechain up`
  sends to the service's log file with its JSON logs: the file stays one JSON object per line.
- With an OTLP collector nobody listens on, SIGTERM still stops the process within seconds: the
  exporters' flush (which the service logs as ``telemetry flushed``, ``flush_seconds``) gives up after
  about 2 s; the exporter's default 10 s timeout used to hold the exit up for 7-10 s.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from carechain.dev.backends.process import free_port
from carechain.dev.localnet import LocalNetwork

# The flush gives up after EXPORT_TIMEOUT_SECONDS (2 s); the old default retried for 7 s and more.
FLUSH_AT_MOST_SECONDS = 4


def _storage(root: pathlib.Path, **env: str) -> LocalNetwork:
    """A network directory with only the storage service running (it needs no peers to serve health)."""
    network = LocalNetwork(root, extra_env={"CARECHAIN_SHUTDOWN_GRACE_SECONDS": "0", **env})
    network.layout.ensure(service_key_files=True)
    network.log_dir.mkdir(exist_ok=True)
    network.start_service("storage")
    with grpc.insecure_channel(network.listen_addresses["storage"]) as channel:
        for _ in range(5):  # traced calls: spans waiting in the exporter's queue
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return network


def _sigterm(network: LocalNetwork) -> list[dict]:
    """SIGTERM the storage process; its exit code must be 0. Returns its log, one JSON object per line."""
    process = network.processes.pop("storage")
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("storage did not stop within 60 s of SIGTERM") from None
    assert code == 0, "a clean stop, whatever the collector"
    entries = []
    for number, line in enumerate((network.log_dir / "storage.log").read_text().splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"storage.log line {number} is not one JSON object: {line!r}") from None
    return entries


def test_console_spans_are_json_lines_in_the_service_log(tmp_path: pathlib.Path) -> None:
    entries = _sigterm(_storage(tmp_path, OTEL_TRACES_EXPORTER="console"))
    spans = [e for e in entries if "context" in e and e.get("name") == "grpc.health.v1.Health/Check"]
    assert len(spans) >= 5, "each traced call (ours and the start-up health checks) is one span line"
    assert spans[0]["resource"]["attributes"]["service.version"]
    assert any(e.get("msg") == "stopped" for e in entries), "the JSON logs are in the same file"


def test_sigterm_with_an_unreachable_collector_stops_within_seconds(tmp_path: pathlib.Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    entries = _sigterm(_storage(tmp_path, OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=dead,
                                OTEL_EXPORTER_OTLP_INSECURE="true"))
    [flushed] = [e for e in entries if e.get("msg") == "telemetry flushed"]
    assert flushed["flush_seconds"] <= FLUSH_AT_MOST_SECONDS, f"the exporters held the exit up: {flushed}"
