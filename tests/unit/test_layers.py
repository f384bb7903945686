"""The layering of fedflower/ and strategies/, read from every module's import statements (ast).

Every module belongs to one part; a part may import only the parts listed for it (docs/
architecture.md draws the same table). Imports inside functions count: a lazy import is still
a dependency. A new module outside the table fails the test until it gets a part.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = frozenset({"base"})
BELOW_SERVER = BASE | {"validation", "aggregation", "wire", "data", "models", "engine", "client"}
ALLOWED: dict[str, frozenset[str]] = {
    "base": BASE,
    "validation": BASE | {"aggregation"},  # compression options are checked by their codecs
    "wire": BASE | {"aggregation"},
    "aggregation": BASE | {"aggregation"},
    "data": BASE | {"data"},
    "models": BASE | {"models"},
    "engine": BASE | {"validation", "engine"},
    "client": BASE | {"validation", "aggregation", "wire", "data", "models", "client"},
    "server": BASE | {"validation", "aggregation", "wire", "data", "models", "engine", "server"},
    "strategies": BASE | {"aggregation", "server"},
    "components": BASE | {"data", "models"},
    "experiment": BELOW_SERVER | {"server", "components"},
    "deploy": BELOW_SERVER | {"server", "components", "experiment", "deploy"},
    "cli": BELOW_SERVER | {"server", "components", "experiment", "deploy", "cli"},
}
"""Part -> the parts its modules may import."""

PARTS = {
    "fedflower": "base",  # the package's __init__
    "fedflower.errors": "base",
    "fedflower.keys": "base",
    "fedflower.checks": "base",
    "fedflower.determinism": "base",
    "fedflower.startup": "base",
    "fedflower.validation": "validation",  # config checks: neither TensorFlow nor Flower
    "fedflower.aggregation": "aggregation",
    "fedflower.data": "data",
    "fedflower.models": "models",
    "fedflower.steps": "models",  # compiled train/test steps the client and server share
    "fedflower.engine": "engine",
    "fedflower.client": "client",
    "fedflower.server": "server",
    "fedflower.strategies": "strategies",
    "fedflower.components": "components",
    "fedflower.experiment": "experiment",
    "fedflower.deploy": "deploy",
    "fedflower.cli": "cli",
    "fedflower.compare": "cli",  # fedflower-compare: reads multirun directories
    "fedflower.wire": "wire",  # compressed arrays in Flower records, for client and server
    "fedflower.__main__": "cli",
}
"""Module or package -> its part (the longest matching prefix wins)."""

FORBIDDEN_PACKAGES = {
    "aggregation": {"flwr", "tensorflow", "keras"},  # pure NumPy math
    "fedflower.validation": {"flwr", "tensorflow", "keras"},  # runs before the heavy imports
}


def module_name(path: Path) -> str:
    """``fedflower.x.y`` for fedflower/x/y.py; ``strategies/`` installs as fedflower.strategies."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "strategies":
        parts[0:1] = ["fedflower", "strategies"]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The part of ``module``: that of its longest prefix in :data:`PARTS`."""
    prefixes = [p for p in PARTS if module == p or module.startswith(p + ".")]
    if not prefixes:
        raise KeyError(f"{module} has no part in PARTS: add it")
    return PARTS[max(prefixes, key=len)]


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            base = node.module or ""
            # `from fedflower import keys` imports the module fedflower.keys
            found |= {f"{base}.{a.name}" for a in node.names} if base == "fedflower" else {base}
    return found


MODULES = sorted([*(ROOT / "fedflower").rglob("*.py"), *(ROOT / "strategies").rglob("*.py")])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_imports_only_allowed_layers(path: Path) -> None:
    module = module_name(path)
    part = part_of(module)
    inner = {m for m in imports(path) if m == "fedflower" or m.startswith("fedflower.")}
    wrong = sorted(m for m in inner if part_of(m) not in ALLOWED[part])
    assert not wrong, f"{module} ({part}) imports a layer above it: {wrong}"
    top = {m.split(".")[0] for m in imports(path)}
    banned = FORBIDDEN_PACKAGES.get(part, set()) | FORBIDDEN_PACKAGES.get(module, set())
    assert not top & banned, f"{module} imports {sorted(top & banned)}"


def test_table_covers_the_layers_and_catches_a_wrong_arrow(tmp_path: Path) -> None:
    assert len(MODULES) > 50
    assert {part_of(module_name(p)) for p in MODULES} == set(ALLOWED)
    # the check itself: a client module importing the server is refused
    assert part_of("fedflower.server.app") not in ALLOWED[part_of("fedflower.client.app")]
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from fedflower.server.app import make\n    import flwr.app\n")
    assert imports(bad) == {"fedflower.server.app", "flwr.app"}
