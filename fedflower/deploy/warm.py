"""A warm SuperExec for a SuperNode: ClientApp tasks forked from a process that imported once.

Flower 1.42's SuperNode hands every task (a train or an evaluate message) to its SuperExec,
which starts a new ``flwr-clientapp`` process for it; that process imports Flower,
TensorFlow and fedflower before it runs one task and exits. The import of TensorFlow is most
of a deployed round on a small model (``bench/results/deployment.md``). This module is a
drop-in ``flower-superexec``: Flower's own SuperExec loop (``flower_superexec``, unchanged
arguments) in a process that has imported TensorFlow and fedflower's ClientApp module once;
each ClientApp task is launched with ``os.fork()`` instead of a new interpreter, and the
child runs Flower's ``run_clientapp`` (the same task protocol, token and TLS as
``flwr-clientapp``) and exits. Nothing of a task survives into the next: each child builds
its model and reads its node's data again, as a new process would, and the SuperNode's
``Context.state`` is still the only state kept between tasks.

No TensorFlow operation runs in the parent before a fork (only imports), so every child
initializes TensorFlow's runtime itself. :class:`~fedflower.deploy.federation.LocalFederation`
puts this command first on its SuperNodes' ``PATH`` as ``flower-superexec``
(:func:`write_shim`); elsewhere a SuperNode started with ``--isolation process`` can be
given ``python -m fedflower.deploy.warm`` with ``flower-superexec``'s arguments.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

SHIM_NAME = "flower-superexec"
"""The command a SuperNode in subprocess isolation starts for its tasks (looked up on PATH)."""


def fork_launch(original: Any) -> Any:
    """``SubprocessExecutor.launch`` that forks ClientApp tasks and leaves the rest to Flower."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.types import LaunchResult

    def launch(self: Any, spec: Any) -> Any:
        if spec.task_type != TaskType.CLIENT_APP:
            return original(self, spec)
        pid = os.fork()
        if pid == 0:  # the task's process
            os._exit(run_task(spec))
        threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()  # reap it
        return LaunchResult.accepted()

    return launch


def run_task(spec: Any) -> int:
    """Run one ClientApp task as ``flwr-clientapp --token ...`` would; its exit code."""
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    try:
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(
                spec.root_certificates_path, spec.insecure
            ),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
    except SystemExit as exc:  # Flower's flwr_exit ends every task with sys.exit
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        return 1
    return 0


def write_shim(directory: Path) -> Path:
    """Write ``flower-superexec`` into ``directory``: this module with the same interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / SHIM_NAME
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fedflower.deploy.warm "$@"\n')
    shim.chmod(0o755)
    return directory


def main() -> None:
    """Import what every ClientApp task needs, then run Flower's SuperExec with forked tasks."""
    from flwr.supercore.cli import flower_superexec
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

    import fedflower.deploy.app  # noqa: F401  (TensorFlow, Keras, Flower, fedflower, once)

    SubprocessExecutor.launch = fork_launch(SubprocessExecutor.launch)  # type: ignore[method-assign]
    sys.argv[0] = SHIM_NAME
    flower_superexec()


if __name__ == "__main__":
    main()
