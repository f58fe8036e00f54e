"""Shared test fixtures."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "synthea-10"


@pytest.fixture(scope="session")
def synthea_dir() -> pathlib.Path:
    """The Synthea sample (read-only)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"Synthea fixtures missing at {FIXTURES}")
    return FIXTURES
