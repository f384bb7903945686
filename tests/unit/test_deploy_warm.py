"""The warm SuperExec: ClientApp tasks forked and run by Flower's ``run_clientapp``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor.types import LaunchResultStatus

from fedflower.deploy import warm

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks tasks (POSIX)")


def spec(task_type: TaskType = TaskType.CLIENT_APP) -> SimpleNamespace:
    return SimpleNamespace(
        task_type=task_type,
        runtime_api_address="127.0.0.1:1",
        token="ab" * 8,
        insecure=True,
        root_certificates_path=None,
        parent_pid=None,
        runtime_dependency_install=False,
    )


def test_a_clientapp_task_runs_in_a_forked_child_with_flowers_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "task"

    def fake_run_clientapp(**kwargs: object) -> None:  # what the child runs
        seen.write_text(f"{os.getpid()} {kwargs['token']} {kwargs['runtime_api_address']}")
        sys.exit(0)  # Flower's flwr_exit ends a task with sys.exit

    import flwr.supernode.runtime.run_clientapp as runtime

    monkeypatch.setattr(runtime, "run_clientapp", fake_run_clientapp)
    launch = warm.fork_launch(lambda self, s: pytest.fail("not a ClientApp task"))
    result = launch(None, spec())
    assert result.status == LaunchResultStatus.ACCEPTED
    deadline = time.monotonic() + 30
    while not seen.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid, token, address = seen.read_text().split()
    assert int(pid) != os.getpid()  # a child, not this process
    assert (token, address) == ("ab" * 8, "127.0.0.1:1")


def test_other_tasks_are_left_to_flower_and_errors_end_the_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def flowers_launch(self: object, s: SimpleNamespace) -> str:
        calls.append(s.task_type)
        return "flower's"

    launch = warm.fork_launch(flowers_launch)
    assert launch(None, spec(TaskType.SERVER_APP)) == "flower's"
    assert calls == [TaskType.SERVER_APP]

    import flwr.supernode.runtime.run_clientapp as runtime

    def broken(**kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime, "run_clientapp", broken)
    assert warm.run_task(spec()) == 1  # never returns into the SuperExec's loop
    monkeypatch.setattr(runtime, "run_clientapp", lambda **kw: sys.exit(3))
    assert warm.run_task(spec()) == 3


def test_the_shim_runs_this_module_with_this_interpreter(tmp_path: Path) -> None:
    shim = warm.write_shim(tmp_path / "bin") / "flower-superexec"
    assert os.access(shim, os.X_OK)
    assert f'"{sys.executable}" -m fedflower.deploy.warm "$@"' in shim.read_text()
