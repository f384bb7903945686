"""engine.latency: task durations follow the documented formula and are seeded per client."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedflower.engine.latency import Constant, LatencyModel, LogNormal, Pareto, Uniform
from fedflower.errors import ConfigError


def test_duration_formula() -> None:
    model = LatencyModel(
        Constant(2.0), seconds_per_example=0.01, eval_cost=0.5, bandwidth_mbps=8.0, latency_s=0.1
    )
    # compute 2 * 100 * 3 * 0.01 = 6 s; transfer 0.1 + 8e6 bits / 8e6 = 1.1 s and 0.1 + 0.5 s
    got = model.duration(7, examples=100, epochs=3, bytes_down=1_000_000, bytes_up=500_000)
    assert got == pytest.approx(6.0 + 1.1 + 0.6)
    # evaluation: eval_cost passes instead of epochs
    got = model.duration(7, examples=100, epochs=3, train=False)
    assert got == pytest.approx(2 * 100 * 0.5 * 0.01 + 0.2)


def test_slowdown_is_drawn_once_per_client_independently_of_order() -> None:
    a = LatencyModel(LogNormal(1.0), seed=3)
    b = LatencyModel(LogNormal(1.0), seed=3)
    forward = [a.client_slowdown(c) for c in range(20)]
    backward = [b.client_slowdown(c) for c in reversed(range(20))][::-1]
    assert forward == backward
    assert [a.client_slowdown(c) for c in range(20)] == forward  # cached, not redrawn
    assert len(set(forward)) == 20
    other_seed = [LatencyModel(LogNormal(1.0), seed=4).client_slowdown(c) for c in range(20)]
    assert other_seed != forward


def test_lognormal_slowdowns_have_the_configured_median_and_sigma() -> None:
    model = LatencyModel(LogNormal(sigma=1.0, median=2.0), seed=0)
    logs = np.log([model.client_slowdown(c) for c in range(4000)])
    assert np.median(logs) == pytest.approx(math.log(2.0), abs=0.06)
    assert np.std(logs) == pytest.approx(1.0, abs=0.05)


def test_uniform_and_pareto_ranges() -> None:
    uniform = LatencyModel(Uniform(0.5, 3.0), seed=1)
    values = [uniform.client_slowdown(c) for c in range(500)]
    assert min(values) >= 0.5 and max(values) <= 3.0
    assert np.mean(values) == pytest.approx(1.75, abs=0.1)
    pareto = LatencyModel(Pareto(shape=3.0, minimum=1.5), seed=1)
    values = [pareto.client_slowdown(c) for c in range(4000)]
    assert min(values) >= 1.5
    # mean of Pareto(shape, minimum) is shape * minimum / (shape - 1) = 2.25
    assert np.mean(values) == pytest.approx(2.25, rel=0.08)


def test_jitter_is_seeded_per_task() -> None:
    model = LatencyModel(Constant(), seconds_per_example=1.0, latency_s=0.0, jitter=0.5)
    first = [model.compute_time(1, 10, task=t) for t in range(5)]
    assert first == [model.compute_time(1, 10, task=t) for t in range(5)]
    assert len(set(first)) == 5
    plain = LatencyModel(Constant(), seconds_per_example=1.0, latency_s=0.0)
    assert plain.compute_time(1, 10, task=3) == 10.0


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: LogNormal(sigma=-1), r"latency\.slowdown\.sigma must be a number >= 0, got -1"),
        (lambda: Uniform(2.0, 1.0), r"latency\.slowdown\.high must be a number >= 2, got 1\.0"),
        (lambda: Pareto(shape=0), r"latency\.slowdown\.shape must be a number > 0, got 0"),
        (lambda: Constant(0), r"latency\.slowdown\.value must be a number > 0, got 0"),
        (lambda: LatencyModel(bandwidth_mbps=0), r"latency\.bandwidth_mbps must be a number > 0"),
        (
            lambda: LatencyModel(seconds_per_example=float("inf")),
            r"latency\.seconds_per_example must be a number >= 0, got inf",
        ),
        (lambda: LatencyModel(slowdown="lognormal"), "slowdown must be a Slowdown"),  # type: ignore[arg-type]
    ],
)
def test_bad_parameters_raise_config_errors(build: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()  # type: ignore[operator]
