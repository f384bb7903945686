"""Parallel clients on one machine: a Grid whose virtual SuperNodes run in worker processes.

The ``PoolGrid`` is the :class:`~fedflower.engine.local.LocalGrid` with the ClientApp moved
into ``workers`` persistent processes. Each worker starts once per run (``spawn``: a fresh
interpreter, safe with TensorFlow's threads), receives the ClientApp once (cloudpickled, as
Flower's Ray engine ships it) and keeps its Keras model for the whole run, so a model is
built and traced once per worker. A push serializes each message to Flower's wire objects
as the in-process engine does and writes every distinct object once into shared memory
(:mod:`multiprocessing.shared_memory`): the global model broadcast to a round's clients is
copied once, whatever the number of clients, and a worker reads it from there. The first
message for each worker goes out before the others are serialized (they go to blocks of
their own). A block whose tasks have ended is filled again by a later push
(:class:`SegmentStore`), so a synchronous round reuses the same few blocks. Only small task
descriptions and the replies' objects travel over pipes. When there are as many workers as
CPUs, each worker runs on a CPU of its own, and the server's loop on the last one
(:func:`worker_cpus`).

Results equal the in-process engine's: a client's training depends only on the weights and
config it receives, its data and (seed, round, client) (see
:meth:`fedflower.client.keras_client.KerasClient.train_dataset`), not on which process runs
it; node state (``Context.state``) stays with the server process and travels with each task;
``pull_messages`` returns replies in the order asked for (node order for a synchronous round).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
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
    transmit,
)
from fedflower.engine.options import check_workers
from fedflower.errors import ConfigError

log = logging.getLogger(__name__)

JOIN_SECONDS = 10.0
"""How long a worker may take to stop after it is asked to before it is terminated."""
PREFETCH = 2
"""Tasks a worker holds at most: the one it runs and the one it starts next (see
:meth:`PoolGrid._dispatch`)."""
WORKER_START_SECONDS = 5.0
"""CPU seconds a worker takes to start: import TensorFlow, Keras and Flower, load the
ClientApp, build and trace the model (4-6 s measured for the default experiment's model on
the 2-core machine of ``bench/results/parallel.md``)."""


def default_workers(num_clients: int, cores: int | None = None) -> int:
    """Worker processes for ``simulation.workers=auto``: the cores, at most one per client
    training at once (``num_clients``).
    """
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


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """Spawn without the ``__main__`` module: a worker must not run the user's script again.

    ``spawn`` makes a child import the parent's main script (as ``__mp_main__``) before its
    target runs; a script that calls ``fedflower.run`` at top level, without the
    ``if __name__ == "__main__":`` guard, would start the experiment again in every worker,
    which fails there and leaves the parent writing the worker's start-up data to a pipe no
    one reads. A worker needs nothing from the main module: its ClientApp arrives
    cloudpickled (functions of ``__main__`` by value), its loop lives in this module.
    """
    main = sys.modules["__main__"]
    names = ("__spec__", "__file__")
    saved = {name: main.__dict__[name] for name in names if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


@dataclass(frozen=True)
class Task:
    """What a worker needs to run one message: where its objects are, and the node's context."""

    message_id: str
    object_id: str
    segments: tuple[str, ...]  # names of the shared memory blocks it reads
    objects: dict[str, tuple[int, int, int]]  # object id -> (segment, offset, length)
    context: Context


@dataclass(frozen=True)
class Done:
    """A worker's answer: the reply's wire objects and the node's state after the task."""

    message_id: str
    object_id: str
    wire: dict[str, bytes]
    context: Context


@dataclass(frozen=True)
class Ready:
    """A worker's first message: its ClientApp is loaded and it takes tasks."""

    pid: int


class Blocks:
    """The blocks of shared memory a worker has open: those of the task it runs.

    A push's tasks share its blocks (the global model is in the first), so a worker opens
    a block once for its tasks of a push instead of once a task (an open maps the block and
    registers it with the resource tracker: about 0.1 ms). A block the task in hand does not
    name is closed, and all are closed while the worker waits for work, so a block the
    server process frees is not held in memory by a worker.
    """

    def __init__(self) -> None:
        self.open: dict[str, SharedMemory] = {}

    def read(self, task: Task) -> dict[str, bytes]:
        """Copy ``task``'s objects out of its blocks (closing the blocks it does not name)."""
        for name in [n for n in self.open if n not in task.segments]:
            self.open.pop(name).close()
        for name in task.segments:
            if name not in self.open:
                self.open[name] = SharedMemory(name)
        bufs = [cast(memoryview, self.open[name].buf) for name in task.segments]
        return {oid: bytes(bufs[k][at : at + n]) for oid, (k, at, n) in task.objects.items()}

    def close(self) -> None:
        """Close every open block."""
        while self.open:
            self.open.popitem()[1].close()


def _threads() -> set[int]:
    """The ids of this process's threads (Linux: ``/proc/self/task``)."""
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def worker_cpus(size: int, cpus: Iterable[int] | None = None) -> list[int | None]:
    """The CPU each of ``size`` workers is pinned to: one each when they are as many as this
    process's CPUs (``os.sched_getaffinity``), else none (``None``: the scheduler's choice).

    Pinned, a worker is not moved between cores as the server process and the other
    workers wake up, and keeps its core's caches; the server's loop runs on the last
    worker's CPU meanwhile (:meth:`WorkerPool.start`). A pool smaller than the machine is
    not pinned, so that the workers of other runs on the machine are not crowded onto the
    same cores.
    """
    if cpus is None:
        if not hasattr(os, "sched_setaffinity"):
            return [None] * size
        cpus = os.sched_getaffinity(0)
    available = sorted(cpus)
    if size != len(available) or size < 2:
        return [None] * size
    return list(available)


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
    conn: Connection, threads: int, settings: tuple[int | None, bool], cpu: int | None = None
) -> None:
    """A worker's loop: run tasks until told to stop (``None``) or the server process is gone.

    The ClientApp comes first over ``conn``, not with the process's start-up arguments (see
    :meth:`WorkerPool.start`); ``cpu``: the CPU to run on (:func:`worker_cpus`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    if cpu is not None:
        with contextlib.suppress(OSError):  # a CPU taken away since: run anywhere
            os.sched_setaffinity(0, {cpu})
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
    try:
        client_app: ClientApp = cloudpickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return
    gc.freeze()  # as the server process's run (fedflower.engine.local.frozen_heap)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SUPERLINK_NODE_ID, 1
    with contextlib.suppress(OSError):
        conn.send(Ready(os.getpid()))
    blocks = Blocks()
    while True:
        try:
            if not conn.poll(0):  # no task in hand: hold no block while waiting
                blocks.close()
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        received = inflate(task.object_id, blocks.read(task), task.message_id)
        reply = run_client_app(client_app, received, task.context)
        wire: dict[str, bytes] = {}
        deflate(reply, wire)
        conn.send(Done(task.message_id, reply.object_id, wire, task.context))


def _send_quietly(conn: Connection, data: bytes) -> None:
    """Send ``data`` over ``conn``; a worker that is gone is :meth:`WorkerPool.receive`'s."""
    with contextlib.suppress(OSError):
        conn.send_bytes(data)


class Segment:
    """A block of shared memory holding a push's distinct wire objects until its tasks end.

    Filled by :meth:`fill`; once its last user releases it, it goes back to the
    :class:`SegmentStore` that made it, to be filled by a later push.
    """

    def __init__(self, size: int, store: SegmentStore) -> None:
        self.shm = SharedMemory(create=True, size=size)
        self.size = size
        self.store = store
        self.index: dict[str, tuple[int, int]] = {}
        self.users = 0

    def fill(self, wire: dict[str, bytes]) -> None:
        """Write ``wire``'s objects one after the other (they fit: :meth:`SegmentStore.take`)."""
        self.index = {}
        buf = cast(memoryview, self.shm.buf)
        at = 0
        for oid, data in wire.items():
            buf[at : at + len(data)] = data
            self.index[oid] = (at, len(data))
            at += len(data)

    def release(self) -> None:
        """One task (or the push) is done with the block; the last one gives it back."""
        self.users -= 1
        if self.users == 0:
            self.store.give_back(self)

    def unlink(self) -> None:
        """Free the block for good."""
        self.shm.close()
        self.shm.unlink()


def block_size(nbytes: int) -> int:
    """The size of a new block for ``nbytes``: a power of two from 4 KiB up to 1 MiB, then
    whole MiB, so that blocks fit the pushes of later rounds (of about the same size).
    """
    if nbytes <= 1 << 20:
        return max(4096, 1 << (max(nbytes, 1) - 1).bit_length())
    return -(-nbytes // (1 << 20)) << 20


class SegmentStore:
    """The blocks of shared memory of a run's pushes, each reused once its tasks have ended.

    A block is made once (created, mapped and registered with the resource tracker, and its
    name opened by each worker: 0.1 to 0.3 ms each) and filled again by later pushes: a
    synchronous round's pushes take the same few blocks every round. At most :attr:`KEEP`
    blocks wait unused; more are freed, and :meth:`close` frees all.
    """

    KEEP = 8

    def __init__(self) -> None:
        self.free: list[Segment] = []
        self.made: list[Segment] = []  # every block not freed yet

    def take(self, wire: dict[str, bytes]) -> Segment:
        """A block holding ``wire``'s objects: the smallest unused one they fit, or a new one."""
        nbytes = sum(len(data) for data in wire.values())
        fits = [s for s in self.free if s.size >= nbytes]
        if fits:
            segment = min(fits, key=lambda s: s.size)
            self.free.remove(segment)
        else:
            segment = Segment(block_size(nbytes), self)
            self.made.append(segment)
        segment.fill(wire)
        return segment

    def give_back(self, segment: Segment) -> None:
        """``segment``'s tasks have ended: keep it for a later push (the oldest beyond
        :attr:`KEEP` are freed).
        """
        self.free.append(segment)
        while len(self.free) > self.KEEP:
            self._unlink(self.free.pop(0))

    def _unlink(self, segment: Segment) -> None:
        self.made.remove(segment)
        segment.unlink()

    def names(self) -> set[str]:
        """The names of the blocks not freed."""
        return {s.shm.name for s in self.made}

    def close(self) -> None:
        """Free every block, in use or not."""
        for segment in self.made:
            segment.unlink()
        self.made, self.free = [], []


class WorkerPool:
    """Persistent worker processes running one ClientApp, started in the background.

    :meth:`start` only spawns the processes: each imports its backend and loads the
    ClientApp on its own, then says it is :class:`Ready` and from then on takes tasks. A
    worker that ends (killed, out of memory) gives back the tasks it held (:meth:`receive`).

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
        self.client_app = client_app
        self.threads = threads
        self.backends = list(backends) if backends is not None else [None] * size
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._senders: list[threading.Thread] = []  # each sends a worker its ClientApp
        self.ready: set[int] = set()  # said Ready and still running
        self.warm: set[int] = set()  # answered a task: its model is built and traced
        self.busy: dict[int, list[Task]] = {}  # sent, not answered, in the order sent
        self.gone: set[int] = set()
        # the thread pinned, its former CPUs, the threads of this process before, the CPU
        self._pinned: tuple[int, set[int], set[int], int] | None = None

    @property
    def started(self) -> bool:
        """Whether the processes were spawned."""
        return bool(self._procs)

    def start(self) -> None:
        """Spawn the worker processes; they get tasks once they are ready.

        A process's start-up arguments are written to it before :meth:`start` returns, into a
        pipe this process holds open until the write ends: a large argument (the pickled
        ClientApp holds its data, 931 KB for the digits CNN's) to a worker that dies before
        reading it (out of memory at start) would block this process for ever. So the
        workers start with small arguments, and the ClientApp follows over each worker's own
        connection, from a background thread; a dead worker makes that write fail, and
        :meth:`receive` sees it gone.
        """
        if self.started:
            return
        payload = cloudpickle.dumps(self.client_app)
        settings = random_settings()
        spawn = mp.get_context("spawn")
        cpus = worker_cpus(self.size)
        self._pin_this_thread(cpus[-1])
        for i, backend in enumerate(self.backends):
            ours, theirs = spawn.Pipe()
            proc = spawn.Process(
                target=_serve,
                args=(theirs, self.threads, settings, cpus[i]),
                name=f"fedflower-worker-{i}",
            )
            proc.daemon = True  # never outlives the server process
            # a spawned process starts with this environment and imports no main script
            with keras_backend_env(backend), main_module_hidden():
                proc.start()
            theirs.close()
            self._conns.append(ours)
            self._procs.append(proc)
            sender = threading.Thread(
                target=_send_quietly,
                args=(ours, payload),
                name=f"fedflower-worker-{i}-app",
                daemon=True,  # a worker that neither reads nor ends never holds this process
            )
            sender.start()
            self._senders.append(sender)
        log.debug("started %d worker processes", len(self._procs))

    def _pin_this_thread(self, cpu: int | None) -> None:
        """Run the calling thread (the server's loop) on ``cpu`` until :meth:`close`.

        With the workers pinned one per CPU, the server's loop shares the last worker's CPU:
        a task sent to another worker then wakes it on a CPU of its own, instead of
        preempting the server's loop, which the scheduler would move to the idle CPU only
        at its next balancing tick (milliseconds later), while the loop still has the
        phase's other tasks to send.
        """
        if cpu is None:
            return
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            self._pinned = (thread, os.sched_getaffinity(thread), _threads(), cpu)
            os.sched_setaffinity(thread, {cpu})

    def _unpin(self) -> None:
        """Give the pinned thread its CPUs back, and the threads it started meanwhile (a
        thread starts with its parent's CPUs: the backend's thread pools, made at its first
        operation).
        """
        if self._pinned is None:
            return
        thread, cpus, before, cpu = self._pinned
        self._pinned = None
        for tid in {thread} | (_threads() - before):
            with contextlib.suppress(OSError):  # the thread has ended
                if tid == thread or os.sched_getaffinity(tid) == {cpu}:  # inherited
                    os.sched_setaffinity(tid, cpus)

    @property
    def size(self) -> int:
        """Number of worker processes (started or not)."""
        return len(self.backends)

    def idle(self, backend: str | None, depth: int = 1) -> int | None:
        """A ready worker of ``backend`` holding fewer than ``depth`` tasks (fewest first)."""
        held = {w: len(self.busy.get(w, ())) for w in sorted(self.ready)}
        free = [w for w, n in held.items() if n < depth and self.backends[w] == backend]
        return min(free, key=held.__getitem__, default=None)

    def room(self) -> bool:
        """Whether a ready worker holds fewer than ``PREFETCH`` tasks."""
        return any(len(self.busy.get(w, ())) < PREFETCH for w in self.ready)

    def alive(self, backend: str | None) -> bool:
        """Whether a worker of ``backend`` still runs (ready or starting)."""
        return any(b == backend and w not in self.gone for w, b in enumerate(self.backends))

    def send(self, worker: int, task: Task) -> None:
        """Give ``task`` to ``worker``, after the ones it holds (an ended worker returns it)."""
        self.busy.setdefault(worker, []).append(task)
        with contextlib.suppress(OSError):  # ended: :meth:`receive` sees it and gives it back
            self._conns[worker].send(task)

    def receive(self, timeout: float | None) -> tuple[list[Done], list[Task]]:
        """Answers that arrive within ``timeout`` seconds (``None``: until one does).

        Also returns the tasks of workers that ended.
        """
        live = {c: w for w, c in enumerate(self._conns) if w not in self.gone}
        done: list[Done] = []
        lost: list[Task] = []
        for ready in wait(list(live), timeout) if live else []:
            conn = cast(Connection, ready)
            worker = live[conn]
            try:
                answer = conn.recv()
            except (EOFError, OSError):
                lost.extend(self._lose(worker))
                continue
            if isinstance(answer, Ready):
                self.ready.add(worker)
            else:
                held = self.busy.get(worker, [])
                self.busy[worker] = [t for t in held if t.message_id != answer.message_id]
                if not self.busy[worker]:
                    del self.busy[worker]
                self.warm.add(worker)
                done.append(answer)
        return done, lost

    def _lose(self, worker: int) -> list[Task]:
        """Forget a worker that ended; the tasks it held."""
        proc = self._procs[worker]
        proc.join(JOIN_SECONDS)
        log.warning(
            "worker process %s (pid %s) ended with exit code %s; its clients run elsewhere",
            worker,
            proc.pid,
            proc.exitcode,
        )
        self.gone.add(worker)
        self.ready.discard(worker)
        self.warm.discard(worker)
        return self.busy.pop(worker, [])

    def close(self) -> None:
        """Stop every worker: idle ones are asked (up to ``JOIN_SECONDS``), the rest terminated.

        A worker still starting or still on a task is not waited for.
        """
        idle = self.ready - set(self.busy)
        for worker in idle:
            with contextlib.suppress(OSError):  # already gone
                self._conns[worker].send(None)
        for worker, proc in enumerate(self._procs):
            if worker in idle:
                proc.join(JOIN_SECONDS)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for sender in self._senders:  # its worker read the ClientApp or ended: the write ends
            sender.join(JOIN_SECONDS)
        for conn in self._conns:
            conn.close()
        self._unpin()

    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._procs]


@dataclass
class Pending:
    """A pushed message until its reply is in and no worker holds it any more."""

    task: Task
    node: int
    backend: str | None
    wire: dict[str, bytes]  # the push's wire objects: a task run here is read from them
    objects: list[str]  # the message's object ids
    segments: tuple[Segment, ...]  # none: pushed before the workers started, runs here
    worker: int | None = None
    answered: bool = False
    here: bool = False


class PoolGrid(LocalGrid):
    """A :class:`LocalGrid` whose ClientApp runs in ``workers`` processes at once.

    Clients first run in this process, as on :class:`LocalGrid`. Once they have taken
    ``start_after`` CPU seconds here, the workers start in the background: a run shorter than
    that never pays their start-up (a worker takes several CPU seconds to import its backend
    and build and trace its model); a longer one has spent at most that much before the
    other cores join, the rule that keeps the ski-rental problem within twice the best
    choice made in hindsight (Karlin et al. 1988, "Competitive snoopy caching"). Until
    ``workers`` of them have answered a task (model built and traced), this process trains
    queued clients itself and takes over a task waiting on a worker that has not answered
    one yet; the first answer counts, and both are the same, since a client's result depends
    only on its message, data and seed. A worker that ends hands its tasks back: another
    worker or this process runs them.

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
    inline : bool
        Let this process train clients while workers start (``False``: start the workers at
        once and run here only the tasks no worker is left to run).
    start_after : float, optional
        CPU seconds of client work in this process before the workers start (default
        ``workers * WORKER_START_SECONDS``; ``0``: at once). Workers of another backend than
        this process's start at once.
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
        inline: bool = True,
        start_after: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(client_app, num_nodes, **options)
        self.backends = list(backends)
        self.inline = inline
        groups = worker_backends(self.backends, check_workers(workers))
        self.pool = WorkerPool(client_app, len(groups), threads, groups)
        self._pending: dict[str, Pending] = {}
        self.segments = SegmentStore()
        self._queue: deque[str] = deque()  # pushed, not yet started anywhere
        self._coming = 0  # messages of the push being queued, not serialized yet
        self._own = own_backend()
        self.start_after = (
            len(groups) * WORKER_START_SECONDS if start_after is None else start_after
        )
        self.client_seconds = 0.0  # CPU time of the clients run here
        if not inline or self.start_after <= 0 or set(groups) - {None, self._own}:
            self.pool.start()

    def backend_of(self, node: int) -> str | None:
        """The Keras backend node ``node`` runs on (``None``: this process's)."""
        if not self.backends:
            return None
        return self.backends[(node - FIRST_NODE_ID) % len(self.backends)]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Serialize the messages, put their objects in shared memory and queue their tasks.

        Once the workers run, the messages go out in steps: one per worker, then the one
        each may hold next (``PREFETCH``), then the rest, each step's new objects in a block
        of its own (the global model, the bulk of every message, is in the first), so the
        workers start their clients while this process serializes the others.
        """
        messages = list(messages)
        shared = self.pool.started
        steps = [self.pool.size] * PREFETCH if shared else []
        bounds = [*itertools.accumulate(steps, initial=0), len(messages)]
        wire: dict[str, bytes] = {}  # every object of the push, for the tasks run here
        where: dict[str, tuple[Segment, int, int]] = {}  # object id -> its block, offset, length
        ids: list[str] = []
        try:
            for start, end in itertools.pairwise(bounds):
                chunk = messages[start:end]
                if chunk:
                    self._coming = len(messages) - len(ids) - len(chunk)
                    ids += self._push(chunk, wire, where if shared else None)
        finally:  # a message that fails to serialize leaves no block behind
            self._coming = 0
            for segment in {id(s): s for s, _, _ in where.values()}.values():
                segment.release()  # the push's own hold (see _push)
        return ids

    def _push(
        self,
        messages: list[Message],
        wire: dict[str, bytes],
        where: dict[str, tuple[Segment, int, int]] | None,
    ) -> list[str]:
        """Queue and dispatch ``messages``; their new objects go to a block of shared memory
        (recorded in ``where``; ``None``: no shared memory, the tasks run here).

        A block is held by the push until its last message is queued, so that no answer
        taken meanwhile frees it while later messages still need it.
        """
        known = len(wire)
        tasks = []
        for message in messages:
            message_id = self.new_message_id(message)
            objects = deflate(message, wire)
            self._sizes[message_id] = sum(len(wire[oid]) for oid in objects)
            tasks.append((message_id, message, objects))
        if where is not None and len(wire) > known:
            segment = self.segments.take(dict(itertools.islice(wire.items(), known, None)))
            segment.users += 1  # the push's hold
            where.update({oid: (segment, at, n) for oid, (at, n) in segment.index.items()})
        for message_id, message, objects in tasks:
            node = message.metadata.dst_node_id
            self._wait_for_node(node)  # its state must be back before its next task
            blocks: tuple[Segment, ...] = ()
            index: dict[str, tuple[int, int, int]] = {}
            if where is not None:
                blocks = tuple(dict.fromkeys(where[oid][0] for oid in objects))
                for block in blocks:
                    block.users += 1
                for oid in objects:
                    block, at, n = where[oid]
                    index[oid] = (blocks.index(block), at, n)
            names = tuple(block.shm.name for block in blocks)
            task = Task(message_id, message.object_id, names, index, self.context(node))
            backend = self.backend_of(node)
            self._pending[message_id] = Pending(task, node, backend, wire, objects, blocks)
            self._queue.append(message_id)
        self._dispatch()
        return [message_id for message_id, _, _ in tasks]

    def _unanswered(self, message_ids: Iterable[str]) -> list[str]:
        return [i for i in message_ids if i in self._pending and not self._pending[i].answered]

    def _wait_for_node(self, node: int) -> None:
        while ids := self._unanswered(i for i, p in self._pending.items() if p.node == node):
            self._step(ids)

    def _dispatch(self) -> None:
        """Give queued tasks to workers; tasks of one backend start in the order they came.

        While more tasks wait (or are still being serialized) than there are workers, a
        worker also gets a second task (``PREFETCH``) to start as soon as it sends its answer,
        instead of waiting for this process to read that answer and send the next; the last
        tasks of a push go to idle workers only, so no worker holds two while another has none.
        """
        waiting: deque[str] = deque()
        for index, message_id in enumerate(self._queue):
            if not self.pool.room():  # every worker holds PREFETCH tasks: the rest wait
                waiting.extend(itertools.islice(self._queue, index, None))
                break
            pending = self._pending[message_id]
            later = len(self._queue) - index + self._coming
            depth = PREFETCH if later > self.pool.size else 1
            worker = self.pool.idle(pending.backend, depth) if pending.segments else None
            if worker is None:
                waiting.append(message_id)
                continue
            pending.worker = worker
            self.pool.send(worker, pending.task)
        self._queue = waiting

    def _step(self, wanted: Sequence[str]) -> None:
        """One move towards the replies ``wanted``.

        Take the workers' answers if any have arrived, else run a task here if this process
        should, else wait for an answer.
        """
        if self._collect(timeout=0):
            return
        here = self._for_here(wanted)
        if here is None:
            self._collect(timeout=None)
        else:
            self._run_here(self._pending[here])

    def _runs_here(self, pending: Pending) -> bool:
        return pending.backend in (None, self._own) and not pending.here

    def _for_here(self, wanted: Sequence[str]) -> str | None:
        """The task this process runs next, if any (see the class docstring)."""
        training = self.inline and len(self.pool.warm) < self.pool.size
        for message_id in self._queue:
            pending = self._pending[message_id]
            if self._runs_here(pending) and (training or not self.pool.alive(pending.backend)):
                return message_id
        for message_id in wanted if self.inline else ():
            pending = self._pending[message_id]
            cold = pending.worker is not None and pending.worker not in self.pool.warm
            if cold and self._runs_here(pending):
                return message_id
        if any(not self.pool.alive(self._pending[i].backend) for i in self._queue):
            raise RuntimeError(
                "every worker process of a backend in simulation.backends ended; see the "
                "warnings above"
            )
        return None

    def _run_here(self, pending: Pending) -> None:
        """Run a task in this process, as :class:`LocalGrid` does."""
        task = pending.task
        pending.here = True
        if task.message_id in self._queue:
            self._queue.remove(task.message_id)
        objects = {oid: pending.wire[oid] for oid in pending.objects}
        received = inflate(task.object_id, objects, task.message_id)
        began = time.process_time()
        reply = run_client_app(self.client_app, received, task.context)
        self.client_seconds += time.process_time() - began
        if self.client_seconds >= self.start_after:
            self.pool.start()
        reply_id = "r" + task.message_id[1:]
        self._answer(pending, task.context, transmit(reply, reply_id, None, self._sizes))

    def _answer(self, pending: Pending, context: Context, reply: Message) -> None:
        """Keep the first reply to a task and the node's state after it."""
        if not pending.answered:
            pending.answered = True
            self.keep(context)
            self._replies[pending.task.message_id] = reply
        self._settle(pending)

    def _settle(self, pending: Pending) -> None:
        """Forget an answered task no worker holds: its shared memory may go."""
        if pending.answered and pending.worker is None:
            for segment in pending.segments:
                segment.release()
            del self._pending[pending.task.message_id]

    def _collect(self, timeout: float | None) -> bool:
        """Take the workers' answers (and tasks of workers that ended); whether anything came."""
        ready = len(self.pool.ready)
        done, lost = self.pool.receive(timeout)
        for answer in done:
            pending = self._pending[answer.message_id]
            pending.worker = None
            if pending.answered:  # this process ran it first
                self._settle(pending)
                continue
            reply_id = "r" + answer.message_id[1:]
            self._sizes[reply_id] = sum(len(b) for b in answer.wire.values())
            reply = inflate(answer.object_id, answer.wire, reply_id)
            self._answer(pending, answer.context, reply)
        for task in reversed(lost):  # put back at the front, in the order they were sent
            pending = self._pending[task.message_id]
            pending.worker = None
            if pending.answered:
                self._settle(pending)
            else:
                self._queue.appendleft(task.message_id)
        self._dispatch()
        return bool(done or lost) or len(self.pool.ready) != ready

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Wait for the replies to ``message_ids`` still running; return them in that order."""
        message_ids = list(message_ids)
        while wanted := self._unanswered(message_ids):
            self._step(wanted)
        return super().pull_messages(message_ids)

    def close(self) -> None:
        """Stop the workers and free the shared memory of tasks that never ended."""
        self.pool.close()
        self.segments.close()
        self._pending.clear()
        self._queue.clear()


def own_backend() -> str:
    """The Keras backend of this process (the tasks it may run itself)."""
    import keras

    return str(keras.backend.backend())


def run_pool(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    workers: int,
    threads: int = 1,
    backends: Sequence[str] = (),
    start_after: float | None = None,
) -> None:
    """Run ``server_app`` against ``num_nodes`` virtual SuperNodes served by worker processes.

    ``backends`` cycles Keras backends over the nodes; ``start_after``: CPU seconds of client
    work here before the workers start (see :class:`PoolGrid`). The workers are stopped when
    the run ends or fails (Ctrl-C included).
    """
    grid = PoolGrid(client_app, num_nodes, workers, threads, backends, start_after=start_after)
    try:
        serve(server_app, grid)
    finally:
        grid.close()
