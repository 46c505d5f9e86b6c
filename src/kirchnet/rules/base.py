"""The learning-rule interface and the exact (analytical) rule.

A rule maps ``(circuit, conductances, x, y)`` to a gradient estimate ``(m,)`` in
conductance space, with the sign convention that ``g - lr * estimate`` lowers the
loss, plus diagnostics (the states it used). Rules may be handed an existing
factorization of the same conductances (``factorization=``) so that a training step
factorizes once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..circuit import Circuit, CircuitFactorization, State
from ..gradient import loss_and_grad
from ..losses import get_loss


class RuleResult:
    """What a rule returns (read-only).

    ``estimate`` (m,): batch-mean gradient estimate w.r.t. conductances.
    ``loss``: batch-mean loss at the free state. ``free``: the free state (may be given
    as a zero-argument callable: it is then built on first access, so a training step
    that reads only ``estimate`` never forms the (batch x n) potentials).
    ``states``: other states the rule used (e.g. ``{"nudged": ..., "clamped": ...}``).
    ``info``: anything else (e.g. nudge strength).
    """

    __slots__ = ("estimate", "loss", "_free", "states", "info")

    def __init__(self, estimate: np.ndarray, loss: float, free: "State | Callable[[], State]",
                 states: Mapping[str, State] | None = None, info: dict[str, Any] | None = None):
        for name, value in (("estimate", estimate), ("loss", loss), ("_free", free),
                            ("states", {} if states is None else states),
                            ("info", {} if info is None else info)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("RuleResult is read-only; use .replace(...)")

    @property
    def free(self) -> State:
        if not isinstance(self._free, State):
            object.__setattr__(self, "_free", self._free())
        return self._free

    def replace(self, **changes) -> "RuleResult":
        """A copy with some fields changed (the free state stays lazy if not given)."""
        kw = {"estimate": self.estimate, "loss": self.loss, "free": self._free,
              "states": self.states, "info": self.info}
        kw.update(changes)
        return RuleResult(**kw)

    def __repr__(self) -> str:
        return f"RuleResult(loss={self.loss!r}, estimate=<{np.shape(self.estimate)}>, states={list(self.states)})"


class Rule:
    """Base class. Subclasses implement :meth:`estimate`; hyperparameters in ``__init__``."""

    #: short identifier used in histories and reports
    name = "rule"

    def __init__(self, loss="mse"):
        self.loss = get_loss(loss)

    def estimate(self, circuit: Circuit, conductances, x, y,
                 factorization: CircuitFactorization | None = None) -> RuleResult:
        raise NotImplementedError

    def __call__(self, circuit, conductances, x, y, factorization=None) -> RuleResult:
        return self.estimate(circuit, conductances, x, y, factorization=factorization)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class Analytical(Rule):
    """The exact adjoint gradient ``dC/dg = -(B^T lam) * w`` (theory.md, 2)."""

    name = "analytical"

    def estimate(self, circuit, conductances, x, y, factorization=None) -> RuleResult:
        res = loss_and_grad(circuit, conductances, x, y, loss=self.loss,
                            factorization=factorization, full=True)
        return RuleResult(res.grad, res.loss, lambda: res.state, {}, {"delta": res.delta})
