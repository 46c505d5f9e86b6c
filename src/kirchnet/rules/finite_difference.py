"""Finite-difference baseline: central differences of the batch loss, edge by edge."""

from __future__ import annotations

import numpy as np

from .. import defaults
from .._validation import check_int, check_real
from ..errors import ParameterError
from ._ports import Ports
from . import _nonlinear
from .base import Rule, RuleResult


class FiniteDifference(Rule):
    """``(C(g + h_e 1_e) - C(g - h_e 1_e)) / (2 h_e)`` with ``h_e = eps * g_e``, every edge.

    The perturbed equilibria are computed exactly from the free factorization (a
    conductance change is rank one): with ``rho_e = b_e^T L_FF^{-1} b_e`` and ``W = B_F^T Z``,
    changing ``g_e`` by ``h`` moves the outputs by ``-h w_e / (1 + h rho_e) W_e``. The
    cost is one solve per edge (for ``rho``), done in blocks of ``block`` edges: a
    baseline for small networks, not a training rule for large ones.
    """

    name = "fd"

    def __init__(self, eps: float = defaults.FD_EPS, loss="mse", block: int = 256):
        super().__init__(loss)
        eps = check_real(eps, "eps")
        if not 0 < eps < 1:
            raise ParameterError(f"eps must lie in (0, 1) (relative step), got {eps!r}")
        self.eps = eps
        self.block = check_int(block, "block", 1)

    def estimate(self, circuit, conductances, x, y, factorization=None) -> RuleResult:
        if not circuit.is_linear:  # exact nonlinear phases (rules/_nonlinear.py)
            return _nonlinear.estimate(self, circuit, conductances, x, y, factorization)
        fac = circuit.factorization_for(conductances, factorization)
        free = fac.solve(x)
        values, delta = self.loss(free.outputs, y)
        ports = Ports(fac)
        g = fac.conductances
        m = g.size
        o, w = free.outputs, free.resistor_voltages  # (b, k), (b, m)
        b, k = o.shape
        yy = self.loss.targets(y, o)  # (b, k) output-shaped targets
        est = np.empty(m)
        for start in range(0, m, self.block):  # blocks of edges, vectorized inside
            idx = np.arange(start, min(start + self.block, m))
            cols = circuit.edge_columns(idx)
            X = fac.solve_free(cols.toarray())
            rho = np.asarray(cols.multiply(X).sum(axis=0)).ravel()  # (nb,)
            h = self.eps * g[idx]
            n_b = idx.size
            y_rep = np.tile(yy, (n_b, 1))  # targets of the n_b * b perturbed outputs
            losses = []
            for sgn in (1.0, -1.0):
                hh = sgn * h
                wn = w[:, idx] / (1.0 + hh * rho)  # (b, nb) perturbed voltage of edge e
                do = -(hh * wn)[:, :, None] * ports.W[idx][None, :, :]  # (b, nb, k)
                on = (o[:, None, :] + do).transpose(1, 0, 2).reshape(n_b * b, k)
                losses.append(self.loss(on, y_rep)[0].reshape(n_b, b).mean(axis=1))
            est[idx] = (losses[0] - losses[1]) / (2 * h)
        return RuleResult(est, float(values.mean()), free, {}, {"eps": self.eps, "delta": delta})

