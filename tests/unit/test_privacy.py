"""Differential privacy: accountant, clipping, noise, composition with the strategies."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import dp_accounting
import numpy as np
import pytest
from fedflower.strategies.fedadam import FedAdam
from fedflower.strategies.fedavg import FedAvg
from fedflower.strategies.fedsgd import FedSGD
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp.strategy import Strategy
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from helpers import FakeGrid, client_context, make_reply
from omegaconf import DictConfig
from test_strategy import NODES, global_model

from fedflower import keys
from fedflower.aggregation.privacy import PrivacyAccountant, l2_norm
from fedflower.client.privacy import privacy_mod
from fedflower.errors import ConfigError
from fedflower.server.checked import CheckedFedAvg
from fedflower.server.privacy import local_noise_multiplier, make_private
from fedflower.server.rules import validate

pytestmark = pytest.mark.usefixtures("task_identity")


def options(name: str = "dp_server", **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": name,
        "noise_multiplier": 1.0,
        "clipping_norm": 1.0,
        "target_delta": 1e-5,
        "max_epsilon": None,
        "sampling": "fixed",
        "sampling_rate": 0.1,
        "weight_cap": None,
    }
    return {**base, **kw}


def independent_epsilon(z: float, q: float, rounds: int, delta: float) -> float:
    """dp-accounting's own RDP accountant with its default orders."""
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(
    ("z", "q", "rounds"), [(1.0, 0.01, 1000), (1.0, 1.0, 4), (0.7, 0.05, 50), (2.0, 1.0, 30)]
)
def test_epsilon_equals_dp_accounting(z: float, q: float, rounds: int) -> None:
    acc = PrivacyAccountant(z, q, 1e-5)
    for k in range(1, rounds + 1):
        acc.compose()
        if k in (1, rounds // 2, rounds):
            assert acc.epsilon() == pytest.approx(independent_epsilon(z, q, k, 1e-5), rel=2e-3)


def test_epsilon_known_values() -> None:
    assert PrivacyAccountant(1.0, 0.01, 1e-5).epsilon(1000) == pytest.approx(2.10, abs=0.01)
    assert PrivacyAccountant(1.0, 1.0, 1e-5).epsilon(4) == pytest.approx(10.7, abs=0.1)


def test_affordable_rounds_and_state() -> None:
    acc = PrivacyAccountant(1.0, 1.0, 1e-5)
    k = acc.affordable_rounds(10.7, 100)
    assert acc.epsilon(k) <= 10.7 < acc.epsilon(k + 1)
    acc.compose()
    other = PrivacyAccountant(5.0, 0.5, 1e-3)
    other.load_state_dict(acc.state_dict())
    assert other.epsilon() == acc.epsilon() and other.rounds == 1


def replies_for(
    wrapped: Strategy, model: list[np.ndarray], updates: list[list[np.ndarray]], examples: list[int]
) -> tuple[list[Message], list[Message]]:
    msgs = list(wrapped.configure_train(1, ArrayRecord(model), ConfigRecord(), FakeGrid(NODES)))
    replies = [
        make_reply(m, [w + d for w, d in zip(model, u, strict=True)], n)
        for m, u, n in zip(msgs, updates, examples, strict=True)
    ]
    return msgs, replies


def random_updates(scale: float, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        [scale * rng.standard_normal(w.shape).astype(np.float32) for w in global_model()]
        for _ in NODES
    ]


@pytest.mark.parametrize("name", ["dp_server", "dp_adaptive"])
def test_every_clipped_update_within_norm(name: str) -> None:
    extra = {
        "initial_clipping_norm": 0.5,
        "target_clipped_quantile": 0.5,
        "clip_norm_lr": 0.2,
        "clipped_count_stddev": 2.0,
    }
    wrapped = make_private(FedAvg(), options(name, **extra), len(NODES), 0)
    norms: list[float] = []
    clip = wrapped.clip  # type: ignore[attr-defined]
    wrapped.clip = lambda d: norms.append(l2_norm(clip(d))) or d  # type: ignore[attr-defined]
    _, replies = replies_for(wrapped, global_model(), random_updates(3.0), [10] * len(NODES))
    bound = wrapped.clipping_norm  # type: ignore[attr-defined]
    wrapped.aggregate_train(1, replies)
    assert len(norms) == len(NODES)
    assert max(norms) <= bound * (1 + 1e-6)
    assert min(norms) >= bound * 0.999  # they were all larger: clipped to exactly the bound


def test_client_mod_clips_and_server_rejects_unclipped() -> None:
    model = global_model()
    msg = Message(
        RecordDict(
            {keys.ARRAYS: ArrayRecord(model), keys.CONFIG: ConfigRecord({KEY_CLIPPING_NORM: 0.5})}
        ),
        dst_node_id=NODES[0],
        message_type=MessageType.TRAIN,
    )
    big = random_updates(3.0)[0]

    def train(m: Message, _: Context) -> Message:
        return make_reply(m, [w + d for w, d in zip(model, big, strict=True)], 10)

    ctx = client_context(NODES[0])
    out = privacy_mod(lambda _: {"name": "dp_client"})(msg, ctx, train)
    sent = out.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
    assert l2_norm([s - w for s, w in zip(sent, model, strict=True)]) == pytest.approx(
        0.5, rel=1e-5
    )
    wrapped = make_private(FedAvg(), options("dp_client", clipping_norm=0.5), len(NODES), 0)
    _, replies = replies_for(wrapped, model, [big] * len(NODES), [10] * len(NODES))
    assert wrapped.aggregate_train(1, replies) == (None, None)
    assert wrapped.rejected == len(NODES)  # type: ignore[attr-defined]


def test_noise_std_is_z_c_over_n() -> None:
    np.random.seed(3)
    model = [np.zeros((400, 250), np.float32)]
    wrapped = make_private(FedAvg(), options(noise_multiplier=1.5, clipping_norm=2.0), 4, 0)
    msgs = list(wrapped.configure_train(1, ArrayRecord(model), ConfigRecord(), FakeGrid(NODES)))
    new, _ = wrapped.aggregate_train(1, [make_reply(m, model, 10) for m in msgs])
    noise = new.to_numpy_ndarrays()[0]
    assert noise.std() == pytest.approx(1.5 * 2.0 / len(NODES), rel=0.01)  # 1e5 samples: ~0.2 %
    assert abs(noise.mean()) < 0.01


def test_too_few_clients_for_the_noise_warn_with_the_expected_std(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedflower.server.privacy"):
        make_private(FedAvg(), options(noise_multiplier=1.5, clipping_norm=2.0), 4, 0)
    warned = [r.getMessage() for r in caplog.records]
    assert any(
        "4 clients per round" in m and "std z*C/D = 0.75 per coordinate" in m for m in warned
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedflower.server.privacy"):
        make_private(FedAvg(), options(noise_multiplier=0.5), 60, 0)
    assert not caplog.records  # 60 clients per round >= 100 * 0.5


StrategyFactory = Callable[[], CheckedFedAvg]


@pytest.mark.parametrize(
    "factory",
    [FedAvg, lambda: FedAdam(eta=0.1), lambda: FedSGD(weighted=False, server_learning_rate=0.5)],
    ids=["fedavg", "fedadam", "fedsgd"],
)
def test_without_noise_equals_the_plain_strategy_every_round(factory: StrategyFactory) -> None:
    plain, inner = factory(), factory()
    wrapped = make_private(inner, options(noise_multiplier=1e-12, clipping_norm=1e6), 4, 0)
    model_p = model_w = global_model()
    for rnd in range(1, 5):
        ups = random_updates(0.1, seed=rnd)
        msgs_p = list(
            plain.configure_train(rnd, ArrayRecord(model_p), ConfigRecord(), FakeGrid(NODES))
        )
        msgs_w = list(
            wrapped.configure_train(rnd, ArrayRecord(model_w), ConfigRecord(), FakeGrid(NODES))
        )
        returns_update = bool(msgs_p[0].content.config_records[keys.CONFIG].get(keys.RETURN_UPDATE))
        assert not msgs_w[0].content.config_records[keys.CONFIG].get(keys.RETURN_UPDATE)
        rp = [
            make_reply(
                m, [(-d if returns_update else w + d) for w, d in zip(model_p, u, strict=True)], 10
            )
            for m, u in zip(msgs_p, ups, strict=True)
        ]
        rw = [
            make_reply(m, [w + d for w, d in zip(model_w, u, strict=True)], 10)
            for m, u in zip(msgs_w, ups, strict=True)
        ]
        model_p = plain.aggregate_train(rnd, rp)[0].to_numpy_ndarrays()  # type: ignore[union-attr]
        model_w = wrapped.aggregate_train(rnd, rw)[0].to_numpy_ndarrays()  # type: ignore[union-attr]
        for a, b in zip(model_p, model_w, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # float32 rounding


def test_capped_weights_and_poisson_sampling() -> None:
    wrapped = make_private(
        FedAvg(),
        options(noise_multiplier=1e-12, sampling="poisson", sampling_rate=0.5, weight_cap=20.0),
        len(NODES),
        7,
    )
    model = global_model()
    counts = []
    for rnd in range(1, 41):
        msgs = list(
            wrapped.configure_train(rnd, ArrayRecord(model), ConfigRecord(), FakeGrid(NODES))
        )
        counts.append(len(msgs))
        assert wrapped.denominator == pytest.approx(0.5 * len(NODES))  # type: ignore[attr-defined]
    assert 0 in counts or len(set(counts)) > 2  # Poisson: the sample size varies
    assert np.mean(counts) == pytest.approx(2.0, abs=0.5)
    # one client with 10 examples (weight 0.5), the other with 40 (weight capped at 1), D = 2
    msgs = list(wrapped.configure_train(99, ArrayRecord(model), ConfigRecord(), FakeGrid(NODES)))
    while len(msgs) != 2:
        msgs = list(
            wrapped.configure_train(99, ArrayRecord(model), ConfigRecord(), FakeGrid(NODES))
        )
    d = [np.full(w.shape, 0.01, np.float32) for w in model]
    replies = [
        make_reply(m, [w + x for w, x in zip(model, d, strict=True)], n)
        for m, n in zip(msgs, [10, 40], strict=True)
    ]
    new = wrapped.aggregate_train(99, replies)[0].to_numpy_ndarrays()  # type: ignore[union-attr]
    for n, w in zip(new, model, strict=True):
        np.testing.assert_allclose(n - w, 0.01 * 1.5 / 2, rtol=1e-4)


def test_local_dp_noise_multiplier_and_report() -> None:
    assert local_noise_multiplier(1.0, 1e-5) == pytest.approx(np.sqrt(2 * np.log(1.25e5)))
    wrapped = make_private(FedAvg(), options("local_dp", local_epsilon=2.0, local_delta=1e-5), 4, 0)
    report = wrapped.run_report()["privacy"]  # type: ignore[attr-defined]
    assert report["mode"] == "local_dp" and report["sampling_rate"] == 1.0


@pytest.mark.parametrize("strategy", ["krum", "fedmedian"])
def test_robust_strategy_refused(tiny_cfg: Callable[..., DictConfig], strategy: str) -> None:
    with pytest.raises(ConfigError, match=f"cannot run with strategy={strategy}"):
        validate(tiny_cfg(f"strategy={strategy}", "privacy=dp_client"))


def test_asynchronous_strategy_refused(tiny_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match="synchronous"):
        validate(tiny_cfg("strategy=fedbuff", "privacy=dp_client"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("privacy.noise_multiplier=0", "privacy.noise_multiplier must be a number > 0, got 0"),
        ("privacy.target_delta=1", "privacy.target_delta must be"),
        ("privacy.sampling=uniform", "privacy.sampling must be one of"),
        ("privacy.clipping_norm=-1", "privacy.clipping_norm must be a number > 0, got -1"),
    ],
)
def test_bad_options_refused(
    tiny_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(tiny_cfg("privacy=dp_server", override))


def test_every_mode_composes(tiny_cfg: Callable[..., DictConfig]) -> None:
    for name in ("none", "dp_client", "dp_server", "dp_adaptive", "local_dp"):
        validate(tiny_cfg(f"privacy={name}"))


def test_round_report_has_epsilon() -> None:
    wrapped = make_private(FedAvg(), options(), len(NODES), 0)
    _, replies = replies_for(wrapped, global_model(), random_updates(0.1), [10] * len(NODES))
    wrapped.aggregate_train(1, replies)
    row = wrapped.round_report()  # type: ignore[attr-defined]
    assert row["epsilon"] == pytest.approx(independent_epsilon(1.0, 1.0, 1, 1e-5), rel=2e-3)
    assert row["delta"] == 1e-5 and row["sampled"] == len(NODES)


def test_state_dict_restores_epsilon_and_sampling() -> None:
    """A resumed DP run continues the accountant and the sampling RNG where they were."""
    wrapped = make_private(FedAvg(), options(), len(NODES), 0)
    _, replies = replies_for(wrapped, global_model(), random_updates(0.1), [10] * len(NODES))
    wrapped.aggregate_train(1, replies)
    wrapped.rng.random(5)  # type: ignore[attr-defined]  # the RNG has moved on from its seed
    state = json.loads(json.dumps(wrapped.state_dict()))  # type: ignore[attr-defined]
    resumed = make_private(FedAvg(), options(), len(NODES), 0)
    assert resumed.budget.rounds == 0 and resumed.epsilon == 0  # type: ignore[attr-defined]
    resumed.load_state_dict(state)  # type: ignore[attr-defined]
    assert resumed.epsilon == wrapped.epsilon > 0  # type: ignore[attr-defined]
    assert resumed.budget.rounds == wrapped.budget.rounds == 1  # type: ignore[attr-defined]
    assert resumed.rng.random() == wrapped.rng.random()  # type: ignore[attr-defined]


def test_poisson_accounting_prints_no_convergence_warnings(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """q=0.1, z=1: dp-accounting leaves small fractional orders out, warning once for each."""
    expected = independent_epsilon(1.0, 0.1, 3, 1e-5)
    capfd.readouterr()
    caplog.clear()
    with caplog.at_level("DEBUG"):
        epsilon = PrivacyAccountant(1.0, 0.1, 1e-5).epsilon(3)
    assert epsilon == pytest.approx(expected, rel=1e-12)
    assert not [r for r in caplog.records if r.levelno >= 30]
    assert "failed to converge" not in "".join(capfd.readouterr())
    assert any("left out of epsilon" in r.getMessage() for r in caplog.records)
