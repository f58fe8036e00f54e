"""The `carechain` command as a user runs it: up, demo, Ctrl-C; health and reflection on every service."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from carechain.core.layout import SERVICES
from carechain.dev.localnet import LocalNetwork

EXPECTED_API = {
    "identity": "carechain.identity.v1.IdentityService",
    "storage": "carechain.storage.v1.StorageService",
    "ledger": "carechain.ledger.v1.LedgerService",
    "consent": "carechain.consent.v1.ConsentService",
    "audit": "carechain.audit.v1.AuditService",
    "records": "carechain.records.v1.RecordsService",
}


@pytest.mark.parametrize("options", [[], ["--with-backends"]], ids=["embedded", "with-backends"])
def test_up_demo_and_ctrl_c(tmp_path, options: list[str]) -> None:
    data_dir = tmp_path / "net"
    up = subprocess.Popen(
        [sys.executable, "-m", "carechain", "up", "--random-ports", "--data-dir", str(data_dir), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        endpoints_file = data_dir / "network.json"
        deadline = time.monotonic() + 300  # a ceiling, not a budget: a loaded machine is slower
        while not endpoints_file.exists():
            assert up.poll() is None, f"carechain up exited early: {up.stdout.read()}"
            assert time.monotonic() < deadline, "carechain up did not come up in 300 s"
            time.sleep(0.2)
        endpoints = json.loads(endpoints_file.read_text())

        for service in SERVICES:
            with grpc.insecure_channel(endpoints[service]) as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert health.status == health_pb2.HealthCheckResponse.SERVING, service
                listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
                assert EXPECTED_API[service] in listed, f"{service} reflection lists {listed}"
                assert "grpc.health.v1.Health" in listed

        # `up` starts the FHIR REST gateway in front of records too (docs/fhir.md).
        with urllib.request.urlopen(endpoints["fhir_base_url"] + "/readyz", timeout=5) as ready:
            assert ready.status == 200
        demo = subprocess.run(
            [sys.executable, "-m", "carechain", "demo", "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=120,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "read the cancer diagnosis: PERMITTED" in demo.stdout
        assert "read the psychiatric diagnosis: DENIED" in demo.stdout
        assert "read the cancer diagnosis again: DENIED" in demo.stdout
        assert "chain verification: OK" in demo.stdout
        if not options:
            _continue_from_the_demo(data_dir, demo.stdout)
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    assert "CareChain local network is up" in output and "stopped" in output
    # The hint names a command that runs from here (the venv's script is not on PATH), or `make demo`.
    [hint] = [line for line in output.splitlines() if line.startswith("try:")]
    assert hint.split()[1].endswith(("/carechain", "carechain")) and hint.split()[1] != "carechain" \
        and "make demo" in hint, hint
    if options:
        assert "OpenBao, MinIO and etcd backends" in output and "openbao" in output
    assert not endpoints_file.exists(), "the endpoints file must go when the network stops"
    for service in SERVICES:
        with grpc.insecure_channel(endpoints[service]) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                raise AssertionError(f"{service} still answers after Ctrl-C")
            except grpc.FutureTimeoutError:
                pass


def _continue_from_the_demo(data_dir, demo_output: str) -> None:
    """The demo leaves its principals' key files (0600) and prints commands that work with them."""
    keys = data_dir / "demo-keys"
    for role in ("hospital", "oncologist", "psychiatrist", "patient"):
        key_file = keys / f"{role}.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, role
        assert key_file.read_text().startswith("CareChain-Principal: "), role
    assert "PRIVATE KEY" not in demo_output
    commands = [shlex.split(line.split("#")[0]) for line in demo_output.splitlines() if "--key-file" in line]
    assert len(commands) >= 5, demo_output
    outcomes = []
    for words in commands[:3]:  # grant the consent again, the oncologist reads, the psychiatrist is refused
        args = words[next(i for i, w in enumerate(words) if w.endswith("carechain")) + 1:]
        done = subprocess.run([sys.executable, "-m", "carechain", *args], capture_output=True, text=True, timeout=60)
        outcomes.append((done.returncode, done.stderr.strip()))
    assert outcomes[0] == (0, "") and outcomes[1] == (0, ""), outcomes
    assert outcomes[2] == (1, "error: PERMISSION_DENIED: not permitted by the patient's consent"), outcomes


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path) -> None:
    network = LocalNetwork(tmp_path / "net")
    network.layout.ensure()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {**network.service_env("storage"), "CARECHAIN_LISTEN_ADDRESS": busy}
        done = subprocess.run([sys.executable, "-m", "carechain", "serve", "storage"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == \
        f"storage: CARECHAIN_LISTEN_ADDRESS: cannot listen on {busy} (port in use, or not an address of this host)"
