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
LAZY |= {"Result": "fedflower.api"}
"""Public names and the module that defines them, imported when first used."""

__all__ = ["Result", "__version__", "compose", "data", "run", "sweep"]


def __getattr__(name: str) -> Any:
    if name in LAZY:
        return getattr(importlib.import_module(LAZY[name]), name)
    if name == "data":
        return importlib.import_module("fedflower.data")
    raise AttributeError(f"module 'fedflower' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
