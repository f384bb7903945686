"""The layering of fedflower/ and strategies/, read from every module's import statements (ast).

Every module belongs to one part; a part may import only the parts listed for it (docs/
architecture.md draws the same table). Imports inside functions count: a lazy import is still
a dependency, and so is ``importlib.import_module("fedflower.x")`` or ``__import__`` of a
module named by a string (``import_module`` under another name, or a name bound to the string,
too). No two modules import each other, directly or through others (a
cycle inside one package is still a cycle). A new module outside the table fails the test
until it gets a part. The last tests plant a bad module in a copy of the tree and see each
check fail.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = frozenset({"base"})
BELOW_SERVER = BASE | {"aggregation", "wire", "data", "models", "engine", "client"}
BELOW_SERVER |= {"outputs"}  # a run's files: the server writes them, the parts above read them
ALLOWED: dict[str, frozenset[str]] = {
    "base": BASE,
    "wire": BASE | {"aggregation"},
    "aggregation": BASE | {"aggregation"},
    "data": BASE | {"data"},
    "models": BASE | {"models"},
    "engine": BASE | {"engine"},
    "client": BASE | {"aggregation", "wire", "data", "models", "client"},
    "outputs": BASE | {"outputs"},  # run files, their reader, console and plot sinks
    "server": BASE | {"aggregation", "wire", "data", "models", "engine", "server"} | {"outputs"},
    "strategies": BASE | {"aggregation", "wire", "server"},  # wire: models keyed by variable path
    "components": BASE | {"data", "models"},
    "apps": BELOW_SERVER | {"server", "components"},
    "experiment": BELOW_SERVER | {"server", "components", "apps"},
    "deploy": BELOW_SERVER | {"server", "components", "apps", "experiment", "deploy"},
    "cli": BELOW_SERVER | {"server", "components", "apps", "experiment", "deploy", "cli"},
}
"""Part -> the parts its modules may import."""

PARTS = {
    "fedflower": "base",  # the package's __init__
    "fedflower.errors": "base",
    "fedflower.keys": "base",
    "fedflower.checks": "base",
    "fedflower.determinism": "base",
    "fedflower.startup": "base",
    "fedflower.backend": "base",  # the Keras backend a process trains on
    "fedflower.memory": "base",  # objects of this process a config names by key
    "fedflower.sites": "base",  # a client's name in per-client results
    "fedflower.aggregation": "aggregation",
    "fedflower.data": "data",
    "fedflower.models": "models",
    "fedflower.model_inputs": "models",  # the saved model's preprocessing layers
    "fedflower.model_options": "models",  # the model group's typed options (no Keras)
    "fedflower.steps": "models",  # compiled train/test steps the client and server share
    "fedflower.engine": "engine",
    "fedflower.client": "client",
    "fedflower.server": "server",
    "fedflower.strategies": "strategies",
    "fedflower.components": "components",
    "fedflower.apps": "apps",  # the one place the ServerApp and ClientApp are assembled
    "fedflower.experiment": "experiment",
    "fedflower.deploy": "deploy",
    "fedflower.cli": "cli",
    "fedflower.compare": "cli",  # fedflower-compare: reads multirun directories
    "fedflower.export": "cli",  # fedflower export: a run's model to TFLite
    "fedflower.deploy.cli": "cli",  # fedflower-deploy: a front door like fedflower
    "fedflower.outputs": "outputs",
    "fedflower.predict": "cli",  # fedflower predict: a trained model on raw rows
    "fedflower.api": "cli",  # fedflower.run / fedflower.sweep: the CLI's runs from Python
    "fedflower.wire": "wire",  # compressed arrays in Flower records, for client and server
    "fedflower.__main__": "cli",
}
"""Module or package -> its part (the longest matching prefix wins)."""

FORBIDDEN_PACKAGES = {
    "aggregation": {"flwr", "tensorflow", "keras"},  # pure NumPy math
    "outputs": {"flwr", "tensorflow", "keras"},  # reading a run stays cheap
    # typed options Hydra reads while composing, before the heavy imports
    "fedflower.server.options": {"flwr", "tensorflow", "keras"},
    "fedflower.model_options": {"flwr", "tensorflow", "keras"},
    "fedflower.data.options": {"flwr", "flwr_datasets", "datasets", "sklearn", "keras"},
}


def module_name(path: Path, root: Path = ROOT) -> str:
    """``fedflower.x.y`` for fedflower/x/y.py; ``strategies/`` installs as fedflower.strategies."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] == "strategies":
        parts[0:1] = ["fedflower", "strategies"]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The part of ``module``: that of its longest prefix in :data:`PARTS`."""
    prefixes = [p for p in PARTS if module == p or module.startswith(p + ".")]
    if not prefixes:
        raise KeyError(f"{module} has no part in PARTS: add it")
    return PARTS[max(prefixes, key=len)]


DYNAMIC = {"import_module", "__import__"}
"""Calls that import the module named by their first argument."""


def _dynamic_import(node: ast.Call, loaders: set[str], strings: dict[str, str]) -> str | None:
    """The module a call ``importlib.import_module("m")`` / ``__import__("m")`` imports.

    ``loaders`` holds the names ``import_module`` goes by in the module (``from importlib
    import import_module as load``); a first argument that is a name bound to a string
    (``APP = "fedflower.x"``) is read through ``strings``.
    """
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in loaders or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Name):
        return strings.get(first.id)
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _names(tree: ast.AST) -> tuple[set[str], dict[str, str]]:
    """The names ``import_module`` goes by in ``tree``, and every name bound to a string."""
    loaders, strings = set(DYNAMIC), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "importlib":
            loaders |= {a.asname for a in node.names if a.name == "import_module" and a.asname}
        elif isinstance(node, ast.Assign) and isinstance(value := node.value, ast.Constant):
            bound = [t.id for t in node.targets if isinstance(t, ast.Name)]
            strings |= {name: value.value for name in bound if isinstance(value.value, str)}
    return loaders, strings


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level, inside a function or by a string."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    loaders, strings = _names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            base = node.module or ""
            found.add(base)
            if base.startswith("fedflower"):  # `from fedflower.x import y`: y may be a module
                found |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Call):
            target = _dynamic_import(node, loaders, strings)
            if target is not None:
                found.add(target)
    return found


def sources(root: Path) -> list[Path]:
    """The modules of fedflower/ and strategies/ under ``root``."""
    return sorted([*(root / "fedflower").rglob("*.py"), *(root / "strategies").rglob("*.py")])


def wrong_imports(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the imports of ``path``: upward imports, banned packages."""
    module = module_name(path, root)
    part = part_of(module)
    found = imports(path)
    inner = {m for m in found if m == "fedflower" or m.startswith("fedflower.")}
    problems = [
        f"{module} ({part}) imports a layer above it: {m}"
        for m in sorted(inner)
        if part_of(m) not in ALLOWED[part]
    ]
    top = {m.split(".")[0] for m in found}
    banned = FORBIDDEN_PACKAGES.get(part, set()) | FORBIDDEN_PACKAGES.get(module, set())
    return problems + [f"{module} imports {p}" for p in sorted(top & banned)]


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name resolves to its longest module prefix)."""
    paths = sources(root)
    names = {module_name(p, root) for p in paths}

    def resolve(name: str) -> str | None:
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    edges = {}
    for path in paths:
        module = module_name(path, root)
        targets = {resolve(m) for m in imports(path) if m.startswith("fedflower")}
        edges[module] = {t for t in targets if t is not None and t != module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``edges`` (each as the modules of one strongly connected group).

    A package's ``__init__`` imported by its own modules is not a cycle: importing
    ``fedflower.x.y`` runs ``fedflower.x`` first anyway, so that edge is dropped.
    """
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


MODULES = sources(ROOT)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_imports_only_allowed_layers(path: Path) -> None:
    assert not wrong_imports(path)


def test_no_import_cycles() -> None:
    assert not cycles(graph())


def test_table_covers_the_layers_and_catches_a_wrong_arrow(tmp_path: Path) -> None:
    assert len(MODULES) > 50
    assert {part_of(module_name(p)) for p in MODULES} == set(ALLOWED)
    # the check itself: a client module importing the server is refused
    assert part_of("fedflower.server.app") not in ALLOWED[part_of("fedflower.client.app")]
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import importlib\n"
        "def f():\n    from fedflower.server.app import make\n    import flwr.app\n"
        "    importlib.import_module('fedflower.deploy.app')\n    __import__('fedflower.cli')\n"
    )
    assert imports(bad) == {
        "fedflower.server.app",
        "fedflower.server.app.make",
        "flwr.app",
        "importlib",
        "fedflower.deploy.app",
        "fedflower.cli",
    }


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of fedflower/ and strategies/ to plant bad modules in."""
    for top in ("fedflower", "strategies"):
        shutil.copytree(ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


PLANTED = {
    "upward import": "from fedflower.server.app import make_server_app\n",
    "lazy upward import": "def f():\n    import fedflower.deploy.app\n",
    "importlib": "import importlib\n\nAPP = importlib.import_module('fedflower.experiment')\n",
    "from importlib": "from importlib import import_module\n\nimport_module('fedflower.cli')\n",
    "__import__": "__import__('fedflower.server.recorder')\n",
    "aliased import_module": "from importlib import import_module as load\n\n"
    "load('fedflower.cli')\n",
    "module named by a constant": "import importlib\n\nAPP = 'fedflower.apps'\n"
    "importlib.import_module(APP)\n",
    "banned package": "import flwr\n",
}


@pytest.mark.parametrize("source", PLANTED.values(), ids=list(PLANTED))
def test_a_planted_bad_import_fails_the_check(tree: Path, source: str) -> None:
    planted = tree / "fedflower" / "aggregation" / "planted.py"
    planted.write_text(source)
    assert all(not wrong_imports(p, tree) for p in sources(tree) if p != planted)
    assert wrong_imports(planted, tree)


def test_a_planted_cycle_inside_a_package_fails_the_check(tree: Path) -> None:
    assert not cycles(graph(tree))
    server = tree / "fedflower" / "server"
    (server / "planted_a.py").write_text("from fedflower.server.planted_b import B\nA = 1\n")
    (server / "planted_b.py").write_text("def f():\n    from fedflower.server import planted_a\n")
    assert cycles(graph(tree)) == [["fedflower.server.planted_a", "fedflower.server.planted_b"]]
    assert all(not wrong_imports(p, tree) for p in sources(tree))  # the layers alone allow it


def test_the_package_re_exports_only_the_python_api_lazily() -> None:
    import fedflower

    # fedflower.run / sweep / compose / Result and fedflower.data: the front door (PEP 562),
    # imported on first use, so the base-layer __init__ imports nothing above it
    assert {part_of(module) for module in fedflower.LAZY.values()} == {"cli", "data"}
    assert set(fedflower.LAZY) <= set(fedflower.__all__)
