"""Personalization: every site leaves with a model of its own, kept in Flower's ``Context.state``.

One Flower mod, innermost (next to the train/evaluate handlers, so secure aggregation,
differential privacy and compression see only the global model's traffic), adds a personal
model to each client and reports it beside the global one in every federated evaluation
(``personal_eval_loss``, ``personal_eval_accuracy``). The personal parts live in the node's
``Context.state``, which Flower keeps between rounds on a SuperNode and in both simulation
engines (and fedflower's checkpoint holds the in-process engine's contexts).

Methods and where their settings come from:

- ``finetune``: the global model fine-tuned on the site's training split for
  ``finetune_epochs`` before evaluation, with its last round's batch size and learning rate
  (the fine-tuning evaluation of pfl-research and FLSim; Yu et al., "Salvaging Federated
  Learning by Local Adaptation", arXiv:2002.04758, one to a few epochs).
- ``fedper``: Arivazhagan et al., "Federated Learning with Personalization Layers",
  arXiv:1912.00818. The base layers are federated, the personalization layers (default: the
  model's last layer with weights, the head, as in the paper's experiments) stay on the site.
- ``fedbn``: Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
  Normalization", ICLR 2021, arXiv:2102.07623. The normalisation layers (default: every
  ``BatchNormalization``/``LayerNormalization``/``GroupNormalization`` layer) stay local.
- ``ditto``: Li et al., "Ditto: Fair and Robust Federated Learning Through
  Personalization", ICML 2021, arXiv:2012.04221. Besides the global update, each site trains
  a personal model ``v`` on ``f_k(v) + lambda/2 ||v - w_global||^2`` (Algorithm 1; the
  paper tunes ``lambda`` in {0.01, 0.1, 1, 2}; default 0.1), ``ditto_epochs`` per round
  (default: the round's local epochs, as the paper's ``s`` local steps).
- ``fedrep``: Collins et al., "Exploiting Shared Representations for Personalized Federated
  Learning", ICML 2021, arXiv:2102.07078 (Algorithm 1). The head (default: the last layer
  with weights, as FedPer) stays on the site; each round the site first trains its head for
  ``fedrep_head_epochs`` with the received body fixed, then the body for the round's local
  epochs with its head fixed, and sends the body. The paper trains the head for many more
  local updates than the body (the authors' code, github.com/lgcollins/FedRep:
  ``local_ep - local_rep_ep`` head epochs, ``local_rep_ep`` body epochs); default 5 head
  epochs to one body epoch, to bound a round's cost.
- ``apfl``: Deng et al., "Adaptive Personalized Federated Learning", arXiv:2003.13461
  (Algorithm 1). Besides the global update, each site keeps a local model ``v`` and its
  personal model is the mixture ``alpha v + (1 - alpha) w``; ``v`` descends the loss of the
  mixture, ``v <- v - lr grad_v f(alpha v + (1 - alpha) w)``, with ``w`` the received global
  model held fixed during the personal epochs (the paper alternates single steps of ``w``
  and ``v``). A step of ``v`` is one of the mixture with the learning rate times ``alpha``
  (exact for a scale-invariant optimizer such as Adam, fedflower's default; ``alpha`` times
  too large a step for plain SGD). ``apfl_alpha`` is fixed (the paper reports 0.25, 0.5, 0.75
  and an adaptive one; default 0.5); ``apfl_epochs`` as Ditto's.

The local layers are chosen by Keras layer name: ``local_layers`` is a list of globs
(``"dense_*"``) or regular expressions (``"re:^head"``) matched against ``layer.name``.
The global model's local layers are sent and aggregated as usual (the server's strategy is
unchanged, so every strategy supports personalization); a site overwrites them with its own
before training and evaluating its personal model.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import Mod

from fedflower import keys, wire
from fedflower.checks import check_choice, check_number
from fedflower.errors import ConfigError

METHODS = ("none", "finetune", "fedper", "fedrep", "fedbn", "ditto", "apfl")
LAYER_METHODS = ("fedper", "fedrep", "fedbn")  # methods that keep some layers local
HEAD_METHODS = ("fedper", "fedrep")  # local layers by default: the head
NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


@dataclass(frozen=True)
class Personalization:
    """The ``personalization`` config group.

    Parameters
    ----------
    name : str
        One of ``none``, ``finetune``, ``fedper``, ``fedrep``, ``fedbn``, ``ditto``,
        ``apfl``.
    local_layers : list of str, optional
        Globs or ``re:`` regular expressions on ``layer.name`` of the layers kept local
        (FedPer, FedRep, FedBN); empty: the method's default (see the module docstring).
    finetune_epochs : int
        Local epochs of fine-tuning before evaluation (``finetune``).
    ditto_lambda : float
        Ditto's proximal weight ``lambda`` (>= 0).
    ditto_epochs : int
        Epochs of the personal model per round; 0: the round's ``local-epochs``.
    fedrep_head_epochs : int
        FedRep's epochs of the head (body fixed) before the body's epochs, each round.
    apfl_alpha : float
        APFL's mixing weight of the local model, in [0, 1].
    apfl_epochs : int
        Epochs of APFL's local model per round; 0: the round's ``local-epochs``.
    """

    name: str = "none"
    local_layers: Sequence[str] = field(default_factory=tuple)
    finetune_epochs: int = 1
    ditto_lambda: float = 0.1
    ditto_epochs: int = 0
    fedrep_head_epochs: int = 5
    apfl_alpha: float = 0.5
    apfl_epochs: int = 0

    def __post_init__(self) -> None:
        """Check every value (one-line errors)."""
        object.__setattr__(self, "local_layers", tuple(str(p) for p in self.local_layers))
        check_choice("personalization.name", self.name, METHODS)
        check_number(
            "personalization.finetune_epochs", self.finetune_epochs, minimum=1, integer=True
        )
        check_number("personalization.ditto_lambda", self.ditto_lambda, minimum=0)
        check_number("personalization.ditto_epochs", self.ditto_epochs, minimum=0, integer=True)
        check_number(
            "personalization.fedrep_head_epochs", self.fedrep_head_epochs, minimum=0, integer=True
        )
        check_number("personalization.apfl_alpha", self.apfl_alpha, minimum=0, maximum=1)
        check_number("personalization.apfl_epochs", self.apfl_epochs, minimum=0, integer=True)
        for pattern in self.local_layers:
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise ConfigError(
                        f"personalization.local_layers must be globs or re:<regex>, "
                        f"got {pattern!r} ({exc})"
                    ) from exc

    @property
    def active(self) -> bool:
        """Whether the clients keep a personal model."""
        return self.name != "none"


def _matches(name: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.search(pattern[3:], name):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def local_names(model: keras.Model, settings: Personalization) -> list[str]:
    """Variable paths of the weights of the layers kept local: their keys on the wire.

    Raises
    ------
    ConfigError
        If a layer method selects no weights (the patterns match no layer with weights).
    """
    if settings.name not in LAYER_METHODS:
        return []
    owner = {id(w): layer for layer in _layers(model) for w in layer.weights}
    layers = [layer for layer in _layers(model) if layer.weights]
    if settings.local_layers:
        chosen = {id(x) for x in layers if _matches(x.name, settings.local_layers)}
    elif settings.name in HEAD_METHODS:
        chosen = {id(layers[-1])}
    else:
        chosen = {id(x) for x in layers if isinstance(x, NORMALIZATION)}
    names = [str(w.path) for w in model.weights if id(owner.get(id(w))) in chosen]
    if not names:
        layer_names = ", ".join(x.name for x in layers)
        raise ConfigError(
            f"personalization.local_layers must match a layer with weights for "
            f"{settings.name}, got {list(settings.local_layers)}; the model's layers: "
            f"{layer_names}"
        )
    return names


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [x for x in model._flatten_layers(include_self=False, recursive=True)]


Named = dict[str, np.ndarray]
"""Arrays keyed by variable path, in the order they travel."""


def _derived(msg: Message, arrays: Named, config: dict, kind: str) -> Message:
    """A copy of ``msg`` of type ``kind`` carrying ``arrays`` and ``config`` (kept in-process)."""
    meta = copy.copy(msg.metadata)
    meta.message_type = kind
    content = RecordDict({keys.ARRAYS: _record(arrays), keys.CONFIG: ConfigRecord(config)})
    return Message(content=content, metadata=meta)  # type: ignore[call-overload]


def _record(arrays: Named) -> ArrayRecord:
    return wire.named_record(list(arrays), list(arrays.values()))


def _named(record: ArrayRecord) -> Named:
    return {k: v.numpy() for k, v in record.items()}


def _arrays(msg: Message, key: str = keys.ARRAYS) -> Named:
    return _named(msg.content.array_records[key])


def _config(msg: Message) -> dict:
    return dict(msg.content.config_records.get(keys.CONFIG, ConfigRecord()))


CallNext = Callable[[Message, Context], Message]


class PersonalModel:
    """One method's personal model on one node, read from and written to ``Context.state``.

    Parameters
    ----------
    settings : Personalization
        The method and its settings.
    names : sequence of str
        Variable paths of the local layers' weights (FedPer, FedBN; see :func:`local_names`).
    """

    def __init__(self, settings: Personalization, names: Sequence[str]) -> None:
        self.settings = settings
        self.names = list(names)

    def stored(self, context: Context) -> Named | None:
        """The node's kept arrays (local layers, or Ditto's whole personal model)."""
        record = context.state.array_records.get(keys.PERSONAL_STATE)
        return None if record is None else _named(record)

    def keep(self, context: Context, arrays: Named) -> None:
        """Keep ``arrays`` in the node's state for the next round."""
        context.state[keys.PERSONAL_STATE] = _record(arrays)

    def merged(self, global_arrays: Named, context: Context) -> Named:
        """The global arrays with this node's local layers in place (if it has any yet)."""
        kept = self.stored(context)
        if kept is None:
            return dict(global_arrays)
        return {k: kept.get(k, a) if k in self.names else a for k, a in global_arrays.items()}

    def train(self, msg: Message, context: Context, call_next: CallNext) -> Message:
        """The round's training: the global reply, and the personal model's update kept."""
        name = self.settings.name
        if name in LAYER_METHODS:
            return self._train_layers(msg, context, call_next)
        if name == "finetune":  # fine-tune with this round's batch size and learning rate
            config = _config(msg)
            config.pop(keys.RETURN_UPDATE, None)
            context.state[keys.FINETUNE_CONFIG] = ConfigRecord(config)
        reply = call_next(msg, context)
        if name == "ditto" and not reply.has_error():
            self._train_ditto(msg, context, call_next)
        if name == "apfl" and not reply.has_error():
            self._train_apfl(msg, context, call_next)
        return reply

    def _train_layers(self, msg: Message, context: Context, call_next: CallNext) -> Message:
        received = _arrays(msg)
        mine = self.merged(received, context)
        config = _config(msg)
        if self.settings.name == "fedrep":  # the head first (body fixed), then the body alone
            head = self._train_head(msg, mine, context, call_next)
            if head.has_error():
                return head
            mine = _arrays(head)
            config[keys.FROZEN] = list(self.names)
        reply = call_next(_derived(msg, mine, config, msg.metadata.message_type), context)
        if reply.has_error():
            return reply
        trained = _arrays(reply)
        update = bool(_config(msg).get(keys.RETURN_UPDATE))
        if update:  # the reply is w_sent - w_trained: the local layers' new values
            self.keep(context, {n: mine[n] - trained[n] for n in self.names})
        else:
            self.keep(context, {n: trained[n] for n in self.names})
        for n in self.names:  # the server gets no information about the local layers
            trained[n] = np.zeros_like(trained[n]) if update else received[n]
        reply.content[keys.ARRAYS] = _record(trained)
        return reply

    def _train_head(
        self, msg: Message, mine: Named, context: Context, call_next: CallNext
    ) -> Message:
        """FedRep's head epochs: the site's head trained on the received body (reply: the model)."""
        config = _config(msg)
        config.pop(keys.RETURN_UPDATE, None)
        config[keys.LOCAL_EPOCHS] = int(self.settings.fedrep_head_epochs)
        config[keys.FROZEN] = [n for n in mine if n not in self.names]
        if not self.settings.fedrep_head_epochs:  # no head epochs: the model as it is
            return _derived(msg, mine, {}, MessageType.TRAIN)
        return call_next(_derived(msg, mine, config, MessageType.TRAIN), context)

    def _train_apfl(self, msg: Message, context: Context, call_next: CallNext) -> None:
        """APFL's local model ``v``: the mixture trained with ``w`` fixed, ``v`` recovered."""
        alpha = float(self.settings.apfl_alpha)
        received = _arrays(msg)
        v = self.stored(context) or received
        config = _config(msg)
        config.pop(keys.RETURN_UPDATE, None)
        config.pop(keys.PROXIMAL_MU, None)
        config[keys.LEARNING_RATE] = alpha * float(config.get(keys.LEARNING_RATE, 0.001))
        if self.settings.apfl_epochs:
            config[keys.LOCAL_EPOCHS] = int(self.settings.apfl_epochs)
        mixture = mix(v, received, alpha)
        reply = call_next(_derived(msg, mixture, config, MessageType.TRAIN), context)
        if not reply.has_error() and alpha > 0:
            self.keep(context, unmix(_arrays(reply), received, alpha))

    def _train_ditto(self, msg: Message, context: Context, call_next: CallNext) -> None:
        config = _config(msg)
        config.pop(keys.RETURN_UPDATE, None)
        config[keys.PROXIMAL_MU] = float(self.settings.ditto_lambda)
        if self.settings.ditto_epochs:
            config[keys.LOCAL_EPOCHS] = int(self.settings.ditto_epochs)
        received = _arrays(msg)
        task = _derived(msg, received, config, MessageType.TRAIN)
        task.content[keys.START] = _record(self.stored(context) or received)
        reply = call_next(task, context)
        if not reply.has_error():
            self.keep(context, _arrays(reply))

    def personal(self, msg: Message, context: Context) -> tuple[Named, dict] | None:
        """The personal model's arrays and evaluate config (``None``: none yet).

        A fine-tuned model is trained by the evaluate handler itself (``finetune-epochs``),
        with the batch size and learning rate of the node's last training round.
        """
        received, config = _arrays(msg), _config(msg)
        name = self.settings.name
        if name in LAYER_METHODS:
            kept = self.stored(context)
            return None if kept is None else (self.merged(received, context), config)
        if name in ("ditto", "apfl"):
            kept = self.stored(context)
            if kept is None:
                return None
            return (kept if name == "ditto" else mix(kept, received, self.alpha)), config
        trained = context.state.config_records.get(keys.FINETUNE_CONFIG)
        if trained is None:
            return None
        return received, {**dict(trained), **config, keys.FINETUNE_EPOCHS: self.epochs}

    @property
    def alpha(self) -> float:
        """APFL's mixing weight."""
        return float(self.settings.apfl_alpha)

    @property
    def epochs(self) -> int:
        """Fine-tuning epochs."""
        return int(self.settings.finetune_epochs)

    def evaluate(self, msg: Message, context: Context, call_next: CallNext) -> Message:
        """The global model's evaluation reply, with the personal model's metrics added."""
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        personal = self.personal(msg, context)
        if personal is None:
            return reply
        task = _derived(msg, *personal, msg.metadata.message_type)
        mine = call_next(task, context)
        if mine.has_error():
            return mine
        metrics = reply.content.metric_records[keys.METRICS]
        prefix = f"{keys.MODEL_PERSONAL}_"
        for key, value in mine.content.metric_records[keys.METRICS].items():
            if key.startswith("eval_"):
                metrics[prefix + key] = value
        return reply


def _floating(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating)


def mix(v: Named, w: Named, alpha: float) -> Named:
    """APFL's personal model ``alpha v + (1 - alpha) w`` (non-float arrays: ``w``'s)."""
    return {
        k: (alpha * v[k].astype(np.float64) + (1 - alpha) * b).astype(b.dtype)
        if _floating(b)
        else b
        for k, b in w.items()
    }


def unmix(mixture: Named, w: Named, alpha: float) -> Named:
    """``v`` from a mixture ``alpha v + (1 - alpha) w`` and ``w`` (``alpha > 0``)."""
    return {
        k: ((m.astype(np.float64) - (1 - alpha) * w[k]) / alpha).astype(w[k].dtype)
        if _floating(w[k])
        else m
        for k, m in mixture.items()
    }


LocalNames = Callable[[Context, Personalization, ArrayRecord], Sequence[str]]
"""Variable paths of a node's local layers' weights, given the settings and the received model."""


def personalization_mod(options: Callable[[Context], Mapping[str, Any]], local: LocalNames) -> Mod:
    """The Flower mod that gives each client its personal model (innermost of the mods).

    ``options(context)`` is the run's ``personalization`` config group; ``local`` names
    the local layers' weights in the node's model (a deployed node builds its model on the
    first message, from the received arrays' shapes).
    """

    def mod(msg: Message, context: Context, call_next: CallNext) -> Message:
        settings = Personalization(**options(context))
        kind = msg.metadata.message_type
        if not settings.active or not msg.content.array_records:
            return call_next(msg, context)
        received = msg.content.array_records[keys.ARRAYS]
        model = PersonalModel(settings, local(context, settings, received))
        if kind.startswith(MessageType.TRAIN):
            return model.train(msg, context, call_next)
        if kind.startswith(MessageType.EVALUATE):
            return model.evaluate(msg, context, call_next)
        return call_next(msg, context)

    return mod
