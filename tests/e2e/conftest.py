"""A real local network (six service processes on free ports) shared by the end-to-end tests.

Every test that uses ``network`` runs twice: on the embedded backends, and on real
OpenBao (dev server), MinIO and a 3-member etcd cluster.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from helpers import MODES, start_network

from carechain.dev.localnet import LocalNetwork


@pytest.fixture(scope="session", params=MODES)
def network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """Six services as separate processes, on embedded or real backends."""
    local = start_network(tmp_path_factory.mktemp(f"network-{request.param}"), request.param)
    try:
        yield local
    finally:
        local.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if pathlib.Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)
