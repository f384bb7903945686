"""Objects of this Python process that a config names by key: in-memory models and data.

``fedflower.run(model=my_model, data=my_arrays)`` keeps the objects here and composes the
config groups ``model=memory`` and ``dataset=memory`` with their keys, so the run goes through
the same Hydra config (and ``instantiate``) as any other. A key only means something in the
process that holds the object: engines that build models in other processes (``simulation=ray``,
a deployment) cannot resolve it.
"""

from __future__ import annotations

import itertools
from typing import Any

from fedflower.errors import ConfigError

_held: dict[str, Any] = {}
_counter = itertools.count()


def put(obj: Any, kind: str) -> str:
    """Keep ``obj`` and return its key (``<kind>-<n>``, unique in this process)."""
    key = f"{kind}-{next(_counter)}"
    _held[key] = obj
    return key


def get(key: str, option: str) -> Any:
    """The object kept under ``key``; ``option`` names the config key in the error message."""
    try:
        return _held[key]
    except KeyError:
        raise ConfigError(
            f"{option} must name an object given to fedflower.run in this process, got {key!r} "
            "(in-memory models and data work with fedflower.run and simulation=local)"
        ) from None


def release(key: str) -> None:
    """Forget the object kept under ``key`` (after its run)."""
    _held.pop(key, None)
