"""A fast path for small linear circuits: one training step in a few LAPACK calls.

For a circuit of at most :data:`SMALL_MAX` free nodes every step of a linear rule is
built from one dense Cholesky factor of ``L_FF`` and one block solve (theory.md, 1-3)::

    L_FF [H | Z | psi] = [R_drv | P_F^T | d]        (d = diag L_FF)

``H`` (free potentials per unit driver), ``Z`` (adjoint basis), ``psi`` (the solve's error
certificate, kirchnet.solvers.base). With ``z`` (b, D) the driver values of a batch:

* outputs ``o = z T^T``, ``T = P_F H + P_D`` (k x D);
* edge voltages enter only through ``w^T mu = Wd (z^T mu)``, ``Wd = B_F^T H + E`` (m x D,
  ``E`` the drop of a unit driver on the clamped side), and the port drops ``W = B_F^T Z``;
* exact gradient ``-sum_k W_ek (w^T delta)_ek / b``; two-phase rules
  ``[sum_k W_ek (w^T dmu)_ek + 1/2 sum_kl W_ek (dmu^T smu)_kl W_el] / (b (b2 - b1))``
  with the port currents ``mu`` of the nudge (as :meth:`kirchnet.rules._ports.Ports.hebbian`).

Index arrays (scatter of ``g`` into ``L_FF`` and ``R_drv``, readout, dense incidence) are
built once from a validated :class:`~kirchnet.Circuit`; a step does no argument
validation. It keeps the guarantees of the general path: the Cholesky pivot test
(:class:`~kirchnet.errors.IllConditionedError` with the conductance ratio), a residual
certificate of every column in the edge form ``B_F (g * (B_F^T X))`` (accepted when
``max_i |r_i|/d_i * max(psi) <= 1e-8 ||x||``, as the general fast check), the maximum
principle on ``H`` and finite results. Whatever fails any check is recomputed by the
general rule, which refines the solve or raises its own error: the fast path never
returns a number the general path would refuse.

With numba installed (``kirchnet[jit]``) the factorization, its checks and the bases are
one compiled call (:mod:`kirchnet._jit`: an envelope Cholesky in reverse Cuthill-McKee
order, the same certificate and maximum principle), and Analytical and CL with squared
error run the whole step in it; ``SmallKernel(circuit, jit=False)`` or ``KIRCHNET_JIT=0``
keeps this numpy path, which stays the reference in tests. A failed compiled check reruns
this module's path (and so the general rule): the results and errors are the same.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from . import _jit
from .errors import BoundaryConditionError, IllConditionedError, ParameterError
from .losses import SquaredError
from .rules._ports import energy_nudge_currents
from .rules.base import Analytical, Rule, _check_result, RuleResult
from .rules.insitu import InSitu
from .rules.twophase import (AdjointClampNudge, AdjointCoupledLearning, ClampNudge, CoupledLearning,
                             CurrentNudge, EnergyNudge, EquilibriumPropagation, GEP, _betas)
from .solvers.base import ACCURACY, REFINE_ABOVE, conductance_advice, not_positive_definite

__all__ = ["SMALL_MAX", "SmallKernel", "supports", "kernel_for"]

#: circuits with at most this many free nodes use the dense fast path (the dense backend's range)
SMALL_MAX = 250
#: node conductance sums must lie in [1/_G_RANGE, _G_RANGE] (as kirchnet.circuit)
_G_RANGE = 1e250


class _Fallback(Exception):
    """Internal: a check of the fast path did not pass; the general rule decides."""


def _rule_kind(rule) -> str | None:
    """Which fast formula computes ``rule``'s estimate, or None (exact classes only:
    a subclass may override anything)."""
    t = type(rule)
    if t is Analytical:
        return "analytical"
    if t is EquilibriumPropagation:
        return "ep"
    if t is CoupledLearning:
        return "cl"
    if t is AdjointCoupledLearning:
        return "acl"
    if t is GEP and type(rule.nudge) in (CurrentNudge, EnergyNudge, ClampNudge, AdjointClampNudge):
        return "gep"
    if t is InSitu and not (rule.current_noise or rule.current_noise_abs or rule.output_noise
                            or rule.output_noise_abs or rule.adc_bits is not None):
        return "insitu"  # noise-free: sequential and superposed both equal the exact products
    return None


def supports(circuit, rule) -> bool:
    """Whether :class:`SmallKernel` computes ``rule`` on ``circuit`` (linear, at most
    :data:`SMALL_MAX` free nodes, a dense-backend circuit, a supported rule)."""
    return (circuit.is_linear and 0 < circuit.n_free <= SMALL_MAX and circuit.n_outputs > 0
            and circuit.backend in ("auto", "dense") and _rule_kind(rule) is not None)


def kernel_for(circuit, rule) -> "SmallKernel | None":
    """A :class:`SmallKernel` when :func:`supports` says so, else None."""
    return SmallKernel(circuit) if supports(circuit, rule) else None


class _Factor:
    """One factorization: conductances, the certified block solve and derived bases."""

    __slots__ = ("g", "T", "M", "Wd", "W", "K", "chol_K", "MT")

    def __init__(self, g, T, M, K, MT=None):
        D = T.shape[1]
        self.g, self.T, self.M, self.K = g, T, M, K
        self.Wd, self.W = M[:, :D], M[:, D:]  # driver drops (m, D), port drops (m, k)
        self.chol_K = None
        self.MT = MT  # (D + k, m) C-ordered, from the compiled kernel (kirchnet._jit)


def phase_difference(mu1, mu2):
    """``(dmu, smu) = (mu2 - mu1, mu1 + mu2)`` of the two phases' port currents, where a phase
    at beta = 0 (``None``) contributes nothing: the difference and sum a Hebbian estimate
    contracts through the bases."""
    if mu1 is None:
        return mu2, mu2
    if mu2 is None:
        return -mu1, mu1
    return mu2 - mu1, mu1 + mu2


class SmallKernel:
    """Dense fast path of one circuit (module docstring). Build once, call :meth:`step`.

    ``jit``: use :mod:`kirchnet._jit` (None: when numba is installed and ``KIRCHNET_JIT`` is
    not 0; True without numba is a :class:`~kirchnet.errors.ParameterError`).

    ``step(rule, g, x, y) -> (estimate, loss)`` equals ``rule.estimate(circuit, g, x, y)``'s
    ``estimate`` and ``loss`` (to rounding); ``g`` must be valid conductances, ``x`` a
    (b, n_inputs) float array and ``y`` targets of the rule's loss (the caller validates
    once; :meth:`estimate` validates and is the safe entry point).
    """

    def __init__(self, circuit, jit: bool | None = None):
        if not circuit.is_linear:
            raise ParameterError("SmallKernel needs a linear circuit (resistors only); nonlinear "
                                 "circuits use the general rules")
        nf = circuit.n_free
        if not 0 < nf <= SMALL_MAX:
            raise ParameterError(f"SmallKernel is for circuits with 1..{SMALL_MAX} free nodes, this one "
                                 f"has {nf}; use the general rules (rule.estimate)")
        self.circuit = circuit
        net = circuit.network
        m, n = net.n_edges, net.n_nodes
        pos = np.full(n, -1, dtype=np.int64)
        pos[circuit.free_nodes] = np.arange(nf)
        # driver order: node inputs, then series sources (extra clamps are held at 0 here)
        ni, ns = circuit.input_nodes.size, circuit.source_edges.size
        D = ni + ns
        drv = np.full(n, -1, dtype=np.int64)
        drv[circuit.input_nodes] = np.arange(ni)
        a, b = net.tails, net.heads
        fa, fb = pos[a], pos[b]
        e = np.arange(m)
        # L_FF: +g at (fa, fa), (fb, fb); -g at (fa, fb), (fb, fa) when both ends are free
        both = (fa >= 0) & (fb >= 0)
        slots, edges, signs = [], [], []
        for r, c, s, mask in ((fa, fa, 1.0, fa >= 0), (fb, fb, 1.0, fb >= 0),
                              (fa, fb, -1.0, both), (fb, fa, -1.0, both)):
            slots.append(r[mask] * nf + c[mask]); edges.append(e[mask]); signs.append(np.full(mask.sum(), s))
        self._L_slot = np.concatenate(slots)
        self._L_edge = np.concatenate(edges)
        self._L_sign = np.concatenate(signs)
        # R_drv: +g at (free end, input column) for an edge to an input node; a source on
        # edge (a, b) gives -g at a and +g at b
        slots, edges, signs = [], [], []
        for free_end, other in ((fa, b), (fb, a)):
            mask = (free_end >= 0) & (drv[other] >= 0)
            slots.append(free_end[mask] * D + drv[other][mask]); edges.append(e[mask])
            signs.append(np.ones(mask.sum()))
        src = circuit.source_edges
        for end, s in ((fa[src], -1.0), (fb[src], 1.0)):
            mask = end >= 0
            slots.append(end[mask] * D + ni + np.flatnonzero(mask)); edges.append(src[mask])
            signs.append(np.full(mask.sum(), s))
        # one scatter for both: R's slots follow L's
        self._slot = np.concatenate([self._L_slot, nf * nf + np.concatenate(slots).astype(np.int64)])
        self._edge = np.concatenate([self._L_edge, np.concatenate(edges).astype(np.int64)])
        self._sign = np.concatenate([self._L_sign, np.concatenate(signs)])
        self._buf_size = nf * nf + nf * D
        # dense incidence on the free nodes and the drops of unit drivers on the clamped side
        B = net.incidence().toarray()
        self._BF = np.ascontiguousarray(B[circuit.free_nodes])  # (nf, m)
        self._BFT = np.ascontiguousarray(self._BF.T)  # (m, nf)
        E = np.zeros((m, D))
        E[:, :ni] = B[circuit.input_nodes].T
        E[src, ni + np.arange(ns)] = 1.0  # w = dv + s
        self._E = E
        self._ET = np.ascontiguousarray(E.T)
        P = circuit.readout.toarray()  # (k, n)
        self._PFT = np.ascontiguousarray(P[:, circuit.free_nodes].T)  # (nf, k)
        self._PD = np.zeros((circuit.n_outputs, D))
        self._PD[:, :ni] = P[:, circuit.input_nodes]
        # input columns of x in driver order (public split of a unit matrix)
        xn, xs, _, _ = circuit.driver_values(np.eye(circuit.n_inputs), None)
        self._perm = np.concatenate([np.argmax(xn, axis=0), np.argmax(xs, axis=0)]).astype(np.int64)
        self.n_free, self.n_drivers, self.n_outputs, self.n_edges = nf, D, circuit.n_outputs, m
        self._ni = ni
        self._rhs = np.empty((nf, D + circuit.n_outputs + 1), order="F")
        self._rhs[:, D:D + circuit.n_outputs] = self._PFT
        self._last = None  # the most recent _Factor (a Trainer evaluates, then steps, at one g)
        # the compiled kernel (kirchnet._jit): jit=None follows numba's presence and KIRCHNET_JIT
        if jit and not _jit.AVAILABLE:
            raise ParameterError("SmallKernel(jit=True) needs numba (pip install kirchnet[jit]); "
                                 "jit=None uses it when installed, jit=False never")
        self.jit = _jit.enabled() if jit is None else bool(jit)
        if self.jit:
            self._jit_args = self._jit_arrays(fa, fb)

    def _jit_arrays(self, fa, fb):
        """kirchnet._jit.factor's index arrays: the free nodes renumbered in reverse
        Cuthill-McKee order (a narrow envelope for the envelope Cholesky; every basis and
        check is invariant under the renumbering) and the envelope ``first``."""
        from scipy.sparse.csgraph import reverse_cuthill_mckee

        nf, D = self.n_free, self.n_drivers
        both = (fa >= 0) & (fb >= 0)
        A = sp.coo_matrix((np.ones(2 * both.sum() + nf),
                           (np.concatenate([fa[both], fb[both], np.arange(nf)]),
                            np.concatenate([fb[both], fa[both], np.arange(nf)]))), shape=(nf, nf)).tocsr()
        order = reverse_cuthill_mckee(A, symmetric_mode=True).astype(np.int64)
        new = np.empty(nf, dtype=np.int64)
        new[order] = np.arange(nf)
        nL = self._L_slot.size
        r, c = self._slot[:nL] // nf, self._slot[:nL] % nf
        slot_L = new[r] * nf + new[c]
        rr = self._slot[nL:] - nf * nf
        slot_R = nf * nf + new[rr // D] * D + rr % D
        first = np.arange(nf, dtype=np.int64)
        lo = np.minimum(new[r], new[c])
        np.minimum.at(first, np.maximum(new[r], new[c]), lo)
        tail = np.where(fa >= 0, new[np.maximum(fa, 0)], nf)  # a clamped end reads the zero row nf
        head = np.where(fb >= 0, new[np.maximum(fb, 0)], nf)
        return (np.concatenate([slot_L, slot_R]), self._edge, self._sign, tail, head, first,
                self._ET, np.ascontiguousarray(self._PFT[order]), np.ascontiguousarray(self._PD),
                nf, D, self._ni, _G_RANGE, REFINE_ABOVE, ACCURACY)

    # ------------------------------------------------------------------ factor
    def factor(self, g: np.ndarray) -> _Factor:
        """The certified factorization at conductances ``g`` (cached for the last ``g``)."""
        last = self._last
        if last is not None and np.array_equal(last.g, g):  # a copy: callers may update g in place
            return last
        f = self._factor(g)
        self._last = f
        return f

    def _factor(self, g):
        if self.jit:
            st, _, MT, T, K = _jit.factor(np.ascontiguousarray(g, dtype=float), *self._jit_args)
            if st == 0:
                return _Factor(g.copy(), T, MT.T, K, MT)
            if st != 2:
                raise _Fallback  # range (1) or certificate (3): the general path decides
            # a failed pivot: the numpy factorization raises the same error as without numba
        nf, D, k = self.n_free, self.n_drivers, self.n_outputs
        # L_FF and R_drv in one scatter: buf[:nf*nf] is L (row-major), the rest R (nf x D)
        buf = np.bincount(self._slot, weights=self._sign * g[self._edge], minlength=self._buf_size)
        L = buf[:nf * nf].reshape(nf, nf)
        rhs = self._rhs
        rhs[:, :D] = buf[nf * nf:].reshape(nf, D)
        d = rhs[:, -1]
        d[:] = L.diagonal()
        hi = d.max()  # the largest entry of L_FF (kirchnet.circuit._check_magnitude)
        if not 1.0 / _G_RANGE <= hi <= _G_RANGE:
            raise _Fallback  # the general path names the overflow / range
        chol, info = lapack.dpotrf(L.T, lower=1, clean=0, overwrite_a=1)  # symmetric: L.T is L in F order
        if info != 0:
            exc = not_positive_definite(f"LAPACK potrf info={info}: the leading minor of order "
                                        f"{info} of {nf} is not positive", np.diag(d))
            raise IllConditionedError(f"{exc}; {conductance_advice(g)}")
        X, info = lapack.dpotrs(chol, rhs, lower=1)
        if info != 0:
            raise _Fallback
        # residual certificate in the edge form (kirchnet.solvers.base): |x - x*| <= rho psi.
        # Rows are columns of X (X from potrs is Fortran-ordered, X.T a C view), so every
        # reduction below runs over contiguous memory.
        XT = X.T  # (D + k + 1, nf)
        MT = XT @ self._BF  # (D + k + 1, m): drops of H, Z and psi
        Res = rhs.T - (MT * g) @ self._BFT
        np.abs(Res, out=Res)
        Res /= d
        rho = Res.max(axis=1)
        scale = np.abs(XT).max(axis=1)  # scale[-1] = max psi
        # every column (psi too, so rho_psi <= 1e-8 and max(A^-1 d) <= scale[-1] (1 + 2e-8))
        if not (rho * (scale[-1] * (1.0 + 2e-8)) <= REFINE_ABOVE * scale).all():
            raise _Fallback  # the general path refines or refuses
        if self._ni:  # maximum principle: a free potential per volt at the inputs is in [0, 1]
            Hn = XT[:self._ni]
            if max(-Hn.min(), Hn.sum(axis=0).max() - 1.0) > ACCURACY:
                raise _Fallback
        MT[:D] += self._ET
        M = MT[:D + k].T  # (m, D + k), a view
        TK = self._PFT.T @ X[:, :D + k]  # (k, D + k)
        T = TK[:, :D] + self._PD
        K = TK[:, D:]
        K = 0.5 * (K + K.T)
        return _Factor(g.copy(), T, M, K)

    # ------------------------------------------------------------------ pieces
    def _stiffness_solve(self, f: _Factor, r: np.ndarray) -> np.ndarray:
        """Rows of ``r`` (b, k) times ``S = K^{-1}`` (the port currents of a clamp)."""
        if f.chol_K is None:
            c, info = lapack.dpotrf(f.K, lower=1, clean=1)
            if info != 0:
                raise BoundaryConditionError(
                    "the outputs cannot be clamped: the output compliance P_F L_FF^-1 P_F^T is "
                    "singular (an output reads only clamped nodes, or outputs are linearly "
                    "dependent)")
            f.chol_K = c
        out, _ = lapack.dpotrs(f.chol_K, r.T, lower=1)
        return out.T

    @staticmethod
    def _hebbian(f, zT, mu1, mu2, b1, b2, b):
        """``Ports.hebbian`` through the bases: ``sum_k W_ek [Wd (z^T dmu) + 1/2 W (dmu^T smu)]_ek``."""
        dmu, smu = phase_difference(mu1, mu2)
        A = np.concatenate([zT @ dmu, 0.5 * (dmu.T @ smu)])  # (D + k, k)
        return np.einsum("ek,ek->e", f.W, f.M @ A) / (b * (b2 - b1))

    def _energy_currents(self, rule, f, o, y, beta):
        if type(rule.loss) is SquaredError:
            delta = o - y
            k = delta.shape[1]
            return -beta * np.linalg.solve(np.eye(k) + beta * f.K, delta.T).T
        return energy_nudge_currents(rule.loss, f, o, y, beta)  # Newton on the k outputs (uses .K)

    # ------------------------------------------------------------------ step
    def step(self, rule: Rule, g: np.ndarray, x: np.ndarray, y) -> tuple[np.ndarray, float]:
        """``(estimate (m,), loss)`` of ``rule`` at conductances ``g`` on the batch ``(x, y)``.

        No validation (see the class docstring); a failed check reruns the general rule.
        """
        if self.jit:  # analytical and CL with squared error: one compiled call (kirchnet._jit.step)
            t = type(rule)
            if ((t is Analytical or t is CoupledLearning) and type(rule.loss) is SquaredError
                    and type(y) is np.ndarray and y.dtype == np.float64 and x.dtype == np.float64
                    and y.shape == (x.shape[0], self.n_outputs) and x.ndim == 2):
                b1, b2 = (0.0, 1.0) if t is Analytical else _betas(rule.eta, rule.variant)
                if not (x.flags.c_contiguous and y.flags.c_contiguous and g.flags.c_contiguous):
                    x, y, g = np.ascontiguousarray(x), np.ascontiguousarray(y), np.ascontiguousarray(g)
                kind = 0 if t is Analytical else 1
                last = self._last
                if last is not None and last.MT is not None and np.array_equal(last.g, g):
                    # the factor a Trainer's evaluation left at this g: the same compiled algebra
                    st, est, loss = _jit.rule_step(last.MT, last.T, last.K, x, y, self._perm, kind, b1, b2)
                else:
                    st, est, loss = _jit.step(g, x, y, self._perm, kind, b1, b2, *self._jit_args)
                if st == 0:
                    return est, loss
                # any failed check: the path below decides (numpy errors, or the general rule)
        try:
            est, loss = self._step(rule, g, x, y)
            if np.isfinite(loss) and np.isfinite(est).all():
                return est, loss
        except _Fallback:
            pass
        res = rule.estimate(self.circuit, g, x, y)  # refines, or raises the general error
        return np.asarray(res.estimate, dtype=float), float(res.loss)

    def _outputs(self, f, x):
        z = x[:, self._perm] if self._perm.size else np.zeros((x.shape[0], 0))
        return z, z @ f.T.T

    def _step(self, rule, g, x, y):
        kind = _rule_kind(rule)
        if kind is None:
            raise ParameterError(f"SmallKernel does not compute {rule!r}; use rule.estimate")
        f = self.factor(g)
        z, o = self._outputs(f, x)
        b = o.shape[0]
        loss = rule.loss
        y_arr = y if isinstance(y, np.ndarray) else np.asarray(y)
        if type(loss) is SquaredError and y_arr.shape == o.shape:
            delta = o - y_arr
            values = 0.5 * np.einsum("bk,bk->b", delta, delta)
            t = y_arr
        else:
            values, delta = loss(o, y)
            t = None
        if f.MT is not None and t is not None and kind in ("analytical", "cl"):  # compiled algebra
            res = self._jit_step(rule, kind, f, z, o, t, b)
            if res is not None:
                return res[0], float(values.sum()) / b
        zT = z.T
        if kind in ("analytical", "insitu"):
            corr = np.einsum("ek,ek->e", f.W, f.Wd @ (zT @ delta))
            if kind == "insitu" and rule.wrt in ("resistance", "r"):
                est = g * g * corr / b  # dC/dr = mean_s i_e i_adj_e
            else:
                est = -corr / b
            return est, float(values.sum()) / b
        if kind == "ep":
            b1, b2 = _betas(rule.beta, rule.variant)
            if rule.nudge == "current":
                mus = {bk: -bk * delta for bk in (b1, b2) if bk != 0.0}
            else:
                mus = {bk: self._energy_currents(rule, f, o, y, bk) for bk in (b1, b2) if bk != 0.0}
        elif kind in ("cl", "acl"):
            b1, b2 = _betas(rule.eta, rule.variant)
            if kind == "cl":
                if t is None:
                    t = loss.targets(y, o)
                nu = self._stiffness_solve(f, t - o)
            else:
                nu = self._stiffness_solve(f, -(delta @ f.K))
            mus = {bk: bk * nu for bk in (b1, b2) if bk != 0.0}
        else:  # gep with a built-in nudge
            b1, b2 = _betas(rule.beta, rule.variant)
            nudge = type(rule.nudge)
            mus = {}
            for bk in (b1, b2):
                if bk == 0.0:
                    continue
                if nudge is CurrentNudge:
                    mus[bk] = -bk * delta
                elif nudge is EnergyNudge:
                    mus[bk] = self._energy_currents(rule, f, o, y, bk)
                elif nudge is ClampNudge:
                    if t is None:
                        t = loss.targets(y, o)
                    mus[bk] = self._stiffness_solve(f, (o + bk * (t - o)) - o)
                else:
                    mus[bk] = self._stiffness_solve(f, (o - bk * delta @ f.K) - o)
        est = self._hebbian(f, zT, mus.get(b1), mus.get(b2), b1, b2, b)
        return est, float(values.sum()) / b

    def _jit_step(self, rule, kind, f, z, o, t, b):
        """Analytical and CL estimates (squared error) by kirchnet._jit; None: the numpy
        formulas decide (a singular output compliance raises there)."""
        D = self.n_drivers
        t = np.ascontiguousarray(t, dtype=float)
        if kind == "analytical":
            return _jit.analytical(f.MT, f.T, z, t, D)
        b1, b2 = _betas(rule.eta, rule.variant)
        ok, nu = _jit.spd_solve(f.K, t - o)
        if not ok:
            return None
        mu1 = b1 * nu if b1 != 0.0 else None
        mu2 = b2 * nu if b2 != 0.0 else None
        dmu, smu = phase_difference(mu1, mu2)
        return (_jit.hebbian(f.MT, z, dmu, smu, D, 1.0 / (b * (b2 - b1))),)

    # ------------------------------------------------------------------ checked entry points
    def estimate(self, rule: Rule, conductances, x, y) -> tuple[np.ndarray, float]:
        """:meth:`step` with the arguments validated as ``rule.estimate`` does, and the
        result checked for finiteness (a :class:`~kirchnet.errors.SolverError` otherwise)."""
        g = self.circuit.check_conductances(conductances)
        xn, _, _, _ = self.circuit.driver_values(x, None)  # shape and finiteness of x
        X = np.asarray(x, dtype=float).reshape(xn.shape[0], self.circuit.n_inputs)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            est, loss = self.step(rule, g, X, y)
        _check_result(rule, RuleResult(est, loss, None))
        return est, loss

    def outputs(self, g: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Free-state outputs (b, k) at ``g`` for a batch ``x`` (b, n_inputs), unvalidated;
        a failed check solves through the general path."""
        try:
            f = self.factor(g)
        except _Fallback:
            return self.circuit.factorize(g).solve(x).outputs
        return self._outputs(f, x)[1]

    def evaluate(self, g: np.ndarray, x: np.ndarray, y, loss, accuracy: bool = False) -> dict:
        """``{"loss", "accuracy"}`` as :func:`kirchnet.training.evaluate` (one batched readout)."""
        from .training import _labels

        out = self.outputs(g, x)
        if type(loss) is SquaredError and isinstance(y, np.ndarray) and y.shape == out.shape:
            r = out - y  # targets validated once by the caller (the Trainer checks its data)
            value = 0.5 * float(np.einsum("bk,bk->", r, r)) / out.shape[0]
            if not np.isfinite(value):
                value = float(loss(out, y)[0].mean())  # raises the loss's own overflow error
        else:
            value = float(loss(out, y)[0].mean())
        res = {"loss": value}
        if accuracy:
            res["accuracy"] = float(np.mean(np.argmax(out, axis=1) == _labels(y)))
        return res
