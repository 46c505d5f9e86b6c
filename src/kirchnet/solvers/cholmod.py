"""CHOLMOD sparse Cholesky through scikit-sparse (optional ``fast`` extra).

The symbolic analysis (fill-reducing ordering, elimination tree) depends only on
the sparsity pattern; :class:`CholmodSymbolic` computes it once so that every later
factorization of a matrix with the same pattern is numeric only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import SolverError
from .base import Factorization

try:  # pragma: no cover - exercised when the extra is installed
    from sksparse import cholmod as _cholmod

    AVAILABLE = True
except ImportError:  # pragma: no cover
    _cholmod = None
    AVAILABLE = False


def _csc(matrix) -> sp.csc_matrix:
    A = sp.csc_matrix(matrix)
    A.sort_indices()
    return A


class CholmodSymbolic:
    """Reusable symbolic analysis of one sparsity pattern."""

    def __init__(self, matrix):
        if not AVAILABLE:
            raise SolverError("CHOLMOD backend needs scikit-sparse: pip install 'kirchnet[fast]'")
        self._symbolic = _cholmod.analyze(_csc(matrix), mode="auto")

    def factorize(self, matrix) -> "CholmodCholesky":
        return CholmodCholesky(matrix, symbolic=self)


class CholmodCholesky(Factorization):
    name = "cholmod"

    def __init__(self, matrix, symbolic: CholmodSymbolic | None = None, _factor=None):
        super().__init__(matrix)
        if not AVAILABLE:
            raise SolverError("CHOLMOD backend needs scikit-sparse: pip install 'kirchnet[fast]'")
        if _factor is not None:
            self._factor = _factor
            return
        A = _csc(matrix)
        try:
            if symbolic is not None:
                self._factor = symbolic._symbolic.cholesky(A)
            else:
                self._factor = _cholmod.cholesky(A)
        except _cholmod.CholmodNotPositiveDefiniteError as exc:
            raise SolverError(f"matrix is not positive definite: {exc}") from exc
        # CHOLMOD's simplicial LDL^T mode does not stop at a non-positive pivot: check D.
        if n_bad := int(np.count_nonzero(~(self._factor.D() > 0))):
            raise SolverError(f"matrix is not positive definite ({n_bad} non-positive pivots)")

    def _solve_block(self, rhs):
        return self._factor.solve_A(np.asfortranarray(rhs))

    def updated(self, C, d):
        """Rank-k update/downdate: ``A + C diag(d) C^T`` (CHOLMOD ``updown``)."""
        d = np.asarray(d, dtype=float)
        C = sp.csc_matrix(C)
        new = self._factor.copy()
        pos, neg = d > 0, d < 0
        if pos.any():
            new.update_inplace(sp.csc_matrix(C[:, pos] @ sp.diags(np.sqrt(d[pos]))), subtract=False)
        if neg.any():
            new.update_inplace(sp.csc_matrix(C[:, neg] @ sp.diags(np.sqrt(-d[neg]))), subtract=True)
        return CholmodCholesky(self.updated_matrix(C, d), _factor=new)
