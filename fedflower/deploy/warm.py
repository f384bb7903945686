"""A warm SuperNode: ClientApp tasks in one long-lived process that imported and built once.

Flower 1.42's SuperNode hands every task (a train or an evaluate message) to its SuperExec,
which starts a new ``flwr-clientapp`` process for it; that process imports Flower,
TensorFlow and fedflower, composes the experiment's config, reads the node's data, builds
the model and traces its training step before it runs one task and exits. On a small model
that is most of a deployed round (``bench/results/deployment.md``). This module is a drop-in
``flower-superexec``: Flower's own SuperExec loop (``flower_superexec``, unchanged
arguments) in a process that has imported TensorFlow and fedflower's ClientApp module once.
Its ClientApp tasks go to one task worker, a child forked from it on the first task, which
runs them one after another with Flower's ``run_clientapp`` (the same task protocol, token,
TLS, ``Context`` and reply as ``flwr-clientapp``). The worker's process cache
(:func:`fedflower.client.app.cached`, keyed by the run id and the run's overrides) keeps the
config, the node's data and the compiled, traced model from one task of a run to the next,
as a simulation's worker process does; a new run starts from nothing. The SuperNode's
``Context.state`` is still the only state Flower keeps between tasks, and a worker that dies
is forked again for the next task. No TensorFlow operation runs in the SuperExec itself (only
imports), so the worker initializes TensorFlow's runtime on its own.

Flower ends a task's process with ``flwr_exit`` (its exit handlers push the task's status
and ``Context``, then ``sys.exit`` and a force-exit timer); in the worker that call runs the
same exit handlers and ends the task, not the process.

:func:`supernode_main` starts Flower's ``flower-supernode`` with its pause between pulls when
it has no message shortened from Flower 1.42's fixed 3 s (``time.sleep(3)`` in
``start_client_internal``, no option or environment variable sets it) to
:data:`PULL_INTERVAL_ENV` seconds, and its 0.5 s waits for a task's reply to
:data:`REPLY_POLL`. The SuperNode and the task worker retry a message object that is not in
the store yet after :data:`OBJECT_RETRY` instead of Flower's 1 s.

:class:`~fedflower.deploy.federation.LocalFederation` puts this command first on its
SuperNodes' ``PATH`` as ``flower-superexec`` (:func:`write_shim`) and starts them with
``python -m fedflower.deploy.warm supernode``; elsewhere a SuperNode started with
``--isolation process`` can be given ``python -m fedflower.deploy.warm`` with
``flower-superexec``'s arguments. Each task writes one line, :data:`TASK_LINE` and a JSON
object with its phases' wall-clock stamps, to the SuperNode's log (``bench/deployment.py``
reads them).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any

SHIM_NAME = "flower-superexec"
"""The command a SuperNode in subprocess isolation starts for its tasks (looked up on PATH)."""

PULL_INTERVAL_ENV = "FEDFLOWER_SUPERNODE_PULL_INTERVAL"
"""Seconds a SuperNode started by :func:`supernode_main` pauses between pulls when idle."""

DEFAULT_PULL_INTERVAL = 0.25
"""The idle pause of :func:`supernode_main` unless :data:`PULL_INTERVAL_ENV` says otherwise."""

TASK_LINE = "fedflower-task"
"""The first word of the line each task writes to the SuperNode's log."""

NODE_LINE = "fedflower-node"
"""The first word of the line :func:`supernode_main` writes per message received and sent."""

OBJECT_RETRY = (0.02, 0.1)
"""Seconds before the first retry of a message's object that is not in the store yet, and
at most between two (Flower's: 1 s, doubling up to 10 s, more than a small model's task)."""


class TaskWorker:
    """The one child process that runs this SuperExec's ClientApp tasks, one after another.

    Forked on the first task (and again after it died); tasks reach it through a pipe in the
    order Flower launches them.
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self.conn: Connection | None = None

    def alive(self) -> bool:
        """Whether the worker runs (a finished one is reaped here)."""
        if self.pid is None:
            return False
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                return True
        return False

    def submit(self, spec: Any) -> None:
        """Hand ``spec`` to the worker, forking a new one when there is none."""
        task = (spec, time.time())
        if self.conn is not None and self.alive():
            with contextlib.suppress(OSError):
                self.conn.send(task)
                return
        self.start()
        assert self.conn is not None
        self.conn.send(task)

    def start(self) -> None:
        """Fork the worker; the child serves tasks until the SuperExec goes away."""
        if self.conn is not None:
            self.conn.close()
        parent_end, child_end = Pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            parent_end.close()
            os._exit(serve(child_end))
        child_end.close()
        self.pid, self.conn = pid, parent_end


def fork_launch(original: Any, worker: TaskWorker | None = None) -> Any:
    """``SubprocessExecutor.launch`` giving ClientApp tasks to ``worker``, the rest to Flower."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.types import LaunchResult

    worker = TaskWorker() if worker is None else worker

    def launch(self: Any, spec: Any) -> Any:
        if spec.task_type != TaskType.CLIENT_APP:
            return original(self, spec)
        worker.submit(spec)
        return LaunchResult.accepted()

    return launch


def serve(conn: Connection) -> int:
    """The worker's loop: run each task received on ``conn``; end when the SuperExec is gone."""
    import flwr.supernode.runtime.run_clientapp as runtime
    from flwr.supercore.app_utils import start_parent_process_monitor

    runtime.flwr_exit = end_task  # type: ignore[assignment]
    quick_retries(runtime, "pull_and_inflate_object_from_tree")
    stamps: dict[str, float] = {}
    timed(runtime, stamps, "pull_task_input", "install_from_fab", "push_message")
    monitored = False
    while True:
        try:
            spec, launched = conn.recv()
        except (EOFError, OSError):
            return 0
        if spec.parent_pid is not None and not monitored:  # once, not a thread per task
            start_parent_process_monitor(spec.parent_pid)
            monitored = True
        stamps.clear()
        stamps.update(launched=launched, started=time.time())
        code = run_task(spec, parent_pid=None)
        stamps["ended"] = time.time()
        report(spec, code, stamps)


def timed(module: Any, stamps: dict[str, float], *names: str) -> None:
    """Wrap ``module``'s functions ``names`` to stamp in ``stamps`` when each one returns."""
    for name in names:
        module.__dict__[name] = _stamping(getattr(module, name), stamps, name)


def _stamping(fn: Callable[..., Any], stamps: dict[str, float], name: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stamps[f"{name}_start"] = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            stamps[name] = time.time()

    return wrapper


def quick_retries(module: Any, name: str) -> None:
    """``module``'s object-pulling function ``name`` retrying after :data:`OBJECT_RETRY` first.

    The SuperNode creates a task as soon as it received the message, while it still pulls
    the message's objects from the SuperLink; the task's first pull of an object often finds
    it missing.
    """
    first, cap = OBJECT_RETRY
    retrying = functools.partial(getattr(module, name), initial_backoff=first, backoff_cap=cap)
    module.__dict__[name] = retrying


def report(spec: Any, code: int, stamps: dict[str, float]) -> None:
    """Write the task's line to the SuperNode's log: its id, exit code and phase stamps."""
    line = {"task": getattr(spec, "task_id", None), "pid": os.getpid(), "code": code, **stamps}
    write_line(TASK_LINE, line)


def write_line(word: str, fields: dict[str, Any]) -> None:
    """One line of stamps on standard output (the SuperNode's log)."""
    sys.stdout.write(f"{word} {json.dumps(fields)}\n")
    sys.stdout.flush()


def node_stamps(loop: Any) -> None:
    """Write a :data:`NODE_LINE` when Flower's SuperNode loop received a message and sent one."""
    pull, push = loop._pull_and_store_message, loop._push_messages

    def pulled(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            write_line(NODE_LINE, {"pull_start": start, "pulled": time.time()})
        return run_id

    def pushed(*args: Any, **kwargs: Any) -> None:
        start = time.time()
        push(*args, **kwargs)
        write_line(NODE_LINE, {"push_start": start, "pushed": time.time()})

    loop._pull_and_store_message, loop._push_messages = pulled, pushed


def end_task(code: int, *args: Any, **kwargs: Any) -> None:
    """``flwr_exit`` in the worker: Flower's exit handlers, then the task (not the process) ends.

    The handlers push the task's final status and ``Context`` and stop its heartbeat, as at
    the end of a ``flwr-clientapp`` process.
    """
    from flwr.supercore.exit.exit_handler import trigger_exit_handlers

    trigger_exit_handlers(run_before_force_exit=True)
    trigger_exit_handlers(run_before_force_exit=False)
    raise SystemExit(0 if 0 <= code < 100 else 1)  # flwr_exit's exit status


def run_task(spec: Any, parent_pid: int | None = None) -> int:
    """Run one ClientApp task as ``flwr-clientapp --token ...`` would; its exit code.

    The signal handlers Flower installs for the task are removed when it ends, so a later
    signal stops the worker instead of replaying a finished task's exit.
    """
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(
                spec.root_certificates_path, spec.insecure
            ),
            parent_pid=parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
    except SystemExit as exc:  # Flower's flwr_exit ends every task with sys.exit
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        return 1
    finally:
        for sig, handler in handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
    return 0


def write_shim(directory: Path) -> Path:
    """Write ``flower-superexec`` into ``directory``: this module with the same interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / SHIM_NAME
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fedflower.deploy.warm "$@"\n')
    shim.chmod(0o755)
    return directory


REPLY_POLL = 0.05
"""Seconds between a SuperNode's looks for its task's reply (Flower: 0.5 s): a look at its
own state, no request to the SuperLink."""


class IdlePause:
    """The ``time`` module as Flower's SuperNode loop sees it, with shorter pauses.

    ``start_client_internal`` sleeps 3 s after a pull that found no message (a request to
    the SuperLink): that pause becomes ``seconds``. It sleeps 0.5 s between looks at its own
    state while it waits for a task's reply: those become :data:`REPLY_POLL`.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        """The idle pause for Flower's (1 s or longer), :data:`REPLY_POLL` for a shorter one."""
        time.sleep(min(seconds, self.seconds if seconds >= 1 else REPLY_POLL))


def pull_interval() -> float:
    """The idle pause of :data:`PULL_INTERVAL_ENV` (a positive number), else the default."""
    from fedflower.errors import ConfigError

    raw = os.environ.get(PULL_INTERVAL_ENV, "")
    try:
        seconds = float(raw) if raw else DEFAULT_PULL_INTERVAL
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 60:
        raise ConfigError(f"{PULL_INTERVAL_ENV} must be seconds in (0, 60], got {raw!r}")
    return seconds


def supernode_main() -> None:
    """``flower-supernode`` (Flower's, same arguments) with the pause of :func:`pull_interval`."""
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    loop.time = IdlePause(pull_interval())  # type: ignore[assignment]
    quick_retries(loop, "pull_objects")
    node_stamps(loop)
    sys.argv = ["flower-supernode", *sys.argv[2:]]
    flower_supernode()


def main() -> None:
    """Import what every ClientApp task needs, then run Flower's SuperExec with a task worker."""
    if sys.argv[1:2] == ["supernode"]:
        supernode_main()
        return
    from flwr.supercore.cli import flower_superexec
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

    import fedflower.deploy.app  # noqa: F401  (TensorFlow, Keras, Flower, fedflower, once)

    SubprocessExecutor.launch = fork_launch(SubprocessExecutor.launch)  # type: ignore[method-assign]
    sys.argv[0] = SHIM_NAME
    flower_superexec()


if __name__ == "__main__":
    main()
