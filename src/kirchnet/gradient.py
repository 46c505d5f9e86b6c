"""The exact ("analytical") gradient of a loss by the adjoint method (theory.md, 2).

Adjoint state: ``L_FF lam_F = (dC/du)_F = P_F^T delta``, ``lam_C = 0`` (same matrix and
factorization as the forward solve). Then

* ``dC/dg_e = -(B^T lam)_e w_e``,
* ``dC/dr_e = -g_e^2 dC/dg_e = i_e * i_adj_e`` with ``i_adj = g * (B^T lam)``.

``i_adj`` are the currents of the same network with every input switched off and the
output error injected as currents at the outputs: the gradient of each resistance is
the product of two locally measured currents.

Because ``delta`` lives on the few outputs, the adjoint is solved once per output
(``Z = L_FF^{-1} P_F^T``, n_outputs columns), not once per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from . import _memory
from . import parametrization as _param
from .errors import ParameterError, ShapeError
from .factorization import CircuitFactorization, State
from .losses import get_loss

if TYPE_CHECKING:  # annotations only: kirchnet.circuit sits above this module
    from .circuit import Circuit


@dataclass(frozen=True, eq=False)
class GradientResult:
    """Everything the adjoint gradient computed, for rules and diagnostics."""

    loss: float
    grad: np.ndarray  # (m,), batch mean
    delta: np.ndarray  # (b, k) output error dC_s/do
    losses: np.ndarray  # (b,) per-sample loss
    outputs: np.ndarray  # (b, k) free-state outputs
    factorization: CircuitFactorization = field(repr=False)
    x: np.ndarray = field(repr=False)
    per_sample: np.ndarray | None = None  # (b, m) when asked
    free_state: State | None = field(default=None, repr=False)

    @cached_property
    def state(self) -> State:
        """The free (forward) state (solved on first access if the fast path skipped it)."""
        if self.free_state is not None:
            return self.free_state
        return self.factorization.solve(self.x)

    @cached_property
    def adjoint_potentials(self) -> np.ndarray:
        """``lam`` (b, n), the adjoint state (computed on first access)."""
        return adjoint_potentials(self.factorization, self.delta)


def adjoint_potentials(factorization: CircuitFactorization, delta: np.ndarray) -> np.ndarray:
    """``lam`` (b, n): solution of ``L_FF lam_F = P_F^T delta_s`` per sample, ``lam_C = 0``."""
    c = factorization.circuit
    delta = np.asarray(delta, dtype=float)
    if delta.ndim != 2 or delta.shape[1] != c.n_outputs:
        raise ShapeError(f"delta must have shape (batch, {c.n_outputs}), got {delta.shape}")
    lam = np.zeros((delta.shape[0], c.network.n_nodes))
    if delta.shape[0] > c.n_outputs:
        lam[:, c.free_nodes] = delta @ factorization.adjoint_basis().T
    else:
        lam[:, c.free_nodes] = factorization.solve_free(c.readout_free_T @ delta.T).T
    return lam


def _resistance_chain_rule(grad: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``dC/dr = -g^2 dC/dg`` (:meth:`kirchnet.parametrization.Resistance.grad_from_g`)."""
    return _param.RESISTANCE.grad_from_g(grad, g)


def _check_result(value: float, grad: np.ndarray, x: np.ndarray, g: np.ndarray) -> None:
    """Nothing non-finite leaves :func:`loss_and_grad`: name the likely cause."""
    if np.isfinite(value) and np.isfinite(grad).all():
        return
    raise ParameterError(
        f"the loss or its gradient is not finite (loss {value:.3g}; largest |x| = "
        f"{float(np.max(np.abs(x))):.3g} V, largest g = {float(np.max(g)):.3g}): the values "
        f"overflow float64; rescale the inputs x and targets y (e.g. to about 1 V) and the "
        f"conductances"
    )


def gradient_from_states(state: State, lam: np.ndarray, wrt: str = "conductance",
                         per_sample: bool = False):
    """``dC/dg = -(B^T lam) * w`` (or ``dC/dr``), batch mean and optionally per sample."""
    c = state.circuit
    adj_drop = np.asarray((c._BT @ lam.T).T)  # (b, m)
    per = _param.get(wrt).grad_from_g(-adj_drop * state.resistor_voltages, state.conductances)
    return per.mean(axis=0), (per if per_sample else None)


def contracted_gradient(factorization: CircuitFactorization, state: State,
                        delta: np.ndarray) -> np.ndarray:
    """Batch-mean ``dC/dg`` without any (batch x m) array.

    With ``lam_s = Z delta_s`` (``Z`` = adjoint basis, lam_C = 0), for edge ``e = (a, b)``:
    ``sum_s (lam_s[a] - lam_s[b]) w_se = sum_j (B^T Z)[e,j] (B^T M^T + S^T delta)[e,j]``
    with ``M = delta^T U`` (k x n). Cost O(b k n + k m).
    """
    M = delta.T @ state.potentials  # (k, n)
    Wt = factorization.circuit._BT @ M.T  # (m, k): M[j, a] - M[j, b]
    if state.sources is not None:
        Wt += state.sources.T @ delta
    return -np.einsum("mk,mk->m", factorization.adjoint_drops(), Wt) / delta.shape[0]


def loss_and_grad(circuit: Circuit, conductances, x, y, loss="mse", wrt: str = "conductance",
                  per_sample: bool = False, factorization: CircuitFactorization | None = None,
                  full: bool = False):
    """Batch-mean loss and its exact gradient w.r.t. conductances or resistances.

    Returns ``(loss, grad)`` (``grad`` of shape (m,)), or ``(loss, grad, per_sample_grad)``
    with ``per_sample=True``, or a :class:`GradientResult` with ``full=True``. Pass an
    existing ``factorization`` of the same conductances to skip refactoring.
    """
    if not circuit.is_linear:  # implicit differentiation at the Newton equilibrium, by the
        # nonlinear factorization itself (kirchnet.nonlinear sits above this module)
        fac = circuit.factorization_for(conductances, factorization)
        return fac.loss_and_grad(x, y, loss=loss, wrt=wrt, per_sample=per_sample, full=full)
    loss_fn = get_loss(loss)
    factorization = circuit.factorization_for(conductances, factorization)
    param = _param.get(wrt)
    xn, xs, xc, _ = circuit.driver_values(x, None)
    b, D, k = xn.shape[0], circuit.n_drivers, circuit.n_outputs
    state = None
    if not per_sample and b > D and b > k:
        # Low-rank path: u = Zd Hfull^T never formed; O((D + k)(n + m)) after the solves.
        Zd = np.concatenate([xn, xs, xc], axis=1) if xs.size or xc.size else xn
        factorization.prepare()  # transfer and adjoint basis in one multi-column solve
        outputs = Zd @ circuit.read_outputs(factorization.transfer_full().T)
        values, delta = loss_fn(outputs, y)
        # sum_s w_s delta_s^T = (B^T Hfull) Zd^T delta (+ sources), against the adjoint drops B^T Z
        Wt = factorization.driver_drops() @ (Zd.T @ delta)  # (m, k)
        if circuit.source_edges.size:
            Wt[circuit.source_edges] += xs.T @ delta
        grad = -np.einsum("mk,mk->m", factorization.adjoint_drops(), Wt) / b
        per = None
    else:
        if per_sample or b <= k:
            _memory.require(24.0 * b * circuit.network.n_edges, f"per-sample gradients of a batch of "
                            f"{b:,} on {circuit.network.n_edges:,} edges ((batch x edges) float64 arrays)",
                            "use a smaller batch, or per_sample=False (the batch mean never forms them)")
        state = factorization.solve(x)
        outputs = state.outputs
        values, delta = loss_fn(outputs, y)
        if per_sample or b <= k:
            lam = adjoint_potentials(factorization, delta)
            grad, per = gradient_from_states(state, lam, "conductance", per_sample)
        else:
            grad, per = contracted_gradient(factorization, state, delta), None
    value = float(values.mean())
    _check_result(value, grad, np.concatenate([xn, xs, xc], axis=1), factorization.conductances)
    grad = param.grad_from_g(grad, factorization.conductances)
    if per is not None:
        per = param.grad_from_g(per, factorization.conductances)
    if full:
        return GradientResult(value, grad, delta, values, outputs, factorization,
                              np.asarray(x, dtype=float), per, state)
    if per_sample:
        return value, grad, per
    return value, grad
