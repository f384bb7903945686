"""Differential privacy around any synchronous fedflower strategy, on Flower's DP wrappers.

Flower's ``DifferentialPrivacy{ServerSide,ClientSide}FixedClipping`` and
``DifferentialPrivacyServerSideAdaptiveClipping`` (``flwr.serverapp.strategy``) give the
options, their checks, the clipping norm sent to clients, the adaptive clipping-norm update
(Andrew et al., arXiv:1905.03871) and the evaluation plumbing. fedflower subclasses them to
release the *mean update* with bounded sensitivity (DP-FedAvg, McMahan et al.,
arXiv:1710.06963) and hand it to the wrapped strategy's ``combine`` afterwards:

1. the wrapped :class:`~fedflower.server.checked.CheckedFedAvg` checks the replies (malformed
   ones are dropped, the rest folded in node order);
2. each update ``w_i - w`` is clipped to ``C`` (server side), or its norm is verified (client
   side, clipped by Flower's ``fixedclipping_mod``);
3. ``sum_i c_i Delta_i / D + N(0, (z C / D)^2)`` with capped weights ``c_i`` and ``D`` fixed
   before the round (:mod:`fedflower.aggregation.privacy`);
4. the strategy's ``combine`` steps from there (FedAvg takes it, a server optimizer takes one
   step on it, FedSGD uses it as its update), so the noise precedes every server-side state.

Flower's own ``RdpAccountant`` refuses Poisson sampling, weighted means and modified
aggregation; the :class:`~fedflower.aggregation.privacy.PrivacyAccountant` (dp-accounting RDP)
covers them. Flower's adaptive wrapper adds its noise with the already *updated* clipping norm;
here the noise uses the norm the round was clipped with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.differential_privacy import (
    adaptive_clip_inputs_inplace,
    add_gaussian_noise_inplace,
    clip_inputs_inplace,
)

from fedflower import aggregation, keys
from fedflower.aggregation.privacy import (
    PrivacyAccountant,
    capped_weight,
    fixed_denominator_mean,
    l2_norm,
)
from fedflower.errors import ConfigError, UpdateRejected
from fedflower.server.checked import CheckedFedAvg
from fedflower.server.contract import StrategyContract
from fedflower.server.rules import SECURE_PRIVACY, require_rounds
from fedflower.server.secagg import SecureResult, SecureRound

log = logging.getLogger(__name__)

NORM_SLACK = 1e-5
"""Relative slack when verifying client-clipped norms (float32 rounding of ``w + Delta``)."""


class PrivateRelease(StrategyContract):
    """The DP release shared by every mode; listed before a Flower DP wrapper.

    The Flower wrapper stores ``strategy``, ``noise_multiplier`` and ``clipping_norm``;
    :meth:`setup_release` adds fedflower's options.
    """

    strategy: Any  # the wrapped CheckedFedAvg (a Strategy to Flower's wrappers)
    noise_multiplier: float
    clipping_norm: float
    mode = "dp"
    unit_weight = True
    """Under SecAgg+, clients report weight 1 so the secure sum is unweighted (DP's bound)."""

    def setup_release(
        self,
        accountant: PrivacyAccountant | None,
        *,
        max_epsilon: float | None,
        poisson: bool,
        weight_cap: float | None,
        seed: int,
        secure: SecureRound | None = None,
    ) -> None:
        """Set the accountant, the budget, the sampling, the weight cap and SecAgg+."""
        self.budget = accountant
        self.max_epsilon = max_epsilon
        self.poisson = poisson
        self.weight_cap = weight_cap
        self.rng = np.random.default_rng(seed)
        self.sampling_rate = accountant.sampling_rate if accountant is not None else 1.0
        self.epsilon = 0.0
        self.denominator = 1.0
        self.sampled = 0
        self.budget_stop: int | None = None
        self._reference: list[np.ndarray] = []
        self._returns_update = False
        self.secure = secure
        self._secure_result: SecureResult | None = None
        if poisson:  # every node gets a message; each keeps it with probability q
            self.strategy.fraction_train = 1.0
            self.strategy.min_train_nodes = 0

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep: the accountant, epsilon, clipping norm, sampling RNG."""
        return {
            "accountant": None if self.budget is None else self.budget.state_dict(),
            "epsilon": self.epsilon,
            "clipping_norm": float(self.clipping_norm),
            "rng": self.rng.bit_generator.state,
            "budget_stop": self.budget_stop,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a resumed run)."""
        if self.budget is not None and state["accountant"] is not None:
            self.budget.load_state_dict(state["accountant"])
        self.epsilon = float(state["epsilon"])
        self.clipping_norm = float(state["clipping_norm"])
        self.rng.bit_generator.state = state["rng"]
        self.budget_stop = state["budget_stop"]

    @property
    def drops_stragglers(self) -> bool:
        """Whether stragglers' partial work is dropped: the wrapped strategy decides."""
        return bool(self.strategy.drops_stragglers)

    @property
    def rejected(self) -> int:
        """Updates rejected so far (malformed, or above the clipping norm)."""
        return self.strategy.rejected

    # -- sampling ------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample as configured and ask for weights (not updates) so they can be clipped."""
        self._reference = arrays.to_numpy_ndarrays()
        messages = sorted(
            super().configure_train(server_round, arrays, config, grid),  # type: ignore[safe-super]
            key=lambda m: m.metadata.dst_node_id,
        )
        if self.poisson:
            q = self.sampling_rate
            self.denominator = q * len(messages)
            messages = [m for m in messages if self.rng.random() < q]
        else:
            self.denominator = float(max(len(messages), 1))
        self.sampled = len(messages)
        self._returns_update = False
        for message in messages:
            record = message.content.config_records.get(keys.CONFIG)
            if record is not None and record.get(keys.RETURN_UPDATE):
                record[keys.RETURN_UPDATE] = False
                self._returns_update = True
        if self.secure is None:
            return messages
        for message in messages:  # SecAgg+ weights by the reported count: make it 1
            message.content.config_records[keys.CONFIG][keys.UNIT_WEIGHT] = self.unit_weight
        self._secure_result = self.secure.run(grid, messages, server_round, arrays)
        return []  # the round's exchanges are done; aggregate_train gets no replies

    # -- the release ---------------------------------------------------------------------------
    def clip(self, delta: list[np.ndarray]) -> list[np.ndarray]:
        """Bound one update's L2 norm by the clipping norm (in place); the mode decides how."""
        if l2_norm(delta) > 0:  # Flower's clipping divides by the norm
            clip_inputs_inplace(delta, self.clipping_norm)
        return delta

    def after_clipping(self, count: int) -> None:
        """Hook after a round's updates are clipped (the adaptive mode updates its norm)."""

    def weight(self, examples: float) -> float:
        """A client's weight in ``[0, 1]`` from its example count and ``weight_cap``."""
        return capped_weight(examples, self.weight_cap)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check, clip, average with a fixed denominator, add noise, then ``combine``."""
        if self.budget is not None:  # the round is accounted even if nobody replied
            self.budget.compose()
            self.epsilon = self.budget.epsilon()
        if self.secure is not None:
            return self._aggregate_secure()
        accepted = self.strategy.accepted_updates(replies)
        updates = []
        for reply, _, arrays, examples in accepted:
            try:
                delta = self.clip(aggregation.subtract(arrays, self._reference))
            except UpdateRejected as exc:
                self.strategy.rejected += 1
                log.warning("update from node %s rejected: %s", reply.metadata.src_node_id, exc)
                continue
            updates.append((delta, self.weight(examples)))
        self.after_clipping(len(updates))
        if not updates:
            return None, None
        return self._step(self.release(updates), [reply.content for reply, *_ in accepted])

    def _aggregate_secure(self) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Release from the SecAgg+ sum: ``n (mean - w)`` is the sum of the clipped updates."""
        result, self._secure_result = self._secure_result, None
        if result is None:
            return None, None
        mean = aggregation.subtract(result.mean, self._reference)
        if not self.unit_weight:  # no privacy release: the example-weighted mean as it is
            return self._step(mean, result.contents)
        total = [np.asarray(m * result.count, dtype=m.dtype) for m in mean]
        return self._step(self.release([(total, 1.0)]), result.contents)

    def _step(
        self, mean: list[np.ndarray], contents: list[RecordDict]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The wrapped strategy's ``combine`` from the released mean update, and the metrics."""
        if self._returns_update:  # FedSGD's combine takes w_global - w_local
            step_input = [-m for m in mean]
        else:
            step_input = [r + m for r, m in zip(self._reference, mean, strict=True)]
        try:
            new = self.strategy.combine([(step_input, 1.0)])
        except UpdateRejected as exc:
            log.warning("global model kept: %s", exc)
            return None, None
        names = self.strategy._reference_names or []
        record = ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(names, new, strict=True)})
        metrics = self.strategy.train_metrics_aggr_fn(contents, self.strategy.weighted_by_key)
        return record, metrics

    def noise_std(self) -> float:
        """Standard deviation of the noise on the mean update: ``z C / D``."""
        return self.noise_multiplier * self.clipping_norm / self.denominator

    def release(self, updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
        """The mean update ``sum c_i Delta_i / D`` with Gaussian noise of :meth:`noise_std`."""
        mean = fixed_denominator_mean(updates, self.denominator)
        add_gaussian_noise_inplace(mean, self.noise_std())
        return mean

    # -- budget and reports ------------------------------------------------------------------
    def affordable_rounds(self, num_rounds: int) -> int:
        """How many of ``num_rounds`` keep epsilon within ``max_epsilon`` (all without a budget).

        The server app runs only these rounds (:func:`fedflower.server.app.run_strategy`), so a
        run stops cleanly, with its outputs, before it would exceed the budget.
        """
        if self.max_epsilon is None or self.budget is None:
            return num_rounds
        rounds = self.budget.affordable_rounds(self.max_epsilon, num_rounds)
        if rounds == 0:
            raise ConfigError(
                f"privacy.max_epsilon {self.max_epsilon:g} is below one round's epsilon "
                f"{self.budget.epsilon(1):.3g}; raise it or the noise multiplier"
            )
        if rounds < num_rounds:
            self.budget_stop = rounds
            log.warning(
                "privacy budget: max_epsilon=%g allows %d of %d rounds (epsilon %.3f); "
                "the run stops after round %d",
                self.max_epsilon,
                rounds,
                num_rounds,
                self.budget.epsilon(rounds),
                rounds,
            )
        return rounds

    def round_report(self) -> dict[str, Any]:
        """Epsilon spent so far (at ``target_delta``) and the round's clipping norm."""
        if self.budget is None:
            return {}
        return {
            "epsilon": self.epsilon,
            "delta": self.budget.target_delta,
            "clipping_norm": float(self.clipping_norm),
            "sampled": self.sampled,
        }

    def run_report(self) -> dict[str, Any]:
        """The privacy guarantee of the run (and the SecAgg+ settings) for ``results.json``."""
        report: dict[str, Any] = {}
        if self.secure is not None:
            report["secagg"] = {
                "protocol": "SecAgg+ (Flower SecAggPlusWorkflow)",
                "quantization_step": self.secure.quantization_step,
                "clipping_range": self.secure.workflow.clipping_range,
            }
        if self.budget is None:
            return report
        return {
            **report,
            "privacy": {
                "mode": self.mode,
                "epsilon": self.epsilon,
                "delta": self.budget.target_delta,
                "adjacency": "client-level, add/remove one client's data",
                "noise_multiplier": self.budget.noise_multiplier,
                "sampling": "poisson" if self.poisson else "fixed",
                "sampling_rate": self.budget.sampling_rate,
                "weight_cap": self.weight_cap,
                "max_epsilon": self.max_epsilon,
                "stopped_for_budget_after": self.budget_stop,
                "accountant": self.budget.state_dict(),
            },
        }


class ServerSideFixedClipping(PrivateRelease, DifferentialPrivacyServerSideFixedClipping):
    """Central DP, the server clips each update to ``clipping_norm`` (arXiv:1710.06963)."""

    mode = "dp_server"


class ClientSideFixedClipping(PrivateRelease, DifferentialPrivacyClientSideFixedClipping):
    """Central DP, clients clip with Flower's ``fixedclipping_mod``; the server checks norms."""

    mode = "dp_client"

    def clip(self, delta: list[np.ndarray]) -> list[np.ndarray]:
        """Verify the client clipped its update; a larger one is rejected, not clipped."""
        norm = l2_norm(delta)
        if norm > self.clipping_norm * (1 + NORM_SLACK):
            raise UpdateRejected(
                f"update norm {norm:.6g} exceeds the clipping norm {self.clipping_norm:g} "
                "(is the client's fixedclipping_mod missing?)"
            )
        return delta


class ServerSideAdaptiveClipping(PrivateRelease, DifferentialPrivacyServerSideAdaptiveClipping):
    """Central DP with a clipping norm that tracks a quantile of update norms (arXiv:1905.03871)."""

    mode = "dp_adaptive"
    _clipped = 0
    _round_norm = 0.0

    def clip(self, delta: list[np.ndarray]) -> list[np.ndarray]:
        """Clip to the current norm and count the updates that were clipped."""
        if l2_norm(delta) > 0:  # Flower's clipping divides by the norm
            self._clipped += int(adaptive_clip_inputs_inplace(delta, self.clipping_norm))
        return delta

    def noise_std(self) -> float:
        """Noise with the norm this round clipped with (before the norm update)."""
        return self.noise_multiplier * self._round_norm / self.denominator

    def after_clipping(self, count: int) -> None:
        """Update the clipping norm from the noisy fraction of clipped updates."""
        self._round_norm = float(self.clipping_norm)
        if count:
            self._geometric_update(self._noisy_fraction(self._clipped, count))
        self._clipped = 0

    def round_report(self) -> dict[str, Any]:
        """As the fixed modes, with the norm this round clipped with."""
        return {**super().round_report(), "clipping_norm": self._round_norm}


class Delegating(Strategy):
    """A wrapper that hands every step to ``self.strategy`` (what Flower's DP wrappers do)."""

    def __init__(self, strategy: CheckedFedAvg) -> None:
        super().__init__()
        self.strategy = strategy

    def configure_train(  # noqa: D102
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(  # noqa: D102
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(  # noqa: D102
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(  # noqa: D102
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:  # noqa: D102
        self.strategy.summary()


class SecureAggregationOnly(PrivateRelease, Delegating):
    """SecAgg+ without differential privacy: the server learns only the weighted mean."""

    mode = "none"
    unit_weight = False

    def __init__(self, strategy: CheckedFedAvg) -> None:
        super().__init__(strategy)
        self.clipping_norm = 0.0
        self.noise_multiplier = 0.0


class LocalDifferentialPrivacy(PrivateRelease, Delegating):
    """Local DP: every client clips and noises its own update (Flower's ``LocalDpMod``).

    The server averages the noisy updates as the wrapped strategy would (example-weighted
    mean) and accounts: each participation is a Gaussian mechanism with noise multiplier
    ``z = sqrt(2 ln(1.25 / delta_l)) / epsilon_l`` whose output the server sees, so no
    amplification by sampling is claimed.
    """

    mode = "local_dp"

    def __init__(self, strategy: CheckedFedAvg, clipping_norm: float) -> None:
        super().__init__(strategy)
        self.clipping_norm = clipping_norm
        self.noise_multiplier = 0.0

    def clip(self, delta: list[np.ndarray]) -> list[np.ndarray]:
        """Clients clipped and noised their updates; nothing to check (noise raises norms)."""
        return delta

    def weight(self, examples: float) -> float:
        """The example count: local noise makes the server's weighting free."""
        return examples

    def release(self, updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
        """The example-weighted mean of the (already noisy) updates."""
        return aggregation.weighted_mean(updates)


def local_noise_multiplier(epsilon: float, delta: float) -> float:
    """``z`` of Flower's ``LocalDpMod`` noise ``C sqrt(2 ln(1.25 / delta)) / epsilon``."""
    return float(np.sqrt(2 * np.log(1.25 / float(delta))) / float(epsilon))


def _expected_sample(strategy: CheckedFedAvg, num_clients: int) -> int:
    """Clients Flower's FedAvg samples per round from ``num_clients`` (at least one)."""
    return max(int(num_clients * strategy.fraction_train), strategy.min_train_nodes, 1)


def make_private(
    strategy: StrategyContract,
    options: dict[str, Any],
    num_clients: int,
    seed: int,
    secagg: dict[str, Any] | None = None,
) -> StrategyContract:
    """Wrap ``strategy`` for the privacy mode ``options["name"]`` and SecAgg+ (``secagg``).

    ``options`` is the ``privacy`` config group and ``secagg`` the ``secagg`` one (checked by
    :mod:`fedflower.server.rules`); with both ``none`` the strategy is returned unchanged.
    """
    name = options.get("name", "none")
    secure = None
    if secagg is not None and secagg.get("name", "none") != "none":
        try:
            secure = SecureRound(secagg)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"secagg={secagg['name']}: {exc}") from exc
    if name == "none" and secure is None:
        return strategy
    require_rounds(strategy, f"privacy={name}" if secure is None else "secagg=secaggplus")
    strategy = cast(CheckedFedAvg, strategy)  # synchronous strategies are built on it
    if secure is not None and name not in SECURE_PRIVACY:
        raise ConfigError(
            f"privacy={name} cannot run with secagg: the server would need each update "
            f"(privacy modes with SecAgg+: {', '.join(SECURE_PRIVACY)})"
        )
    if name == "none":
        plain = SecureAggregationOnly(strategy)
        plain.setup_release(
            None, max_epsilon=None, poisson=False, weight_cap=None, seed=seed, secure=secure
        )
        return plain
    poisson = options.get("sampling", "fixed") == "poisson"
    rate = float(options["sampling_rate"]) if poisson else 1.0
    sample = (
        max(round(rate * num_clients), 1) if poisson else _expected_sample(strategy, num_clients)
    )
    z = float(options.get("noise_multiplier", 0.0))
    try:
        wrapped = _wrap(name, strategy, options, z, sample)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"privacy={name}: {exc}") from exc
    if name == "local_dp":
        z, rate = local_noise_multiplier(options["local_epsilon"], options["local_delta"]), 1.0
    else:
        warn_noise(name, z, options, sample)
    wrapped.setup_release(
        PrivacyAccountant(z, rate, float(options["target_delta"])),
        max_epsilon=options.get("max_epsilon"),
        poisson=poisson,
        weight_cap=options.get("weight_cap"),
        seed=seed,
        secure=secure,
    )
    return wrapped


CLIENTS_PER_NOISE = 100
"""Clients per round per unit of noise multiplier below which central DP noise swamps the mean.

DP-FedAvg trains useful models with hundreds to thousands of clients per round (McMahan et al.
2018, arXiv:1710.06963): the noise on the mean update has std ``z * C / D`` per coordinate.
"""


def warn_noise(name: str, z: float, options: dict[str, Any], sample: int) -> None:
    """Warn when too few clients per round share the noise of central DP."""
    clip = float(options.get("clipping_norm", options.get("initial_clipping_norm", 1.0)))
    if z <= 0 or sample >= CLIENTS_PER_NOISE * z:
        return
    log.warning(
        "privacy=%s with %d clients per round: the noise on the mean update has std "
        "z*C/D = %.3g per coordinate (%.0f%% of the clipping norm); useful models need about "
        "%d clients per round at noise_multiplier=%g (DP-FedAvg, arXiv:1710.06963)",
        name,
        sample,
        z * clip / sample,
        100 * z / sample,
        int(CLIENTS_PER_NOISE * z),
        z,
    )


def _wrap(
    name: str, strategy: CheckedFedAvg, options: dict[str, Any], z: float, sample: int
) -> PrivateRelease:
    wrapped: PrivateRelease
    if name == "dp_server":
        wrapped = ServerSideFixedClipping(strategy, z, float(options["clipping_norm"]), sample)
    elif name == "dp_client":
        wrapped = ClientSideFixedClipping(strategy, z, float(options["clipping_norm"]), sample)
    elif name == "dp_adaptive":
        wrapped = ServerSideAdaptiveClipping(
            strategy,
            z,
            sample,
            initial_clipping_norm=float(options["initial_clipping_norm"]),
            target_clipped_quantile=float(options["target_clipped_quantile"]),
            clip_norm_lr=float(options["clip_norm_lr"]),
            clipped_count_stddev=options.get("clipped_count_stddev"),
        )
    elif name == "local_dp":
        wrapped = LocalDifferentialPrivacy(strategy, float(options["clipping_norm"]))
    else:
        raise ConfigError(f"unknown privacy mode {name!r}")
    return wrapped
