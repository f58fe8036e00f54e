"""Regenerate Python code from protos/ (run by `make protos`).

Usage: python scripts/gen_protos.py [OUT_DIR]

Generated modules land next to the service packages, e.g.
services/carechain/ledger/v1/ledger_pb2.py, so that the import path equals the
proto package (carechain.ledger.v1).
"""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto into out_dir."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = []
    for proto in protos:
        package_dir = out_dir / proto.parent.relative_to(PROTO_ROOT)
        init = package_dir / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from protos/; do not edit. Regenerate with `make protos`."""\n')
        stem = proto.stem
        generated += [init, *(package_dir / f"{stem}{suffix}" for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))]
    return sorted(set(generated))


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "services"
    for path in generate(target):
        print(path.relative_to(target))
