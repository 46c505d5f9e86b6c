"""The solver interface: ``factor = factorize(A)``, then ``factor.solve(rhs)`` many times.

``A`` is the symmetric positive definite reduced Laplacian ``L_FF`` (scipy.sparse,
CSC). Right-hand sides are ``(n,)`` or ``(n, k)``; a block of ``k`` columns is solved
in one call. ``factor.updated(C, d)`` returns a factorization of ``A + C diag(d) C^T``
(a rank-``k`` change, e.g. ``k`` edge conductances changed by ``d``) without
refactoring from scratch where the backend allows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp


class Factorization(ABC):
    """A reusable solver for one SPD matrix ``A`` (n x n)."""

    #: short backend name, e.g. ``"dense"``, ``"cholmod"``
    name: str = "?"

    def __init__(self, matrix: sp.sparray):
        self.matrix = matrix
        self.n = matrix.shape[0]

    @abstractmethod
    def _solve_block(self, rhs: np.ndarray) -> np.ndarray:
        """Solve ``A X = rhs`` for an ``(n, k)`` float block."""

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Return ``A^{-1} rhs`` for ``rhs`` of shape ``(n,)`` or ``(n, k)``."""
        rhs = np.asarray(rhs, dtype=float)
        if rhs.shape[0] != self.n:
            raise ValueError(f"right-hand side has {rhs.shape[0]} rows, matrix has {self.n}")
        if self.n == 0:  # every node clamped: nothing to solve
            return np.zeros_like(rhs)
        if rhs.ndim == 1:
            return self._solve_block(rhs[:, None])[:, 0]
        if rhs.shape[1] == 0:
            return np.zeros_like(rhs)
        return self._solve_block(rhs)

    def updated(self, C: sp.sparray | np.ndarray, d: np.ndarray) -> "Factorization":
        """Factorization of ``A + C diag(d) C^T`` (default: Woodbury on top of this one)."""
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
        self.name = f"{base.name.split('+')[0]}+woodbury"
        self._C = C
        self._Z = base.solve(_dense(C))
        cap = np.diag(1.0 / d) + _dense(C.T @ self._Z)
        self._cap = sla.lu_factor(cap)
        self._rank = base.update_rank + d.size

    @property
    def update_rank(self) -> int:
        return self._rank

    def _solve_block(self, rhs):
        y = self.base.solve(rhs)
        corr = sla.lu_solve(self._cap, np.asarray(self._C.T @ y))
        return y - self._Z @ corr
