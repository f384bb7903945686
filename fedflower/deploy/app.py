"""The Flower app that ``flwr run`` starts: fedflower's experiment on a SuperLink and SuperNodes.

``pyproject.toml`` declares ``server_app`` and ``client_app`` under
``[tool.flwr.app.components]``. Both compose the same Hydra config as the ``fedflower``
command from the run config's ``overrides`` string (:mod:`fedflower.deploy.config`):

* the ServerApp is the one simulation runs (:func:`fedflower.apps.server_app`):
  strategy plugin, centralized evaluation, per-round lines, ``metrics.jsonl``,
  ``results.json``, ``history.png`` and ``model.keras`` in the run's output directory;
* the ClientApp is assembled as simulation's (:func:`fedflower.apps.client_app`: the same
  mods in the same order around :class:`KerasClient`), training on the SuperNode's own data
  (:mod:`fedflower.deploy.local_data`). Bad or missing data raises
  :class:`~fedflower.errors.DataError`, which Flower sends back as the node's error reply;
  the server logs it in one line and aggregates the other nodes' updates.
* a table's preprocessing is fitted on the SuperNodes' statistics before training
  (:mod:`fedflower.server.preprocessing`): each node answers the query from its own file;
* attacks (a red-team exercise) run only when the run asks for them with
  ``attack=<name> attack.in_deployment=true`` in its overrides; then the SuperNodes whose node
  config says ``malicious=true`` attack (:func:`node_role`), never by default.

Federated averaging: McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017, arXiv:1602.05629.
"""

# ruff: noqa: E402  (TensorFlow must be imported quietly before the modules that use it)
from __future__ import annotations

from fedflower.backend import quiet_tensorflow_import
from fedflower.startup import quiet_library_notices, set_environment_defaults

set_environment_defaults()  # before TensorFlow is imported below
quiet_tensorflow_import()  # every flwr-clientapp process imports TensorFlow: without its banner
quiet_library_notices()  # Flower's simulation process imported its engine before this module

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.serverapp import Grid, ServerApp
from omegaconf import open_dict

from fedflower import apps, keys, wire
from fedflower.client.app import cached
from fedflower.client.attacks import Attack, Role, attack_mod, seeded_role
from fedflower.client.keras_client import KerasClient
from fedflower.client.personalization import Personalization, local_names
from fedflower.data.source import ClientData, Columns, TabularSource
from fedflower.deploy.config import experiment_config, output_dir
from fedflower.deploy.local_data import content_id, node_data, node_table
from fedflower.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ModelBuilder = Callable[[tuple[int, ...], int], Any]


# -- server ----------------------------------------------------------------------------------
def load_source(cfg: Any) -> TabularSource:
    """The dataset whose held-out test set the server evaluates the global model on.

    A table's rows stay raw: :func:`federated_source` fits their preprocessing on the nodes'
    statistics.
    """
    from fedflower.components import instantiate_data

    source: TabularSource = instantiate_data(cfg.dataset, "server's dataset")
    return source


def federated_source(grid: Grid, cfg: Any, source: TabularSource) -> TabularSource:
    """``source`` with a table's preprocessing fitted on the SuperNodes' statistics."""
    from omegaconf import OmegaConf

    from fedflower.server.preprocessing import Query, federate

    privacy = OmegaConf.to_container(cfg.privacy, resolve=True)
    timeout = cfg.strategy.get("round_timeout")
    query = Query(int(cfg.num_clients), privacy, int(cfg.seed), timeout)  # type: ignore[arg-type]
    return federate(grid, source, query)


SIMULATED_NODES_WAIT = 10.0
"""Seconds a ServerApp in Flower's simulation waits for its virtual SuperNodes to register."""


def check_simulated_nodes(grid: Grid, num_clients: int, wait: float = SIMULATED_NODES_WAIT) -> None:
    """In Flower's simulation, fail at once when there are fewer SuperNodes than clients.

    All virtual SuperNodes exist from the start there (``--federation-config
    num-supernodes=N``; Flower's default is 2), so the strategy would wait for the missing
    ones forever. A deployment's SuperNodes may still connect: it is left to wait.
    """
    from flwr.superlink.grid import InMemoryGrid

    if not isinstance(grid, InMemoryGrid):
        return
    deadline = time.monotonic() + wait
    while (nodes := len(list(grid.get_node_ids()))) < num_clients and time.monotonic() < deadline:
        time.sleep(0.5)
    if nodes < num_clients:
        raise ConfigError(
            f"Flower's simulation runs {nodes} SuperNodes but the experiment has "
            f"num_clients={num_clients}: give it as many, flwr run . --stream "
            f'--federation-config "num-supernodes={num_clients}", or fewer clients, '
            f"--run-config \"{keys.RUN_OVERRIDES}='num_clients={nodes}'\""
        )


SERVER_STAMPS_ENV = "FEDFLOWER_SERVER_STAMPS"
"""With ``1`` in the ServerApp's environment, :func:`stamp_grid` writes its message stamps."""

SERVER_LINE = "fedflower-server"
"""The first word of the line the ServerApp writes per push of messages and pull of replies."""


def stamp_grid(grid: Grid) -> None:
    """Write a :data:`SERVER_LINE` when ``grid`` pushes messages or returns replies.

    Only with :data:`SERVER_STAMPS_ENV` set (``bench/deployment.py`` reads the lines beside
    the SuperNodes' own stamps, :mod:`fedflower.deploy.warm`).
    """
    import json
    import os
    import sys

    if os.environ.get(SERVER_STAMPS_ENV) != "1":
        return
    push, pull = grid.push_messages, grid.pull_messages

    def write(fields: dict[str, Any]) -> None:
        sys.stdout.write(f"{SERVER_LINE} {json.dumps(fields)}\n")
        sys.stdout.flush()

    def pushed(messages: Any) -> Any:
        start = time.time()
        ids = list(push(messages))
        write({"push_start": start, "pushed": time.time(), "messages": len(ids)})
        return ids

    def pulled(message_ids: Any) -> Any:
        replies = list(pull(message_ids))
        if replies:
            write({"pulled": time.time(), "replies": len(replies)})
        return replies

    grid.push_messages, grid.pull_messages = pushed, pulled  # type: ignore[method-assign]


server_app = ServerApp()

DEPLOYED_ROUND_TIMEOUT = 300.0
"""Seconds a deployed round waits for replies unless ``strategy.round_timeout`` says otherwise."""


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    """Run the experiment the run config names against the SuperNodes of ``grid``."""
    from fedflower.server.rules import validate

    cfg = experiment_config(context.run_config)
    if cfg.strategy.get("round_timeout") is None:  # a deployment's rounds never wait forever
        with open_dict(cfg):  # for a dead SuperNode (typed strategies hold round_timeout: null)
            cfg.strategy.round_timeout = DEPLOYED_ROUND_TIMEOUT
    validate(cfg)
    check_simulated_nodes(grid, int(cfg.num_clients))
    stamp_grid(grid)
    apps.prepare(cfg)
    out = output_dir(context.run_config, context.run_id)
    source = federated_source(grid, cfg, load_source(cfg))
    app, results = apps.server_app(cfg, out, source)
    app(grid, context)
    if not results:
        raise RuntimeError("the server app stopped before the run finished; see the log above")
    log.info("outputs in %s", out.resolve())


# -- client ----------------------------------------------------------------------------------
def num_classes_of(parameters: list[np.ndarray]) -> int:
    """Classes of a fedflower model from its output bias: 1 unit (sigmoid) means 2 classes."""
    units = int(parameters[-1].shape[-1]) if parameters and parameters[-1].ndim else 1
    return 2 if units == 1 else units


def describe_mismatch(
    local: list[tuple[int, ...]],
    received: list[tuple[int, ...]],
    input_shape: tuple[int, ...],
    names: list[str],
) -> str:
    """Say how the node's model (built for its data) differs from the global model."""
    if len(local) != len(received):
        return f"the global model has {len(received)} weight arrays, this node's {len(local)}"
    for i, (a, b) in enumerate(zip(local, received, strict=True)):
        if a != b:
            if i == 0 and len(a) == 2 and len(b) == 2:
                return (
                    f"the global model expects {b[0]} features per example but this node's "
                    f"data has {a[0]} (input shape {input_shape})"
                )
            return f"variable {names[i]!r} has shape {b} in the global model, {a} on this node"
    return "shapes differ"


class NodeClient(KerasClient):
    """A :class:`KerasClient` for a SuperNode: the model is built on the first message.

    The input shape comes from the node's own data, the number of classes from the global
    model's output layer (or the node config's ``num-classes``). A global model the local
    data does not fit raises :class:`DataError` naming both shapes.

    Parameters
    ----------
    build : callable
        ``build(input_shape, num_classes)`` returns a compiled Keras model.
    data : ClientData
        The node's training and validation data.
    cid : int
        A stable id of the node's data, used to derive its seeds.
    seed : int
        The run's seed.
    num_classes : int, optional
        Overrides the number of classes read from the global model.
    """

    def __init__(
        self,
        build: ModelBuilder,
        data: ClientData,
        cid: int = 0,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(None, data, cid=cid, seed=seed)  # the model is built on the first message
        self._build = build
        self._num_classes = num_classes

    def receive(self, record: ArrayRecord, what: str = "the received model") -> list[np.ndarray]:
        """Build the model if needed; the global model's arrays, matched by variable path."""
        self._build_for(record.to_numpy_ndarrays())
        arrays = wire.arrays_for(record, wire.variable_names(self.model), None, what)
        self._check_fit(arrays)
        return arrays

    def set_parameters(self, parameters: list[np.ndarray]) -> None:
        """Build the model if needed, check the global weights fit it, load them."""
        self._build_for(parameters)
        self._check_fit(parameters)
        super().set_parameters(parameters)

    def _build_for(self, parameters: list[np.ndarray]) -> None:
        if self.model is None:
            input_shape = tuple(int(d) for d in self.data.x_train.shape[1:])
            self.model = self._build(input_shape, self._num_classes or num_classes_of(parameters))

    def _check_fit(self, parameters: list[np.ndarray]) -> None:
        """Raise ``DataError`` unless the global model fits this node's data and labels."""
        input_shape = tuple(int(d) for d in self.data.x_train.shape[1:])
        local = [tuple(v.shape) for v in self.model.weights]
        received = [tuple(np.shape(p)) for p in parameters]
        if local != received:
            names = wire.variable_names(self.model)
            raise DataError(
                "this node's data does not fit the global model: "
                f"{describe_mismatch(local, received, input_shape, names)}"
            )
        num_classes = self._num_classes or num_classes_of(parameters)
        labels = np.concatenate([self.data.y_train, self.data.y_val])
        if labels.size and labels.max() >= num_classes:
            raise DataError(
                f"this node's labels go up to {labels.max()} but the global model has "
                f"{num_classes} classes (labels 0..{num_classes - 1})"
            )


def node_cid(node_config: dict[str, Any], node_id: int) -> int:
    """A stable id for seeding: the partition id, else a hash of the data file, else the node."""
    if keys.PARTITION_ID in node_config:
        return int(node_config[keys.PARTITION_ID])
    if keys.DATA_PATH in node_config:
        return content_id(str(node_config[keys.DATA_PATH]))
    return int(node_id)


def run_key(context: Context) -> str:
    """What a SuperNode's process cache keeps objects for: one run (its id and overrides).

    A warm task worker (:mod:`fedflower.deploy.warm`) runs many tasks of a run in one
    process: they share the node's data and the compiled, traced model, as a simulation's
    clients share them in a worker process; a task of another run starts from nothing.
    """
    overrides = str(context.run_config.get(keys.RUN_OVERRIDES, ""))
    return f"{context.run_id} {overrides}"


def node_client_fn(context: Context) -> KerasClient:
    """Build the SuperNode's client from the run config (experiment) and node config (data)."""
    from fedflower.components import configure_threads, model_factory

    cfg = experiment_config(context.run_config)
    configure_threads(cfg.simulation.tf_threads)
    node_config = dict(context.node_config)
    run = run_key(context)
    data = node_features(context, cfg) or cached(
        run, ("data", *sorted(node_config.items())), lambda: node_data(node_config, cfg)
    )
    num_classes = node_config.get(keys.NUM_CLASSES)

    def build(input_shape: tuple[int, ...], classes: int) -> Any:
        """One compiled model per experiment and shape in this process (reused across nodes)."""
        return cached(
            run, ("model", input_shape, classes), model_factory(cfg, input_shape, classes)
        )

    return NodeClient(
        build,
        data,
        cid=node_cid(node_config, context.node_id),
        seed=int(cfg.seed),
        num_classes=int(num_classes) if num_classes is not None else None,
    )


def node_raw(context: Context, columns: Columns) -> tuple[ClientData, Columns]:
    """The SuperNode's raw table rows for the server's statistics query (cached per run)."""
    cfg = experiment_config(context.run_config)
    node_config = dict(context.node_config)
    key = ("table", *sorted(node_config.items()))
    return cached(run_key(context), key, lambda: node_table(node_config, cfg, columns))


def node_features(context: Context, cfg: Any) -> ClientData | None:
    """The node's table rows as features, once it keeps the fitted preprocessing (else None)."""
    from fedflower.client.statistics import kept, prepared

    found = kept(context)
    if found is None:
        return None
    columns, fitted, digest = found
    key = ("features", digest, *sorted(dict(context.node_config).items()))
    return cached(run_key(context), key, lambda: prepared(*node_raw(context, columns), fitted))


def run_group(group: str) -> Callable[[Context], dict[str, Any]]:
    """The run's ``group`` config group (``privacy``, ``secagg``) from a SuperNode's context."""
    cache: dict[str, dict[str, Any]] = {}

    def options(context: Context) -> dict[str, Any]:
        from omegaconf import OmegaConf

        overrides = str(context.run_config.get(keys.RUN_OVERRIDES, ""))
        if overrides not in cache:
            cfg = experiment_config(context.run_config)
            cache[overrides] = OmegaConf.to_container(cfg[group], resolve=True)  # type: ignore[assignment]
        return cache[overrides]

    return options


def node_role(attack: Attack) -> Role:
    """Which SuperNodes run ``attack`` in a deployment that asked for it.

    The node config's ``malicious`` decides (``true``: this node attacks; ``false``: it never
    does). A node without it but with a partition id and count (a partitioned deployment such
    as ``make deploy-demo``) attacks if its partition is among the seed-chosen
    ``attack.fraction``, as in simulation; any other node is honest. A malicious node seeds
    its attack by :func:`node_cid`.
    """
    seeded = seeded_role(attack)

    def role(context: Context) -> int | None:
        config = dict(context.node_config)
        flag = config.get(keys.MALICIOUS)
        if flag is None:
            partitioned = keys.PARTITION_ID in config and keys.NUM_PARTITIONS in config
            return seeded(context) if partitioned else None
        if str(flag).strip().lower() not in ("true", "1", "yes"):
            return None
        return node_cid(config, context.node_id)

    return role


def deployed_attack_mod(options: Callable[[Context], dict[str, Any]]) -> Mod:
    """The run's ``attack`` group as a client mod, applied only with ``attack.in_deployment``.

    Without ``attack.in_deployment=true`` in the run's overrides every reply passes untouched
    (whatever ``attack=`` says); with it, the nodes :func:`node_role` names run the attack.
    """
    mods: dict[Attack, Mod] = {}

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        attack = Attack(**options(context))
        if not (attack.active and attack.in_deployment):
            return call_next(msg, context)
        if attack not in mods:
            mods[attack] = attack_mod(attack, node_role(attack))
        return mods[attack](msg, context, call_next)

    return mod


def node_local_names(context: Context, settings: Personalization, record: ArrayRecord) -> list[str]:
    """The local layers' variables in this node's model (built from the received model)."""
    client = node_client_fn(context)
    client.receive(record)
    return local_names(client.model, settings)


client_app = apps.client_app(
    node_client_fn, run_group, deployed_attack_mod(run_group("attack")), node_local_names, node_raw
)
