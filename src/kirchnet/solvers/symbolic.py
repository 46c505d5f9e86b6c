"""Column counts of a sparse Cholesky factor from the pattern alone (no numeric work).

Used to choose CHOLMOD's factorization mode (:mod:`kirchnet.solvers.cholmod`): the
counts ``c_j = nnz(L[:, j])`` of ``P A P^T = L L^T`` give the factor's size
``lnz = sum_j c_j`` and its work ``flops ~ sum_j c_j^2``.

Algorithm (George & Liu; Davis, *Direct Methods for Sparse Linear Systems*, 4.1-4.2):
the elimination tree by Liu's algorithm with path compression, then, row by row, the
row subtree of ``L[i, :]``: from every ``k < i`` with ``A_ik != 0`` up the tree until a
node already marked for row ``i``; each node ``j`` visited is a nonzero ``L_ij``. Both
are ``O(lnz)`` and run compiled (numba, the ``jit`` extra); without numba
:func:`column_counts` returns ``None`` and callers keep CHOLMOD's own choice.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._jit import AVAILABLE

__all__ = ["column_counts", "AVAILABLE"]

if AVAILABLE:
    import numba as _nb

    @_nb.njit(cache=True, nogil=True)
    def _counts(indptr, indices, perm, inv):
        """Column counts of the Cholesky factor of the symmetric pattern (CSC, both triangles)
        permuted: position ``i`` is column ``perm[i]``, ``inv`` the inverse permutation (the
        entries ``k < i`` of permuted column ``i`` are permuted row ``i``'s)."""
        n = indptr.shape[0] - 1
        parent = np.full(n, -1, dtype=np.int64)
        ancestor = np.full(n, -1, dtype=np.int64)
        for i in range(n):  # elimination tree (Liu), path compression through `ancestor`
            for q in range(indptr[perm[i]], indptr[perm[i] + 1]):
                r = inv[indices[q]]
                while r != -1 and r < i:
                    nxt = ancestor[r]
                    ancestor[r] = i
                    if nxt == -1:
                        parent[r] = i
                    r = nxt
        count = np.ones(n, dtype=np.int64)  # the diagonal
        mark = np.full(n, -1, dtype=np.int64)
        for i in range(n):  # row subtrees: L_ij != 0 for every j on a path k -> ... below i
            mark[i] = i
            for q in range(indptr[perm[i]], indptr[perm[i] + 1]):
                j = inv[indices[q]]
                while 0 <= j < i and mark[j] != i:  # (-1: a root, only for a non-symmetric pattern)
                    mark[j] = i
                    count[j] += 1
                    j = parent[j]
        return count


def column_counts(matrix, perm=None) -> np.ndarray | None:
    """``nnz(L[:, j])`` (diagonal included) of the Cholesky factor of ``A[perm][:, perm]``
    (``matrix`` a symmetric sparse matrix; only its pattern is read); ``None`` without numba."""
    if not AVAILABLE:
        return None
    A = sp.csc_matrix(matrix)
    n = A.shape[0]
    perm = np.arange(n, dtype=np.int64) if perm is None else np.asarray(perm, dtype=np.int64)
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    return _counts(A.indptr.astype(np.int64), A.indices.astype(np.int64), perm, inv)
