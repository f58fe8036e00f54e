"""A real OpenBao server on 127.0.0.1 (tests, ``carechain up --with-backends``).

Two modes:

- :class:`OpenBaoDevServer`: ``bao server -dev``, in memory, unsealed, with a root
  token we choose. Right for tests; a restart starts with empty engines.
- :class:`OpenBaoServer`: file storage under the data directory, initialised once
  with a single unseal key and unsealed at every start, so a local network keeps
  its keys across restarts. The unseal key and root token are kept in
  ``init.json`` (mode 0600) next to the data: a development convenience, never a
  production setup (there, use auto-unseal and never store the root token).
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import urllib.request
from types import TracebackType
from typing import Any

from carechain.core.crypto import write_private_file
from carechain.core.files import private_dir
from carechain.dev.backends.process import ServerProcess, free_port
from carechain.dev.backends.tools import find_tool

READY_TIMEOUT_SECONDS = 30.0
LOG_FILE = "openbao.log"

__all__ = ["OpenBaoDevServer", "OpenBaoServer", "free_port"]


def _clean_env(home: pathlib.Path) -> dict[str, str]:
    # HOME keeps any token helper file inside the data dir; no BAO_/VAULT_ settings leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(home)
    return env


def _request(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - our own http URL
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            payload = response.read()
            return response.status, json.loads(payload) if payload else {}
    except urllib.error.HTTPError as error:
        payload = error.read()
        return error.code, json.loads(payload) if payload else {}


class _OpenBaoBase:
    """What both modes share: the port, the process, the log, the context manager."""

    def __init__(self, data_dir: pathlib.Path, port: int | None = None) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.port = port or free_port()
        self._process = ServerProcess("OpenBao", self.data_dir / LOG_FILE)
        self.root_token = ""

    @property
    def address(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> pathlib.Path:
        """Where the server's output goes."""
        return self._process.log_file

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process.running

    def _health(self) -> int:
        return _request("GET", f"{self.address}/v1/sys/health")[0]

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it does not exit in time."""
        self._process.stop()

    def kill(self) -> None:
        """SIGKILL the process group at once (crash)."""
        self._process.kill()

    def restart(self) -> Any:
        """Stop (if still running; e.g. not after kill) and start again on the same port.

        The persistent server comes back with its keys (unsealed from init.json); the dev server
        comes back empty (its engines need the bootstrap again)."""
        self.stop()
        return self.start()

    def start(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class OpenBaoDevServer(_OpenBaoBase):
    """``bao server -dev`` on a free port (in memory: a restart loses everything; rerun the bootstrap)."""

    def __init__(self, data_dir: pathlib.Path, *, port: int | None = None, root_token: str | None = None) -> None:
        super().__init__(data_dir, port)
        self.root_token = root_token or "dev-" + secrets.token_hex(16)

    def start(self) -> OpenBaoDevServer:
        """Start the server and wait until it is unsealed and active."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process.launch(
            [str(find_tool("bao")), "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}",
             f"-dev-root-token-id={self.root_token}", "-dev-no-store-token"],
            env=_clean_env(self.data_dir), cwd=self.data_dir,
        )
        self._process.wait_ready(lambda: self._health() == 200, READY_TIMEOUT_SECONDS)
        return self


class OpenBaoServer(_OpenBaoBase):
    """OpenBao with file storage that survives restarts; initialised and unsealed automatically."""

    def __init__(self, data_dir: pathlib.Path, *, port: int | None = None, cluster_port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.cluster_port = cluster_port or free_port()
        self._init_file = self.data_dir / "init.json"

    def start(self) -> OpenBaoServer:
        """Start, initialise on first start, unseal, and wait until active."""
        if self.running:
            return self
        # The Raft store and init.json (unseal key, root token) live here: owner only.
        private_dir(self.data_dir)
        private_dir(self.data_dir / "data")
        config = self.data_dir / "openbao.hcl"
        # Integrated (Raft) storage with one node: OpenBao's supported persistent storage.
        config.write_text(
            f'storage "raft" {{\n  path = "{self.data_dir / "data"}"\n  node_id = "dev"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.address}"\ncluster_addr = "http://127.0.0.1:{self.cluster_port}"\nui = false\n'
        )
        self._process.launch([str(find_tool("bao")), "server", f"-config={config}"],
                             env=_clean_env(self.data_dir), cwd=self.data_dir)
        # 501: not initialised, 503: sealed, 200: active.
        self._process.wait_ready(lambda: self._health() in (200, 501, 503), READY_TIMEOUT_SECONDS)
        if self._health() == 501:
            # Initialising Raft storage and generating the keys takes a while.
            status, answer = _request(
                "PUT", f"{self.address}/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1}, timeout=120
            )
            if status != 200:
                raise RuntimeError(f"OpenBao init failed ({status}): {answer.get('errors')}")
            write_private_file(self._init_file, json.dumps(
                {"unseal_key": (answer.get("keys_base64") or answer["keys"])[0], "root_token": answer["root_token"]}
            ).encode())
        secrets_on_disk = json.loads(self._init_file.read_text())
        self.root_token = secrets_on_disk["root_token"]
        if self._health() == 503:
            _request("PUT", f"{self.address}/v1/sys/unseal", {"key": secrets_on_disk["unseal_key"]}, timeout=60)
        # Raft elects itself leader after unsealing; then the node is active.
        self._process.wait_ready(lambda: self._health() == 200, 120)
        return self
