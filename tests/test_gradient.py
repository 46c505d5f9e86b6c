"""The exact (adjoint) gradient: against finite differences, closed forms and its own paths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kirchnet import Circuit, CrossEntropy, Edge, Network, Pair, loss_and_grad, topologies
from kirchnet.gradient import GradientResult, adjoint_potentials, gradient_from_states
from strategies import bridges, fd_log_gradient, problems, reference_losses, rel_err

FD_TOL = 1e-6


def _check_against_fd(p, per_sample_paths=True):
    """Both parametrizations, batch mean and per sample, against one log-space FD stencil."""
    # the graphs have what the issue asks for: parallel edges, a bridge, the drawn g ratio
    key = np.sort(p.network.edges, axis=1)
    assert np.unique(key, axis=0).shape[0] < p.network.n_edges
    assert bridges(p.network.edges, p.network.n_nodes).size >= 1
    assert np.log10(p.g.max() / p.g.min()) == pytest.approx(p.extra["decades"], abs=1e-9)
    c = p.circuit()
    D = fd_log_gradient(p)  # (b, m): g_e dC_s/dg_e
    ref_loss = float(np.mean(reference_losses(p)))
    # a problem whose outputs do not depend on any conductance has a zero gradient
    assume(np.linalg.norm(D.mean(axis=0)) > 1e-8 * max(ref_loss, 1e-300))
    for wrt, fd in (("conductance", D / p.g), ("resistance", -D * p.g)):
        loss, grad = loss_and_grad(c, p.g, p.x, p.y, loss=p.loss, wrt=wrt)
        assert loss == pytest.approx(ref_loss, rel=1e-10)
        assert grad.shape == (p.network.n_edges,)
        assert rel_err(grad, fd.mean(axis=0)) < FD_TOL, wrt
        if per_sample_paths:
            loss2, grad2, per = loss_and_grad(c, p.g, p.x, p.y, loss=p.loss, wrt=wrt,
                                              per_sample=True)
            assert per.shape == fd.shape
            assert rel_err(per, fd) < FD_TOL
            np.testing.assert_allclose(per.mean(axis=0), grad, rtol=1e-9,
                                       atol=1e-12 * np.abs(grad).max())


@settings(max_examples=60)
@given(problems(loss="mse", clamp_values=False))
def test_mse_gradient_matches_finite_differences(p):
    """60 random multigraphs (3-40 nodes, parallel edges, a bridge, g ratios up to 1e6)."""
    _check_against_fd(p)


@settings(max_examples=40)
@given(problems(loss="cross_entropy", clamp_values=False))
def test_cross_entropy_gradient_matches_finite_differences(p):
    """Labels and probability targets; node, Edge and Pair outputs."""
    _check_against_fd(p)


@settings(max_examples=20)
@given(st.one_of(problems(loss="mse", clamp_values=False, decades=6.0),
                 problems(loss="cross_entropy", clamp_values=False, decades=6.0)))
def test_gradient_at_conductance_ratio_1e6(p):
    """Always the extreme spread: min and max conductance differ by exactly 1e6."""
    _check_against_fd(p)


@settings(max_examples=15)
@given(problems(loss="mse", clamp_values=False, edge_inputs=False, min_nodes=5, max_batch=8))
def test_gradient_node_inputs_only(p):
    _check_against_fd(p, per_sample_paths=False)


@settings(max_examples=15)
@given(problems(loss="mse", clamp_values=False, node_inputs=False, min_nodes=5, max_batch=8))
def test_gradient_series_sources_only(p):
    _check_against_fd(p, per_sample_paths=False)


def test_voltage_divider_closed_form():
    """u = x g1 / (g1 + g2): dC/dg1 = (u - y) x g2 / (g1 + g2)^2, dC/dg2 = -(u - y) x g1 / (g1 + g2)^2."""
    net = Network(3, [[1, 2], [2, 0]])  # input 1 --g1-- 2 --g2-- ground 0
    c = Circuit(net, ground=0, inputs=[1], outputs=[2])
    g1, g2, x, y = 2.0, 3.0, 1.5, 0.1
    u = x * g1 / (g1 + g2)
    loss, grad = c.loss_and_grad([g1, g2], [x], [y])
    assert loss == pytest.approx(0.5 * (u - y) ** 2, rel=1e-14)
    expected = (u - y) * x * np.array([g2, -g1]) / (g1 + g2) ** 2
    np.testing.assert_allclose(grad, expected, rtol=1e-13)
    # resistance form: dC/dr = -g^2 dC/dg
    _, grad_r = c.loss_and_grad([g1, g2], [x], [y], wrt="resistance")
    np.testing.assert_allclose(grad_r, -np.array([g1, g2]) ** 2 * expected, rtol=1e-13)


def test_series_source_closed_form():
    """A loop of two resistors with a source s on edge 0: i = s g1 g2 / (g1 + g2)."""
    net = Network(2, [[0, 1], [0, 1]])
    c = Circuit(net, ground=0, inputs=[Edge(0)], outputs=[Edge(1)])
    g1, g2, s, y = 4.0, 1.0, 2.0, 0.5
    # w_0 = dv + s, w_1 = dv, g1 (dv + s) + g2 dv = 0  ->  dv = -s g1 / (g1 + g2)
    dv = -s * g1 / (g1 + g2)
    st_ = c.solve([g1, g2], [s])
    np.testing.assert_allclose(st_.outputs, [[dv]], rtol=1e-14)
    np.testing.assert_allclose(st_.currents, [[g1 * (dv + s), g2 * dv]], rtol=1e-14)
    _, grad = c.loss_and_grad([g1, g2], [s], [y])
    ddv = np.array([-s * g2, s * g1]) / (g1 + g2) ** 2
    np.testing.assert_allclose(grad, (dv - y) * ddv, rtol=1e-13)


def _lattice_problem(batch=7, seed=3):
    rng = np.random.default_rng(seed)
    net = topologies.lattice(5, 6)
    c = Circuit(net, ground=0, inputs=[29, Edge(7), 5], outputs=[14, Pair(20, 3), Edge(30)])
    g = 10 ** rng.uniform(-2, 2, net.n_edges)
    x = rng.normal(size=(batch, 3))
    y = rng.normal(size=(batch, 3))
    return c, g, x, y


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 17])
@pytest.mark.parametrize("wrt", ["conductance", "resistance"])
def test_per_sample_sum_and_mean(batch, wrt):
    """Batch means of per-sample gradients/losses equal the batch results; each row is
    the gradient of that sample alone. Covers both the per-sample and the contracted
    (batch > n_outputs) code paths."""
    c, g, x, y = _lattice_problem(batch)
    loss, grad = c.loss_and_grad(g, x, y, wrt=wrt)
    loss2, grad2, per = c.loss_and_grad(g, x, y, wrt=wrt, per_sample=True)
    assert per.shape == (batch, c.network.n_edges)
    assert loss == pytest.approx(loss2, rel=1e-14)
    np.testing.assert_allclose(grad2, grad, rtol=1e-10, atol=1e-14 * np.abs(grad).max())
    np.testing.assert_allclose(per.sum(axis=0), batch * grad, rtol=1e-10,
                               atol=1e-13 * batch * np.abs(grad).max())
    losses = []
    for s in range(batch):
        ls, gs = c.loss_and_grad(g, x[s], y[s], wrt=wrt)
        losses.append(ls)
        np.testing.assert_allclose(per[s], gs, rtol=1e-10, atol=1e-14 * np.abs(gs).max())
    assert loss == pytest.approx(np.mean(losses), rel=1e-13)


def test_full_result_and_adjoint_state():
    """GradientResult fields; L_FF lam_F = P_F^T delta with lam_C = 0; the adjoint run is
    the current-mode run with delta injected at the outputs; dC/dr = i * i_adj."""
    c, g, x, y = _lattice_problem(batch=5)
    res = c.loss_and_grad(g, x, y, full=True)
    assert isinstance(res, GradientResult)
    o = res.state.outputs
    np.testing.assert_allclose(res.delta, o - y, rtol=1e-14)
    np.testing.assert_allclose(res.losses, 0.5 * ((o - y) ** 2).sum(axis=1), rtol=1e-14)
    assert res.loss == pytest.approx(res.losses.mean(), rel=1e-14)
    lam = res.adjoint_potentials
    assert lam.shape == (5, c.network.n_nodes)
    assert np.all(lam[:, c.is_clamped] == 0)
    L = c.reduced_laplacian(g).toarray()
    PF = c.readout[:, c.free_nodes].toarray()
    resid = L @ lam[:, c.free_nodes].T - PF.T @ res.delta.T
    assert np.abs(resid).max() < 1e-12 * np.abs(PF.T @ res.delta.T).max()
    # physical reading: inject delta as currents at the outputs with every driver off
    fac = c.factorize(g)
    J = res.delta @ c.readout.toarray()
    np.testing.assert_allclose(fac.solve_currents(J), lam, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(adjoint_potentials(fac, res.delta), lam, rtol=1e-10, atol=1e-13)
    grad_g, _ = gradient_from_states(res.state, lam)
    np.testing.assert_allclose(grad_g, res.grad, rtol=1e-10, atol=1e-14)
    i_adj = g * np.asarray((c.network.incidence().T @ lam.T).T)
    _, grad_r = c.loss_and_grad(g, x, y, wrt="resistance")
    np.testing.assert_allclose(grad_r, (res.state.currents * i_adj).mean(axis=0), rtol=1e-10,
                               atol=1e-14 * np.abs(grad_r).max())


def test_factorization_is_reused():
    c, g, x, y = _lattice_problem()
    fac = c.factorize(g)
    l1, g1 = c.loss_and_grad(g, x, y)
    l2, g2 = c.loss_and_grad(g, x, y, factorization=fac)
    assert l1 == l2
    np.testing.assert_allclose(g1, g2, rtol=1e-13, atol=0)


def test_cross_entropy_temperature_instance():
    c, g, x, _ = _lattice_problem(batch=6)
    labels = np.array([0, 1, 2, 2, 1, 0])
    T = 0.7
    _, grad = c.loss_and_grad(g, x, labels, loss=CrossEntropy(temperature=T))
    # scaling every logit by 1/T equals reading outputs scaled by 1/T: check against FD
    h = 1e-6
    def f(gg):
        return c.loss_and_grad(gg, x, labels, loss=CrossEntropy(temperature=T))[0]
    e = int(np.argmax(np.abs(grad)))
    step = np.zeros_like(g)
    step[e] = h * g[e]
    fd = (f(g + step) - f(g - step)) / (2 * h * g[e])
    assert fd == pytest.approx(grad[e], rel=1e-6)


@pytest.mark.parametrize("bad", ["voltage", "log"])
def test_unknown_wrt_rejected(bad):
    c, g, x, y = _lattice_problem()
    with pytest.raises(ValueError, match="wrt must be 'conductance' or 'resistance'"):
        c.loss_and_grad(g, x, y, wrt=bad)


def test_unknown_loss_rejected():
    c, g, x, y = _lattice_problem()
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        c.loss_and_grad(g, x, y, loss="hinge")


# ---------------------------------------------------- non-finite gradients (issue 9)
def test_non_finite_gradients_are_refused():
    """wrt='resistance' with g = 1e200 overflowed -g^2 dC/dg; x = 1e200 overflowed the loss;
    an empty batch gave a NaN loss. Each is a kirchnet error naming the cause."""
    from kirchnet.errors import ParameterError, ShapeError

    net = topologies.lattice(4, 4)
    c = Circuit(net, ground=0, inputs=[15, 3], outputs=[10, 5])
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (4, 2)), rng.uniform(-1, 1, (4, 2))
    g = np.full(net.n_edges, 1e200)
    loss, grad = c.loss_and_grad(g, x, y)  # dC/dg itself is fine
    assert np.isfinite(loss) and np.isfinite(grad).all()
    for per_sample in (False, True):
        with pytest.raises(ParameterError, match=r"dC/dr = -g\^2 dC/dg overflows .* use wrt='conductance'"):
            c.loss_and_grad(g, x, y, wrt="resistance", per_sample=per_sample)
    with pytest.raises(ParameterError, match="not finite"):
        c.loss_and_grad(np.ones(net.n_edges), np.full((4, 2), 1e200), y)
    with pytest.raises(ShapeError, match="x has an empty batch"):
        c.loss_and_grad(np.ones(net.n_edges), np.zeros((0, 2)), np.zeros((0, 2)))
    # moderate values: resistance gradient = -g^2 * conductance gradient, finite
    g1 = rng.uniform(0.5, 2.0, net.n_edges)
    np.testing.assert_allclose(c.loss_and_grad(g1, x, y, wrt="resistance")[1],
                               -g1 ** 2 * c.loss_and_grad(g1, x, y)[1], rtol=1e-12)


def test_per_sample_gradients_beyond_the_memory_limit_are_refused(monkeypatch):
    from kirchnet import _memory
    from kirchnet.errors import SolverError

    net = topologies.lattice(10, 10)
    c = Circuit(net, ground=0, inputs=[99], outputs=[50])
    g, x, y = np.ones(net.n_edges), np.ones((500, 1)), np.zeros((500, 1))
    monkeypatch.setenv(_memory.ENV, "1M")
    with pytest.raises(SolverError, match=r"per-sample gradients of a batch of 500 on 180 edges .* per_sample=False"):
        c.loss_and_grad(g, x, y, per_sample=True)
    assert np.isfinite(c.loss_and_grad(g, x, y)[1]).all()  # the batch mean needs no such array
