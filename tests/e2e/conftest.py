"""A real local network (six service processes on free ports) shared by the end-to-end tests."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from carechain.localnet import LocalNetwork

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """Six services as separate processes with embedded backends."""
    local = LocalNetwork(tmp_path_factory.mktemp("network"))
    local.start()
    try:
        yield local
    finally:
        local.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if pathlib.Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)
