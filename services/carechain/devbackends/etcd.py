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
import pathlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from carechain.devbackends.process import ServerProcess, free_port
from carechain.devbackends.tools import find_tool

# etcd's --initial-cluster-token: a name that keeps clusters apart, not a secret.
CLUSTER_NAME = "carechain-dev"
# etcd's defaults, stated: a member notices a lost quorum within about a second, and a
# busy 2-core CI machine does not cause spurious elections.
HEARTBEAT_MS = 100
ELECTION_TIMEOUT_MS = 1000


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
    """Start, stop and fault-inject a local etcd cluster (etcd 3.5 from ``find_tool("etcd")``).

    ports gives each member's (client, peer) ports; a cluster restarted on the
    same data must keep them, since members know each other's peer URLs.
    """

    def __init__(
        self, data_dir: pathlib.Path, members: int = 3, ports: Sequence[tuple[int, int]] | None = None
    ) -> None:
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        if ports is not None and len(ports) != members:
            raise ValueError("ports needs one (client, peer) pair per member")
        self.data_dir = pathlib.Path(data_dir)
        chosen = list(ports) if ports is not None else [(free_port(), free_port()) for _ in range(members)]
        self.members = [
            EtcdMember(f"m{i}", client, peer, self.data_dir / f"m{i}", self.data_dir / f"m{i}.log")
            for i, (client, peer) in enumerate(chosen)
        ]
        self._processes = [ServerProcess(f"etcd member {m.name}", m.log_file) for m in self.members]

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
        return self._processes[index].running

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> EtcdCluster:
        """Start every member and wait until each one reports healthy (has a leader)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            for index in range(len(self.members)):
                self._launch(index)
            for index in range(len(self.members)):
                self._wait_healthy(index, timeout)
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
            self._wait_healthy(index, timeout)

    def stop_member(self, index: int, timeout: float = 15.0) -> None:
        """Stop one member gracefully (SIGTERM to its process group; SIGKILL after timeout)."""
        self._processes[index].stop(timeout)

    def kill_member(self, index: int) -> None:
        """Kill one member at once (SIGKILL), as a crash would."""
        self._processes[index].kill()

    def stop(self) -> None:
        """Stop every running member."""
        for process in self._processes:
            process.stop(15.0)

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
        self._processes[index].launch(self._command(member))

    def _wait_healthy(self, index: int, timeout: float) -> None:
        self._processes[index].wait_ready(lambda: _healthy(self.members[index].client_url), timeout)


def _healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=2) as reply:  # noqa: S310 - our own http URL
            return json.loads(reply.read()).get("health") == "true"
    except (OSError, urllib.error.URLError, ValueError):
        return False
