"""A real MinIO server on 127.0.0.1 for development and tests.

MinIO (AGPL-3.0) is only ever run as a separate process, built by ``make tools``;
CareChain talks to it over the S3 API like any other S3 store.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import urllib.request
from types import TracebackType

import urllib3
from minio import Minio

from carechain.dev.backends.process import ServerProcess, free_port
from carechain.dev.backends.tools import find_tool

HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 60.0


class MinioServer:
    """``minio server <data_dir>/data`` on free localhost ports with random root credentials.

    The server log is ``<data_dir>/minio.log``. :meth:`stop` and :meth:`start` (or
    :meth:`restart`) keep the data directory, ports and credentials, so a client
    made before a stop works again after the restart (fault tests).
    """

    def __init__(
        self,
        data_dir: pathlib.Path,
        binary: pathlib.Path | None = None,
        *,
        port: int | None = None,
        console_port: int | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.binary = binary
        self.port = port or free_port()
        self.console_port = console_port or free_port()
        self.access_key = access_key or "carechain-" + secrets.token_hex(6)
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self._process = ServerProcess("minio", self.data_dir / "minio.log")

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
        return self._process.log_file

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process.running

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
        self._process.launch(command, env=env)
        # /minio/health/live (and even some S3 calls) answer before MinIO has finished initialising,
        # while bucket writes still get 503 XMinioServerNotInitialized; so readiness is creating and
        # removing a bucket, which is what a client does first.
        probe = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                      http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=2), retries=False))

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.url}/minio/health/live", timeout=1) as response:  # noqa: S310
                if response.status != 200:
                    return False
            bucket = "carechain-probe-" + secrets.token_hex(8)
            probe.make_bucket(bucket)
            probe.remove_bucket(bucket)
            return True

        self._process.wait_ready(ready, READY_TIMEOUT_SECONDS)
        return self

    def stop(self) -> None:
        """Stop the server (its whole process group); the data directory stays."""
        self._process.stop()

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would (the data directory stays)."""
        self._process.kill()

    def restart(self) -> MinioServer:
        """Stop (if still running; e.g. not after kill) and start again on the same ports, credentials and data."""
        self.stop()
        return self.start()

    def __enter__(self) -> MinioServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
