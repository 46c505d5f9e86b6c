"""Two-phase (contrastive, Hebbian) rules: Generalized EP and its members (theory.md, 3).

Every rule here compares equilibria of the same network at two nudge strengths
``beta_1 < beta_2`` and updates each conductance from its own resistor voltages:

    estimate_e = (1 / (beta_2 - beta_1)) * mean_s [ dE/dg_e(u_{beta_2}) - dE/dg_e(u_{beta_1}) ],
    dE/dg_e = 1/2 w_e^2.

Variants: ``"positive"`` ``(0, +beta)``, ``"negative"`` ``(-beta, 0)``, ``"centered"``
``(-beta, +beta)``. With this sign ``g - lr * estimate`` lowers the loss. Our GEP
formulation (the seed paper's text was not available; theory.md 3):

* a *nudge* maps ``(beta, free state, targets)`` to nudged boundary conditions on the
  outputs: injected port currents, a clamp of the outputs, or an energy term
  ``beta * C(o)``; its *order* ``k`` is the leading power of ``beta`` of the nudge
  energy at the free equilibrium;
* ``Phi(beta) = F(beta, u_beta)`` is the nudged energy at its equilibrium; rules report
  ``objective = (Phi(beta) - Phi(0)) / beta^k`` (EP: ``-> C``; CL: ``1/2 delta^T S delta``);
* the Hebbian estimator above is the finite difference in ``beta`` of ``dE/dg`` along
  the nudge path. EP (k = 1) tends to ``dC/dg``; CL (k = 2, clamp anchored at the free
  outputs) tends to ``-(B^T Z S (y - o)) * w``, the gradient of the output error
  weighted by the *frozen* output stiffness ``1/2 (o - y)^T S (o - y)``. (The full
  gradient of ``l_2 = 1/2 delta^T S delta``, with ``S`` varying too, is CL at
  ``eta = 1``, where the clamp target ``y`` no longer depends on ``g``.)

All nudged states are the free state plus port currents (:mod:`._ports`): the free
factorization serves every phase; nothing is refactorized per sample or per phase.

**One loop.** :class:`GEP`, :class:`EquilibriumPropagation`, :class:`CoupledLearning` and
:class:`AdjointCoupledLearning` share :func:`_two_phase` (free phase, port currents per
nonzero beta, Hebbian estimate, lazy nudged states); EP, CL and ACL only choose the nudge
(EP: :class:`CurrentNudge` / :class:`EnergyNudge`; CL and ACL: the clamp's port current
per unit ``eta``), the betas and the variant. A batch larger than the drivers and the
outputs never forms the (batch x n) free potentials: outputs and Hebbian correlations go
through the factorization's bases (:class:`._ports.LowRankFree`), as the exact gradient does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import defaults
from ..circuit import State
from .._validation import check_choice, check_int, check_positive
from ..errors import ParameterError
from ..losses import Loss
from ._ports import LazyStates, Ports, energy_nudge_currents, free_state, resolved
from . import _nonlinear
from .base import Rule, RuleResult

VARIANTS = ("positive", "negative", "centered")


def _betas(beta: float, variant: str) -> tuple[float, float]:
    return {"positive": (0.0, beta), "negative": (-beta, 0.0), "centered": (-beta, beta)}[variant]


def _check(name: str, value, variant: str, clamp: bool = False) -> tuple[float, str]:
    """``beta``/``eta`` finite and > 0 (a clamping fraction: in ``(0, 1]``) and a known variant."""
    value = check_positive(value, name)
    if clamp and value > 1.0:
        raise ParameterError(f"{name} must lie in (0, 1] (the clamping fraction: the outputs are "
                             f"clamped to o_F + {name} (y - o_F)), got {value!r}; {name} > 1 clamps "
                             f"beyond the target. Use a small {name} (e.g. 0.1) for gradient-like updates")
    check_choice(variant, "variant", VARIANTS)
    return value, variant


def _states(ports: Ports, free: State, currents: dict) -> LazyStates:
    """Lazily built nudged states ``{name: u_F + Z mu}``."""
    return LazyStates({key: (lambda mu=mu: ports.state(free, mu)) for key, mu in currents.items()})


# --------------------------------------------------------------------------- nudges
@dataclass(frozen=True)
class NudgeContext:
    """What a nudge sees: the free state, its loss and output error, the port algebra."""

    free: State
    targets: object  # raw targets, as passed to the loss
    loss: Loss
    values: np.ndarray  # (b,) per-sample loss at the free state
    delta: np.ndarray  # (b, k) dC/do at the free state
    ports: Ports

    @property
    def outputs(self) -> np.ndarray:
        return self.free.outputs

    def target_array(self) -> np.ndarray:
        """Targets as a (b, k) array of output values (for clamps)."""
        return self.loss.targets(self.targets, self.free.outputs)


@dataclass(frozen=True)
class Nudged:
    """Nudged boundary conditions on the outputs; exactly one of the three is set.

    ``currents`` (b, k): port currents ``mu`` injected as ``J = P^T mu``.
    ``clamp`` (b, k): output values the outputs are held at (node outputs clamped;
    Pair/Edge outputs by a source fixing the difference).
    ``energy``: ``(weight, loss)``: the term ``weight * loss(P u, targets)`` added to E.
    ``offset`` (b,): a constant part of the nudge energy (only for the objective report).
    """

    currents: np.ndarray | None = None
    clamp: np.ndarray | None = None
    energy: tuple[float, Loss] | None = None
    offset: np.ndarray | float = 0.0


class Nudge:
    """Interface: ``nudge(beta, ctx) -> Nudged``; ``order`` is the power ``k`` (theory.md 3)."""

    order = 1

    def __call__(self, beta: float, ctx: NudgeContext) -> Nudged:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CurrentNudge(Nudge):
    """EP, fixed-current form: inject ``-beta dC/do`` (at the free state) at the outputs.

    It is the energy term ``beta [C(o_0) + delta_0^T (P u - o_0)]`` (the loss linearized
    at the free outputs), order 1.
    """

    order = 1

    def __call__(self, beta, ctx):
        return Nudged(currents=-beta * ctx.delta, offset=beta * ctx.values)


class EnergyNudge(Nudge):
    """EP, energy form: add ``beta * C(P u)`` to the energy (order 1)."""

    order = 1

    def __call__(self, beta, ctx):
        return Nudged(energy=(beta, ctx.loss))


class ClampNudge(Nudge):
    """Coupled learning: clamp the outputs to ``o_F + beta (y - o_F)`` (order 2)."""

    order = 2

    def __call__(self, beta, ctx):
        o = ctx.outputs
        return Nudged(clamp=o + beta * (ctx.target_array() - o))


class AdjointClampNudge(Nudge):
    """Adjoint coupled learning: clamp the outputs to ``o_F - beta K dC/do``.

    ``K = P_F L_FF^{-1} P_F^T`` is the output compliance; the clamp then draws exactly
    the port currents ``-beta dC/do``, so the clamped state equals the EP current-nudged
    state and the rule tends to the true loss gradient (order 2 by the clamp's energy
    cost ``beta^2/2 delta^T K delta``).
    """

    order = 2

    def __call__(self, beta, ctx):
        return Nudged(clamp=ctx.outputs - beta * ctx.delta @ ctx.ports.K)


def _free_phase(loss: Loss, circuit, conductances, x, y, factorization) -> NudgeContext:
    """The free phase every two-phase rule starts from: one factorization (reused when
    given), the free state, its loss and output error, and the port algebra."""
    fac = circuit.factorization_for(conductances, factorization)
    free = free_state(fac, x)  # through the bases for a large batch (no (b, n) potentials)
    values, delta = loss(free.outputs, y)
    return NudgeContext(free, y, loss, values, delta, Ports(fac))


def _two_phase(ctx: NudgeContext, betas: tuple[float, float], port_currents, keys: tuple[str, str],
               info) -> RuleResult:
    """The one two-phase loop (module docstring): ``port_currents(beta)`` (b, k) for each
    nonzero beta, then the Hebbian estimate from the free state and the lazy nudged states
    named ``keys`` (for ``beta_1``, ``beta_2``); ``info()`` builds the result's info after."""
    b1, b2 = betas
    mus = {bk: port_currents(bk) for bk in (b1, b2) if bk != 0.0}
    est = ctx.ports.hebbian(ctx.free, mus.get(b1), mus.get(b2), b1, b2)
    names = {key: mus[bk] for bk, key in zip(betas, keys) if bk != 0.0}
    return RuleResult(est, float(ctx.values.mean()), resolved(ctx.free),
                      _states(ctx.ports, ctx.free, names), info())


NUDGES = {"current": CurrentNudge, "energy": EnergyNudge, "clamp": ClampNudge,
          "adjoint_clamp": AdjointClampNudge}


def _port_currents(bc: Nudged, ctx: NudgeContext) -> np.ndarray:
    """Port currents ``mu`` (b, k) that realize the nudged boundary conditions."""
    set_ = [bc.currents is not None, bc.clamp is not None, bc.energy is not None]
    if sum(set_) != 1:
        raise ParameterError("a nudge must return exactly one of currents, clamp or energy")
    if bc.currents is not None:
        return np.broadcast_to(np.asarray(bc.currents, dtype=float), ctx.delta.shape)
    if bc.clamp is not None:
        return ctx.ports.stiffness_solve(np.asarray(bc.clamp, dtype=float) - ctx.outputs)
    weight, loss = bc.energy
    return energy_nudge_currents(loss, ctx.ports, ctx.outputs, ctx.targets, weight)


def _nudge_energy(bc: Nudged, ctx: NudgeContext, mu: np.ndarray) -> np.ndarray:
    """Value (b,) of the nudge term at the nudged state (0 on a clamp's constraint set)."""
    o_new = ctx.outputs + mu @ ctx.ports.K
    if bc.currents is not None:
        return bc.offset - np.einsum("bk,bk->b", mu, o_new - ctx.outputs)
    if bc.clamp is not None:
        return np.zeros(mu.shape[0]) + bc.offset
    weight, loss = bc.energy
    return weight * loss(o_new, ctx.targets)[0] + bc.offset


# --------------------------------------------------------------------------- rules
class GEP(Rule):
    """Generalized Equilibrium Propagation with any :class:`Nudge` (module docstring).

    Parameters: ``nudge`` (a :class:`Nudge` or one of ``"current"``, ``"energy"``,
    ``"clamp"``, ``"adjoint_clamp"``), ``beta`` > 0, ``order`` (the nudge order ``k``,
    default ``nudge.order``; it scales the reported ``objective``), ``variant``.

    Result ``info``: ``betas``, ``objective`` (``(Phi(beta) - Phi(0)) / beta^k``, batch
    mean, at ``+beta``; at ``-beta`` for the negative variant), ``delta``; ``states``: ``"nudged"`` (positive),
    ``"nudged_negative"`` (negative) or both (centered).

    Defaults (:mod:`kirchnet.defaults`): current nudge, ``beta = 0.1``, centered. Choosing
    ``beta``: as for :class:`EquilibriumPropagation` (energy-type nudges) or
    :class:`CoupledLearning` (clamps: ``beta`` is the clamping fraction ``eta``).
    """

    name = "gep"

    def __init__(self, nudge=defaults.EP_NUDGE, beta: float = defaults.EP_BETA, order: int | None = None,
                 variant: str = defaults.EP_VARIANT, loss="mse"):
        super().__init__(loss)
        if isinstance(nudge, str):
            if nudge not in NUDGES:
                raise ParameterError(f"unknown nudge {nudge!r}; choose one of {sorted(NUDGES)}")
            nudge = NUDGES[nudge]()
        if not callable(nudge):
            raise ParameterError("nudge must be a Nudge (callable: nudge(beta, ctx) -> Nudged)")
        self.nudge = nudge
        self.beta, self.variant = _check("beta", beta, variant,
                                         clamp=isinstance(nudge, (ClampNudge, AdjointClampNudge)))
        self.order = check_int(getattr(nudge, "order", 1) if order is None else order, "order", 1)

    def estimate(self, circuit, conductances, x, y, factorization=None) -> RuleResult:
        if not circuit.is_linear:  # exact nonlinear phases (rules/_nonlinear.py)
            return _nonlinear.estimate(self, circuit, conductances, x, y, factorization)
        ctx = _free_phase(self.loss, circuit, conductances, x, y, factorization)
        b1, b2 = _betas(self.beta, self.variant)
        objective = []

        def port_currents(bk):
            bc = self.nudge(bk, ctx)
            mu = _port_currents(bc, ctx)
            if not objective or bk > 0:  # (Phi(beta) - Phi(0)) / beta^k at +beta (or -beta alone)
                phi = ctx.ports.energy_gap(mu) + _nudge_energy(bc, ctx, mu)
                objective[:] = [float(phi.mean() / bk ** self.order)]
            return mu

        return _two_phase(ctx, (b1, b2), port_currents, ("nudged_negative", "nudged"),
                          lambda: {"betas": (b1, b2), "objective": objective[0] if objective else None,
                                   "delta": ctx.delta, "order": self.order})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(nudge={self.nudge!r}, beta={self.beta!r}, order={self.order}, "
                f"variant={self.variant!r}, loss={self.loss!r})")


class EquilibriumPropagation(Rule):
    """Equilibrium Propagation (Scellier and Bengio 2017) in a linear resistive network.

    ``nudge="current"``: inject ``-beta P^T delta`` (``delta = dC/do`` at the free state):
    ``u_beta = u_0 - beta lam`` with the adjoint ``lam``, so per sample
    ``(dE/dg(u_beta) - dE/dg(u_0)) / beta = -a w + beta a^2 / 2`` with ``a = B^T lam``:
    bias ``O(beta)`` one-sided, and the centered estimator is exactly ``-a w = dC/dg``.
    ``nudge="energy"``: add ``beta C(P u)`` to the energy; for squared error the nudged
    output error is ``delta_beta = (I + beta K)^{-1} delta`` (a rank-k change of
    ``L_FF`` by the Schur complement on the outputs), other losses by Newton on the k
    outputs; centered bias ``O(beta^2)``.

    Defaults (:mod:`kirchnet.defaults`): ``beta = 0.1``, ``variant = "centered"``,
    ``nudge = "current"``. Choosing ``beta``: the nudge moves the outputs by about
    ``beta K delta`` (``K`` the output compliance, about ``1/g`` in ohms for conductances
    ``g`` in siemens; ``delta = dC/do`` the output error), so pick ``beta`` with
    ``beta K`` well below 1, i.e. the nudge a small fraction of the output error: ``0.1``
    for conductances of order 1 S (scale it by the typical ``g``: ``1e-4`` S devices take
    ``beta ~ 1e-5``). Centered with the current nudge is exact for any ``beta`` in a
    linear network; the energy nudge's centered bias is ``O((beta K)^2)``, the positive
    variant's ``O(beta K)`` (measured: positive, ``beta = 1`` drops Iris from 0.82 to
    0.73 and digits from 0.86 to 0.19; ``beta`` far below ``1e-3 / K`` only adds rounding
    noise, and in hardware, measurement noise).
    """

    name = "ep"

    def __init__(self, beta: float = defaults.EP_BETA, variant: str = defaults.EP_VARIANT,
                 nudge: str = defaults.EP_NUDGE, loss="mse"):
        super().__init__(loss)
        self.beta, self.variant = _check("beta", beta, variant)
        if nudge not in ("current", "energy"):
            raise ParameterError(f"nudge must be 'current' or 'energy', got {nudge!r}")
        self.nudge = nudge

    def estimate(self, circuit, conductances, x, y, factorization=None) -> RuleResult:
        if not circuit.is_linear:  # exact nonlinear phases (rules/_nonlinear.py)
            return _nonlinear.estimate(self, circuit, conductances, x, y, factorization)
        ctx = _free_phase(self.loss, circuit, conductances, x, y, factorization)
        nudge = NUDGES[self.nudge]()  # CurrentNudge (mu = -beta delta) or EnergyNudge
        return _two_phase(ctx, _betas(self.beta, self.variant),
                          lambda bk: _port_currents(nudge(bk, ctx), ctx), ("nudged_negative", "nudged"),
                          lambda: {"beta": self.beta, "variant": self.variant, "nudge": self.nudge,
                                   "delta": ctx.delta})


class _OutputClampRule(Rule):
    """Two-phase rule whose nudged phase clamps the outputs: ``o_C = o_F + eta * shift``.

    The clamp is the port current ``eta * nu`` with ``nu = S shift`` (``S = K^{-1}``, the
    k x k output stiffness from the free factorization's adjoint basis): never a
    refactorization. Estimator ``(1/eta)[dE/dg(u_C) - dE/dg(u_F)] = c w + eta c^2 / 2``
    per sample with ``c = W nu`` (positive variant). Subclasses define ``shift``.
    """

    def __init__(self, eta: float = defaults.CL_ETA, variant: str = defaults.CL_VARIANT, loss="mse"):
        super().__init__(loss)
        self.eta, self.variant = _check("eta", eta, variant, clamp=True)

    def _port_current(self, ports: Ports, free: State, y, delta: np.ndarray) -> tuple[np.ndarray, dict]:
        """``(nu, extra_info)``: port current per unit ``eta`` (b, k)."""
        raise NotImplementedError

    def estimate(self, circuit, conductances, x, y, factorization=None) -> RuleResult:
        if not circuit.is_linear:  # exact nonlinear phases (rules/_nonlinear.py)
            return _nonlinear.estimate(self, circuit, conductances, x, y, factorization)
        ctx = _free_phase(self.loss, circuit, conductances, x, y, factorization)
        nu, extra = self._port_current(ctx.ports, ctx.free, y, ctx.delta)  # the clamp per unit eta
        return _two_phase(ctx, _betas(self.eta, self.variant), lambda bk: bk * nu,
                          ("clamped_negative", "clamped"),
                          lambda: {"eta": self.eta, "variant": self.variant, "delta": ctx.delta, **extra})


class CoupledLearning(_OutputClampRule):
    """Coupled learning (Stern et al. 2021): clamp the outputs to ``o_F + eta (y - o_F)``.

    ``shift = y - o_F``, so ``c = W S (y - o_F)``; ``eta -> 0`` gives ``c w``, the gradient
    of ``1/2 (o - y)^T S (o - y)`` at frozen ``S``. Targets are output values (for
    cross-entropy: the one-hot / probability targets). ``info["stiffness_error"]`` is
    ``S (y - o_F)``.

    Defaults (:mod:`kirchnet.defaults`): ``eta = 0.03``, positive (free and clamped phase).
    Choosing ``eta``: ``eta`` is the fraction of the way the clamp pulls the outputs to the
    targets, and the estimate is the gradient of the stiffness-weighted error only as
    ``eta -> 0`` (its bias is ``O(eta)``); the step size does not depend on ``eta`` (the
    estimate is divided by it), so keep ``eta`` small, 0.01-0.05. Measured with Adam at
    ``lr = 0.05``: diabetes R^2 0.487 at ``eta = 0.03`` (0.487 with the exact gradient)
    but 0.29 at ``eta = 0.5``; digits 0.85 at 0.03, 0.78 at 0.1, 0.16 at 0.5.
    """

    name = "cl"

    def _port_current(self, ports, free, y, delta):
        nu = ports.stiffness_solve(self.loss.targets(y, free.outputs) - free.outputs)
        return nu, {"stiffness_error": nu}


class AdjointCoupledLearning(_OutputClampRule):
    """Adjoint coupled learning (McGinnis, Li, Mori, arXiv:2606.15443; our reading).

    Clamp the outputs to the adjoint-corrected target ``o_F - eta K delta`` (``K`` the
    output compliance, ``delta = dC/do``): the clamp draws exactly the port currents
    ``-eta delta``, so the clamped state is the EP current-nudged state and
    ``(1/eta)[dE/dg(u_C) - dE/dg(u_F)] -> dC/dg`` as ``eta -> 0`` (the natural loss, not
    CL's stiffness-weighted one). Implemented as the clamp, through ``S = K^{-1}``.

    Defaults: ``eta = 0.03``, positive, as :class:`CoupledLearning`; its bias is that of
    positive EP with ``beta = eta``, so the advice on ``beta`` of
    :class:`EquilibriumPropagation` applies.
    """

    name = "acl"

    def _port_current(self, ports, free, y, delta):
        return ports.stiffness_solve(-(delta @ ports.K)), {}  # = -delta up to rounding
