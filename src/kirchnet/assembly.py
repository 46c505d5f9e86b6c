"""Assembly: the scatter pattern of a circuit, compiled once, and the one place where the
weighted reduced Laplacian and the driver columns are stamped.

For edge weights ``d`` (m,) (a linear circuit: the conductances ``g``; a nonlinear one at
an operating point: the incremental conductances ``g phi'(w)``)

    L_FF(d) = B_F diag(d) B_F^T,      R_drv(d) = -[L_FC(d) | d_e B_F[:, e] (sources)],

are scattered from ``d`` into a fixed CSC pattern (or a dense row-major array) by one
``bincount`` on precomputed (slot, edge, sign) triples: every factorization of the
circuit, linear or Newton step, has the same sparsity pattern (CHOLMOD reuses one
symbolic analysis).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from . import _jit


class Pattern:
    """The scatter pattern of ``L_FF`` and of the driver columns of one circuit.

    Built from the edge ends (``tails``, ``heads``), each node's position among the free
    nodes (``free_pos``, -1 if clamped), and the drivers: node inputs, series-source
    edges, extra clamped nodes (in that order).
    """

    def __init__(self, tails, heads, free_pos, n_free: int, input_nodes, source_edges,
                 clamped_nodes, n_nodes: int):
        nf = int(n_free)
        a, b = np.asarray(tails), np.asarray(heads)
        fa, fb = free_pos[a], free_pos[b]
        m = a.size
        e = np.arange(m)
        r_parts, c_parts, e_parts, s_parts = [], [], [], []
        for rr, cc, sign, mask in ((fa, fa, 1.0, fa >= 0), (fb, fb, 1.0, fb >= 0),
                                   (fa, fb, -1.0, (fa >= 0) & (fb >= 0)),
                                   (fb, fa, -1.0, (fa >= 0) & (fb >= 0))):
            r_parts.append(rr[mask]); c_parts.append(cc[mask]); e_parts.append(e[mask])
            s_parts.append(np.full(int(mask.sum()), sign))
        rows, cols = np.concatenate(r_parts), np.concatenate(c_parts)
        key = cols * max(nf, 1) + rows  # column-major order = CSC order
        uniq, inverse = np.unique(key, return_inverse=True)
        self.n_free, self.n_edges = nf, m
        self.scatter_slot = inverse
        self.scatter_edge = np.concatenate(e_parts)
        self.scatter_sign = np.concatenate(s_parts)
        self.L_indices = (uniq % max(nf, 1)).astype(np.int32)
        ucols = uniq // max(nf, 1)
        self.L_indptr = np.searchsorted(ucols, np.arange(nf + 1)).astype(np.int32)
        self.L_nnz = uniq.size
        self._diagonal_slots = None
        self.dense_slot = rows * max(nf, 1) + cols  # row-major slot of each contribution
        #: each edge's ends among the free nodes (-1 where driven)
        self.free_tails, self.free_heads = fa, fb

        # Driver columns: R_drv[f, j] = sum over contributions of sign * d[edge].
        D_nodes = np.concatenate([input_nodes, np.full(np.asarray(source_edges).size, -1),
                                  clamped_nodes])
        col_of_node = np.full(int(n_nodes), -1, dtype=np.int64)
        node_js = np.flatnonzero(D_nodes >= 0)
        col_of_node[D_nodes[node_js]] = node_js
        dr, dc, de, ds = [], [], [], []
        # -L_FC u_C: edge (a, b) with a free and b a driver node gives +d_e at a (and vice versa)
        for free_end, other in ((fa, b), (fb, a)):
            mask = (free_end >= 0) & (col_of_node[other] >= 0)
            dr.append(free_end[mask]); dc.append(col_of_node[other][mask]); de.append(e[mask])
            ds.append(np.ones(int(mask.sum())))
        # series source s_e on edge (a, b): -d_e B_F[:, e] -> -d_e at a, +d_e at b
        src = np.asarray(source_edges)
        src_cols = np.asarray(input_nodes).size + np.arange(src.size)
        for end, sign in ((fa[src], -1.0), (fb[src], 1.0)):
            mask = end >= 0
            dr.append(end[mask]); dc.append(src_cols[mask]); de.append(src[mask])
            ds.append(np.full(int(mask.sum()), sign))
        self.n_drivers = int(D_nodes.size)
        self.drv_slot = np.concatenate(dr) * max(self.n_drivers, 1) + np.concatenate(dc)
        self.drv_edge = np.concatenate(de)
        self.drv_sign = np.concatenate(ds)

    def laplacian(self, weights) -> sp.csc_array:
        """``L_FF(d) = B_F diag(d) B_F^T`` (CSC, the fixed pattern)."""
        weights = np.asarray(weights, dtype=float)
        if _jit.enabled() and weights.shape == (self.n_edges,):
            data = np.empty(self.L_nnz)
            _jit.stamp(weights, self.scatter_slot, self.scatter_edge, self.scatter_sign, data)
        else:
            data = np.bincount(self.scatter_slot, weights=self.scatter_sign * weights[self.scatter_edge],
                               minlength=self.L_nnz)
        nf = self.n_free
        return sp.csc_array((data, self.L_indices, self.L_indptr), shape=(nf, nf))

    @property
    def diagonal_slots(self) -> np.ndarray:
        """``(n_free,)``: where each diagonal entry of ``L_FF`` sits in :meth:`laplacian`'s data
        (a diagonal shift written in place keeps the pattern, and CHOLMOD's analysis)."""
        if self._diagonal_slots is None:
            cols = np.repeat(np.arange(self.n_free), np.diff(self.L_indptr))
            self._diagonal_slots = np.flatnonzero(self.L_indices == cols)
        return self._diagonal_slots

    def envelope(self, edges=None) -> "Envelope":
        """:class:`Envelope` of ``L_FF`` over the edges ``edges`` (a bool mask; all edges
        by default)."""
        return Envelope(self, np.ones(self.n_edges, dtype=bool) if edges is None else np.asarray(edges, bool))

    def factor_pattern(self, perm) -> "FactorPattern":
        """:class:`FactorPattern` of ``L_FF``'s Cholesky factor in the order ``perm`` (the free
        positions; a fill-reducing one, e.g. CHOLMOD's)."""
        return FactorPattern(self, perm)

    def laplacian_dense(self, weights) -> np.ndarray:
        """Dense ``L_FF(d)`` (small networks)."""
        nf = self.n_free
        return np.bincount(self.dense_slot, weights=self.scatter_sign * weights[self.scatter_edge],
                           minlength=nf * nf).reshape(nf, nf)

    def driver_columns(self, weights) -> np.ndarray:
        """``R_drv(d)`` (n_free x D): the free-node right-hand side per unit driver value."""
        nf, D = self.n_free, self.n_drivers
        return np.bincount(self.drv_slot, weights=self.drv_sign * weights[self.drv_edge],
                           minlength=nf * D).reshape(nf, D)


def _ends_in_order(pattern: Pattern, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fa, fb)`` (m,): each edge's ends as positions in the order ``perm`` of the free
    nodes, -1 where driven."""
    inv = np.empty(pattern.n_free, dtype=np.int64)
    inv[perm] = np.arange(pattern.n_free)
    out = []
    for ends in (pattern.free_tails, pattern.free_heads):
        pos = np.full(ends.size, -1, dtype=np.int64)
        free = ends >= 0
        pos[free] = inv[ends[free]]
        out.append(pos)
    return out[0], out[1]


class Envelope:
    """The envelope (profile) of ``L_FF`` over some of the edges, in reverse Cuthill-McKee
    order: ``perm`` (the free positions in that order), ``fa``/``fb`` (m,) each edge's ends
    in it (-1 where driven), ``first`` (nf,) the first column of each row's envelope and
    ``rowptr`` (nf + 1,) where row ``i`` (columns ``first[i]..i``) starts in the flat
    storage of :func:`kirchnet._jit_nonlinear._envelope_cholesky`. A Cholesky factor keeps
    its fill inside the envelope; on a lattice of ``n`` nodes a row holds about
    ``sqrt(n)`` entries."""

    def __init__(self, pattern: Pattern, mask: np.ndarray):
        nf = pattern.n_free
        L = sp.csr_matrix(pattern.laplacian(mask.astype(float)))
        L.eliminate_zeros()
        self.perm = (csgraph.reverse_cuthill_mckee(L, symmetric_mode=True).astype(np.int64) if nf
                     else np.zeros(0, dtype=np.int64))  # (scipy's ordering fails on an empty matrix)
        self.fa, self.fb = _ends_in_order(pattern, self.perm)
        first = np.arange(nf)
        both = mask & (self.fa >= 0) & (self.fb >= 0)
        np.minimum.at(first, np.maximum(self.fa[both], self.fb[both]), np.minimum(self.fa[both], self.fb[both]))
        self.first = first
        self.rowptr = np.concatenate([[0], np.cumsum(np.arange(nf) - first + 1)]).astype(np.int64)

    @property
    def nnz(self) -> int:
        """Entries stored (the factor's, fill included)."""
        return int(self.rowptr[-1])

    @property
    def factor_flops(self) -> float:
        """About the flops of a Cholesky factorization in the envelope (``sum_i w_i^2 / 2``,
        ``w_i`` the row widths)."""
        return float(np.sum(np.diff(self.rowptr).astype(float) ** 2) / 2)


class FactorPattern:
    """The pattern of the Cholesky factor of ``L_FF`` in the order ``perm`` (the free
    positions in that order; a fill-reducing one), for the compiled up-looking
    factorization (:func:`kirchnet._jit_nonlinear._lane_factor`): ``fa``/``fb`` (m,) each
    edge's ends in that order (-1 where driven); the factor's pattern and each row's entries
    (``colptr``, ``rowidx``, ``rowptr``, ``rowcol``, ``rowpos``:
    :func:`kirchnet.solvers.symbolic.factor_pattern`); the edges stamped into each column
    above the diagonal (``kedge[kptr[k]:kptr[k + 1]]``: the edges whose later end is ``k``,
    ``klo`` their earlier end). Needs numba (the pattern is computed compiled)."""

    def __init__(self, pattern: Pattern, perm):
        from .solvers.symbolic import factor_pattern

        nf, m = pattern.n_free, pattern.n_edges
        self.perm = np.asarray(perm, dtype=np.int64)
        self.fa, self.fb = _ends_in_order(pattern, self.perm)
        self.colptr, self.rowidx, self.rowptr, self.rowcol, self.rowpos = factor_pattern(
            pattern.laplacian(np.ones(m)), self.perm)
        both = np.flatnonzero((self.fa >= 0) & (self.fb >= 0))
        hi = np.maximum(self.fa[both], self.fb[both])
        order = np.argsort(hi, kind="stable")
        self.kedge = both[order].astype(np.int64)
        self.klo = np.minimum(self.fa, self.fb)[self.kedge].astype(np.int64)
        self.kptr = np.searchsorted(hi[order], np.arange(nf + 1)).astype(np.int64)

    @property
    def arrays(self) -> tuple:
        """``(colptr, rowidx, rowptr, rowcol, rowpos, kptr, kedge, klo)``: the kernel's arguments."""
        return self.colptr, self.rowidx, self.rowptr, self.rowcol, self.rowpos, self.kptr, self.kedge, self.klo

    @property
    def nnz(self) -> int:
        """Entries of the factor."""
        return int(self.colptr[-1])

    @cached_property
    def factor_flops(self) -> float:
        """Multiply-adds of an up-looking factorization, ``sum_j c_j (c_j - 1) / 2`` (``c_j``
        the column counts)."""
        c = np.diff(self.colptr).astype(float)
        return float(np.sum(c * (c - 1)) / 2)
