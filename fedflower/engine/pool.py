"""Parallel clients on one machine: a Grid whose virtual SuperNodes run in worker processes.

The ``PoolGrid`` is the :class:`~fedflower.engine.local.LocalGrid` with the ClientApp moved
into ``workers`` persistent processes. Each worker starts once per run (``spawn``: a fresh
interpreter, safe with TensorFlow's threads), receives the ClientApp once (cloudpickled, as
Flower's Ray engine ships it) and keeps its Keras model for the whole run, so a model is
built and traced once per worker. A push serializes each message to Flower's wire objects
as the in-process engine does and writes every distinct object once into one block of shared
memory (:mod:`multiprocessing.shared_memory`): the global model broadcast to a round's clients
is copied once, whatever the number of clients, and a worker reads it from there. Only small
task descriptions and the replies' objects travel over pipes.

Results equal the in-process engine's: a client's training depends only on the weights and
config it receives, its data and (seed, round, client) (see
:meth:`fedflower.client.keras_client.KerasClient.train_dataset`), not on which process runs
it; node state (``Context.state``) stays with the server process and travels with each task;
``pull_messages`` returns replies in the order asked for (node order for a synchronous round).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.shared_memory import SharedMemory
from typing import Any, cast

import cloudpickle
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import ServerApp
from flwr.supercore.task_identity import TaskIdentity

from fedflower.backend import BACKENDS
from fedflower.engine.local import (
    FIRST_NODE_ID,
    RUN_ID,
    LocalGrid,
    deflate,
    inflate,
    run_client_app,
    serve,
)
from fedflower.engine.options import check_workers
from fedflower.errors import ConfigError

log = logging.getLogger(__name__)

JOIN_SECONDS = 10.0
"""How long a worker may take to stop after it is asked to before it is terminated."""


def default_workers(num_clients: int, cores: int | None = None) -> int:
    """Worker processes for ``simulation.workers=auto``: the cores, at most one per client."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, min(cores, num_clients))


def check_backends(
    backends: Any, engine: str = "local", key: str = "simulation.backends", installed: bool = False
) -> list[str]:
    """``backends`` as a list of Keras backends, or a ``ConfigError`` naming ``key``.

    Worker processes per backend are the ``local`` engine's (``engine``: the
    ``simulation.backend``); ``installed``: each backend's package must be importable here.
    """
    import importlib.util

    names = [str(b) for b in (backends or [])]
    if names and engine != "local":
        raise ConfigError(
            f"simulation.backends needs simulation=local (worker processes per backend), got "
            f"simulation.backend={engine!r}; use simulation=local or leave simulation.backends"
        )
    for name in names:
        if name not in BACKENDS:
            raise ConfigError(
                f"{key} must list Keras backends of {list(BACKENDS)}, "
                f"got {name!r}; e.g. tensorflow,jax"
            )
        if installed and importlib.util.find_spec(name) is None:
            raise ConfigError(
                f"{key} must list installed backends, got {name!r}, which is "
                f"not installed; install it (pip install {name}) or leave it out"
            )
    return names


def worker_backends(backends: Sequence[str], workers: int) -> list[str | None]:
    """The backend of each worker process: every backend of ``backends`` gets at least one.

    Without ``backends`` every worker runs this process's backend (``None``: inherited).
    """
    groups = list(dict.fromkeys(backends))
    if not groups:
        return [None] * workers
    return [groups[i % len(groups)] for i in range(max(workers, len(groups)))]


@contextlib.contextmanager
def keras_backend_env(backend: str | None) -> Iterator[None]:
    """``KERAS_BACKEND=backend`` in this process's environment for the block (``None``: as is)."""
    if backend is None:
        yield
        return
    saved = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = backend
    try:
        yield
    finally:
        if saved is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = saved


@dataclass(frozen=True)
class Task:
    """What a worker needs to run one message: where its objects are, and the node's context."""

    message_id: str
    object_id: str
    segment: str
    objects: dict[str, tuple[int, int]]  # object id -> (offset, length) in the segment
    context: Context


@dataclass(frozen=True)
class Done:
    """A worker's answer: the reply's wire objects and the node's state after the task."""

    message_id: str
    object_id: str
    wire: dict[str, bytes]
    context: Context


def _read(task: Task) -> dict[str, bytes]:
    """Copy a task's objects out of the push's shared memory."""
    shm = SharedMemory(task.segment)
    try:
        buf = cast(memoryview, shm.buf)
        return {oid: bytes(buf[at : at + n]) for oid, (at, n) in task.objects.items()}
    finally:
        shm.close()


def random_settings() -> tuple[int | None, bool]:
    """The global seed of this process, and whether TensorFlow was asked for deterministic ops.

    A seeded op (e.g. a client's shuffle) draws from the pair (global seed, op seed), so a
    worker must start with the server process's global seed to give the same batches. On
    TensorFlow the seed is TensorFlow's; on the other backends Keras' (``set_random_seed``).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        from keras.src.utils.rng_utils import get_random_seed  # no public getter

        return get_random_seed(), False
    from tensorflow.python.eager import context
    from tensorflow.python.framework.config import is_op_determinism_enabled

    return context.global_seed(), is_op_determinism_enabled()  # no public getters


def _serve(
    conn: Connection, payload: bytes, threads: int, settings: tuple[int | None, bool]
) -> None:
    """A worker's loop: run tasks until told to stop (``None``) or the server process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    from fedflower.backend import limit_threads, quiet_tensorflow_import

    quiet_tensorflow_import(if_installed=True)  # Keras' seeding imports it on every backend
    import keras

    limit_threads(threads)  # before the first op: a fresh process, so its backend has run none
    seed, deterministic = settings
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    client_app: ClientApp = cloudpickle.loads(payload)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SUPERLINK_NODE_ID, 1
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        received = inflate(task.object_id, _read(task), task.message_id)
        reply = run_client_app(client_app, received, task.context)
        wire: dict[str, bytes] = {}
        deflate(reply, wire)
        conn.send(Done(task.message_id, reply.object_id, wire, task.context))


class Segment:
    """One push's distinct wire objects in one block of shared memory, until its tasks end."""

    def __init__(self, wire: dict[str, bytes]) -> None:
        self.index: dict[str, tuple[int, int]] = {}
        at = 0
        for oid, data in wire.items():
            self.index[oid] = (at, len(data))
            at += len(data)
        self.shm = SharedMemory(create=True, size=max(at, 1))
        buf = cast(memoryview, self.shm.buf)
        for oid, data in wire.items():
            start, n = self.index[oid]
            buf[start : start + n] = data
        self.users = 0

    def release(self) -> None:
        """One task is done with the block; the last one frees it."""
        self.users -= 1
        if self.users <= 0:
            self.shm.close()
            self.shm.unlink()


class WorkerPool:
    """Persistent worker processes running one ClientApp; tasks go to idle workers.

    Parameters
    ----------
    client_app : ClientApp
        The app each worker runs (shipped once, with cloudpickle).
    size : int
        Number of worker processes (with ``backends``: at least one per backend).
    threads : int
        CPU threads of each worker's Keras backend (``0``: the backend's default).
    backends : sequence of str or None, optional
        The Keras backend of each worker (``KERAS_BACKEND`` in its environment; ``None``:
        this process's); a task names the backend it must run on.
    """

    def __init__(
        self,
        client_app: ClientApp,
        size: int,
        threads: int = 1,
        backends: Sequence[str | None] | None = None,
    ) -> None:
        payload = cloudpickle.dumps(client_app)
        settings = random_settings()
        spawn = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self.backends = list(backends) if backends is not None else [None] * size
        for i, backend in enumerate(self.backends):
            ours, theirs = spawn.Pipe()
            proc = spawn.Process(
                target=_serve,
                args=(theirs, payload, threads, settings),
                name=f"fedflower-worker-{i}",
            )
            proc.daemon = True  # never outlives the server process
            with keras_backend_env(backend):  # a spawned process starts with this environment
                proc.start()
            theirs.close()
            self._conns.append(ours)
            self._procs.append(proc)
        self._idle: dict[str | None, deque[int]] = {}
        for worker, backend in enumerate(self.backends):
            self._idle.setdefault(backend, deque()).append(worker)
        self._queue: deque[tuple[str | None, Task]] = deque()
        self._busy: dict[int, Task] = {}

    def submit(self, task: Task, backend: str | None = None) -> None:
        """Queue a task for a worker of ``backend``; it starts as soon as one is idle."""
        if backend not in self._idle:
            backend = None if None in self._idle else next(iter(self._idle))
        self._queue.append((backend, task))
        self._dispatch()

    def _dispatch(self) -> None:
        waiting: deque[tuple[str | None, Task]] = deque()
        while self._queue:
            backend, task = self._queue.popleft()
            idle = self._idle[backend]
            if not idle:  # tasks of one backend start in the order they came
                waiting.append((backend, task))
                continue
            worker = idle.popleft()
            self._busy[worker] = task
            self._conns[worker].send(task)
        self._queue = waiting

    def collect(self) -> list[Done]:
        """Wait until at least one task ends; return every answer that has arrived."""
        if not self._busy:
            return []
        ready = wait([self._conns[w] for w in self._busy])
        done = []
        for worker in [w for w in self._busy if self._conns[w] in ready]:
            try:
                done.append(self._conns[worker].recv())
            except EOFError as exc:
                code = self._procs[worker].exitcode
                raise RuntimeError(f"worker process {worker} died (exit code {code})") from exc
            del self._busy[worker]
            self._idle[self.backends[worker]].append(worker)
        self._dispatch()
        return done

    def close(self) -> None:
        """Stop every worker: ask, wait up to ``JOIN_SECONDS``, then terminate."""
        for conn in self._conns:
            with contextlib.suppress(OSError):  # already gone
                conn.send(None)
        for proc in self._procs:
            proc.join(JOIN_SECONDS)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for conn in self._conns:
            conn.close()

    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._procs]


class PoolGrid(LocalGrid):
    """A :class:`LocalGrid` whose ClientApp runs in ``workers`` processes at once.

    Parameters
    ----------
    client_app : ClientApp
        The app every node runs.
    num_nodes : int
        Number of virtual SuperNodes; node ``i`` gets ``partition-id = i``.
    workers : int
        Number of worker processes.
    threads : int
        CPU threads of each worker's Keras backend.
    backends : sequence of str, optional
        Keras backends cycled over the nodes (partition ``i`` runs on ``backends[i % n]``),
        each in worker processes of its own; empty: every worker on this process's backend.
    **options
        ``node_configs`` and ``run_config``, as for :class:`LocalGrid`.
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        workers: int,
        threads: int = 1,
        backends: Sequence[str] = (),
        **options: Any,
    ) -> None:
        super().__init__(client_app, num_nodes, **options)
        self.backends = list(backends)
        groups = worker_backends(self.backends, check_workers(workers))
        self.pool = WorkerPool(client_app, len(groups), threads, groups)
        self._running: dict[str, tuple[Segment, int]] = {}  # message id -> (segment, node)

    def backend_of(self, node: int) -> str | None:
        """The Keras backend node ``node`` runs on (``None``: this process's)."""
        if not self.backends:
            return None
        return self.backends[(node - FIRST_NODE_ID) % len(self.backends)]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Serialize the messages, put their objects in shared memory and queue their tasks."""
        messages = list(messages)
        if not messages:
            return []
        wire: dict[str, bytes] = {}
        tasks = []
        for message in messages:
            message_id = self.new_message_id(message)
            objects = deflate(message, wire)
            self._sizes[message_id] = sum(len(wire[oid]) for oid in objects)
            tasks.append((message_id, message, objects))
        segment = Segment(wire)
        for message_id, message, objects in tasks:
            node = message.metadata.dst_node_id
            self._wait_for_node(node)  # its state must be back before its next task
            segment.users += 1
            self._running[message_id] = (segment, node)
            index = {oid: segment.index[oid] for oid in objects}
            task = Task(message_id, message.object_id, segment.shm.name, index, self.context(node))
            self.pool.submit(task, self.backend_of(node))
        return [message_id for message_id, _, _ in tasks]

    def _wait_for_node(self, node: int) -> None:
        while any(n == node for _, n in self._running.values()):
            self._receive()

    def _receive(self) -> None:
        for done in self.pool.collect():
            segment, _ = self._running.pop(done.message_id)
            segment.release()
            self.keep(done.context)
            reply_id = "r" + done.message_id[1:]
            self._sizes[reply_id] = sum(len(b) for b in done.wire.values())
            self._replies[done.message_id] = inflate(done.object_id, done.wire, reply_id)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Wait for the replies to ``message_ids`` still running; return them in that order."""
        message_ids = list(message_ids)
        while any(i in self._running for i in message_ids):
            self._receive()
        return super().pull_messages(message_ids)

    def close(self) -> None:
        """Stop the workers and free the shared memory of tasks that never ended."""
        self.pool.close()
        for segment in {id(s): s for s, _ in self._running.values()}.values():
            segment.users = 0
            segment.release()
        self._running.clear()


def run_pool(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    workers: int,
    threads: int = 1,
    backends: Sequence[str] = (),
) -> None:
    """Run ``server_app`` against ``num_nodes`` virtual SuperNodes served by worker processes.

    ``backends`` cycles Keras backends over the nodes (see :class:`PoolGrid`). The workers
    are stopped when the run ends or fails (Ctrl-C included).
    """
    grid = PoolGrid(client_app, num_nodes, workers, threads, backends)
    try:
        serve(server_app, grid)
    finally:
        grid.close()
