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
or hands the sample to the numpy iteration); above :data:`PORT_FULL` (a diode volts
forward) the step is solved on the full tangent's envelope. Tangent solves of the adjoint and the
compliance use :meth:`PortReduction.tangent_solve`, certified by their residual with the
full tangent as the fallback.
"""

from __future__ import annotations

import weakref

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from . import _jit_nonlinear
from .errors import IllConditionedError, KirchnetError

#: diodes with ``g phi'(w) Z_kk`` at most this are left out of a Newton step's matrix
#: (not of its residual: their coupling slows the quadratic convergence by at most this
#: factor per step)
PORT_TAU = 1e-9
#: a Woodbury solve whose diodes reach ``g phi'(w) Z_kk`` above this (a stiff loop of forward
#: diodes) loses about ``log10`` of it digits: its step does not settle the stopping rule and
#: the error estimate is solved on the full tangent instead
PORT_STIFF = 1e8
#: ... and above this (the correction keeps about 4 digits) the Newton step itself is solved
#: on the full tangent (a diode volts forward, e.g. a warm start from another operating
#: point; on bench_spice's random graphs 1e12 .. 1e20 cost the same from a cold start, warm
#: starts from another sample took 13.5 iterations at 1e12, within one of the numpy
#: iteration's, 13.8 at 1e16 (up to 5 more), 25 at 1e20, and failed at 1e30)
PORT_FULL = 1e12
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
    K = float(np.sum(circuit.elements.kinds == "diode"))
    nf = float(circuit.n_free)
    return 4.0 * resistor_envelope(circuit).nnz + nf * K / 2 + (K / 2) ** 3 / 6


_ENVELOPE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def resistor_envelope(circuit):
    """The :class:`kirchnet.assembly.Envelope` of ``L_R`` (the resistors' edges; cached per
    circuit)."""
    if circuit not in _ENVELOPE:
        _ENVELOPE[circuit] = circuit._pattern.envelope(circuit.elements.kinds == "resistor")
    return _ENVELOPE[circuit]


_INCIDENCE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _diode_incidence(circuit):
    """``(edges, B_D, B_D^T in the resistor envelope's order)``: the diode edges, their
    columns of ``B_F`` (sparse) and those columns dense, transposed, rows of the envelope's
    order (cached per circuit: they do not depend on the conductances)."""
    if circuit not in _INCIDENCE:
        edges = np.flatnonzero(circuit.elements.kinds == "diode")
        BD = sp.csr_array(circuit._B_free[:, edges])
        PT0 = np.ascontiguousarray(BD.toarray()[resistor_envelope(circuit).perm].T)
        PT0.setflags(write=False)
        _INCIDENCE[circuit] = (edges, BD, PT0)
    return _INCIDENCE[circuit]


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
    kind = el.kinds
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

    ``edges`` (K,) the diode edges; ``envelope`` (:func:`resistor_envelope`) and
    ``env_factor``: the envelope Cholesky factor of ``L_R``, the one factorization of the
    resistors, in that envelope's order; ``P`` (nf, K); ``PT_env`` ``P^T`` with its columns
    in the envelope's order (the compiled steps); ``Z`` (K, K). Build with :meth:`build`
    (``None`` where not applicable).
    """

    def __init__(self, circuit, g):
        c = circuit
        self.circuit = c
        self.edges, BD, PT = _diode_incidence(c)
        self.g_resistors = gR = np.array(g, dtype=float)
        gR[self.edges] = 0.0  # resistors and diodes only (eligible)
        env = self.envelope = resistor_envelope(c)
        ok, self.env_factor = _jit_nonlinear.envelope_factor(gR, env.fa, env.fb, env.first, env.rowptr)
        if not ok:
            raise IllConditionedError("the resistors' Laplacian L_R is not numerically positive definite")
        # P and Z enter only Newton steps (checked by the stopping rule) and tangent solves
        # (certified by their residual), never a result directly
        PT = PT.copy()  # B_D^T, envelope order
        _jit_nonlinear.envelope_solve_rows(self.env_factor, env.first, env.rowptr, PT)
        self.PT_env = PT
        self.P = np.empty((c.n_free, self.edges.size))
        self.P[env.perm] = PT.T
        Z = BD.T @ self.P
        self.Z = np.ascontiguousarray(0.5 * (Z + Z.T))
        if not (np.all(np.isfinite(self.P)) and np.all(np.isfinite(self.Z))):
            raise IllConditionedError("the port matrices P, Z are not finite")

    @classmethod
    def build(cls, circuit, g) -> "PortReduction | None":
        """The reduction, or ``None`` where the circuit is not eligible or ``L_R`` is not
        numerically positive definite."""
        if eligible(circuit) is not None:
            return None
        try:
            return cls(circuit, np.asarray(g, dtype=float))
        except KirchnetError:
            return None

    @property
    def n_ports(self) -> int:
        return int(self.edges.size)

    def resistor_solve(self, X: np.ndarray) -> np.ndarray:
        """``L_R^-1 X`` for ``X`` (nf, q), with the envelope factor."""
        env = self.envelope
        rows = np.ascontiguousarray(X[env.perm].T)
        _jit_nonlinear.envelope_solve_rows(self.env_factor, env.first, env.rowptr, rows)
        out = np.empty_like(X, dtype=float)
        out[env.perm] = rows.T
        return out

    def tangent_solve(self, D: np.ndarray, R: np.ndarray, tau: float = PORT_SOLVE_TAU) -> np.ndarray:
        """``H^-1 R`` per sample (Woodbury, module docstring): ``D`` (b, K) the diodes'
        ``g phi'(w)``, ``R`` (b, nf, r); ``tau``: the diodes with ``D_k Z_kk <= tau`` are
        left out (:data:`PORT_SOLVE_TAU`). Raises ``ValueError`` where a capacitance matrix
        is not positive definite or the result not finite. Not certified here: the caller
        (:meth:`kirchnet.nonlinear.NonlinearFactorization.tangent_solve`) tests the residual
        and falls back to the full tangent."""
        b, nf, r = R.shape
        X0 = np.moveaxis(self.resistor_solve(np.moveaxis(R, 0, 1).reshape(nf, b * r)).reshape(nf, b, r), 1, 0)
        Y = np.einsum("fk,bfr->bkr", self.P, R)
        C, ok = _jit_nonlinear.port_correction(self.Z, np.ascontiguousarray(D, dtype=float), tau,
                                               np.ascontiguousarray(Y))
        X = X0 - np.einsum("fk,bkr->bfr", self.P, C)
        if not ok.all() or not np.all(np.isfinite(X)):
            raise ValueError("port capacitance matrix not positive definite")
        return X
