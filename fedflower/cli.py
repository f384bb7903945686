"""The ``fedflower`` command: a thin Hydra entry point around :func:`fedflower.experiment.run`.

Before Hydra starts, the command line is composed once so that a bad override (unknown group
option, unknown key, malformed value) ends with one line on stderr and exit code 2, not a
traceback. Errors of the run itself that the user can fix (``FedflowerError``) end the same way.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from fedflower.backend import quiet_tensorflow_import, use_backend
from fedflower.errors import ConfigError, FedflowerError
from fedflower.startup import (
    CONFIG_MODULE,
    CONFIG_NAME,
    EXIT_USAGE,
    hydra_error_line,
    set_environment_defaults,
)

set_environment_defaults()  # before TensorFlow is imported anywhere

EXIT_INTERRUPTED = 130
"""Exit status of a run stopped with Ctrl-C (128 + SIGINT, as shells report it)."""

SIM_PACKAGES = ("datasets", "flwr_datasets", "sklearn", "matplotlib", "ray")
"""Imported by simulation only: missing in a client-only install (``fedflower[client]``)."""


def fail(message: str) -> None:
    """Print one error line and exit with status 2."""
    print(f"fedflower: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _sweep_variants(overrides: Sequence[str]) -> list[list[str]]:
    """Sweep-free override lists that together use every value of every sweep once.

    The first list takes each sweep's (``seed=0,1,2``) first value; each further list changes
    one sweep to one of its other values, so ``strategy=fedavg,nope`` fails before any job runs.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    base: list[str] = []
    others: list[tuple[int, str]] = []
    for i, (text, override) in enumerate(zip(overrides, parsed, strict=True)):
        if override.is_sweep_override():
            key = override.get_key_element()
            values = list(dict.fromkeys(f"{key}={v}" for v in override.sweep_string_iterator()))
            base.append(values[0])
            others.extend((i, value) for value in values[1:])
        else:
            base.append(text)
    return [base] + [[*base[:i], value, *base[i + 1 :]] for i, value in others]


def _parser() -> argparse.ArgumentParser:
    """Hydra's command-line options (``hydra --help``), read to know what Hydra will compose."""
    parser = argparse.ArgumentParser(add_help=False)
    for flags in (
        ("--help", "-h"),
        ("--hydra-help",),
        ("--version",),
        ("--resolve",),
        ("--run", "-r"),
        ("--multirun", "-m"),
        ("--shell-completion", "-sc"),
    ):
        parser.add_argument(*flags, action="store_true")
    for flags in (
        ("--cfg", "-c"),
        ("--package", "-p"),
        ("--config-path", "-cp"),
        ("--config-name", "-cn"),
        ("--config-dir", "-cd"),
        ("--experimental-rerun",),
    ):
        parser.add_argument(*flags)
    parser.add_argument("--info", "-i", nargs="?", const="all")
    parser.add_argument("overrides", nargs="*")
    return parser


def _inspects_only(args: argparse.Namespace) -> bool:
    """Whether Hydra only prints something (help, config, info) and runs nothing."""
    return bool(
        args.help
        or args.hydra_help
        or args.version
        or args.cfg
        or args.info
        or args.shell_completion
    )


def _with_config_dir(overrides: list[str], config_dir: str | None) -> list[str]:
    """``overrides`` with ``--config-dir`` added to ``hydra.searchpath`` (Hydra's compose API
    has no ``--config-dir``; a user's own ``hydra.searchpath`` override is kept).
    """
    if config_dir is None:
        return overrides
    folder = Path(config_dir).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"--config-dir {config_dir!r} is not a directory")
    entries = [f"file://{folder}"]
    kept = []
    for text, override in zip(
        overrides, OverridesParser.create().parse_overrides(overrides), strict=True
    ):
        if override.key_or_group == "hydra.searchpath":
            entries += [str(v) for v in override.value()]  # type: ignore[union-attr]
        else:
            kept.append(text)
    return [*kept, "hydra.searchpath=[" + ",".join(f"'{e}'" for e in entries) + "]"]


def precheck(argv: Sequence[str]) -> list[DictConfig]:
    """Compose the config the command line asks for; exit with one line if that fails.

    The config is composed with Hydra's compose API as ``fedflower`` will compose it: with
    ``--config-dir`` and any ``hydra.searchpath`` override, so a user's own config folder is
    found. Then the config's rules run (:func:`fedflower.server.rules.validate`). Returns the
    composed configs (one per job of a sweep; none when the command only inspects).
    """
    from hydra import compose, initialize_config_module

    args = _parser().parse_args(list(argv))
    if _inspects_only(args):
        return []
    try:
        variants = _sweep_variants(args.overrides)
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            configs = [
                compose(
                    config_name=args.config_name or CONFIG_NAME,
                    overrides=_with_config_dir(overrides, args.config_dir),
                )
                for overrides in variants
            ]
    except FedflowerError as exc:
        fail(str(exc))
    except Exception as exc:  # Hydra and OmegaConf raise many types; all mean a bad override
        fail(hydra_error_line(exc))
    from fedflower.server.rules import validate

    for cfg in configs:
        try:
            validate(cfg)
            check_latency(cfg.get("latency"))
        except FedflowerError as exc:
            fail(str(exc))
    return configs


def choose_backend(configs: Sequence[DictConfig]) -> str:
    """Set the one Keras backend of this process's jobs (``backend``) before Keras is imported."""
    backends = sorted({str(cfg.backend) for cfg in configs}) or ["tensorflow"]
    if len(backends) > 1:
        fail(
            f"backend must be one value per command (a process runs one Keras backend), got "
            f"{','.join(backends)}: run one command per backend"
        )
    try:
        use_backend(backends[0])
    except FedflowerError as exc:
        fail(str(exc))
    return backends[0]


def check_latency(latency: Any) -> None:
    """Build the latency model once, so that its bad parameters fail before any output.

    Imports Flower (not TensorFlow): about a second, only when a latency model is set.
    """
    if latency is None or "_target_" not in latency:
        return
    from fedflower.engine.clock import build_latency

    build_latency(latency)


def list_strategies() -> None:
    """Print the installed strategy plugins."""
    from fedflower.server import registry

    infos = registry.available()
    width = max((len(i.name) for i in infos), default=4)
    for info in infos:
        print(f"{info.name:<{width}}  {info.target}\n{'':<{width}}  {info.description}")


HYDRA_FILES = frozenset({".hydra", "cli.log", "fedflower.log"})
"""What Hydra writes into a run directory before the run itself writes anything."""


def run_dir(cfg: DictConfig) -> Path:
    """The directory the run writes to: the resumed run's, or Hydra's new one."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("resume"):
        return Path(cfg.resume)
    return Path(HydraConfig.get().runtime.output_dir)


def discard_if_empty(out: Path) -> None:
    """Remove a run directory that holds only Hydra's files (the run failed before writing).

    The folders above it inside the working directory (``outputs/<date>``) go too when it
    leaves them empty. A resumed run's directory and a directory holding anything else are kept.
    """
    import logging
    import shutil

    if not out.is_dir() or {p.name for p in out.iterdir()} - HYDRA_FILES:
        return
    logging.shutdown()  # close cli.log before it is removed
    shutil.rmtree(out, ignore_errors=True)
    here = Path.cwd().resolve()
    for parent in out.resolve().parents:
        if parent == here or here not in parent.parents:
            break
        with suppress(OSError):
            parent.rmdir()  # only when empty


def interrupted(out: Path, argv: Sequence[str]) -> None:
    """Ctrl-C: one line naming the checkpoint and the command that continues the run."""
    from fedflower.server.checkpoint import FILENAME

    checkpoint = out / FILENAME
    if not checkpoint.is_file():
        discard_if_empty(out)
        print(
            "fedflower: interrupted before the first checkpoint; nothing to resume", file=sys.stderr
        )
        raise SystemExit(EXIT_INTERRUPTED)
    given = [a for a in argv if not a.startswith("resume=")]
    command = " ".join(
        ["fedflower", *map(shlex.quote, given), f"resume={shlex.quote(str(out.resolve()))}"]
    )
    print(
        f"fedflower: interrupted; checkpoint {checkpoint.resolve()}; continue with: {command}",
        file=sys.stderr,
    )
    raise SystemExit(EXIT_INTERRUPTED)


@hydra.main(version_base="1.3", config_path="pkg://fedflower.conf", config_name=CONFIG_NAME)
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        from fedflower.experiment import run
    except ModuleNotFoundError as exc:  # a client-only install (`fedflower[client]`)
        if (exc.name or "").split(".")[0] not in SIM_PACKAGES:
            raise
        fail(f"the fedflower command needs {exc.name!r}: pip install 'fedflower[sim]'")
        return None

    out = run_dir(cfg)
    try:
        results = run(cfg)
    except FedflowerError as exc:
        discard_if_empty(out)
        fail(str(exc))
        return None
    except KeyboardInterrupt:
        interrupted(out, sys.argv[1:])
        return None
    accuracy = results["final"]["accuracy"]
    return None if accuracy is None else float(accuracy)


def main() -> None:
    """Entry point of the ``fedflower`` console script."""
    argv = sys.argv[1:]
    if argv[:1] == ["export"]:  # `fedflower export model.keras --to tflite` (not a Hydra run)
        from fedflower.export import main as export_main

        raise SystemExit(export_main(argv[1:]))
    if argv[:1] == ["predict"]:  # `fedflower predict RUN_DIR data.csv` (not a Hydra run)
        quiet_tensorflow_import()
        from fedflower.predict import main as predict_main

        raise SystemExit(predict_main(argv[1:]))
    if "--list-strategies" in argv:
        quiet_tensorflow_import()
        list_strategies()
        return
    configs = precheck(argv)  # bad overrides fail here, before TensorFlow's seconds-long import
    if configs and choose_backend(configs) == "tensorflow":
        quiet_tensorflow_import()
    _hydra_main()


if __name__ == "__main__":
    main()
