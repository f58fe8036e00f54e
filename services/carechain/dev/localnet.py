"""The one-command local network: six services as separate processes on localhost.

Used by ``carechain up``, the end-to-end tests and the benchmarks, so all three
run the network the same way. Data (keys, trust bundle, each service's store,
logs) lives under one directory and survives restarts.

``validators=N`` (N > 1, needs ``backends``: etcd orders and carries the
signatures) runs N ledger validator processes ``ledger``, ``ledger-2``, ...
with ids ``validator-1``.. ``validator-N`` (each its own store, port and
Transit key), quorum a majority. The other services and clients reach "the
ledger" through a failover target listing every validator
(``ipv4:127.0.0.1:p1,127.0.0.1:p2,...``), so one validator going down does
not stop writes.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from carechain.client.endpoints import ENDPOINTS_FILE, Endpoints
from carechain.client.tls import ClientTLS
from carechain.core.files import private_dir
from carechain.core.layout import SERVICES, NetworkLayout, service_principal_id
from carechain.dev.backends.process import free_port
from carechain.dev.backends.stack import BackendStack
from carechain.dev.certificates import LocalCertificateAuthority
from carechain.runtime.config import DEFAULT_PORTS, FHIR_DEFAULT_PORT

# Ledger first (others read it at start), records last (it calls everyone); the FHIR gateway (optional) after it.
START_ORDER = ("ledger", "identity", "audit", "storage", "consent", "records")
FHIR = "fhir"

def wait_healthy(address: str, timeout: float, tls: ClientTLS | None = None) -> None:
    """Block until the gRPC health check at address reports SERVING."""
    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(address) if tls is None else grpc.secure_channel(address, tls.credentials())
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"service at {address} not healthy after {timeout:.0f}s")
            time.sleep(0.1)


def wait_ready_http(url: str, timeout: float, ca_file: pathlib.Path | None = None) -> None:
    """Block until GET url answers 200 (the FHIR gateway's /readyz: it and the records service it calls are up)."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout:.0f}s")
        time.sleep(0.1)


class LocalNetwork:
    """Starts and stops the six services on localhost with embedded backends."""

    def __init__(
        self,
        data_dir: pathlib.Path,
        ports: dict[str, int] | None = None,
        chain_id: str = "carechain-local",
        extra_env: dict[str, str] | None = None,
        tls: bool = False,
        backends: BackendStack | None = None,
        validators: int = 1,
        fhir: bool = False,
    ) -> None:
        if validators < 1:
            raise ValueError("a network needs at least one validator")
        if validators > 1 and backends is None:
            raise ValueError("several validators need backends=BackendStack (etcd orders and carries signatures)")
        self.layout = NetworkLayout(data_dir)
        self.backends = backends
        ports = ports or {service: free_port() for service in SERVICES}
        tls_files = self._client_certificate() if tls else {}
        self.tls = tls
        #: Process names of the validators (the first is "ledger") and their principal ids.
        self.validator_names = ["ledger"] + [f"ledger-{i}" for i in range(2, validators + 1)]
        self.validator_ids = [service_principal_id("ledger")]
        if validators > 1:
            self.validator_ids = [f"validator-{i}" for i in range(1, validators + 1)]
        self.listen_addresses = {s: f"127.0.0.1:{ports[s]}" for s in SERVICES}
        self.listen_addresses.update({name: f"127.0.0.1:{free_port()}" for name in self.validator_names[1:]})
        #: The FHIR REST gateway (fhir=True): an HTTP process in front of records, started after it.
        self.fhir = fhir
        if fhir:
            self.listen_addresses[FHIR] = f"127.0.0.1:{ports.get(FHIR) or free_port()}"
        validator_addresses = [self.listen_addresses[name] for name in self.validator_names]
        # Every process serves Prometheus metrics on its own free port (listed in the endpoints file).
        self.metrics_addresses = {name: f"127.0.0.1:{free_port()}" for name in self.listen_addresses}
        addresses = dict(self.listen_addresses)
        if validators > 1:
            addresses["ledger"] = "ipv4:" + ",".join(validator_addresses)
            if backends is not None:
                backends.validators = tuple(self.validator_ids)
        self.endpoints = Endpoints(
            chain_id=chain_id, **{s: addresses[s] for s in SERVICES}, **tls_files,
            fhir_base_url=self.fhir_base_url if fhir else "",
            ledger_validators=",".join(validator_addresses), validator_ids=",".join(self.validator_ids),
            trust_dir=str(self.layout.trust_dir), metrics=dict(self.metrics_addresses),
        )
        self.extra_env = extra_env or {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def start_order(self) -> list[str]:
        """Process names in start order: every validator first, then the other services (then the FHIR gateway)."""
        return [*self.validator_names, *START_ORDER[1:], *([FHIR] if self.fhir else [])]

    @property
    def fhir_base_url(self) -> str:
        """The FHIR gateway's base URL (https with --tls)."""
        return f"{'https' if self.tls else 'http'}://{self.listen_addresses[FHIR]}"

    @staticmethod
    def service_of(name: str) -> str:
        """The service a process runs ("ledger-2" -> "ledger")."""
        return "ledger" if name.startswith("ledger") else name

    @classmethod
    def with_default_ports(cls, data_dir: pathlib.Path, **kwargs: object) -> LocalNetwork:
        """A network on the documented ports 7100-7105 (and 7106 for the FHIR gateway)."""
        return cls(data_dir, ports={**DEFAULT_PORTS, FHIR: FHIR_DEFAULT_PORT}, **kwargs)  # type: ignore[arg-type]

    @property
    def certificate_authority(self) -> LocalCertificateAuthority:
        """The network's local CA (mutual TLS mode)."""
        return LocalCertificateAuthority(self.layout.root / "tls")

    def _client_certificate(self) -> dict[str, str]:
        client = self.certificate_authority.issue("client", ["localhost"])
        return {
            "tls_ca_file": str(self.certificate_authority.ca_file),
            "tls_cert_file": str(client.cert_file),
            "tls_key_file": str(client.key_file),
        }

    def _tls_env(self, service: str) -> dict[str, str]:
        """Mutual TLS for one service: its own certificate, the CA, client certificates required."""
        if not self.tls:
            return {}
        issued = self.certificate_authority.issue(service, ["localhost", self.service_of(service)])
        return {
            "CARECHAIN_TLS_CERT_FILE": str(issued.cert_file),
            "CARECHAIN_TLS_KEY_FILE": str(issued.key_file),
            "CARECHAIN_TLS_CA_FILE": str(self.certificate_authority.ca_file),
            "CARECHAIN_TLS_REQUIRE_CLIENT_CERT": "true",
        }

    @property
    def log_dir(self) -> pathlib.Path:
        return self.layout.root / "logs"

    def fhir_env(self) -> dict[str, str]:
        """Environment of the FHIR gateway: its HTTP address, records' address, TLS (HTTPS; no client
        certificate asked of REST clients, which authenticate with bearer tokens). It has no key of its own:
        it acts with its callers' tokens."""
        env = {
            "CARECHAIN_LISTEN_ADDRESS": self.listen_addresses[FHIR],
            "CARECHAIN_METRICS_LISTEN_ADDRESS": self.metrics_addresses[FHIR],
            "CARECHAIN_RECORDS_ADDRESS": self.endpoints.records,
            "CARECHAIN_PUBLIC_BASE_URL": self.fhir_base_url,
            "CARECHAIN_TRUST_DIR": str(self.layout.trust_dir),  # the token issuer's key: bearer tokens verified
            "OTEL_SERVICE_NAME": "carechain-fhir",
            **self._tls_env(FHIR),
        }
        if self.tls:  # its certificate serves HTTPS too
            env["CARECHAIN_HTTPS_CERT_FILE"] = env["CARECHAIN_TLS_CERT_FILE"]
            env["CARECHAIN_HTTPS_KEY_FILE"] = env["CARECHAIN_TLS_KEY_FILE"]
        return {**os.environ, **env, **self.extra_env}

    def service_env(self, name: str) -> dict[str, str]:
        """Environment that configures one service process (a validator: "ledger", "ledger-2", ...)."""
        if name == FHIR:
            return self.fhir_env()
        service = self.service_of(name)
        env = {
            "CARECHAIN_LISTEN_ADDRESS": self.listen_addresses[name],
            "CARECHAIN_METRICS_LISTEN_ADDRESS": self.metrics_addresses[name],
            "CARECHAIN_DATA_DIR": str(self.layout.service_dir(name)),
            "CARECHAIN_SIGNING_KEY_FILE": str(self.layout.key_file(service_principal_id(service))),
            "CARECHAIN_TRUST_DIR": str(self.layout.trust_dir),
            "CARECHAIN_CHAIN_ID": self.endpoints.chain_id,
            **{f"CARECHAIN_{peer.upper()}_ADDRESS": self.endpoints.address(peer) for peer in SERVICES},
            "OTEL_SERVICE_NAME": f"carechain-{name}",
            **self._tls_env(name),
            **(self.backends.service_env(service) if self.backends else {}),
        }
        if service in ("records", "consent"):
            # Embedded ledger metadata key: a keyring only these two services are pointed at.
            env["CARECHAIN_LEDGER_METADATA_KEYRING_DIR"] = str(self.layout.root / "ledger-metadata-key")
        if service == "identity" and self.fhir:
            # SMART client assertions name the FHIR gateway's token endpoint as their audience.
            env["CARECHAIN_SMART_TOKEN_URL"] = f"{self.fhir_base_url}/token"
        if service == "consent":
            # Which validators' quorum certificates consent accepts (keys from the trust directory).
            env["CARECHAIN_LEDGER_VALIDATORS"] = ",".join(self.validator_ids)
        if service == "ledger" and len(self.validator_names) > 1:
            assert self.backends is not None
            validator_id = self.validator_ids[self.validator_names.index(name)]
            env.update(self.backends.validator_env(validator_id))
            env.update({
                "CARECHAIN_VALIDATOR_ID": validator_id,
                "CARECHAIN_VALIDATORS": ",".join(self.validator_ids),
                "CARECHAIN_PEER_ADDRESSES": ",".join(
                    self.listen_addresses[other] for other in self.validator_names if other != name
                ),
            })
        if service == "audit":
            # The audit service verifies the ledger checkpoints it publishes against the configured validators.
            env["CARECHAIN_VALIDATORS"] = ",".join(self.validator_ids)
        return {**os.environ, **env, **self.extra_env}

    def start(self, timeout: float = 60.0) -> Endpoints:
        """Create keys if needed, start the backends (if any) and every service, wait until all are healthy."""
        self.layout.ensure(service_key_files=self.backends is None)
        self.log_dir.mkdir(exist_ok=True)
        if self.backends is not None:
            self.backends.start(self.layout.trust_dir)
        try:
            for service in self.start_order:
                self.start_service(service, timeout)
        except BaseException:
            self.stop()
            raise
        self.endpoints.save(self.layout.root / ENDPOINTS_FILE)
        return self.endpoints

    def start_service(self, service: str, timeout: float = 60.0) -> None:
        """Start (or restart) one service process (or validator, e.g. "ledger-2") and wait for it to be healthy."""
        private_dir(self.layout.service_dir(service))
        log_file = open(self.log_dir / f"{service}.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            [sys.executable, "-m", "carechain", "serve", self.service_of(service)],
            env=self.service_env(service),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log_file.close()
        self.processes[service] = process
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if service == FHIR:
                        wait_ready_http(f"{self.fhir_base_url}/readyz", timeout=1,
                                        ca_file=self.certificate_authority.ca_file if self.tls else None)
                    else:
                        wait_healthy(self.listen_addresses[service], timeout=1, tls=self.endpoints.client_tls())
                    return
                except TimeoutError:
                    if process.poll() is not None:
                        raise RuntimeError(
                            f"{service} exited with code {process.returncode}; see {self.log_dir / (service + '.log')}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise
        except BaseException:
            process.kill()
            raise

    def stop_service(self, service: str, timeout: float = 15.0) -> int | None:
        """SIGTERM one service, escalate to SIGKILL after timeout; returns its exit code."""
        process = self.processes.pop(service, None)
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def kill_service(self, service: str) -> None:
        """SIGKILL one service process (a crash: no shutdown at all)."""
        process = self.processes.pop(service, None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop every service, records first."""
        for service in reversed(self.start_order):
            self.stop_service(service)
        if self.backends is not None:
            self.backends.stop()
        (self.layout.root / ENDPOINTS_FILE).unlink(missing_ok=True)

    def supervise(self, stop: threading.Event, policy: RestartPolicy | None = None,
                  say: Callable[[str], None] = print) -> int:
        """Watch the processes until stop is set; restart one that died (with backoff). 0, or 1 on giving up.

        A service that dies more than policy.max_restarts times within policy.window_seconds is
        not restarted again: supervise returns 1 (the caller stops the network and exits non-zero,
        so whatever supervises it notices).
        """
        policy = policy or RestartPolicy()
        crashes: dict[str, list[float]] = {}
        while not stop.wait(policy.poll_seconds):
            for service, process in list(self.processes.items()):
                if process.poll() is None:
                    continue
                now = time.monotonic()
                recent = [t for t in crashes.get(service, []) if now - t < policy.window_seconds] + [now]
                crashes[service] = recent
                if len(recent) > policy.max_restarts:
                    say(f"{service} exited with code {process.returncode}, {len(recent)} times in "
                        f"{policy.window_seconds:.0f}s: giving up")
                    return 1
                delay = policy.backoff(len(recent))
                say(f"{service} exited with code {process.returncode}; restarting in {delay:.1f}s "
                    f"(restart {len(recent)} of at most {policy.max_restarts} in {policy.window_seconds:.0f}s)")
                if stop.wait(delay):
                    return 0
                try:
                    self.start_service(service, policy.start_timeout_seconds)
                    say(f"{service} restarted")
                except (RuntimeError, TimeoutError) as exc:
                    # start_service killed it: the next look counts it as the next crash.
                    say(f"{service} did not come back: {exc}")
        return 0

    def __enter__(self) -> LocalNetwork:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class RestartPolicy:
    """How :meth:`LocalNetwork.supervise` restarts crashed services."""

    max_restarts: int = 5  # within window_seconds, per service; one more crash and it gives up
    window_seconds: float = 300.0
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 30.0
    poll_seconds: float = 0.5
    start_timeout_seconds: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Delay before the attempt-th restart in the window: doubling from first_delay_seconds, capped."""
        return min(self.first_delay_seconds * 2 ** (attempt - 1), self.max_delay_seconds)
