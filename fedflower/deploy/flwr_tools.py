"""What every Flower process the deployment tooling starts shares: tools, environment, configs.

The ``flwr``, ``flower-superlink`` and ``flower-supernode`` commands are looked up beside the
running Python first (the environment fedflower is installed in), then on ``PATH``. Each
process gets its own ``FLWR_HOME``, Flower's update check and telemetry off, runtime
dependency installation disabled and the federation's tag (see
:mod:`fedflower.deploy.processes`), so the only network traffic is to and from 127.0.0.1.

:func:`write_app_dir` writes the Flower app directory ``flwr run`` submits when fedflower is
installed from a wheel (no source tree, so no ``pyproject.toml`` of its own): the app table
is derived from the installed distribution, its components from the entry points of group
:data:`APP_ENTRY_POINTS` that the source ``pyproject.toml`` declares beside its
``[tool.flwr.app.components]``.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from fedflower import keys
from fedflower.deploy.processes import TAG_VARIABLE
from fedflower.errors import FedflowerError

HOST = "127.0.0.1"
DISTRIBUTION = "fedflower"
APP_ENTRY_POINTS = "fedflower.flwr_app"
"""Entry-point group naming the Flower app's components (``serverapp``, ``clientapp``)."""
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TQDM_DISABLE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
}


class FederationError(FedflowerError, RuntimeError):
    """A process of the local federation failed to start, or a run failed or timed out."""


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def format_config(values: Mapping[str, Any]) -> str:
    """Render a node/run config as Flower's ``key=value`` string (strings quoted)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, int | float):
            parts.append(f"{key}={value}")
        else:
            text = str(value)
            if '"' in text:
                raise FederationError(f"config value {text!r} of {key!r} contains a double quote")
            parts.append(f'{key}="{text}"')
    return " ".join(parts)


def tool(name: str) -> str:
    """The path of Flower command ``name``: beside the running Python, else on ``PATH``."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    import shutil

    found = shutil.which(name)
    if not found:
        raise FederationError(f"{name} not found: install fedflower (it depends on flwr)")
    return found


def flower_env(home: Path, tag: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Flower process: quiet, its own ``FLWR_HOME``, tagged ``tag``."""
    env = dict(os.environ)
    env.update(QUIET_ENV)
    env["FLWR_HOME"] = str(home)
    env[TAG_VARIABLE] = tag
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    home.mkdir(parents=True, exist_ok=True)
    return env


def write_run_config(path: Path, overrides: Sequence[str], output_dir: Path) -> Path:
    """Write the run config file ``flwr run --run-config`` reads: overrides and output dir."""
    import tomli_w

    config = {keys.RUN_OVERRIDES: " ".join(overrides), keys.RUN_OUTPUT_DIR: str(output_dir)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return path


def app_pyproject(distribution: str = DISTRIBUTION) -> dict[str, Any]:
    """The ``pyproject.toml`` of a Flower app whose code is the installed ``distribution``.

    Name, version, description and license come from the distribution's metadata, the
    components from its :data:`APP_ENTRY_POINTS` entry points, the run config's keys (empty
    by default) from :mod:`fedflower.keys`.
    """
    try:
        meta = metadata.metadata(distribution)
    except metadata.PackageNotFoundError as exc:
        raise FederationError(f"{distribution} is not installed: pip install it") from exc
    found = metadata.entry_points(group=APP_ENTRY_POINTS)
    components = {ep.name: ep.value for ep in found if ep.dist and ep.dist.name == meta["Name"]}
    if set(components) != {"serverapp", "clientapp"}:
        raise FederationError(
            f"{distribution}'s entry points {APP_ENTRY_POINTS} name {sorted(components)}, "
            "not serverapp and clientapp: reinstall it"
        )
    license_ = (meta.get_all("License-Expression") or meta.get_all("License") or [""])[0]
    return {
        "build-system": {"requires": ["setuptools>=69"], "build-backend": "setuptools.build_meta"},
        "project": {
            "name": f"{meta['Name']}-app",
            "version": meta["Version"],
            "description": meta["Summary"],
            "license": license_,
            "dependencies": [f"{meta['Name']}=={meta['Version']}"],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": meta["Name"],
                    "components": components,
                    "config": {keys.RUN_OVERRIDES: "", keys.RUN_OUTPUT_DIR: ""},
                }
            }
        },
    }


def write_app_dir(directory: str | Path) -> Path:
    """Write a Flower app directory whose components are the installed fedflower's.

    It is what ``flwr run`` needs when fedflower was installed from a wheel rather than run
    from its source tree (whose own ``pyproject.toml`` declares the same components).
    """
    import tomli_w

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(tomli_w.dumps(app_pyproject()), encoding="utf-8")
    return path
