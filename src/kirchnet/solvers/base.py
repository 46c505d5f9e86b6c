"""The solver interface: ``factor = factorize(A)``, then ``factor.solve(rhs)`` many times.

``A`` is the symmetric positive definite reduced Laplacian ``L_FF`` (scipy.sparse,
CSC). Right-hand sides are ``(n,)`` or ``(n, k)``; a block of ``k`` columns is solved
in one call. ``factor.updated(C, d)`` returns a factorization of ``A + C diag(d) C^T``
(a rank-``k`` change, e.g. ``k`` edge conductances changed by ``d``) without
refactoring from scratch where the backend allows.

**Every solve is checked** (:meth:`Factorization.solve`, one place for every backend).
``L_FF`` of a circuit is a nonsingular M-matrix, so ``L^{-1} >= 0`` entrywise and the
error of a computed column ``x`` with residual ``r = b - L x`` obeys

    |x - x*| = |L^{-1} r| <= L^{-1} |r| <= max_i(|r_i| / d_i) psi,   psi = L^{-1} d,

with ``d = diag(L)`` (``psi >= 1``, one extra column solved once per factorization).
The residual is evaluated in the edge form ``L x = B_F (g * (B_F^T x))`` when the
circuit attached it (:attr:`Factorization.edge_form`): unlike the assembled matrix, whose
diagonal ``sum_e g_e`` rounds away conductances below ``eps * max g``, the edge form is
exact up to rounding of the currents themselves. A solve is accepted when
``bound / ||x||_inf <= ACCURACY`` per column and every entry is finite; otherwise up to
``MAX_REFINEMENT`` steps of iterative refinement ``x += solve(b - L x)`` are applied, a
factorization obtained by a low-rank update falls back to a fresh factorization, and
when none of that certifies the result an :class:`~kirchnet.errors.IllConditionedError`
is raised. ``check=False`` (benchmarks only) skips all of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.linalg import lapack

from ..errors import IllConditionedError, ParameterError, ShapeError, SolverError

#: a solve is accepted when its forward-error bound, relative to the largest entry of
#: each solution column, is at most this
ACCURACY = 1e-6
#: iterative refinement steps tried before a solve is refused
MAX_REFINEMENT = 3
#: Woodbury capacitance matrices with a reciprocal condition number below this are refused
#: (the update would lose more than half the digits): the caller refactorizes instead
MIN_CAP_RCOND = 1e-8


def conductance_advice(conductances) -> str:
    """The ill-conditioning diagnosis: the conductance ratio and what to do about it."""
    g = np.asarray(conductances, dtype=float)
    if g.size == 0:
        return "rescale the conductances, merge near-shorts or remove near-opens"
    lo, hi = int(np.argmin(g)), int(np.argmax(g))
    return (f"conductance ratio max(g)/min(g) = {g[hi] / g[lo]:.1e} (g = {g[lo]:.3g} on edge {lo} "
            f"to {g[hi]:.3g} on edge {hi}); float64 cannot resolve the circuit: rescale the "
            f"conductances to span fewer decades, merge near-shorts (very large g) into single "
            f"nodes, or remove near-opens (very small g)")


def diagonal_ratio(matrix) -> float:
    """``max(diag) / min(diag)`` of a matrix with a positive diagonal (``inf`` otherwise)."""
    d = np.asarray(matrix.diagonal(), dtype=float)
    if d.size == 0:
        return 1.0
    lo = d.min()
    return float(d.max() / lo) if lo > 0 else float("inf")


def not_positive_definite(detail: str, matrix) -> IllConditionedError:
    """Error for a factorization that met a non-positive pivot."""
    return IllConditionedError(
        f"the matrix is not numerically positive definite ({detail}; diagonal ratio "
        f"{diagonal_ratio(matrix):.1e}): either it is ill-conditioned (conductances spanning "
        f"too many decades) or it is singular (a floating part of the network, a non-positive "
        f"conductance)"
    )


class Factorization(ABC):
    """A reusable solver for one SPD matrix ``A`` (n x n).

    Attributes set by the caller: ``check`` (verify every solve, default True) and
    ``edge_form`` ``(B_F, B_F^T, g)`` with ``A = B_F diag(g) B_F^T`` (exact residuals).
    """

    #: short backend name, e.g. ``"dense"``, ``"cholmod"``
    name: str = "?"

    def __init__(self, matrix: sp.sparray):
        self.matrix = matrix
        self.n = matrix.shape[0]
        self.check = True
        self.edge_form = None
        #: True when this factorization came from a low-rank update of another one
        self.derived = False
        #: iterative refinement steps taken so far (diagnostics)
        self.refinements = 0
        self._psi_max = None
        self._fallback = None

    @abstractmethod
    def _solve_block(self, rhs: np.ndarray) -> np.ndarray:
        """Solve ``A X = rhs`` for an ``(n, k)`` float block (unchecked)."""

    def _refactorized(self, matrix) -> "Factorization":
        """A fresh factorization of ``matrix`` by this backend (the fallback of updates)."""
        return type(self)(matrix)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Return ``A^{-1} rhs`` for ``rhs`` of shape ``(n,)`` or ``(n, k)``, checked."""
        rhs = np.asarray(rhs, dtype=float)
        if rhs.ndim not in (1, 2) or rhs.shape[0] != self.n:
            raise ShapeError(f"right-hand side has {rhs.shape[0] if rhs.ndim else 0} rows, matrix has "
                             f"{self.n} (expected shape ({self.n},) or ({self.n}, k))")
        if self.n == 0:  # every node clamped: nothing to solve
            return np.zeros_like(rhs)
        block = rhs[:, None] if rhs.ndim == 1 else rhs
        if block.shape[1] == 0:
            return np.zeros_like(rhs)
        if not np.isfinite(block).all():
            raise ParameterError("the right-hand side contains NaN or inf; check the inputs, "
                                 "clamps and injected currents")
        X = self._fallback.solve(block) if self._fallback is not None else self._checked(block)
        return X[:, 0] if rhs.ndim == 1 else X

    # ------------------------------------------------------------------ checks
    def _apply(self, X: np.ndarray) -> np.ndarray:
        """``A X``, in the edge form when known."""
        if self.edge_form is not None:
            BF, BFT, g = self.edge_form
            return BF @ (g[:, None] * (BFT @ X))
        return np.asarray(self.matrix @ X)

    def _diag(self) -> np.ndarray:
        return np.asarray(self.matrix.diagonal(), dtype=float)

    def _bound(self, R: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Relative forward-error bound per column, ``max_i(|r_i|/d_i) psi_max / ||x||_inf``."""
        d = self._diag()
        rho = np.max(np.abs(R) / d[:, None], axis=0)
        scale = np.max(np.abs(X), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            b = rho * self._psi_max / scale
        b = np.where(rho == 0, 0.0, b)
        return np.where(np.isfinite(b) & np.isfinite(X).all(axis=0), b, np.inf)

    def _checked(self, B: np.ndarray) -> np.ndarray:
        if not self.check:
            return self._solve_block(B)
        if self._psi_max is None:  # psi = A^{-1} diag(A), solved with the first block
            d = self._diag()
            if not (d > 0).all():
                raise SolverError("the matrix has a non-positive diagonal entry: not a reduced "
                                  "Laplacian of positive conductances")
            sol = self._solve_block(np.hstack([B, d[:, None]]))
            X, psi = sol[:, :-1], sol[:, -1]
            # an M-matrix has psi >= 1 (psi = (I - D^{-1} W)^{-1} 1); less means a broken solve
            ok = np.isfinite(psi).all() and (self.edge_form is None or psi.min() > 0.5)
            self._psi_max = float(np.max(np.abs(psi))) if ok else np.inf
        else:
            X = self._solve_block(B)
        bound = np.full(B.shape[1], np.inf)
        R = B
        for step in range(MAX_REFINEMENT + 1):
            R = B - self._apply(X) if np.isfinite(X).all() else B
            bound = self._bound(R, X)
            bad = bound > ACCURACY
            if not bad.any():
                return X
            if step == MAX_REFINEMENT or not np.isfinite(self._psi_max):
                break
            if step > 0 and not np.all(bound[bad] < 0.5 * previous[bad]):
                break  # refinement stagnates: it will not restore accuracy
            if not np.isfinite(X).all():
                break  # a non-finite solve is not refined
            previous = bound
            X = X.copy()
            X[:, bad] += self._solve_block(R[:, bad])
            self.refinements += 1
        if self.derived:  # a low-rank update lost accuracy: refactorize from scratch
            fresh = self._refactorized(self.matrix)
            fresh.check, fresh.edge_form = self.check, self.edge_form
            self._fallback = fresh
            return fresh.solve(B)
        worst = int(np.argmax(bound))
        scaled = float(np.max(np.abs(R[:, worst])) / (np.max(np.abs(self._diag())) * np.max(np.abs(X[:, worst]))
                                                       + np.max(np.abs(B[:, worst]))))
        what = (conductance_advice(self.edge_form[2]) if self.edge_form is not None else
                f"diagonal ratio {diagonal_ratio(self.matrix):.1e}; rescale the matrix")
        raise IllConditionedError(
            f"the {self.name} solve cannot be certified accurate: relative error bound "
            f"{bound[worst]:.1e} > {ACCURACY:.0e} after {min(step, MAX_REFINEMENT)} refinement "
            f"step(s) (scaled residual {scaled:.1e}); {what}"
        )

    # ------------------------------------------------------------------ updates
    def updated(self, C: sp.sparray | np.ndarray, d: np.ndarray) -> "Factorization":
        """Factorization of ``A + C diag(d) C^T`` (default: Woodbury on top of this one).

        Raises :class:`SolverError` when the update cannot be done accurately; callers
        then refactorize (:meth:`kirchnet.CircuitFactorization.update` does).
        """
        return WoodburyFactorization(self, C, d)

    def updated_matrix(self, C, d):
        """``A + C diag(d) C^T``, sparse (CSC) if ``A`` is sparse, else dense."""
        change = _as_csc(C) @ sp.diags_array(np.asarray(d, dtype=float)) @ _as_csc(C).T
        if sp.issparse(self.matrix):
            return sp.csc_array(self.matrix + change)
        return np.asarray(self.matrix) + change.toarray()

    @property
    def update_rank(self) -> int:
        """Rank of the low-rank corrections stacked on the last full factorization."""
        return 0


def _dense(C) -> np.ndarray:
    return C.toarray() if sp.issparse(C) else np.asarray(C, dtype=float)


def _as_csc(C) -> sp.csc_array:
    return sp.csc_array(C) if sp.issparse(C) else sp.csc_array(np.asarray(C, dtype=float))


class WoodburyFactorization(Factorization):
    """``(A + C D C^T)^{-1} = A^{-1} - Z (D^{-1} + C^T Z)^{-1} Z^T`` with ``Z = A^{-1} C``."""

    name = "woodbury"

    def __init__(self, base: Factorization, C, d):
        d = np.asarray(d, dtype=float)
        super().__init__(base.updated_matrix(C, d))
        C = _as_csc(C)
        self.base = base
        self.derived = True
        self.name = f"{base.name.split('+')[0]}+woodbury"
        self._C = C
        self._Z = base._solve_block(_dense(C))
        cap = np.diag(1.0 / d) + _dense(C.T @ self._Z)
        if not np.isfinite(cap).all() or not np.isfinite(self._Z).all():
            raise SolverError("Woodbury update: non-finite capacitance matrix; refactorize")
        lu, piv, info = lapack.dgetrf(cap)
        rcond = lapack.dgecon(lu, np.abs(cap).sum(axis=0).max(), norm="1")[0] if info == 0 else 0.0
        if not rcond > MIN_CAP_RCOND:
            raise SolverError(f"Woodbury update is ill-conditioned (capacitance rcond {rcond:.1e}); refactorize")
        self._cap = (lu, piv)
        self._rank = base.update_rank + d.size

    @property
    def update_rank(self) -> int:
        return self._rank

    def _root(self) -> Factorization:
        f = self.base
        while isinstance(f, WoodburyFactorization):
            f = f.base
        return f

    def _refactorized(self, matrix):
        return self._root()._refactorized(matrix)

    def _solve_block(self, rhs):
        y = self.base._solve_block(rhs)
        corr = sla.lu_solve(self._cap, np.asarray(self._C.T @ y))
        return y - self._Z @ corr
