"""The warm SuperExec: ClientApp tasks run one after another in one forked task worker."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor.types import LaunchResultStatus

from fedflower.deploy import warm
from fedflower.errors import ConfigError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a task worker (POSIX)")


def spec(task_type: TaskType = TaskType.CLIENT_APP, token: str = "ab" * 8) -> SimpleNamespace:
    return SimpleNamespace(
        task_type=task_type,
        runtime_api_address="127.0.0.1:1",
        token=token,
        insecure=True,
        root_certificates_path=None,
        parent_pid=None,
        runtime_dependency_install=False,
        task_id=7,
    )


def wait_lines(path: Path, count: int) -> list[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    pytest.fail(f"{count} tasks did not run: {path.read_text() if path.exists() else ''}")


def test_clientapp_tasks_run_in_order_in_one_forked_worker_with_flowers_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "tasks"

    def fake_run_clientapp(**kwargs: Any) -> None:  # what the worker runs per task
        with seen.open("a") as out:
            out.write(f"{os.getpid()} {kwargs['token']} {kwargs['runtime_api_address']}\n")
        from flwr.supernode.runtime import run_clientapp as runtime

        runtime.flwr_exit(0)  # Flower ends every task with flwr_exit: the task ends, not the worker

    import flwr.supernode.runtime.run_clientapp as runtime

    monkeypatch.setattr(runtime, "run_clientapp", fake_run_clientapp)
    worker = warm.TaskWorker()
    launch = warm.fork_launch(lambda self, s: pytest.fail("not a ClientApp task"), worker)
    try:
        for token in ("a1" * 8, "b2" * 8, "c3" * 8):
            assert launch(None, spec(token=token)).status == LaunchResultStatus.ACCEPTED
        lines = [line.split() for line in wait_lines(seen, 3)]
        assert [token for _, token, _ in lines] == ["a1" * 8, "b2" * 8, "c3" * 8]
        assert {pid for pid, _, _ in lines} == {str(worker.pid)}  # one process for all tasks
        assert worker.pid != os.getpid() and worker.alive()
    finally:
        assert worker.conn is not None
        worker.conn.close()  # the worker ends when the SuperExec's end of the pipe closes
    deadline = time.monotonic() + 30
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker.alive()


def test_a_dead_worker_is_forked_again_for_the_next_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "tasks"

    def crash_once(**kwargs: Any) -> None:
        with seen.open("a") as out:
            out.write(f"{os.getpid()}\n")
        if kwargs["token"] == "dead" * 4:
            os._exit(9)  # the worker dies with its task (e.g. killed by the kernel)

    import flwr.supernode.runtime.run_clientapp as runtime

    monkeypatch.setattr(runtime, "run_clientapp", crash_once)
    worker = warm.TaskWorker()
    worker.submit(spec(token="dead" * 4))
    first = wait_lines(seen, 1)[0]
    deadline = time.monotonic() + 30
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.submit(spec())
    second = wait_lines(seen, 2)[1]
    assert first != second and second == str(worker.pid)
    assert worker.conn is not None
    worker.conn.close()


def test_other_tasks_are_left_to_flower_and_a_task_returns_its_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def flowers_launch(self: object, s: SimpleNamespace) -> str:
        calls.append(s.task_type)
        return "flower's"

    launch = warm.fork_launch(flowers_launch, warm.TaskWorker())
    assert launch(None, spec(TaskType.SERVER_APP)) == "flower's"
    assert calls == [TaskType.SERVER_APP]

    import flwr.supernode.runtime.run_clientapp as runtime

    def broken(**kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime, "run_clientapp", broken)
    assert warm.run_task(spec()) == 1  # never returns into the worker's loop with an error
    monkeypatch.setattr(runtime, "run_clientapp", lambda **kw: sys.exit(3))
    assert warm.run_task(spec()) == 3


def test_ending_a_task_runs_flowers_exit_handlers_and_keeps_the_process() -> None:
    from flwr.supercore.exit.exit_handler import add_exit_handler, registered_exit_handlers

    ran: list[str] = []
    add_exit_handler(lambda: ran.append("status pushed"))
    add_exit_handler(lambda: ran.append("before timer"), run_before_force_exit=True)
    with pytest.raises(SystemExit) as ended:
        warm.end_task(0)
    assert ended.value.code == 0 and ran == ["before timer", "status pushed"]
    assert not registered_exit_handlers  # nothing left to replay at the next task's end
    with pytest.raises(SystemExit) as failed:
        warm.end_task(110)  # Flower's error codes (>= 100) exit with 1
    assert failed.value.code == 1


def test_the_task_line_carries_the_phase_stamps(capsys: pytest.CaptureFixture[str]) -> None:
    module = SimpleNamespace(step=lambda x: x + 1)
    stamps: dict[str, float] = {}
    warm.timed(module, stamps, "step")
    assert module.step(1) == 2
    assert stamps["step_start"] <= stamps["step"]
    warm.report(spec(), 0, stamps)
    word, fields = capsys.readouterr().out.split(" ", 1)
    assert word == warm.TASK_LINE
    assert json.loads(fields) == {"task": 7, "pid": os.getpid(), "code": 0, **stamps}


def test_object_pulls_retry_sooner_than_flowers_second() -> None:
    module = SimpleNamespace(
        pull=lambda ids, initial_backoff=1, backoff_cap=10: (initial_backoff, backoff_cap)
    )
    warm.quick_retries(module, "pull")
    first, cap = module.pull([])
    assert (first, cap) == warm.OBJECT_RETRY and first < cap < 1


def test_the_supernodes_idle_pause_is_shortened(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(warm.time, "sleep", slept.append)
    pause = warm.IdlePause(0.25)
    pause.sleep(3)  # Flower's pause after a pull that found no message
    pause.sleep(0.5)  # Flower's wait for a task's reply
    pause.sleep(0.01)
    assert slept == [0.25, warm.REPLY_POLL, 0.01]
    assert pause.monotonic is warm.time.monotonic  # the rest of `time` is unchanged


def test_the_pull_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warm.PULL_INTERVAL_ENV, raising=False)
    assert warm.pull_interval() == warm.DEFAULT_PULL_INTERVAL
    monkeypatch.setenv(warm.PULL_INTERVAL_ENV, "1.5")
    assert warm.pull_interval() == 1.5
    for bad in ("0", "-1", "soon", "61"):
        monkeypatch.setenv(warm.PULL_INTERVAL_ENV, bad)
        with pytest.raises(ConfigError, match=f"{warm.PULL_INTERVAL_ENV} must be"):
            warm.pull_interval()


def test_the_shim_runs_this_module_with_this_interpreter(tmp_path: Path) -> None:
    shim = warm.write_shim(tmp_path / "bin") / "flower-superexec"
    assert os.access(shim, os.X_OK)
    assert f'"{sys.executable}" -m fedflower.deploy.warm "$@"' in shim.read_text()
