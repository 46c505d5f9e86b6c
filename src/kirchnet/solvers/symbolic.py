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

__all__ = ["column_counts", "factor_pattern", "AVAILABLE"]

if AVAILABLE:
    import numba as _nb

    @_nb.njit(cache=True, nogil=True)
    def _etree(indptr, indices, perm, inv):
        """Elimination tree (Liu, path compression through ``ancestor``) of the symmetric
        pattern (CSC, both triangles) permuted: position ``i`` is column ``perm[i]``, ``inv``
        the inverse permutation; ``parent[i]`` (-1: a root)."""
        n = indptr.shape[0] - 1
        parent = np.full(n, -1, dtype=np.int64)
        ancestor = np.full(n, -1, dtype=np.int64)
        for i in range(n):
            for q in range(indptr[perm[i]], indptr[perm[i] + 1]):
                r = inv[indices[q]]
                while r != -1 and r < i:
                    nxt = ancestor[r]
                    ancestor[r] = i
                    if nxt == -1:
                        parent[r] = i
                    r = nxt
        return parent

    @_nb.njit(cache=True, nogil=True)
    def _row_subtrees(indptr, indices, perm, inv, parent, colptr, rowidx, rowcol, rowpos):
        """Walks every row subtree (the entries ``k < i`` of permuted column ``i`` are permuted
        row ``i``'s; from each up the tree until a node already marked for row ``i``: each
        node ``j`` visited is a nonzero ``L_ij``). ``colptr`` empty: returns the column
        counts (diagonal included). Else fills the pattern of ``L`` (CSC ``colptr``,
        ``rowidx``, ascending rows, the diagonal first) and each row's off-diagonal entries
        in visiting order, row after row (``rowcol``: their columns, ``rowpos``: their
        positions in ``rowidx``) and returns the column counts."""
        n = indptr.shape[0] - 1
        fill = np.ones(n, dtype=np.int64)  # the diagonal
        record = colptr.shape[0] > 0
        if record:
            for j in range(n):
                rowidx[colptr[j]] = j
        mark = np.full(n, -1, dtype=np.int64)
        q_row = 0
        for i in range(n):
            mark[i] = i
            for q in range(indptr[perm[i]], indptr[perm[i] + 1]):
                j = inv[indices[q]]
                while 0 <= j < i and mark[j] != i:  # (-1: a root, only for a non-symmetric pattern)
                    mark[j] = i
                    if record:
                        p = colptr[j] + fill[j]
                        rowidx[p] = i
                        rowcol[q_row] = j
                        rowpos[q_row] = p
                        q_row += 1
                    fill[j] += 1
                    j = parent[j]
        return fill

    @_nb.njit(cache=True, nogil=True)
    def _counts(indptr, indices, perm, inv):
        """Column counts of the Cholesky factor of the symmetric pattern permuted
        (:func:`_etree`, :func:`_row_subtrees`)."""
        parent = _etree(indptr, indices, perm, inv)
        empty = np.zeros(0, dtype=np.int64)
        return _row_subtrees(indptr, indices, perm, inv, parent, empty, empty, empty, empty)


def _permuted(matrix, perm):
    """``(indptr, indices, perm, inv)`` of the symmetric ``matrix``'s pattern (CSC, int64) and
    the ordering ``perm`` (identity by default) with its inverse."""
    A = sp.csc_matrix(matrix)
    n = A.shape[0]
    perm = np.arange(n, dtype=np.int64) if perm is None else np.asarray(perm, dtype=np.int64)
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    return A.indptr.astype(np.int64), A.indices.astype(np.int64), perm, inv


def column_counts(matrix, perm=None) -> np.ndarray | None:
    """``nnz(L[:, j])`` (diagonal included) of the Cholesky factor of ``A[perm][:, perm]``
    (``matrix`` a symmetric sparse matrix; only its pattern is read); ``None`` without numba."""
    if not AVAILABLE:
        return None
    return _counts(*_permuted(matrix, perm))


def factor_pattern(matrix, perm=None):
    """The pattern of the Cholesky factor ``L`` of ``A[perm][:, perm]`` (``matrix`` symmetric,
    only its pattern read): ``(colptr, rowidx, rowptr, rowcol, rowpos)``, ``L`` in CSC with
    ascending rows and the diagonal first in each column, and each row's off-diagonal
    entries by ascending column (``rowcol``: the columns, ``rowpos``: their positions in
    ``rowidx``; row ``i``'s at ``rowptr[i]:rowptr[i + 1]``), the order an up-looking
    factorization visits them. ``None`` without numba."""
    if not AVAILABLE:
        return None
    indptr, indices, perm, inv = _permuted(matrix, perm)
    n = perm.size
    parent = _etree(indptr, indices, perm, inv)
    none = np.zeros(0, dtype=np.int64)
    counts = _row_subtrees(indptr, indices, perm, inv, parent, none, none, none, none)  # the column counts
    colptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    lnz = int(colptr[-1])
    rowidx = np.empty(lnz, dtype=np.int64)
    rowcol, rowpos = np.empty(lnz - n, dtype=np.int64), np.empty(lnz - n, dtype=np.int64)
    _row_subtrees(indptr, indices, perm, inv, parent, colptr, rowidx, rowcol, rowpos)
    # each row's off-diagonal entries: its entries in L but the diagonal
    rowptr = np.concatenate([[0], np.cumsum(np.bincount(rowidx, minlength=n) - 1)]).astype(np.int64)
    rows = np.repeat(np.arange(n), np.diff(rowptr))
    order = np.lexsort((rowcol, rows))  # rows were visited in order; within a row by column
    return colptr, rowidx, rowptr, rowcol[order], rowpos[order]
