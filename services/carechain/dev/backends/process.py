"""Running one server process for development and tests: free ports, logs, readiness, stop and kill."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

STOP_TIMEOUT_SECONDS = 10.0


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now, never one this process handed out before.

    Ports are chosen before the servers start, so without the memory two calls in a row
    could return the same port (the kernel may offer a just-released port again).
    """
    with _handed_out_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


class ServerProcess:
    """A server in its own process group (so stop/kill reach its children), output appended to a log file."""

    def __init__(self, name: str, log_file: pathlib.Path) -> None:
        self.name = name
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    def launch(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: pathlib.Path | None = None) -> None:
        """Start the process (not waiting for readiness)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv of our own pinned binaries
                list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ready() until it is true; RuntimeError with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                code = self._process.returncode if self._process else None
                raise RuntimeError(f"{self.name} exited with code {code}; {self.log_file}:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001, S110 - not ready yet, whatever the probe says
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s; {self.log_file}:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM the process group; SIGKILL it if it has not exited after timeout."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash would."""
        self._signal(signal.SIGKILL, STOP_TIMEOUT_SECONDS)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
