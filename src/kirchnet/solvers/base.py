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

with ``d = diag(L)`` (``psi >= 1``: one extra column of the first solve per factorization,
whose own residual certifies ``max psi <= max y / (1 - rho)`` for the computed ``y``).
The residual is evaluated in the edge form ``L x = B_F (g * (B_F^T x))`` when the
circuit attached it (:attr:`Factorization.edge_form`): unlike the assembled matrix, whose
diagonal ``sum_e g_e`` rounds away conductances below ``eps * max g``, the edge form is
exact up to rounding of the currents themselves. A column is accepted at once when
``bound / ||x||_inf <= refine_above`` (1e-8 direct, ``ACCURACY`` for CG) and every entry is
finite; otherwise a sharper certified bound ``max(L^{-1} sum_c |r_c| / ||x_c||)`` (one extra
solve) and up to ``MAX_REFINEMENT`` steps of iterative refinement ``x += solve(b - L x)``
are tried until the bound is at most ``ACCURACY`` (1e-6); a
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

from ..errors import ConvergenceError, IllConditionedError, ParameterError, ShapeError, SolverError

#: a solve is accepted when its forward-error bound, relative to the largest entry of
#: each solution column, is at most this
ACCURACY = 1e-6
#: iterative refinement steps tried before a solve is refused
MAX_REFINEMENT = 3
#: direct backends refine columns whose bound exceeds this (cheap next to a factorization)
REFINE_ABOVE = 1e-8
#: Woodbury capacitance matrices with a reciprocal condition number below this are refused
#: (the update would lose more than half the digits): the caller refactorizes instead
MIN_CAP_RCOND = 1e-8


def _ratio_text(hi: float, lo: float) -> str:
    """``hi / lo`` as ``1.0e+16``, or ``1e600`` style when it overflows float64."""
    hi, lo = np.float64(hi), np.float64(lo)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        r = hi / lo
    if np.isfinite(r):
        return f"{r:.1e}"
    return f"1e{np.log10(hi) - np.log10(lo):.0f}" if lo > 0 else "inf"


def conductance_advice(conductances) -> str:
    """The ill-conditioning diagnosis: the conductance ratio and what to do about it."""
    g = np.asarray(conductances, dtype=float)
    if g.size == 0:
        return "rescale the conductances, merge near-shorts or remove near-opens"
    lo, hi = int(np.argmin(g)), int(np.argmax(g))
    return (f"conductance ratio max(g)/min(g) = {_ratio_text(g[hi], g[lo])} (g = {g[lo]:.3g} on edge {lo} "
            f"to {g[hi]:.3g} on edge {hi}); float64 cannot resolve the circuit: rescale the "
            f"conductances to span fewer decades, merge near-shorts (very large g) into single "
            f"nodes, or remove near-opens (very small g)")


def diagonal_ratio(matrix) -> str:
    """``max(diag) / min(diag)`` of a matrix, as text (``inf`` for a non-positive diagonal)."""
    d = np.asarray(matrix.diagonal(), dtype=float)
    if d.size == 0:
        return "1"
    return _ratio_text(float(d.max()), float(d.min()))


def not_positive_definite(detail: str, matrix) -> IllConditionedError:
    """Error for a factorization that met a non-positive pivot."""
    return IllConditionedError(
        f"the matrix is not numerically positive definite ({detail}; diagonal ratio "
        f"{diagonal_ratio(matrix)}): either it is ill-conditioned (conductances spanning "
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
    #: columns whose error bound exceeds this are refined (accepted up to :data:`ACCURACY`)
    refine_above: float = REFINE_ABOVE

    def _solve_with_psi(self, B1: np.ndarray) -> np.ndarray:
        """Solve the first block with ``d`` as its last column (psi needs a few digits only:
        any approximation is certified by its residual; iterative backends stop it early)."""
        return self._solve_block(B1)

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
        self._d = self._dinv = None
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
            raise ParameterError("the right-hand side contains NaN or inf (conductances times input "
                                 "voltages overflow float64, or NaN currents): rescale the inputs, "
                                 "clamps, injected currents or conductances")
        X = self._fallback.solve(block) if self._fallback is not None else self._checked(block)
        return X[:, 0] if rhs.ndim == 1 else X

    # ------------------------------------------------------------------ checks
    def _advice(self) -> str:
        """The conductance ratio and advice when the edge form is known, else the diagonal ratio."""
        if self.edge_form is not None:
            return conductance_advice(self.edge_form[2])
        return f"diagonal ratio {diagonal_ratio(self.matrix)}; rescale the matrix"

    def _apply(self, X: np.ndarray) -> np.ndarray:
        """``A X``, in the edge form when known."""
        if self.edge_form is not None:
            BF, BFT, g = self.edge_form
            W = BFT @ X
            W *= g[:, None]
            return BF @ W
        return np.asarray(self.matrix @ X)

    def _residual(self, B: np.ndarray, X: np.ndarray) -> np.ndarray:
        """``B - A X`` (edge form), in place of the product."""
        AX = self._apply(X)
        return np.subtract(B, AX, out=AX)

    def _assembled(self):
        """The matrix assembled afresh from the edge form (an updated ``A + C D C^T`` can have
        cancelled, e.g. a conductance lowered to 1e-17 of itself), else :attr:`matrix`."""
        if self.edge_form is None:
            return self.matrix
        BF, BFT, g = self.edge_form
        A = sp.csc_array(BF @ sp.diags_array(g) @ BFT)
        return A if sp.issparse(self.matrix) else A.toarray()

    def _diag(self) -> np.ndarray:
        if self._d is None:
            self._d = np.asarray(self.matrix.diagonal(), dtype=float)
        return self._d

    def _rho(self, R: np.ndarray, overwrite: bool = False) -> np.ndarray:
        """``max_i |r_i| / d_i`` per column (``overwrite``: ``R`` may be used as scratch)."""
        if self._dinv is None:
            self._dinv = 1.0 / self._diag()
        T = np.abs(R, out=R if overwrite else None)
        T *= self._dinv[:, None]
        return np.max(T, axis=0)

    def _certified_max(self, v: np.ndarray, y: np.ndarray, r=None) -> float:
        """Upper bound of ``max(A^{-1} v)`` for ``v > 0`` from a computed ``y ~ A^{-1} v``.

        With ``r = v - A y`` and ``rho = max_i |r_i| / v_i``: ``|A^{-1} v - y| = |A^{-1} r| <=
        rho A^{-1} v``, so ``A^{-1} v <= y / (1 - rho)`` when ``rho < 1`` (M-matrix). ``y`` is
        refined while ``rho > 1/2``; ``inf`` when that does not succeed.
        """
        v = v[:, None]
        y = y[:, None]
        r = None if r is None else r[:, None]
        for _ in range(MAX_REFINEMENT + 1):
            if not np.isfinite(y).all():
                return np.inf
            if r is None:
                r = v - self._apply(y)
            rho = float(np.max(np.abs(r) / v))
            if rho <= 0.5:
                return float(np.max(np.abs(y))) / (1.0 - rho)
            y, r = y + self._solve_block(r), None
        return np.inf

    def _bounds(self, R: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Relative forward-error bound per column (module docstring).

        First ``max_i(|r_i|/d_i) max(psi) / ||x||_inf`` (free once ``psi`` is known); where that
        is too weak, the sharper ``max(A^{-1} sum_c |r_c| / ||x_c||_inf)`` (one extra solve).
        """
        d = self._diag()
        scale = np.max(np.abs(X), axis=0)
        rho = self._rho(R)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            bound = np.where(rho == 0, 0.0, rho * self._psi_max / scale)
        bound = np.where(np.isfinite(bound), bound, np.inf)
        weak = (bound > ACCURACY) & (scale > 0) & np.isfinite(self._psi_max)
        if weak.any():
            # |x_c - x_c*| / ||x_c|| <= A^{-1} v with v = sum_c |r_c| / ||x_c||; for the computed
            # e ~ A^{-1} v, |A^{-1} v - e| <= max(|v - A e| / d) psi: both terms are certified.
            v = (np.abs(R[:, weak]) / scale[weak]).sum(axis=1)
            with np.errstate(over="ignore", invalid="ignore"):
                e = self._solve_block(v[:, None])
                sharp = float(np.max(np.abs(e)) + np.max(np.abs(v[:, None] - self._apply(e)) / d[:, None])
                              * self._psi_max)
            if np.isfinite(sharp):
                bound[weak] = np.minimum(bound[weak], sharp)
        return bound

    def _checked(self, B: np.ndarray) -> np.ndarray:
        if not self.check:
            return self._solve_block(B)
        if self._psi_max is None:  # psi = A^{-1} diag(A), solved with the first block
            d = self._diag()
            if not (d > 0).all():
                raise SolverError("the matrix has a non-positive diagonal entry: not a reduced "
                                  "Laplacian of positive conductances")
            B1 = np.empty((B.shape[0], B.shape[1] + 1))
            B1[:, :-1], B1[:, -1] = B, d
            sol = self._solve_with_psi(B1)
            X = sol[:, :-1]
            rho = self._rho(self._residual(B1, sol), overwrite=True)  # block and psi at once
            if rho[-1] <= 0.5:  # psi certified at once (the usual case)
                self._psi_max = float(np.max(np.abs(sol[:, -1]))) / (1.0 - rho[-1])
            else:
                self._psi_max = self._certified_max(d, sol[:, -1])
        else:
            X = self._solve_block(B)
            rho = self._rho(self._residual(B, X), overwrite=True)
        # fast path: the cheap bound already certifies every column (no NaN passes "<=")
        k = B.shape[1]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            fast = rho[:k] * self._psi_max <= self.refine_above * np.max(np.abs(X), axis=0)
        if fast.all():
            return X
        # slow path: the signed residual, the sharper bound where needed, refinement
        bound = np.full(B.shape[1], np.inf)
        R = B
        previous = None
        try:
            for step in range(MAX_REFINEMENT + 1):
                if not np.isfinite(X).all():
                    break  # a non-finite solve is not refined
                R = self._residual(B, X)
                bound = self._bounds(R, X)
                bad = bound > self.refine_above
                if not bad.any():
                    return X
                if step == MAX_REFINEMENT or (previous is not None and np.any(
                        np.isfinite(previous[bad]) & (bound[bad] > 0.5 * previous[bad]))):
                    break  # refinement stagnates: it will not restore more accuracy
                previous = bound
                X = X.copy()
                X[:, bad] += self._solve_block(R[:, bad])
                self.refinements += 1
        except ConvergenceError:  # an iterative backend cannot solve the correction
            bound = np.full(B.shape[1], np.inf)
        if np.isfinite(X).all() and np.all(bound <= ACCURACY):
            return X
        if self.derived:  # a low-rank update lost accuracy: refactorize from scratch
            fresh = self._refactorized(self._assembled())
            fresh.check, fresh.edge_form = self.check, self.edge_form
            self._fallback = fresh
            return fresh.solve(B)
        worst = int(np.argmax(bound))
        with np.errstate(all="ignore"):
            scaled = float(np.max(np.abs(R[:, worst])) / (2 * np.max(self._diag()) * np.max(np.abs(X[:, worst]))
                                                           + np.max(np.abs(B[:, worst]))))
        what = self._advice()
        raise IllConditionedError(
            f"the {self.name} solve cannot be certified accurate: relative error bound "
            f"{bound[worst]:.1e} > {ACCURACY:.0e} after {self.refinements} refinement "
            f"step(s) (norm-wise scaled residual {scaled:.1e}); {what}"
        )

    # ------------------------------------------------------------------ updates
    def updated(self, C: sp.sparray | np.ndarray, d: np.ndarray, matrix=None) -> "Factorization":
        """Factorization of ``A + C diag(d) C^T`` (default: Woodbury on top of this one).

        ``matrix``: that matrix, assembled exactly by the caller (``A + C D C^T`` in floating
        point cancels when a conductance drops by many decades); default: the sum.
        Raises :class:`SolverError` when the update cannot be done accurately; callers
        then refactorize (:meth:`kirchnet.CircuitFactorization.update` does).
        """
        return WoodburyFactorization(self, C, d, matrix)

    def updated_matrix(self, C, d, matrix=None):
        """``A + C diag(d) C^T``, sparse (CSC) if ``A`` is sparse, else dense (or ``matrix``)."""
        if matrix is not None:
            return matrix
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

    def __init__(self, base: Factorization, C, d, matrix=None):
        d = np.asarray(d, dtype=float)
        super().__init__(base.updated_matrix(C, d, matrix))
        C = _as_csc(C)
        self.base = base
        self.derived = True
        self.name = f"{base.name.split('+')[0]}+woodbury"
        self._C = C
        self._Z = base._solve_block(_dense(C))
        CZ = _dense(C.T @ self._Z)
        cap = np.diag(1.0 / d) + CZ
        if not np.isfinite(cap).all() or not np.isfinite(self._Z).all():
            raise SolverError("Woodbury update: non-finite capacitance matrix; refactorize")
        # 1/d_i + c_i^T A^{-1} c_i cancels when an edge is nearly removed (a bridge going to ~0):
        # the digits lost there are lost for the whole update (rcond cannot see it for k = 1)
        kept = np.abs(np.diag(cap)) / (np.abs(1.0 / d) + np.abs(np.diag(CZ)))
        if not np.all(kept > MIN_CAP_RCOND):
            raise SolverError(f"Woodbury update cancels (relative size {kept.min():.1e} of the "
                              f"capacitance diagonal); refactorize")
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
