"""A real 3-member etcd cluster for the tests (session-scoped), and a fresh key prefix per test.

Use from a test module with ``pytest_plugins = ["servers_etcd"]`` (tests/ is on sys.path).
Tests that stop or kill members start their own cluster with the ``start_etcd_cluster``
fixture so the shared one always has every member up.

The cluster requires TLS with client certificates and authentication, like production:
make clients with ``etcd_cluster.client()`` (the least-privilege ``carechain`` user, which
may use keys beginning with ``/carechain``) and services with ``etcd_cluster.client_settings()``.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Callable, Iterator

import pytest

from carechain.dev.backends.etcd import EtcdCluster
from carechain.dev.backends.etcd_binary import etcd_binary
from carechain.runtime.etcd import EtcdClient


def start_cluster(data_dir: pathlib.Path, members: int = 3) -> EtcdCluster:
    """A started cluster; fails the test, saying to run `make tools`, without a safe etcd binary."""
    try:
        etcd_binary()
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.fail(f"no usable etcd: {exc}")
    return EtcdCluster(data_dir, members).start()


@pytest.fixture(scope="session")
def start_etcd_cluster() -> Callable[[pathlib.Path], EtcdCluster]:
    """start_cluster, for module-scoped fixtures that need a cluster of their own (the caller stops it)."""
    return start_cluster


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Three etcd members on 127.0.0.1, shared by every test of the session."""
    cluster = start_cluster(tmp_path_factory.mktemp("etcd"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture()
def etcd_client(etcd_cluster: EtcdCluster) -> Iterator[EtcdClient]:
    """A client knowing every member of the shared cluster, logged in as the carechain user."""
    client = etcd_cluster.client()
    yield client
    client.close()


@pytest.fixture()
def etcd_prefix() -> str:
    """A key prefix no other test uses (within what the carechain user may use)."""
    return f"/carechain-test/{uuid.uuid4().hex}"
