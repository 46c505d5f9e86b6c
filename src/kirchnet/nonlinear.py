"""Exact equilibria and exact gradients of circuits with nonlinear element laws (theory.md, 6).

**Equilibrium.** With laws ``i_e = g_e phi_e(w_e)`` (monotone) and ideal-diode
constraints ``w_e <= 0`` (multiplier currents ``mu_e >= 0``), the equilibrium is the
minimizer of the convex co-content

    E(u_F) = sum_e g_e Phi_e(w_e) - J_F . u_F    subject to  w_e <= 0 (ideal diodes),

whose stationarity (KKT) conditions are KCL on the free nodes,
``B_F (g phi(w)) + C mu = J_F`` (``C`` the free rows of the ideal diodes' incidence
columns), with ``mu >= 0``, ``w <= 0``, ``mu w = 0``.

**Smooth laws (resistors and diodes): SPICE's limited Newton iteration first**
(:func:`_limited_newton`). Every element is linearized at its own voltage ``v_e``
(companion model ``g (phi(v) + phi'(v) (w - v))``), the linear network is solved for the
step, and the next ``v_e = limit(v_e, w_e)`` (:meth:`kirchnet.elements.Law.limit`; diodes:
SPICE's junction limiting upward and a logarithmic descent of stiff forward diodes, so that
neither direction creeps along the exponential one ``n Vt`` per iteration). A cold start
solves the network with every law linearized at its drop for ``u_F = 0`` (diodes at most
at ``vcrit``, mostly nearly open), then linearizes each diode at ``min(w, vcrit)`` of that
solution: diodes the open network reverse-biases start reverse-biased, the others at
SPICE's initial junction voltage (measured: 7-14 iterations per sample on the networks of
``bench_spice.py`` and ``bench_nonlinear.py`` where starting every diode at ``vcrit``
takes 8-22 and the damped iteration 5-32). Where nothing is limited
the step is Newton's, with no line search; on sparse backends a sample reuses its last
tangent factorization (a chord step) while every tangent weight stays within
``CHORD_DRIFT`` (10 %) of the factorized one, which bounds the chord contraction by 0.1
(warm starts: one factorization, then solves). The iteration has no global convergence
guarantee (SPICE's has none either), so a sample that stalls for ``LIMITED_STALL``
iterations, meets a singular tangent or a non-finite step, or is still unconverged after
``max_iter`` iterations, is handed at its best iterate to the damped iteration below, which
then has ``max_iter`` iterations of its own. ``limiting=False`` runs the damped iteration
alone.

**Compiled iteration** (numba; :func:`_compiled_newton`). For circuits of resistors and
diodes the limited iteration runs compiled (:func:`kirchnet._jit_nonlinear.nodal_newton`,
the same steps as :func:`_limited_newton`, tested step for step), each step solved either
by Woodbury's identity on the port reduction (:mod:`kirchnet.ports`: the resistors
factorized once, per step a Cholesky factorization over the conducting diodes; only where
the resistors alone reach every free node from a driven node) or by an envelope Cholesky
factorization of the tangent in reverse Cuthill-McKee order, whichever is predicted
cheaper, and the numpy iteration where a sparse factorization is
(:attr:`NonlinearFactorization.plan`); the kernel also returns Newton's error estimate
at each state it converged (from its last factorization). Tangent solves (adjoint,
compliance) of a port-reduced circuit use Woodbury's identity and fall back to the full
tangent where their residual certificate fails.

**Lanes** (numba; :func:`_lanes_newton`, :func:`_lanes`). Batches of at least
``LANES_MIN_BATCH`` samples of resistor-diode circuits whose tangent has a sparse
Cholesky factor of at most ``LANES_MAX_FLOPS`` multiply-adds run the same iteration
eight samples at a time (:func:`kirchnet._jit_nonlinear.lanes_newton`): each lane holds
a sample at its own iteration and takes the next sample when its own stops, and the
lanes' tangents are factorized together on the factor's fixed pattern in CHOLMOD's
fill-reducing order (an up-looking Cholesky with the lanes innermost: the sparse index
arithmetic is paid once per eight samples and the multiply-adds are vector operations).
Every step is a new factorization (no chord steps: the lanes' factorizations cost less
than the chord steps save); a converged lane's error estimate reuses its last
factorization where no weight drifted more than ``CHORD_DRIFT``. The same batches' tangent
solves (adjoint, compliance) are factorized in lanes too
(:func:`kirchnet._jit_nonlinear.lanes_solve`; where a sample's tangent is not positive
definite there or the solve is not certified, the other path). Batch 64, measured
against the paths above (bench_spice's circuits, one run): 1.4x at 10^2 edges, 3.2x on a
10^3-edge lattice, 6.5x on a 10^3-edge random graph, 4.3x on a 10^4-edge lattice, 3.3x on a
1500-node random graph (``LANES_MAX_FLOPS`` has the crossover).

**Damped Newton: one iteration for every law** (primal-dual active set = semismooth
Newton on the complementarity ``min(mu_e, -c w_e) = 0``). Each step solves, per sample,

    [ H     C_A ] [du  ]   [ -(B_F i - J_F) ]      H = B_F diag(g phi'(w)) B_F^T
    [ C_A^T  0  ] [mu_A] = [ -w_A           ]      (the tangent Laplacian: same
                                                    pattern as L_FF, only weights change)

with ``A`` the ideal diodes currently treated as conducting (the others get ``mu = 0``),
then an exact line search on the convex ``L(u) = E(u) + mu_A . w_A(u)`` along ``du``
(the full step when it is nearly exact, else the 1-d minimizer by step doubling and
safeguarded Newton/bisection on the derivative; diode laws cap how far a forward voltage
may grow in one step, :meth:`~kirchnet.elements.Law.max_step`), then the active-set update ``A = {e: mu_e + c w_e > 0}``. Why this method:

* smooth laws (diodes): it is damped Newton on the convex energy; the exact line search
  makes the exponential harmless (no voltage limiting heuristics) and each iteration
  costs one factorization of a weighted Laplacian;
* piecewise-linear laws (rectifiers, ideal diodes with resistors): the energy is a convex
  piecewise quadratic. On a fixed active set one full step solves the linear network
  exactly; the active set then changes only where a sign is violated. For an M-matrix
  (every Laplacian is one) the primal-dual active-set method converges monotonically in
  finitely many steps (Hintermueller, Ito, Kunisch 2002), and its answer is the exact
  piecewise-linear solution (residual at rounding level), not a smoothed approximation.
  Block coordinate descent (Scellier 2024) is exact only on layered graphs; this works on
  any graph. Termination: for piecewise-linear circuits, after a full step the next
  iterate is a function of the active set (ideal diodes conducting, rectifiers on) alone,
  so an active set repeated along full steps is a cycle: it is detected at once and raises
  ``ConvergenceError`` naming the switching elements (instead of running to
  ``max_iter``); otherwise at most ``max_iter`` iterations (then ``ConvergenceError``).

**Solve checks.** Newton steps factorize the tangent Laplacian with
``solvers.factorize(..., check=False)``: a step only needs a descent direction, and the
solvers' forward-error certificate (``psi = L^{-1} diag(L)``) rejects tangent systems
whose reverse-biased diodes carry incremental conductances ``g phi'(w)`` tens of decades
below the others although the step is fine. The equilibrium is certified instead by its own
KCL residual and complementarity (the stopping rule below). Linear solves with the frozen
tangent (the adjoint of the gradient, the compliance, :meth:`NonlinearFactorization.tangent_solve`)
are certified by their KKT residual in the edge form, ``|K x - b| <= TANGENT_RTOL
(|B_F| (d |B_F^T x|) + |C||nu| + |b|)`` per entry (a componentwise backward error; the
regularization shift of a singular tangent is counted in the bound), with one step of
iterative refinement when it fails, then :class:`~kirchnet.errors.IllConditionedError`.

**Layered circuits.** A circuit built by :meth:`kirchnet.drn.DRN.to_circuit` (recognized by
:func:`kirchnet.drn.layered_spec`: the DRN's layered graph, ideal diodes from hidden nodes
to ground, its bias and diode sources) is solved by the DRN's exact block coordinate
descent, when no currents, clamps or warm start are given and its driver columns are the
spec's; the multipliers are read off the KCL residual and the result passes the same
stopping rule (Newton polishes it otherwise). ``method="general"`` forces the general
method.

Stopping rule, per sample: KCL residual ``|r_v| <= rtol * s_v + rho_v`` at every free
node, ``s_v = sum_e |B_ve i_e| + |J_v|`` (the node's own scale: no floor relative to
other nodes, so a node carrying mA next to one carrying 1e17 A is still checked), default
``rtol = 1e-10``, ``rho_v = 64 eps sum_e |B_ve| g_e phi'(w_e) (|u_a| + |u_b| + |s_e| + |u|_inf)``
the rounding level of the computed currents (a node carrying a current far below
``g |u|`` cannot be resolved better in double precision); complementarity for ideal diodes ``w_e <= ctol V``, ``|w_e| <= ctol V``
when conducting, ``mu_e >= -ctol I`` (``V``, ``I`` the sample's voltage and current
scales), default ``ctol = 1e-12``. A sample whose last full Newton step moved no potential
by more than ``rtol`` of its voltage scale (the potentials are determined to that accuracy)
passes with a KCL ratio up to ``SETTLED_RTOL = 1e-6``: in stiff circuits the rounding of
forward diodes' currents moves a whole cluster of potentials by ``eps`` times the stiffness
ratio, and a resistor node beside it cannot meet ``rtol`` of its own small currents (such
samples once ran to ``max_iter``). Otherwise :class:`~kirchnet.errors.ConvergenceError`
names the worst sample, node and residual. The rule is applied once more to the returned
state, recomputed from its potentials. Circuits of resistors and diodes then get Newton's
error estimate (:func:`_newton_estimate`: the signed Newton step at the returned state plus
the rounding of each edge current): the per-node rule can pass a cluster of nodes joined by
large conductances and held only by reverse-diode leakage, whose potential is off by
millivolts while the rounding of its internal currents hides the imbalance of the tiny
currents that fix it; where the estimate exceeds ``CERTIFY_RTOL = 1e-8`` of the voltage
scale the sample goes back to the damped iteration (at least one exact-line-search Newton
step per round; the direction of a leakage-held cluster is nearly singular and the step's
size comes from the search), up to ``POLISH_STEPS`` rounds, then
:class:`~kirchnet.errors.IllConditionedError` names the node and the bound; for circuits of resistors and diodes without
injected currents the returned potentials must also obey the maximum principle
(``|u_v| <= max |driver potential| + sum |series sources|``): a state of huge potentials
whose rounding floor ``rho_v`` hides its residual (steep diodes) raises instead.
Globalization: a Newton step that fails the angle test ``E'(0) < -DESCENT_COS |r| |du|``
(a tangent factorized on cancellation noise: deep-reverse diodes' ``g phi'(w)``
underflow) is recomputed with tangent weights of at least ``STEP_FLOOR g phi'(0)`` (kept
for that sample), then replaced by the Jacobi-scaled gradient step. Infeasible constraint sets (ideal diodes
forward-biased around a loop, or between clamped nodes, with no resistance) raise
:class:`~kirchnet.errors.BoundaryConditionError` naming the edges.

Batches: up to ``DENSE_MAX`` free unknowns the per-sample systems are stacked
``(b, N, N)`` and solved in one batched LAPACK call (no Python loop over samples);
larger networks assemble the sparse tangent Laplacian on the circuit's precomputed
scatter pattern and factorize it with the circuit's backend (CHOLMOD reuses the circuit's
one symbolic analysis; only the numeric factorization is repeated). Only unconverged
samples are iterated. A cold start is one linear solve from ``u_F = 0`` with every
law linearized at its voltage there, diodes at no more than
:attr:`~kirchnet.elements.Law.initial_voltage` (SPICE's ``vcrit``) forward: a diode next
to an input is then not started deep in its exponential, from which Newton would return
one ``n Vt`` per iteration. Warm starts: ``solve(..., warm_start=state)`` starts from a state's
potentials and active set (nudged phases start from the free state).

Where a tangent system is singular (a node whose every element is a blocking rectifier),
a diagonal shift ``1e-12 max diag`` is added for the step only (the equilibrium is then
one of the non-unique minimizers; KCL still holds to ``rtol``).

**Gradient** (implicit differentiation): at the equilibrium
``[H C_A; C_A^T 0] [lam_F; nu] = [P_F^T delta; 0]`` and
``dC/dg_e = -(B^T lam)_e phi_e(w_e)`` (resistors: today's ``-(B^T lam)_e w_e``); ideal
diodes have no parameter (gradient 0). For piecewise-linear elements the active set is
frozen: exact wherever it does not switch; at a switch (``w_e = 0`` and ``i_e = 0``,
measure zero) the derivative returned is that of the blocking branch (a rectifier at
``w = 0`` counts as blocking, ``phi' = 0``; an ideal diode conducts iff ``mu_e > 0``).
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import csgraph

from . import _jit_nonlinear, solvers
from . import parametrization as _param
from ._validation import _list, as_batch
from .factorization import State
from .errors import (BoundaryConditionError, ConvergenceError, IllConditionedError, ParameterError,
                     ShapeError, SolverError)
from .gradient import GradientResult
from .losses import get_loss
from . import ports as _ports
from .ports import PORT_FULL, PORT_STIFF, PORT_TAU, PortReduction
from .solvers.deflated import DeflatedLaplacian, SubtractionFreeElimination, floating_clusters, node_scales

#: stacked dense solves up to this many unknowns (free nodes + ideal diodes)
DENSE_MAX = solvers.DENSE_MAX
#: memory of one chunk of stacked dense systems (bytes)
DENSE_STACK_BYTES = 64 * 2 ** 20
RTOL = 1e-10
CTOL = 1e-12
MAX_ITER = 100
#: componentwise backward error accepted for a frozen-tangent solve (adjoint, compliance)
TANGENT_RTOL = 1e-10
#: tolerance of the layered solver when it solves a DRN circuit (well below RTOL)
LAYERED_TOL = 1e-14
#: smallest cosine between a Newton step and -grad E accepted as a descent direction
DESCENT_COS = 1e-20
#: floor of the Newton step's tangent weights, in units of ``g phi'(0)`` (equilibrium)
STEP_FLOOR = 1e-2
#: longest step (in units of the Newton step) the line search may extrapolate to
MAX_STEP = 1e3
#: the line search stops at ``|f'(t)| <= LINE_SEARCH_TOL |f'(0)|``
LINE_SEARCH_TOL = 0.1
#: a sample whose worst KCL ratio has not improved for this many limited-Newton iterations
#: goes on with the damped Newton iteration (from its best iterate)
LIMITED_STALL = 8
#: a limited-Newton step reuses the sample's last tangent factorization (a chord step; sparse
#: backends) while every tangent weight is within this relative drift of the factorized one:
#: then ``(1 - c) H_old <= H <= (1 + c) H_old`` and the chord iteration contracts the linear
#: part of the error by at least ``c`` per step
CHORD_DRIFT = 0.1
#: ... and is brought up to date by a low-rank update (CHOLMOD's up/downdate) where at most
#: this many weights drifted further (:func:`_refreshed`)
LOWRANK_MAX = 32
#: ... each by less than this factor (a downdate of a large weight to a tiny one loses the
#: tiny one to cancellation)
LOWRANK_RANGE = 1e3
#: ... or, changing by more, at most this many times the conductance its nodes keep
#: otherwise (the change's rounding is then 1e-12 of what holds them)
LOWRANK_DOMINANCE = 1e4
#: where at most LOWRANK_MAX weights moved by more than this (relative) at all, the update
#: covers every one of them: the factorization is then exact and the step Newton's
LOWRANK_EXACT = 1e-3
#: the tangent factorizations a returned state keeps for warm starts from it, at most
#: (:meth:`NonlinearFactorization._keep_tangents`)
WARM_FACTOR_BYTES = 256 * 2 ** 20
#: the potentials of circuits of resistors and diodes are certified to this fraction of the
#: sample's voltage scale (first-order error estimate, :func:`_newton_estimate`)
CERTIFY_RTOL = 1e-8
#: rounds of the damped iteration (each at least one exact-line-search Newton step) taken
#: after the stopping rule passed where the error estimate says the potentials are not yet
#: determined to ``CERTIFY_RTOL`` (then IllConditionedError)
POLISH_STEPS = 10
#: ... of which the first rounds are the estimate's own Newton steps (sparse backends: the
#: chord step on the last factorization the estimate solved), without the damped iteration
#: (a step that fails the stopping rule goes to the damped iteration at once). On the
#: 10^4-node diode lattice half the cold starts take 2-4 such rounds (each gains about
#: three digits); 4 rather than 2: 5 % of the cold start, the damped rounds' fresh
#: factorizations and two-level solves saved
NEWTON_POLISH = 4
#: source stepping (:func:`_source_stepping`) gives up when its step in lambda falls below this
SOURCE_STEP_MIN = 1e-3
#: rounding of a computed edge voltage, in units of its scale (:func:`_edge_scale`)
ROUNDING = 64 * np.finfo(float).eps
#: largest KCL ratio accepted where the last full Newton step was at the rounding level
SETTLED_RTOL = 1e-6
#: an envelope Cholesky step costs about this many times its flop count in time relative
#: to a Woodbury step on the port reduction (short envelope rows, the stamping; measured
#: on 10^2-10^3-edge lattices, random and Delaunay graphs)
ENVELOPE_WEIGHT = 4.0
#: batches of at least this many samples take the lane iteration (:func:`_lanes_newton`;
#: below, most of its lanes would idle)
LANES_MIN_BATCH = 4
#: largest factorization (multiply-adds, :attr:`kirchnet.assembly.FactorPattern.factor_flops`)
#: of the lane iteration: beyond, CHOLMOD's supernodal factorizations with chord steps and
#: low-rank updates win (bench_spice's batch of 64, lanes against the sparse iteration, one
#: process: lattices of 10^4 / 2x10^4 / 4x10^4 nodes, 2.7e6 / 7.8e6 / 2.3e7 multiply-adds,
#: 3.9x / 3.3x / 2.7x faster in lanes; random graphs of 1500 / 2500 / 3500 / 5000 nodes,
#: 3.6e6 / 1.6e7 / 4.6e7 / 1.3e8, 3.3x / 1.1x faster, 1.5x / 2.0x slower)
LANES_MAX_FLOPS = 2.5e7
#: memory of the lanes' factors (bytes)
LANES_BYTES = 64 * 2 ** 20
#: the Python overhead of a sparse numpy Newton step per sample, in flops of a compiled
#: step (about 100 us; :attr:`NonlinearFactorization.plan`)
SPARSE_STEP_OVERHEAD = 5e5


# --------------------------------------------------------------------------- assembly
class _Assembly:
    """Per-circuit constant pieces of the Newton systems (cached per circuit)."""

    def __init__(self, circuit):
        c = circuit
        net = c.network
        self.nf, self.m = c.n_free, net.n_edges
        self.BF = c._B_free  # (nf, m) csr
        self.absBF = abs(c._B_free)
        self.absBT = abs(c._BT)
        ci = c.elements.constraint_edges
        clamped_both = c.is_clamped[net.tails[ci]] & c.is_clamped[net.heads[ci]]
        self.ci = ci[~clamped_both]  # ideal diodes with a free end: unknown multipliers
        self.ci_fixed = ci[clamped_both]  # ideal diodes between clamped nodes: checked only
        self.nc = self.ci.size
        self.C = c._B_free[:, self.ci].toarray() if self.nc else np.zeros((self.nf, 0))
        self.absC = np.abs(self.C)
        # ideal diodes can form loops through clamped nodes (parallel diodes, a node with a
        # diode to each of two bias sources): active sets must then be made independent
        self.loops = bool(self.nc) and bool(_dependent_ideal(c, self.ci))
        # no reference to the circuit itself (it is the weak key of the cache)
        self._scatter = (c._scatter_sign, c._dense_slot, c._scatter_edge)
        self._laws = {law.kind for law in c.elements.laws}
        self._circuit = weakref.ref(c)

    @cached_property
    def BF_columns(self) -> sp.csc_array:
        """``B_F`` (nf, m) in CSC: the columns of a low-rank update (:func:`_refreshed`)."""
        return sp.csc_array(self.BF)

    @cached_property
    def kernel(self) -> "_KernelEdges | None":
        """The edge arrays of the compiled limited Newton iteration (resistors and diodes
        only, numba importable), else ``None``."""
        if not _jit_nonlinear.AVAILABLE or not self._laws <= {"resistor", "diode"}:
            return None
        return _KernelEdges(self._circuit())

    @cached_property
    def dense_map(self) -> sp.csr_array:
        """``(nf*nf, m)``: row-major dense ``H`` from edge weights, ``vec(H) = M d``."""
        c_nf = max(self.nf, 1)
        sign, slot, edge = self._scatter
        return sp.csr_array((sign, (slot, edge)), shape=(c_nf * c_nf, self.m))


class _KernelEdges(tuple):
    """``(fa, fb, ta, hb, code)`` of :func:`kirchnet._jit_nonlinear.nodal_newton` (the
    edges' free positions, node ids, law codes), ``params``: the diodes' ``(Is, nVt, vcrit,
    max_exponent, max_descent, min_descent)`` per edge (0 on resistors), ``envelope``: the
    tangent Laplacian's :class:`kirchnet.assembly.Envelope`, and ``flops``: of a step there
    (its Cholesky factorization and two triangular solves)."""

    def __new__(cls, c):
        el, net, p = c.elements, c.network, c._pattern
        code = (el.kinds == "diode").astype(np.int64)
        self = super().__new__(cls, (p.free_tails, p.free_heads, np.ascontiguousarray(net.tails),
                                     np.ascontiguousarray(net.heads), code))
        names = ("saturation_current", "nvt", "critical_voltage", "max_exponent", "max_descent", "min_descent")
        self.params = tuple(np.where(code == 1, el.per_edge(name), 0.0) for name in names)
        self.envelope = p.envelope()
        self.flops = self.envelope.factor_flops + 4.0 * self.envelope.nnz
        self._circuit = weakref.ref(c)
        return self

    @cached_property
    def factor(self):
        """The tangent's :class:`kirchnet.assembly.FactorPattern` of
        :func:`kirchnet._jit_nonlinear.lanes_newton`, in CHOLMOD's fill-reducing order where
        CHOLMOD is installed, else in the envelope's (reverse Cuthill-McKee)."""
        c = self._circuit()
        try:
            perm = np.asarray(c._symbolic._symbolic.P(), dtype=np.int64)
        except SolverError:
            perm = self.envelope.perm
        return c._pattern.factor_pattern(perm)


_ASSEMBLY: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_SPARSE_FLOPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _sparse_step_flops(circuit, backend: str) -> float:
    """Predicted cost of a numpy Newton step on a sparse backend, in flops of a compiled
    step: the flops of the numeric factorization (``sum_j c_j^2``, ``c_j`` the column
    counts of the factor of the circuit's pattern), counted twice up to 1e6 (small
    factorizations run far below the BLAS rate of large supernodes), plus
    :data:`SPARSE_STEP_OVERHEAD` for the Python around it (cached per circuit and backend).
    Measured crossovers: envelope steps win on lattices to a few 10^3 nodes and lose at
    10^4 (1.6x slower), the port reduction wins on random graphs of 10^3 edges."""
    cache = _SPARSE_FLOPS.setdefault(circuit, {})
    counted = circuit._symbolic.flops if backend == "cholmod" else None  # the analysis's column counts
    if backend not in cache and counted is not None:
        cache[backend] = counted + min(counted, 1e6) + SPARSE_STEP_OVERHEAD
    if backend not in cache:  # SuperLU, or no numba: count the factor itself
        L = circuit._pattern.laplacian(np.ones(circuit.network.n_edges))
        try:
            f = solvers.factorize(L, backend, symbolic=circuit._symbolic if backend == "cholmod" else None,
                                  **_UNCHECKED)
            F = f._factor.L() if hasattr(f, "_factor") else f._lu.L
            flops = float(np.sum(np.diff(sp.csc_matrix(F).indptr).astype(float) ** 2))
            # small factorizations run at a fraction of the supernodal BLAS rate of large ones
            cache[backend] = flops + min(flops, 1e6) + SPARSE_STEP_OVERHEAD
        except (SolverError, AttributeError):  # no factor to count: assume the compiled step pays
            cache[backend] = np.inf
    return cache[backend]


def _assembly(circuit) -> _Assembly:
    a = _ASSEMBLY.get(circuit)
    if a is None:
        a = _ASSEMBLY[circuit] = _Assembly(circuit)
    return a


class _Singular(Exception):
    pass


# Newton steps need a descent direction, not a certified solve: the equilibrium is certified
# by its own KCL residual (reverse-biased diodes make the tangent Laplacian ill-conditioned
# normwise, which the solvers' accuracy check would reject although the step is fine).
_UNCHECKED = {"check": False} if "check" in inspect.signature(solvers.factorize).parameters else {}


class TangentSystem:
    """The per-sample tangent (KKT) matrices at given edge weights and active sets.

    ``weights`` (b, m): ``g phi'(w)``; ``active`` (b, nc) bool: conducting ideal diodes.
    :meth:`solve` returns ``X`` (b, N, r) for right-hand sides (b, N, r), ``N = nf + nc``.
    """

    def __init__(self, circuit, weights: np.ndarray, active: np.ndarray, dense: bool, backend: str,
                 ports=None, deflate: bool = False, lanes: bool = False):
        self.circuit = circuit
        self.asm = _assembly(circuit)
        self.weights = weights
        self.active = active
        self.dense = dense
        self.backend = backend
        #: dense tangents with floating clusters solved by the subtraction-free elimination
        #: (LAPACK's pivots on their common modes are cancellation noise; sparse backends
        #: take the two-level solve wherever their factorization fails, :meth:`_factor_one`)
        self.deflate = deflate and not self.asm.nc
        #: a :class:`kirchnet.ports.PortReduction` of the circuit: Woodbury solves (no ideal diodes)
        self.ports = ports if not self.asm.nc else None
        #: solved in lanes (:func:`kirchnet._jit_nonlinear.lanes_solve`; resistor-diode
        #: circuits, :func:`_lanes`), the samples whose tangent is not positive definite there
        #: by the other path
        self.lanes = lanes and not self.asm.nc and not self.deflate
        self._factors = None

    def _dense_stack(self, rows: slice, shift: np.ndarray | None = None) -> np.ndarray:
        asm, w, act = self.asm, self.weights[rows], self.active[rows]
        nf, nc, b = asm.nf, asm.nc, w.shape[0]
        H = np.asarray(asm.dense_map @ w.T).T.reshape(b, nf, nf)
        if shift is not None:
            H = H + shift[:, None, None] * np.eye(nf)[None]
        if not nc:
            return H
        K = np.zeros((b, nf + nc, nf + nc))
        K[:, :nf, :nf] = H
        Ca = asm.C[None, :, :] * act[:, None, :]
        K[:, :nf, nf:] = Ca
        K[:, nf:, :nf] = np.swapaxes(Ca, 1, 2)
        K[:, nf:, nf:] = np.eye(nc)[None] * (~act)[:, :, None]
        return K

    def _regularization(self, rows=slice(None)) -> np.ndarray:
        """``1e-12 max diag(H)`` per sample (diag(H)_v = sum_e |B_ve| weight_e)."""
        d = np.asarray(self.asm.absBF @ self.weights[rows].T).T  # (b, nf)
        return 1e-12 * d.max(axis=1, initial=0.0) + 1e-300

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        if self.lanes:
            return self._solve_lanes(rhs)
        if self.ports is not None:
            try:
                return self.ports.tangent_solve(self.weights[:, self.ports.edges], rhs)
            except ValueError:  # a capacitance matrix not positive definite: the full network
                pass
        if self.dense:
            return self._solve_dense(rhs)
        return self._solve_sparse(rhs)

    def _products(self, X: np.ndarray):
        """``(K X, |K| |X|)`` in the edge form, X (b, N, r)."""
        asm, d = self.asm, self.weights
        b, N, r = X.shape
        nf = asm.nf
        XF = np.ascontiguousarray(np.moveaxis(X[:, :nf], 0, 1)).reshape(nf, b * r)
        drop = np.asarray(asm.BF.T @ XF).reshape(asm.m, b, r)
        cur = drop * d.T[:, :, None]
        cur = cur.reshape(asm.m, b * r)
        KX = np.moveaxis(np.asarray(asm.BF @ cur).reshape(nf, b, r), 0, 1)
        S = np.moveaxis(np.asarray(asm.absBF @ np.abs(cur)).reshape(nf, b, r), 0, 1)
        if not asm.nc:
            return KX, S
        act = self.active[:, :, None]
        nu = X[:, nf:]
        KX = np.concatenate([KX + np.einsum("fc,bcr->bfr", asm.C, nu * act),
                             act * np.einsum("fc,bfr->bcr", asm.C, X[:, :nf]) + (~act) * nu], axis=1)
        S = np.concatenate([S + np.einsum("fc,bcr->bfr", asm.absC, np.abs(nu) * act),
                            act * np.einsum("fc,bfr->bcr", asm.absC, np.abs(X[:, :nf]))
                            + (~act) * np.abs(nu)], axis=1)
        return KX, S

    def apply(self, X: np.ndarray) -> np.ndarray:
        """``K X`` per sample (the unshifted tangent KKT matrix, edge form)."""
        return self._products(X)[0]

    def uncertified(self, X: np.ndarray, rhs: np.ndarray):
        """``None`` when every entry of ``K X - rhs`` is within ``TANGENT_RTOL`` of its scale
        ``|K||X| + |rhs|`` (plus the regularization shift ``|x|`` of a singular tangent and
        ``1e-12`` of the column's largest scale), else ``(sample, row, ratio)`` of the worst."""
        KX, S = self._products(X)
        if not np.all(np.isfinite(X)):
            smp, v = np.argwhere(~np.isfinite(X).all(axis=2))[0]
            return int(smp), int(v), float("inf")
        R = np.abs(KX - rhs)
        S = S + np.abs(rhs)
        S = np.maximum(S, 1e-12 * S.max(axis=1, keepdims=True)) + 1e-300
        shift = self._regularization()[:, None, None] * np.abs(X)
        shift[:, self.asm.nf:] = 0.0
        ratio = np.maximum(R - shift, 0.0) / S
        if ratio.max(initial=0.0) <= TANGENT_RTOL:
            return None
        smp, v, _ = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        return int(smp), int(v), float(ratio[smp, v].max())

    def _solve_lanes(self, rhs):
        """:func:`kirchnet._jit_nonlinear.lanes_solve` on the tangent's sparse factor
        (CHOLMOD's order); the samples not positive definite there by the dense or sparse
        path (a shift, or the two-level solve of floating clusters)."""
        pattern = self.asm.kernel.factor
        perm = pattern.perm
        X, ok = _jit_nonlinear.lanes_solve(np.ascontiguousarray(self.weights, dtype=float),
                                           np.ascontiguousarray(rhs[:, perm], dtype=float), pattern.fa, pattern.fb,
                                           *pattern.arrays)
        out = np.empty_like(X)
        out[:, perm] = X
        if not ok.all():
            rest = np.flatnonzero(~ok)
            out[rest] = TangentSystem(self.circuit, self.weights[rest], self.active[rest], self.dense,
                                      self.backend).solve(rhs[rest])
        return out

    def _solve_dense(self, rhs):
        """Batched LAPACK solves of the stacked systems, in chunks of at most
        ``DENSE_STACK_BYTES`` (a big batch never allocates a (b, N, N) stack at once); with
        :attr:`deflate`, the samples whose tangent has floating clusters again by the
        subtraction-free elimination (:class:`~kirchnet.solvers.deflated.SubtractionFreeElimination`:
        componentwise accurate, no cycles; dense systems are small)."""
        out = self._solve_stacked(rhs)
        if self.deflate:
            asm, pat = self.asm, self.circuit._pattern
            for smp in range(rhs.shape[0]):
                d = self.weights[smp]
                scales = node_scales(asm.BF, d)
                labels, k = floating_clusters(asm.nf, pat.free_tails, pat.free_heads, d, s=scales)
                if k:
                    try:
                        out[smp] = SubtractionFreeElimination(asm.nf, pat.free_tails, pat.free_heads,
                                                              d).solve(rhs[smp])
                    except SolverError:
                        pass  # keep LAPACK's step
        return out

    def _solve_stacked(self, rhs):
        N = rhs.shape[1]
        chunk = max(1, int(DENSE_STACK_BYTES // (8 * max(N, 1) ** 2)))
        out = np.empty_like(rhs)
        for start in range(0, rhs.shape[0], chunk):
            rows = slice(start, start + chunk)
            try:
                out[rows] = np.linalg.solve(self._dense_stack(rows), rhs[rows])
                continue
            except np.linalg.LinAlgError:
                pass
            try:
                out[rows] = np.linalg.solve(self._dense_stack(rows, self._regularization(rows)), rhs[rows])
            except np.linalg.LinAlgError:
                raise _Singular() from None
        return out

    def _sparse_matrix(self, s: int, shift=0.0):
        """Sample ``s``'s tangent Laplacian plus ``diag(shift)`` (a scalar or (nf,)), in the
        circuit's fixed pattern (kirchnet.assembly: the one stamping of weights)."""
        pat = self.circuit._pattern
        L = pat.laplacian(self.weights[s])
        L.data[pat.diagonal_slots] += shift
        return L

    def _factor_fine(self, s: int, shift=0.0):
        """The factorization of sample ``s``'s tangent Laplacian plus ``diag(shift)`` (the
        circuit's pattern and symbolic analysis; :class:`~kirchnet.errors.SolverError` if
        not positive definite)."""
        L = self._sparse_matrix(s, shift)
        sym = self.circuit._symbolic if self.backend == "cholmod" else None
        return solvers.factorize(L, self.backend, symbolic=sym, **_UNCHECKED)

    def _factor_one(self, s: int):
        """Sample ``s``'s tangent system factorized: an object whose ``solve(rhs)`` solves it
        (a :class:`~kirchnet.solvers.Factorization`, a two-level
        :class:`~kirchnet.solvers.deflated.DeflatedLaplacian`, or SuperLU's LU of the KKT
        matrix); :class:`_Singular` where none can be had."""
        asm = self.asm
        if not asm.nc:
            try:
                return self._factor_fine(s)
            except SolverError:  # a pivot lost to cancellation (CHOLMOD detects it; SuperLU pivots)
                pass
            # clusters of nodes held only through weak edges (reverse-biased diodes): solved by
            # the two-level scheme (kirchnet.solvers.deflated), exact in the weak directions where
            # a diagonal shift would bury them (the Newton steps then creep: 66 iterations where
            # 11 do on bench_nonlinear's 10^4-node lattice)
            pat, d = self.circuit._pattern, self.weights[s]
            scales = node_scales(asm.BF, d)
            labels, k = floating_clusters(asm.nf, pat.free_tails, pat.free_heads, d, s=scales)
            if k:
                try:
                    return DeflatedLaplacian(asm.nf, pat.free_tails, pat.free_heads, d,
                                             lambda shift: self._factor_fine(s, shift).solve, labels, k,
                                             B=asm.BF, s=scales)
                except SolverError:
                    pass
            try:  # the last resort: a shift of 1e-12 max diag (TangentSystem._regularization)
                return self._factor_fine(s, float(self._regularization(slice(s, s + 1))[0]))
            except SolverError:
                pass
            raise _Singular()
        act = self.active[s]
        Ca = sp.csc_array(asm.C * act[None, :])
        D = sp.diags_array((~act).astype(float))
        for regularize in (False, True):
            L = self._sparse_matrix(s, float(self._regularization(slice(s, s + 1))[0]) if regularize else 0.0)
            K = sp.csc_array(sp.block_array([[L, Ca], [Ca.T, D]], format="csc"))
            try:
                return spla.splu(K)
            except RuntimeError:
                continue
        raise _Singular()

    def _solve_sparse(self, rhs):
        b = rhs.shape[0]
        if self._factors is None:
            self._factors = [None] * b
        out = np.empty_like(rhs)
        for s in range(b):  # large networks: one numeric factorization per sample
            if self._factors[s] is None:
                self._factors[s] = self._factor_one(s)
            out[s] = np.asarray(self._factors[s].solve(rhs[s])).reshape(rhs[s].shape)
        if not np.all(np.isfinite(out)):
            raise _Singular()
        return out


# --------------------------------------------------------------------------- states
@dataclass(frozen=True, eq=False)
class NonlinearState(State):
    """An equilibrium of a nonlinear circuit (batch first).

    ``currents = g phi(w)`` (plus the ideal-diode multipliers on their edges),
    ``energy_derivative() = Phi(w)`` (``dE/dg``: the Hebbian quantity; the element's
    co-content is ``g Phi(w)``), ``energy`` the co-content ``sum_e g_e Phi(w_e)`` (b,),
    ``multipliers`` (b, n_ideal) the currents of the ideal diodes in
    ``ideal_edges``, ``iterations`` (b,) Newton iterations per sample.
    """

    multipliers: np.ndarray | None = None
    ideal_edges: np.ndarray | None = None
    iterations: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def currents(self) -> np.ndarray:
        i = self.conductances * self.circuit.elements.phi(self.resistor_voltages)
        if self.ideal_edges is not None and self.ideal_edges.size:
            i[:, self.ideal_edges] = self.multipliers
        return i

    @cached_property
    def active(self) -> np.ndarray:
        """(b, n_ideal) bool: ideal diodes conducting (``mu > 0``)."""
        if self.multipliers is None:
            return np.zeros((self.batch_size, 0), dtype=bool)
        return self.multipliers > 0

    @cached_property
    def energy(self) -> np.ndarray:
        """Co-content ``sum_e g_e Phi_e(w_e)`` per sample (b,)."""
        return self.circuit.elements.Phi(self.resistor_voltages) @ self.conductances

    def energy_derivative(self) -> np.ndarray:
        """``dE/dg_e = Phi_e(w_e)`` per sample (b, m) (resistors: ``w^2 / 2``; ideal diodes: 0)."""
        return self.circuit.elements.Phi(self.resistor_voltages)

    @cached_property
    def tangent_weights(self) -> np.ndarray:
        """``g phi'(w)`` (b, m): the small-signal conductances at this operating point."""
        return self.conductances * self.circuit.elements.dphi(self.resistor_voltages)


# --------------------------------------------------------------------------- solver
def _line_search(el, g, w, dw, lin, tmax=None, max_iter: int = 60) -> np.ndarray:
    """Exact line search on the convex ``f(t) = E(u + t du)``, per sample.

    ``f'(t) = sum_e g_e phi_e(w_e + t dw_e) dw_e + lin``. The full Newton step ``t = 1`` is
    taken when ``|f'(1)| <= 0.1 |f'(0)|`` (so Newton's quadratic convergence is kept);
    while ``f'`` is still clearly negative the step is doubled (coming down an exponential
    from above, Newton's steps are too short by far), up to ``tmax`` (default 1; the laws'
    step caps); otherwise the root of ``f'`` in the bracket is found by safeguarded Newton /
    bisection to ``|f'(t)| <= 0.1 |f'(0)|``.
    """
    def fp(t, idx):
        return np.einsum("bm,bm->b", g * el.phi(w[idx] + t[:, None] * dw[idx]), dw[idx]) + lin[idx]

    b = w.shape[0]
    every = np.arange(b)
    f0 = fp(np.zeros(b), every)
    tcap = np.ones(b) if tmax is None else np.asarray(tmax, dtype=float)
    t = np.minimum(1.0, tcap)
    f = fp(t, every)
    tol = LINE_SEARCH_TOL * np.abs(f0)
    lo, flo = np.zeros(b), f0.copy()
    grow = np.flatnonzero((f0 < 0) & (f < -tol) & (t < tcap))
    for _ in range(30):  # expansion: at most 2^30
        if not grow.size:
            break
        lo[grow], flo[grow] = t[grow], f[grow]
        t[grow] = np.minimum(2.0 * t[grow], tcap[grow])
        f[grow] = fp(t[grow], grow)
        grow = grow[(f[grow] < -tol[grow]) & (t[grow] < tcap[grow])]
    need = np.flatnonzero((f0 < 0) & (f > tol))
    if not need.size:
        return t
    lo, hi = lo[need], t[need].copy()
    flo, fhi = flo[need], f[need]
    tt = lo + (hi - lo) * np.clip(-flo / (fhi - flo), 1e-3, 0.999)  # regula falsi start
    for _ in range(max_iter):
        fn = fp(tt, need)
        done = np.abs(fn) <= tol[need]
        if done.all():
            break
        pos = fn > 0
        hi = np.where(pos, tt, hi)
        lo = np.where(pos, lo, tt)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            fpp = np.einsum("bm,bm->b", g * el.dphi(w[need] + tt[:, None] * dw[need]), dw[need] ** 2)
            newton = tt - fn / fpp
        ok = np.isfinite(newton) & (newton > lo) & (newton < hi)
        tt = np.where(done, tt, np.where(ok, newton, 0.5 * (lo + hi)))
    t[need] = tt
    return t


def _dependent_ideal(circuit, edges) -> list[int]:
    """Ideal-diode edges (of ``edges``) that close a loop through other ideal diodes and
    the clamped nodes (all clamped nodes merged into one): no resistance in the loop."""
    net = circuit.network
    parent = np.arange(net.n_nodes + 1)
    root = net.n_nodes  # the super node of every clamped node

    def find(v):
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    def node(v):
        return root if circuit.is_clamped[v] else v

    bad = []
    for e in edges:
        a, b = find(node(net.tails[e])), find(node(net.heads[e]))
        if a == b:
            bad.append(int(e))
        else:
            parent[a] = b
    return bad


def _no_descent(i, dw, lin, r, du) -> np.ndarray:
    """(b,) bool: the step ``du`` is no usable descent direction of the energy: not finite,
    or ``E'(0) = i . dw + lin`` not below ``-DESCENT_COS |r| |du|`` (the angle condition of
    globalized Newton; a garbage step from a tangent factorized on cancellation noise is
    nearly orthogonal to the gradient ``r`` and makes the line search stall)."""
    with np.errstate(over="ignore", invalid="ignore"):
        f0 = np.einsum("bm,bm->b", i, dw) + lin
        size = np.linalg.norm(r, axis=1) * np.linalg.norm(du, axis=1)
        return ~(f0 < -DESCENT_COS * size) | ~np.all(np.isfinite(du), axis=1)


def _settled(du, uu, ss, rtol) -> np.ndarray:
    """(b,) bool: a full Newton step ``du`` (b, nf) that moves no free potential by more than
    ``rtol`` times the sample's voltage scale ``max |u| + max |s|`` (the potentials are then
    determined to that accuracy, :func:`_kcl_test`)."""
    vs = np.abs(uu).max(axis=1) + np.abs(ss).max(axis=1, initial=0.0)
    return np.abs(du).max(axis=1, initial=0.0) <= rtol * vs


def _edge_scale(asm, uu, ss) -> np.ndarray:
    """``|u_a| + |u_b| + |s_e| + |u|_inf`` (b, m): the scale of each computed edge voltage
    (potentials are solved to ``eps |u|_inf``)."""
    return np.asarray((asm.absBT @ np.abs(uu).T).T) + np.abs(ss) + np.abs(uu).max(axis=1, keepdims=True)


def _rounding(asm, uu, ss, weights) -> np.ndarray:
    """``rho_v = 64 eps sum_e |B_ve| g_e phi'(w_e) (|u_a| + |u_b| + |s_e| + |u|_inf)`` (b, nf):
    the rounding level of the free nodes' computed currents (:func:`_kcl_test`)."""
    return ROUNDING * np.asarray((asm.absBF @ (weights * _edge_scale(asm, uu, ss)).T).T)


def _kcl_test(fac, uu, ss, mm, JJ, act, settled=None):
    """The stopping rule (module docstring) at potentials ``uu`` (b, n): returns
    ``(w, i, r, weights, ratio, ok)`` with ``r`` the free nodes' KCL residual,
    ``weights = g phi'(w)``, ``ratio = max(|r| - rho, 0) / s`` per node and ``ok`` (b,).

    The scale ``s_v`` is the node's own: no floor relative to other nodes (a node carrying
    mA next to a diode carrying 1e17 A is still checked to ``rtol``); ``rho_v`` is the
    rounding level of the node's computed currents, ``64 eps sum_e |B_ve| g_e phi'(w_e)
    (|u_a| + |u_b| + |s_e| + |u|_inf)`` (potentials are solved to ``eps |u|_inf``).

    ``settled`` (b,) bool marks samples whose last full Newton step was at the rounding
    level (:func:`_settled`): their potentials are determined to ``rtol`` of the voltage
    scale, and they pass with a residual ratio up to ``SETTLED_RTOL``. In stiff circuits
    (forward diodes carrying 1e5 times the currents of the resistors beside them) the
    rounding of the stiff elements' currents moves the potentials of a whole cluster by
    ``eps`` times the stiffness ratio, which the per-node floor ``rho_v`` of a resistor
    next to the cluster cannot see: Newton then makes no further progress."""
    c, g, el = fac.circuit, fac.conductances, fac.circuit.elements
    asm = _assembly(c)
    ww = np.asarray((c._BT @ uu.T).T) + ss
    ii = g * el.phi(ww)
    r = np.asarray((asm.BF @ ii.T).T) - JJ
    scale = np.asarray((asm.absBF @ np.abs(ii).T).T) + np.abs(JJ)
    if asm.nc:
        r += mm @ asm.C.T
        scale += np.abs(mm) @ asm.absC.T
    weights = g * el.dphi(ww)  # tangent conductances g phi'(w)
    rounding = _rounding(asm, uu, ss, weights)
    with np.errstate(invalid="ignore", over="ignore"):
        rel = np.maximum(np.abs(r) - rounding, 0.0) / np.maximum(scale, 1e-300)
    rel = np.where(np.isfinite(rel), rel, np.inf)
    worst = rel.max(axis=1, initial=0.0)
    ok = worst <= fac.rtol
    if settled is not None:
        ok |= settled & (worst <= SETTLED_RTOL)
    if asm.nc:
        wc = ww[:, asm.ci]
        vs = np.abs(uu).max(axis=1) + np.abs(ss).max(axis=1, initial=0.0) + 1e-300
        isc = scale.max(axis=1, initial=0.0) + 1e-300
        tolv = (fac.ctol * vs)[:, None]
        comp = (wc <= tolv) & (~act | (np.abs(wc) <= tolv)) & (mm >= -(fac.ctol * isc)[:, None])
        ok &= comp.all(axis=1)
    return ww, ii, r, weights, rel, ok


def equilibrium(fac, x, currents=None, clamp=None, warm_start=None,
                warm_multipliers: bool = False, deflate: bool = False) -> NonlinearState:
    """The exact equilibrium of a nonlinear circuit (module docstring); see
    :meth:`NonlinearFactorization.solve`. ``deflate``: the damped iteration's dense steps
    of tangents with floating clusters by the subtraction-free elimination
    (:class:`TangentSystem`)."""
    c = fac.circuit
    g = fac.conductances
    el = c.elements
    asm = _assembly(c)
    xn, xs, xc, _ = c.driver_values(x, clamp)
    b, n, nf, nc = xn.shape[0], c.network.n_nodes, asm.nf, asm.nc
    u = np.zeros((b, n))
    u[:, c.input_nodes] = xn
    u[:, c.clamped_nodes] = xc
    s = c.edge_sources(xs)
    if s is None:
        s = np.zeros((b, asm.m))
    JF = np.zeros((b, nf))
    if currents is not None:
        J, _ = as_batch(currents, n, "currents")
        if J.shape[0] not in (1, b):
            raise ShapeError(f"currents has batch {J.shape[0]} but x has batch {b}")
        JF = np.broadcast_to(J[:, c.free_nodes], (b, nf)).copy()
    mu = np.zeros((b, nc))
    active = np.zeros((b, nc), dtype=bool)
    if warm_start is not None:
        wp = warm_start.potentials if isinstance(warm_start, State) else np.asarray(warm_start, float)
        if wp.ndim == 1:
            wp = wp[None]
        if wp.shape[1] != n or wp.shape[0] not in (1, b):
            raise ShapeError(f"warm_start potentials must have shape ({b}, {n}), got {wp.shape}")
        u[:, c.free_nodes] = wp[:, c.free_nodes]
        if nc and isinstance(warm_start, NonlinearState) and warm_start.multipliers is not None \
                and warm_start.multipliers.shape[0] in (1, b):
            active[:] = warm_start.multipliers > 0
            if warm_multipliers:  # the start is an exact solution (layered): accept it as it is
                mu[:] = np.where(active, warm_start.multipliers, 0.0)
    BT = c._BT
    # ideal diodes between clamped nodes: their voltage is fixed by the drivers
    if asm.ci_fixed.size:
        wfix = np.asarray((BT @ u.T).T)[:, asm.ci_fixed] + s[:, asm.ci_fixed]
        vs = np.abs(u).max(axis=1) + np.abs(s).max(axis=1, initial=0.0) + 1e-300
        bad = wfix > fac.ctol * vs[:, None]
        if bad.any():
            smp, j = np.argwhere(bad)[0]
            edges = asm.ci_fixed[bad.any(axis=0)]
            raise BoundaryConditionError(
                f"ideal diode edge(s) {_list(edges)} connect clamped nodes and are forward-biased "
                f"(sample {smp}: w = {wfix[smp, j]:.6g} V > 0) with no resistance in the loop: the "
                f"circuit has no equilibrium. Put a resistance in series (Rectifier()) or change "
                f"the inputs")
    w0 = el.initial_voltages
    wc = np.asarray((BT @ u.T).T) + s
    limited = fac.limiting and not nc and not el.piecewise_linear
    if warm_start is None and np.any(w0 != 0):
        # cold start: one linear solve with every law linearized at its voltage for u_F = 0,
        # diodes at most at vcrit forward: i ~ g (phi(w0) + phi'(w0) (w - w0))
        w0 = np.where(w0 != 0, np.minimum(wc, w0), wc)  # diodes: at most vcrit forward
    else:  # a warm start: linearized at its own voltages, diodes at most vcrit + 20 n Vt forward
        w0 = np.minimum(wc, el.max_start_voltages)
    iters = np.zeros(b, dtype=np.int64)
    settled = np.zeros(b, dtype=bool)  # the last full Newton step was at the rounding level
    cache = {}  # the limited iteration's last tangent factorizations (sparse backends)
    prior = fac._tangents.get(warm_start) if isinstance(warm_start, NonlinearState) else None
    lanes = limited and _lanes(fac, b)  # lanes: every step a new factorization, nothing kept to reuse
    if not lanes and prior is not None and len(prior[0]) == b:  # the start's own last factorizations (chord steps)
        cache["factors"] = (list(prior[0]), prior[1].copy())
    elif not lanes and limited and warm_start is None and not fac.dense and fac.plan[0] == "numpy":
        first_tangent = fac._cold_tangent(w0[0])  # cold: a shared first tangent
        if first_tangent is not None:
            cache["factors"] = ([first_tangent[0]] * b, np.tile(first_tangent[1], (b, 1)))
    todo = np.arange(b)
    if limited:  # the limited Newton iteration's first step is the cold-start solve
        first = el.initial_voltages if warm_start is None else None  # cold: then min(w, vcrit)
        limited_newton = _limited_newton
        if lanes:
            limited_newton = _lanes_newton
        elif _jit_nonlinear.enabled():
            if fac.plan[0] != "numpy":
                limited_newton = _compiled_newton
            elif not fac.dense and asm.kernel is not None:
                limited_newton = _sparse_newton
        todo = np.flatnonzero(~limited_newton(fac, u, s, JF, w0, iters, settled, first, cache))
    elif warm_start is None and np.any(el.initial_voltages != 0):
        d0 = g * el.dphi(w0)
        i0 = d0 * wc + g * (el.phi(w0) - el.dphi(w0) * w0)
        rhs = np.zeros((b, nf + nc, 1))
        rhs[:, :nf, 0] = JF - np.asarray((asm.BF @ i0.T).T)
        try:
            u[:, c.free_nodes] = TangentSystem(c, np.ascontiguousarray(d0), active, fac.dense,
                                               fac.backend).solve(rhs)[:, :nf, 0]
        except _Singular:
            pass  # keep u_F = 0
    cpd = float(np.mean(g))  # units of the active-set test mu + c w
    # a Newton step that is no descent direction is recomputed with tangent weights of at least
    # STEP_FLOOR g phi'(0) (diodes: 1e-2 g Is / n Vt; resistors and rectifiers unchanged): a
    # deep-reverse diode's g phi'(w) underflows, and a cluster of nodes tied to the rest only
    # through such diodes makes the factorization pivot on cancellation noise. Only the step
    # changes, not the residual: the equilibrium is the same (computed where first needed)
    wfloor = None
    floored = np.zeros(b, dtype=bool)
    dense = fac.dense
    seen = [dict() for _ in range(b)] if el.piecewise_linear else None  # active sets visited
    force = np.zeros(b, dtype=bool)  # samples the error estimate sent back
    smooth = nf > 0 and all(law.kind in ("resistor", "diode") for law in el.laws)
    for polish in range(POLISH_STEPS + 1):
        start = iters.copy()  # iterations already spent (limited Newton) by the samples left
        checked = None  # the compiled stopping rule at every sample's state, where nothing moved since
        if polish and todo.size and not force[todo].any():
            # after the estimate's Newton step: the compiled stopping rule first, at every
            # sample (most pass it; the numpy test below computes what a damped step needs);
            # where all of them pass, it is also the final check's
            checked = _compiled_kcl_test(fac, u, s, mu, JF, settled)
            if checked[2] is not None and checked[2][todo].all():
                todo = todo[:0]
            else:
                checked = None
        for it in range(fac.max_iter + 1 if todo.size else 0):
            uu = u[todo]
            mm = mu[todo]
            JJ = JF[todo]
            ww, ii, r, weights, rel, ok = _kcl_test(fac, uu, s[todo], mm, JJ, active[todo], settled[todo])
            ok &= ~force[todo]  # sent back by the error estimate: at least one step
            iters[todo] = start[todo] + it
            todo, keep = todo[~ok], ~ok
            if not todo.size:
                break
            if it == fac.max_iter:
                relk = rel[keep]
                smp, v = np.unravel_index(np.argmax(relk), relk.shape)
                node = int(c.free_nodes[v])
                hint = ""
                if nc:
                    hint = (f"; conducting ideal diodes of that sample: "
                            f"{_list(asm.ci[active[todo[smp]]])}")
                raise ConvergenceError(
                    f"nonlinear equilibrium did not converge in {fac.max_iter} Newton iterations: "
                    f"sample {int(todo[smp])}, worst node {node}, KCL residual {r[keep][smp, v]:.3e} A "
                    f"(relative {relk[smp, v]:.3e} > rtol={fac.rtol:g}){hint}. Check for unbounded "
                    f"or infeasible circuits, or raise max_iter")
            uu, ww, ii, r, JJ, weights = uu[keep], ww[keep], ii[keep], r[keep], JJ[keep], weights[keep]
            if wfloor is None:
                wfloor = STEP_FLOOR * g * el.dphi(np.zeros((1, asm.m)))
            act = active[todo]
            if asm.loops:  # dependent constraints (loops of conducting ideal diodes): keep a forest
                act, dropped = _independent(c, asm, act)
                active[todo] = act
            rhs = np.zeros((todo.size, nf + nc, 1))
            rhs[:, :nf, 0] = -(r - (mu[todo] @ asm.C.T if nc else 0.0))  # -(B_F i - J_F)
            if nc:
                rhs[:, nf:, 0] = -ww[:, asm.ci] * act
            fl = floored[todo]
            ts = TangentSystem(c, np.where(fl[:, None], np.maximum(weights, wfloor), weights), act, dense,
                               fac.backend, deflate=deflate)
            try:
                sol = ts.solve(rhs)[:, :, 0]
            except _Singular:
                raise _infeasible(c, asm, todo, act) from None
            du = sol[:, :nf]
            tiny = ~fl & _settled(du, uu, s[todo], fac.rtol)  # the Newton step is at the rounding level
            mu_new = sol[:, nf:] * act if nc else np.zeros((todo.size, 0))
            dw = np.asarray((c._BT_free @ du.T).T)
            lin = -np.einsum("bf,bf->b", JJ, du)
            if nc:
                lin = lin + np.einsum("bc,bc->b", mu_new, dw[:, asm.ci])
            if el.is_linear:
                t = np.ones(todo.size)
            else:  # step cap of the laws (diodes: no huge forward overshoot), then exact line search
                if not nc and not el.piecewise_linear:  # a tangent too ill-conditioned to descend:
                    bad = _no_descent(ii, dw, lin, r, du)
                    retry = bad & ~fl
                    if retry.any():  # first the floored tangent (kept for that sample), then Jacobi's step
                        floored[todo[retry]] = True
                        du, dw, lin = du.copy(), dw.copy(), lin.copy()
                        try:
                            du[retry] = TangentSystem(c, np.maximum(weights[retry], wfloor), act[retry],
                                                      dense, fac.backend, deflate=deflate
                                                      ).solve(rhs[retry])[:, :nf, 0]
                        except _Singular:
                            du[retry] = np.nan
                        dw[retry] = np.asarray((c._BT_free @ du[retry].T).T)
                        lin[retry] = -np.einsum("bf,bf->b", JJ[retry], du[retry])
                        bad = _no_descent(ii, dw, lin, r, du)
                    if bad.any():
                        du, dw, lin = du.copy(), dw.copy(), lin.copy()
                        diag = np.asarray((asm.absBF @ weights[bad].T).T)
                        diag = np.maximum(diag, 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300)
                        du[bad] = -r[bad] / diag  # -grad E scaled by diag(H)^-1: always descends
                        dw[bad] = np.asarray((c._BT_free @ du[bad].T).T)
                        lin[bad] = -np.einsum("bf,bf->b", JJ[bad], du[bad])
                t = _line_search(el, g, ww, dw, lin, np.clip(el.max_step(ww, dw), 1e-6, MAX_STEP))
            u[todo[:, None], c.free_nodes[None, :]] = uu[:, c.free_nodes] + t[:, None] * du
            settled[todo] = tiny
            force[todo] = False
            if nc:
                mu[todo] = mu_new
                w_new = ww[:, asm.ci] + t[:, None] * dw[:, asm.ci]
                if asm.loops:
                    vs = np.abs(u[todo]).max(axis=1) + np.abs(s[todo]).max(axis=1, initial=0.0) + 1e-300
                    tolv = (fac.ctol * vs)[:, None]
                    forced = dropped & (w_new > tolv) & (t[:, None] == 1.0) \
                        & (mu_new >= -tolv * cpd).all(axis=1, keepdims=True)
                    if forced.any():  # a loop of conducting ideal diodes is forward-biased
                        smp = int(np.flatnonzero(forced.any(axis=1))[0])
                        loop = asm.ci[forced[smp] | act[smp]]
                        raise BoundaryConditionError(
                            f"ideal diode edge(s) {_list(asm.ci[forced[smp]])} (with the conducting ideal "
                            f"diodes {_list(asm.ci[act[smp]])}) form a loop through clamped nodes with no "
                            f"resistance and are forward-biased (sample {int(todo[smp])}): the circuit has "
                            f"no equilibrium. Put a resistance in the loop (Rectifier()) or change the "
                            f"inputs; edges involved: {_list(loop)}")
                active[todo] = (mu_new + cpd * w_new) > 0
            if seen is not None:  # piecewise linear, full step: the next iterate depends on the active set only
                full = t == 1.0
                for smp in todo[~full]:
                    seen[smp].clear()  # a partial step: what follows is not a function of the set
                _check_cycle(seen, todo[full], act[full], weights[full] > 0, it, asm)
        r, weights = _final_checks(fac, u, s, mu, JF, settled, passive=smooth, checked=checked)
        if not smooth:
            break
        # Newton's error estimate (_newton_estimate): samples the damped iteration finished
        # have moved on from their cached factorization, the drift test refactorizes them
        err, vs, newton = _newton_estimate(fac, u, s, r, weights, cache.get("factors"), cache.pop("estimate", None))
        far = err > CERTIFY_RTOL * vs[:, None]
        if not far.any():
            break
        far_samples = np.flatnonzero(far.any(axis=1))
        if newton is not None and polish < NEWTON_POLISH and np.all(np.isfinite(newton[far_samples])):
            # first the (chord) Newton step the estimate has just solved: u_F - H^-1 r
            u[far_samples[:, None], c.free_nodes[None, :]] -= newton[far_samples]
            iters[far_samples] += 1
            settled[far_samples] = False
            todo = far_samples  # the damped iteration takes them on only if the stopping rule now fails
            continue
        smp, v = np.unravel_index(int(np.argmax(err / np.maximum(vs, 1e-300)[:, None])), err.shape)
        if polish == POLISH_STEPS or not np.all(np.isfinite(err[far.any(axis=1)])):
            raise IllConditionedError(
                f"the equilibrium is too ill-conditioned for double precision: sample {int(smp)}, node "
                f"{int(c.free_nodes[v])} is determined only to +-{err[smp, v]:.1e} V (a Newton step at "
                f"the returned state would move it that far, after {polish} rounds of damped steps), more than "
                f"CERTIFY_RTOL={CERTIFY_RTOL:g} of the voltage scale {vs[smp]:.3g} V: the currents that "
                f"fix its potential are below the rounding of the larger currents around it. Typically "
                f"a cluster of nodes joined by large conductances and held only by the tiny currents of "
                f"reverse-biased diodes: give it a path of moderate conductance to a driven node, or "
                f"rescale the conductances")
        # back to the damped iteration (exact line search on the co-content: the direction of a
        # cluster held by leakage is nearly singular, the step's size comes from the search)
        todo = np.flatnonzero(far.any(axis=1))
        force[todo] = True
        settled[todo] = False
    state = NonlinearState(c, fac.conductances, u, None if c.source_edges.size == 0 else s,
                           multipliers=mu, ideal_edges=asm.ci, iterations=iters)
    fac._keep_tangents(state, cache.get("factors"))
    return state


def _limited_newton(fac, u, s, JF, v, iters, settled, first=None, cache=None) -> np.ndarray:
    """SPICE's Newton iteration with junction limiting, on every sample at once; returns
    (b,) bool, the samples whose potentials ``u`` (b, n; updated in place) passed the
    stopping rule. Circuits without ideal diodes or piecewise-linear laws only.

    Each iteration linearizes every law at its own voltage ``v_e`` (companion model
    ``i_e ~ g_e (phi(v_e) + phi'(v_e) (w_e - v_e))``), solves the linear network for the
    step, and sets the next ``v = limit(v, w)`` (:meth:`kirchnet.elements.Law.limit`:
    diodes are kept from jumping up their exponential; other laws ``v = w``, Newton's step).
    Where no law limits, the iteration is Newton's, quadratically convergent, with no line
    search. It carries no global convergence guarantee (SPICE's has none either): a sample
    whose worst KCL ratio stalls for ``LIMITED_STALL`` iterations, whose step is not
    finite, or that is still unconverged after ``max_iter`` iterations, is handed back at its
    best iterate to the damped Newton iteration (exact line search on the convex co-content).
    ``v`` (b, m): the linearization voltages of the first step (the cold start's, or the
    start's own drops); ``cache`` (a dict or ``None``) receives ``"factors"``: each sample's
    last tangent factorization (sparse backends; ``None`` where it has none) and the weights
    it was built from (and starts from those it already holds: a warm start's state's);
    ``first`` (m,) or ``None``: after a cold start's first solve the
    laws with a nonzero entry (diodes: ``vcrit``, SPICE's initial junction voltage) are
    linearized at ``min(w, first)`` instead of being limited (a diode the cold start's
    nearly open network reverse-biases starts reverse-biased, one it forward-biases starts
    at ``vcrit``); ``iters`` (b,) receives the iterations spent, ``settled`` (b,) whether
    the last step was an unlimited Newton step at the rounding level.
    """
    c, g, el = fac.circuit, fac.conductances, fac.circuit.elements
    asm = _assembly(c)
    b, nf = u.shape[0], asm.nf
    v = np.array(v, dtype=float)  # the linearization voltages, updated per iteration
    none = np.zeros((b, 0))
    done = np.zeros(b, dtype=bool)
    best, best_u, since = np.full(b, np.inf), u.copy(), np.zeros(b, dtype=np.int64)
    todo = np.arange(b)
    # sparse: each sample's last tangent factorization (chord steps; a warm start's own, if
    # kept) and the tangent weights it was built from
    factors, factored = cache["factors"] if cache and "factors" in cache else ([None] * b, np.zeros((b, asm.m)))
    for it in range(fac.max_iter + 1):
        uu = u[todo]
        ww, ii, r, weights, rel, ok = _kcl_test(fac, uu, s[todo], none[todo], JF[todo], none[todo],
                                                settled[todo])
        iters[todo] = it
        worst = rel.max(axis=1, initial=0.0)
        better = worst < best[todo]
        best[todo[better]], best_u[todo[better]] = worst[better], uu[better]
        since[todo] = np.where(better, 0, since[todo] + 1)
        done[todo[ok]] = True
        keep = ~ok & (since[todo] <= LIMITED_STALL)
        todo, uu, ww, ii, weights = todo[keep], uu[keep], ww[keep], ii[keep], weights[keep]
        if not todo.size or it == fac.max_iter:
            break
        if it == 0:
            vv = v[todo]
        elif it == 1 and first is not None:  # after the cold start's solve: at most vcrit forward
            vv = np.where(first != 0, np.minimum(ww, first), ww)
        else:
            vv = el.limit(v[todo], ww) if el.limits else ww
        v[todo] = vv
        moved = vv != ww
        newton = ~moved.any(axis=1)  # no law limited: a plain Newton step
        ic = ii
        if moved.any():  # the companion model at the limited voltages
            dv = g * el.dphi(vv)
            weights = np.where(moved, dv, weights)
            ic = np.where(moved, g * el.phi(vv) + dv * (ww - vv), ii)
        rhs = -(np.asarray((asm.BF @ ic.T).T) - JF[todo])
        ts = TangentSystem(c, weights, np.zeros((todo.size, 0), dtype=bool), fac.dense, fac.backend)
        try:
            if fac.dense:  # one batched LAPACK call
                du = ts.solve(rhs[:, :, None])[:, :nf, 0]
            else:  # a chord step (the last factorization) where no tangent weight drifted
                du = _chord_solve(ts, rhs, todo, factors, factored)[0]
        except _Singular:
            break  # every sample left goes on with the damped iteration
        finite = np.all(np.isfinite(du), axis=1)
        settled[todo] = newton & finite & _settled(du, uu, s[todo], fac.rtol)
        u[todo[finite, None], c.free_nodes[None, :]] += du[finite]
        todo = todo[finite]
    rest = np.flatnonzero(~done)
    u[rest] = best_u[rest]
    settled[rest] = False
    if cache is not None:
        cache["factors"] = (factors, factored)
    return done


def _run_kernel(kernel, fac, u, s, JF, v, iters, settled, first, cache, order, *extra) -> np.ndarray:
    """Runs a compiled limited iteration (:func:`kirchnet._jit_nonlinear.nodal_newton`,
    :func:`~kirchnet._jit_nonlinear.lanes_newton`) with the free positions in ``order``'s
    (``perm``, and ``fa``/``fb`` the edge ends in it): their common arguments, then
    ``extra``. Writes ``iters`` and ``settled``, puts the kernel's error estimate ``|H^-1 r|``
    at each converged state (b, nf; NaN elsewhere) back in the free nodes' order into
    ``cache["estimate"]`` and returns ``done``."""
    c, k = fac.circuit, _assembly(fac.circuit).kernel
    perm = order.perm
    cold = first is not None
    its, done, sett, est = kernel(
        u, np.ascontiguousarray(s, dtype=float), np.ascontiguousarray(JF[:, perm], dtype=float),
        np.ascontiguousarray(v, dtype=float), cold, first if cold else np.zeros(c.network.n_edges),
        c.free_nodes[perm], order.fa, order.fb, *k[2:], np.ascontiguousarray(fac.conductances, dtype=float),
        *k.params, fac.rtol, SETTLED_RTOL, ROUNDING, fac.max_iter, LIMITED_STALL, *extra)
    iters[:] = its
    settled[:] = sett
    if cache is not None:
        step = np.empty_like(est)
        step[:, perm] = est
        cache["estimate"] = step
    return done


def _compiled_newton(fac, u, s, JF, v, iters, settled, first=None, cache=None) -> np.ndarray:
    """:func:`_limited_newton` compiled (:func:`kirchnet._jit_nonlinear.nodal_newton`: the
    same iterates, stopping rule and stall test, a sample at a time, no Python per
    iteration) for resistor-diode circuits: each step by Woodbury's identity on the port
    reduction where :attr:`NonlinearFactorization.plan` has one, else by an envelope
    Cholesky factorization of the tangent; on sparse backends with chord steps, as the
    numpy iteration there (the last envelope or capacitance factorization reused while no
    tangent weight drifted more than ``CHORD_DRIFT``). Same arguments and result; ``cache``
    receives ``"estimate"`` (b, nf): Newton's error estimate ``|H^-1 r|`` at each converged
    state (NaN elsewhere), from the kernel's last factorization (:func:`_run_kernel`)."""
    red = fac.ports
    tangent = _assembly(fac.circuit).kernel.envelope
    if red is not None:  # steps by Woodbury on the port reduction: the free positions in L_R's envelope order
        order = red.envelope
        inv = np.empty_like(order.perm)
        inv[order.perm] = np.arange(order.perm.size)
        wood = (red.env_factor, order.first, order.rowptr, red.PT_env, red.Z, red.edges, PORT_TAU, PORT_STIFF,
                PORT_FULL, tangent.fa, tangent.fb, inv[tangent.perm])  # stiff steps: on the tangent's envelope
    else:  # steps on the tangent's envelope: the free positions in its order
        order = tangent
        empty = np.zeros(0, dtype=np.int64)
        wood = (np.zeros(0), empty, empty, np.zeros((0, 0)), np.zeros((0, 0)), empty, 0.0, 0.0, 0.0, empty, empty, empty)
    return _run_kernel(_jit_nonlinear.nodal_newton, fac, u, s, JF, v, iters, settled, first, cache, order,
                       tangent.first, tangent.rowptr, 0.0 if fac.dense else CHORD_DRIFT, *wood)


def _lanes(fac, b: int) -> bool:
    """Whether the limited iteration of a batch of ``b`` samples runs in lanes
    (:func:`_lanes_newton`): resistors and diodes, numba enabled, at least
    :data:`LANES_MIN_BATCH` samples, no port reduction asked for, and the tangent's sparse
    factor within :data:`LANES_MAX_FLOPS` and :data:`LANES_BYTES`."""
    k = _assembly(fac.circuit).kernel
    if b < LANES_MIN_BATCH or k is None or fac.port_reduction is True or not _jit_nonlinear.enabled():
        return False
    pattern = k.factor
    return pattern.factor_flops <= LANES_MAX_FLOPS and pattern.nnz * _jit_nonlinear.LANES * 8 <= LANES_BYTES


def _lanes_newton(fac, u, s, JF, v, iters, settled, first=None, cache=None) -> np.ndarray:
    """:func:`_limited_newton` compiled, :data:`kirchnet._jit_nonlinear.LANES` samples side by
    side (:func:`kirchnet._jit_nonlinear.lanes_newton`): the same iterates, stopping rule and
    stall test, each step a new factorization of the full tangent on its sparse factor in
    CHOLMOD's fill-reducing order (no chord steps), the lanes' factorizations and solves
    vectorized together. Same arguments and result; ``cache`` receives ``"estimate"`` (as
    :func:`_compiled_newton`)."""
    pattern = _assembly(fac.circuit).kernel.factor
    return _run_kernel(_jit_nonlinear.lanes_newton, fac, u, s, JF, v, iters, settled, first, cache, pattern,
                       CHORD_DRIFT, *pattern.arrays)


def _sparse_newton(fac, u, s, JF, v, iters, settled, first=None, cache=None) -> np.ndarray:
    """:func:`_limited_newton` on a sparse backend (CHOLMOD, SuperLU) for resistor-diode
    circuits, one sample at a time, with each iteration's edge work compiled
    (:func:`kirchnet._jit_nonlinear.evaluate`: the stopping rule's residual, scales and
    rounding levels; :func:`kirchnet._jit_nonlinear.companion_rhs`: the limited
    linearization voltages, the companion model and the step's right-hand side): the same
    iterates, stopping rule, stall test and chord steps (a sample's last factorization
    reused while no tangent weight drifted more than ``CHORD_DRIFT``, else a low-rank update
    or a new one: :func:`_refreshed`; a warm start's own, where its state kept them), with numpy's ~20
    passes over the edges per iteration replaced by two (3 ms -> 0.3 ms per iteration on
    a 10^4-node diode lattice, where a numeric factorization takes ~8 ms). The
    factorizations are :meth:`TangentSystem._factor_one`'s (the two-level solve where the
    plain one fails). Same arguments and result; ``cache`` receives ``"factors"``."""
    c, k = fac.circuit, _assembly(fac.circuit).kernel
    fa, fb, ta, hb, code = k
    Is, nvt, vcrit, xmax, dmax, dmin = k.params
    g = np.ascontiguousarray(fac.conductances, dtype=float)
    b, m, nf = u.shape[0], g.size, c.n_free
    cold = first is not None
    first = np.ascontiguousarray(first, dtype=float) if cold else np.zeros(m)
    JF = np.ascontiguousarray(JF, dtype=float)
    s = np.ascontiguousarray(s, dtype=float)
    free, none = c.free_nodes, np.zeros((1, 0), dtype=bool)
    w, cur, D, ic = (np.empty(m) for _ in range(4))
    r, sc, rho, rhs = (np.empty(nf) for _ in range(4))
    done = np.zeros(b, dtype=bool)
    factors, factored = cache["factors"] if cache and "factors" in cache else ([None] * b, np.zeros((b, m)))
    for smp in range(b):
        uu, ss, jf = u[smp], s[smp], JF[smp]
        vv = np.array(v[smp], dtype=float)  # the linearization voltages
        smax = float(np.abs(ss).max(initial=0.0))
        best, best_u, since, sett = np.inf, uu.copy(), 0, False
        for it in range(fac.max_iter + 1):
            worst, uinf = _jit_nonlinear.evaluate(uu, ss, jf, ta, hb, fa, fb, code, g, Is, nvt, xmax, ROUNDING,
                                                  w, cur, D, r, sc, rho)
            iters[smp] = it
            if worst < best:
                best, since = worst, 0
                best_u[:] = uu
            else:
                since += 1
            if worst <= fac.rtol or (sett and worst <= SETTLED_RTOL):
                done[smp], settled[smp] = True, sett
                break
            if since > LIMITED_STALL or it == fac.max_iter:
                break
            newton = _jit_nonlinear.companion_rhs(it, cold, first, vv, w, cur, D, ic, code, g, Is, nvt, vcrit,
                                                  xmax, dmax, dmin, jf, fa, fb, rhs)
            if factors[smp] is None or _jit_nonlinear._drifted(D, factored[smp], CHORD_DRIFT):
                ts = TangentSystem(c, D.copy()[None], none, False, fac.backend)  # a factorization may keep D
                try:
                    factors[smp], factored[smp], _ = _refreshed(ts, 0, factors[smp], factored[smp])
                except _Singular:
                    factors[smp] = None
                    break  # the sample goes on with the damped iteration
            du = np.asarray(factors[smp].solve(rhs)).reshape(nf)
            if not np.all(np.isfinite(du)):
                break
            sett = newton and float(np.abs(du).max(initial=0.0)) <= fac.rtol * (uinf + smax)
            uu[free] += du
        if not done[smp]:
            uu[:] = best_u
            settled[smp] = False
    if cache is not None:
        cache["factors"] = (factors, factored)
    return done


def _updatable(asm, pat, edges, old, new, factored, d) -> bool:
    """Whether an up/downdate of ``edges`` from weights ``old`` to ``new`` keeps the factor
    accurate: each changes by less than ``LOWRANK_RANGE``, or (a diode switching between
    reverse and forward) its larger weight is at most ``LOWRANK_DOMINANCE`` times the other
    conductance at each of its free ends, so that the rounding of the change,
    ``eps max(old, new)``, stays far below what holds those nodes."""
    ok = np.minimum(old, new) * LOWRANK_RANGE >= np.maximum(old, new)
    if ok.all():
        return True
    e = edges[~ok]
    fa, fb = pat.free_tails, pat.free_heads
    lo = np.minimum(factored, d)  # the weights both the old and the new matrix hold at least
    other = np.asarray(asm.absBF @ lo)  # each free node's conductance common to both
    rest = np.full(e.size, np.inf)
    for end in (fa[e], fb[e]):
        free = end >= 0
        rest[free] = np.minimum(rest[free], other[end[free]] - lo[e][free])
    return bool(np.all(np.maximum(old, new)[~ok] <= LOWRANK_DOMINANCE * rest))


def _refreshed(ts, k, factor, factored):
    """A factorization for row ``k`` of ``ts`` from the sample's last one, ``factor`` (or
    ``None``), built from the tangent weights ``factored``: returns ``(factor, weights it
    stands for, chord)``. While every weight is within ``CHORD_DRIFT`` of ``factored`` it is
    ``factor`` itself (a chord step, ``chord`` True); where at most ``LOWRANK_MAX`` weights
    drifted further, each accurately updatable (:func:`_updatable`), and ``factor`` is
    CHOLMOD's, it is updated over those edges, ``H_old + B_k diag(d_k - d_old,k) B_k^T``
    (CHOLMOD's up/downdate; about 0.7 ms for 20 edges on a 10^4-node lattice where a numeric
    factorization takes 5 ms); otherwise a new factorization (``chord`` False)."""
    d = ts.weights[k]
    if factor is not None:
        drift = np.abs(d - factored) > CHORD_DRIFT * factored
        if not drift.any():
            return factor, factored, True
        edges = np.flatnonzero(drift)
        near = np.flatnonzero(np.abs(d - factored) > LOWRANK_EXACT * factored)
        if near.size <= LOWRANK_MAX:  # few weights moved at all: the update makes the factorization exact
            edges = near
        old, new = factored[edges], d[edges]
        if edges.size <= LOWRANK_MAX and isinstance(factor, solvers.CholmodCholesky) \
                and _updatable(ts.asm, ts.circuit._pattern, edges, old, new, factored, d):
            weights = factored.copy()
            weights[edges] = new
            try:
                updated = factor.updated(ts.asm.BF_columns[:, edges], new - old,
                                         ts.circuit._pattern.laplacian(weights))
            except SolverError:  # a downdate lost positive definiteness: refactorize
                pass
            else:
                updated.check = factor.check  # Newton steps: unchecked (the KCL test certifies)
                return updated, weights, True
    return ts._factor_one(k), d.copy(), False


def _chord_solve(ts, rhs, samples, factors, factored):
    """Per-sample sparse solves ``H_k x_k = rhs_k`` (rows ``k`` of ``ts``, samples
    ``samples[k]``) with ``factors[sample]`` (a factorization built from the tangent weights
    ``factored[sample]``) brought up to date by :func:`_refreshed` (kept while no weight
    drifted more than ``CHORD_DRIFT``, a low-rank update, or a new factorization); both are
    replaced. Returns ``(x, reused)``, ``reused`` (k,) bool: the rows solved with a
    factorization of weights within ``CHORD_DRIFT`` of theirs, not their own (a chord step)."""
    x = np.empty_like(rhs)
    reused = np.zeros(len(samples), dtype=bool)
    for k, smp in enumerate(samples):
        factors[smp], factored[smp], reused[k] = _refreshed(ts, k, factors[smp], factored[smp])
        x[k] = np.asarray(factors[smp].solve(rhs[k])).reshape(rhs.shape[1])
    return x, reused


def _compiled_kcl_test(fac, u, s, mu, JF, settled):
    """:func:`_kcl_test`'s stopping rule, compiled (:func:`kirchnet._jit_nonlinear.evaluate`,
    the iterations' own) for circuits of resistors and diodes: ``(r, weights, ok)``, or
    ``(None, None, None)`` where it is not available (ideal elements, other laws, no numba)."""
    k = _assembly(fac.circuit).kernel
    if k is None or mu.shape[1] != 0 or not _jit_nonlinear.enabled():
        return None, None, None
    b, nf = JF.shape
    m = fac.circuit.network.n_edges
    r, weights = np.empty((b, nf)), np.empty((b, m))
    worst = _jit_nonlinear.evaluate_batch(
        np.ascontiguousarray(u, dtype=float), np.ascontiguousarray(np.broadcast_to(s, (b, m))),
        np.ascontiguousarray(JF, dtype=float), k[2], k[3], k[0], k[1], k[4],
        np.ascontiguousarray(fac.conductances, dtype=float), k.params[0], k.params[1], k.params[3],
        ROUNDING, r, weights)
    return r, weights, (worst <= fac.rtol) | (settled & (worst <= SETTLED_RTOL))


def _final_checks(fac, u, s, mu, JF, settled, passive: bool, checked=None):
    """The stopping rule applied once more to the returned state, recomputed from its
    potentials, not from the iterate's bookkeeping (:class:`~kirchnet.errors.ConvergenceError`
    naming the worst sample and node otherwise); for ``passive`` circuits (resistors and
    diodes) also the maximum principle, the nodes fed by injected currents counted as
    driven. ``checked``: :func:`_compiled_kcl_test` already run at exactly these potentials
    (not run again). Returns the state's KCL residual ``r`` (b, nf) and tangent weights
    ``g phi'(w)`` (b, m)."""
    c = fac.circuit
    # certify the returned state itself (recomputed from its potentials, not the iterate's
    # bookkeeping): compiled for resistors and diodes (the iteration's own evaluate), the
    # numpy test where that is not there or something fails (it names the worst node)
    r, weights, ok = checked or _compiled_kcl_test(fac, u, s, mu, JF, settled)
    if ok is None or not ok.all():
        _, _, r, weights, rel, ok = _kcl_test(fac, u, s, mu, JF, mu > 0, settled)
    if not ok.all():
        smp = int(np.flatnonzero(~ok)[0])
        v = int(np.argmax(rel[smp]))
        raise ConvergenceError(
            f"nonlinear equilibrium failed its final check: sample {smp}, worst node "
            f"{int(c.free_nodes[v])}, KCL residual {r[smp, v]:.3e} A (relative {rel[smp, v]:.3e} > "
            f"rtol={fac.rtol:g}) or an ideal diode off complementarity. The tangent systems are "
            f"too ill-conditioned for the Newton steps (rescale the conductances or the inputs)")
    if passive:
        # strictly passive laws (i w > 0 for w != 0): maximum principle, every free potential
        # without an injected current within max |potential| over the driven nodes and the
        # nodes fed by injected currents (the principle holds for the others with those held
        # at their potentials) + sum |series sources|. A state outside it is not an
        # equilibrium even if its residual sits below a rounding floor inflated by its own
        # huge potentials and currents (steep diodes far forward; a warm start once reached
        # 1e14 V next to a node fed by 0.8 mA and passed every other test)
        known = np.ones(c.network.n_nodes, dtype=bool)
        known[c.free_nodes] = False
        uf = np.abs(u[:, c.free_nodes])
        fed = JF != 0
        held = np.maximum(np.abs(u[:, known]).max(axis=1, initial=0.0),
                          np.where(fed, uf, 0.0).max(axis=1, initial=0.0))
        bound = (held + np.abs(s).sum(axis=1)) * (1 + 1e-9)
        out = (uf > bound[:, None] + 1e-300) & ~fed
        if out.any():
            smp, v = np.argwhere(out)[0]
            raise ConvergenceError(
                f"nonlinear equilibrium failed its final check: sample {int(smp)}, node "
                f"{int(c.free_nodes[v])} has potential {u[smp, c.free_nodes[v]]:.3e} V, outside the "
                f"bound {bound[smp]:.3e} V of a passive circuit (maximum principle; nodes fed by "
                f"injected currents count as driven): Newton did not "
                f"converge to the equilibrium (laws too steep for double precision, e.g. a Diode "
                f"with a tiny emission coefficient: use IdealDiode() or Rectifier(), or a larger N)")
    return r, weights


def _newton_estimate(fac, u, s, r, weights, factors=None, step=None):
    """The error estimate of an equilibrium ``u`` (b, n) of resistors and diodes with KCL
    residual ``r`` (b, nf) and tangent weights ``weights`` (b, m) (:func:`_final_checks`):
    returns ``(bound, vs)``, the bound on each free potential's error (b, nf; ``inf`` where
    the step is not finite) and the voltage scales (b,). :func:`equilibrium` sends samples with ``bound > CERTIFY_RTOL vs`` back to the
    damped iteration (at most ``POLISH_STEPS`` rounds), then raises
    :class:`~kirchnet.errors.IllConditionedError`.

    The estimate is Newton's: the error of ``u_F`` is, to first order, the full Newton step
    ``du = -H^{-1} r`` at ``u`` (``r`` the computed KCL residual, ``H`` the tangent
    Laplacian), plus the effect of the rounding of an edge current, a dipole ``delta_e`` at
    the edge's ends whose potential response is at most ``delta_e / (g_e phi'(w_e))``
    (maximum principle), i.e. ``64 eps max_e (|u_a| + |u_b| + |s_e| + |u|_inf)`` (the largest
    single edge; the responses of all edges together decay with distance and are not summed:
    their sum would grow with the network and refuse every large one). The step is
    solved *signed*: rounding noise of the large currents inside a cluster cancels in it,
    while the imbalance of the small currents that fix the cluster's potential does not.
    This catches what the per-node test cannot: a cluster of nodes joined by large
    conductances and held only by the tiny currents of reverse-biased diodes, where the
    rounding floor of the large currents hides a residual that moves the whole cluster by
    millivolts. ``factors`` (from the limited iteration, sparse backends): each sample's last
    tangent factorization and its weights, reused (the step inflated by ``1 / (1 -
    CHORD_DRIFT)``) while no weight drifted more than ``CHORD_DRIFT``; ``step`` (b, nf):
    ``|H^-1 r|`` already computed at these states (the compiled iteration's, from the same
    potentials), used for the samples whose entries are all finite (the others, e.g. handed
    to the damped iteration, are solved here; ``newton`` NaN for the given ones)."""
    c = fac.circuit
    asm = _assembly(c)
    b, nf = u.shape[0], asm.nf
    newton = None
    given = step is not None and step.shape == (b, nf)
    todo = np.flatnonzero(~np.isfinite(step).all(axis=1)) if given else np.arange(b)
    if todo.size:  # not given, or not finite for some samples: solved for those
        step = step.copy() if given else np.empty((b, nf))
        ts = TangentSystem(c, weights[todo], np.zeros((todo.size, 0), dtype=bool), fac.dense, fac.backend)
        rt = r[todo]
        try:
            if fac.dense:
                step[todo] = ts.solve(rt[:, :, None])[:, :nf, 0]
            elif factors is None:
                step[todo] = _chord_solve(ts, rt, np.arange(todo.size), [None] * todo.size,
                                          np.zeros((todo.size, weights.shape[1])))[0]
            else:
                part, reused = _chord_solve(ts, rt, todo, *factors)
                newton = np.full((b, nf), np.nan)
                newton[todo] = part
                part[reused] /= 1.0 - CHORD_DRIFT
                step[todo] = part
        except _Singular:
            step[todo] = np.inf
    edges = ROUNDING * _edge_scale(asm, u, s).max(axis=1, initial=0.0)  # (b,): one edge's rounding
    bound = np.where(np.isfinite(step), np.abs(step), np.inf) + edges[:, None]
    vs = np.abs(u).max(axis=1) + np.abs(s).max(axis=1, initial=0.0)
    return bound, vs, newton


def _check_cycle(seen, todo, act, on, it, asm) -> None:
    """Record each sample's active set (conducting ideal diodes ``act``, conducting edges
    ``on``); a set seen before means the iteration cycles: raise ``ConvergenceError``
    naming the elements that switch along the cycle."""
    keys = np.packbits(np.concatenate([act, on], axis=1), axis=1)
    for k, smp in enumerate(todo):
        hist = seen[smp]
        key = keys[k].tobytes()
        if key not in hist:
            hist[key] = (it, act[k].copy(), on[k].copy())
            continue
        first = hist[key][0]
        cyc = [(a, o) for (i, a, o) in hist.values() if i >= first]
        acts = np.array([a for a, _ in cyc])
        ons = np.array([o for _, o in cyc])
        ideal = asm.ci[acts.any(axis=0) & ~acts.all(axis=0)]
        edges = np.flatnonzero(ons.any(axis=0) & ~ons.all(axis=0))
        switching = np.union1d(ideal, edges)
        if not switching.size:
            continue  # a fixed point that fails the stopping rule: max_iter or the loop checks decide
        raise ConvergenceError(
            f"the active-set iteration cycles (sample {int(smp)}: iteration {it} repeats the active "
            f"set of iteration {first}); elements switching along the cycle: edge(s) "
            f"{_list(switching)}. The piecewise-linear circuit may have no unique equilibrium "
            f"there; give those elements a resistance (Rectifier()) or smooth laws (Diode())")


def _independent(c, asm, act):
    """Per sample, drop conducting ideal diodes whose constraint ``w_e = 0`` depends on the
    others (they close a loop through other conducting ideal diodes and the clamped nodes):
    ``(independent active set, dropped)``, both (b, nc) bool."""
    net = c.network
    ends = np.stack([net.tails[asm.ci], net.heads[asm.ci]], axis=1)
    ends = np.where(c.is_clamped[ends], net.n_nodes, ends)
    out = act.copy()
    for smp in range(act.shape[0]):  # only circuits whose ideal diodes can form loops get here
        idx = np.flatnonzero(act[smp])
        if idx.size < 2:
            continue
        parent = {}

        def find(v):
            while parent.get(v, v) != v:
                v = parent[v]
            return v

        for j in idx:
            a, b = find(int(ends[j, 0])), find(int(ends[j, 1]))
            if a == b:
                out[smp, j] = False
            else:
                parent[a] = b
    return out, act & ~out


def _infeasible(c, asm, todo, act):
    edges = asm.ci[act.any(axis=0)] if act.size else asm.ci
    loop = _dependent_ideal(c, edges)
    if loop:
        return BoundaryConditionError(
            f"ideal diode edge(s) {_list(np.asarray(loop))} (with the conducting ideal diodes "
            f"{_list(edges)}) form a loop through clamped nodes with no resistance: the "
            f"inputs forward-bias them, so the circuit has no equilibrium. Put a resistance in "
            f"series (Rectifier()) or change the inputs")
    return SolverError(
        "the tangent system of the nonlinear equilibrium is singular (a node is connected "
        "only through non-conducting elements and carries an injected current?)")


def _refuse_undrainable(fac, currents, error: ConvergenceError) -> None:
    """Raises :class:`~kirchnet.errors.BoundaryConditionError` (from ``error``) where an
    injected current has no equilibrium: the nodes a current can flow on to from a node
    fed by ``J_v > 0`` (through resistors either way, through diodes, rectifiers and ideal
    diodes from anode to cathode) reach no driven node, and the net current injected into
    that set exceeds what can leave it backwards through its diodes, at most their reverse
    saturation ``g Is`` each (rectifiers and ideal diodes: none); the same for drawn
    currents with the directions reversed. Only resistors and these diodes are known here
    (another law: no verdict)."""
    c = fac.circuit
    kinds = c.elements.kinds
    if not set(kinds) <= {"resistor", "diode", "rectifier", "ideal_diode"}:
        return
    net = c.network
    n = net.n_nodes
    J, _ = as_batch(currents, n, "currents")
    cap_rev = fac.conductances * c.elements.per_edge("saturation_current")  # a diode's reverse current at most
    two_way = kinds == "resistor"
    driven = np.ones(n, dtype=bool)
    driven[c.free_nodes] = False
    for sign in (1.0, -1.0):  # fed nodes: current flows tail -> head; drawn: head -> tail
        a, b = (net.tails, net.heads) if sign > 0 else (net.heads, net.tails)
        src = np.concatenate([a, b[two_way]])
        dst = np.concatenate([b, a[two_way]])
        G = sp.csr_array((np.ones(src.size), (src, dst)), shape=(n, n))
        for row in np.unique(J, axis=0):
            for v in np.flatnonzero(sign * row > 0):
                if driven[v]:
                    continue
                reach = csgraph.breadth_first_order(G, int(v), directed=True, return_predecessors=False)
                inside = np.zeros(n, dtype=bool)
                inside[reach] = True
                if driven[inside].any():
                    continue
                net_in = float(sign * row[inside].sum())
                back = (~inside[a]) & inside[b]  # edges into the set: they can only pass backwards
                cap = float(cap_rev[back].sum())
                if net_in > cap * (1 + 1e-9):
                    nodes = np.flatnonzero(inside)
                    raise BoundaryConditionError(
                        f"the current {'injected into' if sign > 0 else 'drawn from'} node(s) "
                        f"{_list(nodes[sign * row[nodes] > 0])} has no equilibrium: from there it can "
                        f"flow only to node(s) {_list(nodes)}, which reach no driven node; it can "
                        f"leave them only backwards through edge(s) {_list(np.flatnonzero(back))} "
                        f"(reverse-biased diodes, at most {cap:.3e} A together) but {net_in:.3e} A "
                        f"{'enters' if sign > 0 else 'leaves'}. Give those nodes a resistive path to a "
                        f"driven node or reduce the current") from error


def _source_stepping(fac, x, currents, clamp, warm_start, error: ConvergenceError) -> NonlinearState:
    """The batch of :meth:`NonlinearFactorization.solve` after ``error`` (a sample did not
    converge): every sample solved on its own, and each one that fails again by *source
    stepping* (SPICE's fallback): the equilibria of the drives scaled by ``lambda`` (inputs,
    series sources, clamps, injected currents; ``lambda = 0`` is the zero state) from 0 to
    1, each warm-started from the last, the step in ``lambda`` doubled (at most
    ``1 / 2``) after a success and divided by 4 after a failure. Raises ``error``, with the
    ``lambda`` reached, when a step would fall below :data:`SOURCE_STEP_MIN`. A circuit's
    equilibrium is unique (convex co-content), so the result is the equilibrium the direct
    iteration missed; ``iterations`` counts every continuation step's."""
    c = fac.circuit
    X, _ = as_batch(x, c.n_inputs, "x")
    b = X.shape[0]

    def row(a, k):  # sample k of a per-sample (b, ...) argument, else the argument itself
        if a is None:
            return None
        a = np.asarray(a.potentials if isinstance(a, State) else a, dtype=float)
        return a[k:k + 1] if a.ndim == 2 and a.shape[0] == b else a

    def scaled(a, lam):
        return None if a is None else lam * np.asarray(a, dtype=float)

    states = []
    for k in range(b):
        xk, jk, ck = X[k:k + 1], row(currents, k), row(clamp, k)
        try:
            states.append(equilibrium(fac, xk, currents=jk, clamp=ck, warm_start=row(warm_start, k)))
            continue
        except ConvergenceError:
            pass
        lam, step, state, spent = 0.0, 0.25, None, 0
        while lam < 1.0:
            nxt = min(1.0, lam + step)
            try:
                state = equilibrium(fac, nxt * xk, currents=scaled(jk, nxt), clamp=scaled(ck, nxt),
                                    warm_start=state, deflate=True)  # dense steps where clusters float: GTH
            except ConvergenceError:
                step /= 4.0
                if step < SOURCE_STEP_MIN:
                    raise ConvergenceError(
                        f"{error} Source stepping (sample {k}'s drives scaled by lambda from 0 to 1, "
                        f"each equilibrium warm-started from the last) also failed: stuck at lambda = "
                        f"{lam:.4g}") from error
                continue
            spent += int(state.iterations[0])
            lam, step = nxt, min(2.0 * step, 0.5)
        states.append(NonlinearState(c, fac.conductances, state.potentials, state.sources,
                                     multipliers=state.multipliers, ideal_edges=state.ideal_edges,
                                     iterations=np.array([spent])))
    first = states[0]
    return NonlinearState(c, fac.conductances, np.concatenate([st.potentials for st in states]),
                          None if first.sources is None else np.concatenate([st.sources for st in states]),
                          multipliers=np.concatenate([st.multipliers for st in states]),
                          ideal_edges=first.ideal_edges,
                          iterations=np.concatenate([st.iterations for st in states]))


# --------------------------------------------------------------------------- factorization
class NonlinearFactorization:
    """The solve object of a nonlinear circuit at fixed conductances.

    Mirrors :class:`~kirchnet.CircuitFactorization` where that makes sense (``circuit``,
    ``conductances``, ``solve``, ``update``, ``backend``) but holds no single
    factorization: every equilibrium is a Newton iteration whose tangent matrices depend
    on the sample. ``rtol``, ``ctol``, ``max_iter``: the stopping rule (module docstring).
    """

    low_rank_update = False

    def __init__(self, circuit, conductances, backend: str = "auto", rtol: float = RTOL,
                 ctol: float = CTOL, max_iter: int = MAX_ITER, method: str = "auto",
                 limiting: bool = True, port_reduction="auto", **solver_options):
        if method not in ("auto", "general"):
            raise ValueError(f"method must be 'auto' (layered DRN circuits use the DRN's exact "
                             f"layered solver) or 'general', got {method!r}")
        self.circuit = circuit
        self.conductances = np.array(conductances, dtype=float)
        self.conductances.setflags(write=False)
        self.base_backend = backend
        self.method = method
        self.solver_options = dict(rtol=rtol, ctol=ctol, max_iter=max_iter, method=method,
                                   limiting=limiting, port_reduction=port_reduction, **solver_options)
        #: smooth laws start with SPICE's limited Newton iteration (:func:`_limited_newton`);
        #: ``False``: the damped Newton iteration alone
        self.limiting = bool(limiting)
        #: resistor-diode circuits whose resistors reach every free node from a driven one
        #: solve their Newton steps and tangent solves over the conducting diodes
        #: (:mod:`kirchnet.ports`; needs numba): ``"auto"`` where predicted cheaper,
        #: ``True`` wherever possible, ``False`` never
        if port_reduction not in ("auto", True, False):
            raise ValueError(f"port_reduction must be 'auto', True or False, got {port_reduction!r}")
        self.port_reduction = port_reduction
        self.rtol, self.ctol, self.max_iter = float(rtol), float(ctol), int(max_iter)
        asm = _assembly(circuit)
        #: stacked dense systems (one batched LAPACK call) or one sparse factorization per sample
        self.dense = backend == "dense" or (backend == "auto" and asm.nf + asm.nc <= DENSE_MAX)
        sparse = circuit.auto_backend if backend == "auto" else backend
        if sparse == "dense" or (asm.nc and sparse != "splu"):
            sparse = "splu"  # KKT systems (ideal diodes) are indefinite: LU
        if sparse == "cholmod" and not solvers.cholmod_available():
            sparse = "splu"
        self.backend = sparse
        #: each returned state's last tangent factorizations (sparse backends), while the
        #: state lives: a warm start from it begins with chord steps on them
        self._tangents = weakref.WeakKeyDictionary()
        self._cold = None  # the cold start's first tangent (_cold_tangent)

    def _cold_tangent(self, v0):
        """``(factorization, weights)`` of the tangent a cold start's first step linearizes
        at (the voltages ``v0`` (m,) of the first sample that needed it: interior diodes at 0
        V, diodes at driven nodes at ``min(w, vcrit)``), kept (CHOLMOD, within
        ``WARM_FACTOR_BYTES``): other samples' first tangents differ only at the diodes that
        touch driven nodes or carry sources, so their first step is a chord step or a
        low-rank update on it (:func:`_refreshed`) instead of a factorization. ``None``
        where not kept."""
        if self._cold is None:
            if not self._keepable(1):
                return None
            weights = self.conductances * self.circuit.elements.dphi(np.asarray(v0, dtype=float))
            try:
                factor = TangentSystem(self.circuit, weights[None], np.zeros((1, 0), dtype=bool), False,
                                       self.backend)._factor_one(0)
            except _Singular:
                return None
            self._cold = (factor, weights)
        return self._cold

    def _keepable(self, count: int) -> bool:
        """``count`` CHOLMOD tangent factors of this circuit take at most ``WARM_FACTOR_BYTES``
        (16 bytes per factor entry; False on other backends or without the factor's size)."""
        lnz = self.circuit._symbolic.lnz if self.backend == "cholmod" else None
        return lnz is not None and 16.0 * lnz * count <= WARM_FACTOR_BYTES

    def _keep_tangents(self, state, factors) -> None:
        """Keep ``factors`` (the limited iteration's ``(factorizations, weights)``) for warm
        starts from ``state`` (:meth:`_keepable`)."""
        if factors is not None and all(f is not None for f in factors[0]) and self._keepable(len(factors[0])):
            self._tangents[state] = factors

    @cached_property
    def plan(self) -> tuple:
        """``(mode, ports)``: how the limited iteration takes its steps. ``"woodbury"``:
        compiled, by Woodbury's identity on the port reduction ``ports``
        (:class:`kirchnet.ports.PortReduction`, also used by the tangent solves);
        ``"envelope"``: compiled, the tangent Laplacian factorized in its envelope (reverse
        Cuthill-McKee order); ``"numpy"``: :func:`_limited_newton` (batched LAPACK or sparse
        factorizations). The cheapest by flop count (:func:`kirchnet.ports.step_flops`;
        the envelope's, weighted by :data:`ENVELOPE_WEIGHT` against the reduction; for
        sparse backends :func:`_sparse_step_flops`); ``port_reduction=True`` takes the
        reduction wherever it exists, ``False`` never. Compiled modes need numba
        (``KIRCHNET_JIT=0`` is read at each solve)."""
        c = self.circuit
        k = _assembly(c).kernel
        if not self.limiting or k is None:
            return "numpy", None
        wood = np.inf
        if self.port_reduction is not False and _ports.eligible(c) is None:
            wood = 0.0 if self.port_reduction is True else _ports.step_flops(c)
        budget = np.inf if self.dense else _sparse_step_flops(c, self.backend)
        if wood <= min(ENVELOPE_WEIGHT * k.flops, budget):
            red = PortReduction.build(c, self.conductances)
            if red is not None:
                return "woodbury", red
        return ("envelope" if k.flops <= budget else "numpy"), None

    def __getstate__(self):
        """Pickles without :attr:`plan` (it may hold a CHOLMOD factorization; recomputed on
        use) and without the kept tangent factorizations."""
        state = self.__dict__.copy()
        state.pop("plan", None)
        state["_tangents"], state["_cold"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._tangents = weakref.WeakKeyDictionary()

    @property
    def ports(self):
        """The :class:`kirchnet.ports.PortReduction` of the steps and tangent solves, or
        ``None`` (:attr:`plan`)."""
        return self.plan[1]

    def solve(self, x, currents=None, clamp=None, warm_start=None) -> NonlinearState:
        """Exact equilibrium for a sample or a batch; ``currents`` (n,) or (b, n) injected
        node currents; ``warm_start`` a state (or potentials (b, n)) to start Newton from."""
        if warm_start is None and currents is None and clamp is None and self.method == "auto":
            layered = self._layered(x)
            if layered is not None:
                return equilibrium(self, x, warm_start=layered, warm_multipliers=True)
        try:
            return equilibrium(self, x, currents=currents, clamp=clamp, warm_start=warm_start)
        except ConvergenceError as exc:
            if currents is not None:
                _refuse_undrainable(self, currents, exc)
            if self.dense and not _assembly(self.circuit).nc:
                # the dense steps of clusters held only by leakage, by the subtraction-free elimination
                # (costly per step: only once the plain iteration failed)
                try:
                    return equilibrium(self, x, currents=currents, clamp=clamp, warm_start=warm_start,
                                       deflate=True)
                except ConvergenceError:
                    pass
            # SPICE's fallback: source stepping, sample by sample
            return _source_stepping(self, x, currents, clamp, warm_start, exc)

    def _layered(self, x) -> "NonlinearState | None":
        """The exact layered (block coordinate descent) solution of a DRN circuit
        (:func:`kirchnet.drn.layered_spec`) with its ideal-diode multipliers, or ``None``
        for any other circuit or drivers (module docstring)."""
        from . import drn

        c = self.circuit
        spec = drn.layered_spec(c)
        if spec is None:
            return None
        asm = _assembly(c)
        if asm.nc == 0 or asm.ci_fixed.size or np.any((asm.absC > 0).sum(axis=0) != 1) \
                or np.any((asm.absC > 0).sum(axis=1) > 1):
            return None  # multipliers readable off the residual: one free end per diode, one diode per node
        try:
            xb = np.atleast_2d(np.asarray(x, dtype=float))
            u = drn.DRN(spec, params=self.conductances[:spec.n_params]).circuit_potentials(xb, tol=LAYERED_TOL)
        except (ParameterError, ShapeError, ValueError, ConvergenceError):
            return None  # other driver values: the general method
        xn, xs, xc, _ = c.driver_values(x, None)
        sv = c.edge_sources(xs)
        w = np.asarray((c._BT @ u.T).T) + (0.0 if sv is None else sv)
        r = np.asarray((asm.BF @ (self.conductances * c.elements.phi(w)).T).T)  # (b, nf)
        mu = -(r @ asm.C) / np.maximum((asm.absC ** 2).sum(axis=0), 1.0)
        vs = np.abs(u).max(axis=1, keepdims=True) + 1e-300
        mu = np.where((mu > 0) & (w[:, asm.ci] >= -self.ctol * vs), mu, 0.0)  # conducting: w = 0
        return NonlinearState(c, self.conductances, u, sv, multipliers=mu, ideal_edges=asm.ci)

    def update(self, conductances, max_rank: int | None = None) -> "NonlinearFactorization":
        """The solve object at new conductances (nothing to update incrementally)."""
        g = self.circuit.check_conductances(conductances)
        if np.array_equal(g, self.conductances):
            return self
        return NonlinearFactorization(self.circuit, g, self.base_backend, **self.solver_options)

    # ---------------------------------------------------------- linearization
    def tangent(self, state: NonlinearState) -> TangentSystem:
        """The tangent (KKT) system at an equilibrium, the active set frozen."""
        lanes = _lanes(self, state.batch_size)  # (resistors and diodes: no ideal diodes)
        return TangentSystem(self.circuit, state.tangent_weights, state.active, self.dense, self.backend,
                             None if lanes else self.ports, lanes=lanes)

    def tangent_solve(self, state: NonlinearState, rhs_free: np.ndarray,
                      tangent: TangentSystem | None = None) -> np.ndarray:
        """``H^{-1} rhs`` on the free nodes (active set frozen): rhs (b, nf, r) -> (b, nf, r)."""
        asm = _assembly(self.circuit)
        b, nf, r = rhs_free.shape
        if nf + asm.nc == 0:  # every node driven: nothing to solve
            return np.zeros((b, 0, r))
        rhs = np.zeros((b, nf + asm.nc, r))
        rhs[:, :nf] = rhs_free
        ts = tangent or self.tangent(state)

        def certified(ts):  # a solve, one step of iterative refinement where needed, its residual test
            X = ts.solve(rhs)
            bad = ts.uncertified(X, rhs)
            if bad is not None:
                X = X + ts.solve(rhs - ts.apply(X))
                bad = ts.uncertified(X, rhs)
            return X, bad

        try:
            X, bad = certified(ts)
            if bad is not None and (ts.ports is not None or ts.lanes):  # not accurate enough: the full tangent's own solve
                X, bad = certified(TangentSystem(self.circuit, ts.weights, ts.active, self.dense, self.backend))
        except _Singular:
            raise SolverError("the tangent system at this equilibrium is singular") from None
        if bad is not None:
            smp, v, ratio = bad
            node = int(self.circuit.free_nodes[v]) if v < nf else None
            where = f"node {node}" if node is not None else f"ideal diode edge {int(asm.ci[v - nf])}"
            raise IllConditionedError(
                f"the linear solve with the tangent system at this equilibrium is not accurate: "
                f"sample {smp}, {where}, residual {ratio:.2e} x its scale > TANGENT_RTOL="
                f"{TANGENT_RTOL:g} after refinement; the incremental conductances g phi'(w) span "
                f"too many decades (rescale the conductances or the inputs)")
        return X[:, :nf]

    def adjoint(self, state: NonlinearState, delta: np.ndarray) -> np.ndarray:
        """``lam`` (b, n): ``H lam_F = P_F^T delta_s`` per sample (active set frozen), ``lam_C = 0``."""
        c = self.circuit
        delta = np.asarray(delta, dtype=float)
        if delta.ndim != 2 or delta.shape != (state.batch_size, c.n_outputs):
            raise ShapeError(f"delta must have shape ({state.batch_size}, {c.n_outputs}), got {delta.shape}")
        rhs = (delta @ c.readout_free_T.T)[:, :, None]
        lam = np.zeros((delta.shape[0], c.network.n_nodes))
        lam[:, c.free_nodes] = self.tangent_solve(state, rhs)[:, :, 0]
        return lam

    def compliance(self, state: NonlinearState, tangent: TangentSystem | None = None) -> np.ndarray:
        """Small-signal output compliance ``K_s = P_F H_s^{-1} P_F^T`` per sample (b, k, k)."""
        c = self.circuit
        b = state.batch_size
        PT = np.broadcast_to(c.readout_free_T, (b,) + c.readout_free_T.shape)
        Z = self.tangent_solve(state, np.ascontiguousarray(PT), tangent)
        K = np.einsum("fk,bfl->bkl", c.readout_free_T, Z)
        return 0.5 * (K + np.swapaxes(K, 1, 2))

    def loss_and_grad(self, x, y, loss="mse", wrt: str = "conductance", per_sample: bool = False,
                      full: bool = False, warm_start=None):
        """:func:`loss_and_grad` at this factorization's conductances (what
        :func:`kirchnet.loss_and_grad` dispatches to for a nonlinear circuit)."""
        return loss_and_grad(self.circuit, self.conductances, x, y, loss=loss, wrt=wrt,
                             per_sample=per_sample, factorization=self, full=full,
                             warm_start=warm_start)

    def __repr__(self):
        mode = "dense batched" if self.dense else self.backend
        return f"NonlinearFactorization({self.circuit!r}, {mode})"


# --------------------------------------------------------------------------- gradient
@dataclass(frozen=True, eq=False)
class NonlinearGradientResult(GradientResult):
    """:class:`~kirchnet.GradientResult` of a nonlinear circuit (adjoint kept)."""

    adjoint: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def adjoint_potentials(self) -> np.ndarray:
        return self.adjoint


def gradient_from_adjoint(state: NonlinearState, lam: np.ndarray) -> np.ndarray:
    """Per-sample ``dC/dg_e = -(B^T lam)_e phi_e(w_e)`` (b, m); 0 on ideal diodes."""
    c = state.circuit
    adj = np.asarray((c._BT @ lam.T).T)
    return -adj * c.elements.phi(state.resistor_voltages)


def loss_and_grad(circuit, conductances, x, y, loss="mse", wrt: str = "conductance",
                  per_sample: bool = False, factorization=None, full: bool = False,
                  warm_start=None):
    """Batch-mean loss and its exact gradient for a nonlinear circuit (implicit
    differentiation, module docstring); same signature and returns as
    :func:`kirchnet.loss_and_grad`."""
    loss_fn = get_loss(loss)
    param = _param.get(wrt)
    fac = circuit.factorization_for(conductances, factorization)
    state = fac.solve(x, warm_start=warm_start)
    values, delta = loss_fn(state.outputs, y)
    lam = fac.adjoint(state, delta)
    per = gradient_from_adjoint(state, lam)
    per = param.grad_from_g(per, fac.conductances)
    grad = per.mean(axis=0)
    value = float(values.mean())
    if full:
        return NonlinearGradientResult(value, grad, delta, values, state.outputs, fac,
                                       np.asarray(x, dtype=float), per if per_sample else None,
                                       state, adjoint=lam)
    if per_sample:
        return value, grad, per
    return value, grad


def co_content(state: NonlinearState) -> np.ndarray:
    """``E = sum_e g_e Phi_e(w_e)`` per sample (b,) (without the work of injected currents)."""
    return state.energy
