"""The one-command local demos: a secure multi-process federation, and ``flwr run .`` simulated.

:func:`demo` writes each hospital's patient records of the experiment's dataset to its own
file (``site-<i>.csv``: the data a real site would hold), starts a SuperLink and one
SuperNode per site on 127.0.0.1 with TLS and node authentication
(:class:`~fedflower.deploy.federation.LocalFederation`), runs the experiment through
``flwr run`` with the per-round lines streamed, and stops every process it started.

:func:`simulate` runs the same app with ``flwr run <app>`` against Flower's local simulation
SuperLink (started here, as ``flwr`` would start it but with time to come up on a loaded
machine) and stops that SuperLink afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from fedflower import keys
from fedflower.deploy.federation import LocalFederation, RunHandle
from fedflower.deploy.flwr_tools import (
    HOST,
    FederationError,
    flower_env,
    free_port,
    tool,
    write_run_config,
)
from fedflower.deploy.processes import terminate_tree
from fedflower.errors import ConfigError
from fedflower.startup import RAY_NOTICES_ENV

log = logging.getLogger(__name__)

DATA_FORMATS = ("csv", "npz", "partition")


def with_nodes(overrides: Sequence[str], num_nodes: int) -> list[str]:
    """The overrides with ``num_clients`` set to the number of SuperNodes."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith("num_clients=")]
    return [*kept, f"num_clients={num_nodes}"]


def write_site_files(
    overrides: Sequence[str], num_nodes: int, directory: str | Path, fmt: str = "csv"
) -> list[Path]:
    """Write each client's share of the experiment's dataset to ``site-<i>.<fmt>``.

    The shares are the simulation's partitions (``cfg.partition`` over ``cfg.dataset`` with
    ``num_clients = num_nodes``); the central test set stays with the server.
    """
    import numpy as np

    from fedflower.data.tables import write_rows
    from fedflower.deploy.config import compose_config
    from fedflower.deploy.local_data import write_csv
    from fedflower.experiment import load_data

    if fmt not in ("csv", "npz"):
        raise ConfigError(f"site file format {fmt!r} is unknown; use csv or npz")
    cfg = compose_config(with_nodes(overrides, num_nodes))
    source, fed = load_data(cfg)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_nodes):
        idx = np.sort(fed.indices(i))
        x, y = source.x[idx], source.y[idx]
        path = out / f"site-{i + 1}.{fmt}"
        if fmt == "csv" and source.columns is not None:  # a table: its own columns, raw
            write_rows(path, source.columns, x, y)
        elif fmt == "csv":
            write_csv(path, x.reshape(len(x), -1), y)
        else:
            np.savez(path, x=x, y=y)
        paths.append(path)
    return paths


def node_configs(
    overrides: Sequence[str], num_nodes: int, workdir: Path, data: str
) -> list[dict[str, Any]]:
    """One node config per SuperNode: its own data file, or (``partition``) a partition id."""
    if data not in DATA_FORMATS:
        raise ConfigError(f"data={data!r} is unknown; use one of {', '.join(DATA_FORMATS)}")
    if data == "partition":
        return [{keys.PARTITION_ID: i, keys.NUM_PARTITIONS: num_nodes} for i in range(num_nodes)]
    files = write_site_files(overrides, num_nodes, workdir / "data", data)
    return [{keys.DATA_PATH: str(p.resolve())} for p in files]


def demo(
    num_nodes: int = 3,
    overrides: Sequence[str] = (),
    workdir: str | Path = "outputs/deploy-demo",
    data: str = "csv",
    secure: bool = True,
    timeout: float = 1800.0,
    echo: IO[str] | None = None,
    warm_tasks: bool = True,
    backends: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the experiment on a local federation of real processes and return its results.

    Parameters
    ----------
    num_nodes : int
        SuperNodes (one per hospital; ``num_clients`` is set to this).
    overrides : sequence of str
        Hydra overrides of the experiment, as on the ``fedflower`` command line.
    workdir : path
        Credentials, data files, logs and the run's outputs go here (a fresh timestamped
        subdirectory per demo).
    data : {"csv", "npz", "partition"}
        Each node's data: its own file, or a partition id of the bundled dataset.
    secure : bool
        TLS and SuperNode authentication (default).
    timeout : float
        Seconds after which the run is given up.
    echo : text stream, optional
        Where the streamed run output goes (default: standard output).
    warm_tasks : bool
        Warm SuperNodes (:mod:`fedflower.deploy.warm`, default): a run's ClientApp tasks in
        one worker process that keeps the run's data and model, short pauses between pulls;
        or Flower's own, a new ``flwr-clientapp`` per task (``False``).
    backends : sequence of str
        Keras backends cycled over the SuperNodes (e.g. ``tensorflow, jax, torch``: one
        federation of three backends); empty: every node on the environment's backend.
    """
    from fedflower.engine.pool import check_backends

    if num_nodes < 1:
        raise ConfigError(f"the demo needs at least 1 SuperNode, got {num_nodes}")
    backends = check_backends(backends, key="--backends", installed=True)
    echo = sys.stdout if echo is None else echo
    root = Path(workdir) / time.strftime("%Y-%m-%d_%H-%M-%S")
    overrides = with_nodes(overrides, num_nodes)
    configs = node_configs(overrides, num_nodes, root, data)
    mode = "TLS + SuperNode authentication" if secure else "INSECURE (no TLS, no node auth)"
    echo.write(f"starting a SuperLink and {num_nodes} SuperNodes on 127.0.0.1 ({mode})\n")
    if backends:
        each = [f"{i + 1}: {backends[i % len(backends)]}" for i in range(num_nodes)]
        echo.write(f"Keras backends of the SuperNodes: {', '.join(each)}\n")
    echo.flush()
    t0 = time.perf_counter()
    with LocalFederation(
        root, configs, secure=secure, warm_tasks=warm_tasks, backends=backends
    ) as fed:
        echo.write(
            f"{len(fed.online_nodes())} SuperNodes online after {time.perf_counter() - t0:.1f} s;"
            f" flwr run with overrides: {' '.join(overrides)}\n"
        )
        echo.flush()
        results, _ = fed.run(overrides, output_dir=root / "run", timeout=timeout, echo=echo)
    echo.write(
        f"stopped all processes; demo took {time.perf_counter() - t0:.1f} s; "
        f"work directory {root}\n"
    )
    echo.flush()
    return results


SIMULATION_SUPERLINK_TIMEOUT = 180.0
"""Seconds the local simulation SuperLink may take to come up (``flwr run`` itself gives it
15 s, too little on a loaded machine)."""


class SuperLinkNotStarted(FederationError):
    """The local simulation SuperLink did not come up in time (no run was submitted)."""


def simulation_env(home: Path, tag: str) -> dict[str, str]:
    """The environment of ``flwr run`` and its local SuperLink: free ports, quiet logs.

    Flower logs only errors (unless ``FLWR_LOG_LEVEL`` is set): its own notices (the changed
    default federation size, how to resize it) are not about the user's run; Ray's notice of
    :data:`~fedflower.startup.RAY_NOTICES_ENV` is hidden in Flower's simulation process.
    """
    warnings_ = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), RAY_NOTICES_ENV) if w)
    extra = {
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "FLWR_LOG_LEVEL": os.environ.get("FLWR_LOG_LEVEL", "ERROR"),
        "PYTHONWARNINGS": warnings_,
    }
    env = flower_env(home, tag, extra)
    # the connection flwr would otherwise create, announcing it ("configuration not found")
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n',
        encoding="utf-8",
    )
    return env


def start_simulation_superlink(
    env: dict[str, str], log_path: Path, timeout: float = SIMULATION_SUPERLINK_TIMEOUT
) -> None:
    """Start the local simulation SuperLink ``flwr run`` would start, and wait until it serves.

    The command is the one of ``flwr.cli.local_superlink`` (flwr 1.42): a SuperLink in
    simulation mode on the ports of ``env``, with its state in ``$FLWR_HOME/local-superlink``.
    ``flwr run`` then finds it running and submits to it. Raises :class:`SuperLinkNotStarted`
    when it exits or does not answer its health check within ``timeout`` seconds.
    """
    state = Path(env["FLWR_HOME"]) / "local-superlink"
    state.mkdir(parents=True, exist_ok=True)
    port = env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
    args = [tool("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess"]
    args += ["--control-api-address", f"{HOST}:{env['FLWR_LOCAL_CONTROL_API_PORT']}"]
    args += ["--host", HOST, "--port", port, "--database", str(state / "state.db")]
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            args, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        health = f"http://{HOST}:{port}/health"
        with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=1) as answer:
            if answer.status == 200:
                return
        time.sleep(0.5)
    state_ = f"exited with code {proc.returncode}" if proc.poll() is not None else "no answer"
    raise SuperLinkNotStarted(
        f"the local simulation SuperLink did not come up within {timeout:.0f} s ({state_}); "
        f"its log: {log_path}"
    )


def simulate(
    app_dir: str | Path,
    overrides: Sequence[str] = (),
    num_supernodes: int = 3,
    workdir: str | Path = "outputs/flwr-simulation",
    timeout: float = 1800.0,
    echo: IO[str] | None = None,
    startup_timeout: float = SIMULATION_SUPERLINK_TIMEOUT,
) -> dict[str, Any]:
    """``flwr run <app_dir>`` in Flower's local simulation, then stop its SuperLink.

    The local simulation SuperLink (the one ``flwr`` 1.42 starts for its ``:local:``
    connection and leaves running) is started here first, with its own ``FLWR_HOME``, free
    ports and up to ``startup_timeout`` seconds to come up; runtime dependency installation
    is disabled; Ray workers' output stays in Ray's log files (``log_to_driver`` off, as
    ``simulation=ray`` does); everything is stopped when the run ends.
    """
    root = (Path(workdir) / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out = root / "run"
    overrides = with_nodes(overrides, num_supernodes)
    run_config = write_run_config(root / "run-config.toml", overrides, out)
    tag = uuid.uuid4().hex
    env = simulation_env(root / "flwr-home", tag)
    federation = f"num-supernodes={num_supernodes} init-args-log-to-driver=false"
    args = [tool("flwr"), "run", str(Path(app_dir).resolve()), "--run-config", str(run_config)]
    args += ["--federation-config", federation, "--stream"]
    try:
        start_simulation_superlink(env, root / "superlink.log", startup_timeout)
        handle = RunHandle.start(args, root, env, out, sys.stdout if echo is None else echo)
        results, _ = handle.wait(timeout)
    finally:
        terminate_tree([], tag=tag)  # the SuperLink, its simulation process and Ray workers
    return results
