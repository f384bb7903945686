"""``simulation=ray simulation.address=...`` joins a two-node Ray cluster started on this machine.

Both nodes are started with ``ray start`` in a temporary directory of their own and stopped
by process id at the end (never ``ray stop``, which stops every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from omegaconf import DictConfig

from fedflower.engine.ray_cluster import cluster_backend_config
from fedflower.errors import ConfigError
from fedflower.experiment import run

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_cluster(marks: tuple[str, ...]) -> None:
    """Terminate the processes whose command line names ``marks``, and their children."""
    own = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(m in " ".join(p.info["cmdline"] or []) for m in marks)
    ]
    procs = set(own)
    for p in own:
        with contextlib.suppress(psutil.Error):
            procs.update(p.children(recursive=True))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(list(procs), timeout=15)
    for p in alive:
        p.kill()


@pytest.fixture
def two_node_cluster() -> Iterator[str]:
    """A head node and a second node, one CPU each; yields the head's address."""
    # a short directory: Ray's socket paths under it must fit in 107 bytes
    port, temp = free_port(), tempfile.mkdtemp(prefix="ray-")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    head = [
        "--head",
        f"--port={port}",
        f"--temp-dir={temp}",
        "--include-dashboard=false",
        f"--ray-client-server-port={free_port()}",
    ]
    second = [f"--address=127.0.0.1:{port}", f"--dashboard-agent-listen-port={free_port()}"]
    try:
        for extra in (head, second):
            subprocess.run([str(RAY), "start", *extra, *common], check=True, timeout=600)
        yield f"127.0.0.1:{port}"
    finally:
        stop_cluster((temp, f"127.0.0.1:{port}"))
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_run_joins_an_existing_two_node_cluster(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, two_node_cluster: str
) -> None:
    import ray

    cfg = tiny_cfg("simulation=ray", f"simulation.address={two_node_cluster}", "output.plots=false")
    results = run(cfg, tmp_path / "run")
    assert results["final"]["accuracy"] > 0.6
    ray.init(address=two_node_cluster)
    try:
        assert sum(node["Alive"] for node in ray.nodes()) == 2  # the run left the cluster up
    finally:
        ray.shutdown()


def test_joining_drops_what_only_a_new_instance_takes() -> None:
    config = {
        "client_resources": {"num_cpus": 1},
        "init_args": {"num_cpus": 2, "log_to_driver": False},
    }
    joined = cluster_backend_config(config, "10.0.0.1:6379")
    assert joined["init_args"] == {"log_to_driver": False, "address": "10.0.0.1:6379"}
    assert joined["client_resources"] == {"num_cpus": 1}
    assert cluster_backend_config(config, None) is config
    with pytest.raises(ConfigError, match=r"simulation\.address must be host:port"):
        cluster_backend_config(config, "head-node")
