"""The package layers hold: no lower layer imports a higher one, no service reaches into another's internals.

Layers (``carechain/__init__.py`` documents them): 0 ``core``, ``labels`` and the generated ``*.v1``
stubs; 1 ``client``; 2 ``runtime``; 3 the six services
(and the FHIR REST gateway); 4 ``dev``, ``admin``, ``cli``. A module may import its own
layer and the layers below; tooling (layer 4) may import anything. Across services, and from the client and runtime
layers into services, only a service's ``v1`` stubs and the modules it lists in ``CLIENT_MODULES`` may be imported;
those declared modules are a public surface, so they may themselves import only layers 0-2 and other declared
modules.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "services" / "carechain"
SERVICES = ("identity", "storage", "ledger", "consent", "audit", "records", "fhir")  # fhir: the REST gateway
LAYERS = {"core": 0, "labels": 0, "common": 0, "client": 1, "runtime": 2, **dict.fromkeys(SERVICES, 3),
          "dev": 4, "admin": 4, "cli": 4, "__main__": 4}


def _module_name(path: pathlib.Path) -> str:
    parts = ("carechain", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = pathlib.Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


def _imports(path: pathlib.Path) -> set[str]:
    """The carechain modules path imports (``from pkg import module`` counts as the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("carechain."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("carechain"):
            submodules = {f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")}
            found.update(submodules or {node.module})
    return found


def _client_modules(service: str) -> set[str]:
    declared = importlib.import_module(f"carechain.{service}").CLIENT_MODULES
    return {f"carechain.{service}.{name}" for name in declared}


DECLARED = set().union(*(_client_modules(s) for s in SERVICES))


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else "carechain"


def _is_stub(module: str) -> bool:
    parts = module.split(".")
    return len(parts) > 2 and parts[2] == "v1"


def _violation(importer: str, imported: str) -> str | None:
    """Why importer may not import imported, or None."""
    if _is_stub(imported) or imported == "carechain":
        return None
    source, target = _top(importer), _top(imported)
    source_layer, target_layer = LAYERS[source], LAYERS[target]
    if importer in DECLARED and target_layer > 2 and target not in SERVICES:
        return "declared client module imports tooling"
    if importer in DECLARED and target in SERVICES and imported not in DECLARED:
        return f"declared client module imports {target} internals"
    if imported in DECLARED or source_layer == 4:
        return None  # a service's public surface; tooling may use anything
    if target_layer > source_layer:
        return f"layer {source_layer} ({source}) imports layer {target_layer} ({target})"
    reaches_into_service = target in SERVICES and source != target
    if reaches_into_service:
        return f"{imported} is internal to the {target} service (not in its CLIENT_MODULES)"
    return None


def _edges() -> list[tuple[str, str]]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_pb2" in path.name:
            continue
        importer = _module_name(path)
        edges += [(importer, imported) for imported in sorted(_imports(path))]
    return edges


def test_every_top_level_package_has_a_layer():
    tops = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert tops <= set(LAYERS), f"unassigned: {sorted(tops - set(LAYERS))}"


def test_no_module_imports_a_higher_layer_or_another_services_internals():
    violations = [f"{a} -> {b}: {why}" for a, b in _edges() if (why := _violation(a, b))]
    assert not violations, "\n".join(violations)


def test_declared_client_modules_exist():
    missing = [m for m in DECLARED if not _is_module(m)]
    assert not missing


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("carechain.core.crypto", "carechain.runtime.config"),
        ("carechain.client.sdk", "carechain.dev.localnet"),
        ("carechain.runtime.server", "carechain.ledger.server"),
        ("carechain.records.gateway", "carechain.consent.state"),
        ("carechain.ledger.transactions", "carechain.ledger.chain"),
    ],
)
def test_the_check_catches_each_kind_of_violation(importer, imported):
    assert _violation(importer, imported)


# Modules a partner client must never load: the server runtime, dev tooling and the backend libraries.
FORBIDDEN_FOR_CLIENTS = ("carechain.runtime", "carechain.dev", "carechain.admin", "hvac", "minio",
                         "pydantic_settings", "sqlite3")


def test_importing_the_sdk_loads_only_what_a_client_needs():
    probe = "import sys, carechain.client.sdk; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    leaked = sorted(m for m in loaded if m.startswith(FORBIDDEN_FOR_CLIENTS))
    assert not leaked, leaked
