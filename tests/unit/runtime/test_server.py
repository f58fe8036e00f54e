"""start_service: a listen address it cannot bind is a one-line configuration error naming the setting."""

from __future__ import annotations

import logging
import socket

import pytest

from carechain.runtime.config import ServiceSettings
from carechain.runtime.server import ListenError, run_service, start_service


def _no_servicers(server):
    return []


@pytest.fixture
def busy_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield f"127.0.0.1:{taken.getsockname()[1]}"


def test_a_busy_port_names_the_setting(busy_address: str) -> None:
    with pytest.raises(ListenError, match=f"^CARECHAIN_LISTEN_ADDRESS: cannot listen on {busy_address} "):
        start_service("test", ServiceSettings(listen_address=busy_address), _no_servicers)


def test_a_busy_health_port_names_its_setting(busy_address: str) -> None:
    settings = ServiceSettings(listen_address="127.0.0.1:0", health_listen_address=busy_address)
    with pytest.raises(ListenError, match="^CARECHAIN_HEALTH_LISTEN_ADDRESS: cannot listen on "):
        start_service("test", settings, _no_servicers)


def test_run_service_exits_with_the_message_not_a_traceback(busy_address: str) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(SystemExit) as exited:
            run_service("storage", ServiceSettings(listen_address=busy_address), _no_servicers)
    finally:  # run_service configures the process's logging: give the test session its own back
        root.handlers[:], root.level = handlers, level
    assert str(exited.value.code).startswith(f"storage: CARECHAIN_LISTEN_ADDRESS: cannot listen on {busy_address}")
