"""The learning-rule interface and the exact (analytical) rule.

A rule maps ``(circuit, conductances, x, y)`` to a gradient estimate ``(m,)`` in
conductance space, with the sign convention that ``g - lr * estimate`` lowers the
loss, plus diagnostics (the states it used). Rules may be handed an existing
factorization of the same conductances (``factorization=``) so that a training step
factorizes once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..circuit import Circuit, CircuitFactorization, State
from ..gradient import loss_and_grad
from ..losses import get_loss


@dataclass(frozen=True, eq=False)
class RuleResult:
    """What a rule returns.

    ``estimate`` (m,): batch-mean gradient estimate w.r.t. conductances.
    ``loss``: batch-mean loss at the free state. ``free``: the free state.
    ``states``: other states the rule used (e.g. ``{"nudged": ..., "clamped": ...}``).
    ``info``: anything else (e.g. nudge strength).
    """

    estimate: np.ndarray
    loss: float
    free: State
    states: dict[str, State] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


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
        return RuleResult(res.grad, res.loss, res.state, {}, {"delta": res.delta})
