"""Two-phase rules (EP, CL, ACL, GEP) and the finite-difference baseline vs the exact gradient."""

from __future__ import annotations

import numpy as np
import pytest

from kirchnet import Circuit, Edge, Pair, topologies
from kirchnet.errors import BoundaryConditionError, ParameterError
from kirchnet.losses import CrossEntropy, Loss, get_loss
from kirchnet.rules import (
    GEP,
    AdjointCoupledLearning,
    Analytical,
    CoupledLearning,
    EquilibriumPropagation,
    FiniteDifference,
    InSitu,
    Nudge,
    Nudged,
)

VARIANTS = ("positive", "negative", "centered")


def _problem(kind: str, batch: int = 16, seed: int = 0):
    """A random graph with node inputs, a series-source input, node and Pair outputs."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        net = topologies.random_connected(36, mean_degree=4, seed=seed)
    else:
        net = topologies.delaunay(40, seed=seed)
    circuit = Circuit(net, ground=0, inputs=[1, 2, Edge(5)], outputs=[20, 21, Pair(22, 23)])
    g = rng.uniform(0.3, 3.0, net.n_edges)
    x = rng.normal(size=(batch, 3))
    y = rng.normal(size=(batch, 3))
    return circuit, g, x, y


PROBLEMS = ("random", "delaunay")


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _slope(betas, errors):
    return np.polyfit(np.log(betas), np.log(errors), 1)[0]


def _dense_parts(circuit, g):
    """Independent dense ``L_FF^{-1}``, ``P_F`` and output compliance ``K`` (no kirchnet solver)."""
    L = circuit.reduced_laplacian(g).toarray()
    Linv = np.linalg.inv(L)
    PF = circuit.readout[:, circuit.free_nodes].toarray()
    return Linv, PF, PF @ Linv @ PF.T


BETAS = np.logspace(-1, -4, 7)


# ------------------------------------------------------------------ EP
@pytest.mark.parametrize("kind", PROBLEMS)
@pytest.mark.parametrize("nudge", ["current", "energy"])
@pytest.mark.parametrize("variant", ["positive", "negative"])
def test_one_sided_ep_bias_is_first_order(kind, nudge, variant):
    c, g, x, y = _problem(kind)
    fac = c.factorize(g)
    ref = Analytical().estimate(c, g, x, y, factorization=fac).estimate
    errs = [_rel(EquilibriumPropagation(b, variant, nudge).estimate(c, g, x, y, factorization=fac).estimate, ref)
            for b in BETAS]
    assert abs(_slope(BETAS, errs) - 1.0) <= 0.2
    assert errs[-1] < 1e-2


@pytest.mark.parametrize("kind", PROBLEMS)
def test_centered_ep_energy_nudge_is_second_order(kind):
    c, g, x, y = _problem(kind)
    fac = c.factorize(g)
    ref = Analytical().estimate(c, g, x, y, factorization=fac).estimate
    errs = [_rel(EquilibriumPropagation(b, "centered", "energy").estimate(c, g, x, y, factorization=fac).estimate, ref)
            for b in BETAS]
    assert abs(_slope(BETAS, errs) - 2.0) <= 0.2
    assert errs[-1] < 1e-6


@pytest.mark.parametrize("kind", PROBLEMS)
@pytest.mark.parametrize("beta", [1e-4, 0.1, 3.0, 100.0])
def test_centered_ep_current_nudge_is_exact(kind, beta):
    c, g, x, y = _problem(kind)
    ref = Analytical().estimate(c, g, x, y).estimate
    est = EquilibriumPropagation(beta, "centered", "current").estimate(c, g, x, y).estimate
    assert _rel(est, ref) <= 1e-9


def test_ep_cross_entropy_energy_nudge():
    """Newton on the outputs for a non-quadratic loss: centered bias O(beta^2) vs the exact CE gradient."""
    c, g, x, _ = _problem("random", batch=12)
    labels = np.arange(12) % 3
    fac = c.factorize(g)
    ref = Analytical(loss="cross_entropy").estimate(c, g, x, labels, factorization=fac).estimate
    betas = np.logspace(-1, -3, 5)
    errs = [_rel(EquilibriumPropagation(b, "centered", "energy", loss="cross_entropy")
                 .estimate(c, g, x, labels, factorization=fac).estimate, ref) for b in betas]
    assert abs(_slope(betas, errs) - 2.0) <= 0.2


@pytest.mark.parametrize("loss,targets", [("mse", None), ("cross_entropy", "labels")])
def test_energy_nudged_state_satisfies_nudged_kirchhoff(loss, targets):
    """KCL at the nudged state: net current leaving each free node = -beta (P^T dC/do(o_beta))."""
    c, g, x, y = _problem("delaunay", batch=6)
    if targets == "labels":
        y = np.array([0, 1, 2, 2, 1, 0])
    beta = 0.7
    res = EquilibriumPropagation(beta, "positive", "energy", loss=loss).estimate(c, g, x, y)
    st = res.states["nudged"]
    B = c.network.incidence().toarray()
    net_out = st.currents @ B.T  # (b, n): current leaving each node through its edges
    _, grad = get_loss(loss)(st.outputs, y)
    injected = -beta * grad @ c.readout.toarray()  # (b, n)
    F = c.free_nodes
    np.testing.assert_allclose(net_out[:, F], injected[:, F], atol=1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_ep_states_are_current_nudged_equilibria(variant):
    c, g, x, y = _problem("random", batch=5)
    beta = 0.3
    res = EquilibriumPropagation(beta, variant, "current").estimate(c, g, x, y)
    delta = res.info["delta"]
    B = c.network.incidence().toarray()
    P = c.readout.toarray()
    for key, sign in (("nudged", 1.0), ("nudged_negative", -1.0)):
        if key not in res.states:
            continue
        st = res.states[key]
        np.testing.assert_allclose((st.currents @ B.T)[:, c.free_nodes],
                                   (-sign * beta * delta @ P)[:, c.free_nodes], atol=1e-10)
    assert set(res.states) == {"positive": {"nudged"}, "negative": {"nudged_negative"},
                               "centered": {"nudged", "nudged_negative"}}[variant]


# ------------------------------------------------------------------ CL
@pytest.mark.parametrize("kind", PROBLEMS)
def test_coupled_learning_clamp_is_exact(kind):
    """The clamped state holds the outputs at o + eta (y - o) and obeys KCL off the output ports."""
    c, g, x, y = _problem(kind, batch=5)
    eta = 0.4
    res = CoupledLearning(eta).estimate(c, g, x, y)
    st, o = res.states["clamped"], res.free.outputs
    np.testing.assert_allclose(st.outputs, o + eta * (y - o), atol=1e-10)
    B = c.network.incidence().toarray()
    net_out = st.currents @ B.T
    ports = np.flatnonzero(np.abs(c.readout.toarray()).sum(axis=0))
    interior = np.setdiff1d(c.free_nodes, ports)
    np.testing.assert_allclose(net_out[:, interior], 0.0, atol=1e-10)


def _frozen_objective_grad_fd(c, g, x, y, S, h=1e-6):
    """Central differences (refactorizing) of ``mean 1/2 (o(g) - y)^T S (o(g) - y)`` at frozen S."""
    def J(gg):
        d = c.solve(gg, x).outputs - y
        return 0.5 * np.einsum("bk,kl,bl->b", d, S, d).mean()

    out = np.empty(g.size)
    for e in range(g.size):
        step = np.zeros_like(g)
        step[e] = h * g[e]
        out[e] = (J(g + step) - J(g - step)) / (2 * step[e])
    return out


def _stiffness_objective_grad_fd(c, g, x, y, h=1e-6):
    """Central differences of ``l_2(g) = mean 1/2 delta^T S(g) delta`` (S varying with g)."""
    def J(gg):
        _, _, K = _dense_parts(c, gg)
        d = c.solve(gg, x).outputs - y
        return 0.5 * np.einsum("bk,kl,bl->b", d, np.linalg.inv(K), d).mean()

    out = np.empty(g.size)
    for e in range(g.size):
        step = np.zeros_like(g)
        step[e] = h * g[e]
        out[e] = (J(g + step) - J(g - step)) / (2 * step[e])
    return out


def test_coupled_learning_limit_is_stiffness_weighted_gradient():
    c, g, x, y = _problem("random", batch=8, seed=3)
    fac = c.factorize(g)
    _, _, K = _dense_parts(c, g)
    S = np.linalg.inv(K)
    target = _frozen_objective_grad_fd(c, g, x, y, S)
    limit = CoupledLearning(1e-3, "centered").estimate(c, g, x, y, factorization=fac).estimate
    assert _rel(limit, target) < 1e-6
    etas = np.logspace(-1, -4, 7)
    errs = [_rel(CoupledLearning(e).estimate(c, g, x, y, factorization=fac).estimate, target) for e in etas]
    assert abs(_slope(etas, errs) - 1.0) <= 0.2
    # ... and it is not the MSE gradient
    ref = Analytical().estimate(c, g, x, y, factorization=fac).estimate
    assert _rel(limit, ref) > 1e-2
    cos = limit @ ref / np.linalg.norm(limit) / np.linalg.norm(ref)
    assert 0 < cos < 0.9999


def test_coupled_learning_at_eta_one_is_gradient_of_stiffness_objective():
    """With the target y itself as the clamp, CL is the full gradient of 1/2 delta^T S delta."""
    c, g, x, y = _problem("delaunay", batch=6, seed=2)
    est = CoupledLearning(1.0).estimate(c, g, x, y).estimate
    assert _rel(est, _stiffness_objective_grad_fd(c, g, x, y)) < 1e-6


def test_gep_objectives():
    """GEP reports (Phi(beta)-Phi(0))/beta^k: CL gives 1/2 delta^T S delta, EP tends to the loss."""
    c, g, x, y = _problem("random", batch=10, seed=4)
    _, _, K = _dense_parts(c, g)
    d = c.solve(g, x).outputs - y
    l2 = 0.5 * np.einsum("bk,kl,bl->b", d, np.linalg.inv(K), d).mean()
    for eta in (1e-3, 0.5):
        assert GEP("clamp", eta).estimate(c, g, x, y).info["objective"] == pytest.approx(l2, rel=1e-9)
    loss = Analytical().estimate(c, g, x, y).loss
    for nudge in ("current", "energy"):
        gaps = [abs(GEP(nudge, b).estimate(c, g, x, y).info["objective"] - loss) for b in BETAS]
        assert abs(_slope(BETAS, gaps) - 1.0) <= 0.2


# ------------------------------------------------------------------ ACL
@pytest.mark.parametrize("kind", PROBLEMS)
def test_adjoint_coupled_learning_tends_to_analytical(kind):
    c, g, x, y = _problem(kind)
    fac = c.factorize(g)
    ref = Analytical().estimate(c, g, x, y, factorization=fac).estimate
    errs = [_rel(AdjointCoupledLearning(e).estimate(c, g, x, y, factorization=fac).estimate, ref) for e in BETAS]
    assert abs(_slope(BETAS, errs) - 1.0) <= 0.2
    centered = AdjointCoupledLearning(0.5, "centered").estimate(c, g, x, y, factorization=fac).estimate
    assert _rel(centered, ref) < 1e-9
    # the clamped outputs sit at the adjoint-corrected target o - eta K delta
    eta = 0.2
    res = AdjointCoupledLearning(eta).estimate(c, g, x, y, factorization=fac)
    _, _, K = _dense_parts(c, g)
    o = res.free.outputs
    np.testing.assert_allclose(res.states["clamped"].outputs, o - eta * (o - y) @ K, atol=1e-10)


# ------------------------------------------------------------------ GEP
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("beta", [1e-3, 0.5])
def test_gep_reproduces_dedicated_rules(variant, beta):
    c, g, x, y = _problem("delaunay", seed=5)
    fac = c.factorize(g)

    def est(rule):
        return rule.estimate(c, g, x, y, factorization=fac).estimate

    for nudge in ("current", "energy"):
        a = est(EquilibriumPropagation(beta, variant, nudge))
        b = est(GEP(nudge, beta, variant=variant))
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12 * np.abs(a).max())
    a, b = est(CoupledLearning(beta, variant)), est(GEP("clamp", beta, variant=variant))
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12 * np.abs(a).max())
    a, b = est(AdjointCoupledLearning(beta, variant)), est(GEP("adjoint_clamp", beta, variant=variant))
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12 * np.abs(a).max())


def test_gep_cross_entropy_energy_matches_ep():
    c, g, x, _ = _problem("random", batch=9)
    labels = np.arange(9) % 3
    a = EquilibriumPropagation(0.2, "centered", "energy", loss="cross_entropy").estimate(c, g, x, labels).estimate
    b = GEP("energy", 0.2, variant="centered", loss="cross_entropy").estimate(c, g, x, labels).estimate
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-13)


class _DoubleCurrent(Nudge):
    """A user nudge: inject twice the EP current."""

    def __call__(self, beta, ctx):
        return Nudged(currents=-2.0 * beta * ctx.delta)


def test_gep_accepts_user_nudges():
    c, g, x, y = _problem("random")
    a = GEP(_DoubleCurrent(), 0.1).estimate(c, g, x, y).estimate
    b = EquilibriumPropagation(0.2).estimate(c, g, x, y).estimate
    np.testing.assert_allclose(a, 2.0 * b, rtol=1e-10)


# ------------------------------------------------------------------ no refactorization
class _CountingFactor:
    """Wraps a solver factorization and counts solved right-hand-side columns."""

    def __init__(self, inner):
        self.inner = inner
        self.columns = 0

    def solve(self, rhs):
        rhs = np.asarray(rhs)
        self.columns += 1 if rhs.ndim == 1 else rhs.shape[1]
        return self.inner.solve(rhs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


RULES_NO_REFACTOR = [
    lambda: EquilibriumPropagation(0.1, "centered", "current"),
    lambda: EquilibriumPropagation(0.1, "centered", "energy"),
    lambda: EquilibriumPropagation(0.1, "positive", "energy", loss="cross_entropy"),
    lambda: CoupledLearning(0.1, "centered"),
    lambda: AdjointCoupledLearning(0.1),
    lambda: GEP("clamp", 0.1, variant="centered"),
    lambda: GEP("energy", 0.1, variant="centered"),
    lambda: InSitu(),
    lambda: Analytical(),
]


@pytest.mark.parametrize("make", RULES_NO_REFACTOR)
def test_nudged_solves_reuse_the_free_factorization(make, monkeypatch):
    import kirchnet.circuit as circuit_mod
    import kirchnet.solvers as solvers_mod

    c, g, x, y = _problem("delaunay", batch=64)
    rule = make()
    if isinstance(rule.loss, CrossEntropy):
        y = np.arange(64) % 3
    fac = c.factorize(g)
    counter = _CountingFactor(fac.factor)
    fac.factor = counter

    def forbidden(*args, **kwargs):
        raise AssertionError("refactorization during a rule's estimate")

    monkeypatch.setattr(solvers_mod, "factorize", forbidden)
    monkeypatch.setattr(circuit_mod.solvers, "factorize", forbidden)
    res = rule.estimate(c, g, x, y, factorization=fac)
    assert np.all(np.isfinite(res.estimate))
    # drivers (3) once for the batch's transfer matrix + one column per output (3)
    assert 0 < counter.columns <= c.n_inputs + c.n_outputs


# ------------------------------------------------------------------ finite differences
def test_finite_difference_matches_refactorized_differences_and_analytical():
    c, g, x, y = _problem("random", batch=7, seed=6)
    eps = 1e-5
    fd = FiniteDifference(eps, block=17).estimate(c, g, x, y).estimate  # several edge blocks
    brute = np.empty(g.size)
    for e in range(g.size):
        step = np.zeros_like(g)
        step[e] = eps * g[e]
        brute[e] = (c.loss_and_grad(g + step, x, y)[0] - c.loss_and_grad(g - step, x, y)[0]) / (2 * step[e])
    np.testing.assert_allclose(fd, brute, rtol=1e-6, atol=1e-9 * np.abs(brute).max())
    ref = Analytical().estimate(c, g, x, y).estimate
    assert _rel(fd, ref) < 1e-7


def test_finite_difference_cross_entropy():
    c, g, x, _ = _problem("delaunay", batch=6)
    labels = np.arange(6) % 3
    fd = FiniteDifference(1e-5, loss="ce").estimate(c, g, x, labels).estimate
    ref = Analytical(loss="ce").estimate(c, g, x, labels).estimate
    assert _rel(fd, ref) < 1e-7


# ------------------------------------------------------------------ errors
def test_parameter_errors():
    with pytest.raises(ParameterError, match="beta"):
        EquilibriumPropagation(0.0)
    with pytest.raises(ParameterError, match="beta"):
        EquilibriumPropagation(float("nan"))
    with pytest.raises(ParameterError, match="variant"):
        EquilibriumPropagation(0.1, variant="both")
    with pytest.raises(ParameterError, match="nudge"):
        EquilibriumPropagation(0.1, nudge="clamp")
    with pytest.raises(ParameterError, match="eta"):
        CoupledLearning(-1.0)
    with pytest.raises(ParameterError, match="unknown nudge"):
        GEP("push", 0.1)
    with pytest.raises(ParameterError, match="eps"):
        FiniteDifference(0.0)


def test_clamping_outputs_of_clamped_nodes_is_reported():
    net = topologies.lattice(4, 4)
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[Pair(1, 2), 10])
    g = np.ones(net.n_edges)
    x, y = np.ones((3, 2)), np.zeros((3, 2))
    with pytest.raises(BoundaryConditionError, match="cannot be clamped"):
        CoupledLearning(0.1).estimate(c, g, x, y)
    # EP only injects currents: fine
    est = EquilibriumPropagation(0.1, "centered").estimate(c, g, x, y).estimate
    assert _rel(est, Analytical().estimate(c, g, x, y).estimate) < 1e-9


def test_single_sample_and_repr():
    c, g, x, y = _problem("random", batch=1)
    res = EquilibriumPropagation(0.01).estimate(c, g, x[0], y[0])
    assert res.estimate.shape == (c.network.n_edges,)
    assert "beta=0.01" in repr(EquilibriumPropagation(0.01))
    assert "ClampNudge" in repr(GEP("clamp", 0.1))


class _Quartic(Loss):
    """A loss without a closed-form Hessian in kirchnet: C = 1/4 sum (o - y)^4."""

    name = "quartic"

    def targets(self, targets, outputs):
        return np.broadcast_to(np.asarray(targets, dtype=float), outputs.shape)

    def __call__(self, outputs, targets):
        d = outputs - self.targets(targets, outputs)
        return 0.25 * (d ** 4).sum(axis=1), d ** 3


def test_energy_nudge_generic_loss_uses_numerical_hessian():
    c, g, x, y = _problem("random", batch=5)
    beta = 0.5
    loss = _Quartic()
    res = EquilibriumPropagation(beta, "positive", "energy", loss=loss).estimate(c, g, x, y)
    st = res.states["nudged"]
    B = c.network.incidence().toarray()
    injected = -beta * loss(st.outputs, y)[1] @ c.readout.toarray()
    np.testing.assert_allclose((st.currents @ B.T)[:, c.free_nodes], injected[:, c.free_nodes], atol=1e-9)
    ref = Analytical(loss=loss).estimate(c, g, x, y).estimate
    est = EquilibriumPropagation(1e-4, "centered", "energy", loss=loss).estimate(c, g, x, y).estimate
    assert _rel(est, ref) < 1e-6


# ------------------------------------------------------------ argument validation and finiteness (issue 9)
@pytest.mark.parametrize("call, match", [
    (lambda: CoupledLearning(eta=2.0), r"eta must lie in \(0, 1\] \(the clamping fraction.*got 2\.0; eta > 1 clamps beyond the target"),
    (lambda: AdjointCoupledLearning(eta=1.5), r"eta must lie in \(0, 1\]"),
    (lambda: GEP("clamp", beta=2.0), r"beta must lie in \(0, 1\] \(the clamping fraction"),
    (lambda: CoupledLearning(eta=0.0), r"eta must be > 0\.0, got 0\.0"),
    (lambda: CoupledLearning(eta=np.nan), r"eta must be finite, got nan"),
    (lambda: EquilibriumPropagation(beta=np.inf), r"beta must be finite, got inf"),
    (lambda: EquilibriumPropagation(beta=-0.1), r"beta must be > 0\.0, got -0\.1"),
    (lambda: EquilibriumPropagation(beta="0.1"), r"beta must be a real number, got '0\.1'"),
    (lambda: EquilibriumPropagation(variant="both"), r"variant must be one of 'positive', 'negative', 'centered'; got 'both'"),
    (lambda: GEP("current", beta=np.nan), r"beta must be finite, got nan"),
    (lambda: InSitu(current_noise=np.nan), r"current_noise must be finite, got nan"),
    (lambda: InSitu(output_noise=-1.0), r"output_noise must be >= 0\.0, got -1\.0"),
    (lambda: InSitu(adc_bits=8.5), r"adc_bits must be an integer, got 8\.5"),
    (lambda: InSitu(adc_bits=40), r"adc_bits must be <= 32, got 40"),
    (lambda: InSitu(seed=-1), r"seed must be a non-negative integer, got -1"),
    (lambda: InSitu(mode="superposed", frequencies=(1.5, 2)), r"frequencies must be two integers"),
    (lambda: InSitu(n_samples=16.5), r"n_samples must be an integer, got 16\.5"),
    (lambda: FiniteDifference(eps=np.nan), r"eps must be finite, got nan"),
    (lambda: FiniteDifference(block=2.5), r"block must be an integer, got 2\.5"),
])
def test_rule_arguments_are_checked(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


def test_clamping_fraction_one_is_allowed():
    """eta = 1 clamps the outputs exactly to the targets (the full-clamp limit)."""
    assert CoupledLearning(eta=1.0).eta == 1.0
    assert EquilibriumPropagation(beta=2.0).beta == 2.0  # EP's beta is not a fraction


def test_a_non_finite_estimate_or_loss_raises_in_the_base_class():
    """Every Rule subclass's estimate is checked once, in Rule.__init_subclass__."""
    from kirchnet.errors import SolverError
    from kirchnet.rules import RuleResult
    from kirchnet.rules.base import Rule

    circuit, g, x, y = _problem("random", batch=4)

    class Broken(Rule):
        def __init__(self, value, loss_value=0.0):
            super().__init__()
            self.value, self.loss_value = value, loss_value

        def estimate(self, circuit, conductances, x, y, factorization=None):
            est = np.zeros(circuit.network.n_edges)
            est[3] = self.value
            return RuleResult(est, self.loss_value, lambda: None)

    with pytest.raises(SolverError, match=r"rule Broken returned a non-finite estimate on 1 of \d+ edge\(s\) "
                                          r"\(e\.g\. edge 3: nan\).*rescale"):
        Broken(np.nan).estimate(circuit, g, x, y)
    with pytest.raises(SolverError, match=r"edge 3: inf"):
        Broken(np.inf)(circuit, g, x, y)
    with pytest.raises(SolverError, match=r"returned a non-finite loss \(nan\)"):
        Broken(0.0, loss_value=np.nan).estimate(circuit, g, x, y)
    assert Broken(1.0).estimate(circuit, g, x, y).estimate[3] == 1.0

    class SubBroken(Broken):  # inherits the wrapped estimate: wrapped once, still checked
        pass

    assert SubBroken.estimate is Broken.estimate
    with pytest.raises(SolverError):
        SubBroken(np.nan).estimate(circuit, g, x, y)
    # the shipped rules are wrapped too
    for cls in (Analytical, EquilibriumPropagation, CoupledLearning, AdjointCoupledLearning, GEP,
                FiniteDifference, InSitu):
        assert getattr(cls.estimate, "_finite_checked", False), cls


def test_gep_order_is_an_integer():
    with pytest.raises(ParameterError, match=r"order must be an integer, got 1\.5"):
        GEP("current", beta=0.1, order=1.5)
    with pytest.raises(ParameterError, match=r"order must be >= 1, got 0"):
        GEP("current", beta=0.1, order=0)
    assert GEP("clamp", beta=0.1).order == 2


def test_two_phase_rules_contract_large_batches_through_the_bases(monkeypatch):
    """Batch > drivers and outputs: EP, CL, ACL and GEP never form the (batch x n) free
    potentials (the free state stays lazy) and equal the full-state path to 1e-12."""
    import kirchnet.rules.twophase as T
    from kirchnet import Edge, topologies
    from kirchnet.rules import (GEP, AdjointCoupledLearning, CoupledLearning,
                                EquilibriumPropagation)
    from kirchnet.rules._ports import LowRankFree

    net = topologies.lattice(5, 5)
    c = Circuit(net, ground=0, inputs=[24, 20, Edge(7)], outputs=[12, 8])
    rng = np.random.default_rng(5)
    g = rng.uniform(0.5, 2.0, net.n_edges)
    x, y = rng.uniform(-1, 1, (16, 3)), rng.uniform(-0.3, 0.3, (16, 2))
    rules = [EquilibriumPropagation(0.05, v, n) for v in ("positive", "centered") for n in ("current", "energy")]
    rules += [CoupledLearning(0.05, "centered"), AdjointCoupledLearning(0.05), GEP("clamp", 0.05),
              GEP("energy", 0.05, variant="negative")]
    lazy = [r.estimate(c, g, x, y) for r in rules]
    assert all(callable(res._free) for res in lazy)  # not solved: no (batch x n) potentials yet
    assert isinstance(T.free_state(c.factorize(g), x), LowRankFree)
    monkeypatch.setattr(T, "free_state", lambda fac, x_: fac.solve(x_))
    for r, a in zip(rules, lazy):
        b = r.estimate(c, g, x, y)
        np.testing.assert_allclose(a.estimate, b.estimate, rtol=1e-12, atol=1e-15 * np.abs(b.estimate).max())
        assert a.loss == pytest.approx(b.loss, rel=1e-13)
        np.testing.assert_allclose(a.free.potentials, b.free.potentials, rtol=0, atol=1e-14)
        for key in b.states:
            np.testing.assert_allclose(a.states[key].potentials, b.states[key].potentials, atol=1e-13)
