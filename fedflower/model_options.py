"""The typed options of the ``model`` config group: one dataclass per ``conf/model/<name>.yaml``.

Each names the factory it builds (``_target_``, :mod:`fedflower.models`). Hydra uses them as
the group's schemas (stored in its ``ConfigStore`` by :func:`register`), so it refuses unknown
keys and values of the wrong type while composing; the rules on values run when an option is
built (``__post_init__``, at validation, before Keras loads), with the message
``<key> must be <rule>, got <value>``. The factories take the data's ``input_shape`` and
``num_classes`` besides these options when the run builds the model.

The schemas sit beside :mod:`fedflower.models` rather than in it because that module imports
Keras (and its backend), and the command line checks a config before those load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedflower.checks import check_choice, check_number
from fedflower.errors import ConfigError

TEXT_ENCODERS = ("pool", "conv", "lstm")
"""How :func:`fedflower.models.text_classifier` turns word vectors into one sentence vector."""


def _units(key: str, value: int) -> None:
    check_number(f"model.{key}", value, minimum=1, integer=True)


def _layers(key: str, values: list[int]) -> None:
    for value in values:
        _units(key, value)


@dataclass
class MlpOptions:
    """``model=mlp``: :func:`fedflower.models.mlp`."""

    _target_: str = "fedflower.models.mlp"
    hidden_units: list[int] = field(default_factory=lambda: [128])
    activation: str = "relu"

    def __post_init__(self) -> None:
        """Check the hidden layers' sizes."""
        _layers("hidden_units", self.hidden_units)


@dataclass
class LogregOptions:
    """``model=logreg``: :func:`fedflower.models.logreg` (no options)."""

    _target_: str = "fedflower.models.logreg"


@dataclass
class CnnOptions:
    """``model=cnn``: :func:`fedflower.models.cnn`."""

    _target_: str = "fedflower.models.cnn"
    filters: list[int] = field(default_factory=lambda: [16, 32])
    kernel_size: int = 3
    dense_units: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        """Check the layer sizes and the dropout rate."""
        _layers("filters", self.filters)
        _units("kernel_size", self.kernel_size)
        _units("dense_units", self.dense_units)
        check_number("model.dropout", self.dropout, minimum=0.0, maximum=1.0, max_open=True)


@dataclass
class TextOptions:
    """``model=text``: :func:`fedflower.models.text_classifier`.

    ``vocabulary`` is built from the dataset (``fedflower.data.text.vocabulary_of``), a nested
    ``_target_`` node, so it is untyped here.
    """

    _target_: str = "fedflower.models.text_classifier"
    vocabulary: Any = None
    sequence_length: int = 32
    embedding_dim: int = 32
    encoder: str = "conv"
    units: int = 32

    def __post_init__(self) -> None:
        """Check the sizes and the encoder."""
        for key in ("sequence_length", "embedding_dim", "units"):
            _units(key, getattr(self, key))
        check_choice("model.encoder", self.encoder, TEXT_ENCODERS)


@dataclass
class KerasFileOptions:
    """``model=keras_file``: :func:`fedflower.models.from_file` (a saved ``.keras`` model)."""

    _target_: str = "fedflower.models.from_file"
    path: str = "???"


@dataclass
class PythonOptions:
    """``model=python``: :func:`fedflower.models.from_factory` (a user's model function)."""

    _target_: str = "fedflower.models.from_factory"
    factory: str = "???"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check that ``factory`` names ``module:function``."""
        check_factory(self.factory)


@dataclass
class MemoryModelOptions:
    """``model=memory``: a model given to ``fedflower.run(model=...)``, kept under ``key``."""

    _target_: str = "fedflower.models.from_memory"
    key: str = "???"


def check_factory(spec: str) -> tuple[str, str]:
    """``(module, function)`` of ``module:function``, or the one-line ``ConfigError``."""
    module, _, function = spec.partition(":")
    if not module or not function:
        raise ConfigError(f"model.factory must be 'module:function', got {spec!r}")
    return module, function


MODELS: dict[str, type] = {
    "mlp": MlpOptions,
    "logreg": LogregOptions,
    "cnn": CnnOptions,
    "text": TextOptions,
    "keras_file": KerasFileOptions,
    "python": PythonOptions,
    "memory": MemoryModelOptions,
}
"""The ``model`` group's options: name -> typed options."""


def register() -> None:
    """Store the dataclasses in Hydra's ``ConfigStore`` as ``schema/model/<name>``.

    Each ``conf/model/<name>.yaml`` names ``/schema/model/<name>@_here_`` first in its defaults
    list.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, node in MODELS.items():
        store.store(group="schema/model", name=name, node=node)
