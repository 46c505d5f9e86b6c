"""Compiled (numba) kernels of the small-network fast path (:mod:`kirchnet.small`).

Optional: without numba (``pip install kirchnet[jit]``) or with ``KIRCHNET_JIT=0`` in the
environment :data:`AVAILABLE` is False and :mod:`kirchnet.small` uses its numpy path,
which stays the reference. The kernels compute exactly the numpy path's quantities and
checks (its module docstring):

* :func:`factor` scatters ``g`` into ``L_FF`` and ``R_drv``, factors ``L_FF = C C^T``
  (an envelope Cholesky in reverse Cuthill-McKee order, chosen by :mod:`kirchnet.small`:
  the factor's fill stays inside the envelope of ``L_FF``, so on lattices and other sparse
  graphs it costs far less than LAPACK's dense ``potrf``, which cannot skip the zeros, and
  on a dense graph it is the plain row-oriented Cholesky; calling LAPACK through scipy's
  ``cython_lapack`` pointers instead would keep the dense cost), solves ``L_FF X = [R_drv | P_F^T | d]``,
  certifies every column by the edge-form residual
  ``max_i |r_i| / d_i * max(psi) (1 + 2e-8) <= REFINE_ABOVE max|x|`` and the maximum principle
  of the input columns, and builds the bases ``M = [B_F^T H + E | B_F^T Z]``, ``T``, ``K``;
* :func:`analytical` and :func:`hebbian`: the rules' algebra on those bases for squared
  error: ``-sum_k W_ek (Wd z^T delta)_ek / b`` and
  ``sum_k W_ek (M [z^T dmu ; dmu^T smu / 2])_ek / (b (b2 - b1))``;
* :func:`factor_stack` and :func:`step_stack`: :func:`factor` and :func:`step` for K
  members in one call (a plain loop: with ``nogil`` callers may thread it; ``prange`` would
  add a threading layer and seconds of compile time for what per-member work this small
  gains on a shared machine).

Status codes of :func:`factor`: 0 ok, 1 conductance range, 2 Cholesky pivot (``info`` the
minor's order, as LAPACK), 3 solve certificate or maximum principle failed.
"""

from __future__ import annotations

import os

import numpy as np

try:  # pragma: no cover - exercised with and without numba in CI
    import numba as _nb
except ImportError:  # numba is optional (the `jit` extra)
    _nb = None

__all__ = ["AVAILABLE", "enabled", "factor", "factor_stack", "step", "step_stack", "rule_step", "rule_stack",
           "analytical", "hebbian", "spd_solve", "stamp"]

#: whether numba is importable (the kernels below exist)
AVAILABLE = _nb is not None


def enabled() -> bool:
    """numba importable and not switched off by ``KIRCHNET_JIT=0`` (read at each call)."""
    return AVAILABLE and os.environ.get("KIRCHNET_JIT", "1").strip().lower() not in ("0", "false", "no", "off")


if AVAILABLE:
    # reassociation lets LLVM vectorize the dot products (rounding differs from LAPACK at the
    # 1e-16 level, as LAPACK's blocking does); no 'nnan'/'ninf': the NaN and range checks stay exact
    _FM = {"reassoc", "contract"}
    _njit = _nb.njit(cache=True, nogil=True, boundscheck=False, fastmath=_FM)

    @_njit
    def _factor_into(g, slot, edge, sign, tail, head, first, ET, PFT, PD, nf, D, ni, g_range, refine, acc,
                     L, rhs, XTp, MT, T, Kc):
        """One member (module docstring); fills L (nf, nf), rhs (C, nf), XTp (C, nf + 1), MT
        (D + k, m), T (k, D), Kc (k, k); returns (status, info). ``first[i]``: the first
        column of row i's envelope in L_FF's lower triangle (the factor's fill stays inside)."""
        k = PFT.shape[1]
        C = D + k + 1
        m = g.shape[0]
        # scatter: slot < nf*nf into L's lower triangle (row-major), the rest into R = rhs[:D].T
        for i in range(nf):
            for p in range(first[i], i + 1):
                L[i, p] = 0.0
        for c in range(D):
            for i in range(nf):
                rhs[c, i] = 0.0
        nn = nf * nf
        for s in range(slot.shape[0]):
            sl = slot[s]
            v = sign[s] * g[edge[s]]
            if sl < nn:
                r, q = sl // nf, sl % nf
                if q <= r:
                    L[r, q] += v
            else:
                r = sl - nn
                rhs[r % D, r // D] += v
        for o in range(k):
            for i in range(nf):
                rhs[D + o, i] = PFT[i, o]
        hi = -np.inf
        for i in range(nf):
            rhs[C - 1, i] = L[i, i]
            if not L[i, i] <= hi:
                hi = L[i, i]
        if not (1.0 / g_range <= hi <= g_range):
            return 1, 0
        # envelope Cholesky L = C C^T in place, row by row (contiguous dot products); a failed
        # pivot is reported in this order, the caller names it through LAPACK's order
        for i in range(nf):
            fi = first[i]
            for j in range(fi, i):
                p0 = max(fi, first[j])
                t = L[i, j]
                for p in range(p0, j):
                    t -= L[i, p] * L[j, p]
                L[i, j] = t / L[j, j]
            s = L[i, i]
            for p in range(fi, i):
                s -= L[i, p] * L[i, p]
            if not s > 0.0:  # LAPACK potrf: a non-positive (or NaN) pivot
                return 2, i + 1
            L[i, i] = np.sqrt(s)
        # solves, one column of X per row of XTp: forward C y = b, backward C^T x = y
        for c in range(C):
            x = XTp[c]
            for i in range(nf):
                t = rhs[c, i]
                for p in range(first[i], i):
                    t -= L[i, p] * x[p]
                x[i] = t / L[i, i]
            for i in range(nf - 1, -1, -1):
                xi = x[i] / L[i, i]
                x[i] = xi
                for p in range(first[i], i):
                    x[p] -= xi * L[i, p]
            x[nf] = 0.0  # the row a clamped edge end reads
        # certificate: r = rhs - B_F (g * B_F^T x) per column, rho = max |r_i| / d_i
        d = rhs[C - 1]
        r = np.empty(nf)
        rho = np.empty(C)
        scale = np.empty(C)
        for c in range(C):
            x = XTp[c]
            for i in range(nf):
                r[i] = rhs[c, i]
            for e in range(m):
                v = x[tail[e]] - x[head[e]]
                if c < D + k:
                    MT[c, e] = v
                cur = g[e] * v
                if tail[e] < nf:
                    r[tail[e]] -= cur
                if head[e] < nf:
                    r[head[e]] += cur
            mx = 0.0
            sc = 0.0
            for i in range(nf):
                a = abs(r[i]) / d[i]
                if not a <= mx:  # NaN propagates as in numpy's max
                    mx = a
                b = abs(x[i])
                if not b <= sc:
                    sc = b
            rho[c] = mx
            scale[c] = sc
        spsi = scale[C - 1] * (1.0 + 2e-8)
        for c in range(C):
            if not rho[c] * spsi <= refine * scale[c]:
                return 3, 0
        if ni > 0:  # maximum principle: a free potential per input volt lies in [0, 1]
            worst = -np.inf
            for i in range(nf):
                s = 0.0
                for c in range(ni):
                    h = XTp[c, i]
                    s += h
                    if not -h <= worst:
                        worst = -h
                if not s - 1.0 <= worst:
                    worst = s - 1.0
            if not worst <= acc:
                return 3, 0
        # bases
        for c in range(D):
            for e in range(m):
                MT[c, e] += ET[c, e]
        for o in range(k):
            for c in range(D + k):
                t = 0.0
                for i in range(nf):
                    t += PFT[i, o] * XTp[c, i]
                if c < D:
                    T[o, c] = t + PD[o, c]
                else:
                    Kc[o, c - D] = t
        for o in range(k):
            for p in range(o + 1, k):
                a = 0.5 * (Kc[o, p] + Kc[p, o])
                Kc[o, p] = a
                Kc[p, o] = a
        return 0, 0

    @_njit
    def factor(g, slot, edge, sign, tail, head, first, ET, PFT, PD, nf, D, ni, g_range, refine, acc):
        """``(status, info, MT (D + k, m), T (k, D), K (k, k))`` of one member (module docstring)."""
        k = PFT.shape[1]
        C = D + k + 1
        m = g.shape[0]
        L = np.empty((nf, nf))
        rhs = np.empty((C, nf))
        XTp = np.empty((C, nf + 1))
        MT = np.empty((D + k, m))
        T = np.empty((k, D))
        Kc = np.empty((k, k))
        st, info = _factor_into(g, slot, edge, sign, tail, head, first, ET, PFT, PD, nf, D, ni, g_range, refine,
                                acc, L, rhs, XTp, MT, T, Kc)
        return st, info, MT, T, Kc

    @_njit
    def factor_stack(G, slot, edge, sign, tail, head, first, ET, PFT, PD, nf, D, ni, g_range, refine, acc):
        """:func:`factor` for every row of ``G`` (K, m): ``(status (K,), MT (K, D + k, m),
        T (K, k, D), K (K, k, k))``."""
        Kn, m = G.shape
        k = PFT.shape[1]
        C = D + k + 1
        status = np.empty(Kn, dtype=np.int64)
        MT = np.zeros((Kn, D + k, m))
        T = np.zeros((Kn, k, D))
        Kc = np.zeros((Kn, k, k))
        for j in range(Kn):
            L = np.empty((nf, nf))
            rhs = np.empty((C, nf))
            XTp = np.empty((C, nf + 1))
            st, _ = _factor_into(G[j], slot, edge, sign, tail, head, first, ET, PFT, PD, nf, D, ni, g_range,
                                 refine, acc, L, rhs, XTp, MT[j], T[j], Kc[j])
            status[j] = st
        return status, MT, T, Kc

    @_njit
    def analytical(MT, T, z, y, D):
        """``(-sum_k W_ek (Wd z^T delta)_ek / b, loss)`` for squared error (``delta = z T^T - y``)."""
        b, k = y.shape
        m = MT.shape[1]
        A = np.zeros((D, k))  # z^T delta
        loss = 0.0
        for s in range(b):
            for o in range(k):
                t = -y[s, o]
                for c in range(D):
                    t += z[s, c] * T[o, c]
                loss += 0.5 * t * t
                for c in range(D):
                    A[c, o] += z[s, c] * t
        est = np.zeros(m)
        for o in range(k):
            for c in range(D):
                a = A[c, o]
                if a != 0.0:
                    for e in range(m):
                        est[e] += MT[D + o, e] * MT[c, e] * a
        for e in range(m):
            est[e] = -est[e] / b
        return est, loss / b

    @_njit
    def _cholesky(M, n):
        """In-place lower Cholesky of ``M[:n, :n]`` (the lower triangle is read and written,
        the upper one untouched); False if not positive definite."""
        for j in range(n):
            s = M[j, j]
            for p in range(j):
                s -= M[j, p] * M[j, p]
            if not s > 0.0:
                return False
            d = np.sqrt(s)
            M[j, j] = d
            for i in range(j + 1, n):
                t = M[i, j]
                for p in range(j):
                    t -= M[i, p] * M[j, p]
                M[i, j] = t / d
        return True

    @_njit
    def _cholesky_solve(M, n, x):
        """``x <- (C C^T)^-1 x`` with the lower factor ``C`` of :func:`_cholesky` in ``M[:n, :n]``."""
        for i in range(n):
            t = x[i]
            for p in range(i):
                t -= M[i, p] * x[p]
            x[i] = t / M[i, i]
        for i in range(n - 1, -1, -1):
            t = x[i]
            for p in range(i + 1, n):
                t -= M[p, i] * x[p]
            x[i] = t / M[i, i]

    @_njit
    def stamp(weights, slot, edge, sign, data):
        """``data[slot[k]] += sign[k] weights[edge[k]]`` from zero: the values of
        :meth:`kirchnet.assembly.Pattern.laplacian` (its ``bincount``, without the gathered
        temporaries: 2x faster on a 10^4-node lattice)."""
        data[:] = 0.0
        for k in range(slot.shape[0]):
            data[slot[k]] += sign[k] * weights[edge[k]]

    @_njit
    def spd_solve(Kc, R):
        """``R K^{-1}`` for the rows of ``R`` (b, k) (Cholesky of the k x k ``K``); ``ok`` False
        when ``K`` is not positive definite."""
        k = Kc.shape[0]
        Lk = Kc.copy()
        if not _cholesky(Lk, k):
            return False, R.copy()
        out = R.copy()
        for s in range(R.shape[0]):
            _cholesky_solve(Lk, k, out[s])
        return True, out

    @_njit
    def hebbian(MT, z, dmu, smu, D, scale):
        """``sum_k W_ek (M [z^T dmu ; dmu^T smu / 2])_ek * scale`` (kirchnet.small._hebbian)."""
        b, k = dmu.shape
        m = MT.shape[1]
        A = np.zeros((D + k, k))
        for s in range(b):
            for o in range(k):
                dv = dmu[s, o]
                for c in range(D):
                    A[c, o] += z[s, c] * dv
                for p in range(k):
                    A[D + p, o] += 0.5 * dmu[s, p] * smu[s, o]
        est = np.zeros(m)
        for o in range(k):
            for c in range(D + k):
                a = A[c, o]
                if a != 0.0:
                    for e in range(m):
                        est[e] += MT[D + o, e] * MT[c, e] * a
        for e in range(m):
            est[e] *= scale
        return est

    @_njit
    def rule_step(MT, T, Kc, x, y, perm, kind, b1, b2):
        """The rule's part of :func:`step` on a factor's bases: ``(status, estimate, loss)``
        (the same arithmetic whether the factor was just computed or cached)."""
        b = x.shape[0]
        D = T.shape[1]
        m = MT.shape[1]
        z = np.empty((b, D))
        for s in range(b):
            for c in range(D):
                z[s, c] = x[s, perm[c]]
        if kind == 0:
            est, loss = analytical(MT, T, z, y, D)
        else:
            k = y.shape[1]
            r = np.empty((b, k))
            loss = 0.0
            for s in range(b):
                for o in range(k):
                    t = 0.0
                    for c in range(D):
                        t += z[s, c] * T[o, c]
                    loss += 0.5 * (t - y[s, o]) ** 2
                    r[s, o] = y[s, o] - t
            loss /= b
            ok, nu = spd_solve(Kc, r)
            if not ok:
                return 4, np.zeros(m), 0.0
            if b1 == 0.0:  # mu1 = 0: dmu = smu = b2 nu
                dmu = b2 * nu
                smu = dmu
            elif b2 == 0.0:  # mu2 = 0: dmu = -b1 nu, smu = b1 nu
                smu = b1 * nu
                dmu = -smu
            else:
                dmu = (b2 - b1) * nu
                smu = (b1 + b2) * nu
            est = hebbian(MT, z, dmu, smu, D, 1.0 / (b * (b2 - b1)))
        if not np.isfinite(loss):
            return 5, est, loss
        for e in range(m):
            if not np.isfinite(est[e]):
                return 5, est, loss
        return 0, est, loss

    @_njit
    def step(g, x, y, perm, kind, b1, b2, slot, edge, sign, tail, head, first, ET, PFT, PD, nf, D, ni,
             g_range, refine, acc):
        """A whole squared-error step in one call: ``(status, estimate, loss)`` with ``kind`` 0
        analytical, 1 coupled learning (nudges ``b1``, ``b2``: kirchnet.rules.twophase._betas).
        Status 0 ok; otherwise the caller's numpy path decides (1-3 :func:`factor`'s, 4 a
        singular output compliance, 5 a non-finite result)."""
        st, info, MT, T, Kc = factor(g, slot, edge, sign, tail, head, first, ET, PFT, PD, nf, D, ni,
                                     g_range, refine, acc)
        if st != 0:
            return st, np.zeros(g.shape[0]), 0.0
        return rule_step(MT, T, Kc, x, y, perm, kind, b1, b2)

    @_njit
    def rule_stack(MT, T, Kc, ok, x, y, perm, kind, b1, b2):
        """:func:`rule_step` for the members of a stacked factor with ``ok`` (status 6 where not)."""
        Kn, _, m = MT.shape
        status = np.full(Kn, 6, dtype=np.int64)
        est = np.zeros((Kn, m))
        losses = np.zeros(Kn)
        for j in range(Kn):
            if ok[j]:
                st, e, lo = rule_step(MT[j], T[j], Kc[j], x[j], y[j], perm, kind, b1, b2)
                status[j] = st
                est[j] = e
                losses[j] = lo
        return status, est, losses

    @_njit
    def step_stack(G, x, y, perm, kind, b1, b2, slot, edge, sign, tail, head, first, ET, PFT, PD, nf, D,
                   ni, g_range, refine, acc):
        """:func:`step` for every member: ``G`` (K, m), ``x`` (K, b, n_in), ``y`` (K, b, k) ->
        ``(status (K,), estimates (K, m), losses (K,))``."""
        Kn, m = G.shape
        status = np.empty(Kn, dtype=np.int64)
        est = np.empty((Kn, m))
        losses = np.empty(Kn)
        for j in range(Kn):
            st, e, lo = step(G[j], x[j], y[j], perm, kind, b1, b2, slot, edge, sign, tail, head, first, ET,
                             PFT, PD, nf, D, ni, g_range, refine, acc)
            status[j] = st
            est[j] = e
            losses[j] = lo
        return status, est, losses
else:
    factor = factor_stack = analytical = hebbian = spd_solve = step = step_stack = None
    rule_step = rule_stack = None
