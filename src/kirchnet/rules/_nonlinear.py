"""Every learning rule on nonlinear circuits (theory.md, 6).

The linear rules realize every nudged phase as port currents through the free
factorization (:mod:`._ports`). In a nonlinear network a nudged or clamped phase is a new
equilibrium: here each is an exact nonlinear solve warm-started from the free state, with
the nudge acting through port currents ``mu`` (b, k) injected at the outputs
(``J = P^T mu``):

* current nudge: ``mu`` given (``-beta dC/do`` at the free state);
* clamp of the outputs to ``t``: Newton on ``o(mu) = t``, Jacobian the small-signal output
  compliance ``K(mu) = P_F H^{-1} P_F^T`` at the current nudged equilibrium;
* energy nudge ``beta C(P u)``: Newton on ``mu + beta dC/do(o(mu)) = 0``, Jacobian
  ``I + beta C''(o) K(mu)``.

The Hebbian quantity is ``dE/dg_e = Phi_e(w_e)`` (the element's co-content ``g Phi``
per unit scale), so every two-phase rule stays local:
``estimate_e = mean_s [Phi_e(w_e(beta_2)) - Phi_e(w_e(beta_1))] / (beta_2 - beta_1)``.
Custom :class:`~.twophase.Nudge` objects receive a :class:`NonlinearPorts` whose ``K``
is the per-sample free-state compliance (b, k, k) (a single (k, k) matrix in linear
circuits).
"""

from __future__ import annotations

import numpy as np

from .. import parametrization as _param
from ..errors import ConvergenceError, ParameterError
from ..losses import SquaredError
from ._ports import LazyStates, loss_hessian
from .base import RuleResult

MAX_PORT_ITER = 50
PORT_TOL = 1e-11


class NonlinearPorts:
    """Output-port quantities of a nonlinear free state: ``K`` (b, k, k) small-signal compliance."""

    def __init__(self, factorization, free):
        self.factorization = factorization
        self.circuit = factorization.circuit
        self.free = free
        self.K = factorization.compliance(free)

    def stiffness_solve(self, r):
        """``S r`` per sample with ``S = K^{-1}`` (the small-signal output stiffness)."""
        return np.linalg.solve(self.K, np.asarray(r, dtype=float)[:, :, None])[:, :, 0]


def _inject(circuit, mu):
    return np.asarray((circuit.readout.T @ mu.T).T)


def nudged_state(fac, x, free, mu):
    """Equilibrium with port currents ``mu`` (b, k) injected, warm-started from ``free``."""
    return fac.solve(x, currents=_inject(fac.circuit, mu), warm_start=free)


def _scale(o):
    return 1.0 + np.abs(o).max(initial=0.0)


def clamp_state(fac, x, free, target, K0=None):
    """``(state, mu)`` with the outputs held at ``target`` (b, k): Newton on port currents."""
    t = np.asarray(target, dtype=float)
    K = fac.compliance(free) if K0 is None else K0
    mu = np.linalg.solve(K, (t - free.outputs)[:, :, None])[:, :, 0]
    state = free
    for _ in range(MAX_PORT_ITER):
        state = nudged_state(fac, x, state, mu)
        r = t - state.outputs
        if np.abs(r).max(initial=0.0) <= PORT_TOL * _scale(t):
            return state, mu
        K = fac.compliance(state)
        mu = mu + np.linalg.solve(K, r[:, :, None])[:, :, 0]
    raise ConvergenceError(
        f"clamping the outputs did not converge in {MAX_PORT_ITER} Newton steps on the port "
        f"currents (output error {np.abs(r).max():.3e}); use a smaller eta")


def energy_state(fac, x, free, loss, targets, beta):
    """``(state, mu)`` of the energy nudge ``E + beta C(P u)``: ``mu = -beta dC/do(o(mu))``."""
    K = fac.compliance(free)
    delta = loss(free.outputs, targets)[1]
    k = delta.shape[1]
    # first guess: the linearized network's answer
    A = np.eye(k)[None] + beta * K
    if not isinstance(loss, SquaredError):
        A = np.eye(k)[None] + beta * np.einsum("bkl,blj->bkj", loss_hessian(loss, free.outputs, targets), K)
    mu = -beta * np.linalg.solve(A, delta[:, :, None])[:, :, 0]
    state = free
    for _ in range(MAX_PORT_ITER):
        state = nudged_state(fac, x, state, mu)
        d = loss(state.outputs, targets)[1]
        G = mu + beta * d
        if np.abs(G).max(initial=0.0) <= PORT_TOL * (np.abs(beta) * np.abs(d).max(initial=0.0) + 1e-300) \
                or np.abs(G).max(initial=0.0) == 0.0:
            return state, mu
        K = fac.compliance(state)
        Hc = np.broadcast_to(np.eye(k), K.shape) if isinstance(loss, SquaredError) else \
            loss_hessian(loss, state.outputs, targets)
        Jm = np.eye(k)[None] + beta * np.einsum("bkl,blj->bkj", Hc, K)
        mu = mu - np.linalg.solve(Jm, G[:, :, None])[:, :, 0]
    raise ConvergenceError(
        f"the energy nudge (beta={beta}) did not converge in {MAX_PORT_ITER} Newton steps on the "
        f"port currents; use a smaller |beta| (for beta < 0 the nudged energy may not be convex)")


def _hebbian(s1, s2, b1, b2):
    return (s2.energy_derivative() - s1.energy_derivative()).mean(axis=0) / (b2 - b1)


def _lazy(states: dict) -> LazyStates:
    return LazyStates({k: (lambda s=s: s) for k, s in states.items()})


# --------------------------------------------------------------------------- rules
def estimate(rule, circuit, conductances, x, y, factorization=None) -> RuleResult:
    """Dispatch of every rule's ``estimate`` for a circuit with ``not circuit.is_linear``."""
    from .finite_difference import FiniteDifference
    from .insitu import InSitu
    from .twophase import GEP, AdjointCoupledLearning, CoupledLearning, EquilibriumPropagation

    if isinstance(rule, EquilibriumPropagation):
        return _ep(rule, circuit, conductances, x, y, factorization)
    if isinstance(rule, (CoupledLearning, AdjointCoupledLearning)):
        return _clamp_rule(rule, circuit, conductances, x, y, factorization)
    if isinstance(rule, GEP):
        return _gep(rule, circuit, conductances, x, y, factorization)
    if isinstance(rule, FiniteDifference):
        return _finite_difference(rule, circuit, conductances, x, y, factorization)
    if isinstance(rule, InSitu):
        return _insitu(rule, circuit, conductances, x, y, factorization)
    raise ParameterError(f"rule {type(rule).__name__} has no nonlinear implementation")


def _free(rule, circuit, conductances, x, y, factorization):
    fac = circuit.factorization_for(conductances, factorization)
    free = fac.solve(x)
    values, delta = rule.loss(free.outputs, y)
    return fac, free, values, delta


def _betas(beta, variant):
    from .twophase import _betas as betas

    return betas(beta, variant)


def _ep(rule, circuit, conductances, x, y, factorization):
    fac, free, values, delta = _free(rule, circuit, conductances, x, y, factorization)
    b1, b2 = _betas(rule.beta, rule.variant)
    states = {0.0: free}
    for bk in (b1, b2):
        if bk == 0.0:
            continue
        if rule.nudge == "current":
            states[bk] = nudged_state(fac, x, free, -bk * delta)
        else:
            states[bk] = energy_state(fac, x, free, rule.loss, y, bk)[0]
    est = _hebbian(states[b1], states[b2], b1, b2)
    names = {key: states[bk] for bk, key in ((b1, "nudged_negative"), (b2, "nudged")) if bk != 0.0}
    return RuleResult(est, float(values.mean()), free, _lazy(names),
                      {"beta": rule.beta, "variant": rule.variant, "nudge": rule.nudge, "delta": delta})


def _clamp_rule(rule, circuit, conductances, x, y, factorization):
    from .twophase import CoupledLearning

    fac, free, values, delta = _free(rule, circuit, conductances, x, y, factorization)
    K = fac.compliance(free)
    o = free.outputs
    if isinstance(rule, CoupledLearning):
        shift = rule.loss.targets(y, o) - o
        extra = {"stiffness_error": np.linalg.solve(K, shift[:, :, None])[:, :, 0]}
    else:  # adjoint coupled learning: o_F - eta K delta
        shift = -np.einsum("bkl,bl->bk", K, delta)
        extra = {}
    b1, b2 = _betas(rule.eta, rule.variant)
    states = {0.0: free}
    for bk in (b1, b2):
        if bk != 0.0:
            states[bk] = clamp_state(fac, x, free, o + bk * shift, K)[0]
    est = _hebbian(states[b1], states[b2], b1, b2)
    names = {key: states[bk] for bk, key in ((b1, "clamped_negative"), (b2, "clamped")) if bk != 0.0}
    return RuleResult(est, float(values.mean()), free, _lazy(names),
                      {"eta": rule.eta, "variant": rule.variant, "delta": delta, **extra})


def _gep(rule, circuit, conductances, x, y, factorization):
    from .twophase import AdjointClampNudge, NudgeContext, Nudged

    fac, free, values, delta = _free(rule, circuit, conductances, x, y, factorization)
    ports = NonlinearPorts(fac, free)
    ctx = NudgeContext(free, y, rule.loss, values, delta, ports)
    b1, b2 = _betas(rule.beta, rule.variant)
    states, names, objective = {0.0: free}, {}, None
    E0 = free.energy
    for bk, key in ((b1, "nudged_negative"), (b2, "nudged")):
        if bk == 0.0:
            continue
        if isinstance(rule.nudge, AdjointClampNudge):  # o_F - beta K delta, K per sample (b, k, k)
            bc = Nudged(clamp=free.outputs - bk * np.einsum("bkl,bl->bk", ports.K, delta))
        else:  # current, energy, clamp and custom nudges see the nonlinear ports (K per sample)
            bc = rule.nudge(bk, ctx)
        set_ = [bc.currents is not None, bc.clamp is not None, bc.energy is not None]
        if sum(set_) != 1:
            raise ParameterError("a nudge must return exactly one of currents, clamp or energy")
        if bc.currents is not None:
            mu = np.broadcast_to(np.asarray(bc.currents, dtype=float), delta.shape)
            st = nudged_state(fac, x, free, mu)
            nudge_energy = bc.offset - np.einsum("bk,bk->b", mu, st.outputs - free.outputs)
        elif bc.clamp is not None:
            st, mu = clamp_state(fac, x, free, bc.clamp, ports.K)
            nudge_energy = np.zeros(delta.shape[0]) + bc.offset
        else:
            weight, loss = bc.energy
            st, mu = energy_state(fac, x, free, loss, y, weight)
            nudge_energy = weight * loss(st.outputs, y)[0] + bc.offset
        states[bk] = st
        names[key] = st
        if objective is None or bk > 0:
            phi = (st.energy - E0) + nudge_energy
            objective = float(phi.mean() / bk ** rule.order)
    est = _hebbian(states[b1], states[b2], b1, b2)
    return RuleResult(est, float(values.mean()), free, _lazy(names),
                      {"betas": (b1, b2), "objective": objective, "delta": delta, "order": rule.order})


def _finite_difference(rule, circuit, conductances, x, y, factorization):
    """Central differences of the batch loss, one warm-started nonlinear solve per side and edge."""
    fac, free, values, delta = _free(rule, circuit, conductances, x, y, factorization)
    g = fac.conductances
    est = np.empty(g.size)
    for e in range(g.size):
        h = rule.eps * g[e]
        out = []
        for sgn in (1.0, -1.0):
            gp = g.copy()
            gp[e] += sgn * h
            st = fac.update(gp).solve(x, warm_start=free)
            out.append(float(rule.loss(st.outputs, y)[0].mean()))
        est[e] = (out[0] - out[1]) / (2 * h)
    return RuleResult(est, float(values.mean()), free, {}, {"eps": rule.eps, "delta": delta})


def _insitu(rule, circuit, conductances, x, y, factorization):
    """The in-situ protocol as a small-signal measurement (see :class:`~.insitu.InSitu`).

    Voltage mode: each edge measures its current ``i_e`` (so ``phi(w_e) = i_e / g_e``).
    Current mode: inputs stay on and the measured error is injected with a small
    amplitude, ``J = a P^T delta``; each element measures the change of its voltage,
    ``(w_e(a) - w_e(0)) / a -> (B^T lam)_e`` (the linearized network's adjoint drop).
    Estimate ``dC/dg_e = -phi(w_e) (B^T lam)_e``: bias ``O(a)``; the noise and ADC models
    apply to every measured channel.
    """
    if rule.mode != "sequential":
        raise ParameterError(
            f"InSitu(mode={rule.mode!r}) separates the two runs by superposition, which holds only "
            f"in a linear network; use mode='sequential' (the small-signal protocol) for this "
            f"nonlinear circuit")
    fac = circuit.factorization_for(conductances, factorization)
    g = fac.conductances
    free = fac.solve(x)
    o_meas = rule._measure(free.outputs, rule.output_noise, rule.output_noise_abs, rule.output_range)
    values = rule.loss(free.outputs, y)[0]
    m_values, m_delta = rule.loss(o_meas, y)
    a = float(getattr(rule, "amplitude", 1e-4))
    probe = fac.solve(x, currents=_inject(circuit, a * m_delta), warm_start=free)
    i_m = rule._measure_currents(free.currents)
    dw_m = rule._measure_currents((probe.resistor_voltages - free.resistor_voltages) / a)
    ideal = circuit.elements.constraint_edges
    phi = i_m / g
    phi[:, ideal] = 0.0
    dcdg = -(dw_m * phi).mean(axis=0)
    est = _param.get(rule.wrt).grad_from_g(dcdg, g)
    return RuleResult(est, float(values.mean()), free, {"probe": probe},
                      {"delta": m_delta, "measured_outputs": o_meas,
                       "measured_loss": float(m_values.mean()), "wrt": rule.wrt,
                       "mode": rule.mode, "amplitude": a})
