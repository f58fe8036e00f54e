"""A real MinIO server on 127.0.0.1 for development and tests.

MinIO (AGPL-3.0) is only ever run as a separate process, built by ``make tools``;
CareChain talks to it over the S3 API like any other S3 store.
"""

from __future__ import annotations

import contextlib
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

import urllib3
from minio import Minio
from minio.error import MinioException

from carechain.devbackends.tools import find_tool

HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class MinioServer:
    """``minio server <data_dir>/data`` on free localhost ports with random root credentials.

    The server log is ``<data_dir>/minio.log``. :meth:`stop` and :meth:`start` (or
    :meth:`restart`) keep the data directory, ports and credentials, so a client
    made before a stop works again after the restart (fault tests).
    """

    def __init__(self, data_dir: pathlib.Path, binary: pathlib.Path | None = None) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.binary = binary
        self.port = _free_port()
        self.console_port = _free_port()
        self.access_key = "carechain-" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(24)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """host:port of the S3 API (what S3 clients and CARECHAIN_S3_ENDPOINT take)."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """http URL of the S3 API."""
        return f"http://{self.endpoint}"

    @property
    def console_address(self) -> str:
        """host:port of the web console."""
        return f"{HOST}:{self.console_port}"

    @property
    def log_file(self) -> pathlib.Path:
        """Where the server writes its output."""
        return self.data_dir / "minio.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def settings_env(self) -> dict[str, str]:
        """CARECHAIN_* variables that point the storage service at this server."""
        return {
            "CARECHAIN_BLOB_BACKEND": "s3",
            "CARECHAIN_S3_ENDPOINT": self.endpoint,
            "CARECHAIN_S3_ACCESS_KEY": self.access_key,
            "CARECHAIN_S3_SECRET_KEY": self.secret_key,
            "CARECHAIN_S3_SECURE": "false",
        }

    def client(self) -> Minio:
        """An S3 client with the root credentials (for setup and for tests that go behind the store)."""
        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)

    def start(self) -> MinioServer:
        """Start the server and wait until it serves S3 calls; RuntimeError (with the log tail) if it does not."""
        if self.running:
            return self
        binary = self.binary or find_tool("minio")
        storage = self.data_dir / "data"
        storage.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER_REDIRECT": "off",
        }
        command = [
            str(binary), "server", str(storage),
            "--address", self.endpoint, "--console-address", self.console_address,
        ]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_live()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_live(self) -> None:
        # /minio/health/live (and even some S3 calls) answer before MinIO has finished initialising,
        # while bucket writes still get 503 XMinioServerNotInitialized; so the probe creates and
        # removes a bucket, which is what a client does first.
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        health = f"{self.url}/minio/health/live"
        probe = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                      http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=2), retries=False))
        live = False
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"minio exited with {self._process.returncode if self._process else '?'}:\n"
                                   + self._log_tail())
            try:
                if not live:
                    with urllib.request.urlopen(health, timeout=1) as response:  # noqa: S310 - http on localhost
                        live = response.status == 200
                if live:
                    bucket = "carechain-probe-" + secrets.token_hex(8)
                    probe.make_bucket(bucket)
                    probe.remove_bucket(bucket)
                    return
            except (urllib.error.URLError, OSError, urllib3.exceptions.HTTPError, MinioException):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"minio not ready at {self.url} after {READY_TIMEOUT_SECONDS:.0f}s:\n" + self._log_tail())

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (its whole process group); the data directory stays."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self) -> MinioServer:
        """Stop and start again on the same ports, credentials and data."""
        self.stop()
        return self.start()

    def __enter__(self) -> MinioServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
