"""Server optimizers on the averaged update, in pure NumPy (Reddi et al. 2021, arXiv:2003.00295)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedflower.aggregation.mean import Arrays, _floating
from fedflower.checks import check_number
from fedflower.errors import UpdateRejected


class ServerOptimizer:
    """A server-side optimizer on the averaged update (Reddi et al. 2021, arXiv:2003.00295).

    Each round the strategy averages the clients' models into ``target``; the optimizer treats
    ``delta = target - params`` (the paper's pseudo-gradient ``Delta_t``, pointing downhill) as
    the round's update and returns the next global model. State (momentum, second moments)
    lives here, in the parameters' dtypes. Arrays that are not floating point (counters) are
    taken from ``target`` unchanged.
    """

    STATE = ("m", "v")
    """Attributes holding the optimizer's state across rounds (``None`` until first used)."""

    def state_dict(self) -> dict[str, Arrays | None]:
        """The optimizer's moments, for a checkpoint."""
        return {k: getattr(self, k) for k in self.STATE if hasattr(self, k)}

    def load_state_dict(self, state: dict[str, Arrays | None]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for key, value in state.items():
            setattr(self, key, None if value is None else [np.array(a) for a in value])

    def step(self, params: Sequence[np.ndarray], target: Sequence[np.ndarray]) -> Arrays:
        """Return the next global model from the current one and the clients' mean model."""
        if len(params) != len(target):
            raise UpdateRejected(f"target has {len(target)} arrays, the model has {len(params)}")
        out: Arrays = []
        floats = []
        for i, (x, t) in enumerate(zip(params, target, strict=True)):
            if np.shape(x) != np.shape(t):
                raise UpdateRejected(
                    f"array {i} of the target has shape {np.shape(t)}, the model's {np.shape(x)}"
                )
            out.append(np.array(t, copy=True))
            if _floating(x):
                floats.append(i)
        xs = [np.asarray(params[i]) for i in floats]
        deltas = [np.subtract(target[i], xs[j], dtype=xs[j].dtype) for j, i in enumerate(floats)]
        for i, new in zip(floats, self._update(xs, deltas), strict=True):
            out[i] = new
        return out

    def _update(self, params: Arrays, deltas: Arrays) -> Arrays:
        raise NotImplementedError


class ServerSGD(ServerOptimizer):
    """SGD with heavy-ball momentum on the pseudo-gradient: FedAvgM (Hsu et al. 2019).

    ``m <- momentum * m + delta``; ``x <- x + learning_rate * m`` (Flower's and PyTorch's
    convention; ``m`` starts at zero). Hsu et al., "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification", arXiv:1909.06335. With ``momentum=0``
    and ``learning_rate=1`` the result is the clients' mean itself, i.e. FedAvg.

    Parameters
    ----------
    learning_rate : float
        Server learning rate ``eta`` (> 0).
    momentum : float
        Server momentum ``beta`` in [0, 1).
    """

    def __init__(self, learning_rate: float = 1.0, momentum: float = 0.0) -> None:
        self.learning_rate = float(
            check_number("server_learning_rate", learning_rate, minimum=0, min_open=True)
        )
        self.momentum = float(
            check_number("server_momentum", momentum, minimum=0, maximum=1, max_open=True)
        )
        self.m: Arrays | None = None

    def step(self, params: Sequence[np.ndarray], target: Sequence[np.ndarray]) -> Arrays:
        """Next global model; exactly ``target`` (FedAvg) when momentum is 0 and lr is 1."""
        if self.momentum == 0.0 and self.learning_rate == 1.0:
            return [np.array(t, copy=True) for t in target]
        return super().step(params, target)

    def _update(self, params: Arrays, deltas: Arrays) -> Arrays:
        if self.momentum > 0.0:
            if self.m is None:
                self.m = [np.zeros_like(d) for d in deltas]
            for m, d in zip(self.m, deltas, strict=True):
                m *= m.dtype.type(self.momentum)
                m += d
            deltas = self.m
        lr = self.learning_rate
        return [x + x.dtype.type(lr) * d for x, d in zip(params, deltas, strict=True)]


class ServerAdaptive(ServerOptimizer):
    """Adaptive server optimizers of Reddi et al. 2021 (arXiv:2003.00295, Algorithm 2).

    ``m <- beta_1 * m + (1 - beta_1) * delta``; ``v`` is updated by the subclass;
    ``x <- x + eta * m / (sqrt(v) + tau)``. ``m`` and ``v`` start at zero (as in Flower), and
    there is no bias correction (as in the paper's Algorithm 2; Flower's FedAdam adds one).

    Parameters
    ----------
    eta : float
        Server learning rate (> 0).
    beta_1 : float
        First-moment decay in [0, 1).
    beta_2 : float
        Second-moment decay in [0, 1) (unused by Adagrad).
    tau : float
        Adaptivity ``tau`` (> 0): larger is less adaptive.
    """

    def __init__(
        self, eta: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        self.eta = float(check_number("eta", eta, minimum=0, min_open=True))
        self.beta_1 = float(check_number("beta_1", beta_1, minimum=0, maximum=1, max_open=True))
        self.beta_2 = float(check_number("beta_2", beta_2, minimum=0, maximum=1, max_open=True))
        self.tau = float(check_number("tau", tau, minimum=0, min_open=True))
        self.m: Arrays | None = None
        self.v: Arrays | None = None

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        raise NotImplementedError

    def _update(self, params: Arrays, deltas: Arrays) -> Arrays:
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(d) for d in deltas]
            self.v = [np.zeros_like(d) for d in deltas]
        out = []
        for x, d, m, v in zip(params, deltas, self.m, self.v, strict=True):
            t = x.dtype.type
            m *= t(self.beta_1)
            m += t(1.0 - self.beta_1) * d
            self._second_moment(v, d * d)
            out.append(x + t(self.eta) * m / (np.sqrt(v) + t(self.tau)))
        return out


class ServerAdam(ServerAdaptive):
    """FedAdam's server step: ``v <- beta_2 * v + (1 - beta_2) * delta**2``."""

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        v *= v.dtype.type(self.beta_2)
        v += v.dtype.type(1.0 - self.beta_2) * d2


class ServerYogi(ServerAdaptive):
    """FedYogi's server step: ``v <- v - (1 - beta_2) * delta**2 * sign(v - delta**2)``."""

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        v -= v.dtype.type(1.0 - self.beta_2) * d2 * np.sign(v - d2)


class ServerAdagrad(ServerAdaptive):
    """FedAdagrad's server step: ``v <- v + delta**2``."""

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        v += d2
