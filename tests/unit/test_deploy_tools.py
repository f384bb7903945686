"""Deployment tooling without a federation: the derived app, environments, process trees."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli

from fedflower import keys
from fedflower.deploy.certs import Credentials
from fedflower.deploy.flwr_tools import (
    QUIET_ENV,
    FederationError,
    app_pyproject,
    flower_env,
    format_config,
    tool,
    write_app_dir,
    write_run_config,
)
from fedflower.deploy.processes import TAG_VARIABLE, alive, family, tagged, terminate_tree

REPO = Path(__file__).resolve().parents[2]


def test_the_derived_app_declares_what_the_source_pyproject_declares(tmp_path: Path) -> None:
    source = tomli.loads((REPO / "pyproject.toml").read_text())
    written = tomli.loads((write_app_dir(tmp_path / "app") / "pyproject.toml").read_text())
    assert written == app_pyproject()
    ours, theirs = dict(source["tool"]["flwr"]["app"]), written["tool"]["flwr"]["app"]
    ours.pop("fab-include")  # the app directory carries no README
    assert theirs == ours
    assert set(theirs["config"]) == {keys.RUN_OVERRIDES, keys.RUN_OUTPUT_DIR}
    project = written["project"]
    assert project["version"] == source["project"]["version"]
    assert project["license"] == source["project"]["license"]
    assert project["dependencies"] == [f"fedflower=={source['project']['version']}"]


def test_an_absent_distribution_is_a_one_line_error() -> None:
    with pytest.raises(FederationError, match="not installed"):
        app_pyproject("fedflower-no-such-distribution")


def test_flower_env_is_quiet_tagged_and_has_its_own_home(tmp_path: Path) -> None:
    env = flower_env(tmp_path / "home", "t1", {"EXTRA": "1"})
    assert env["FLWR_HOME"] == str(tmp_path / "home") and (tmp_path / "home").is_dir()
    assert env[TAG_VARIABLE] == "t1" and env["EXTRA"] == "1"
    assert all(env[k] == v for k, v in QUIET_ENV.items())
    assert env["PATH"].startswith(str(Path(sys.executable).parent))
    assert Path(tool("flwr")).parent == Path(sys.executable).parent
    with pytest.raises(FederationError, match="not found"):
        tool("flwr-no-such-command")


def test_run_config_and_node_config_strings(tmp_path: Path) -> None:
    path = write_run_config(tmp_path / "new" / "rc.toml", ["num_rounds=2", "seed=1"], tmp_path)
    assert tomli.loads(path.read_text()) == {
        keys.RUN_OVERRIDES: "num_rounds=2 seed=1",
        keys.RUN_OUTPUT_DIR: str(tmp_path),
    }
    text = format_config({"partition-id": 1, "lr": 0.5, "on": True, "path": "a b.csv"})
    assert text == 'partition-id=1 lr=0.5 on=true path="a b.csv"'
    with pytest.raises(FederationError, match="double quote"):
        format_config({"path": 'a"b'})


SPAWNER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", flush=True)
time.sleep(60)
"""


def start_tree(tag: str) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    """A process with one child, both tagged ``tag``; returns the parent and the family."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SPAWNER], env={TAG_VARIABLE: tag}, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 10
    while len(family([parent])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, family([parent])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process environments")
@pytest.mark.parametrize(
    ("by", "grace", "code"), [("root", 5.0, -15), ("tag", 0.0, -9)], ids=["sigterm", "sigkill"]
)
def test_terminate_tree_stops_the_process_and_its_children(
    by: str, grace: float, code: int
) -> None:
    tag = uuid.uuid4().hex
    proc, tree = start_tree(tag)
    assert len(tree) == 2 and set(tagged(tag)) == set(tree)
    if by == "root":  # the children are found from the root
        stopped = terminate_tree([tree[0]], grace=grace)
    else:  # or from the tag alone
        stopped = terminate_tree([], grace=grace, tag=tag)
    proc.wait(timeout=10)
    assert set(stopped) == set(tree)
    assert not [p for p in tree if alive(p)] and not tagged(tag)
    assert proc.returncode == code


def test_a_finished_process_is_not_alive_and_not_signalled() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    handle = psutil.Process(proc.pid)
    proc.wait(timeout=10)
    assert not alive(handle)
    assert terminate_tree([handle], grace=1.0) == []


def test_simulation_env_is_quiet_and_has_a_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedflower.deploy.demo import simulation_env
    from fedflower.startup import RAY_NOTICES_ENV

    monkeypatch.delenv("FLWR_LOG_LEVEL", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "error::UserWarning")
    env = simulation_env(tmp_path / "home", "t1")
    assert env["FLWR_LOG_LEVEL"] == "ERROR"  # Flower's own notices are not the user's business
    assert env["PYTHONWARNINGS"] == f"error::UserWarning,{RAY_NOTICES_ENV}"  # the user's kept
    ports = {env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"], env["FLWR_LOCAL_CONTROL_API_PORT"]}
    assert len(ports) == 2 and "39091" not in ports  # never the shared default ports
    config = tomli.loads((tmp_path / "home" / "config.toml").read_text())
    assert config["superlink"] == {"default": "local", "local": {"address": ":local:"}}
    monkeypatch.setenv("FLWR_LOG_LEVEL", "DEBUG")
    assert simulation_env(tmp_path / "home", "t1")["FLWR_LOG_LEVEL"] == "DEBUG"


def test_a_superlink_that_does_not_come_up_is_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedflower.deploy import demo

    env = demo.simulation_env(tmp_path / "home", uuid.uuid4().hex)
    monkeypatch.setattr(demo, "tool", lambda name: "false")  # exits at once, code 1
    with pytest.raises(demo.SuperLinkNotStarted, match="exited with code 1"):
        demo.start_simulation_superlink(env, tmp_path / "superlink.log", timeout=30)
    sleeper = tmp_path / "sleeper"
    sleeper.write_text("#!/bin/sh\nexec sleep 30\n")
    sleeper.chmod(0o755)
    monkeypatch.setattr(demo, "tool", lambda name: str(sleeper))  # runs, never answers
    t0 = time.monotonic()
    with pytest.raises(demo.SuperLinkNotStarted, match=r"within 1 s \(no answer\)"):
        demo.start_simulation_superlink(env, tmp_path / "superlink.log", timeout=1)
    assert time.monotonic() - t0 < 10
    terminate_tree([], tag=env[TAG_VARIABLE])
    assert not tagged(env[TAG_VARIABLE])


def test_run_output_piped_to_a_file_has_no_terminal_colour_codes(tmp_path: Path) -> None:
    import io

    from fedflower.deploy.federation import RunHandle

    script = "print('\\x1b[32mINFO\\x1b[0m :      round 1'); print('\\x1b[2Kdone')"
    echo = io.StringIO()  # a file or pipe: no terminal
    handle = RunHandle(
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True),
        tmp_path,
        echo,
    )
    handle.process.wait(timeout=30)
    handle._reader.join(timeout=30)
    assert echo.getvalue() == "INFO :      round 1\ndone\n"
    assert "\x1b" not in handle.output


def test_supernodes_cycle_the_keras_backends(tmp_path: Path) -> None:
    """Each SuperNode (and the ClientApp process it starts) gets its own KERAS_BACKEND."""
    from fedflower.deploy.federation import LocalFederation

    fed = LocalFederation(tmp_path, [{}] * 4, backends=["tensorflow", "jax", "torch"])
    envs = [fed.node_env(i) for i in range(4)]
    assert [e["KERAS_BACKEND"] for e in envs] == ["tensorflow", "jax", "torch", "tensorflow"]
    assert LocalFederation(tmp_path, [{}]).node_env(0) == {}  # the environment's backend


def test_the_demo_refuses_an_unknown_backend_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedflower.deploy.cli import main

    argv = ["demo", "--backends", "tensorflow,mxnet", "--workdir", str(tmp_path / "demo")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedflower-deploy: error: --backends must list Keras backends")
    assert "got 'mxnet'" in err and "\n" not in err
    assert not (tmp_path / "demo").exists()  # nothing started, nothing written


class FakeNode:
    """A SuperNode process as :meth:`LocalFederation.restart_node` sees it."""

    def __init__(self, log: str, running: bool) -> None:
        self.log, self.running = log, running

    def alive(self) -> bool:
        return self.running

    def log_text(self) -> str:
        return self.log


def fake_federation(tmp_path: Path, online: list[bool], starts: list[FakeNode]) -> Any:
    """A secure two-node federation whose SuperLink answers ``online`` in turn (then the last)."""
    from fedflower.deploy import federation

    fed = federation.LocalFederation(tmp_path, [{}, {}], startup_timeout=0.5)
    keys_ = ((tmp_path / "k0", tmp_path / "p0"), (tmp_path / "k1", tmp_path / "p1"))
    fed.credentials = Credentials(tmp_path, tmp_path, tmp_path, tmp_path, keys_)
    fed.node_ids = {0: 10, 1: 11}
    fed.supernodes = [FakeNode("", True), FakeNode("killed\n", False)]  # type: ignore[list-item]
    answers = iter(online)
    fed.is_online = lambda node_id: next(answers, online[-1])  # type: ignore[method-assign]
    started = iter(starts)
    fed.start_supernode = lambda *args: next(started)  # type: ignore[method-assign,assignment]
    return fed


def test_a_restarted_node_waits_for_offline_and_is_started_again_when_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedflower.deploy import federation

    monkeypatch.setattr(federation.time, "sleep", lambda _s: None)
    refused = FakeNode(f"killed\nError: {federation.REFUSED}.\n", False)
    accepted = FakeNode("killed\nStarting Flower SuperNode\n", True)
    # online (the killed connection), offline, refusal, offline, online (the new one)
    fed = fake_federation(tmp_path, [True, False, False, True], [refused, accepted])
    assert fed.restart_node(1) is accepted and fed.supernodes[1] is accepted


def test_a_node_the_superlink_keeps_online_is_given_up_after_a_bounded_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedflower.deploy import federation

    monkeypatch.setattr(federation, "OFFLINE_AFTER", 0.5)
    fed = fake_federation(tmp_path, [True], [])
    start = time.monotonic()
    with pytest.raises(FederationError, match=r"supernode-2 \(node 11\) did not come back"):
        fed.restart_node(1)
    assert time.monotonic() - start < 5
