"""Port reduction of resistor-diode circuits (kirchnet.ports, kirchnet._jit_nonlinear): the
resistors eliminated once, limited Newton on the diode voltages, Woodbury tangent solves.
Checked against the long-double reference of test_nonlinear.py, against the full
network's iteration, and the compiled law and limiting against kirchnet.elements."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kirchnet as kn
from kirchnet import Edge, ports
from kirchnet.elements import Diode, Rectifier
from test_nonlinear import (D1, D2, _bench_diode_circuit, nl_problems, ref_loss, ref_solve)

jit = pytest.importorskip("numba", reason="the port reduction is compiled with numba (the `jit` extra)")
from kirchnet import _jit_nonlinear  # noqa: E402

#: the port reduction's and the envelope's steps, not the lane iteration's (tests/test_lanes.py)
pytestmark = [pytest.mark.skipif(not _jit_nonlinear.enabled(), reason="KIRCHNET_JIT=0"),
              pytest.mark.usefixtures("no_lanes")]


def _solve_both(c, g, x, **kw):
    on = c.factorize(g, port_reduction=True, **kw)
    off = c.factorize(g, port_reduction=False, **kw)
    return on, on.solve(x), off.solve(x)


@settings(max_examples=200)
@given(nl_problems(laws=("R", "D1", "D2"), tree_diodes=0.0))
def test_port_equilibria_and_gradients_match_the_long_double_reference(p):
    """Resistor spanning tree, diodes on random extra edges, conductances over 4 decades:
    every such circuit is port-reduced; potentials to 1e-8 of the voltage scale, gradient
    (Woodbury adjoint) against central differences of the reference."""
    c = p.circuit()
    fac = c.factorize(p.g, port_reduction=True)  # wherever possible, not only where cheaper
    assert fac.ports is not None, ports.eligible(c)
    ref = ref_solve(p)[0]
    state = fac.solve(p.x)
    vscale = float(np.abs(ref).max()) + 1.0
    np.testing.assert_allclose(state.potentials, ref.astype(float), rtol=0, atol=1e-8 * vscale)
    loss, grad = c.loss_and_grad(p.g, p.x, p.y, factorization=fac)
    assert loss == pytest.approx(float(ref_loss(p, ref[None])[0]), rel=1e-7, abs=1e-14)
    rng = np.random.default_rng(len(p.kinds))
    edges = rng.choice(p.g.size, size=min(3, p.g.size), replace=False)
    h = 1e-5 * p.g[edges]
    G = np.tile(p.g, (2 * edges.size, 1)).astype(np.longdouble)
    G[np.arange(edges.size), edges] += h
    G[edges.size + np.arange(edges.size), edges] -= h
    L = ref_loss(p, ref_solve(p, G, u0=ref))
    fd = ((L[:edges.size] - L[edges.size:]) / np.longdouble(2 * h)).astype(float)
    floor = 1e-12 * np.sqrt(2 * loss) * vscale / p.g[edges]
    np.testing.assert_allclose(grad[edges], fd, rtol=1e-5, atol=1e-6 * np.abs(grad).max() + floor.max())


@settings(max_examples=300)
@given(st.floats(-5, 5), st.floats(-5, 5), st.sampled_from([Diode(), D1, D2, Diode(1e-9, 1.8, max_exponent=30.0)]))
def test_compiled_law_and_limiting_equal_the_diode(v, w, law):
    i, d = _jit_nonlinear._diode(v, 2.0, law.saturation_current, law.nvt, law.max_exponent)
    assert i == pytest.approx(2.0 * float(law.phi(v)), rel=1e-14, abs=1e-300)
    assert d == pytest.approx(2.0 * float(law.dphi(v)), rel=1e-14, abs=1e-300)
    lim = _jit_nonlinear._limit(v, w, law.nvt, law.critical_voltage, law.max_descent, law.min_descent)
    assert lim == pytest.approx(float(law.limit(v, w)), rel=1e-14, abs=1e-15)


def _eligible_circuit(seed=0, n=30, batch=8):
    """A random graph: resistor spanning tree, diodes on a third of the other edges."""
    rng = np.random.default_rng(seed)
    parents = (rng.random(n - 1) * np.arange(1, n)).astype(np.int64)
    edges = [(int(a), int(b)) for a, b in zip(parents, range(1, n))]
    extra = rng.choice(n, size=(2 * n, 2))
    extra = [(int(a), int(b)) for a, b in extra if a != b]
    net = kn.Network(n, np.asarray(edges + extra))
    diodes = np.arange(n - 1, net.n_edges)[::2]
    c = kn.Circuit(net, ground=0, inputs=[3, 7, Edge(int(diodes[0]))], outputs=[5, 9],
                   elements={Diode(): diodes})
    g = rng.uniform(0.5e-3, 2e-3, net.n_edges)
    g[diodes] = rng.uniform(0.5, 2.0, diodes.size)
    return c, g, rng.uniform(-2.0, 2.0, (batch, 3))


@pytest.mark.parametrize("backend", ["auto", "splu"])
def test_port_path_equals_the_full_network_and_warm_starts(backend):
    c, g, X = _eligible_circuit(batch=16)
    on, a, b = _solve_both(c, g, X, backend=backend)
    assert on.ports is not None
    vs = np.abs(b.potentials).max()
    np.testing.assert_allclose(a.potentials, b.potentials, rtol=0, atol=1e-9 * vs)
    warm = on.solve(X * 1.01, warm_start=a)
    cold = on.solve(X * 1.01)
    np.testing.assert_allclose(warm.potentials, cold.potentials, rtol=0, atol=1e-9 * vs)
    assert warm.iterations.mean() < cold.iterations.mean()
    # adjoint and compliance through Woodbury equal the full network's
    y = np.zeros((X.shape[0], 2))
    la, ga = c.loss_and_grad(g, X, y, factorization=on)
    lb, gb = c.loss_and_grad(g, X, y, factorization=c.factorize(g, port_reduction=False))
    assert la == pytest.approx(lb, rel=1e-10)
    np.testing.assert_allclose(ga, gb, rtol=1e-8, atol=1e-10 * np.abs(gb).max())
    np.testing.assert_allclose(on.compliance(a), c.factorize(g, port_reduction=False).compliance(a),
                               rtol=1e-9)


def test_woodbury_tangent_solve_equals_the_dense_solve():
    """Incremental conductances over 30 decades (deep reverse to stiff forward): the solve
    with the conducting diodes only equals the dense solve of the full tangent."""
    c, g, _ = _eligible_circuit(seed=3)
    red = c.factorize(g).ports
    rng = np.random.default_rng(1)
    b, nf = 4, c.n_free
    weights = np.tile(red.g_resistors, (b, 1))
    D = 10.0 ** rng.uniform(-20, 3, (b, red.n_ports))
    weights[:, red.edges] = D
    R = rng.normal(size=(b, nf, 2))
    X = red.tangent_solve(D, R)
    for s in range(b):
        H = c._pattern.laplacian(weights[s]).toarray()
        np.testing.assert_allclose(H @ X[s], R[s], rtol=0, atol=1e-9 * np.abs(R[s]).max())


def _stiff_loop(source):
    """Three diodes in a loop with a series source on one, each node grounded by 1 kOhm:
    at 5 V each diode sits at 1.67 V (1e13 A around the loop, which the resistors do not
    see); at 1.5 V a moderate loop."""
    net = kn.Network(4, [(1, 0), (2, 0), (3, 0), (1, 2), (2, 3), (3, 1)])
    c = kn.Circuit(net, ground=0, inputs=[Edge(5)], outputs=[1], elements={Diode(): [3, 4, 5]})
    g = np.array([1e-3, 1e-3, 1e-3, 1.0, 1.0, 1.0])
    return c, g, np.array([[source]])


@pytest.mark.parametrize("source", [1.5, 5.0])
def test_stiff_diode_loops_are_solved_like_the_full_network(source):
    """A loop of diodes and a source: at 5 V a current of 1e13 A circulates that the
    resistors do not see (the port equations ``w = w0 - Z i`` would cancel it away); the
    Woodbury steps work in the full network's increment form and reach its state."""
    c, g, x = _stiff_loop(source)
    on, a, b = _solve_both(c, g, x)
    assert on.ports is not None
    np.testing.assert_allclose(a.potentials, b.potentials, rtol=0, atol=1e-9 * source)
    w = a.potentials[0, 1] - a.potentials[0, 2]
    assert (w > 1.5) == (source == 5.0)


def test_eligibility_and_the_switches(monkeypatch):
    c, g, X = _eligible_circuit()
    assert ports.eligible(c) is None
    # a node reached only through a diode
    net = kn.Network(3, [(1, 0), (1, 2)])
    lone = kn.Circuit(net, ground=0, inputs=[1], elements={Diode(): [1]})
    assert "no driven node through resistors" in ports.eligible(lone)
    assert lone.factorize(np.ones(2)).ports is None
    rect = kn.Circuit(c.network, ground=0, inputs=[3, 7], elements={Rectifier(): [40]})
    assert "laws other than" in ports.eligible(rect)
    assert c.factorize(g, limiting=False).ports is None  # the damped iteration alone
    assert c.factorize(g, port_reduction=False).ports is None
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    assert "numba" in ports.eligible(c)
    assert c.factorize(g).ports is None
    state = c.factorize(g).solve(X)  # the full network's iteration, same equilibrium
    monkeypatch.delenv("KIRCHNET_JIT")
    np.testing.assert_allclose(c.factorize(g).solve(X).potentials, state.potentials, rtol=0,
                               atol=1e-9 * np.abs(state.potentials).max())


def test_sparse_factorizations_cheaper_than_ports_keep_the_full_network():
    """The cost rule: a 24 x 24 lattice with a third of its edges diodes (about 370 ports,
    a sparse tangent factorization of a few 10^4 flops) stays on the full network; the
    same on an 8 x 8 lattice (where the full tangent would be factorized dense) is
    port-reduced."""
    big, gb, _ = _bench_diode_circuit(24, Diode(), batch=1)
    small, gs, _ = _bench_diode_circuit(8, Diode(), batch=1)
    assert ports.eligible(big) is None and ports.eligible(small) is None
    assert big.factorize(gb).ports is None
    assert small.factorize(gs).ports is not None
    red = ports.PortReduction(big, gb)
    assert big.factorize(gb, port_reduction=True).ports is not None  # forced
    assert math.isfinite(float(np.abs(red.Z).max()))


@settings(max_examples=40)
@given(nl_problems(max_nodes=40, laws=("R", "D1", "D2"), tree_diodes=0.0))
def test_larger_port_reduced_graphs_match_the_reference(p):
    c = p.circuit()
    fac = c.factorize(p.g, port_reduction=True)
    assert fac.ports is not None
    ref = ref_solve(p)[0]
    state = fac.solve(p.x)
    np.testing.assert_allclose(state.potentials, ref.astype(float), rtol=0,
                               atol=1e-8 * (float(np.abs(ref).max()) + 1.0))


@pytest.mark.parametrize("make", [lambda: _bench_diode_circuit(7, Diode(), seed=2, batch=12),
                                  lambda: _bench_diode_circuit(5, D2, seed=5, batch=12),
                                  lambda: _eligible_circuit(seed=4, batch=12)], ids=["lattice", "lattice-D2", "random"])
def test_compiled_limited_newton_takes_the_python_iterations_steps(monkeypatch, count_calls, make):
    """kirchnet._jit_nonlinear.nodal_newton is _limited_newton compiled: on the full network
    (no port reduction) the same iteration counts and the same equilibria, cold and warm."""
    import kirchnet.nonlinear as nl

    c, g, X = make()
    calls = count_calls(nl, "_compiled_newton")
    fac = c.factorize(g, port_reduction=False)
    assert fac.dense
    assert_numpy_steps(monkeypatch, calls, fac, X)


def assert_numpy_steps(monkeypatch, calls, fac, X):
    """A cold and a warm solve of ``X`` take the compiled path whose calls ``calls`` counts,
    and the numpy iteration (``KIRCHNET_JIT=0``) takes the same number of iterations to the
    same equilibria (to 1e-10 of the voltage scale)."""
    cold = fac.solve(X)
    warm = fac.solve(X * 1.01, warm_start=cold)
    assert calls["n"] == 2
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    py_cold = fac.solve(X)
    py_warm = fac.solve(X * 1.01, warm_start=py_cold)
    assert calls["n"] == 2
    np.testing.assert_array_equal(cold.iterations, py_cold.iterations)
    np.testing.assert_array_equal(warm.iterations, py_warm.iterations)
    vs = np.abs(cold.potentials).max()
    np.testing.assert_allclose(cold.potentials, py_cold.potentials, rtol=0, atol=1e-10 * vs)
    np.testing.assert_allclose(warm.potentials, py_warm.potentials, rtol=0, atol=1e-10 * vs)


@pytest.mark.parametrize("port_reduction", [True, False], ids=["woodbury", "envelope"])
@pytest.mark.parametrize("make", [lambda: _eligible_circuit(seed=4, n=50, batch=24),
                                  lambda: _eligible_circuit(seed=7, n=30, batch=24)], ids=["random-50", "random-30"])
def test_warm_start_from_another_sample_far_forward(monkeypatch, make, port_reduction):
    """Each sample warm-started from the equilibrium of another one (new inputs: the series
    source's diode and others start volts forward, carrying currents e^100 above the
    resistors'): the compiled steps (Woodbury on the port reduction, envelope) take the
    numpy iteration's steps and reach the cold start's equilibrium. Before the Woodbury
    step let the active diodes' currents enter through the capacitance matrix, ``L_R^-1``
    of those currents cancelled to nothing and every such warm start raised."""
    c, g, X = make()
    fac = c.factorize(g, port_reduction=port_reduction)
    assert fac.plan[0] == ("woodbury" if port_reduction else "envelope")
    cold = fac.solve(X)
    start = np.roll(cold.potentials, 1, axis=0)
    u0 = start.copy()
    u0[:, c.input_nodes] = cold.potentials[:, c.input_nodes]  # the solver's first iterate
    w = u0[:, c.network.tails] - u0[:, c.network.heads] + c.edge_sources(c.driver_values(X, None)[1])
    assert w.max() > 2.0  # some diode starts far forward
    warm = fac.solve(X, warm_start=start)
    vs = np.abs(cold.potentials).max()
    np.testing.assert_allclose(warm.potentials, cold.potentials, rtol=0, atol=1e-9 * vs)
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    py_warm = fac.solve(X, warm_start=start)
    # the same steps; the last one's test at the rounding floor may differ by an iteration
    # (the compiled sums are reassociated)
    assert np.abs(warm.iterations - py_warm.iterations).max() <= 1, (warm.iterations, py_warm.iterations)


def test_envelope_step_solves_the_tangent_and_shifts_a_singular_one():
    """The envelope Cholesky of the compiled iteration (reverse Cuthill-McKee order) solves
    the tangent Laplacian like a dense solve; a node whose every weight is 0 gets the
    shift 1e-12 max diag (a singular tangent, as the numpy path)."""
    import kirchnet.nonlinear as nl

    c, g, _ = _bench_diode_circuit(9, Diode(), batch=1)
    k = nl._assembly(c).kernel
    env = k.envelope
    rng = np.random.default_rng(0)
    nf, m = c.n_free, c.network.n_edges
    for singular in (False, True):
        D = 10.0 ** rng.uniform(-3, 1, m)
        if singular:
            v = env.perm[5]  # a free node cut off: every edge at it weightless
            D[(k[0] == v) | (k[1] == v)] = 0.0
        ic = rng.normal(size=m)
        J = rng.normal(size=nf)
        A, Lf, du = np.empty(env.rowptr[-1]), np.empty(env.rowptr[-1]), np.empty(nf)
        assert _jit_nonlinear._envelope_step(A, Lf, env.first, env.rowptr, du, J[env.perm], ic, D, env.fa, env.fb)
        H = c._pattern.laplacian(D).toarray()
        rhs = J - np.asarray(c._B_free @ ic)
        if singular:
            H += (1e-12 * H.diagonal().max() + 1e-300) * np.eye(nf)
        x = np.empty(nf)
        x[env.perm] = du
        np.testing.assert_allclose(H @ x, rhs, rtol=0, atol=1e-9 * np.abs(rhs).max())


def test_mid_size_lattices_take_the_compiled_envelope_steps(monkeypatch):
    """A 24 x 24 lattice (sparse backend): the envelope steps are predicted cheaper than
    sparse factorizations with Python around them; same equilibria as the numpy iteration."""
    c, g, X = _bench_diode_circuit(24, Diode(), batch=6)
    fac = c.factorize(g)
    assert not fac.dense and fac.plan[0] == "envelope"
    state = fac.solve(X)
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    ref = c.factorize(g).solve(X)
    np.testing.assert_allclose(state.potentials, ref.potentials, rtol=0,
                               atol=1e-9 * np.abs(ref.potentials).max())


@pytest.mark.parametrize("k", [7, 24], ids=["dense", "sparse-chord"])
def test_compiled_error_estimate_is_handed_to_the_final_check(monkeypatch, k):
    """The compiled iteration hands Newton's error estimate |H^-1 r| at each converged
    state to the final check; at a converged state r is rounding noise, so both estimates
    are noise of the same size (each summed in its own order)."""
    import kirchnet.nonlinear as nl

    c, g, X = _bench_diode_circuit(k, Diode(), seed=3, batch=4)
    seen = []
    real = nl._newton_estimate

    def spy(fac, u, s, r, weights, factors=None, step=None):
        rounding = real(fac, u, s, r, weights, step=np.zeros_like(r))[0]  # the edges' term alone
        seen.append((step, real(fac, u, s, r, weights)[0] - rounding, np.abs(u).max()))
        return real(fac, u, s, r, weights, factors, step)

    monkeypatch.setattr(nl, "_newton_estimate", spy)
    fac = c.factorize(g, port_reduction=False)
    assert fac.plan[0] == "envelope"
    fac.solve(X)
    step, exact, vs = seen[0]
    assert step is not None and np.all(np.isfinite(step))
    assert step.max() <= 10 * exact.max() + 1e-14 * vs and exact.max() <= 10 * step.max() + 1e-14 * vs


def test_envelope_estimate_solves_with_the_tangent_or_the_reused_factorization():
    import kirchnet.nonlinear as nl

    c, g, _ = _bench_diode_circuit(9, Diode(), batch=1)
    k = nl._assembly(c).kernel
    env = k.envelope
    rng = np.random.default_rng(2)
    nf, m = c.n_free, c.network.n_edges
    D = 10.0 ** rng.uniform(-3, 1, m)
    r = rng.normal(size=nf)
    H = c._pattern.laplacian(D).toarray()
    A, Lf, out, zero = np.empty(env.rowptr[-1]), np.empty(env.rowptr[-1]), np.empty(nf), np.zeros(m)
    _jit_nonlinear._envelope_estimate(A, Lf, env.first, env.rowptr, r[env.perm], zero, D, D, False, 0.1,
                                      env.fa, env.fb, out)
    x = np.empty(nf)
    x[env.perm] = out
    np.testing.assert_allclose(x, np.abs(np.linalg.solve(H, r)), rtol=1e-9)
    # a factorization from weights 5 % off is reused, the step inflated by 1 / (1 - 0.1)
    Dold = D * 1.05
    _jit_nonlinear._envelope_step(A, Lf, env.first, env.rowptr, out, np.zeros(nf), zero, Dold, env.fa, env.fb)
    _jit_nonlinear._envelope_estimate(A, Lf, env.first, env.rowptr, r[env.perm], zero, D, Dold, True, 0.1,
                                      env.fa, env.fb, out)
    x[env.perm] = out
    Hold = c._pattern.laplacian(Dold).toarray()
    np.testing.assert_allclose(x, np.abs(np.linalg.solve(Hold, r)) / 0.9, rtol=1e-9)


def test_port_reduced_factorizations_pickle():
    """The plan (a CHOLMOD factorization of L_R where the backend is CHOLMOD) is dropped
    from the pickle and rebuilt on use."""
    import pickle

    c, g, X = _eligible_circuit(n=300, batch=3)
    fac = c.factorize(g, backend="splu", port_reduction=True)
    state = fac.solve(X)
    assert fac.ports is not None
    again = pickle.loads(pickle.dumps(fac))
    np.testing.assert_array_equal(again.solve(X).potentials, state.potentials)
    assert again.ports is not None


@pytest.mark.parametrize("backend", ["splu", "pcg"])
def test_plans_on_the_backends_of_a_machine_without_cholmod(monkeypatch, backend):
    """Without CHOLMOD the sparse backend is SuperLU (or PCG): the cost of its steps is read
    off SuperLU's factor, and the 24 x 24 lattice still takes envelope steps; PCG has no
    factor to count, so the compiled steps are always taken (the cheaper of the two
    compiled ones). Both reach the numpy iteration's equilibrium."""
    import kirchnet.nonlinear as nl

    c, g, X = _bench_diode_circuit(24, Diode(), batch=3)
    cost = nl._sparse_step_flops(c, backend)
    assert cost > 0 and (np.isfinite(cost) if backend == "splu" else cost == np.inf)
    fac = c.factorize(g, backend=backend)
    assert fac.plan[0] == ("envelope" if backend == "splu" else "woodbury")
    state = fac.solve(X)
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    ref = c.factorize(g, backend="splu").solve(X)
    np.testing.assert_allclose(state.potentials, ref.potentials, rtol=0,
                               atol=1e-9 * np.abs(ref.potentials).max())
