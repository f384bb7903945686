"""The one-command local demos: a secure multi-process federation, and ``flwr run .`` simulated.

:func:`demo` writes each hospital's patient records of the experiment's dataset to its own
file (``site-<i>.csv``: the data a real site would hold), starts a SuperLink and one
SuperNode per site on 127.0.0.1 with TLS and node authentication
(:class:`~fedflower.deploy.federation.LocalFederation`), runs the experiment through
``flwr run`` with the per-round lines streamed, and stops every process it started.

:func:`simulate` runs the same app with ``flwr run <app>`` against Flower's local simulation
SuperLink (which ``flwr`` starts in the background) and stops that SuperLink afterwards.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from fedflower import keys
from fedflower.deploy.federation import LocalFederation, RunHandle
from fedflower.deploy.flwr_tools import flower_env, free_port, tool, write_run_config
from fedflower.deploy.processes import terminate_tree
from fedflower.errors import ConfigError

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
        if fmt == "csv":
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
    """
    if num_nodes < 1:
        raise ConfigError(f"the demo needs at least 1 SuperNode, got {num_nodes}")
    echo = sys.stdout if echo is None else echo
    root = Path(workdir) / time.strftime("%Y-%m-%d_%H-%M-%S")
    overrides = with_nodes(overrides, num_nodes)
    configs = node_configs(overrides, num_nodes, root, data)
    mode = "TLS + SuperNode authentication" if secure else "INSECURE (no TLS, no node auth)"
    echo.write(f"starting a SuperLink and {num_nodes} SuperNodes on 127.0.0.1 ({mode})\n")
    echo.flush()
    t0 = time.perf_counter()
    with LocalFederation(root, configs, secure=secure) as fed:
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


def simulate(
    app_dir: str | Path,
    overrides: Sequence[str] = (),
    num_supernodes: int = 3,
    workdir: str | Path = "outputs/flwr-simulation",
    timeout: float = 1800.0,
    echo: IO[str] | None = None,
) -> dict[str, Any]:
    """``flwr run <app_dir>`` in Flower's local simulation, then stop its background SuperLink.

    ``flwr`` 1.42 starts a local SuperLink (simulation runtime) for the ``:local:``
    connection and leaves it running; here it gets its own ``FLWR_HOME`` and free ports,
    runtime dependency installation is disabled, and it is stopped when the run ends.
    """
    root = (Path(workdir) / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out = root / "run"
    overrides = with_nodes(overrides, num_supernodes)
    run_config = write_run_config(root / "run-config.toml", overrides, out)
    tag = uuid.uuid4().hex
    ports = {
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
    }
    env = flower_env(root / "flwr-home", tag, ports)
    args = [
        tool("flwr"),
        "run",
        str(Path(app_dir).resolve()),
        "--run-config",
        str(run_config),
        "--federation-config",
        f"num-supernodes={num_supernodes}",
        "--stream",
    ]
    handle = RunHandle.start(args, root, env, out, sys.stdout if echo is None else echo)
    try:
        results, _ = handle.wait(timeout)
    finally:
        terminate_tree([], tag=tag)  # the local SuperLink flwr left running, and its children
    return results
