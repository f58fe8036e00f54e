"""A real N-member etcd cluster on 127.0.0.1 for development and tests, with TLS and authentication.

Every member gets free client and peer ports and its own data directory under
``data_dir/<name>``, and logs to ``data_dir/<name>.log``. The cluster is
bootstrapped statically (``--initial-cluster``). Single members can be
stopped, killed (SIGKILL) and started again on the same ports and data, which
is what the fault tests need (losing one member keeps quorum, losing two does
not).

Secured like a production etcd should be:

- TLS on client and peer URLs, both demanding a certificate of the cluster's
  own CA (``data_dir/tls``, made with :class:`carechain.runtime.tls.LocalCertificateAuthority`);
  a plaintext or certificate-less client is refused, and the peer port takes
  only member certificates (common name ``carechain-etcd-member``).
- Authentication on: a ``root`` user for administration and a least-privilege
  ``carechain`` user whose role may read and write only keys beginning with
  ``key_prefix`` (the services' ``CARECHAIN_ETCD_PREFIX``). Passwords are random,
  kept 0600 under ``data_dir/credentials``. The client certificate has no
  common name (etcd's gateway refuses one with auth on; it would otherwise be
  taken as a user name), so a certificate alone grants nothing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from carechain.core.crypto import write_private_file
from carechain.core.errors import FailedPrecondition
from carechain.dev.backends.etcd_binary import etcd_binary
from carechain.dev.backends.process import ServerProcess, free_port
from carechain.dev.certificates import IssuedCertificate, LocalCertificateAuthority
from carechain.runtime.etcd import AccessRefused, Credentials, EtcdClient, prefix_end

# etcd's --initial-cluster-token: a name that keeps clusters apart, not a secret.
CLUSTER_NAME = "carechain-dev"
# etcd's defaults, stated: a member notices a lost quorum within about a second, and a
# busy 2-core CI machine does not cause spurious elections.
HEARTBEAT_MS = 100
ELECTION_TIMEOUT_MS = 1000
ROOT_USER = "root"
#: The user (and role) the services log in as.
SERVICE_USER = "carechain"
DEFAULT_KEY_PREFIX = "/carechain"
# Name of the client certificate's file (and its OU; it has no common name, see the module docstring).
CLIENT_CERT_NAME = "carechain-etcd-client"
# The common name of every member's certificate: the only one the peer port accepts (not an etcd user).
MEMBER_COMMON_NAME = "carechain-etcd-member"


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
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"

    @property
    def cert_name(self) -> str:
        """Name of this member's certificate (server and peer) under the cluster's tls directory."""
        return f"etcd-member-{self.name}"


class EtcdCluster:
    """Start, stop and fault-inject a local etcd cluster (the pinned etcd of ``make tools``: ``etcd_binary()``).

    ports gives each member's (client, peer) ports; a cluster restarted on the
    same data must keep them, since members know each other's peer URLs.
    key_prefix is what the ``carechain`` user may read and write (every key
    beginning with it). Clients: :meth:`client`, :meth:`client_settings`,
    :meth:`client_env`.
    """

    def __init__(
        self, data_dir: pathlib.Path, members: int = 3, ports: Sequence[tuple[int, int]] | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        if ports is not None and len(ports) != members:
            raise ValueError("ports needs one (client, peer) pair per member")
        if not key_prefix:
            raise ValueError("key_prefix must not be empty (the carechain role would cover every key)")
        self.data_dir = pathlib.Path(data_dir)
        self.key_prefix = key_prefix
        self.tls_dir = self.data_dir / "tls"
        self.credentials_dir = self.data_dir / "credentials"
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

    # --- TLS and credentials ------------------------------------------------------------------

    @property
    def ca_file(self) -> pathlib.Path:
        """The CA that signed every member and client certificate (``CARECHAIN_ETCD_CA_FILE``)."""
        return self.tls_dir / "ca.pem"

    @property
    def client_certificate(self) -> IssuedCertificate:
        """The client certificate the services present (``CARECHAIN_ETCD_CERT_FILE``/``_KEY_FILE``)."""
        return IssuedCertificate(self.tls_dir / f"{CLIENT_CERT_NAME}.pem", self.tls_dir / f"{CLIENT_CERT_NAME}-key.pem")

    def password_file(self, user: str = SERVICE_USER) -> pathlib.Path:
        """The file holding user's password (``root`` or ``carechain``; 0600)."""
        return self.credentials_dir / f"{user}.password"

    def client_options(self, user: str | None = SERVICE_USER) -> dict[str, Any]:
        """Keyword arguments of :class:`EtcdClient` for this cluster: the CA, the client certificate and user
        (None: no user, i.e. a client etcd will refuse)."""
        cert = self.client_certificate
        credentials = Credentials(user, password_file=self.password_file(user)) if user else None
        return {"ca_cert": self.ca_file, "cert_file": cert.cert_file, "key_file": cert.key_file,
                "credentials": credentials}

    def client(self, endpoints: Sequence[str] | None = None, user: str | None = SERVICE_USER,
               **options: Any) -> EtcdClient:
        """A client of every member (or of endpoints) logged in as user (default: the services' user)."""
        return EtcdClient(list(endpoints) if endpoints is not None else self.client_urls,
                          **{**self.client_options(user), **options})

    def client_settings(self) -> dict[str, Any]:
        """The ``etcd_*`` fields of a ServiceSettings putting a service on this cluster as the carechain user."""
        cert = self.client_certificate
        return {
            "etcd_endpoints": self.endpoints, "etcd_ca_file": self.ca_file, "etcd_cert_file": cert.cert_file,
            "etcd_key_file": cert.key_file, "etcd_username": SERVICE_USER,
            "etcd_password_file": self.password_file(SERVICE_USER),
        }

    def client_env(self) -> dict[str, str]:
        """The same as ``CARECHAIN_ETCD_*`` environment variables."""
        return {f"CARECHAIN_{name.upper()}": str(value) for name, value in self.client_settings().items()}

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> EtcdCluster:
        """Start every member and wait until each one reports healthy (has a leader)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_tls_and_passwords()
        try:
            for index in range(len(self.members)):
                self._launch(index)
            for index in range(len(self.members)):
                self._wait_healthy(index, timeout)
            self._enable_auth()
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

    def _prepare_tls_and_passwords(self) -> None:
        """The CA, a certificate per member and the client certificate; random passwords (all kept on disk)."""
        if not self.ca_file.exists() and any((m.data_dir / "member").exists() for m in self.members):
            # Its members know each other by plaintext peer URLs and it has no users: it cannot be upgraded.
            raise RuntimeError(
                f"{self.data_dir} holds an etcd cluster made without TLS and authentication (an older CareChain); "
                "remove that directory to start a fresh, secured one"
            )
        ca = LocalCertificateAuthority(self.tls_dir)
        for member in self.members:
            if not (self.tls_dir / f"{member.cert_name}.pem").exists():
                ca.issue(member.cert_name, ["localhost"], common_name=MEMBER_COMMON_NAME)
        if not self.client_certificate.cert_file.exists():
            # No common name: etcd's gateway refuses client certificates that have one once auth is on.
            ca.issue(CLIENT_CERT_NAME, ["localhost"], common_name="")
        for user in (ROOT_USER, SERVICE_USER):
            if not self.password_file(user).exists():
                write_private_file(self.password_file(user), secrets.token_urlsafe(24).encode())

    def _enable_auth(self) -> None:
        """Once per cluster: the root user, the least-privilege carechain role and user, then auth on.

        Every step tolerates having been done already (a start interrupted half-way is simply repeated).
        """
        with contextlib.closing(self.client(user=None)) as admin:
            try:
                admin.auth_request("status", {})
            except AccessRefused:
                return  # only answered to a user once auth is on
            steps: list[tuple[str, dict[str, Any]]] = [
                ("user/add", {"name": ROOT_USER, "password": self.password_file(ROOT_USER).read_text()}),
                ("user/grant", {"user": ROOT_USER, "role": "root"}),
                ("role/add", {"name": SERVICE_USER}),
                ("role/grant", {"name": SERVICE_USER, "perm": {
                    "permType": "READWRITE", "key": _b64(self.key_prefix.encode()),
                    "range_end": _b64(prefix_end(self.key_prefix)),
                }}),
                ("user/add", {"name": SERVICE_USER, "password": self.password_file(SERVICE_USER).read_text()}),
                ("user/grant", {"user": SERVICE_USER, "role": SERVICE_USER}),
                ("enable", {}),
            ]
            for method, body in steps:
                try:
                    admin.auth_request(method, body)
                except FailedPrecondition as exc:
                    if "already exists" not in str(exc):
                        raise

    def _command(self, member: EtcdMember) -> list[str]:
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        cert = self.tls_dir / f"{member.cert_name}.pem"
        key = self.tls_dir / f"{member.cert_name}-key.pem"
        return [
            str(etcd_binary()),  # refuses etcd 3.5.0-3.5.2 (etcd-io/etcd#13766)
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
            # TLS for clients and between members, each side demanding a certificate of our CA.
            "--cert-file", str(cert), "--key-file", str(key),
            "--trusted-ca-file", str(self.ca_file), "--client-cert-auth",
            "--peer-cert-file", str(cert), "--peer-key-file", str(key),
            "--peer-trusted-ca-file", str(self.ca_file), "--peer-client-cert-auth",
            "--peer-cert-allowed-cn", MEMBER_COMMON_NAME,  # a client certificate of the same CA cannot join
            # The lowest bcrypt cost etcd allows: logins stay cheap on a shared 2-core machine (local use only).
            "--bcrypt-cost", "4",
        ]

    def _launch(self, index: int) -> None:
        member = self.members[index]
        member.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._processes[index].launch(self._command(member))

    def _wait_healthy(self, index: int, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        cert = self.client_certificate
        context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
        self._processes[index].wait_ready(lambda: _healthy(self.members[index].client_url, context), timeout)


def _healthy(client_url: str, context: ssl.SSLContext) -> bool:
    # etcd's /health counts "permission denied" of its probe as healthy: it needs no user.
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=2, context=context) as reply:  # noqa: S310
            return json.loads(reply.read()).get("health") == "true"
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
