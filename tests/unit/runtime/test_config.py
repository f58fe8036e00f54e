"""Typed configuration from CARECHAIN_* environment variables."""

from __future__ import annotations

import pathlib

import pytest
from pydantic import ValidationError

from carechain.runtime.config import LedgerSettings, RecordsSettings


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECHAIN_LISTEN_ADDRESS", "127.0.0.1:9999")
    monkeypatch.setenv("CARECHAIN_DATA_DIR", "/tmp/x")
    monkeypatch.setenv("CARECHAIN_MAX_RECORD_BYTES", "2048")
    settings = RecordsSettings()
    assert settings.listen_address == "127.0.0.1:9999"
    assert settings.data_dir == pathlib.Path("/tmp/x")
    assert settings.max_record_bytes == 2048


def test_invalid_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECHAIN_BLOCK_MAX_TRANSACTIONS", "zero")
    with pytest.raises(ValidationError, match="block_max_transactions"):
        LedgerSettings()
    monkeypatch.setenv("CARECHAIN_BLOCK_MAX_TRANSACTIONS", "0")
    with pytest.raises(ValidationError, match="block_max_transactions"):
        LedgerSettings()
