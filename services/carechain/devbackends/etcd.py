"""A real N-member etcd cluster on 127.0.0.1 for development and tests.

Every member gets free client and peer ports and its own data directory under
``data_dir/<name>``, and logs to ``data_dir/<name>.log``. The cluster is
bootstrapped statically (``--initial-cluster``). Single members can be
stopped, killed (SIGKILL) and started again on the same ports and data, which
is what the fault tests need (losing one member keeps quorum, losing two does
not).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from carechain.devbackends.tools import find_tool

# etcd's --initial-cluster-token: a name that keeps clusters apart, not a secret.
CLUSTER_NAME = "carechain-dev"
# etcd's defaults, stated: a member notices a lost quorum within about a second, and a
# busy 2-core CI machine does not cause spurious elections.
HEARTBEAT_MS = 100
ELECTION_TIMEOUT_MS = 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class EtcdMember:
    """One member's name, ports and directories."""

    name: str
    client_port: int
    peer_port: int
    data_dir: pathlib.Path
    log_file: pathlib.Path

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class EtcdCluster:
    """Start, stop and fault-inject a local etcd cluster (etcd 3.5 from ``find_tool("etcd")``)."""

    def __init__(self, data_dir: pathlib.Path, members: int = 3) -> None:
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.data_dir = pathlib.Path(data_dir)
        self.members = [
            EtcdMember(f"m{i}", _free_port(), _free_port(), self.data_dir / f"m{i}", self.data_dir / f"m{i}.log")
            for i in range(members)
        ]
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    # --- addresses ----------------------------------------------------------------------------

    @property
    def client_urls(self) -> list[str]:
        """Client URLs of every member (running or not)."""
        return [m.client_url for m in self.members]

    @property
    def endpoints(self) -> str:
        """Client URLs comma-separated, as ``CARECHAIN_ETCD_ENDPOINTS`` expects."""
        return ",".join(self.client_urls)

    def running(self, index: int) -> bool:
        """True while member index's process is alive."""
        process = self._processes.get(index)
        return process is not None and process.poll() is None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> EtcdCluster:
        """Start every member and wait until each one reports healthy (has a leader)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            for index in range(len(self.members)):
                self._launch(index)
            deadline = time.monotonic() + timeout
            for index in range(len(self.members)):
                self._wait_healthy(index, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def start_member(self, index: int, timeout: float = 60.0) -> None:
        """Start one (stopped) member again on its ports and data; waits until it is healthy.

        Health needs a leader, so with a quorum still missing pass ``timeout=0`` to not wait.
        """
        if self.running(index):
            return
        self._launch(index)
        if timeout > 0:
            self._wait_healthy(index, time.monotonic() + timeout)

    def stop_member(self, index: int, timeout: float = 15.0) -> None:
        """Stop one member gracefully (SIGTERM to its process group; SIGKILL after timeout)."""
        self._terminate(index, signal.SIGTERM, timeout)

    def kill_member(self, index: int) -> None:
        """Kill one member at once (SIGKILL), as a crash would."""
        self._terminate(index, signal.SIGKILL, 15.0)

    def stop(self) -> None:
        """Stop every running member."""
        for index in list(self._processes):
            self._terminate(index, signal.SIGTERM, 15.0)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ----------------------------------------------------------------------------

    def _command(self, member: EtcdMember) -> list[str]:
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            str(find_tool("etcd")),
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-token", CLUSTER_NAME,
            "--initial-cluster-state", "new",  # ignored once the member's data dir is bootstrapped
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_TIMEOUT_MS),
            "--log-level", "warn",
        ]

    def _launch(self, index: int) -> None:
        member = self.members[index]
        member.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(member.log_file, "ab") as log:
            self._processes[index] = subprocess.Popen(
                self._command(member),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: stop/kill reach only this member
            )

    def _terminate(self, index: int, sig: signal.Signals, timeout: float) -> None:
        process = self._processes.pop(index, None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)

    def _wait_healthy(self, index: int, deadline: float) -> None:
        member = self.members[index]
        while True:
            process = self._processes.get(index)
            if process is None or process.poll() is not None:
                raise RuntimeError(f"etcd member {member.name} exited; see {member.log_file}")
            if _healthy(member.client_url):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd member {member.name} not healthy in time; see {member.log_file}")
            time.sleep(0.05)


def _healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=2) as reply:  # noqa: S310 - our own http URL
            return json.loads(reply.read()).get("health") == "true"
    except (OSError, urllib.error.URLError, ValueError):
        return False
