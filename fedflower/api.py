"""fedflower from Python: :func:`run` and :func:`sweep` on the same Hydra configs as the CLI.

``fedflower.run("strategy=fedprox", "num_rounds=5")`` composes ``conf/config.yaml`` with
Hydra's compose API and the command line's overrides, runs the experiment in this process and
returns a :class:`Result`. Keyword arguments are overrides too (``num_rounds=5``), and
``model=`` / ``data=`` also take objects: a ``keras.Model``, a function
``(input_shape, num_classes) -> keras.Model``, or :func:`fedflower.data.from_arrays`' dataset.
Errors are the CLI's one-line :class:`~fedflower.errors.FedflowerError` subclasses, raised.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedflower.backend import quiet_tensorflow_import, use_backend
from fedflower.errors import ConfigError, FedflowerError
from fedflower.startup import (
    CONFIG_MODULE,
    CONFIG_NAME,
    hydra_error_line,
    set_environment_defaults,
)

if TYPE_CHECKING:
    import keras
    import pandas as pd
    from matplotlib.axes import Axes
    from omegaconf import DictConfig

    from fedflower.outputs.rundir import RunDir

OUTPUTS = Path("outputs")
"""Where runs land unless ``output_dir`` is given (as the CLI's ``outputs/<date>/<time>``)."""
MULTIRUN = Path("multirun")
"""Where sweeps land unless ``output_dir`` is given (as the CLI's ``multirun/<date>/<time>``)."""
POOLED = ("seed",)
"""Override keys left out of a sweep run's directory name (its seeds share one directory)."""


def _value(value: Any) -> str:
    """A Python value in Hydra's override grammar (``True`` -> ``true``, lists as ``[a,b]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value)


def _flat(key: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``client={"local_epochs": 2}`` as ``("client.local_epochs", 2)``."""
    if isinstance(value, Mapping):
        for sub, inner in value.items():
            yield from _flat(f"{key}.{sub}", inner)
    else:
        yield key, value


def _overrides(overrides: Sequence[str], options: Mapping[str, Any], sweep: bool) -> list[str]:
    """The command line's overrides plus ``options`` (lists sweep their values in a sweep)."""
    out = [str(o) for o in overrides]
    for name, given in options.items():
        for key, value in _flat(name, given):
            if sweep and isinstance(value, list | tuple):
                out.append(f"{key}=" + ",".join(_value(v) for v in value))
            else:
                out.append(f"{key}={_value(value)}")
    return out


@contextmanager
def _holding(model: Any, data: Any, options: dict[str, Any]) -> Iterator[list[str]]:
    """Overrides for in-memory ``model`` and ``data``, kept in :mod:`fedflower.memory` meanwhile.

    A string names a config option instead (``model="cnn"``, ``data="digits"``). Data with
    client ids set ``num_clients`` to their number unless ``options`` has it.
    """
    from fedflower import memory

    out: list[str] = []
    keys: list[str] = []
    for group, obj in (("model", model), ("dataset", data)):
        if obj is None or isinstance(obj, str):
            out += [] if obj is None else [f"{group}={obj}"]
            continue
        if group == "model" and not callable(obj):
            raise ConfigError(
                "model must be a keras.Model, a function (input_shape, num_classes) -> "
                f"keras.Model or a config name, got {type(obj).__name__}"
            )
        keys.append(memory.put(obj, group))
        out += [f"{group}=memory", f"{group}.key={keys[-1]}"]
        groups = getattr(obj, "groups", None)
        if group == "dataset" and groups is not None and "num_clients" not in options:
            options["num_clients"] = len(set(groups.tolist()))  # one client per site
    try:
        yield out
    finally:
        for key in keys:
            memory.release(key)


@contextmanager
def _hydra() -> Iterator[None]:
    """Hydra initialized on fedflower's config package (restored afterwards)."""
    from hydra import initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        yield


def compose(*overrides: str) -> DictConfig:
    """The config ``fedflower <overrides>`` runs with (Hydra's compose API).

    Raises
    ------
    ConfigError
        An unknown group option or key, or a malformed value (the CLI's one line).
    """
    from hydra import compose as hydra_compose

    try:
        with _hydra():
            return hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except FedflowerError:
        raise
    except Exception as exc:  # Hydra and OmegaConf raise many types; all mean a bad override
        raise ConfigError(hydra_error_line(exc)) from None


def _new_run_dir(root: Path) -> Path:
    """``root/<date>/<time>`` as the CLI names runs (``-1``, ``-2``... within one second)."""
    stem = root / _dt.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    path, n = stem, 0
    while path.exists():
        n += 1
        path = stem.with_name(f"{stem.name}-{n}")
    return path


def _run_one(overrides: list[str], out: Path) -> Result:
    """Compose, record the config as Hydra does (``.hydra/``) and run in ``out``."""
    from omegaconf import OmegaConf

    cfg = compose(*overrides)  # a bad override fails here, before TensorFlow is imported
    set_environment_defaults()
    use_backend(cfg.backend)  # before Keras is imported (or the one Keras already runs on)
    if cfg.backend == "tensorflow":
        quiet_tensorflow_import()
    from fedflower.experiment import run as run_experiment
    from fedflower.outputs.rundir import OVERRIDES_FILE

    record = out / OVERRIDES_FILE  # what Hydra records of a run, as the CLI's runs have it
    record.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, record.with_name("config.yaml"))
    OmegaConf.save(OmegaConf.create(overrides), record)
    run_experiment(cfg, out)
    return Result(out)


def run(
    *overrides: str,
    model: Any = None,
    data: Any = None,
    output_dir: str | Path | None = None,
    **options: Any,
) -> Result:
    """Run one experiment, as ``fedflower <overrides>`` does, and return its :class:`Result`.

    Parameters
    ----------
    *overrides : str
        Hydra overrides as on the command line: ``"strategy=fedprox"``, ``"num_rounds=5"``.
    model : keras.Model, callable or str, optional
        The model: a Keras model (its architecture and current weights start the federation;
        the object is not changed), a function ``build(input_shape, num_classes)`` returning an
        uncompiled ``keras.Model``, or a ``model`` config option (``"cnn"``).
    data : TabularSource or str, optional
        The data: :func:`fedflower.data.from_arrays`' result (with ``clients``, one client per
        distinct id, and ``num_clients`` set to their number) or a ``dataset`` option.
    output_dir : path, optional
        The run directory (default ``outputs/<date>/<time>``, as the CLI).
    **options
        Further overrides as keywords: ``num_rounds=5``, ``client={"local_epochs": 2}``.

    Returns
    -------
    Result
        The run's metrics, model and directory.

    Raises
    ------
    FedflowerError
        Any input the user can fix (:class:`~fedflower.errors.ConfigError`,
        :class:`~fedflower.errors.DataError`, ...), with the CLI's one-line message.

    Examples
    --------
    >>> result = fedflower.run("strategy=fedprox", num_rounds=5)  # doctest: +SKIP
    >>> result.rounds[["round", "accuracy"]]  # doctest: +SKIP
    """
    options = dict(options)
    out = Path(output_dir) if output_dir is not None else _new_run_dir(OUTPUTS)
    with _holding(model, data, options) as held:
        return _run_one([*_overrides(overrides, options, sweep=False), *held], out)


def _combinations(overrides: list[str]) -> list[list[str]]:
    """Every combination of the sweep's values (Hydra's basic sweeper, in its order)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # a malformed override
        raise ConfigError(hydra_error_line(exc)) from None
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(combo) for batch in batches for combo in batch]


def _subdir(combo: list[str]) -> str:
    """Hydra's multirun subdirectory: ``<overrides but seed>/seed=<seed>``."""
    kept = sorted(o for o in combo if o.split("=")[0].lstrip("+~") not in POOLED)
    seed = next((o.split("=", 1)[1] for o in combo if o.split("=")[0] == "seed"), "0")
    return f"{','.join(kept).replace('/', '_') or 'base'}/seed={seed}"


def sweep(
    *overrides: str,
    model: Any = None,
    data: Any = None,
    output_dir: str | Path | None = None,
    target: float | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Run every combination of the sweep's values and return ``fedflower-compare``'s table.

    ``fedflower.sweep("strategy=fedavg,fedprox", seed=[0, 1])`` runs what
    ``fedflower -m strategy=fedavg,fedprox seed=0,1`` runs (here one after the other, in this
    process), into ``multirun/<date>/<time>/<overrides>/seed=<n>``, then compares them.

    Parameters
    ----------
    *overrides : str
        Hydra overrides; ``a,b`` sweeps ``a`` and ``b``.
    model, data
        As in :func:`run` (the same objects in every run).
    output_dir : path, optional
        The sweep's directory (default ``multirun/<date>/<time>``).
    target : float, optional
        Test accuracy for "rounds to target" (default: the lowest mean final accuracy).
    **options
        Overrides as keywords; a list sweeps its values (``seed=[0, 1, 2]``).

    Returns
    -------
    pandas.DataFrame
        One row per configuration (seeds pooled): final accuracy and loss (mean, standard
        deviation), rounds and seconds to ``target``, bytes per run; ``attrs["run_dir"]`` is
        the sweep's directory, where ``comparison.csv`` and ``comparison.png`` are written.
    """
    import pandas as pd

    from fedflower.compare import compare

    options = dict(options)
    root = Path(output_dir) if output_dir is not None else _new_run_dir(MULTIRUN)
    with _holding(model, data, options) as held:
        for combo in _combinations(_overrides(overrides, options, sweep=True)):
            _run_one([*combo, *held], root / _subdir(combo))
    table = pd.DataFrame(compare(root, target))
    table.attrs["run_dir"] = root
    return table


@dataclass(frozen=True)
class Result:
    """A finished run, read from its directory (through :class:`~fedflower.outputs.rundir.RunDir`).

    Parameters
    ----------
    run_dir : Path
        The run directory (``metrics.jsonl``, ``results.json``, ``model.keras``, ...).
    """

    run_dir: Path

    @cached_property
    def _dir(self) -> RunDir:
        from fedflower.outputs.rundir import RunDir

        return RunDir(self.run_dir)

    @cached_property
    def results(self) -> dict[str, Any]:
        """The content of ``results.json``: config, initial and final metrics, totals."""
        return self._dir.results()

    @property
    def rounds(self) -> pd.DataFrame:
        """One row per round of ``metrics.jsonl`` (``round``, ``loss``, ``accuracy``, ...)."""
        return self._dir.metrics_frame()

    @property
    def final(self) -> dict[str, Any]:
        """The final central test metrics (``loss``, ``accuracy``)."""
        return dict(self.results["final"])

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config the run used."""
        return dict(self.results["config"])

    @cached_property
    def model(self) -> keras.Model:
        """The final global model (``model.keras``; ``output.save_model=false`` keeps none)."""
        import keras

        path = self._dir.model_path
        if not path.is_file():
            raise ConfigError(f"output.save_model must be true to keep the model, no {path}")
        return keras.models.load_model(path)

    def plot(self, metric: str = "accuracy", ax: Axes | None = None) -> Axes:
        """Central and federated ``metric`` (``accuracy`` or ``loss``) per round."""
        rounds = self.rounds
        columns = [c for c in (metric, f"fed_{metric}") if c in rounds]
        if not columns:
            raise ConfigError(f"metric must be a column of metrics.jsonl, got {metric!r}")
        axes: Axes = rounds.plot(x="round", y=columns, ax=ax, marker="o", grid=True)
        axes.set_ylabel(metric)
        return axes

    def __repr__(self) -> str:
        final = self.final
        return (
            f"Result(run_dir={str(self.run_dir)!r}, rounds={len(self.rounds)}, "
            f"accuracy={final.get('accuracy')}, loss={final.get('loss')})"
        )
