"""The learning-rule interface and the exact (analytical) rule.

A rule maps ``(circuit, conductances, x, y)`` to a gradient estimate ``(m,)`` in
conductance space, with the sign convention that ``g - lr * estimate`` lowers the
loss, plus diagnostics (the states it used). Rules may be handed an existing
factorization of the same conductances (``factorization=``) so that a training step
factorizes once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..circuit import Circuit, CircuitFactorization, State
from ..errors import SolverError
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


def _check_result(rule: "Rule", result: RuleResult) -> RuleResult:
    """Raise :class:`~kirchnet.errors.SolverError` when a rule's estimate or loss is not
    finite (an overflow or an ill-conditioned solve): no rule ever returns NaN or inf."""
    est = np.asarray(result.estimate)
    loss = result.loss
    est_ok = est.dtype.kind not in "fc" or bool(np.isfinite(est).all())
    loss_ok = loss is None or bool(np.isfinite(loss))
    if est_ok and loss_ok:
        return result
    if not est_ok:
        bad = np.flatnonzero(~np.isfinite(est.ravel()))
        what = (f"a non-finite estimate on {bad.size} of {est.size} edge(s) (e.g. edge {int(bad[0])}: "
                f"{float(est.ravel()[bad[0]])!r})")
    else:
        what = f"a non-finite loss ({float(loss)!r})"
    raise SolverError(f"rule {type(rule).__name__} returned {what}; the conductances, inputs or "
                      f"targets are too large or too widely spread for double precision: rescale them "
                      f"(e.g. conductances near 1 S, inputs near 1 V) or use a smaller beta/eta")


def _checked_estimate(estimate):
    """Wrap a subclass's ``estimate`` with :func:`_check_result` (done once per class by
    :meth:`Rule.__init_subclass__`, so every rule is checked in this one place)."""
    if getattr(estimate, "_finite_checked", False):
        return estimate

    @functools.wraps(estimate)
    def checked(self, *args, **kwargs):
        return _check_result(self, estimate(self, *args, **kwargs))

    checked._finite_checked = True
    return checked


class Rule:
    """Base class. Subclasses implement :meth:`estimate`; hyperparameters in ``__init__``.

    Every subclass's ``estimate`` is wrapped so that a non-finite estimate or loss raises
    :class:`~kirchnet.errors.SolverError` instead of being returned.
    """

    #: short identifier used in histories and reports
    name = "rule"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "estimate" in cls.__dict__:
            cls.estimate = _checked_estimate(cls.__dict__["estimate"])

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
