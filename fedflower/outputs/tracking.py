"""Where a run's per-round metrics go besides ``metrics.jsonl``: TensorBoard, Weights & Biases.

A sink receives every metrics row the :class:`~fedflower.server.recorder.Recorder` writes and
the run's results at the end. Each row's numeric fields (losses, accuracies, bytes, seconds,
virtual time, staleness, privacy budget, ... whatever the row holds) become scalars at the
row's round. TensorBoard event files are written into every run directory (``tensorboard
--logdir outputs``); ``tracking=wandb`` also logs to Weights & Biases, offline by default, so a
run needs no network (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from fedflower.checks import check_choice
from fedflower.errors import ConfigError

log = logging.getLogger(__name__)

TRACKERS = ("none", "wandb")
"""Experiment trackers besides TensorBoard."""
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class NoTracking:
    """``tracking=none``: TensorBoard only (or nothing, with ``tensorboard: false``)."""

    name: str = "none"
    tensorboard: bool = True


@dataclass
class WandbTracking:
    """``tracking=wandb``: the keys fedflower reads; every other key goes to ``wandb.init``.

    The option stays an open mapping for Hydra (no schema), so ``+tracking.entity=...`` or
    ``+tracking.group=...`` pass any ``wandb.init`` argument through; :func:`check_tracking`
    builds this dataclass from the known keys, which checks their values, and keeps the rest
    in ``extra``.
    """

    name: str = "wandb"
    tensorboard: bool = True
    project: str = "fedflower"
    mode: str = "offline"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the mode and that the ``wandb`` package is installed."""
        check_choice("tracking.tensorboard", self.tensorboard, (False, True))
        check_choice("tracking.mode", self.mode, WANDB_MODES)
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(
                "tracking=wandb needs the wandb package: pip install 'fedflower[wandb]'"
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> WandbTracking:
        """The typed options; keys that are not fields go to :attr:`extra`."""
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {key: value for key, value in options.items() if key not in known}
        return cls(**{key: options[key] for key in known if key in options}, extra=extra)


def check_tracking(tracking: Mapping[str, Any] | None) -> str:
    """Check ``cfg.tracking`` without importing a tracker; return the tracker's name.

    Run with the config's other checks (:func:`fedflower.server.rules.validate`), so a bad mode
    or a missing ``wandb`` package stops the run before TensorFlow is imported.
    """
    options = tracking or {}
    name = check_choice("tracking.name", options.get("name", "none"), TRACKERS)
    if name == "wandb":
        WandbTracking.from_options(options)
    return str(name)


STEP = "round"


class Sink(Protocol):
    """Receives a run's metrics rows as they are recorded, then its results."""

    def log_round(self, row: Mapping[str, Any]) -> None:
        """Record one metrics row (it has a ``round``)."""

    def close(self, results: Mapping[str, Any]) -> None:
        """Record the run's results and release the sink's files."""


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numeric fields except the round itself (booleans and ``None`` left out)."""
    return {
        key: float(value)
        for key, value in row.items()
        if key != STEP and isinstance(value, int | float) and not isinstance(value, bool)
    }


class TensorBoardSink:
    """Scalars in TensorBoard event files under ``logdir`` (tensorboard's own writer, no TF).

    A round is one event holding its scalars, each built by tensorboard's ``scalar_pb`` (what
    ``tensorboard.summary.Writer.add_scalar`` writes, one event per scalar, through a queue
    of 10 events: a row of 15 numbers waited on the writer's thread).

    Parameters
    ----------
    logdir : Path
        Directory of the event files (the run directory's ``tensorboard/``).
    """

    def __init__(self, logdir: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.logdir = Path(logdir)
        self._writer = EventFileWriter(str(self.logdir))

    def log_round(self, row: Mapping[str, Any]) -> None:  # noqa: D102
        import time

        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb

        event = event_pb2.Event(wall_time=time.time(), step=int(row[STEP]))
        for tag, value in scalars(row).items():
            event.summary.value.extend(scalar_pb(tag, value).value)
        self._writer.add_event(event)
        self._writer.flush()

    def close(self, results: Mapping[str, Any]) -> None:  # noqa: D102
        self._writer.close()


class WandbSink:
    """A Weights & Biases run: every row logged at its round, the results as its summary.

    Parameters
    ----------
    config : dict
        The run's resolved config (stored with the W&B run).
    directory : Path
        Where W&B keeps its files (the run directory).
    project : str
        W&B project name.
    mode : {"offline", "online", "disabled"}
        ``offline`` writes locally only (``wandb sync`` uploads later).
    options : dict
        Further ``wandb.init`` arguments (``entity``, ``group``, ``name``, ``tags``, ...).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        directory: Path,
        project: str = "fedflower",
        mode: str = "offline",
        **options: Any,
    ) -> None:
        check_choice("tracking.mode", mode, WANDB_MODES)
        try:
            import wandb
        except ImportError as exc:
            raise ConfigError(
                "tracking=wandb needs the wandb package: pip install 'fedflower[wandb]'"
            ) from exc
        self._run = wandb.init(
            project=project,
            mode=mode,
            dir=str(directory),
            config=dict(config),
            **options,
        )

    def log_round(self, row: Mapping[str, Any]) -> None:  # noqa: D102
        self._run.log(scalars(row), step=int(row[STEP]))

    def close(self, results: Mapping[str, Any]) -> None:  # noqa: D102
        final = results.get("final") or {}
        self._run.summary.update({f"final_{k}": v for k, v in final.items() if v is not None})
        self._run.finish()


def build_sinks(
    tracking: Mapping[str, Any] | None, out: Path, config: Mapping[str, Any]
) -> list[Sink]:
    """The sinks ``cfg.tracking`` asks for: TensorBoard (unless switched off) and one tracker.

    Parameters
    ----------
    tracking : mapping, optional
        The ``tracking`` config group: ``name`` (``none`` or ``wandb``), ``tensorboard`` and the
        tracker's own options.
    out : Path
        The run directory.
    config : mapping
        The run's resolved config (given to trackers that store it).
    """
    name = check_tracking(tracking)
    options = {k: v for k, v in (tracking or {}).items() if k != "name"}
    sinks: list[Sink] = []
    if options.pop("tensorboard", True):
        sinks.append(TensorBoardSink(out / "tensorboard"))
    if name == "wandb":
        sinks.append(WandbSink(config, out, **options))
    return sinks
