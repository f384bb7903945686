"""Checkpoint and resume of a run.

Flower 1.42's ``Strategy.start`` has no start round and keeps no state, so synchronous
strategies run :func:`run_rounds` instead: the same calls in the same order as
``Strategy.start``, from any first round, with a hook after every round. The hook writes
``checkpoint.npz`` in the run directory every ``checkpoint.every`` rounds, atomically (a temp
file, fsync, then ``os.replace``): the round, the global model, the Python and NumPy global
random states, and the ``state_dict()`` of every object that has one, found by name:

* ``strategy`` and each strategy it wraps (``.strategy`` attributes, e.g. Flower's DP
  wrappers and their accountants): server-optimizer moments, counters;
* ``recorder``: the metrics rows written so far;
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

import json
import logging
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

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
    return value


def _decode(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.array(arrays[value["__array__"]])
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


def stateful(strategy: Strategy, **others: Any) -> dict[str, Any]:
    """Objects whose ``state_dict()`` a checkpoint holds, by name.

    The strategy and every strategy it wraps (``.strategy``), then ``others`` (recorder,
    clock, ...); objects without ``state_dict``/``load_state_dict`` are left out.
    """
    found: dict[str, Any] = {}
    node: Any = strategy
    depth = 0
    while node is not None and depth < 8:
        found[f"strategy{depth}"] = node
        node, depth = getattr(node, "strategy", None), depth + 1
    found.update(others)
    methods = ("state_dict", "load_state_dict")
    return {k: v for k, v in found.items() if all(callable(getattr(v, m, None)) for m in methods)}


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
        Named objects with ``state_dict()``/``load_state_dict()`` (see :func:`stateful`).
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

    def restore(self) -> tuple[int, ArrayRecord]:
        """Load the checkpoint into the objects; return its round and global model."""
        state = check_resumable(self.path.parent, self.config)
        for key, obj in self.objects.items():
            if key in state["objects"]:
                obj.load_state_dict(state["objects"][key])
        set_rng_state(state["rng"])
        names, model = state["names"], state["model"]
        return int(state["round"]), ArrayRecord(
            {k: Array(a) for k, a in zip(names, model, strict=True)}
        )


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    *,
    first_round: int,
    num_rounds: int,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
    after_round: Callable[[int, ArrayRecord], None],
    timeout: float = 3600.0,
) -> Result:
    """Flower's ``Strategy.start`` loop from ``first_round`` (calls in the same order).

    The initial centralized evaluation (round 0) runs only when starting at round 1.
    ``after_round(round, global model)`` runs after each round's centralized evaluation.
    """
    strategy.summary()
    result = Result(arrays=arrays)
    if first_round == 1:
        evaluate_fn(0, arrays)
    for server_round in range(first_round, num_rounds + 1):
        replies = grid.send_and_receive(
            messages=strategy.configure_train(server_round, arrays, train_config, grid),
            timeout=timeout,
        )
        new, train_metrics = strategy.aggregate_train(server_round, replies)
        if new is not None:
            result.arrays = arrays = new
        if train_metrics is not None:
            result.train_metrics_clientapp[server_round] = train_metrics
        replies = grid.send_and_receive(
            messages=strategy.configure_evaluate(server_round, arrays, evaluate_config, grid),
            timeout=timeout,
        )
        evaluate_metrics = strategy.aggregate_evaluate(server_round, replies)
        if evaluate_metrics is not None:
            result.evaluate_metrics_clientapp[server_round] = evaluate_metrics
        res = evaluate_fn(server_round, arrays)
        if res is not None:
            result.evaluate_metrics_serverapp[server_round] = res
        after_round(server_round, arrays)
    return result
