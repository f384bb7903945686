"""Checkpoint and resume of a run.

Synchronous strategies run Flower's own loop, ``Strategy.start``; the checkpoint is a hook in
its centralized evaluation (:func:`checkpointed`) and a resumed run continues it through
:class:`Resumed` (Flower 1.42's loop has no first-round option). The hook writes
``checkpoint.npz`` in the run directory every ``checkpoint.every`` rounds, atomically (a temp
file, fsync, then ``os.replace``): the round, the global model, the Python and NumPy global
random states, and the ``state_dict()`` of every :class:`~fedflower.engine.wrapper.Stateful`
object the run's :class:`~fedflower.server.pipeline.Pipeline` lists, by name:

* ``strategy0``, ``strategy1``: the strategy layers (a privacy release with its accountant,
  then the plugin): server-optimizer moments, counters;
* ``recorder``: the metrics rows written so far;
* ``meter``: bytes counted since the last row;
* ``clock``: the virtual clock's time and task counter.

``fedflower resume=<run dir>`` with the same config loads it (``load_state_dict`` on each),
rewrites ``metrics.jsonl`` up to the checkpoint's round and continues with the next round, so
the final model and metrics equal those of an uninterrupted run (wall-clock fields aside).
A checkpoint written under another config is refused with the first differing key.
Arrays are stored as NumPy arrays, everything else as JSON (no pickles).

Asynchronous strategies (FedBuff, FedAsync) use the same :class:`Checkpointer` from their
event loop (:meth:`fedflower.server.async_strategy.AsyncStrategy.start`): every
``checkpoint.every`` server versions, between two events, with the task table and the virtual
clock's tasks in flight, which a resumed run re-issues with their original start times.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedflower import wire
from fedflower.errors import ConfigError

log = logging.getLogger(__name__)

FILENAME = "checkpoint.npz"
META = "__meta__"
UNCHECKED = ("resume", "progress", "verbose", "checkpoint", "output", "num_rounds")
"""Top-level config keys a resumed run may change (``num_rounds``: continue a finished run)."""


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON data, its NumPy arrays moved into ``arrays`` (by generated key)."""
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, Mapping):
        return {str(k): _encode(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):  # e.g. SecAgg+ keys a node keeps in its Context.state
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    return value


def _decode(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.array(arrays[value["__array__"]])
        if set(value) == {"__bytes__"}:
            return base64.b64decode(value["__bytes__"])
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def save(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temp file, fsync, then rename."""
    arrays: dict[str, np.ndarray] = {}
    meta = json.dumps(_encode(state, arrays))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        arrays[META] = np.frombuffer(meta.encode(), dtype=np.uint8)
        np.savez(fh, allow_pickle=False, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    """The state :func:`save` wrote to ``path``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the checkpoint {path}: {exc}") from exc
    meta = json.loads(arrays.pop(META).tobytes().decode())
    state: dict[str, Any] = _decode(meta, arrays)
    return state


def _first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        nested = (dict, list)
        keys = sorted(set(old) | set(new), key=lambda k: (isinstance(old.get(k), nested), k))
        for key in keys:  # top-level numbers (seed, num_rounds) before groups using them
            if prefix == "" and key in UNCHECKED:
                continue
            diff = _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if diff:
                return diff
        return None
    return None if old == new else f"{prefix[:-1]} was {old!r}, now {new!r}"


def check_resumable(run_dir: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """Load ``run_dir``'s checkpoint; ``ConfigError`` unless it exists and ``config`` matches."""
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        raise ConfigError(f"resume={run_dir}: no {FILENAME} there (checkpoint.every was 0?)")
    state = load(path)
    diff = _first_difference(state["config"], dict(config))
    if diff:
        raise ConfigError(f"resume={run_dir}: the checkpoint is from another config: {diff}")
    rounds, done = config.get("num_rounds"), int(state.get("round", 0))
    if isinstance(rounds, int) and rounds <= done:
        raise ConfigError(
            f"num_rounds must be more than the {done} rounds the checkpoint in {run_dir} "
            f"holds to continue it, got {rounds}; e.g. num_rounds={done + 5}"
        )
    return state


def rng_state() -> dict[str, Any]:
    """Python's and NumPy's global random states (Flower samples nodes with ``random``)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys, int(pos), int(has_gauss), float(cached)],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


class Checkpointer:
    """Writes (every ``every`` rounds) and restores a run's checkpoint.

    Parameters
    ----------
    run_dir : Path
        Where ``checkpoint.npz`` lives.
    config : mapping
        The run's resolved config, stored to refuse a resume under another config.
    every : int
        Write after every ``every``-th round and after the last one; 0 = never.
    objects : mapping
        Named objects with ``state_dict()``/``load_state_dict()``
        (:meth:`fedflower.server.pipeline.Pipeline.stateful`).
    resume : bool
        Continue from the checkpoint in ``run_dir`` instead of starting at round 1.
    """

    def __init__(
        self,
        run_dir: Path,
        config: Mapping[str, Any],
        every: int,
        objects: Mapping[str, Any],
        resume: bool = False,
    ) -> None:
        self.path = Path(run_dir) / FILENAME
        self.config = dict(config)
        self.every = int(every)
        self.objects = dict(objects)
        self.resume = resume

    def due(self, server_round: int, previous: int) -> bool:
        """Whether a multiple of ``every`` lies in ``(previous, server_round]``."""
        return self.every > 0 and server_round // self.every > previous // self.every

    def save(self, server_round: int, arrays: ArrayRecord, last: bool = False) -> None:
        """Checkpoint after ``server_round`` if it is due (or it is the ``last``)."""
        if self.every <= 0 or not (last or self.due(server_round, server_round - 1)):
            return
        state = {
            "round": server_round,
            "config": self.config,
            "names": list(arrays.keys()),
            "model": arrays.to_numpy_ndarrays(),
            "rng": rng_state(),
            "objects": {k: obj.state_dict() for k, obj in self.objects.items()},
        }
        save(self.path, state)
        log.debug("checkpoint after round %s written to %s", server_round, self.path)

    def restore(self, names: Sequence[str] | None = None) -> tuple[int, ArrayRecord]:
        """Load the checkpoint into the objects; return its round and global model.

        ``names`` (the model's variable paths) must be the checkpoint model's keys: a
        checkpoint of another model, or one keyed by position, fails in one line.
        """
        state = check_resumable(self.path.parent, self.config)
        reason = None if names is None else wire.mismatch(state["names"], names)
        if reason is not None:
            raise ConfigError(
                f"the checkpoint's model must be keyed by this model's variable paths: "
                f"{reason}; start a new run without resume"
            )
        for key, obj in self.objects.items():
            if key in state["objects"]:
                obj.load_state_dict(state["objects"][key])
        set_rng_state(state["rng"])
        names, model = state["names"], state["model"]
        return int(state["round"]), ArrayRecord(
            {k: Array(a) for k, a in zip(names, model, strict=True)}
        )


class Resumed(Strategy):
    """``strategy`` continued after round ``done``: Flower's round ``r`` is the run's ``done + r``.

    Flower 1.42's ``Strategy.start`` has no first-round option; run through this adapter, its
    loop (the one synchronous loop) continues a resumed run with the same calls and round
    numbers as an uninterrupted one.
    """

    def __init__(self, strategy: Strategy, done: int) -> None:
        super().__init__()
        self.strategy = strategy
        self.done = done

    def configure_train(  # noqa: D102
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_train(server_round + self.done, arrays, config, grid)

    def aggregate_train(  # noqa: D102
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.strategy.aggregate_train(server_round + self.done, replies)

    def configure_evaluate(  # noqa: D102
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round + self.done, arrays, config, grid)

    def aggregate_evaluate(  # noqa: D102
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round + self.done, replies)

    def summary(self) -> None:  # noqa: D102
        self.strategy.summary()


EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def checkpointed(
    evaluate_fn: EvaluateFn, checkpointer: Checkpointer, done: int, num_rounds: int
) -> EvaluateFn:
    """``evaluate_fn`` with the checkpoint hook: after each round's centralized evaluation.

    With ``done`` rounds restored, Flower's round ``r`` is the run's ``done + r`` and the
    initial evaluation (round 0, already in the restored metrics) is skipped.
    """

    def hooked(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0 and done:
            return None
        run_round = server_round + done
        result = evaluate_fn(run_round, arrays)
        if run_round:
            checkpointer.save(run_round, arrays, last=run_round == num_rounds)
        return result

    return hooked
