"""Generated protobuf code must match protos/ (run `make protos` after editing a proto)."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_up_to_date(tmp_path: pathlib.Path) -> None:
    generated = _generator().generate(tmp_path)
    assert generated, "no protos found"
    stale = []
    for path in generated:
        relative = path.relative_to(tmp_path)
        committed = ROOT / "services" / relative
        if path.name == "__init__.py":
            if not committed.exists():
                stale.append(f"{relative} (missing)")
            continue
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(str(relative))
    assert not stale, f"generated code is stale, run `make protos`: {stale}"


def test_every_rpc_and_field_is_documented() -> None:
    undocumented = []
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            is_rpc = stripped.startswith("rpc ")
            is_field = (
                stripped.endswith(";")
                and "=" in stripped
                and not stripped.startswith(("option", "syntax", "package", "import", "//"))
            )
            if (is_rpc or is_field) and not lines[number - 1].strip().startswith("//"):
                # oneof payload members are documented by their message types.
                if "oneof payload" in "\n".join(lines[max(0, number - 12) : number]):
                    continue
                undocumented.append(f"{proto.relative_to(ROOT)}:{number + 1}: {stripped}")
    assert not undocumented, "undocumented RPCs/fields:\n" + "\n".join(undocumented)


def test_enum_zero_values_are_unspecified() -> None:
    offenders = []
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        for line in proto.read_text().splitlines():
            stripped = line.strip()
            if stripped.endswith("= 0;") and stripped.split()[0].isupper() and not stripped.split()[0].endswith(
                "_UNSPECIFIED"
            ):
                offenders.append(f"{proto.name}: {stripped}")
    assert not offenders, offenders
