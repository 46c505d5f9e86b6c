"""Port reduction of resistor-diode circuits: the resistors factorized once per
conductance vector, every Newton step solved over the conducting diodes only.

With ``L_R = B_F,R diag(g_R) B_F,R^T`` the free Laplacian of the resistors alone and
``B_D`` the free rows of the K diode edges' incidence columns, the tangent Laplacian at
diode conductances ``D = g phi'(w)`` is ``H = L_R + B_D diag(D) B_D^T``. Where ``L_R`` is
nonsingular (every free node reaches a driven node through resistors), Woodbury's identity

    H^-1 R = L_R^-1 R - P S (I + S Z S)^-1 S P^T R,   P = L_R^-1 B_D,  Z = B_D^T P,

``S = D^(1/2)``, solves it with one factorization of ``L_R`` (computed once) and a
Cholesky factorization of the K x K ``I + S Z S`` (SPD, eigenvalues >= 1), restricted to
the diodes with ``D_k Z_kk > tau``: a reverse-biased diode's ``D`` is tens of decades
below the others, so a step costs a factorization of the conducting diodes' system, not of
the ``nf x nf`` tangent. The compiled limited Newton iteration
(:func:`kirchnet._jit_nonlinear.nodal_newton`) solves its steps so (with ``P^T R =
B_D^T L_R^-1 R`` and ``L_R``'s envelope factor in reverse Cuthill-McKee order), in the
increment form of the full network (the port equations ``w = w0 - Z g phi(w)`` themselves
lose every digit in a loop of forward diodes and a source, whose current the resistors do
not see). Where ``max_k D_k Z_kk`` exceeds :data:`PORT_STIFF` such a loop makes ``I + S Z
S`` too ill-conditioned for the step to settle the stopping rule (the iteration goes on,
or hands the sample to the numpy iteration). Tangent solves of the adjoint and the
compliance use :meth:`PortReduction.tangent_solve`, certified by their residual with the
full tangent as the fallback.
"""

from __future__ import annotations

import weakref

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from . import _jit_nonlinear, solvers
from .errors import IllConditionedError, KirchnetError

#: diodes with ``g phi'(w) Z_kk`` at most this are left out of a Newton step's matrix
#: (not of its residual: their coupling slows the quadratic convergence by at most this
#: factor per step)
PORT_TAU = 1e-9
#: a Woodbury solve whose diodes reach ``g phi'(w) Z_kk`` above this (a stiff loop of forward
#: diodes) loses about ``log10`` of it digits: its step does not settle the stopping rule and
#: the error estimate is solved on the full tangent instead
PORT_STIFF = 1e8
#: the same for the tangent solves (adjoint, compliance: certified to 1e-10 componentwise)
PORT_SOLVE_TAU = 1e-13
#: most diodes a port reduction is built for (Z is K x K, dense)
PORT_MAX = 1000
#: memory of P, its transpose and Z (bytes)
PORT_BYTES = 64 * 2 ** 20


def step_flops(circuit) -> float:
    """Flops of a compiled Newton step with the reduction, about ``4 |env(L_R)| + nf K / 2
    + (K/2)^3 / 6``: the triangular solves with ``L_R``'s envelope factor, half the diodes
    conducting (:mod:`kirchnet.nonlinear` compares it with the other ways to take a step)."""
    el = circuit.elements
    K = float(np.sum(np.array([law.kind == "diode" for law in el.laws])[el.law_index]))
    nf = float(circuit.n_free)
    return 4.0 * float(resistor_envelope(circuit).rowptr[-1]) + nf * K / 2 + (K / 2) ** 3 / 6


_ENVELOPE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _Envelope:
    """The envelope of ``L_R`` in reverse Cuthill-McKee order: ``perm`` (free positions in
    that order), ``fa``/``fb`` (m,) each edge's ends there (-1 driven), ``first``,
    ``rowptr`` (row ``i`` stored from column ``first[i]``, :func:`kirchnet._jit_nonlinear._envelope_step`)."""

    def __init__(self, circuit):
        el, net, nf = circuit.elements, circuit.network, circuit.n_free
        resistor = (np.array([law.kind for law in el.laws])[el.law_index] == "resistor").astype(float)
        pattern = sp.csr_matrix(circuit._pattern.laplacian(resistor))
        pattern.eliminate_zeros()
        self.perm = csgraph.reverse_cuthill_mckee(pattern, symmetric_mode=True).astype(np.int64)
        inv = np.empty(nf, dtype=np.int64)
        inv[self.perm] = np.arange(nf)
        pos = np.full(net.n_nodes, -1, dtype=np.int64)
        pos[circuit.free_nodes] = inv
        self.fa, self.fb = pos[net.tails], pos[net.heads]
        first = np.arange(nf)
        both = (self.fa >= 0) & (self.fb >= 0) & (resistor > 0)
        np.minimum.at(first, np.maximum(self.fa[both], self.fb[both]), np.minimum(self.fa[both], self.fb[both]))
        self.first = first
        self.rowptr = np.concatenate([[0], np.cumsum(np.arange(nf) - first + 1)]).astype(np.int64)


def resistor_envelope(circuit) -> _Envelope:
    """:class:`_Envelope` of the circuit (cached per circuit)."""
    if circuit not in _ENVELOPE:
        _ENVELOPE[circuit] = _Envelope(circuit)
    return _ENVELOPE[circuit]


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
    if nf == 0 or K > PORT_MAX or 8 * (2 * nf * K + K * K) > PORT_BYTES:
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
    """The resistors of a circuit factorized at conductances ``g`` (module docstring).

    ``edges`` (K,) the diode edges; ``P`` (nf, K) and ``PT`` its transpose; ``Z`` (K, K);
    ``factor`` the factorization of ``L_R`` (checked solves); ``env_factor`` its envelope
    Cholesky factor in the order of ``envelope`` (:func:`resistor_envelope`) and
    ``PT_env`` the columns of ``PT`` in that order, for the compiled steps. Build with
    :meth:`build` (``None`` where not applicable).
    """

    def __init__(self, circuit, g, backend: str):
        c, el = circuit, circuit.elements
        kind = np.array([law.kind for law in el.laws])[el.law_index]
        self.circuit = c
        self.edges = np.flatnonzero(kind == "diode")
        self.g_resistors = gR = np.where(kind == "resistor", g, 0.0)
        L = c._pattern.laplacian(gR)
        nf = c.n_free
        name = "dense" if nf <= solvers.DENSE_MAX else backend
        sym = c._symbolic if name == "cholmod" else None
        self.factor = f = solvers.factorize(L, name, symbolic=sym)
        BD = c._B_free[:, self.edges].toarray()
        # unchecked: P and Z only enter Newton steps (checked by the stopping rule) and tangent
        # solves (certified by their residual), never a result directly
        self.P = np.ascontiguousarray(f._solve_block(BD))
        self.PT = np.ascontiguousarray(self.P.T)
        Z = BD.T @ self.P
        self.Z = np.ascontiguousarray(0.5 * (Z + Z.T))
        # L_R's envelope factor in reverse Cuthill-McKee order, for the compiled steps
        env = self.envelope = resistor_envelope(c)
        self.env_factor = np.empty(env.rowptr[-1])
        work, x = np.empty(env.rowptr[-1]), np.zeros(nf)
        m = c.network.n_edges
        if not _jit_nonlinear._envelope_step(work, self.env_factor, env.first, env.rowptr, x, x.copy(),
                                             np.zeros(m), gR, env.fa, env.fb) \
                or not np.all(self.env_factor[env.rowptr[1:] - 1] > 0):
            raise IllConditionedError("L_R is not numerically positive definite")
        self.PT_env = np.ascontiguousarray(self.PT[:, env.perm])

    @classmethod
    def build(cls, circuit, g, backend: str) -> "PortReduction | None":
        """The reduction, or ``None`` where the circuit is not eligible or ``L_R`` is not
        numerically positive definite."""
        if eligible(circuit) is not None:
            return None
        try:
            return cls(circuit, np.asarray(g, dtype=float), backend)
        except KirchnetError:
            return None

    @property
    def n_ports(self) -> int:
        return int(self.edges.size)

    def tangent_solve(self, D: np.ndarray, R: np.ndarray, tau: float = PORT_SOLVE_TAU) -> np.ndarray:
        """``H^-1 R`` per sample (Woodbury, module docstring): ``D`` (b, K) the diodes'
        ``g phi'(w)``, ``R`` (b, nf, r); ``tau``: the diodes with ``D_k Z_kk <= tau`` are
        left out (:data:`PORT_SOLVE_TAU`). Raises ``ValueError`` where a capacitance matrix
        is not positive definite or the result not finite. Not certified here: the caller
        (:meth:`kirchnet.nonlinear.NonlinearFactorization.tangent_solve`) tests the residual
        and falls back to the full tangent."""
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
