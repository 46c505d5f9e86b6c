"""Optimizers (SGD, momentum, Adam) and learning-rate schedules, in plain numpy.

An optimizer turns a gradient estimate ``d`` (m,) into a new parameter vector:
``p_new = optimizer.step(p, d, lr)``. Optimizers are stateful (velocity, moments, step
count); :meth:`Optimizer.state_dict` / :meth:`Optimizer.load_state_dict` save and restore
that state exactly (arrays and scalars), for checkpoints.

A schedule maps the epoch index (0-based) to a multiplier of the base learning rate:
``lr(epoch) = optimizer.lr * schedule(epoch)``.
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import check_int, check_positive, check_real
from . import defaults as D
from .errors import ParameterError

__all__ = [
    "Optimizer", "SGD", "Momentum", "Adam", "get_optimizer",
    "Schedule", "Constant", "StepDecay", "ExponentialDecay", "Cosine", "get_schedule",
]


def _positive(value, name):
    return check_positive(value, name)


def _unit(value, name):
    """A decay rate in ``[0, 1)``."""
    return check_real(value, name, low=0.0, high=1.0, high_open=True)


def _check_finite_grad(grad: np.ndarray) -> None:
    if not np.isfinite(grad).all():
        bad = np.flatnonzero(~np.isfinite(grad))
        raise ParameterError(f"the gradient is not finite on {bad.size} parameter(s) (e.g. index "
                             f"{int(bad[0])}: {float(grad[bad[0]])!r}); the optimizer state is unchanged",
                             edges=bad)


class Optimizer:
    """Base class: ``step(params, grad, lr=None) -> new params`` (inputs are not modified)."""

    name = "optimizer"
    #: names of the state arrays, kept as attributes ``_<name>`` (None before the first step)
    _arrays: tuple[str, ...] = ()

    def __init__(self, lr: float = D.LR):
        self.lr = _positive(lr, "lr")
        Optimizer.reset(self)  # not a subclass's reset: its own attributes are not set yet

    def reset(self) -> None:
        """Forget all state (velocity, moments, step count)."""
        self.t = 0
        for k in self._arrays:
            setattr(self, f"_{k}", None)

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float | None = None) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        grad = np.asarray(grad, dtype=float)
        if grad.shape != params.shape:
            raise ParameterError(f"gradient shape {grad.shape} does not match parameters {params.shape}")
        _check_finite_grad(grad)
        lr = self.lr if lr is None else check_real(lr, "lr (this step's learning rate)", low=0.0)
        self.t += 1
        return params - self._direction(grad, lr)

    def _update(self, params: np.ndarray, grad: np.ndarray, lr: float) -> np.ndarray:
        """:meth:`step` for float arrays of one shape and an ``lr`` the caller validated once
        (the Trainer, per epoch); a non-finite gradient is still refused."""
        _check_finite_grad(grad)
        self.t += 1
        return params - self._direction(grad, lr)

    def _direction(self, grad, lr):
        raise NotImplementedError

    def state_dict(self) -> dict:
        """``{"t": int, **arrays}``: everything needed to continue identically."""
        arrays = {k: getattr(self, f"_{k}") for k in self._arrays}
        return {"t": self.t, **{k: None if a is None else a.copy() for k, a in arrays.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        for k in self._arrays:
            setattr(self, f"_{k}", None if state.get(k) is None else np.array(state[k], dtype=float))

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if not k.startswith("_") and k != "t")
        return f"{type(self).__name__}({params})"


class SGD(Optimizer):
    """``p <- p - lr * d``."""

    name = "sgd"

    def _direction(self, grad, lr):
        return lr * grad


class Momentum(Optimizer):
    """Heavy ball: ``v <- beta v + d``, ``p <- p - lr v`` (Nesterov: ``p <- p - lr (d + beta v)``)."""

    name = "momentum"
    _arrays = ("v",)

    def __init__(self, lr: float = D.LR, beta: float = D.MOMENTUM, nesterov: bool = False):
        super().__init__(lr)
        self.beta = _unit(beta, "momentum beta")
        self.nesterov = bool(nesterov)

    def _direction(self, grad, lr):
        if self._v is None:
            self._v = np.zeros_like(grad)
        self._v = self.beta * self._v + grad
        return lr * (grad + self.beta * self._v if self.nesterov else self._v)


class Adam(Optimizer):
    """Adam (Kingma and Ba): ``m <- b1 m + (1-b1) d``, ``v <- b2 v + (1-b2) d^2``,
    ``p <- p - lr * m_hat / (sqrt(v_hat) + eps)`` with bias-corrected ``m_hat, v_hat``."""

    name = "adam"
    _arrays = ("m", "v")

    def __init__(self, lr: float = D.LR, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(lr)
        self.beta1, self.beta2 = _unit(beta1, "Adam beta1"), _unit(beta2, "Adam beta2")
        self.eps = _positive(eps, "eps")

    def _direction(self, grad, lr):
        if self._m is None:
            self._m, self._v = np.zeros_like(grad), np.zeros_like(grad)
        self._m = self.beta1 * self._m + (1.0 - self.beta1) * grad
        self._v = self.beta2 * self._v + (1.0 - self.beta2) * grad * grad
        m_hat = self._m / (1.0 - self.beta1 ** self.t)
        v_hat = self._v / (1.0 - self.beta2 ** self.t)
        return lr * m_hat / (np.sqrt(v_hat) + self.eps)


_OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def get_optimizer(optimizer, lr: float | None = None) -> Optimizer:
    """An optimizer from a name (``"sgd"``, ``"momentum"``, ``"adam"``) or an instance; ``lr``
    defaults to :data:`kirchnet.defaults.LR` (every optimizer has the same default)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _OPTIMIZERS:
        cls = _OPTIMIZERS[optimizer.lower()]
        return cls(D.LR if lr is None else lr)
    raise ParameterError(f"unknown optimizer {optimizer!r}; choose one of {sorted(_OPTIMIZERS)} or pass an Optimizer")


# ---------------------------------------------------------------------------- schedules
class Schedule:
    """Multiplier of the base learning rate as a function of the epoch (0-based)."""

    def __call__(self, epoch: int) -> float:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Constant(Schedule):
    """``1``."""

    def __call__(self, epoch):
        return 1.0


class StepDecay(Schedule):
    """``gamma ** floor(epoch / step_size)``."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size, self.gamma = check_int(step_size, "step_size", 1), _positive(gamma, "gamma")

    def __call__(self, epoch):
        return self.gamma ** (int(epoch) // self.step_size)


class ExponentialDecay(Schedule):
    """``gamma ** epoch``."""

    def __init__(self, gamma: float = 0.95):
        self.gamma = _positive(gamma, "gamma")

    def __call__(self, epoch):
        return self.gamma ** int(epoch)


class Cosine(Schedule):
    """Cosine annealing over ``total`` epochs: ``f + (1-f) (1 + cos(pi min(epoch,total)/total)) / 2``
    with ``f = min_factor``."""

    def __init__(self, total: int, min_factor: float = 0.0):
        self.total = check_int(total, "total", 1)
        self.min_factor = check_real(min_factor, "min_factor", low=0.0, high=1.0)

    def __call__(self, epoch):
        e = min(int(epoch), self.total)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * e / self.total))


def get_schedule(schedule, epochs: int | None = None) -> Schedule:
    """A schedule from ``None``/``"constant"``, ``"cosine"`` (over ``epochs``), a callable or an instance."""
    if schedule is None or (isinstance(schedule, str) and schedule == "constant"):
        return Constant()
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str) and schedule == "cosine":
        return Cosine(max(int(epochs or 1), 1))
    if callable(schedule):
        return schedule
    raise ParameterError(f"unknown schedule {schedule!r}; use 'constant', 'cosine' or a Schedule instance")
