"""Every learning rule on nonlinear (diode, rectifier, ideal-diode) circuits."""

from __future__ import annotations

import numpy as np
import pytest

import kirchnet as kn
from kirchnet.elements import Diode, IdealDiode, Rectifier
from kirchnet.nonlinear import gradient_from_adjoint
from kirchnet.partial import Masked
from kirchnet.rules import (
    GEP,
    AdjointCoupledLearning,
    Analytical,
    CoupledLearning,
    EquilibriumPropagation,
    FiniteDifference,
    InSitu,
)
from kirchnet.training import Trainer

DIODE = Diode(saturation_current=1e-2, thermal_voltage=0.1)


@pytest.fixture(scope="module")
def problem():
    net = kn.topologies.lattice(4, 4)
    m = net.n_edges
    rng = np.random.default_rng(0)
    c = kn.Circuit(net, ground=0, inputs=[15, 12], outputs=[6, 9],
                   elements={DIODE: list(range(0, m, 2)), Rectifier(): [3, 13]})
    g = rng.uniform(0.5, 2, m)
    x = rng.uniform(-1, 1, (8, 2))
    y = rng.uniform(-0.3, 0.3, (8, 2))
    return c, g, x, y, c.loss_and_grad(g, x, y)[1]


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _slope(xs, errs):
    return float(np.polyfit(np.log(xs), np.log(errs), 1)[0])


BETAS = np.array([0.02, 0.01, 0.005, 0.0025])


@pytest.mark.parametrize("nudge", ["current", "energy"])
def test_ep_bias_is_first_order_one_sided_and_second_order_centered(problem, nudge):
    c, g, x, y, G = problem
    one = [_rel(EquilibriumPropagation(b, "positive", nudge=nudge).estimate(c, g, x, y).estimate, G)
           for b in BETAS]
    neg = [_rel(EquilibriumPropagation(b, "negative", nudge=nudge).estimate(c, g, x, y).estimate, G)
           for b in BETAS]
    cen = [_rel(EquilibriumPropagation(b, "centered", nudge=nudge).estimate(c, g, x, y).estimate, G)
           for b in BETAS]
    assert 0.9 < _slope(BETAS, one) < 1.1 and 0.9 < _slope(BETAS, neg) < 1.1
    assert 1.85 < _slope(BETAS, cen) < 2.15
    # centered EP with a current nudge is no longer exact in a nonlinear network (in a
    # linear one its error is at rounding level, ~1e-15)
    assert cen[-1] > 1e-6


def test_coupled_learning_tends_to_the_frozen_stiffness_gradient(problem):
    c, g, x, y, _ = problem
    fac = c.factorize(g)
    free = fac.solve(x)
    S = np.linalg.inv(fac.compliance(free))  # small-signal output stiffness per sample
    lam = fac.adjoint(free, np.einsum("bkl,bl->bk", S, free.outputs - y))
    limit = gradient_from_adjoint(free, lam).mean(axis=0)  # d/dg 1/2 (o-y)^T S (o-y), S frozen
    errs = [_rel(CoupledLearning(e, "positive").estimate(c, g, x, y).estimate, limit) for e in BETAS]
    assert 0.9 < _slope(BETAS, errs) < 1.1 and errs[-1] < 0.1
    res = CoupledLearning(0.05, "positive").estimate(c, g, x, y)
    np.testing.assert_allclose(res.states["clamped"].outputs, free.outputs + 0.05 * (y - free.outputs),
                               atol=1e-10)


def test_adjoint_coupled_learning_tends_to_the_gradient(problem):
    c, g, x, y, G = problem
    errs = [_rel(AdjointCoupledLearning(e, "positive").estimate(c, g, x, y).estimate, G) for e in BETAS]
    assert 0.9 < _slope(BETAS, errs) < 1.1
    cen = [_rel(AdjointCoupledLearning(e, "centered").estimate(c, g, x, y).estimate, G) for e in BETAS]
    assert 1.8 < _slope(BETAS, cen) < 2.2


def test_gep_members_equal_ep_and_cl_and_report_the_objective(problem):
    c, g, x, y, _ = problem
    for var in ("positive", "centered"):
        a = GEP("current", 0.05, variant=var).estimate(c, g, x, y).estimate
        b = EquilibriumPropagation(0.05, var, nudge="current").estimate(c, g, x, y).estimate
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        a = GEP("energy", 0.05, variant=var).estimate(c, g, x, y).estimate
        b = EquilibriumPropagation(0.05, var, nudge="energy").estimate(c, g, x, y).estimate
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
        a = GEP("clamp", 0.05, variant=var).estimate(c, g, x, y).estimate
        b = CoupledLearning(0.05, var).estimate(c, g, x, y).estimate
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
        a = GEP("adjoint_clamp", 0.05, variant=var).estimate(c, g, x, y).estimate
        b = AdjointCoupledLearning(0.05, var).estimate(c, g, x, y).estimate
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    L = c.loss_and_grad(g, x, y)[0]
    for nudge in ("current", "energy"):  # order 1: (Phi(beta) - Phi(0)) / beta -> C
        objs = [GEP(nudge, b, variant="positive").estimate(c, g, x, y).info["objective"] for b in BETAS]
        errs = np.abs(np.asarray(objs) - L)
        assert 0.9 < _slope(BETAS, errs) < 1.1


def test_finite_difference_and_masked_rules(problem):
    c, g, x, y, G = problem
    fd = FiniteDifference(eps=1e-6).estimate(c, g, x, y)
    assert _rel(fd.estimate, G) < 1e-6
    an = Analytical().estimate(c, g, x, y)
    np.testing.assert_array_equal(an.estimate, G)
    mask = np.zeros(g.size, dtype=bool)
    mask[:5] = True
    est = Masked(EquilibriumPropagation(0.01, "centered"), mask).estimate(c, g, x, y).estimate
    assert np.all(est[~mask] == 0) and np.all(est[mask] != 0)


def test_insitu_small_signal_estimate_tends_to_the_gradient(problem):
    c, g, x, y, G = problem
    amps = np.array([1e-1, 3e-2, 1e-2, 3e-3])
    errs = [_rel(InSitu(amplitude=a).estimate(c, g, x, y).estimate, G) for a in amps]
    assert 0.9 < _slope(amps, errs) < 1.1 and errs[-1] < 3e-3
    r = InSitu(amplitude=1e-4, wrt="resistance").estimate(c, g, x, y)
    np.testing.assert_allclose(r.estimate, -(g ** 2) * G, rtol=1e-3, atol=1e-8)
    noisy = [InSitu(amplitude=1e-4, current_noise=0.05, seed=s).estimate(c, g, x, y).estimate
             for s in range(20)]
    assert _rel(np.mean(noisy, axis=0), G) < _rel(noisy[0], G)  # zero-mean noise averages out
    q = InSitu(amplitude=1e-4, adc_bits=12).estimate(c, g, x, y).estimate
    assert 0 < _rel(q, G) < 0.05
    with pytest.raises(kn.ParameterError, match="superposition"):
        InSitu(mode="superposed").estimate(c, g, x, y)


def test_ideal_diode_network_rules_match_finite_differences():
    # hidden nodes bounded by ideal diodes to bias sources (Scellier's construction)
    net = kn.topologies.layered([3, 4, 2])
    n0 = net.n_nodes
    edges = [tuple(e) for e in net.edges]
    hidden = list(range(3, 7))
    bias_hi, bias_lo = n0, n0 + 1
    ideal = []
    for v in hidden:
        edges.append((v, bias_hi)); ideal.append(len(edges) - 1)  # u_v <= bias_hi
        edges.append((bias_lo, v)); ideal.append(len(edges) - 1)  # u_v >= bias_lo
    big = kn.Network(n0 + 2, edges)
    c = kn.Circuit(big, ground=0, inputs=[1, 2, bias_hi, bias_lo], outputs=[7, 8],
                   elements={IdealDiode(): ideal})
    rng = np.random.default_rng(1)
    g = rng.uniform(0.5, 2, big.n_edges)
    x = np.column_stack([rng.uniform(-2, 2, (6, 2)), np.full(6, 0.3), np.full(6, -0.3)])
    y = rng.uniform(-0.2, 0.2, (6, 2))
    st = c.solve(g, x)
    assert np.all(st.potentials[:, hidden] <= 0.3 + 1e-12) and np.all(st.potentials[:, hidden] >= -0.3 - 1e-12)
    assert st.active.any()
    G = c.loss_and_grad(g, x, y)[1]
    fd = FiniteDifference(eps=1e-6).estimate(c, g, x, y).estimate
    np.testing.assert_allclose(G, fd, rtol=1e-5, atol=1e-9 * np.abs(G).max())
    ep = EquilibriumPropagation(1e-3, "centered").estimate(c, g, x, y).estimate
    assert _rel(ep, G) < 1e-3


def test_trainer_trains_a_diode_network_with_ep(problem):
    c, g, _, _, _ = problem
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, (48, 2))
    Y = c.solve(rng.uniform(0.5, 2, g.size), X).outputs  # a realizable teacher
    res = Trainer(EquilibriumPropagation(0.05, "centered"), "adam", lr=0.05, epochs=8,
                  batch_size=16).fit(c, g, X, Y)
    losses = res.history["loss"]
    assert losses[-1] < 0.1 * losses[0]


def test_linear_circuits_are_unchanged_by_the_nonlinear_dispatch():
    from kirchnet.elements import Resistor

    net = kn.topologies.lattice(4, 4)
    rng = np.random.default_rng(2)
    g = rng.uniform(0.5, 2, net.n_edges)
    x, y = rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, (5, 2))
    a = kn.Circuit(net, ground=0, inputs=[15, 12], outputs=[6, 9])
    b = kn.Circuit(net, ground=0, inputs=[15, 12], outputs=[6, 9], elements={Resistor(): [1, 2]})
    for rule in (EquilibriumPropagation(0.1, "positive", nudge="energy"), CoupledLearning(0.1, "positive"),
                 GEP("adjoint_clamp", 0.1, variant="positive"), InSitu(), FiniteDifference()):
        np.testing.assert_array_equal(rule.estimate(a, g, x, y).estimate, rule.estimate(b, g, x, y).estimate)
