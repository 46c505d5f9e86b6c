"""Dense Cholesky: the fastest path for small networks (below ~250 free nodes)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from .. import _memory
from ..errors import SolverError
from .base import Factorization, not_positive_definite


class DenseCholesky(Factorization):
    """LAPACK Cholesky of the densified matrix; the batch is one multi-column solve."""

    name = "dense"

    def __init__(self, matrix):
        super().__init__(matrix)
        n = matrix.shape[0]
        _memory.require(16.0 * n * n, f"dense Cholesky of {n:,} unknowns (two {n:,} x {n:,} float64 "
                        f"matrices)", "use a sparse backend (backend='auto', 'splu' or 'cholmod')")
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix, dtype=float)
        # LAPACK potrf/potrs directly: the scipy.linalg wrappers cost more than the
        # factorization itself on networks of a few hundred nodes.
        c, info = lapack.dpotrf(dense, lower=1, clean=0, overwrite_a=0)
        if info != 0:
            raise not_positive_definite(f"LAPACK potrf info={info}: the leading minor of order "
                                        f"{info} of {n} is not positive", dense)
        self._chol = c

    def _solve_block(self, rhs):
        x, info = lapack.dpotrs(self._chol, rhs, lower=1)
        if info != 0:  # pragma: no cover - only for malformed input
            raise SolverError(f"LAPACK potrs failed (info={info})")
        return x

    def updated(self, C, d, matrix=None):
        # Refactoring a small dense matrix is cheaper and more accurate than Woodbury.
        A = self.updated_matrix(C, d, matrix)
        return DenseCholesky(A.toarray() if sp.issparse(A) else A)
