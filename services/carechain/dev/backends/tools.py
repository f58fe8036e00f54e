"""Finding the pinned server binaries installed by ``make tools``."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[4]


def tools_dir() -> pathlib.Path:
    """Where ``make tools`` puts binaries: $CARECHAIN_TOOLS_DIR or <repo>/.tools."""
    return pathlib.Path(os.environ.get("CARECHAIN_TOOLS_DIR", REPO_ROOT / ".tools"))


def find_tool(name: str) -> pathlib.Path:
    """Path of a server binary: the tools dir, then next to this Python (venv console scripts), then PATH."""
    candidates = [tools_dir() / "bin" / name, pathlib.Path(sys.executable).parent / name]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return pathlib.Path(found)
    raise FileNotFoundError(f"{name} not found in {tools_dir() / 'bin'} or on PATH: run `make tools`")
