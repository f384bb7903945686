"""fedflower: plugin-based federated learning for Keras models, built on Flower and Hydra.

``fedflower.run(...)`` and ``fedflower.sweep(...)`` (:mod:`fedflower.api`) and
``fedflower.data.from_arrays`` are imported on first use, so ``import fedflower`` stays light
(the CLI reports a bad override before TensorFlow is imported).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("fedflower")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

LAZY = {"run": "fedflower.api", "sweep": "fedflower.api", "compose": "fedflower.api"}
LAZY |= {"Result": "fedflower.api", "data": "fedflower.data"}
"""Public names and the module that defines them, imported when first used (PEP 562).

The package's ``__init__`` is in the base layer; these names are the front door of the top
one, re-exported without importing it: ``tests/unit/test_layers.py`` checks this table."""

__all__ = ["Result", "__version__", "compose", "data", "run", "sweep"]


def __getattr__(name: str) -> Any:
    if name not in LAZY:
        raise AttributeError(f"module 'fedflower' has no attribute {name!r}")
    module = importlib.import_module(LAZY[name])
    return module if LAZY[name].endswith(f".{name}") else getattr(module, name)


def __dir__() -> list[str]:
    return sorted(__all__)
