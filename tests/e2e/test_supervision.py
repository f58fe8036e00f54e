"""`carechain up` supervises its children: a crashed service comes back; one that keeps crashing ends `up` with 1."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

CEILING_SECONDS = 180  # generous: conditions are polled, this only bounds a hang


def _wait(condition, what: str, up: subprocess.Popen, log: pathlib.Path):
    deadline = time.monotonic() + CEILING_SECONDS
    while True:
        found = condition()
        if found:
            return found
        assert up.poll() is None or what == "up to exit", f"carechain up exited early: {log.read_text()}"
        assert time.monotonic() < deadline, f"{what}: not within {CEILING_SECONDS} s; {log.read_text()}"
        time.sleep(0.2)


def _child_pid(parent: int, service: str) -> int | None:
    """The pid of the `carechain serve <service>` child of parent, if running."""
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and cmdline[-3:-1] == [b"serve", service.encode()]:
            return int(entry.name)
    return None


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError:
            return False
    return status == health_pb2.HealthCheckResponse.SERVING


def _occupy(address: str) -> socket.socket | None:
    """Listen on a service's port (without SO_REUSEPORT, so its restart cannot bind), or None if still taken."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError:
        sock.close()
        return None
    sock.listen()
    return sock


# Its own ceiling (network start, crashes, restarts, the grace period, teardown): minutes on 2 loaded cores.
@pytest.mark.timeout(900)
def test_up_restarts_a_killed_service_and_exits_1_when_it_keeps_crashing(tmp_path) -> None:
    data_dir, log = tmp_path / "net", tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "carechain", "up", "--random-ports", "--data-dir", str(data_dir),
             "--max-restarts", "2"],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    blocker = None
    try:
        endpoints_file = data_dir / "network.json"
        _wait(endpoints_file.exists, "network up", up, log)
        endpoints = json.loads(endpoints_file.read_text())

        # 1. kill -9 one child: it is restarted and serves (the demo stores and reads records through it).
        first = _wait(lambda: _child_pid(up.pid, "storage"), "storage child", up, log)
        os.kill(first, signal.SIGKILL)
        _wait(lambda: (_child_pid(up.pid, "storage") or first) != first and _serving(endpoints["storage"]),
              "storage restarted", up, log)
        demo = subprocess.run([sys.executable, "-m", "carechain", "demo", "--data-dir", str(data_dir)],
                              capture_output=True, text=True, timeout=CEILING_SECONDS)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "restarting in" in log.read_text()

        # 2. crash loop: kill it again and hold its port, so every restart dies; up gives up with status 1.
        second = _child_pid(up.pid, "storage")
        assert second is not None and second != first
        os.kill(second, signal.SIGKILL)
        blocker = _wait(lambda: _occupy(endpoints["storage"]), "storage port free", up, log)
        _wait(lambda: up.poll() is not None, "up to exit", up, log)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        if blocker is not None:
            blocker.close()
    output = log.read_text()
    assert up.returncode == 1, output
    assert "giving up" in output and "stopped" in output
    assert not (data_dir / "network.json").exists()
    for service in ("ledger", "records"):
        assert not _serving(endpoints[service]), f"{service} still serves after up gave up"
