"""Port reduction of resistor-diode circuits: the resistors eliminated once per conductance
vector, Newton on the diode voltages only.

With ``L_R = B_F,R diag(g_R) B_F,R^T`` the free Laplacian of the resistors alone and
``B_D`` the free rows of the K diode edges' incidence columns, KCL on the free nodes reads
``L_R u_F = J_R - B_D i`` (``J_R`` the injected currents and the drivers' currents through
the resistors). Where ``L_R`` is nonsingular (every free node reaches a driven node through
resistors) the potentials are affine in the diode currents,

    u_F = u0_F - P i,   w = w0 - Z i,    P = L_R^-1 B_D,  Z = B_D^T P,

``u0`` the potentials with every diode open and ``w0`` the diodes' open-circuit voltages.
The equilibrium is the solution of the K port equations ``w = w0 - Z g phi(w)``
(:func:`kirchnet._jit_nonlinear.port_newton`); the tangent Laplacian
``H = L_R + B_D diag(D) B_D^T`` (``D = g phi'(w)``) is solved by Woodbury's identity,
``H^-1 R = L_R^-1 R - P S (I + S Z S)^-1 S P^T R`` with ``S = D^(1/2)``, restricted to the
diodes with ``D_k Z_kk > PORT_TAU`` (:meth:`PortReduction.tangent_solve`).

Per Newton iteration a sample costs a K x K product and a Cholesky factorization of the
conducting diodes' ``I + S Z_AA S`` instead of a factorization of the ``nf x nf`` tangent
Laplacian, with no Python in the loop: the equilibria of small and mid-size networks
(tens to a few hundred diodes) are many times faster (README, ``bench_spice.py``). Every
state it returns is checked by the stopping rule of :mod:`kirchnet.nonlinear` on the full
network, and a sample that fails it is solved there.
"""

from __future__ import annotations

import weakref

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from . import _jit_nonlinear, solvers
from .errors import KirchnetError

#: diodes with ``g phi'(w) Z_kk`` at most this are left out of the Newton matrix (their
#: coupling slows the quadratic convergence by at most this factor each)
PORT_TAU = 1e-9
#: the same for the tangent solves (adjoint, compliance: certified to 1e-10 componentwise)
PORT_SOLVE_TAU = 1e-13
#: the port iteration has converged when its last step moved no diode voltage by more
#: than this many ``n Vt`` (the linearization error is then ``~ (step / n Vt)^2 |Z D|``)
PORT_VTOL = 1e-9
#: ... or when its step, at most this many ``n Vt``, stopped contracting (rounding level)
PORT_SETTLE = 1e-5
#: a diode linearized with ``g phi'(v) Z_kk`` above this stops the port iteration (the port
#: equations lose ``log10`` of it digits; the sample is solved on the full network)
PORT_STIFF = 1e10
#: the Python overhead of a sparse Newton iteration on the full network per sample, in
#: flops of a port iteration (about 100 us; :meth:`PortReduction.cheaper`)
PORT_OVERHEAD = 5e5
#: most diodes a port reduction is built for (Z is K x K, P is nf x K, dense)
PORT_MAX = 600
#: memory of P and Z together (bytes)
PORT_BYTES = 64 * 2 ** 20


_ELIGIBLE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def eligible(circuit) -> str | None:
    """``None`` when the circuit can be port-reduced, else why not (a short phrase)."""
    if not _jit_nonlinear.enabled():
        return "numba not available or KIRCHNET_JIT=0"
    if circuit not in _ELIGIBLE:
        _ELIGIBLE[circuit] = _topology(circuit)
    return _ELIGIBLE[circuit]


def _topology(circuit) -> str | None:
    el = circuit.elements
    kinds = {law.kind for law in el.laws}
    if not kinds <= {"resistor", "diode"} or "diode" not in kinds:
        return "laws other than resistors and diodes, or no diode"
    kind = np.array([law.kind for law in el.laws])[el.law_index]
    K = int(np.sum(kind == "diode"))
    nf = circuit.n_free
    if nf == 0 or K > PORT_MAX or 8 * (nf * K + K * K) > PORT_BYTES:
        return f"{K} diodes, {nf} free nodes: too many for dense port matrices"
    net = circuit.network
    res = kind == "resistor"
    n = net.n_nodes
    hub = n  # every driven node joined to one hub: a free node needs a resistor path to it
    driven = np.setdiff1d(np.arange(n), circuit.free_nodes)
    rows = np.concatenate([net.tails[res], driven])
    cols = np.concatenate([net.heads[res], np.full(driven.size, hub)])
    graph = sp.coo_array((np.ones(rows.size), (rows, cols)), shape=(n + 1, n + 1))
    _, label = csgraph.connected_components(graph, directed=False)
    if np.any(label[circuit.free_nodes] != label[hub]):
        return "a free node reaches no driven node through resistors"
    return None


class PortReduction:
    """The resistors of a circuit eliminated at conductances ``g`` (module docstring).

    ``edges`` (K,) the diode edges; ``P`` (nf, K); ``Z`` (K, K); ``factor`` the
    factorization of ``L_R`` (checked solves); per diode the law's parameters for the
    compiled iteration. Build with :meth:`build` (``None`` where not applicable).
    """

    def __init__(self, circuit, g, backend: str):
        c, el = circuit, circuit.elements
        kind = np.array([law.kind for law in el.laws])[el.law_index]
        self.circuit = c
        self.edges = np.flatnonzero(kind == "diode")
        resistor = kind == "resistor"
        gR = np.where(resistor, g, 0.0)
        self.g_resistors = gR
        L = c._pattern.laplacian(gR)
        nf = c.n_free
        name = "dense" if nf <= solvers.DENSE_MAX else backend
        sym = c._symbolic if name == "cholmod" else None
        self.factor = solvers.factorize(L, name, symbolic=sym)
        BD = c._B_free[:, self.edges].toarray()
        self.P = np.ascontiguousarray(self.factor.solve(BD))
        Z = BD.T @ self.P
        self.Z = np.ascontiguousarray(0.5 * (Z + Z.T))
        self.g = np.ascontiguousarray(g[self.edges], dtype=float)
        laws = [el.law_of(int(e)) for e in self.edges]
        self._groups = [(law, np.flatnonzero([x == law for x in laws])) for law in dict.fromkeys(laws)]
        self.Is = np.array([law.saturation_current for law in laws])
        self.nvt = np.array([law.nvt for law in laws])
        self.vcrit = np.array([law.critical_voltage for law in laws])
        self.xmax = np.array([law.max_exponent for law in laws])
        self.dmax = np.array([law.max_descent for law in laws])
        self.dmin = np.array([law.min_descent for law in laws])

    @classmethod
    def build(cls, circuit, g, backend: str, dense: bool) -> "PortReduction | None":
        """The reduction, or ``None`` where the circuit is not eligible, ``L_R`` is too
        ill-conditioned for a certified solve, or (``dense`` False: the full network would
        be factorized sparse) a port iteration is predicted to cost more than a sparse
        factorization of the tangent (:meth:`cheaper`)."""
        if eligible(circuit) is not None:
            return None
        try:
            red = cls(circuit, np.asarray(g, dtype=float), backend)
        except KirchnetError:
            return None
        return red if dense or red.cheaper() else None

    def cheaper(self) -> bool:
        """Whether a port iteration, about ``(K/2)^3 / 6 + 3 K^2`` flops per sample (half the
        diodes conducting: their Cholesky factorization and the K x K products), is predicted
        to cost less than a Newton iteration on the full network: a sparse factorization of
        ``L_R``'s pattern (``sum_j c_j^2`` flops, ``c_j`` the factor's column counts), twice
        for its lower efficiency, plus ``PORT_OVERHEAD`` (the Python around it). Measured:
        random graphs of 10^3 edges (heavy fill) gain, lattices of 10^3 edges do not."""
        K = self.n_ports
        f = self.factor
        if hasattr(f, "_factor"):  # CHOLMOD
            L = f._factor.L()
        elif hasattr(f, "_lu"):  # SuperLU
            L = f._lu.L
        else:  # dense: the full network is factorized dense too
            return True
        cc = np.diff(sp.csc_matrix(L).indptr).astype(float)
        return (K / 2) ** 3 / 6 + 3 * K * K <= 2 * float(cc @ cc) + PORT_OVERHEAD

    def currents(self, w: np.ndarray) -> np.ndarray:
        """``g_k phi_k(w_k)`` of the diodes, ``w`` (b, K)."""
        out = np.empty(w.shape)
        for law, k in self._groups:
            out[:, k] = law.phi(w[:, k])
        return out * self.g

    @property
    def n_ports(self) -> int:
        return int(self.edges.size)

    def open_circuit(self, u: np.ndarray, s: np.ndarray, JF: np.ndarray):
        """``(u0_F (b, nf), w0 (b, K))``: potentials and diode voltages with every diode open,
        from the driver potentials in ``u`` (b, n; free entries ignored), edge sources ``s``
        (b, m) and injected currents ``JF`` (b, nf)."""
        c = self.circuit
        ud = u.copy()
        ud[:, c.free_nodes] = 0.0
        iR = (np.asarray((c._BT @ ud.T).T) + s) * self.g_resistors
        rhs = JF - np.asarray((c._B_free @ iR.T).T)
        u0F = self.factor._solve_block(np.ascontiguousarray(rhs.T)).T  # checked by the stopping rule
        ud[:, c.free_nodes] = u0F
        w0 = np.asarray((c._BT @ ud.T).T)[:, self.edges] + s[:, self.edges]
        return np.ascontiguousarray(u0F), np.ascontiguousarray(w0)

    def newton(self, w0: np.ndarray, v0: np.ndarray, max_iter: int, stall: int):
        """:func:`kirchnet._jit_nonlinear.port_newton`: ``(w, iterations, status)`` per sample."""
        return _jit_nonlinear.port_newton(self.Z, w0, np.ascontiguousarray(v0, dtype=float), self.g, self.Is,
                                      self.nvt, self.vcrit, self.xmax, self.dmax, self.dmin, PORT_TAU,
                                      PORT_VTOL, PORT_SETTLE, PORT_STIFF, int(max_iter), int(stall))

    def tangent_solve(self, D: np.ndarray, R: np.ndarray, tau: float = PORT_SOLVE_TAU) -> np.ndarray:
        """``H^-1 R`` per sample (Woodbury, module docstring): ``D`` (b, K) the diodes'
        ``g phi'(w)``, ``R`` (b, nf, r); ``tau``: the diodes with ``D_k Z_kk <= tau`` are
        left out (:data:`PORT_SOLVE_TAU`; the error estimate passes :data:`PORT_TAU`). Raises ``ValueError`` where a capacitance matrix is
        not positive definite or the result not finite. Not certified here: the callers
        certify (the tangent solves' residual test, the error estimate's own bound)."""
        b, nf, r = R.shape
        R2 = np.ascontiguousarray(np.moveaxis(R, 0, 1).reshape(nf, b * r))
        X0 = np.moveaxis(self.factor._solve_block(R2).reshape(nf, b, r), 1, 0)  # (b, nf, r)
        Y = np.einsum("fk,bfr->bkr", self.P, R)
        C, ok = _jit_nonlinear.port_correction(self.Z, np.ascontiguousarray(D, dtype=float), tau,
                                           np.ascontiguousarray(Y))
        X = X0 - np.einsum("fk,bkr->bfr", self.P, C)
        if not ok.all() or not np.all(np.isfinite(X)):
            raise ValueError("port capacitance matrix not positive definite")
        return X
