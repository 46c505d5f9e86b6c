"""Compiled (numba) kernels of the resistor-diode equilibria (:mod:`kirchnet.nonlinear`,
:mod:`kirchnet.ports`).

Optional like :mod:`kirchnet._jit` (same switch: numba importable and ``KIRCHNET_JIT``
not ``0``); without them :mod:`kirchnet.nonlinear` runs its numpy iteration, which stays
the reference (the tests compare both step for step).

* :func:`nodal_newton`: :func:`kirchnet.nonlinear._limited_newton` for circuits of
  resistors and diodes, one sample at a time: the same linearization voltages, limiting,
  stopping rule (KCL residual per node against its own current scale and rounding floor,
  the settled rule) and stall test, no Python per iteration. Each step solves the tangent
  system either by Woodbury's identity on the port reduction (:mod:`kirchnet.ports`:
  ``H = L_R + B_D D B_D^T``, the envelope Cholesky factor of the resistors' ``L_R``
  computed once, and per step a Cholesky factorization of ``I + S Z_AA S`` over the conducting
  diodes ``A``, ``S = D_A^(1/2)``) or by stamping the tangent Laplacian into its envelope
  in reverse Cuthill-McKee order and factorizing it there (:func:`_envelope_step`; a
  lattice of ``n`` nodes has rows of about ``sqrt(n)`` entries; a shift of ``1e-12 max
  diag`` where singular). ``bench_nonlinear.py``'s 96-node lattice at batch 1: about 1 ms
  for 12 iterations where the numpy path takes 4.8 ms;
* :func:`port_correction`: ``S (I + S Z_AA S)^-1 S Y_A`` per sample, the Woodbury term of
  a tangent solve ``H^-1 R = L_R^-1 R - P S (I + S Z S)^-1 S P^T R``;
* :func:`lanes_newton` and :func:`lanes_solve`: the same iteration, and tangent solves,
  :data:`LANES` samples side by side, their tangents factorized together on the sparse
  factor's fixed pattern (:func:`_lane_factor`: an up-looking Cholesky with the lanes
  innermost; :class:`kirchnet.assembly.FactorPattern`). Its row operations are LLVM
  vector code on ``<8 x double>`` (numba intrinsics :func:`_axpy8`, :func:`_dot8`,
  :func:`_pivot8`, :func:`_add8`: numba runs LLVM without its superword vectorizer, which
  left eight scalar multiply-adds) on rows aligned to cache lines (:func:`_lane_rows`):
  3.5x per factorization against the scalar code at 1.4e5 multiply-adds.

The diodes left out of ``A`` (``D_k Z_kk <= tau``: reverse-biased) are left out of the
step's matrix, not of the residual: their neglected coupling slows Newton's quadratic
convergence by at most a factor ``tau`` per step. ``I + S Z S`` is SPD with eigenvalues
>= 1 (``Z = B_D^T L_R^-1 B_D`` is positive semidefinite).
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import AVAILABLE, enabled

__all__ = ["AVAILABLE", "enabled", "port_correction", "nodal_newton", "envelope_factor", "envelope_solve_rows",
           "evaluate", "evaluate_batch", "companion_rhs", "lanes_newton", "lanes_solve", "LANES"]

if AVAILABLE:
    import numba as _nb

    from ._jit import _cholesky, _cholesky_solve

    _njit = _nb.njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})

    @_njit
    def _diode(v, g, Is, nvt, xmax):
        """``(g phi(v), g phi'(v))`` of :class:`kirchnet.elements.Diode` (linear above ``xmax n Vt``)."""
        x = v / nvt
        if x > xmax:
            e = math.exp(xmax)
            return g * Is * (math.expm1(xmax) + e * (x - xmax)), g * Is / nvt * e
        e = math.exp(x)  # one exponential: e - 1 is exact to an ulp of e where |x| >= 1/2
        return g * Is * (e - 1.0 if abs(x) >= 0.5 else math.expm1(x)), g * Is / nvt * e

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
    def _stamp(A, first, rowptr, D, fa, fb):
        """``A <- B_F diag(D) B_F^T`` in envelope storage (row ``i`` from column ``first[i]``
        to ``i`` at ``rowptr[i]``; ``fa``/``fb`` the edges' ends in the envelope's order)."""
        for q in range(A.shape[0]):
            A[q] = 0.0
        for e in range(D.shape[0]):
            d = D[e]
            a = fa[e]
            c = fb[e]
            if a >= 0:
                A[rowptr[a + 1] - 1] += d
            if c >= 0:
                A[rowptr[c + 1] - 1] += d
            if a >= 0 and c >= 0:
                i, j = max(a, c), min(a, c)
                A[rowptr[i] + j - first[i]] -= d

    @_njit
    def envelope_factor(D, fa, fb, first, rowptr):
        """``(ok, C)``: the envelope Cholesky factor of ``B_F diag(D) B_F^T``
        (:func:`_stamp`), ``ok`` False where it is not positive definite (no shift)."""
        Lf = np.empty(rowptr[-1])
        _stamp(Lf, first, rowptr, D, fa, fb)
        return _envelope_cholesky(Lf, first, rowptr), Lf

    @_njit
    def envelope_solve_rows(Lf, first, rowptr, X):
        """Every row ``x`` of ``X`` (q, n) <- ``(C C^T)^-1 x`` (:func:`_envelope_solve`)."""
        for q in range(X.shape[0]):
            _envelope_solve(Lf, first, rowptr, X[q])

    @_njit
    def _envelope_step(A, Lf, first, rowptr, du, J, ic, D, fa, fb):
        """``du <- H^-1 (J - B_F ic)``, ``H = B_F diag(D) B_F^T`` stamped into its envelope
        (:func:`_stamp`; the unknowns in reverse Cuthill-McKee order, so the envelope is
        narrow on lattices) and factorized in place by Cholesky (with a shift ``1e-12 max
        diag`` where singular); False if even that fails."""
        nf = du.shape[0]
        _rhs(du, J, ic, fa, fb)
        _stamp(A, first, rowptr, D, fa, fb)
        shift = 0.0
        for f in range(nf):
            shift = max(shift, A[rowptr[f + 1] - 1])
        for attempt in range(2):
            for q in range(A.shape[0]):
                Lf[q] = A[q]
            if attempt:  # a singular tangent: the shifted matrix
                for f in range(nf):
                    Lf[rowptr[f + 1] - 1] += 1e-12 * shift + 1e-300
            if _envelope_cholesky(Lf, first, rowptr):
                _envelope_solve(Lf, first, rowptr, du)
                return True
        return False

    @_njit
    def _rhs(du, J, ic, fa, fb):
        """``du <- J - B_F ic`` (the companion currents' KCL residual, negated)."""
        for f in range(du.shape[0]):
            du[f] = J[f]
        for e in range(ic.shape[0]):
            if fa[e] >= 0:
                du[fa[e]] -= ic[e]
            if fb[e] >= 0:
                du[fb[e]] += ic[e]

    @_njit
    def _woodbury_factor(Z, D, dk, zd, tau, DK, idx, sq, M):
        """The capacitance factorization of a Woodbury step at tangent weights ``D`` (m,):
        ``DK <- D[dk]``, then :func:`_capacitance` (``na``, -1 if not positive definite)."""
        for k in range(dk.shape[0]):
            DK[k] = D[dk[k]]
        return _capacitance(Z, DK, zd, tau, idx, sq, M)

    @_njit
    def _woodbury_solve(LR, firstR, rowptrR, PT, dk, idx, sq, M, na, y, fa, fb, x):
        """``x <- H^-1 x``, ``H = L_R + B_A S^2 B_A^T`` over the ``na`` diodes ``A =
        dk[idx[:na]]`` of the capacitance factorization in ``M`` (:func:`_woodbury_factor`;
        ``LR``: ``L_R``'s envelope Cholesky factor, :func:`_envelope_cholesky`; ``PT =
        (L_R^-1 B_D)^T``; ``y`` workspace): ``x <- L_R^-1 x - P_A S (I + S Z_AA S)^-1 S
        B_A^T L_R^-1 x``."""
        nf = x.shape[0]
        _envelope_solve(LR, firstR, rowptrR, x)  # L_R^-1 x
        for a in range(na):  # S B_A^T L_R^-1 x
            e = dk[idx[a]]
            t = 0.0
            if fa[e] >= 0:
                t += x[fa[e]]
            if fb[e] >= 0:
                t -= x[fb[e]]
            y[a] = sq[a] * t
        _cholesky_solve(M, na, y)
        for a in range(na):  # - P S y
            ya = sq[a] * y[a]
            pk = PT[idx[a]]
            for f in range(nf):
                x[f] -= pk[f] * ya

    @_njit
    def _drifted(D, Dfac, chord):
        """Some weight moved more than ``chord`` (relative) from the factorized ``Dfac``."""
        for e in range(D.shape[0]):
            if abs(D[e] - Dfac[e]) > chord * Dfac[e]:
                return True
        return False

    @_njit
    def _stiffness(D, dk, zd):
        """``max_k D_dk Z_kk``: ``I + S Z S`` has about this condition number, and a Woodbury
        solve loses about ``log10`` of it digits."""
        out = 0.0
        for k in range(dk.shape[0]):
            out = max(out, D[dk[k]] * zd[k])
        return out

    @_njit
    def _envelope_estimate(A, Lf, first, rowptr, r, zero, D, Dfac, factored, chord, fa, fb, out):
        """``out <- |H^-1 r|`` at tangent weights ``D``: with the last factorization (built
        from ``Dfac``) inflated by ``1 / (1 - chord)`` while no weight drifted more than
        ``chord`` (as :func:`kirchnet.nonlinear._newton_estimate`), else a new one; NaN where
        the tangent cannot be factorized."""
        reuse = factored and not _drifted(D, Dfac, chord)
        for f in range(out.shape[0]):
            out[f] = r[f]
        if reuse:
            _envelope_solve(Lf, first, rowptr, out)
            for f in range(out.shape[0]):
                out[f] = abs(out[f]) / (1.0 - chord)
        elif _envelope_step(A, Lf, first, rowptr, out, r, zero, D, fa, fb):
            for f in range(out.shape[0]):
                out[f] = abs(out[f])
        else:
            for f in range(out.shape[0]):
                out[f] = np.nan

    @_njit
    def _envelope_cholesky(Lf, first, rowptr):
        """In-place Cholesky of an envelope-stored SPD matrix (:func:`_envelope_step`); the
        factor's diagonal is stored as its reciprocals (the solves multiply: a division
        costs about ten multiply-adds, and a lattice row holds only a few)."""
        n = first.shape[0]
        for i in range(n):
            fi, ri = first[i], rowptr[i]
            for j in range(fi, i + 1):
                fj, rj = first[j], rowptr[j]
                lo = max(fi, fj)
                t = Lf[ri + j - fi]
                for k in range(lo, j):
                    t -= Lf[ri + k - fi] * Lf[rj + k - fj]
                if j < i:
                    Lf[ri + j - fi] = t * Lf[rj + j - fj]
                elif t > 0.0:
                    Lf[ri + i - fi] = 1.0 / math.sqrt(t)
                else:
                    return False
        return True

    @_njit
    def _envelope_solve(Lf, first, rowptr, x):
        """``x <- (C C^T)^-1 x`` with the envelope factor ``C`` of :func:`_envelope_cholesky`
        (reciprocal diagonal)."""
        n = first.shape[0]
        for i in range(n):
            fi, ri = first[i], rowptr[i]
            t = x[i]
            for k in range(fi, i):
                t -= Lf[ri + k - fi] * x[k]
            x[i] = t * Lf[ri + i - fi]
        for i in range(n - 1, -1, -1):
            fi, ri = first[i], rowptr[i]
            xi = x[i] * Lf[ri + i - fi]
            x[i] = xi
            for k in range(fi, i):
                x[k] -= Lf[ri + k - fi] * xi

    @_njit
    def _law(code, w, g, Is, nvt, xmax):
        """``(g phi(w), g phi'(w))``: code 0 a resistor, 1 a diode."""
        if code == 0:
            return g * w, g
        return _diode(w, g, Is, nvt, xmax)

    @_njit
    def evaluate(uu, ss, JF, ta, hb, fa, fb, code, g, Is, nvt, xmax, rounding, w, cur, D, r, sc, rho):
        """The stopping rule's quantities at potentials ``uu`` (n,) with series sources ``ss``
        (m,) and injected currents ``JF`` (nf,) (:func:`kirchnet.nonlinear._kcl_test`): fills
        the edge voltages ``w``, currents ``cur = g phi(w)``, tangent weights ``D = g phi'(w)``
        and the KCL residual ``r = B_F cur - J_F`` (``sc``, ``rho`` workspace: the nodes'
        current scales and rounding levels); returns the worst ratio ``max(|r| - rounding
        rho, 0) / sc`` (inf where not finite) and ``max |uu|``."""
        n, m, nf = uu.shape[0], w.shape[0], r.shape[0]
        uinf = 0.0
        for k in range(n):
            uinf = max(uinf, abs(uu[k]))
        for f in range(nf):
            r[f] = -JF[f]
            sc[f] = abs(JF[f])
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
        return worst, uinf

    @_njit
    def evaluate_batch(U, S, JF, ta, hb, fa, fb, code, g, Is, nvt, xmax, rounding, R, D):
        """:func:`evaluate` for every sample: ``U`` (b, n), ``S`` (b, m), ``JF`` (b, nf);
        fills the residuals ``R`` (b, nf) and tangent weights ``D`` (b, m), returns the
        worst ratio per sample (b,)."""
        b, m, nf = U.shape[0], g.shape[0], JF.shape[1]
        w = np.empty(m)
        cur = np.empty(m)
        sc = np.empty(nf)
        rho = np.empty(nf)
        worst = np.empty(b)
        for smp in range(b):
            worst[smp] = evaluate(U[smp], S[smp], JF[smp], ta, hb, fa, fb, code, g, Is, nvt, xmax, rounding,
                                  w, cur, D[smp], R[smp], sc, rho)[0]
        return worst

    @_njit
    def companion(it, cold, first, v, w, cur, D, ic, code, g, Is, nvt, vcrit, xmax, dmax, dmin):
        """Iteration ``it``'s linearization voltages ``v`` (m,; in place: ``v`` itself at the
        first, ``min(w, first)`` where ``first != 0`` after a cold start's first solve, then
        :func:`_limit` on diodes, ``w`` elsewhere) and the companion model there: ``D`` (the
        tangent weights at ``w`` from :func:`evaluate`) and ``ic`` become ``g phi'(v)`` and
        ``g phi(v) + g phi'(v) (w - v)`` where ``v != w``. Returns True where no voltage
        moved (a plain Newton step)."""
        newton = True
        for e in range(w.shape[0]):
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
        return newton

    @_njit
    def companion_rhs(it, cold, first, v, w, cur, D, ic, code, g, Is, nvt, vcrit, xmax, dmax, dmin, JF,
                      fa, fb, rhs):
        """:func:`companion`, then ``rhs <- J_F - B_F ic`` (a Newton step solves ``H du = rhs``
        with ``H = B_F diag(D) B_F^T``); returns :func:`companion`'s flag."""
        newton = companion(it, cold, first, v, w, cur, D, ic, code, g, Is, nvt, vcrit, xmax, dmax, dmin)
        _rhs(rhs, JF, ic, fa, fb)
        return newton

    @_njit
    def _best_iterate(worst, best, since, u, best_u):
        """The stall test's bookkeeping after an iterate whose worst KCL ratio is ``worst``:
        ``(best, since)``, and ``best_u <- u`` where it is the best so far."""
        if worst < best:
            for k in range(u.shape[0]):
                best_u[k] = u[k]
            return worst, 0
        return best, since + 1

    @_njit
    def _step_size(du):
        """``max |du|`` of a Newton step, inf where an entry is not finite."""
        step = 0.0
        for f in range(du.shape[0]):
            if not math.isfinite(du[f]):
                return np.inf
            step = max(step, abs(du[f]))
        return step

    @_njit
    def nodal_newton(u, s, JF, v0, cold, first, free, fa, fb, ta, hb, code, g, Is, nvt, vcrit, xmax,
                     dmax, dmin, rtol, settled_rtol, rounding, max_iter, stall, first_env, rowptr, chord, LR, firstR, rowptrR, PT, Z, dk, tau, stiff_max, stiff_full, faT, fbT, pmap):
        """:func:`kirchnet.nonlinear._limited_newton` for resistors (code 0) and diodes (code 1)
        on the full network, one sample at a time (module docstring of
        :mod:`kirchnet.nonlinear`: the same linearization voltages, limiting, stopping rule
        and stall test). ``u`` (b, n): the start, overwritten by the state reached (the best
        iterate where not converged); ``v0`` (b, m) the first linearization voltages;
        ``cold``: after the first solve linearize at ``min(w, first)`` where ``first != 0``;
        ``fa``/``fb`` (m,) the edge ends' free positions (-1 driven), ``ta``/``hb`` their node
        ids. ``LR`` empty: each step stamps the tangent into its envelope (``first_env``,
        ``rowptr``: :func:`_envelope_step`; the free positions in ``fa``/``fb``/``free``/``JF``
        in that order) and factorizes it; ``LR`` not empty: it is the envelope Cholesky
        factor of the resistors' ``L_R`` (``firstR``, ``rowptrR``; the free positions in its
        order), with ``PT = P^T``
        (K, nf), ``Z`` of the port reduction and ``dk`` (K,) the diode edges, and each step
        is solved by Woodbury's identity ``H^-1 r = L_R^-1 r - P S (I + S Z_AA S)^-1 S B_D^T
        L_R^-1 r`` over the diodes with ``D_k Z_kk > tau`` (:func:`_woodbury_solve`; the
        increment form, whose rounding is the full network's: a stiff diode loop, which the
        port equations ``w = w0 - Z i`` cannot resolve, is solved here). ``chord > 0``: a
        sample reuses its last factorization (envelope or capacitance) while every tangent
        weight is within ``chord`` of the one it was built from (a chord step, as the numpy
        iteration on sparse backends). A Woodbury step whose diodes reach ``D_k Z_kk >
        stiff_max`` (a stiff loop of forward diodes; ``I + S Z S`` then has about that
        condition number) is not accurate to rounding: it never settles the stopping rule,
        and the error estimate at such a state is solved on the full tangent's envelope
        (``first_env``, ``rowptr``; ``faT``/``fbT`` the edge ends in its order, ``pmap`` (nf,)
        the position in ``free``'s order of each of its positions), as is every step whose
        diodes reach ``stiff_full`` (a diode volts forward, e.g. a warm start from another
        sample's state: Woodbury's correction would cancel ``L_R^-1 r`` to nothing).
        Returns ``(iterations, done, settled, estimate)`` per
        sample (``estimate`` (b, nf): Newton's error estimate ``|H^-1 r|`` at each converged
        state, NaN elsewhere).
        """
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
        A = np.empty(rowptr[-1])
        Lf = np.empty(rowptr[-1])
        du = np.empty(nf)
        best_u = np.empty(n)
        woodbury = LR.shape[0] > 0
        K = dk.shape[0]
        zd = np.empty(K)
        for k in range(K):
            zd[k] = Z[k, k]
        DK = np.empty(K)
        idx = np.empty(K, dtype=np.int64)
        sq = np.empty(K)
        M = np.empty((K, K))
        y = np.empty(K)
        Dfac = np.empty(m)
        zero = np.zeros(m)
        JT = np.empty(nf)  # the tangent envelope's order (stiff Woodbury steps)
        duT = np.empty(nf)
        est = np.full((b, nf), np.nan)
        for smp in range(b):
            uu = u[smp]
            ss = s[smp]
            smax = 0.0  # the sample's largest series source (its voltage scale with max |u|)
            for e in range(m):
                v[e] = v0[smp, e]
                smax = max(smax, abs(ss[e]))
            best = np.inf
            since = 0
            sett = False
            factored = False
            na = -1
            for it in range(max_iter + 1):
                worst, uinf = evaluate(uu, ss, JF[smp], ta, hb, fa, fb, code, g, Is, nvt, xmax, rounding,
                                       w, cur, D, r, sc, rho)
                iters[smp] = it
                best, since = _best_iterate(worst, best, since, uu, best_u)
                if worst <= rtol or (sett and worst <= settled_rtol):
                    done[smp] = True
                    settled[smp] = sett
                    # Newton's error estimate at the state, |H^-1 r| (NaN: not computed)
                    if not woodbury:
                        _envelope_estimate(A, Lf, first_env, rowptr, r, zero, D, Dfac, factored, chord,
                                           fa, fb, est[smp])
                    elif _stiffness(D, dk, zd) > stiff_max:  # on the full tangent (a new factorization)
                        for q in range(nf):
                            JT[q] = r[pmap[q]]
                        _envelope_estimate(A, Lf, first_env, rowptr, JT, zero, D, Dfac, False, chord,
                                           faT, fbT, duT)
                        for q in range(nf):
                            est[smp, pmap[q]] = duT[q]
                    else:
                        na = _woodbury_factor(Z, D, dk, zd, tau, DK, idx, sq, M)
                        if na >= 0:
                            est[smp] = r
                            _woodbury_solve(LR, firstR, rowptrR, PT, dk, idx, sq, M, na, y, fa, fb, est[smp])
                            est[smp] = np.abs(est[smp])
                    break
                if since > stall or it == max_iter:
                    break
                newton = companion(it, cold, first, v, w, cur, D, ic, code, g, Is, nvt, vcrit, xmax, dmax, dmin)
                # H du = -(B_F ic - J_F)
                stiff = _stiffness(D, dk, zd) if woodbury else 0.0
                if woodbury and stiff > stiff_full:  # the full tangent's envelope step
                    for q in range(nf):
                        JT[q] = JF[smp, pmap[q]]
                    if not _envelope_step(A, Lf, first_env, rowptr, duT, JT, ic, D, faT, fbT):
                        break
                    for q in range(nf):
                        du[pmap[q]] = duT[q]
                    factored = False  # the next Woodbury step factorizes its capacitance matrix
                elif woodbury:
                    for k in range(K):
                        DK[k] = D[dk[k]]
                    # a chord step on the last capacitance factorization while no weight drifted
                    reuse = factored and not _drifted(DK, Dfac[:K], chord)
                    if not reuse:
                        na = _capacitance(Z, DK, zd, tau, idx, sq, M)
                        if na < 0:
                            break
                    _rhs(du, JF[smp], ic, fa, fb)
                    _woodbury_solve(LR, firstR, rowptrR, PT, dk, idx, sq, M, na, y, fa, fb, du)
                    if stiff > stiff_max:  # not accurate enough to settle the rule
                        newton = False
                    if not reuse:
                        factored = chord > 0.0
                        Dfac[:K] = DK
                else:
                    # a chord step on the last factorization while no weight drifted
                    if factored and not _drifted(D, Dfac, chord):
                        _rhs(du, JF[smp], ic, fa, fb)
                        _envelope_solve(Lf, first_env, rowptr, du)
                    else:
                        if not _envelope_step(A, Lf, first_env, rowptr, du, JF[smp], ic, D, fa, fb):
                            break
                        factored = chord > 0.0
                        Dfac[:] = D
                step = _step_size(du)
                if not math.isfinite(step):
                    break
                sett = newton and step <= rtol * (uinf + smax)
                for f in range(nf):
                    uu[free[f]] += du[f]
            if not done[smp]:
                for k in range(n):
                    uu[k] = best_u[k]
        return iters, done, settled, est

#: samples :func:`lanes_newton` solves side by side (the innermost, vectorized dimension of
#: its factorizations: one AVX-512 register of doubles, two AVX2 ones; the row operations
#: :func:`_axpy8` .. :func:`_pivot8` take eight multipliers: 8 is fixed)
LANES = 8

if AVAILABLE:

    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.extending import intrinsic as _intrinsic

    # the lanes' row operations as LLVM vector code on <LANES x double> (numba leaves LLVM's
    # superword vectorizer off, and eight scalar statements stay scalar: 1.8x per
    # factorization at 1.4e5 multiply-adds, 3.5x with rows on cache lines, _lane_rows); the
    # arrays C-contiguous with LANES columns
    _VEC = _ir.VectorType(_ir.DoubleType(), LANES)
    _TUPLE = _nb.types.UniTuple(_nb.types.float64, LANES)

    def _contiguous(*arrays):
        """(typing) The row operations load a row as one vector: C-contiguous arrays only."""
        for a in arrays:
            if a.layout != "C":
                raise _nb.core.errors.TypingError(f"lane row operation on a non-contiguous array ({a})")

    def _row(context, builder, aryty, ary, index=None):
        """``&A[index, 0]`` (``&A[0]`` for a 1-D ``A``) as a pointer to a vector."""
        zero = _ir.Constant(_ir.IntType(64), 0)
        ary = context.make_array(aryty)(context, builder, ary)
        ptr = _cgutils.get_item_pointer(context, builder, aryty, ary, [zero] if index is None else [index, zero])
        return builder.bitcast(ptr, _VEC.as_pointer())

    def _vector(builder, values):
        v = _ir.Constant(_VEC, _ir.Undefined)
        for ln, value in enumerate(values):
            v = builder.insert_element(v, value, _ir.Constant(_ir.IntType(32), ln))
        return v

    def _tuple(context, builder, v):
        return context.make_tuple(builder, _TUPLE, [builder.extract_element(v, _ir.Constant(_ir.IntType(32), ln))
                                                    for ln in range(LANES)])

    def _mul_sub(builder, x, a, b):
        """``x - a b`` (contracted to a fused multiply-add)."""
        return builder.fsub(x, builder.fmul(a, b, flags=("contract",)), flags=("contract",))

    @_intrinsic
    def _axpy8(typingctx, X, i, Lx, p, y0, y1, y2, y3, y4, y5, y6, y7):
        """``X[i, l] -= Lx[p, l] y_l`` for the eight lanes (one vector multiply-add)."""
        _contiguous(X, Lx)

        def codegen(context, builder, sig, args):
            px = _row(context, builder, sig.args[0], args[0], args[1])
            lv = builder.load(_row(context, builder, sig.args[2], args[2], args[3]), align=8)
            builder.store(_mul_sub(builder, builder.load(px, align=8), lv, _vector(builder, args[4:])), px, align=8)
            return context.get_dummy_value()

        return _nb.types.void(X, i, Lx, p, y0, y1, y2, y3, y4, y5, y6, y7), codegen

    @_intrinsic
    def _dot8(typingctx, X, i, Lx, p, t0, t1, t2, t3, t4, t5, t6, t7):
        """``t_l - Lx[p, l] X[i, l]`` for the eight lanes."""
        _contiguous(X, Lx)

        def codegen(context, builder, sig, args):
            xv = builder.load(_row(context, builder, sig.args[0], args[0], args[1]), align=8)
            lv = builder.load(_row(context, builder, sig.args[2], args[2], args[3]), align=8)
            return _tuple(context, builder, _mul_sub(builder, _vector(builder, args[4:]), lv, xv))

        return _TUPLE(X, i, Lx, p, t0, t1, t2, t3, t4, t5, t6, t7), codegen

    @_intrinsic
    def _add8(typingctx, A, i, B, j, c):
        """``A[i, l] += c B[j, l]`` for the eight lanes."""
        _contiguous(A, B)

        def codegen(context, builder, sig, args):
            pa = _row(context, builder, sig.args[0], args[0], args[1])
            bv = builder.load(_row(context, builder, sig.args[2], args[2], args[3]), align=8)
            cv = _vector(builder, [args[4]] * LANES)
            builder.store(_mul_sub(builder, builder.load(pa, align=8), builder.fneg(cv), bv), pa, align=8)
            return context.get_dummy_value()

        return _nb.types.void(A, i, B, j, c), codegen

    @_intrinsic
    def _pivot8(typingctx, x, j, Lx, dj, pk, d):
        """An entry of the factor in the eight lanes: ``l = x[j] Lx[dj]`` (the row's solved
        value times the column's reciprocal pivot), ``x[j] <- 0``, ``Lx[pk] <- l``, ``d -= l^2``;
        returns ``l``."""
        _contiguous(x, Lx, d)

        def codegen(context, builder, sig, args):
            px = _row(context, builder, sig.args[0], args[0], args[1])
            lv = builder.fmul(builder.load(px, align=8),
                              builder.load(_row(context, builder, sig.args[2], args[2], args[3]), align=8))
            builder.store(_ir.Constant(_VEC, [0.0] * LANES), px, align=8)
            builder.store(lv, _row(context, builder, sig.args[2], args[2], args[4]), align=8)
            pd = _row(context, builder, sig.args[5], args[5])
            builder.store(_mul_sub(builder, builder.load(pd, align=8), lv, lv), pd, align=8)
            return _tuple(context, builder, lv)

        return _TUPLE(x, j, Lx, dj, pk, d), codegen

    @_njit
    def _lane_rows(rows):
        """An uninitialized ``(rows, LANES)`` array whose rows start on 64-byte boundaries:
        a row is one cache line (a row across two costs the factorization 1.6x)."""
        buf = np.empty((rows + 1) * LANES)
        off = ((-buf.ctypes.data) % 64) // 8
        return buf[off:off + rows * LANES].reshape((rows, LANES))

    @_njit
    def _lane_factor(Lx, colptr, rowidx, rowptr, rowcol, rowpos, kptr, kedge, klo, fa, fb, D, shift, dg, x, d,
                     bad):
        """Up-looking Cholesky (Davis, *Direct Methods for Sparse Linear Systems*, 4.8) of every
        lane's tangent ``H = B_F diag(D) B_F^T + diag(shift)`` (``D`` (m, LANES)) into ``Lx``
        (lnz, LANES) on the factor's fixed pattern (:class:`kirchnet.assembly.FactorPattern`,
        the unknowns in its fill-reducing order; the lanes innermost: the index arithmetic
        of the sparse rows is paid once for all lanes and the multiply-adds are vector
        operations). Row ``k``: ``H[:k, k]`` (the edges whose later end is ``k``) scattered
        into ``x``, then ``L[k, :k]`` by the sparse triangular solve over the row's pattern in
        ascending order; the diagonal is stored as its reciprocal. ``bad[l]`` True where lane
        ``l`` is not positive definite (its pivots are then set to 1)."""
        n = colptr.shape[0] - 1
        for ln in range(LANES):
            bad[ln] = False
        for j in range(n):
            for ln in range(LANES):
                dg[j, ln] = shift[ln]
                x[j, ln] = 0.0
        for e in range(D.shape[0]):
            a = fa[e]
            c = fb[e]
            if a >= 0:
                _add8(dg, a, D, e, 1.0)
            if c >= 0:
                _add8(dg, c, D, e, 1.0)
        for k in range(n):
            for q in range(kptr[k], kptr[k + 1]):
                _add8(x, klo[q], D, kedge[q], -1.0)
            for ln in range(LANES):
                d[ln] = dg[k, ln]
            for r in range(rowptr[k], rowptr[k + 1]):
                j = rowcol[r]
                pk = rowpos[r]
                dj = colptr[j]
                k0, k1, k2, k3, k4, k5, k6, k7 = _pivot8(x, j, Lx, dj, pk, d)
                for p in range(dj + 1, pk):  # the hot loop
                    _axpy8(x, rowidx[p], Lx, p, k0, k1, k2, k3, k4, k5, k6, k7)
            dk = colptr[k]
            for ln in range(LANES):
                if d[ln] > 0.0:
                    Lx[dk, ln] = 1.0 / math.sqrt(d[ln])
                else:
                    Lx[dk, ln] = 1.0
                    bad[ln] = True

    @_njit
    def _lane_solve(Lx, colptr, rowidx, X):
        """``X`` (n, LANES) <- ``H^-1 X`` per lane with the factor of :func:`_lane_factor`
        (:func:`_axpy8`, :func:`_dot8`)."""
        n = colptr.shape[0] - 1
        for j in range(n):
            dj = colptr[j]
            for ln in range(LANES):
                X[j, ln] *= Lx[dj, ln]
            y0, y1, y2, y3, y4, y5, y6, y7 = X[j, 0], X[j, 1], X[j, 2], X[j, 3], X[j, 4], X[j, 5], X[j, 6], X[j, 7]
            for p in range(dj + 1, colptr[j + 1]):
                _axpy8(X, rowidx[p], Lx, p, y0, y1, y2, y3, y4, y5, y6, y7)
        for j in range(n - 1, -1, -1):
            dj = colptr[j]
            t0, t1, t2, t3, t4, t5, t6, t7 = X[j, 0], X[j, 1], X[j, 2], X[j, 3], X[j, 4], X[j, 5], X[j, 6], X[j, 7]
            for p in range(dj + 1, colptr[j + 1]):
                t0, t1, t2, t3, t4, t5, t6, t7 = _dot8(X, rowidx[p], Lx, p, t0, t1, t2, t3, t4, t5, t6, t7)
            X[j, 0], X[j, 1], X[j, 2], X[j, 3] = t0 * Lx[dj, 0], t1 * Lx[dj, 1], t2 * Lx[dj, 2], t3 * Lx[dj, 3]
            X[j, 4], X[j, 5], X[j, 6], X[j, 7] = t4 * Lx[dj, 4], t5 * Lx[dj, 5], t6 * Lx[dj, 6], t7 * Lx[dj, 7]

    @_njit
    def lanes_newton(u, s, JF, v0, cold, first, free, fa, fb, ta, hb, code, g, Is, nvt, vcrit, xmax,
                     dmax, dmin, rtol, settled_rtol, rounding, max_iter, stall, chord, colptr, rowidx, rowptr,
                     rowcol, rowpos, kptr, kedge, klo):
        """:func:`nodal_newton` with every step a new factorization of the full tangent (no
        chord steps, no port reduction; same arguments up to ``stall``, same result), on the
        tangent's sparse Cholesky factor in a fill-reducing order (``colptr`` .. ``klo``:
        :class:`kirchnet.assembly.FactorPattern`; the free positions in ``fa``/``fb``/
        ``free``/``JF`` in its order) and :data:`LANES` samples at a time: each lane holds a
        sample at its own iteration (:func:`evaluate` and :func:`companion` per lane: the
        same linearization, limiting, stopping rule, stall test and best iterate), and the
        lanes' tangents are factorized and solved together (:func:`_lane_factor`). A lane
        whose sample stops takes the next one. A lane whose tangent is not positive definite
        is factorized again with the shift ``1e-12 max diag`` (as :func:`_envelope_step`);
        where that fails too, its sample stops (not converged). The error estimate at a
        converged state, ``|H^-1 r|``: with the lane's last factorization, inflated by ``1 /
        (1 - chord)``, where no tangent weight drifted more than ``chord`` from it (the lane
        then takes its next sample in the same round; as :func:`_envelope_estimate`), else
        with a factorization of the tangent at the state, the lane's last."""
        b, n = u.shape
        m = g.shape[0]
        nf = free.shape[0]
        iters = np.zeros(b, dtype=np.int64)
        done = np.zeros(b, dtype=np.bool_)
        settled = np.zeros(b, dtype=np.bool_)
        est = np.full((b, nf), np.nan)
        U = np.zeros((LANES, n))
        best_u = np.zeros((LANES, n))
        SS = np.zeros((LANES, m))
        V = np.zeros((LANES, m))
        W = np.zeros((LANES, m))
        CUR = np.zeros((LANES, m))
        D = np.zeros((LANES, m))
        IC = np.zeros((LANES, m))
        JFL = np.zeros((LANES, nf))
        R = np.zeros((LANES, nf))
        SC = np.zeros((LANES, nf))
        RHO = np.zeros((LANES, nf))
        X = _lane_rows(nf)  # the lanes innermost: the factorization's layout
        DT = _lane_rows(m)
        RHS = np.zeros((LANES, nf))
        Lx = _lane_rows(colptr[-1])
        dg = _lane_rows(nf)
        xw = _lane_rows(nf)
        t = _lane_rows(1)[0]
        bad = np.zeros(LANES, dtype=np.bool_)
        shift = np.zeros(LANES)
        lane = np.full(LANES, -1)  # the sample in each lane (-1: none)
        it = np.zeros(LANES, dtype=np.int64)
        best = np.zeros(LANES)
        since = np.zeros(LANES, dtype=np.int64)
        sett = np.zeros(LANES, dtype=np.bool_)
        newton = np.zeros(LANES, dtype=np.bool_)
        smax = np.zeros(LANES)
        uinf = np.zeros(LANES)
        mode = np.zeros(LANES, dtype=np.int64)  # 0 idle, 1 a Newton step, 2 the error estimate
        factored = np.zeros(LANES, dtype=np.bool_)  # Lx[:, ln] (from DT[:, ln]) is the lane's sample's
        nxt = 0
        while True:
            for ln in range(LANES):
                mode[ln] = 0
                while mode[ln] == 0:  # until the lane has a step to take or no sample is left
                    if lane[ln] < 0:
                        if nxt == b:
                            break
                        U[ln] = u[nxt]  # an idle lane takes the next sample
                        SS[ln] = s[nxt]
                        V[ln] = v0[nxt]
                        JFL[ln] = JF[nxt]
                        smax[ln] = np.max(np.abs(s[nxt])) if m else 0.0
                        lane[ln], it[ln], best[ln], since[ln], sett[ln] = nxt, 0, np.inf, 0, False
                        factored[ln] = False
                        nxt += 1
                    smp = lane[ln]
                    worst, ui = evaluate(U[ln], SS[ln], JFL[ln], ta, hb, fa, fb, code, g, Is, nvt, xmax,
                                         rounding, W[ln], CUR[ln], D[ln], R[ln], SC[ln], RHO[ln])
                    uinf[ln] = ui
                    iters[smp] = it[ln]
                    best[ln], since[ln] = _best_iterate(worst, best[ln], since[ln], U[ln], best_u[ln])
                    if worst <= rtol or (sett[ln] and worst <= settled_rtol):
                        done[smp] = True
                        settled[smp] = sett[ln]
                        _rhs(RHS[ln], JFL[ln], CUR[ln], fa, fb)  # |H^-1 r|: the right-hand side J - B_F i = -r
                        if factored[ln] and chord > 0.0 and not _drifted(D[ln], DT[:, ln], chord):
                            _lane_solve_one(Lx, colptr, rowidx, ln, RHS[ln])  # the last factorization
                            for f in range(nf):
                                est[smp, f] = abs(RHS[ln, f]) / (1.0 - chord)
                            u[smp] = U[ln]
                            lane[ln] = -1
                        else:
                            mode[ln] = 2  # with the tangent at the state, in this round
                    elif since[ln] > stall or it[ln] == max_iter:
                        u[smp] = best_u[ln]
                        lane[ln] = -1
                    else:
                        newton[ln] = companion(it[ln], cold, first, V[ln], W[ln], CUR[ln], D[ln], IC[ln],
                                               code, g, Is, nvt, vcrit, xmax, dmax, dmin)
                        _rhs(RHS[ln], JFL[ln], IC[ln], fa, fb)
                        mode[ln] = 1
            if not np.any(mode != 0):  # (a lane without a step has no sample left: all done)
                break
            for ln in range(LANES):
                shift[ln] = 0.0
                for e in range(m):  # an idle lane: unit weights (a connected Laplacian)
                    DT[e, ln] = D[ln, e] if mode[ln] != 0 else 1.0
            for attempt in range(2):
                _lane_factor(Lx, colptr, rowidx, rowptr, rowcol, rowpos, kptr, kedge, klo, fa, fb, DT, shift, dg,
                             xw, t, bad)
                if attempt == 0:
                    retry = False
                    for ln in range(LANES):
                        if bad[ln] and mode[ln] != 0:  # singular: the shifted tangent
                            retry = True
                            top = 0.0
                            for f in range(nf):
                                top = max(top, dg[f, ln])
                            shift[ln] = 1e-12 * top + 1e-300
                    if not retry:
                        break
            for f in range(nf):
                for ln in range(LANES):
                    X[f, ln] = RHS[ln, f]
            _lane_solve(Lx, colptr, rowidx, X)
            for ln in range(LANES):
                smp = lane[ln]
                if mode[ln] == 0:
                    continue
                ok = not bad[ln]
                factored[ln] = ok and shift[ln] == 0.0
                if mode[ln] == 2:
                    if ok:
                        for f in range(nf):
                            est[smp, f] = abs(X[f, ln])
                    u[smp] = U[ln]
                    lane[ln] = -1
                    continue
                step = _step_size(X[:, ln])
                if not (ok and math.isfinite(step)):
                    u[smp] = best_u[ln]
                    lane[ln] = -1
                    continue
                sett[ln] = newton[ln] and step <= rtol * (uinf[ln] + smax[ln])
                for f in range(nf):
                    U[ln, free[f]] += X[f, ln]
                it[ln] += 1
        return iters, done, settled, est

    @_njit
    def _lane_solve_one(Lx, colptr, rowidx, ln, x):
        """``x <- H^-1 x`` with lane ``ln``'s factor alone (:func:`_lane_solve`)."""
        n = colptr.shape[0] - 1
        for j in range(n):
            dj = colptr[j]
            x[j] *= Lx[dj, ln]
            for p in range(dj + 1, colptr[j + 1]):
                x[rowidx[p]] -= Lx[p, ln] * x[j]
        for j in range(n - 1, -1, -1):
            dj = colptr[j]
            t = x[j]
            for p in range(dj + 1, colptr[j + 1]):
                t -= Lx[p, ln] * x[rowidx[p]]
            x[j] = t * Lx[dj, ln]

    @_njit
    def lanes_solve(D, RHS, fa, fb, colptr, rowidx, rowptr, rowcol, rowpos, kptr, kedge, klo):
        """``X[s] = H_s^-1 RHS[s]`` (b, nf, r) for the tangents ``H_s = B_F diag(D[s]) B_F^T``
        (``D`` (b, m); the unknowns in the :class:`kirchnet.assembly.FactorPattern`'s order),
        :data:`LANES` samples at a time (:func:`_lane_factor`, :func:`_lane_solve`). Returns
        ``(X, ok)``: ``ok[s]`` False where ``H_s`` is not positive definite (``X[s]`` then 0)."""
        b, m = D.shape
        nf, r = RHS.shape[1], RHS.shape[2]
        X = np.zeros((b, nf, r))
        ok = np.ones(b, dtype=np.bool_)
        DT = _lane_rows(m)
        Lx = _lane_rows(colptr[-1])
        dg = _lane_rows(nf)
        xw = _lane_rows(nf)
        Y = _lane_rows(nf)
        t = _lane_rows(1)[0]
        bad = np.zeros(LANES, dtype=np.bool_)
        shift = np.zeros(LANES)
        for s0 in range(0, b, LANES):
            for e in range(m):
                for ln in range(LANES):
                    DT[e, ln] = D[s0 + ln, e] if s0 + ln < b else 1.0  # past the batch: unit weights
            _lane_factor(Lx, colptr, rowidx, rowptr, rowcol, rowpos, kptr, kedge, klo, fa, fb, DT, shift, dg, xw, t,
                         bad)
            for c in range(r):
                for f in range(nf):
                    for ln in range(LANES):
                        Y[f, ln] = RHS[s0 + ln, f, c] if s0 + ln < b else 0.0
                _lane_solve(Lx, colptr, rowidx, Y)
                for ln in range(min(LANES, b - s0)):
                    if not bad[ln]:
                        for f in range(nf):
                            X[s0 + ln, f, c] = Y[f, ln]
            for ln in range(min(LANES, b - s0)):
                ok[s0 + ln] = not bad[ln]
        return X, ok
