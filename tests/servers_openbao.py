"""A real OpenBao dev server for the tests (session-scoped), and helpers on top of it.

Use from a test module with ``pytest_plugins = ["servers_openbao"]``.
The server is started once per test session however many modules import it.
(PYTEST_DONT_REWRITE: test modules import this before pytest_plugins loads it.)
"""

from __future__ import annotations

import atexit
import dataclasses
import pathlib
import tempfile
import threading
import uuid
from collections.abc import Iterator

import hvac
import pytest
from pydantic import SecretStr

from carechain.admin.vault_bootstrap import BootstrapOptions, BootstrapResult, Mounts, bootstrap, policy_name
from carechain.dev.backends.openbao import OpenBaoDevServer
from carechain.runtime.config import IdentitySettings, ServiceSettings
from carechain.runtime.vault import vault_client

_lock = threading.Lock()
_server: OpenBaoDevServer | None = None
_bootstrapped: Bootstrapped | None = None


def shared_openbao() -> OpenBaoDevServer:
    """The session's OpenBao server, started on first use and stopped at exit."""
    global _server
    with _lock:
        if _server is None:
            server = OpenBaoDevServer(pathlib.Path(tempfile.mkdtemp(prefix="carechain-openbao-")))
            server.start()
            atexit.register(server.stop)
            _server = server
        return _server


def root_client(server: OpenBaoDevServer) -> hvac.Client:
    """An hvac client with the dev root token."""
    return hvac.Client(url=server.address, token=server.root_token)


@dataclasses.dataclass(frozen=True)
class Bootstrapped:
    """A server after `carechain admin vault-bootstrap` with the default mounts."""

    server: OpenBaoDevServer
    result: BootstrapResult
    options: BootstrapOptions

    def secret_id_file(self, service: str) -> pathlib.Path:
        return self.result.secret_id_files[service]

    def settings(self, service: str, cls: type[ServiceSettings] = ServiceSettings, **extra: object) -> ServiceSettings:
        """Settings that log in to the server with AppRole as the service."""
        return cls(vault_address=self.server.address, vault_auth_method="approle",
                   vault_role_id=self.result.role_ids[service], vault_secret_id_file=self.secret_id_file(service),
                   **extra)


def shared_bootstrap() -> Bootstrapped:
    """The session's server, bootstrapped once (secret ids and trust keys in a temp dir)."""
    global _bootstrapped
    server = shared_openbao()
    with _lock:
        if _bootstrapped is None:
            work = pathlib.Path(tempfile.mkdtemp(prefix="carechain-bootstrap-"))
            options = BootstrapOptions(mounts=Mounts(), trust_dir=work / "trust", secret_id_dir=work / "secret-ids")
            _bootstrapped = Bootstrapped(server, bootstrap(root_client(server), options), options)
        return _bootstrapped


@pytest.fixture(scope="session")
def openbao() -> OpenBaoDevServer:
    """A running OpenBao dev server (shared by the whole session)."""
    return shared_openbao()


@pytest.fixture(scope="session")
def openbao_bootstrapped() -> Bootstrapped:
    """The shared server after one bootstrap with default mounts."""
    return shared_bootstrap()


@pytest.fixture
def vault_root(openbao: OpenBaoDevServer) -> hvac.Client:
    """An hvac client that logs in like a service would, with the root token."""
    return vault_client(ServiceSettings(vault_address=openbao.address, vault_token=SecretStr(openbao.root_token)))


@pytest.fixture
def transit_mount(vault_root: hvac.Client) -> Iterator[str]:
    """A fresh Transit mount for one test (tests on the shared server do not see each other's keys)."""
    mount = f"transit-{uuid.uuid4().hex[:12]}"
    vault_root.sys.enable_secrets_engine("transit", path=mount)
    yield mount
    vault_root.sys.disable_secrets_engine(mount)


@pytest.fixture
def kv_mount(vault_root: hvac.Client) -> Iterator[str]:
    """A fresh KV v2 mount for one test."""
    mount = f"kv-{uuid.uuid4().hex[:12]}"
    vault_root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    yield mount
    vault_root.sys.disable_secrets_engine(mount)


def identity_settings_on_vault(boot: Bootstrapped, data_dir: pathlib.Path, trust_dir: pathlib.Path) -> IdentitySettings:
    """Identity settings with keys, registry and signing on the bootstrapped server (AppRole login).

    No consent service runs in these tests (they mint decision tokens themselves), so the
    re-check of decisions at key release is off; it is tested end to end in tests/e2e.
    """
    return boot.settings(  # type: ignore[return-value]
        "identity", IdentitySettings, key_backend="vault", signing_backend="vault", listen_address="127.0.0.1:0",
        data_dir=data_dir, trust_dir=trust_dir, chain_id="test-chain", max_workers=4, shutdown_grace_seconds=0,
        check_decisions=False,
    )


__all__ = ["Bootstrapped", "identity_settings_on_vault", "kv_mount", "openbao", "openbao_bootstrapped",
           "policy_name", "root_client", "shared_bootstrap", "shared_openbao", "transit_mount", "vault_root"]
