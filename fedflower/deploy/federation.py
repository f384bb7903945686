"""A real federation of local processes: one SuperLink, N SuperNodes, runs through ``flwr run``.

:class:`LocalFederation` starts ``flower-superlink`` and ``flower-supernode`` processes on
127.0.0.1 (free ports), by default with TLS (a demo CA from :mod:`fedflower.deploy.certs`)
and SuperNode authentication (each node's public key registered with
``flwr supernode register`` before it starts). It submits the fedflower app with ``flwr run``
and streams its output. Every process it starts runs in its own session and is stopped,
children included, when the federation stops (``with LocalFederation(...) as fed:``), also
after an error or a timeout (:mod:`fedflower.deploy.processes`).

Each process gets its own ``FLWR_HOME`` inside the work directory, so nothing is written to
the user's ``~/.flwr``; the ``flwr`` CLI's SuperLink connection is written there too (Flower
1.42 keeps connections in ``$FLWR_HOME/config.toml``, not in ``pyproject.toml``). Flower's
update check and telemetry are switched off and runtime dependency installation is disabled
(:mod:`fedflower.deploy.flwr_tools`): the only network traffic is to and from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from fedflower.deploy.certs import Credentials, make_credentials, make_node_keys
from fedflower.deploy.flwr_tools import (
    HOST,
    FederationError,
    flower_env,
    format_config,
    free_port,
    tool,
    write_app_dir,
    write_run_config,
)
from fedflower.deploy.processes import process, terminate_tree
from fedflower.deploy.warm import write_shim
from fedflower.outputs.rundir import RunDir

log = logging.getLogger(__name__)

CONNECTION = "fedflower-local"

SUPERNODE_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"}
"""A SuperNode's SuperExec looks for a new task every 0.1 s (Flower's default: 1 s); each
task waits on average half the interval before its ClientApp process is launched."""


@dataclass
class Managed:
    """A process the federation started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)
    handle: psutil.Process | None = None

    def log_text(self) -> str:
        """The process's output so far."""
        self.log_file.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None


class LocalFederation:
    """A SuperLink and SuperNodes as local processes on 127.0.0.1.

    Parameters
    ----------
    workdir : path
        Holds credentials, logs, per-process ``FLWR_HOME`` directories and run outputs.
    node_configs : sequence of mappings
        One node config per SuperNode (e.g. ``{"data-path": "site.csv"}`` or
        ``{"partition-id": 0, "num-partitions": 3}``).
    secure : bool
        TLS and SuperNode authentication (default). ``False`` starts everything
        ``--insecure`` (for comparison only).
    app_dir : path, optional
        The Flower app ``flwr run`` submits: a directory with the fedflower
        ``pyproject.toml``. By default a minimal one is written into ``workdir``.
    startup_timeout : float
        Seconds to wait for the SuperLink and for the nodes to come online.
    warm_tasks : bool
        The SuperNodes run their ClientApp tasks in one worker process forked from a process
        that imported TensorFlow and fedflower once, keeping a run's data and model between
        tasks, and pause 0.25 s instead of 3 s between pulls when idle
        (:mod:`fedflower.deploy.warm`, default). ``False``: Flower's own, a new
        ``flwr-clientapp`` interpreter per task.
    backends : sequence of str
        Keras backends cycled over the SuperNodes (node ``i`` trains with
        ``KERAS_BACKEND=backends[i % len(backends)]``); empty: the environment's.
    """

    def __init__(
        self,
        workdir: str | Path,
        node_configs: Sequence[Mapping[str, Any]],
        secure: bool = True,
        app_dir: str | Path | None = None,
        startup_timeout: float = 90.0,
        warm_tasks: bool = True,
        backends: Sequence[str] = (),
    ) -> None:
        self.backends = list(backends)
        self.workdir = Path(workdir).resolve()
        self.node_configs = [dict(c) for c in node_configs]
        self.secure = secure
        self.app_dir = Path(app_dir).resolve() if app_dir else None
        self.startup_timeout = startup_timeout
        self.warm_tasks = warm_tasks
        self.port = 0
        self.processes: list[Managed] = []
        self.credentials: Credentials | None = None
        self.superlink: Managed | None = None
        self.supernodes: list[Managed] = []
        self.stopped: list[psutil.Process] = []
        self.tag = uuid.uuid4().hex
        self.cli_home = self.workdir / "flwr-cli"
        self.logs = self.workdir / "logs"

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Credentials, SuperLink, node registration, SuperNodes; wait until all are online."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if self.app_dir is None:
            self.app_dir = write_app_dir(self.workdir / "app")
        if self.secure:
            self.credentials = make_credentials(self.workdir / "certs", len(self.node_configs))
        self.port = free_port()
        self._write_cli_config()
        self.superlink = self._start_superlink()
        self._wait_for_superlink()
        for i, node_config in enumerate(self.node_configs):
            key = self.credentials.node_keys[i] if self.credentials else None
            if key is not None:
                self.register(key[1])
            self.supernodes.append(self.start_supernode(node_config, key[0] if key else None, i))
        self.wait_for_nodes(len(self.node_configs))

    def stop(self) -> None:
        """Stop every process this federation started, and their children."""
        self.stopped = terminate_tree([m.handle for m in self.processes if m.handle], tag=self.tag)
        for managed in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                managed.process.wait(timeout=5)
            managed.log_file.close()
        self.processes.clear()

    # -- processes ---------------------------------------------------------------------------
    def _spawn(
        self, name: str, args: list[str], home: Path, env: Mapping[str, str] | None = None
    ) -> Managed:
        log_path = self.logs / f"{name}.log"
        log_file = log_path.open("ab")
        proc = subprocess.Popen(
            args,
            cwd=self.workdir,
            env=flower_env(home, self.tag, env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        managed = Managed(name, proc, log_path, log_file, process(proc.pid))
        self.processes.append(managed)
        return managed

    def _start_superlink(self) -> Managed:
        args = [
            tool("flower-superlink"),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        if self.credentials:
            args += [
                "--ssl-ca-certfile",
                str(self.credentials.ca_cert),
                "--ssl-certfile",
                str(self.credentials.server_cert),
                "--ssl-keyfile",
                str(self.credentials.server_key),
                "--enable-supernode-auth",
            ]
        else:
            args.append("--insecure")
        return self._spawn("superlink", args, self.workdir / "flwr-superlink")

    def start_supernode(
        self, node_config: Mapping[str, Any], private_key: Path | None, index: int
    ) -> Managed:
        """Start one SuperNode; ``private_key=None`` starts it without node authentication."""
        args = [
            *self._supernode_command(),
            "--superlink",
            f"{HOST}:{self.port}",
            "--host",
            HOST,
            "--port",
            str(free_port()),
            "--node-config",
            format_config(node_config),
            "--max-retries",
            "3",
            "--max-wait-time",
            "20",
        ]
        if self.credentials:
            args += ["--root-certificates", str(self.credentials.ca_cert)]
        else:
            args.append("--insecure")
        if private_key is not None:
            args += ["--auth-supernode-private-key", str(private_key)]
        name = f"supernode-{index + 1}"
        return self._spawn(name, args, self.workdir / f"flwr-{name}", self._supernode_env(index))

    def _supernode_command(self) -> list[str]:
        """Flower's ``flower-supernode``; with ``warm_tasks`` the one with a short idle pause."""
        if not self.warm_tasks:
            return [tool("flower-supernode")]
        return [sys.executable, "-m", "fedflower.deploy.warm", "supernode"]

    def node_env(self, index: int) -> dict[str, str]:
        """Node ``index``'s environment: its Keras backend (its ClientApp process inherits it)."""
        if not self.backends:
            return {}
        return {"KERAS_BACKEND": self.backends[index % len(self.backends)]}

    def _supernode_env(self, index: int) -> dict[str, str]:
        """Its backend, faster task polling; with ``warm_tasks`` the warm SuperExec on ``PATH``."""
        env = {**self.node_env(index), **SUPERNODE_ENV}
        if not self.warm_tasks:
            return env
        shims = write_shim(self.workdir / "warm-bin")
        path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ["PATH"]])
        return {**env, "PATH": path}

    def start_unknown_supernode(self, node_config: Mapping[str, Any]) -> Managed:
        """Start a SuperNode whose fresh key pair was never registered: it must be refused."""
        if self.credentials is None:
            raise FederationError("an unknown node is only refused with secure=True")
        private_key, _ = make_node_keys(self.workdir / "certs" / "unknown", "intruder")
        node = self.start_supernode(node_config, private_key, 100 + len(self.supernodes))
        self.supernodes.append(node)
        return node

    # -- flwr CLI ----------------------------------------------------------------------------
    def _write_cli_config(self) -> None:
        """Flower's config file for the ``flwr`` CLI: one SuperLink connection, the default."""
        import tomli_w

        connection: dict[str, Any] = {"address": f"{HOST}:{self.port}"}
        if self.credentials:
            connection["root-certificates"] = str(self.credentials.ca_cert)
        else:
            connection["insecure"] = True
        self.cli_home.mkdir(parents=True, exist_ok=True)
        config = {"superlink": {"default": CONNECTION, CONNECTION: connection}}
        (self.cli_home / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI against this federation's SuperLink."""
        return subprocess.run(
            [tool("flwr"), *args],
            cwd=self.workdir,
            env=flower_env(self.cli_home, self.tag),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def register(self, public_key: Path) -> None:
        """Register a SuperNode's public key with the SuperLink."""
        res = self.flwr("supernode", "register", str(public_key), CONNECTION)
        if res.returncode != 0:
            raise FederationError(
                f"flwr supernode register {public_key.name} failed: {res.stdout}{res.stderr}"
            )

    def nodes(self) -> list[dict[str, Any]]:
        """The SuperLink's SuperNodes (``flwr supernode list``)."""
        res = self.flwr("supernode", "list", CONNECTION, "--format", "json")
        if res.returncode != 0:
            raise FederationError(f"flwr supernode list failed: {res.stdout}{res.stderr}")
        text = res.stdout[res.stdout.find("{") :]
        return list(json.loads(text).get("nodes", []))

    def online_nodes(self) -> list[dict[str, Any]]:
        """The SuperNodes currently connected."""
        return [n for n in self.nodes() if str(n.get("status", "")).lower() == "online"]

    def _wait_for_superlink(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self.superlink is not None
        while time.monotonic() < deadline:
            if not self.superlink.alive():
                raise FederationError(f"flower-superlink exited:\n{self.superlink.log_text()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise FederationError(f"flower-superlink did not listen on {HOST}:{self.port} in time")

    def wait_for_nodes(self, count: int) -> None:
        """Wait until ``count`` SuperNodes are online."""
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            dead = [n for n in self.supernodes[:count] if not n.alive()]
            if dead:
                raise FederationError(f"{dead[0].name} exited:\n{dead[0].log_text()[-3000:]}")
            if len(self.online_nodes()) >= count:
                return
            time.sleep(0.5)
        raise FederationError(f"{count} SuperNodes did not come online in time")

    def add_node(self, node_config: Mapping[str, Any]) -> Managed:
        """Register (when secure) and start one more SuperNode, e.g. one that joins late."""
        index = len(self.supernodes)
        private_key = None
        if self.credentials is not None:
            private_key, public_key = make_node_keys(
                self.workdir / "certs" / "keys", f"supernode-{index + 1}"
            )
            self.register(public_key)
        node = self.start_supernode(node_config, private_key, index)
        self.supernodes.append(node)
        return node

    def kill_node(self, index: int) -> None:
        """Kill SuperNode ``index`` and its ClientApp processes at once (SIGKILL), as a crash."""
        node = self.supernodes[index]
        terminate_tree([node.handle] if node.handle else [], grace=0.0)
        node.process.wait(timeout=10)

    def restart_node(self, index: int) -> Managed:
        """Start SuperNode ``index`` again with its node config and key (after :meth:`kill_node`).

        The SuperLink knows the node by its registered public key: the restarted node gets
        the same node id and is sampled again like any connected node.
        """
        key = self.credentials.node_keys[index][0] if self.credentials else None
        node = self.start_supernode(self.node_configs[index], key, index)
        self.supernodes[index] = node
        return node

    def submit(
        self,
        overrides: Sequence[str] = (),
        output_dir: str | Path | None = None,
        echo: IO[str] | None = None,
    ) -> RunHandle:
        """Start ``flwr run`` for the fedflower app in the background (see :meth:`run`)."""
        runs = self.workdir / "outputs"
        out = Path(output_dir) if output_dir else runs / f"run-{len(list(runs.glob('run-*')))}"
        out = out.resolve()
        out.mkdir(parents=True, exist_ok=True)
        config_file = write_run_config(self.workdir / f"run-config-{out.name}.toml", overrides, out)
        args = [
            tool("flwr"),
            "run",
            str(self.app_dir),
            CONNECTION,
            "--run-config",
            str(config_file),
            "--stream",
        ]
        env = flower_env(self.cli_home, self.tag)
        return RunHandle.start(args, self.workdir, env, out, echo)

    def run(
        self,
        overrides: Sequence[str] = (),
        output_dir: str | Path | None = None,
        timeout: float = 600.0,
        echo: IO[str] | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Submit the fedflower app with ``flwr run`` and stream its output until it ends.

        Parameters
        ----------
        overrides : sequence of str
            Hydra overrides of the experiment (the run config's ``overrides``).
        output_dir : path, optional
            Where the ServerApp writes its outputs (default ``workdir/outputs/run-<n>``).
        timeout : float
            Seconds after which the run is given up (:class:`FederationError`).
        echo : text stream, optional
            Where to copy the streamed output as it arrives (e.g. ``sys.stdout``).

        Returns
        -------
        (results, output)
            The run's ``results.json`` content and the streamed output.
        """
        handle = self.submit(overrides, output_dir, echo)
        try:
            return handle.wait(timeout)
        except FederationError as exc:
            tail = self.superlink.log_text()[-3000:] if self.superlink else ""
            raise FederationError(f"{exc}\nSuperLink log:\n{tail}") from None


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
"""Terminal colour and cursor codes (Flower colours its log lines)."""


def plain(line: str, stream: IO[str]) -> str:
    """``line`` without terminal codes unless ``stream`` is a terminal (a file or a pipe)."""
    isatty = getattr(stream, "isatty", None)
    return line if callable(isatty) and isatty() else ANSI_ESCAPE.sub("", line)


class RunHandle:
    """A ``flwr run --stream`` process whose output a thread collects."""

    def __init__(
        self, process: subprocess.Popen[str], output_dir: Path, echo: IO[str] | None
    ) -> None:
        self.process = process
        self.output_dir = output_dir
        self.lines: list[str] = []
        self._echo = echo
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        output_dir: Path,
        echo: IO[str] | None = None,
    ) -> RunHandle:
        """Start ``args`` with its output collected."""
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        return cls(process, output_dir, echo)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(ANSI_ESCAPE.sub("", line))
            if self._echo is not None:
                self._echo.write(plain(line, self._echo))
                self._echo.flush()

    @property
    def output(self) -> str:
        """The output so far."""
        return "".join(self.lines)

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of the run's ``metrics.jsonl`` so far."""
        return RunDir(self.output_dir).metrics()

    def kill(self) -> None:
        """Stop the ``flwr run`` process (the run itself continues on the SuperLink)."""
        handle = process(self.process.pid)
        if self.process.poll() is None and handle is not None:
            terminate_tree([handle], grace=0.0)
        self.process.wait(timeout=10)

    def wait(self, timeout: float = 600.0) -> tuple[dict[str, Any], str]:
        """Wait for the run to end; return its ``results.json`` content and the output."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise FederationError(
                f"flwr run did not finish within {timeout:.0f} s; output so far:\n"
                + self.output[-3000:]
            ) from None
        self._reader.join(timeout=10)
        run = RunDir(self.output_dir)
        if self.process.returncode != 0 or not run.finished:
            raise FederationError(
                f"flwr run ended with exit code {self.process.returncode} and "
                f"{'a' if run.finished else 'no'} results.json in {self.output_dir}; "
                f"output:\n{self.output[-3000:]}"
            )
        return run.results(), self.output
