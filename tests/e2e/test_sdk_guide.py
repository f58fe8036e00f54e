"""docs/sdk.md is real: every ``sh`` and ``python`` block of the guide runs, in order, against a live network.

The blocks run in one directory whose ``var/network`` is the network's data directory (as after
``make run``); ``python`` blocks share one namespace, as one script; each ``sh`` line is a
``carechain`` command that must succeed.
"""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sys

from helpers import start_network

GUIDE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str, int]]:
    """(language, code, line number) of each runnable block of the guide."""
    text = GUIDE.read_text()
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in BLOCK.finditer(text)]


def test_the_guide_has_both_parts() -> None:
    languages = [language for language, _, _ in blocks()]
    assert languages.count("python") >= 8 and "sh" in languages
    text = GUIDE.read_text()
    for heading in ("## Hospital integration", "### Authenticate", "### Store a record", "### Read a record",
                    "### Search", "### Handle each error code", "## Patient walk-through"):
        assert heading in text


def test_every_sample_runs_against_a_live_network(tmp_path: pathlib.Path, monkeypatch) -> None:
    network = start_network(tmp_path / "var" / "network", "embedded")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "sdk_guide"}
    try:
        for language, code, line in blocks():
            if language == "python":
                exec(compile(code, f"{GUIDE}:{line}", "exec"), namespace)  # noqa: S102 - the guide's own samples
                continue
            for command in filter(None, (shlex.split(c, comments=True) for c in code.splitlines())):
                assert command[0] == "carechain", f"{GUIDE}:{line}: {command}"
                done = subprocess.run([sys.executable, "-m", "carechain", *command[1:]], capture_output=True,
                                      text=True, timeout=120)
                assert done.returncode == 0, f"{GUIDE}:{line}: {shlex.join(command)}\n{done.stdout}{done.stderr}"
    finally:
        network.stop()
    # The script did what the guide says: a record stored, granted, read, revoked.
    assert namespace["read"].resource_json == namespace["stored_bytes"]  # type: ignore[attr-defined]
