"""Compiled (numba) kernels of the resistor-diode equilibria (:mod:`kirchnet.nonlinear`,
:mod:`kirchnet.ports`).

Optional like :mod:`kirchnet._jit` (same switch: numba importable and ``KIRCHNET_JIT``
not ``0``); without them :mod:`kirchnet.nonlinear` runs its numpy iteration, which stays
the reference (the tests compare both step for step).

* :func:`nodal_newton`: :func:`kirchnet.nonlinear._limited_newton` on the full network for
  circuits of resistors and diodes small enough for dense systems, one sample at a time:
  the same linearization voltages, limiting, stopping rule (KCL residual per node against
  its own current scale and rounding floor, the settled rule) and stall test, the
  tangent Laplacian assembled dense and factorized by Cholesky (a shift of ``1e-12 max
  diag`` where singular), no Python per iteration (``bench_nonlinear.py``'s 96-node
  lattice at batch 1: 1.5 ms for 12 iterations where the numpy path takes 4.8 ms);
* :func:`port_newton`: per sample, SPICE's limited Newton iteration on the diode voltages
  ``w`` (K,) of ``w = w0 - Z i(w)``, ``i_k = g_k phi_k(w_k)``, the resistors eliminated
  (``Z`` the port impedance, ``w0`` the open-circuit voltages). Each iteration linearizes
  diode ``k`` at ``v_k`` (``i ~ ic + D w``, ``D = g phi'(v)``) and solves
  ``(I + Z D) w = w0 - Z ic`` as ``(I + S Z_AA S) y = S h_A``, ``S = D_A^(1/2)``,
  ``w = h - Z_:A S y`` (``h = w0 - Z ic``) on the diodes ``A`` with ``D_k Z_kk > tau``
  (the others, reverse-biased, keep their current ``g phi(v)`` for the step: their
  neglected coupling ``D_k Z_kk <= tau`` slows the quadratic convergence by at most that
  factor). ``I + S Z S`` is SPD with eigenvalues >= 1 (``Z`` is positive semidefinite).
  The next ``v = limit(v, w)`` (:meth:`kirchnet.elements.Diode.limit`, the same rule).
* :func:`port_correction`: ``S (I + S Z_AA S)^-1 S Y_A`` per sample, the Woodbury term of
  a tangent solve ``H^-1 R = L_R^-1 R - P S (I + S Z S)^-1 S P^T R``.

Status codes of :func:`port_newton`: 0 converged (the last step moved no diode voltage by
more than ``vtol n Vt``, or by at most ``settle n Vt`` and more than half the step before:
Newton no longer contracts, the voltages are at their rounding level), 1 stalled
(``stall`` iterations without a smaller step) or ``max_iter`` reached, 2 non-finite step,
3 a diode linearized with ``D_k Z_kk > stiff``: a forward diode that stiff (typically in a
loop of diodes and sources carrying a huge current that the resistors do not see) makes
``w = w0 - Z i`` cancel catastrophically (``eps |Z| |i|`` exceeds the voltages).
Every state is then checked on the full network by the caller.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import AVAILABLE, enabled

__all__ = ["AVAILABLE", "enabled", "port_newton", "port_correction", "nodal_newton"]

if AVAILABLE:
    import numba as _nb

    _njit = _nb.njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})

    @_njit
    def _diode(v, g, Is, nvt, xmax):
        """``(g phi(v), g phi'(v))`` of :class:`kirchnet.elements.Diode` (linear above ``xmax n Vt``)."""
        x = v / nvt
        if x > xmax:
            e = math.exp(xmax)
            return g * Is * (math.expm1(xmax) + e * (x - xmax)), g * Is / nvt * e
        return g * Is * math.expm1(x), g * Is / nvt * math.exp(x)

    @_njit
    def _limit(v, w, nvt, vcrit, dmax, dmin):
        """:meth:`kirchnet.elements.Diode.limit` for one diode."""
        if w > vcrit and abs(w - v) > 2.0 * nvt:
            if v > 0.0:
                arg = 1.0 + (w - v) / nvt
                return v + nvt * math.log(arg) if arg > 0.0 else vcrit
            return nvt * math.log((w if w > 0.0 else nvt) / nvt)
        if w < v - dmin * nvt and v > 0.0:
            arg = 1.0 + (w - v) / nvt
            return v + nvt * math.log(max(arg, math.exp(-dmax)))
        return w

    @_njit
    def _cholesky(M, n):
        """In-place lower Cholesky of ``M[:n, :n]`` (lower triangle read); False if not PD."""
        for j in range(n):
            s = M[j, j]
            for p in range(j):
                s -= M[j, p] * M[j, p]
            if not s > 0.0:
                return False
            d = math.sqrt(s)
            M[j, j] = d
            for i in range(j + 1, n):
                t = M[i, j]
                for p in range(j):
                    t -= M[i, p] * M[j, p]
                M[i, j] = t / d
        return True

    @_njit
    def _cholesky_solve(M, n, x):
        """``x <- (C C^T)^-1 x`` with ``C`` the factor in ``M[:n, :n]``."""
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
    def _capacitance(Z, D, zd, tau, idx, sq, M):
        """Active diodes ``idx[:na]`` (``D_k Z_kk > tau``), ``sq = sqrt(D)`` on them, and the
        Cholesky factor of ``I + S Z_AA S`` in ``M``; returns ``na`` (-1: not PD)."""
        K = D.shape[0]
        na = 0
        for k in range(K):
            if D[k] * zd[k] > tau:
                idx[na] = k
                sq[na] = math.sqrt(D[k])
                na += 1
        for a in range(na):
            za = Z[idx[a]]
            for c in range(a + 1):
                M[a, c] = sq[a] * za[idx[c]] * sq[c]
            M[a, a] += 1.0
        if not _cholesky(M, na):
            return -1
        return na

    @_njit
    def port_newton(Z, w0, v0, g, Is, nvt, vcrit, xmax, dmax, dmin, tau, vtol, settle, stiff, max_iter, stall):
        """Limited Newton on the port equations, every sample (module docstring). ``v0`` (b, K):
        the first linearization voltages. Returns ``(w (b, K), iterations (b,), status (b,))``."""
        b, K = w0.shape
        W = np.empty((b, K))
        iters = np.zeros(b, dtype=np.int64)
        status = np.ones(b, dtype=np.int64)
        zd = np.empty(K)
        for k in range(K):
            zd[k] = Z[k, k]
        D = np.empty(K)
        ic = np.empty(K)
        h = np.empty(K)
        idx = np.empty(K, dtype=np.int64)
        sq = np.empty(K)
        M = np.empty((K, K))
        y = np.empty(K)
        v = np.empty(K)
        w = np.empty(K)
        for s in range(b):
            for k in range(K):
                v[k] = v0[s, k]
                w[k] = v0[s, k]
            best = np.inf
            last = np.inf
            since = 0
            for it in range(max_iter):
                stiffest = 0.0
                for k in range(K):
                    i, d = _diode(v[k], g[k], Is[k], nvt[k], xmax[k])
                    D[k] = d
                    ic[k] = i - d * v[k] if d * zd[k] > tau else i  # passive diodes: i = g phi(v)
                    stiffest = max(stiffest, d * zd[k])
                if not stiffest <= stiff:
                    status[s] = 3
                    break
                for k in range(K):
                    h[k] = w0[s, k]
                for j in range(K):  # h = w0 - Z ic (Z symmetric: rows as columns)
                    cj = ic[j]
                    zj = Z[j]
                    for k in range(K):
                        h[k] -= zj[k] * cj
                na = _capacitance(Z, D, zd, tau, idx, sq, M)
                iters[s] = it + 1
                if na < 0:
                    status[s] = 2
                    break
                for a in range(na):
                    y[a] = sq[a] * h[idx[a]]
                _cholesky_solve(M, na, y)
                for k in range(K):
                    w[k] = h[k]
                for a in range(na):  # w = h - Z_:A S y
                    ya = sq[a] * y[a]
                    za = Z[idx[a]]
                    for k in range(K):
                        w[k] -= za[k] * ya
                step = 0.0
                finite = True
                for k in range(K):
                    if not math.isfinite(w[k]):
                        finite = False
                    step = max(step, abs(w[k] - v[k]) / nvt[k])
                if not finite:
                    status[s] = 2
                    break
                if step <= vtol or (step <= settle and step > 0.5 * last):
                    status[s] = 0  # converged, or no longer contracting at the rounding level
                    break
                last = step
                if step < best:
                    best = step
                    since = 0
                else:
                    since += 1
                    if since > stall:
                        break
                for k in range(K):
                    v[k] = _limit(v[k], w[k], nvt[k], vcrit[k], dmax[k], dmin[k])
            for k in range(K):
                W[s, k] = w[k]
        return W, iters, status

    @_njit
    def port_correction(Z, D, tau, Y):
        """``X_s = S (I + S Z_AA S)^-1 S Y_s`` (zero off ``A``) per sample: ``D`` (b, K),
        ``Y`` (b, K, r). Returns ``(X, ok)``, ``ok`` (b,) False where the matrix is not PD."""
        b, K = D.shape
        r = Y.shape[2]
        X = np.zeros((b, K, r))
        ok = np.ones(b, dtype=np.bool_)
        zd = np.empty(K)
        for k in range(K):
            zd[k] = Z[k, k]
        idx = np.empty(K, dtype=np.int64)
        sq = np.empty(K)
        M = np.empty((K, K))
        y = np.empty(K)
        for s in range(b):
            na = _capacitance(Z, D[s], zd, tau, idx, sq, M)
            if na < 0:
                ok[s] = False
                continue
            for c in range(r):
                for a in range(na):
                    y[a] = sq[a] * Y[s, idx[a], c]
                _cholesky_solve(M, na, y)
                for a in range(na):
                    X[s, idx[a], c] = sq[a] * y[a]
        return X, ok

    @_njit
    def _law(code, w, g, Is, nvt, xmax):
        """``(g phi(w), g phi'(w))``: code 0 a resistor, 1 a diode."""
        if code == 0:
            return g * w, g
        return _diode(w, g, Is, nvt, xmax)

    @_njit
    def nodal_newton(u, s, JF, v0, cold, first, free, fa, fb, ta, hb, code, g, Is, nvt, vcrit, xmax,
                     dmax, dmin, rtol, settled_rtol, rounding, max_iter, stall):
        """:func:`kirchnet.nonlinear._limited_newton` for resistors (code 0) and diodes (code 1)
        on the full network, one sample at a time, dense Cholesky per step (module docstring
        of :mod:`kirchnet.nonlinear`: the same linearization voltages, limiting, stopping rule
        and stall test). ``u`` (b, n): the start, overwritten by the state reached (the best
        iterate where not converged); ``v0`` (b, m) the first linearization voltages;
        ``cold``: after the first solve linearize at ``min(w, first)`` where ``first != 0``;
        ``fa``/``fb`` (m,) the edge ends' free positions (-1 driven), ``ta``/``hb`` their node
        ids. Returns ``(iterations, done, settled)`` per sample."""
        b, n = u.shape
        m = g.shape[0]
        nf = free.shape[0]
        iters = np.zeros(b, dtype=np.int64)
        done = np.zeros(b, dtype=np.bool_)
        settled = np.zeros(b, dtype=np.bool_)
        w = np.empty(m)
        cur = np.empty(m)
        D = np.empty(m)
        ic = np.empty(m)
        v = np.empty(m)
        r = np.empty(nf)
        sc = np.empty(nf)
        rho = np.empty(nf)
        H = np.empty((nf, nf))
        du = np.empty(nf)
        diag = np.empty(nf)
        best_u = np.empty(n)
        for smp in range(b):
            uu = u[smp]
            ss = s[smp]
            for e in range(m):
                v[e] = v0[smp, e]
            best = np.inf
            since = 0
            sett = False
            for it in range(max_iter + 1):
                # the stopping rule at uu (kirchnet.nonlinear._kcl_test)
                uinf = 0.0
                for k in range(n):
                    uinf = max(uinf, abs(uu[k]))
                for f in range(nf):
                    r[f] = -JF[smp, f]
                    sc[f] = abs(JF[smp, f])
                    rho[f] = 0.0
                for e in range(m):
                    we = uu[ta[e]] - uu[hb[e]] + ss[e]
                    i, d = _law(code[e], we, g[e], Is[e], nvt[e], xmax[e])
                    w[e] = we
                    cur[e] = i
                    D[e] = d
                    es = d * (abs(uu[ta[e]]) + abs(uu[hb[e]]) + abs(ss[e]) + uinf)
                    if fa[e] >= 0:
                        r[fa[e]] += i
                        sc[fa[e]] += abs(i)
                        rho[fa[e]] += es
                    if fb[e] >= 0:
                        r[fb[e]] -= i
                        sc[fb[e]] += abs(i)
                        rho[fb[e]] += es
                worst = 0.0
                for f in range(nf):
                    ratio = max(abs(r[f]) - rounding * rho[f], 0.0) / max(sc[f], 1e-300)
                    if not math.isfinite(ratio):
                        ratio = np.inf
                    worst = max(worst, ratio)
                iters[smp] = it
                if worst < best:
                    best = worst
                    since = 0
                    for k in range(n):
                        best_u[k] = uu[k]
                else:
                    since += 1
                if worst <= rtol or (sett and worst <= settled_rtol):
                    done[smp] = True
                    settled[smp] = sett
                    break
                if since > stall or it == max_iter:
                    break
                # linearization voltages and companion currents
                newton = True
                for e in range(m):
                    if it == 0:
                        ve = v[e]
                    elif it == 1 and cold:
                        ve = min(w[e], first[e]) if first[e] != 0.0 else w[e]
                    elif code[e] == 1:
                        ve = _limit(v[e], w[e], nvt[e], vcrit[e], dmax[e], dmin[e])
                    else:
                        ve = w[e]
                    v[e] = ve
                    if ve != w[e]:
                        newton = False
                        i, d = _law(code[e], ve, g[e], Is[e], nvt[e], xmax[e])
                        D[e] = d
                        ic[e] = i + d * (w[e] - ve)
                    else:
                        ic[e] = cur[e]
                # H du = -(B_F ic - J_F)
                for f in range(nf):
                    du[f] = JF[smp, f]
                    for h in range(nf):
                        H[f, h] = 0.0
                for e in range(m):
                    d = D[e]
                    a = fa[e]
                    c = fb[e]
                    if a >= 0:
                        du[a] -= ic[e]
                        H[a, a] += d
                    if c >= 0:
                        du[c] += ic[e]
                        H[c, c] += d
                    if a >= 0 and c >= 0:
                        H[max(a, c), min(a, c)] -= d
                shift = 0.0
                for f in range(nf):
                    shift = max(shift, H[f, f])
                    diag[f] = H[f, f]
                shift = 1e-12 * shift + 1e-300
                for f in range(nf):  # the upper triangle keeps H for a retry with a shift
                    for h in range(f):
                        H[h, f] = H[f, h]
                if not _cholesky(H, nf):
                    for f in range(nf):  # a singular tangent: the shifted matrix
                        for h in range(f):
                            H[f, h] = H[h, f]
                        H[f, f] = diag[f] + shift
                    if not _cholesky(H, nf):
                        break
                _cholesky_solve(H, nf, du)
                step = 0.0
                finite = True
                for f in range(nf):
                    if not math.isfinite(du[f]):
                        finite = False
                    step = max(step, abs(du[f]))
                if not finite:
                    break
                smax = 0.0
                for e in range(m):
                    smax = max(smax, abs(ss[e]))
                sett = newton and step <= rtol * (uinf + smax)
                for f in range(nf):
                    uu[free[f]] += du[f]
            if not done[smp]:
                for k in range(n):
                    uu[k] = best_u[k]
        return iters, done, settled
