"""Factorization and state of a linear circuit: :class:`CircuitFactorization` (the
factorized ``L_FF`` at fixed conductances, its cached transfer matrix and adjoint basis,
forward / adjoint / current solves, low-rank updates) and :class:`State` (an equilibrium,
batch first).

Layering: below :mod:`kirchnet.circuit` (which owns the boundary roles, validation and
readout, and builds these through :meth:`Circuit.factorize`); it needs only a circuit's
assembled matrices (:mod:`kirchnet.assembly`) and attributes, never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from . import _memory, solvers
from ._validation import as_batch
from .errors import IllConditionedError, ParameterError, ShapeError, SolverError
from .solvers.base import ACCURACY, conductance_advice

if TYPE_CHECKING:  # annotations only: circuit.py imports this module
    from .circuit import Circuit


def _check_finite(values: np.ndarray, what: str, g: np.ndarray) -> np.ndarray:
    """``values`` if finite, else a :class:`ParameterError` saying which quantity overflowed."""
    if not np.isfinite(values).all():
        raise ParameterError(
            f"{what} overflowed float64 (max conductance {float(np.max(g)):.3g}): rescale the "
            f"conductances or the inputs x (potentials are linear in x, and invariant to a "
            f"common factor on g)"
        )
    return values


#: node conductance sums (diagonal of L_FF) must lie in [1/_G_RANGE, _G_RANGE] siemens
_G_RANGE = 1e250


def _check_magnitude(diag: np.ndarray, g: np.ndarray) -> None:
    """Refuse conductances whose products in the solve and its checks would over/underflow."""
    if diag.size == 0:
        return
    hi = float(np.max(np.abs(diag)))  # the largest entry of L_FF is on its diagonal
    if hi > _G_RANGE or hi < 1.0 / _G_RANGE:
        raise ParameterError(
            f"conductances of {float(np.min(g)):.3g} .. {float(np.max(g)):.3g} S put the node sums of "
            f"L_FF up to {hi:.3g} S, outside the range [{1 / _G_RANGE:.0e}, {_G_RANGE:.0e}] in "
            f"which float64 solves (and their accuracy checks) neither overflow nor underflow; "
            f"rescale all conductances by a common factor (potentials are invariant to it, "
            f"currents scale with it)"
        )


class CircuitFactorization:
    """A factorized circuit at fixed conductances: solve forward, adjoint and nudged problems.

    Right-hand sides on the free nodes: ``rhs_F = -B_F diag(g) (B^T u_C + s) + J_F``.
    The drivers (node inputs, source edges, extra clamps) enter through ``D`` columns
    ``R_drv`` (n_free x D); a batch with more samples than drivers is solved through the
    transfer matrix ``H = L_FF^{-1} R_drv`` (D solves, computed once and kept with this
    factorization), otherwise sample by sample in one multi-column solve.
    """

    def __init__(self, circuit: Circuit, conductances: np.ndarray, backend: str = "auto",
                 factor: solvers.Factorization | None = None, **solver_options):
        self.circuit = circuit
        self.conductances = np.array(conductances, dtype=float)  # a copy: the caller's array stays writable
        self.conductances.setflags(write=False)
        #: whether every solve is verified (``check=False``: benchmarks only, see kirchnet.solvers.base)
        self.check = bool(solver_options.pop("check", True))
        if factor is None:
            if backend == "auto":
                backend = circuit.auto_backend
            circuit._check_memory(backend)
            if backend == "dense":
                L = circuit.reduced_laplacian_dense(self.conductances, check=False)
                diag = np.diagonal(L)
            else:
                L = circuit.reduced_laplacian(self.conductances, check=False)
                diag = L.data
            _check_finite(diag, "the reduced Laplacian L_FF (sums of conductances at a node)",
                          self.conductances)
            _check_magnitude(diag, self.conductances)
            symbolic = circuit._symbolic if backend == "cholmod" else None
            try:
                factor = solvers.factorize(L, backend, symbolic=symbolic, check=self.check,
                                           **solver_options)
            except IllConditionedError as exc:
                raise IllConditionedError(f"{exc}; {conductance_advice(self.conductances)}") from None
        # every solve of this factor is checked against the exact edge form L_FF = B_F G B_F^T
        factor.check = self.check
        factor.edge_form = (circuit._B_free, circuit._BT_free, self.conductances)
        self.factor = factor
        #: solver options (e.g. ``rtol``, ``maxiter``) reused by refactorizations in :meth:`update`
        self.solver_options = dict(solver_options)
        #: the backend name used for full refactorizations (kept across low-rank updates)
        self.base_backend = backend if backend != "auto" else factor.name.split("+")[0]
        # per-factorization caches (right-hand sides are fixed by the circuit)
        self._transfer = self._transfer_full = self._adjoint_basis = None
        self._driver_drops = self._adjoint_drops = None
        #: True when :meth:`update` produced this by a low-rank change of the previous factor
        self.low_rank_update = False

    @property
    def backend(self) -> str:
        return self.factor.name

    # -------------------------------------------------------------- raw solves
    def solve_free(self, rhs: np.ndarray) -> np.ndarray:
        """``L_FF^{-1} rhs`` for ``rhs`` (n_free,) or (n_free, k)."""
        return self.factor.solve(rhs)

    def _driver_matrix(self) -> np.ndarray:
        return self.circuit.driver_matrix(self.conductances)

    def prepare(self) -> "CircuitFactorization":
        """Compute the transfer matrix and the adjoint basis together (one multi-column solve)."""
        if self._transfer is None and self._adjoint_basis is None:
            R = self._driver_matrix()
            X = self.factor.solve(np.hstack([R, self.circuit.readout_free_T]))
            self._transfer, self._adjoint_basis = self._check_harmonic(X[:, :R.shape[1]]), X[:, R.shape[1]:]
        return self

    def transfer(self) -> np.ndarray:
        """``H = L_FF^{-1} R_drv`` (n_free x D): free potentials per unit driver."""
        if self._transfer is None:
            self._transfer = self._check_harmonic(self.factor.solve(self._driver_matrix()))
        return self._transfer

    def _violation(self, what: str, value: float) -> IllConditionedError:
        return IllConditionedError(
            f"the {self.backend} solve violates the maximum principle ({what}, off by {value:.1e}), "
            f"impossible in a passive circuit; {conductance_advice(self.conductances)}"
        )

    def _check_harmonic(self, H: np.ndarray) -> np.ndarray:
        """Maximum principle for the node-driver columns of ``H`` (inputs, clamps): a free
        potential per unit clamped potential is a harmonic measure, ``H >= 0``, ``sum_j H_j <= 1``."""
        c = self.circuit
        if not self.check or H.size == 0:
            return H
        ni, ns = c.input_nodes.size, c.source_edges.size
        Hn = H[:, np.r_[0:ni, ni + ns:H.shape[1]]] if ns else H
        if Hn.size:
            low, high = -float(Hn.min()), float(Hn.sum(axis=1).max()) - 1.0
            if max(low, high) > ACCURACY:
                raise self._violation("a free potential per volt at the inputs outside [0, 1]",
                                      max(low, high))
        return H

    def _check_range(self, u: np.ndarray, xn: np.ndarray, xc: np.ndarray) -> None:
        """Maximum principle per sample: free potentials within the clamped potentials' range."""
        clamped = np.concatenate([np.zeros((u.shape[0], 1)), xn, xc], axis=1)
        lo, hi = clamped.min(axis=1), clamped.max(axis=1)
        uf = u[:, self.circuit.free_nodes]
        if uf.size == 0:
            return
        off = np.maximum(lo - uf.min(axis=1), uf.max(axis=1) - hi)
        worst = int(np.argmax(off / np.maximum(hi - lo, 1e-300)))
        if off[worst] > ACCURACY * (hi[worst] - lo[worst]):
            raise self._violation(f"sample {worst}: free potentials in [{uf[worst].min():.4g}, "
                                  f"{uf[worst].max():.4g}] V, clamped ones in [{lo[worst]:.4g}, "
                                  f"{hi[worst]:.4g}] V", float(off[worst]))

    def transfer_full(self) -> np.ndarray:
        """``Hfull`` (n x D): potentials of every node per unit driver (drivers' own rows are 1)."""
        if self._transfer_full is None:
            c = self.circuit
            Hf = np.zeros((c.network.n_nodes, c.n_drivers))
            Hf[c.free_nodes] = self.transfer()
            ni, ns = c.input_nodes.size, c.source_edges.size
            Hf[c.input_nodes, np.arange(ni)] = 1.0
            Hf[c.clamped_nodes, ni + ns + np.arange(c.clamped_nodes.size)] = 1.0
            self._transfer_full = Hf
        return self._transfer_full

    def adjoint_basis(self) -> np.ndarray:
        """``Z = L_FF^{-1} P_F^T`` (n_free x n_outputs): adjoint potentials per unit output error."""
        if self._adjoint_basis is None:
            self._adjoint_basis = self.factor.solve(self.circuit.readout_free_T)
        return self._adjoint_basis

    def driver_drops(self) -> np.ndarray:
        """``B^T Hfull`` (m x D): edge voltage drops per unit driver."""
        if self._driver_drops is None:
            self._driver_drops = self.circuit._BT @ self.transfer_full()
        return self._driver_drops

    def adjoint_drops(self) -> np.ndarray:
        """``B_F^T Z`` (m x k): edge voltage drops of the adjoint run per unit output error."""
        if self._adjoint_drops is None:
            self._adjoint_drops = self.circuit._BT_free @ self.adjoint_basis()
        return self._adjoint_drops

    # -------------------------------------------------------------- forward
    def solve(self, x, currents=None, clamp=None) -> "State":
        """Equilibrium state for a batch; ``currents`` (n,) or (b, n) are injected node currents."""
        c = self.circuit
        xn, xs, xc, _ = c.driver_values(x, clamp)
        b = xn.shape[0]
        Z = np.concatenate([xn, xs, xc], axis=1)  # (b, D) in driver order
        D = Z.shape[1]
        _memory.require(16.0 * b * c.network.n_nodes, f"a batch of {b:,} samples on {c.network.n_nodes:,} "
                        f"nodes (potentials and a temporary, float64)", "solve a smaller batch at a time")
        if D and b > D:  # through the transfer matrix: D solves for the whole batch
            u = Z @ self.transfer_full().T
        else:
            u = np.zeros((b, c.network.n_nodes))
            if D:
                with np.errstate(over="ignore", invalid="ignore"):  # overflow: refused by solve
                    rhs = self._driver_matrix() @ Z.T
                u[:, c.free_nodes] = self.factor.solve(rhs).T
                if self.check and c.source_edges.size == 0:
                    self._check_range(u, xn, xc)
            u[:, c.input_nodes] = xn
            u[:, c.clamped_nodes] = xc
        if currents is not None:
            J, _ = as_batch(currents, c.network.n_nodes, "currents")
            if J.shape[0] not in (1, b):
                raise ShapeError(f"currents has batch {J.shape[0]} but x has batch {b}")
            u = u + self.solve_currents(J)
        return State(c, self.conductances, u, c.edge_sources(xs))

    def solve_currents(self, currents) -> np.ndarray:
        """Potentials (b, n) with every driver off and node currents ``J`` injected.

        This is the "current mode" run: inputs at 0 V (clamped nodes grounded, series
        sources shorted) and ``J`` (b, n) or (n,) injected; potentials are linear in ``J``.
        """
        c = self.circuit
        J, _ = as_batch(currents, c.network.n_nodes, "currents")
        u = np.zeros((J.shape[0], c.network.n_nodes))
        u[:, c.free_nodes] = self.factor.solve(J[:, c.free_nodes].T).T
        return u

    # -------------------------------------------------------------- updates
    def update(self, conductances, max_rank: int | None = None) -> "CircuitFactorization":
        """Factorization at new conductances, by a low-rank update when few edges changed.

        With ``k`` changed edges, ``L_FF`` changes by ``C diag(dg) C^T`` (``C`` the free
        rows of their incidence columns). If ``k`` (plus earlier stacked updates) is at
        most ``max_rank`` (default ``max(8, n_free // 50)`` and at most 256) the backend's
        update (CHOLMOD up/downdate, Woodbury, ...) is used, else a full refactorization.
        """
        c = self.circuit
        g = c.check_conductances(conductances)
        changed = np.flatnonzero(g != self.conductances)
        if changed.size == 0:
            return self
        if max_rank is None:
            max_rank = c.default_max_rank
        net = c.network  # an edge changes L_FF iff one of its ends is free
        changed = changed[(c._free_pos[net.tails[changed]] >= 0) | (c._free_pos[net.heads[changed]] >= 0)]
        opts = {**self.solver_options, "check": self.check}
        if changed.size == 0:  # only edges between clamped nodes changed: L_FF unchanged
            return CircuitFactorization(c, g, self.base_backend, factor=self.factor, **opts)
        if changed.size + self.factor.update_rank > max_rank:  # decided before building columns
            return CircuitFactorization(c, g, self.base_backend, **opts)
        cols = c.edge_columns(changed)
        dg = g[changed] - self.conductances[changed]
        L = (c.reduced_laplacian_dense(g, check=False) if self.base_backend == "dense"
             else c.reduced_laplacian(g, check=False))  # exact, unlike L + C diag(dg) C^T
        _check_magnitude(np.diagonal(L) if self.base_backend == "dense" else L.data, g)
        try:
            factor = self.factor.updated(cols, dg, L)
        except SolverError:  # the update cannot be done accurately: refactorize from scratch
            return CircuitFactorization(c, g, self.base_backend, **opts)
        new = CircuitFactorization(c, g, self.base_backend, factor=factor, **opts)
        new.low_rank_update = True
        return new


@dataclass(frozen=True, eq=False)
class State:
    """An equilibrium of a circuit for a batch of samples (batch is the first axis).

    ``potentials`` (b, n) relative to ground; derived quantities are computed on first
    access: ``drops = B^T u`` (b, m), ``resistor_voltages = drops + s`` (b, m),
    ``currents = g * resistor_voltages`` (b, m), ``outputs = P u`` (b, k) and dissipated
    ``power = sum_e g_e w_e^2`` (b,).
    """

    circuit: Circuit
    conductances: np.ndarray
    potentials: np.ndarray
    sources: np.ndarray | None = None

    @property
    def batch_size(self) -> int:
        return self.potentials.shape[0]

    @cached_property
    def drops(self) -> np.ndarray:
        return np.asarray((self.circuit._BT @ self.potentials.T).T)

    @cached_property
    def resistor_voltages(self) -> np.ndarray:
        return self.drops if self.sources is None else self.drops + self.sources

    @cached_property
    def currents(self) -> np.ndarray:
        return _check_finite(self.conductances * self.resistor_voltages, "the edge currents g * w",
                             self.conductances)

    @cached_property
    def outputs(self) -> np.ndarray:
        return self.circuit.read_outputs(self.potentials)

    @cached_property
    def power(self) -> np.ndarray:
        return _check_finite(np.einsum("bm,bm->b", self.currents, self.resistor_voltages),
                             "the dissipated power sum_e g_e w_e^2", self.conductances)

    def energy_derivative(self) -> np.ndarray:
        """``dE/dg_e = 1/2 w_e^2`` per sample (b, m): the local quantity of Hebbian rules."""
        return 0.5 * self.resistor_voltages ** 2
