"""What every entry point does first: environment defaults, config names, quiet imports.

The ``fedflower`` command, the deployment tools and a SuperNode's ClientApp import this module
(not the Hydra command line): it imports nothing heavy itself.
"""

from __future__ import annotations

import os
from typing import Any

CONFIG_MODULE = "fedflower.conf"
CONFIG_NAME = "config"
EXIT_USAGE = 2


def set_environment_defaults() -> None:
    """Quiet defaults for TensorFlow's C++ log and flwr-datasets' progress bars (user's wins)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported anywhere
    os.environ.setdefault("TQDM_DISABLE", "1")  # flwr-datasets partitioners draw tqdm bars


LIBRARY_NOTICES = (
    # Ray's notice about a future default for GPU visibility (clients here use no GPU)
    ("ignore", "", FutureWarning, r"ray\._private\.worker"),
    # Keras converting TensorFlow variables with NumPy 2 (keras/src/backend/tensorflow/core.py)
    ("ignore", "__array__ implementation doesn't accept a copy keyword", DeprecationWarning, ""),
)
"""Warnings of the libraries fedflower runs on that no user action can address:
``(action, message, category, module)`` as :func:`warnings.filterwarnings` takes them."""

RAY_NOTICES_ENV = "ignore::FutureWarning:ray._private.worker"
"""The Ray notice of :data:`LIBRARY_NOTICES` for ``PYTHONWARNINGS`` (processes fedflower
starts but whose Python it does not run, such as Flower's simulation process)."""


def quiet_library_notices() -> None:
    """Hide :data:`LIBRARY_NOTICES` (the user's own warnings and every other one stay).

    Call it after importing Flower's simulation engine: that import lets every
    ``DeprecationWarning`` through once (``flwr.simulation.ray_transport.utils``), and filters
    added later take precedence.
    """
    import warnings

    for action, message, category, module in LIBRARY_NOTICES:
        warnings.filterwarnings(action, message, category, module)  # type: ignore[arg-type]


TYPE_RULES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
"""How :func:`hydra_error_line` names a typed field's rule."""


def _type_rule(node_type: object, key: object) -> str:
    """The rule of field ``key`` of the dataclass ``node_type`` (``a number``, ...)."""
    import dataclasses
    import typing

    if not dataclasses.is_dataclass(node_type) or not isinstance(node_type, type):
        return "of the field's type"
    hint = typing.get_type_hints(node_type).get(str(key))
    types = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    rule = TYPE_RULES.get(types[0], f"a {getattr(types[0], '__name__', types[0])}")
    return rule + " or null" if len(types) < len(typing.get_args(hint)) else rule


def type_error_line(err: Any) -> str:
    """``<key> must be <type>, got <value>`` from an OmegaConf ``ValidationError``.

    An item of a typed list (``model.hidden_units[0]``) is named with the list's item type.
    """
    import typing

    items = typing.get_args(getattr(err, "ref_type", None))
    if err.object_type is list and len(items) == 1:
        rule = TYPE_RULES.get(items[0], "of the list's item type")
    else:
        rule = _type_rule(err.object_type, err.key)
    return f"{err.full_key} must be {rule}, got {err.value!r}"


def hydra_error_line(exc: Exception) -> str:
    """One line from a Hydra/OmegaConf composition error, read from the exception's fields."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(exc, MissingConfigException) and "/" in (exc.missing_cfg_file or ""):
        group, _, option = str(exc.missing_cfg_file).rpartition("/")
        hint = f"; choose one of: {', '.join(exc.options)}" if exc.options else ""
        return f"unknown option {option!r} for {group}{hint}"
    if isinstance(exc, OverrideParseException):
        return f"malformed override {exc.override!r}: {exc.message.splitlines()[0]}"
    cause = exc.__cause__
    if isinstance(cause, ValidationError) and cause.full_key:
        return type_error_line(cause)
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and cause.full_key:
        name = cause.full_key
        return f"unknown config key {name!r} (to add a new key on purpose: +{name}=...)"
    text = str(exc).strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:300]
