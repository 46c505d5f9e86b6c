"""Losses on output voltages, behind one small interface.

A loss maps outputs ``o`` (b, k) and targets ``y`` to per-sample values ``C_s`` (b,)
and the output error ``delta = dC_s/do`` (b, k). The batch loss is the mean of ``C_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax, softmax

from ._validation import check_positive
from .errors import ParameterError, ShapeError


def _numeric(targets, name: str) -> np.ndarray:
    """``targets`` as a numeric numpy array (strings, ragged lists and objects refused)."""
    try:
        y = np.asarray(targets)
    except (TypeError, ValueError):  # ragged nested lists
        y = np.asarray(targets, dtype=object)
    if y.dtype.kind not in "biuf":
        raise ShapeError(f"{name} must be numbers (target values or integer class labels), got "
                         f"{'a ragged or mixed array' if y.dtype == object else y.dtype.name + ' values'}; "
                         f"encode class names as 0..k-1 first")
    return y


def _finite(name: str, outputs: np.ndarray, values: np.ndarray, delta: np.ndarray):
    """Return ``(values, delta)``, or raise when the loss overflowed (never NaN/inf out)."""
    if np.isfinite(values).all() and np.isfinite(delta).all():
        return values, delta
    top = float(np.max(np.abs(outputs))) if outputs.size else 0.0
    raise ParameterError(f"the {name} loss is not finite (largest output magnitude {top:.3g}); "
                         f"the outputs or targets are too large: rescale the input voltages and "
                         f"targets (e.g. to about 1 V)")


class Loss:
    """Interface: ``loss(o, y) -> (values (b,), delta (b, k))``."""

    name = "loss"

    def __call__(self, outputs: np.ndarray, targets) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def targets(self, targets, outputs: np.ndarray) -> np.ndarray:
        """Validate and return targets as an array matching ``outputs``."""
        raise NotImplementedError


@dataclass(frozen=True)
class SquaredError(Loss):
    """``C = 1/2 ||o - y||^2`` per sample; ``delta = o - y``. Targets (b, k) or (k,)."""

    name = "mse"

    def targets(self, targets, outputs):
        y = _numeric(targets, "targets")
        if y.ndim == 1 and outputs.shape[0] == 1 and y.shape[0] == outputs.shape[1]:
            y = y[None, :]
        if y.ndim == 1 and outputs.shape[1] == 1 and y.shape[0] == outputs.shape[0]:
            y = y[:, None]
        if y.shape != outputs.shape:
            raise ShapeError(f"targets must have shape {outputs.shape} (batch, n_outputs), got {np.shape(targets)}")
        if not np.all(np.isfinite(y)):
            raise ShapeError("targets contain NaN or inf")
        return y

    def __call__(self, outputs, targets):
        y = self.targets(targets, outputs)
        with np.errstate(over="ignore", invalid="ignore"):
            delta = outputs - y
            values = 0.5 * np.einsum("bk,bk->b", delta, delta)
        return _finite(self.name, outputs, values, delta)


@dataclass(frozen=True)
class CrossEntropy(Loss):
    """Softmax cross-entropy with output voltages as logits scaled by ``1/temperature``.

    ``C = logsumexp(o/T) - o_y/T``; ``delta = (softmax(o/T) - onehot(y)) / T``. Targets
    are integer class labels (b,) or class probabilities (b, k).
    """

    temperature: float = 1.0
    name = "cross_entropy"

    def __post_init__(self):
        # T <= 0 flips or breaks the softmax (T < 0 trains toward the wrong class), NaN/inf
        # give NaN losses: refuse them here, once
        object.__setattr__(self, "temperature", check_positive(self.temperature, "temperature"))

    def targets(self, targets, outputs):
        y = _numeric(targets, "targets")
        b, k = outputs.shape
        if y.ndim == 1:
            if y.dtype.kind == "b":
                raise ShapeError("class labels must be integers 0..k-1, got booleans; pass "
                                 "labels.astype(int)")
            if y.shape[0] != b:
                raise ShapeError(f"labels must have shape ({b},), got {y.shape}")
            if not np.issubdtype(y.dtype, np.integer):
                if not np.all(np.equal(np.mod(y, 1), 0)):
                    raise ShapeError("class labels must be integers 0..k-1")
            y = y.astype(np.int64)
            if y.size and (y.min() < 0 or y.max() >= k):
                raise ShapeError(f"class labels must lie in 0..{k - 1}")
            onehot = np.zeros((b, k))
            onehot[np.arange(b), y] = 1.0
            return onehot
        y = y.astype(float)
        if y.shape != outputs.shape:
            raise ShapeError(f"target probabilities must have shape {outputs.shape}, got {y.shape}")
        if not np.all(np.isfinite(y)) or np.any(y < 0):
            raise ShapeError("target probabilities must be finite and non-negative")
        return y

    def __call__(self, outputs, targets):
        p = self.targets(targets, outputs)
        with np.errstate(over="ignore", invalid="ignore"):
            z = outputs / self.temperature
            values = -np.einsum("bk,bk->b", p, log_softmax(z, axis=1))
            delta = (softmax(z, axis=1) * p.sum(axis=1, keepdims=True) - p) / self.temperature
        return _finite(self.name, outputs, values, delta)


LOSSES = {"mse": SquaredError, "squared_error": SquaredError,
          "cross_entropy": CrossEntropy, "ce": CrossEntropy}


def get_loss(loss) -> Loss:
    """A :class:`Loss` from a name (``"mse"``, ``"cross_entropy"``) or an instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ParameterError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a Loss")
