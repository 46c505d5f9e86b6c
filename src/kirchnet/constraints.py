"""Device constraints, composable, applied after every update.

A constraint maps the proposed conductances ``g_new`` (m,) and the previous ones
``g_old`` (m,) to the conductances the device actually takes:
``g = constraint.apply(g_new, g_old, parametrization)``. Each constraint works in a
*space*: ``"conductance"`` (``p = g``) or ``"resistance"`` (``p = r = 1/g``); ``space=None``
means the trainer's parametrization. Constraints compose in order (:class:`Compose`, or a
list given to the trainer), e.g. ``[UpdateNoise(0.1), AsymmetricSteps(1, 0.5),
Bounds(40, 32e3, "resistance"), LogLevels(100, 40, 32e3)]``.

* :class:`Bounds`: ``p <- clip(p, lower, upper)``.
* :class:`Levels` / :class:`LogLevels`: ``p`` snapped to a finite set of levels (a digital
  potentiometer such as the X9C303: 100 steps between 40 ohm and 32 kohm, in resistance);
  nearest level (in log space for log levels) or stochastic rounding.
* :class:`UpdateNoise`: multiplicative noise on the step, ``dp <- dp (1 + sigma xi)``,
  ``xi ~ N(0, 1)`` per edge, seeded.
* :class:`AsymmetricSteps`: ``dp <- up * dp`` where ``dp > 0`` and ``down * dp`` where ``dp < 0``.

Random constraints carry a seeded generator whose state is saved by
:meth:`Constraint.state_dict` (checkpoints resume identically).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .errors import ParameterError

__all__ = [
    "Constraint", "Bounds", "Levels", "LogLevels", "UpdateNoise", "AsymmetricSteps", "Compose",
    "as_constraint", "to_space", "from_space",
]

SPACES = ("conductance", "resistance")


def _check_space(space, allow_none=True, name="space"):
    if space is None and allow_none:
        return None
    aliases = {"g": "conductance", "r": "resistance"}
    space = aliases.get(space, space)
    if space not in SPACES:
        raise ValueError(f"{name} must be 'conductance' or 'resistance', got {space!r}")
    return space


def to_space(g: np.ndarray, space: str) -> np.ndarray:
    """Parameters in ``space``: ``g`` itself or ``r = 1/g``."""
    return np.asarray(g, dtype=float) if space == "conductance" else 1.0 / np.asarray(g, dtype=float)


def from_space(p: np.ndarray, space: str) -> np.ndarray:
    """Conductances from parameters in ``space`` (``g = p`` or ``g = 1/r``)."""
    return np.asarray(p, dtype=float) if space == "conductance" else 1.0 / np.asarray(p, dtype=float)


class Constraint:
    """Base class; subclasses implement ``_apply(p_new, p_old) -> p`` in their space."""

    space: str | None = None

    def apply(self, g_new, g_old, parametrization: str = "conductance") -> np.ndarray:
        """Constrained conductances (m,) from proposed ``g_new`` and previous ``g_old``."""
        space = self.space or _check_space(parametrization, allow_none=False)
        with np.errstate(divide="ignore"):
            p = self._apply(to_space(g_new, space), to_space(g_old, space))
        return from_space(p, space)

    __call__ = apply

    def _apply(self, p_new, p_old):
        raise NotImplementedError

    def satisfied(self, g, parametrization: str = "conductance") -> np.ndarray:
        """Per-edge check (m,) bool that ``g`` obeys the constraint (True when not checkable)."""
        return np.ones(np.shape(g), dtype=bool)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (``"rng"``: the seeded generator's state)."""
        if "rng" in state and hasattr(self, "_rng"):
            self._rng.bit_generator.state = state["rng"]

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class Bounds(Constraint):
    """Clip to ``[lower, upper]`` in ``space`` (either bound may be None)."""

    def __init__(self, lower: float | None = None, upper: float | None = None, space: str = "conductance"):
        self.space = _check_space(space, allow_none=False)
        lo = -math.inf if lower is None else float(lower)
        hi = math.inf if upper is None else float(upper)
        if not lo < hi:
            raise ParameterError(f"bounds need lower < upper, got [{lower}, {upper}]")
        if hi <= 0:
            raise ParameterError(f"{self.space} bounds must allow positive values, got [{lower}, {upper}]")
        self.lower, self.upper = lower, upper
        self._lo, self._hi = lo, hi

    def _apply(self, p_new, p_old):
        return np.clip(p_new, self._lo, self._hi)

    def satisfied(self, g, parametrization="conductance"):
        p = to_space(g, self.space)
        tol = 1e-12 * np.maximum(1.0, np.abs(p))
        return (p >= self._lo - tol) & (p <= self._hi + tol)


class Levels(Constraint):
    """Snap to the nearest of a finite set of ``levels`` (sorted, positive) in ``space``.

    ``log=True`` measures nearness in ``log p`` (right for geometrically spaced levels).
    ``rounding="stochastic"`` rounds up with probability equal to the fractional position
    between the two neighbouring levels (unbiased on average; lets small steps accumulate),
    seeded by ``seed``. Values outside the range go to the end levels.
    """

    def __init__(self, levels: Sequence[float], space: str = "resistance", log: bool = False,
                 rounding: str = "nearest", seed: int = 0):
        lv = np.unique(np.asarray(levels, dtype=float))
        if lv.size < 2 or not np.all(np.isfinite(lv)) or lv[0] <= 0:
            raise ParameterError("levels must be at least two finite positive values")
        if rounding not in ("nearest", "stochastic"):
            raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
        self.space = _check_space(space, allow_none=False)
        self.levels = lv
        self.log = bool(log)
        self.rounding = rounding
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def _coords(self, p):
        return np.log(p) if self.log else p

    def _apply(self, p_new, p_old):
        lv = self._coords(self.levels)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = self._coords(np.clip(p_new, self.levels[0], self.levels[-1]))
        hi = np.clip(np.searchsorted(lv, z, side="left"), 1, lv.size - 1)
        lo = hi - 1
        frac = (z - lv[lo]) / (lv[hi] - lv[lo])
        if self.rounding == "nearest":
            up = frac >= 0.5
        else:
            up = self._rng.random(z.shape) < frac
        return self.levels[np.where(up, hi, lo)]

    def satisfied(self, g, parametrization="conductance"):
        p = to_space(g, self.space)
        idx = np.clip(np.searchsorted(self.levels, p), 0, self.levels.size - 1)
        near = np.minimum(np.abs(p - self.levels[idx]), np.abs(p - self.levels[np.maximum(idx - 1, 0)]))
        return near <= 1e-9 * np.abs(p)

    def state_dict(self):
        return {"rng": self._rng.bit_generator.state} if self.rounding == "stochastic" else {}

    def __repr__(self):
        return (f"{type(self).__name__}(n={self.levels.size}, range=[{self.levels[0]:g}, "
                f"{self.levels[-1]:g}], space={self.space!r}, log={self.log}, rounding={self.rounding!r})")


class LogLevels(Levels):
    """``n`` log-spaced resistance levels in ``[r_min, r_max]`` (default: X9C303-like,
    100 steps between 40 ohm and 32 kohm); nearness measured in log resistance."""

    def __init__(self, n: int = 100, r_min: float = 40.0, r_max: float = 32e3,
                 rounding: str = "nearest", seed: int = 0):
        if int(n) < 2 or not 0 < r_min < r_max:
            raise ParameterError(f"LogLevels needs n >= 2 and 0 < r_min < r_max, got {n}, {r_min}, {r_max}")
        super().__init__(np.geomspace(r_min, r_max, int(n)), space="resistance", log=True,
                         rounding=rounding, seed=seed)


class UpdateNoise(Constraint):
    """Multiplicative update noise: ``p <- p_old + (p_new - p_old)(1 + sigma xi)``, ``xi ~ N(0,1)``.

    ``space=None`` uses the trainer's parametrization. The generator is seeded by ``seed``.
    """

    def __init__(self, sigma: float = 0.1, seed: int = 0, space: str | None = None):
        if not (float(sigma) >= 0 and math.isfinite(sigma)):
            raise ParameterError(f"noise sigma must be >= 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.seed = seed
        self.space = _check_space(space)
        self._rng = np.random.default_rng(seed)

    def _apply(self, p_new, p_old):
        xi = self._rng.standard_normal(np.shape(p_new))
        return p_old + (p_new - p_old) * (1.0 + self.sigma * xi)

    def state_dict(self):
        return {"rng": self._rng.bit_generator.state}


class AsymmetricSteps(Constraint):
    """Asymmetric device response: ``dp <- up * dp`` if ``dp > 0`` else ``down * dp``."""

    def __init__(self, up: float = 1.0, down: float = 1.0, space: str | None = None):
        if up < 0 or down < 0:
            raise ParameterError(f"step factors must be >= 0, got up={up}, down={down}")
        self.up, self.down = float(up), float(down)
        self.space = _check_space(space)

    def _apply(self, p_new, p_old):
        dp = p_new - p_old
        return p_old + np.where(dp > 0, self.up, self.down) * dp


class Compose(Constraint):
    """Apply ``constraints`` in order."""

    def __init__(self, constraints: Sequence[Constraint] = ()):
        self.constraints = [as_constraint(c) for c in constraints]

    def apply(self, g_new, g_old, parametrization="conductance"):
        g = np.asarray(g_new, dtype=float)
        for c in self.constraints:
            g = c.apply(g, g_old, parametrization)
        return g

    __call__ = apply

    def satisfied(self, g, parametrization="conductance"):
        ok = np.ones(np.shape(g), dtype=bool)
        for c in self.constraints:
            ok &= c.satisfied(g, parametrization)
        return ok

    def state_dict(self):
        return {str(i): c.state_dict() for i, c in enumerate(self.constraints)}

    def load_state_dict(self, state):
        for i, c in enumerate(self.constraints):
            c.load_state_dict(state.get(str(i), {}))

    def __repr__(self):
        return f"Compose({self.constraints!r})"


def as_constraint(c) -> Constraint:
    """A :class:`Constraint` from ``None`` (no-op), a constraint, or a list (composed)."""
    if c is None:
        return Compose([])
    if isinstance(c, Constraint):
        return c
    if isinstance(c, (list, tuple)):
        return Compose(c)
    raise TypeError(f"expected a Constraint or a list of them, got {type(c).__name__}")
