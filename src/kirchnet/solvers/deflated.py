"""Two-level solves of grounded weighted Laplacians whose weights span more decades than
double precision resolves.

A tangent Laplacian ``H = sum_e d_e (e_a - e_b)(e_a - e_b)^T`` (edges to driven nodes: one
end ``-1``, the ground) of a diode network at an operating point has weights from the
conductance of forward diodes and resistors (~1 S) down to ``g Is / n Vt ~ 1e-12 S`` at
zero bias and far below in reverse. A *floating cluster* (nodes joined by strong edges,
tied to every driven node only through weak ones) makes ``H`` nearly singular: its
common-mode eigenvalue is the sum of its weak edges, far below the rounding of the strong
ones, so a Cholesky factorization pivots on cancellation noise (or fails), and a global
diagonal shift (``1e-12 max diag``) buries the weak weights: the Newton step is then
orders of magnitude short in exactly the directions that need it (the nonlinear solve
creeps for tens of iterations).

:class:`DeflatedLaplacian` solves ``H x = b`` exactly instead, as a two-level scheme:

* the fine level ``H' = H + sum_k alpha_k e_{a_k} e_{a_k}^T``: each floating cluster ``k``
  anchored at its node ``a_k`` of largest scale (``alpha_k`` that node's largest weight),
  which is as well conditioned as the strong edges alone;
* the coarse level ``A = P^T H P`` (``P`` (n, k): each node's floating cluster, ``P^T H P``
  the grounded Laplacian of the cut edges only, assembled from their weights, so no
  cancellation enters it), solved by :class:`SubtractionFreeElimination` (accurate to
  ulps whatever its weights) up to :data:`EXACT_COARSE` clusters, else by this scheme
  again;
* cycles ``x += H'^-1 (b - H x)``, ``x += P A^-1 P^T (b - H x)``: ``H'^-1 H`` is the
  identity up to a rank-k term in range ``P``, which the exact coarse correction removes,
  so the error contracts by about the weak/strong weight ratio per cycle. ``P^T H x`` is
  computed from the cut edges' currents (the strong internal currents cancel exactly).

An edge is *weak* when ``d_e < tau max(s_a, s_b)`` (``s_v`` the largest weight at node
``v``; :data:`WEAK_RTOL`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.sparse import csgraph

from .. import _jit
from ..errors import SolverError

#: an edge is weak where its weight is below this fraction of the largest weight at its ends
WEAK_RTOL = 1e-8
#: fine/coarse cycles until no entry changes by more than this fraction of itself or ...
CYCLE_RTOL = 1e-13
#: ... this fraction of the largest entry of its cluster (of the grounded part), ...
CYCLE_FLOOR = 1e-14
#: ... at most this many (conjugate gradients on these cycles diverge: the inner products
#: are lost to the potentials' dynamic range)
MAX_CYCLES = 40
#: coarse levels up to this many clusters are solved by :class:`SubtractionFreeElimination`
EXACT_COARSE = 400
#: a level's own factorization (no caller's given) is dense up to this size, sparse above
DENSE_COARSE = 2000
#: at most this many levels
MAX_LEVELS = 12


def incidence(n: int, ea: np.ndarray, eb: np.ndarray) -> sp.csr_array:
    """``B`` (n, m): ``+1`` at ``(ea[e], e)``, ``-1`` at ``(eb[e], e)`` (ends ``-1`` dropped)."""
    e = np.arange(ea.size)
    on_a, on_b = ea >= 0, eb >= 0
    rows = np.concatenate([ea[on_a], eb[on_b]])
    cols = np.concatenate([e[on_a], e[on_b]])
    vals = np.concatenate([np.ones(int(on_a.sum())), -np.ones(int(on_b.sum()))])
    return sp.csr_array((vals, (rows, cols)), shape=(n, ea.size))


def node_scales(B: sp.csr_array, d: np.ndarray) -> np.ndarray:
    """``s_v``: the largest weight ``d_e`` of an edge at node ``v`` (0 where none), ``B``
    the (n, m) incidence matrix (:func:`incidence`)."""
    B = sp.csr_array(B)
    s = np.zeros(B.shape[0])
    rows = np.flatnonzero(np.diff(B.indptr))
    if rows.size:
        s[rows] = np.maximum.reduceat(d[B.indices], B.indptr[rows])
    return s


def floating_clusters(n: int, ea: np.ndarray, eb: np.ndarray, d: np.ndarray, tau: float = WEAK_RTOL,
                      s: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """``(labels, k)``: each node's floating cluster ``0..k-1``, or ``-1`` where strong
    edges tie it to the ground (a driven node). Edge ``e`` joins nodes ``ea[e]``,
    ``eb[e]`` (``-1``: the ground) with weight ``d[e] >= 0``; strong edges are those with
    ``d_e >= tau max(s_a, s_b) > 0`` (:func:`node_scales`; ``s`` where already known)."""
    if s is None:
        s = node_scales(incidence(n, ea, eb), d)
    scale = np.maximum(np.where(ea >= 0, s[np.maximum(ea, 0)], 0.0), np.where(eb >= 0, s[np.maximum(eb, 0)], 0.0))
    strong = (d > 0) & (d >= tau * scale)
    if strong.all():
        return np.full(n, -1, dtype=np.int64), 0
    a = np.where(ea >= 0, ea, n)[strong]
    b = np.where(eb >= 0, eb, n)[strong]
    graph = sp.csr_array((np.ones(a.size), (a, b)), shape=(n + 1, n + 1))
    _, comp = csgraph.connected_components(graph, directed=False)
    floating = comp[:n] != comp[n]
    labels = np.full(n, -1, dtype=np.int64)
    ids, labels[floating] = np.unique(comp[:n][floating], return_inverse=True)
    return labels, int(ids.size)


def grounded_laplacian(n: int, ea: np.ndarray, eb: np.ndarray, d: np.ndarray) -> sp.csc_array:
    """``B diag(d) B^T = sum_e d_e (e_a - e_b)(e_a - e_b)^T`` over the nodes ``0..n-1``
    (:func:`incidence`: ends ``-1`` dropped)."""
    B = incidence(n, np.asarray(ea), np.asarray(eb))
    return sp.csc_array(B @ sp.diags_array(np.asarray(d, dtype=float)) @ B.T)


if _jit.AVAILABLE:
    import numba as _nb

    @_nb.njit(cache=True, nogil=True)  # no fastmath: the elimination's rounding is its point
    def _eliminate(A, g0, piv):
        """:class:`SubtractionFreeElimination`'s elimination in place (compiled; 5x
        :func:`_eliminate_numpy` at 190 nodes): the multipliers into ``A``'s lower triangle,
        the pivots into ``piv``; returns the first pivot without weight to the ground, or -1."""
        n = A.shape[0]
        for k in range(n):
            p = g0[k]
            for j in range(k + 1, n):
                p += A[k, j]
            if not p > 0.0:
                return k
            piv[k] = p
            for i in range(k + 1, n):
                f = A[i, k] / p
                A[i, k] = f
                if f != 0.0:
                    for j in range(k + 1, n):
                        A[i, j] += f * A[k, j]
                    g0[i] += f * g0[k]
        return -1


def _eliminate_numpy(A, g0, piv) -> int:
    """:func:`_eliminate` without numba: the same elimination, a pivot's Schur update at a time."""
    for k in range(A.shape[0]):
        piv[k] = g0[k] + A[k, k + 1:].sum()
        if not piv[k] > 0:
            return k
        f = A[k + 1:, k] / piv[k]
        A[k + 1:, k] = f
        A[k + 1:, k + 1:] += np.outer(f, A[k, k + 1:])
        g0[k + 1:] += f * g0[k]
    return -1


class SubtractionFreeElimination:
    """``H x = b`` for a small grounded Laplacian by Gaussian elimination without
    subtractions (Grassmann, Taksar and Heyman's form): each pivot is recomputed as the
    node's remaining conductance to the ground plus its remaining off-diagonal weights, and
    the Schur complement only adds positive terms (``|a_ij| += |a_ik| |a_kj| / p_k``,
    ``g_i += |a_ik| g_k / p_k``), so every entry of the factorization is accurate to a few
    ulps whatever the range of the weights (O(n^3), dense: coarse levels and fallbacks
    only). The factorization is ``(I - F) y = b`` (``F`` the strictly lower multipliers)
    and ``(diag(p) - U) x = y`` (``U`` the eliminated off-diagonal magnitudes): two
    triangular solves per right-hand side."""

    def __init__(self, n: int, ea: np.ndarray, eb: np.ndarray, d: np.ndarray):
        both = (ea >= 0) & (eb >= 0) & (ea != eb)
        A = sp.coo_array((d[both], (ea[both], eb[both])), shape=(n, n)).toarray()  # duplicates summed
        A += A.T  # |off-diagonal| weights
        grounded = (ea >= 0) != (eb >= 0)
        g0 = np.bincount(np.maximum(ea, eb)[grounded], weights=d[grounded], minlength=n)  # to the ground
        piv = np.zeros(n)
        singular = (_eliminate if _jit.enabled() else _eliminate_numpy)(A, g0, piv)
        if singular >= 0:
            raise SolverError(f"the Laplacian is singular: node {singular} has no weight left to the ground")
        np.fill_diagonal(A, 0.0)
        self.lower = np.eye(n) - np.tril(A, -1)
        self.upper = np.diag(piv) - np.triu(A, 1)
        if not (np.all(np.isfinite(self.lower)) and np.all(np.isfinite(self.upper))):
            raise SolverError("the subtraction-free elimination overflowed (weights beyond double range)")

    def solve(self, b: np.ndarray) -> np.ndarray:
        y = sla.solve_triangular(self.lower, b, lower=True, unit_diagonal=True, check_finite=False)
        return sla.solve_triangular(self.upper, y, lower=False, check_finite=False)

    __call__ = solve


class DeflatedLaplacian:
    """``H x = b`` for the grounded Laplacian of the edges ``(ea, eb)`` with weights ``d``
    (module docstring). ``factorize_fine(shift)`` (optional) returns a solve function of
    ``H + diag(shift)`` (a caller's assembly and factorization, e.g. one CHOLMOD symbolic
    analysis shared by every Newton step); by default it is assembled and factorized here.
    ``labels, k``, ``B``, ``s``: :func:`floating_clusters`, :func:`incidence` and
    :func:`node_scales` where already computed. Raises
    :class:`~kirchnet.errors.SolverError` when a level cannot be factorized (weights that
    are exactly zero around a cluster: ``H`` is singular)."""

    def __init__(self, n: int, ea: np.ndarray, eb: np.ndarray, d: np.ndarray,
                 factorize_fine: Callable[[np.ndarray], Callable] | None = None,
                 labels: np.ndarray | None = None, k: int | None = None, tau: float = WEAK_RTOL,
                 level: int = 0, B: sp.csr_array | None = None, s: np.ndarray | None = None):
        ea, eb, d = np.asarray(ea, np.int64), np.asarray(eb, np.int64), np.asarray(d, float)
        B = incidence(n, ea, eb) if B is None else sp.csr_array(B)
        s = node_scales(B, d) if s is None else s
        if labels is None:
            labels, k = floating_clusters(n, ea, eb, d, tau, s=s)
        self.n, self.k = n, int(k)
        self.ea, self.eb, self.d = ea, eb, d
        factorize_fine = factorize_fine or (lambda shift: _factorize(B @ sp.diags_array(d) @ B.T, shift))
        if self.k == 0:  # nothing floats: one factorization
            self._fine = factorize_fine(np.zeros(n))
            return
        if self.k == n and level > 0 or level >= MAX_LEVELS:
            raise SolverError(f"the Laplacian is singular to working precision: {self.k} of its {n} "
                              f"nodes are held only by zero or negligible weights")
        anchor = np.full(self.k, -1, dtype=np.int64)
        member = np.flatnonzero(labels >= 0)
        floating = member[np.lexsort((s[member], labels[member]))]  # by cluster, then scale:
        last = np.r_[labels[floating][1:] != labels[floating][:-1], True]
        anchor[labels[floating][last]] = floating[last]  # each cluster's last, its anchor
        shift = np.zeros(n)
        shift[anchor] = s[anchor]
        self._fine = factorize_fine(shift)
        group = labels + 1  # 0: the grounded part
        self._order = np.argsort(group, kind="stable")  # nodes by group, for the per-group maxima
        self._starts = np.searchsorted(group[self._order], np.arange(self.k + 1))
        self._group = group
        self._P = sp.csr_array((np.ones(member.size), (member, labels[member])), shape=(n, self.k))
        ka = np.where(ea >= 0, labels[np.maximum(ea, 0)], -1)
        kb = np.where(eb >= 0, labels[np.maximum(eb, 0)], -1)
        self._cut = np.flatnonzero(ka != kb)
        self._ka, self._kb = ka[self._cut], kb[self._cut]
        self._B, self._BT = B, sp.csr_array(B.T)  # transposed once (scipy's .T builds a new array per use)
        self._Bc = incidence(self.k, self._ka, self._kb)  # the cut edges between clusters
        self._Bc_xT = sp.csr_array(incidence(n, ea[self._cut], eb[self._cut]).T)  # ... and between nodes
        if self.k <= EXACT_COARSE:  # exact to a few ulps whatever the weights: no recursion
            self._coarse = SubtractionFreeElimination(self.k, self._ka, self._kb, d[self._cut])
        else:
            self._coarse = DeflatedLaplacian(self.k, self._ka, self._kb, d[self._cut], tau=tau, level=level + 1)

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``H x`` in edge form (x (n, r))."""
        return self._B @ (self.d[:, None] * (self._BT @ x))

    def _coarse_residual(self, Pb: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``P^T (b - H x)`` from the cut edges' currents (``Pb = P^T b``)."""
        return Pb - self._Bc @ (self.d[self._cut, None] * (self._Bc_xT @ x))

    def solve(self, b: np.ndarray) -> np.ndarray:
        """``H^-1 b`` for ``b`` (n,) or (n, r): the coarse solution, then fine/coarse cycles
        until no entry changes by more than :data:`CYCLE_RTOL` of itself or
        :data:`CYCLE_FLOOR` of the largest in its cluster (the error
        contracts by about the weak/strong ratio per cycle where the clusters' neighbours
        are held strongly: two cycles; more where a node hangs on weak edges to a cluster
        and to the ground alike)."""
        b = np.asarray(b, dtype=float)
        B = b.reshape(self.n, -1)
        self.cycles = 0
        if self.k == 0:
            return np.asarray(self._fine(B)).reshape(b.shape)
        Pb = self._P.T @ B
        x = self._P @ self._coarse.solve(Pb)
        for self.cycles in range(1, MAX_CYCLES + 1):
            dx = np.asarray(self._fine(B - self.matvec(x))).reshape(x.shape)
            x = x + dx
            dc = self._P @ self._coarse.solve(self._coarse_residual(Pb, x))
            x = x + dc
            if not np.all(np.isfinite(x)):  # the caller's finiteness check refuses it
                break
            # each entry to CYCLE_RTOL of itself or CYCLE_FLOOR of its cluster's (or the grounded
            # part's) largest: entries far below their neighbours sit at those's rounding level
            ax = np.abs(x)
            # (an empty grounded part gets its neighbour's maximum: read by no node)
            largest = np.maximum.reduceat(ax[self._order], self._starts, axis=0)
            if np.all(np.abs(dx) + np.abs(dc) <= CYCLE_RTOL * ax + CYCLE_FLOOR * largest[self._group]):
                break
        return x.reshape(b.shape)

    __call__ = solve


def _factorize(L: sp.sparray, shift: np.ndarray) -> Callable:
    """A solve function of ``L + diag(shift)``: :func:`kirchnet.solvers.factorize`, dense
    Cholesky up to :data:`DENSE_COARSE` nodes, else CHOLMOD (SuperLU without it);
    :class:`~kirchnet.errors.SolverError` if not positive definite."""
    from . import cholmod_available, factorize  # noqa: PLC0415 - the package imports this module

    A = sp.csc_array(L + sp.diags_array(shift))
    backend = "dense" if A.shape[0] <= DENSE_COARSE else ("cholmod" if cholmod_available() else "splu")
    return factorize(A, backend, check=False).solve
