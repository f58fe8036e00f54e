"""A real OpenBao server in development mode on 127.0.0.1 (tests, ``carechain up --with-backends``).

``bao server -dev`` keeps everything in memory and starts unsealed with a root
token we choose: right for tests and local runs, never for production. A
restart (:meth:`OpenBaoDevServer.restart`) keeps the address and root token but,
being in-memory, starts with empty engines: run the bootstrap again.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from types import TracebackType

from carechain.devbackends.tools import find_tool

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
LOG_FILE = "openbao.log"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpenBaoDevServer:
    """``bao server -dev`` on a free port, its log in data_dir, its process group killed on stop."""

    def __init__(self, data_dir: pathlib.Path, *, port: int | None = None, root_token: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.root_token = root_token or "dev-" + secrets.token_hex(16)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> pathlib.Path:
        """Where the server's output goes."""
        return self.data_dir / LOG_FILE

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> OpenBaoDevServer:
        """Start the server and wait until it is unsealed and active."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(find_tool("bao")), "server", "-dev",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            f"-dev-root-token-id={self.root_token}",
            "-dev-no-store-token",
        ]
        # HOME keeps any token helper file inside data_dir; no BAO_/VAULT_ settings leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(self.data_dir)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.data_dir, start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        url = f"{self.address}/v1/sys/health"
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"OpenBao exited during start-up; see {self.log_file}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own http URL
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"OpenBao did not become ready on {self.address}; see {self.log_file}")

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it does not exit in time."""
        self._signal_and_wait(signal.SIGTERM, STOP_TIMEOUT_SECONDS)

    def kill(self) -> None:
        """SIGKILL the process group at once (crash)."""
        self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT_SECONDS)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._process = None

    def restart(self) -> OpenBaoDevServer:
        """Stop and start again on the same port with the same root token (in-memory state is lost)."""
        self.stop()
        return self.start()

    def __enter__(self) -> OpenBaoDevServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
