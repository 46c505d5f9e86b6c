"""Circuit solves: Kirchhoff's laws, Tellegen's theorem, batching, and the reference model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kirchnet import Circuit, Edge, Network, Pair, State, topologies
from strategies import problems, readout_matrix, reference_solve, rel_err

KIRCHHOFF_TOL = 1e-10


def _solve(p, backend="auto"):
    c = p.circuit(backend)
    clamp = p.clamp if p.clamped else None
    return c, c.solve(p.g, p.x, currents=p.currents, clamp=clamp)


def _with_currents(p, draw_currents: bool):
    if draw_currents:
        rng = np.random.default_rng(p.extra["seed"] + 1)
        p.currents = rng.normal(size=(p.x.shape[0], p.network.n_nodes))
    return p


def _span(c, u):
    """``|u_a| + |u_b|`` per edge (b, m): the scale of rounding errors in ``dv = u_a - u_b``."""
    return np.abs(u[:, c.network.tails]) + np.abs(u[:, c.network.heads])


def _kcl_residual(c, state, J):
    """Relative KCL residual at the free nodes: ``max |(B i)_F - J_F|`` over the rounding
    scale of the terms it sums, ``max (|B| g (|u_a| + |u_b| + |s|) + |J|)_F``."""
    B = c.network.incidence()
    net = np.asarray((B @ state.currents.T).T)[:, c.free_nodes]
    src = 0 if state.sources is None else np.abs(state.sources)
    terms = state.conductances * (_span(c, state.potentials) + src)
    scale = np.asarray((abs(B) @ terms.T).T)[:, c.free_nodes]
    inj = 0
    if J is not None:
        inj = J[:, c.free_nodes]
        scale = scale + np.abs(inj)
    return float(np.max(np.abs(net - inj)) / max(float(np.max(scale)), 1e-300))


@settings(max_examples=60)
@given(problems(max_batch=4), st.booleans())
def test_kirchhoff_tellegen_and_reference(p, currents):
    p = _with_currents(p, currents)
    c, s = _solve(p)
    b, n, m = p.x.shape[0], p.network.n_nodes, p.network.n_edges
    assert isinstance(s, State)
    assert s.potentials.shape == (b, n) and s.currents.shape == (b, m)
    assert s.drops.shape == (b, m) and s.resistor_voltages.shape == (b, m)
    assert s.outputs.shape == (b, len(p.outputs)) and s.power.shape == (b,)

    # boundary values are imposed exactly
    assert np.all(s.potentials[:, p.ground] == 0)
    for j, v in enumerate(p.inputs):
        if isinstance(v, Edge):
            np.testing.assert_array_equal(s.sources[:, v.index], p.x[:, j])
            np.testing.assert_allclose(s.resistor_voltages[:, v.index],
                                       s.drops[:, v.index] + p.x[:, j], rtol=1e-15, atol=0)
        else:
            np.testing.assert_array_equal(s.potentials[:, v], p.x[:, j])
    if p.clamped:
        np.testing.assert_array_equal(s.potentials[:, p.clamped], p.clamp)

    # agreement with the independent long-double model
    u_ref = np.asarray(reference_solve(p), dtype=float)
    assert np.max(np.abs(s.potentials - u_ref)) <= 1e-9 * max(np.max(np.abs(u_ref)), 1e-300)
    np.testing.assert_allclose(s.outputs, u_ref @ readout_matrix(p).T, rtol=1e-9,
                               atol=1e-9 * np.max(np.abs(u_ref)))

    # Kirchhoff's current law at the free nodes (with injected currents)
    assert _kcl_residual(c, s, p.currents) < KIRCHHOFF_TOL

    # Kirchhoff's voltage law around every basis cycle: A^T (R i - s) = A^T dv = 0
    A = p.network.cycle_basis()
    src = np.zeros((b, m)) if s.sources is None else s.sources
    loop = np.asarray((A.T @ (s.currents / p.g - src).T).T)
    scale = np.asarray((abs(A).T @ (_span(c, s.potentials) + np.abs(src)).T).T)
    if A.shape[1]:
        assert np.max(np.abs(loop)) <= KIRCHHOFF_TOL * max(np.max(scale), 1e-300)

    # Tellegen: power delivered by the clamped nodes, series sources and injected
    # currents equals the power dissipated in the resistors
    B = p.network.incidence()
    out = np.asarray((B @ s.currents.T).T)  # net current leaving each node into the network
    delivered = np.einsum("bn,bn->b", s.potentials[:, c.is_clamped], out[:, c.is_clamped])
    delivered = delivered + np.einsum("bm,bm->b", src, s.currents)
    if p.currents is not None:
        delivered = delivered + np.einsum("bn,bn->b", s.potentials[:, c.free_nodes],
                                          p.currents[:, c.free_nodes])
    dissipated = (s.currents ** 2 / p.g).sum(axis=1)
    np.testing.assert_allclose(s.power, dissipated, rtol=1e-12)
    # rounding scale: every current term g (|dv| + |s|) times the largest voltage around
    vmax = np.abs(s.potentials).max(axis=1) + np.abs(src).max(axis=1, initial=0)
    scale = (p.g * (_span(c, s.potentials) + np.abs(src))).sum(axis=1) * vmax
    if p.currents is not None:
        scale = scale + np.abs(p.currents * s.potentials).sum(axis=1)
    assert np.all(np.abs(delivered - s.power) <= 1e-10 * np.maximum(scale, 1e-300))


@settings(max_examples=20)
@given(problems(two_components=True, max_batch=3))
def test_two_components_each_anchored(p):
    """A circuit whose second component is anchored by an input node solves both parts."""
    c, s = _solve(p)
    assert p.network.n_components == 2
    u_ref = np.asarray(reference_solve(p), dtype=float)
    assert np.max(np.abs(s.potentials - u_ref)) <= 1e-9 * max(np.max(np.abs(u_ref)), 1e-300)
    assert _kcl_residual(c, s, None) < KIRCHHOFF_TOL


def _mixed_circuit(seed=0):
    rng = np.random.default_rng(seed)
    net = topologies.delaunay(40, seed=seed)
    c = Circuit(net, ground=0, inputs=[5, Edge(3), 17], outputs=[9, Pair(11, 12), Edge(20)],
                clamped=[30, 31])
    g = 10 ** rng.uniform(-3, 3, net.n_edges)
    return c, g, rng


@pytest.mark.parametrize("batch", [1, 2, 5, 6, 40])  # below and above the number of drivers (5)
def test_batch_equals_single_samples(batch):
    c, g, rng = _mixed_circuit()
    x = rng.normal(size=(batch, 3))
    clamp = rng.normal(size=(batch, 2))
    J = rng.normal(size=(batch, c.network.n_nodes))
    fac = c.factorize(g)
    s = fac.solve(x, currents=J, clamp=clamp)
    for k in range(batch):
        sk = fac.solve(x[k], currents=J[k], clamp=clamp[k])
        assert sk.potentials.shape == (1, c.network.n_nodes)
        np.testing.assert_allclose(s.potentials[k], sk.potentials[0], rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(s.currents[k], sk.currents[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(s.power[k], sk.power[0], rtol=1e-10)
    # Circuit.solve is factorize + solve
    np.testing.assert_allclose(c.solve(g, x, currents=J, clamp=clamp).potentials, s.potentials,
                               rtol=1e-12, atol=1e-13)


def test_broadcast_clamp_and_currents():
    c, g, rng = _mixed_circuit(1)
    x = rng.normal(size=(4, 3))
    clamp = rng.normal(size=2)
    J = rng.normal(size=c.network.n_nodes)
    fac = c.factorize(g)
    s = fac.solve(x, currents=J, clamp=clamp)
    s2 = fac.solve(x, currents=np.tile(J, (4, 1)), clamp=np.tile(clamp, (4, 1)))
    np.testing.assert_allclose(s.potentials, s2.potentials, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(s.potentials[:, c.clamped_nodes], np.tile(clamp, (4, 1)))


def test_superposition_and_current_mode():
    """Linearity: u(x, J) = u(x, 0) + u_J, where u_J is the current-mode run (drivers off)."""
    c, g, rng = _mixed_circuit(2)
    x = rng.normal(size=(3, 3))
    J = rng.normal(size=(3, c.network.n_nodes))
    fac = c.factorize(g)
    uJ = fac.solve_currents(J)
    assert np.all(uJ[:, c.is_clamped] == 0)
    np.testing.assert_allclose(fac.solve(x, currents=J).potentials, fac.solve(x).potentials + uJ,
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fac.solve(2.5 * x).potentials, 2.5 * fac.solve(x).potentials,
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fac.solve(np.zeros((3, 3)), currents=J).potentials, uJ,
                               rtol=1e-11, atol=1e-13)


def test_transfer_and_adjoint_basis():
    c, g, rng = _mixed_circuit(3)
    fac = c.factorize(g)
    L = c.reduced_laplacian(g).toarray()
    H = fac.transfer()
    assert H.shape == (c.n_free, 5)  # 2 node inputs + 1 source + 2 clamps
    x = rng.normal(size=(1, 3))
    clamp = rng.normal(size=(1, 2))
    z = np.concatenate([x[:, [0, 2]], x[:, [1]], clamp], axis=1)  # driver order: nodes, sources, clamps
    np.testing.assert_allclose(H @ z[0], fac.solve(x, clamp=clamp).potentials[0, c.free_nodes],
                               rtol=1e-10, atol=1e-12)
    Z = fac.adjoint_basis()
    PF = c.readout[:, c.free_nodes].toarray()
    assert Z.shape == (c.n_free, 3)
    assert np.abs(L @ Z - PF.T).max() < 1e-10 * np.abs(PF).max()
    rhs = rng.normal(size=(c.n_free, 4))
    assert rel_err(L @ fac.solve_free(rhs), rhs) < 1e-12
    assert rel_err(L @ fac.solve_free(rhs[:, 0]), rhs[:, 0]) < 1e-12


def test_reduced_laplacian_matches_dense_assembly():
    c, g, _ = _mixed_circuit(4)
    B = c.network.incidence().toarray()
    L = (B * g) @ B.T
    F = c.free_nodes
    np.testing.assert_allclose(c.reduced_laplacian(g).toarray(), L[np.ix_(F, F)], rtol=1e-13, atol=1e-13)
    cols = [0, 7, 12]
    np.testing.assert_array_equal(c.edge_columns(cols).toarray(), B[np.ix_(F, cols)])


def test_roles_and_readout():
    net = Network(4, [[0, 1], [1, 2], [2, 3], [3, 0], [1, 3]])
    c = Circuit(net, ground=0, inputs=[Edge(4), 2], outputs=[1, Edge(1), Pair(3, 1)], clamped=[3])
    assert c.n_inputs == 2 and c.n_outputs == 3 and c.n_clamped == 1
    np.testing.assert_array_equal(c.input_nodes, [2])
    np.testing.assert_array_equal(c.source_edges, [4])
    np.testing.assert_array_equal(c.free_nodes, [1])
    np.testing.assert_array_equal(c.readout.toarray(), [[0, 1, 0, 0], [0, 1, -1, 0], [0, -1, 0, 1]])
    assert "n_free=1" in repr(c)


def test_series_source_drives_loop_current():
    """A source s in a ring of k equal resistors g drives i = g s / k around the ring."""
    k, gval, s = 6, 2.0, 3.0
    net = Network(k, [[i, (i + 1) % k] for i in range(k)])
    c = Circuit(net, ground=0, inputs=[Edge(2)], outputs=[Edge(2)])
    st_ = c.solve(np.full(k, gval), [s])
    np.testing.assert_allclose(st_.currents, np.full((1, k), gval * s / k), rtol=1e-13)
    np.testing.assert_allclose(st_.power, [gval * s ** 2 / k], rtol=1e-13)
    # the source edge's drop is -(k-1)/k s, every other edge drops s/k
    expected = np.full(k, s / k)
    expected[2] = -(k - 1) * s / k
    np.testing.assert_allclose(st_.drops[0], expected, rtol=1e-13)


def test_energy_derivative():
    c, g, rng = _mixed_circuit(5)
    s = c.solve(g, rng.normal(size=(2, 3)))
    np.testing.assert_allclose(s.energy_derivative(), 0.5 * s.resistor_voltages ** 2, rtol=0)
    np.testing.assert_allclose(s.energy_derivative().sum(axis=1) * 2, (s.resistor_voltages ** 2).sum(1))


# ------------------------------------------------------------ complex input, copies, one-shot iterables, caller's arrays, foreign factorizations
def test_complex_conductances_and_inputs_are_rejected():
    """Complex arrays were cast to float with only a ComplexWarning: the imaginary part was
    silently dropped and real-part numbers returned."""
    from kirchnet import topologies
    from kirchnet.errors import ParameterError

    c = Circuit(topologies.lattice(3, 3), ground=0, inputs=[2], outputs=[8])
    g = np.ones(c.network.n_edges)
    with pytest.raises(ParameterError, match="conductances must be real"):
        c.solve(g + 0.5j, [1.0])
    with pytest.raises(ParameterError, match="x must be real"):
        c.solve(g, np.array([1.0 + 1.0j]))
    with pytest.raises(ParameterError, match="currents must be real"):
        c.solve(g, [1.0], currents=np.full(9, 1j))
    # ordinary real input still works
    assert c.solve(g, [1.0]).outputs.shape == (1, 1)


def test_circuit_can_be_copied_and_pickled_after_a_cholmod_factorization():
    """The cached CHOLMOD symbolic analysis made a used circuit impossible to deepcopy or
    pickle, so ResistiveRegressor(circuit=c), GridSearchCV(n_jobs>1) and Dask failed."""
    import copy
    import pickle

    from kirchnet import solvers, topologies

    if not solvers.cholmod_available():
        pytest.skip("CHOLMOD (scikit-sparse) not installed")
    net = topologies.lattice(6, 6)
    c = Circuit(net, ground=0, inputs=[5, 35], outputs=[20], backend="cholmod")
    g = np.linspace(0.5, 2.0, net.n_edges)
    x = np.array([[1.0, -0.5]])
    ref = c.factorize(g).solve(x).potentials  # caches the symbolic analysis
    for other in (copy.deepcopy(c), pickle.loads(pickle.dumps(c))):
        np.testing.assert_allclose(other.factorize(g).solve(x).potentials, ref, rtol=1e-12)
    from kirchnet import ResistiveRegressor

    X = np.random.default_rng(0).uniform(-1, 1, (12, 2))
    est = ResistiveRegressor(circuit=c, epochs=2).fit(X, X[:, 0] * 0.1)
    assert est.predict(X).shape == (12,)


def test_outputs_given_as_a_generator_are_read():
    """``outputs`` was consumed twice (tuple() then the readout loop): a generator gave
    n_outputs = 2 with an all-zero readout, i.e. outputs silently stuck at 0."""
    from kirchnet import topologies

    net = topologies.lattice(3, 3)
    g = np.linspace(0.5, 2.0, net.n_edges)
    ref = Circuit(net, ground=0, inputs=[2], outputs=[8, 5]).solve(g, [1.0]).outputs
    c = Circuit(net, ground=0, inputs=(v for v in [2]), outputs=(v for v in [8, 5]))
    out = c.solve(g, [1.0]).outputs
    assert np.all(out != 0)
    np.testing.assert_allclose(out, ref, rtol=1e-14)


def test_solving_does_not_freeze_the_callers_conductance_array():
    """The factorization kept (and froze) the caller's float64 array itself, so the usual
    manual loop ``loss, grad = c.loss_and_grad(g, ...); g -= lr * grad`` raised
    'assignment destination is read-only' after the first solve."""
    from kirchnet import topologies

    net = topologies.lattice(3, 3)
    c = Circuit(net, ground=0, inputs=[8], outputs=[4])
    g = np.ones(net.n_edges)
    fac = c.factorize(g)
    losses = []
    for _ in range(3):
        loss, grad = c.loss_and_grad(g, [1.0], [0.2])
        g -= 0.5 * grad
        losses.append(loss)
    assert losses[-1] < losses[0]
    # the factorization holds its own frozen copy, unaffected by the caller's edits
    np.testing.assert_array_equal(fac.conductances, np.ones(net.n_edges))
    assert not fac.conductances.flags.writeable


def test_factorization_of_other_conductances_is_rejected():
    """A factorization passed with different conductances must not silently be used."""
    import kirchnet as kn
    from kirchnet.errors import ParameterError

    net = kn.topologies.lattice(4, 4)
    c = kn.Circuit(net, ground=0, inputs=[3, 12], outputs=[15])
    g = np.ones(net.n_edges)
    fac = c.factorize(g)
    x, y = np.ones((3, 2)), np.zeros((3, 1))
    g2 = g.copy()
    g2[0] = 2.0
    with pytest.raises(ParameterError, match="other conductances"):
        c.loss_and_grad(g2, x, y, factorization=fac)
    with pytest.raises(ParameterError, match="other conductances"):
        kn.EquilibriumPropagation(0.01).estimate(c, g2, x, y, factorization=fac)
    # the matching factorization is accepted and gives the same numbers as a fresh one
    assert np.allclose(c.loss_and_grad(g, x, y, factorization=fac)[1], c.loss_and_grad(g, x, y)[1])


# --------------------------------------------- bad input and non-finite results (issue 9)
from kirchnet.errors import (  # noqa: E402
    BoundaryConditionError,
    IllConditionedError,
    ParameterError,
    ShapeError,
    TopologyError,
)


def _small():
    net = topologies.lattice(4, 4)
    return net, Circuit(net, ground=0, inputs=[15, 3], outputs=[10, 5])


@pytest.mark.parametrize("role", ["inputs", "outputs", "clamped"])
@pytest.mark.parametrize("bad", [None, 5, "15", 2.5])
def test_roles_must_be_lists(role, bad):
    net = topologies.lattice(4, 4)
    kwargs = dict(ground=0, inputs=[15], outputs=[10], clamped=[])
    kwargs[role] = bad
    with pytest.raises(BoundaryConditionError, match=rf"{role} must be a list of node ids .* got {bad!r}; pass \[\]"):
        Circuit(net, **kwargs)


def test_isolated_ground_is_refused():
    net = Network(5, [[1, 2], [2, 3], [3, 4]])  # node 0 has no edge
    with pytest.raises(BoundaryConditionError, match="ground: node 0 has no edge"):
        Circuit(net, ground=0, inputs=[1], outputs=[3])
    with pytest.raises(BoundaryConditionError, match="component with node\\(s\\) 0 contains no ground"):
        Circuit(net, ground=4, inputs=[1], outputs=[3])  # an isolated non-ground node floats


def test_unknown_nodes_and_edges_name_the_role():
    net, _ = _small()
    with pytest.raises(TopologyError, match="inputs: unknown node id 99; valid ids are 0..15"):
        Circuit(net, ground=0, inputs=[99], outputs=[10])
    with pytest.raises(TopologyError, match="ground: unknown node id -1"):
        Circuit(net, ground=-1, inputs=[1], outputs=[10])
    with pytest.raises(TopologyError, match="outputs: unknown edge index 24; valid indices are 0..23"):
        Circuit(net, ground=0, inputs=[1], outputs=[Edge(24)])
    with pytest.raises(TopologyError, match="inputs: edge indices must be integers"):
        Circuit(net, ground=0, inputs=[Edge(1.5)], outputs=[10])


def test_non_numeric_conductances_and_inputs():
    net, c = _small()
    g = np.ones(net.n_edges)
    with pytest.raises(ParameterError, match="conductances must be 24 positive numbers .* not numeric"):
        c.solve(["a"] * net.n_edges, [1.0, 0.0])
    with pytest.raises(ParameterError, match="conductances must be 24 positive numbers"):
        c.factorize("abc")
    with pytest.raises(ShapeError, match=r"x must be a numeric array of shape \(2,\) or \(batch, 2\)"):
        c.solve(g, [[1.0, 2.0], [3.0]])  # ragged
    with pytest.raises(ShapeError, match="x must be a numeric array"):
        c.solve(g, [["a", "b"]])
    with pytest.raises(ShapeError, match=r"x has an empty batch \(shape \(0, 2\)\)"):
        c.solve(g, np.zeros((0, 2)))


def test_conductance_magnitudes_outside_float64_range_are_refused():
    """All g = 1e308 overflowed L_FF (non-finite potentials, outputs 0); g spanning
    1e-300..1e300 made PCG return currents of 6e299. Both are refused before solving."""
    net, c = _small()
    m = net.n_edges
    with pytest.raises(ParameterError, match="L_FF .* overflowed float64"):
        c.solve(np.full(m, 1e308), [1.0, 0.0])
    for g in (np.full(m, 1e300), np.full(m, 1e-300), np.geomspace(1e-300, 1e300, m)):
        for backend in ("dense", "splu", "pcg"):
            with pytest.raises(ParameterError, match=r"outside the range \[1e-250, 1e\+250\].*rescale all"):
                c.factorize(g, backend=backend).solve([1.0, 0.0])
    # the same circuit rescaled by a common factor is fine (potentials are invariant)
    g = np.geomspace(1e-3, 1e3, m)
    u1 = c.solve(g, [1.0, -0.5]).potentials
    np.testing.assert_allclose(c.solve(1e200 * g, [1.0, -0.5]).potentials, u1, rtol=1e-12, atol=1e-15)
    fac = c.factorize(g)
    g2 = g.copy()
    g2[3] = 1e300
    with pytest.raises(ParameterError, match="outside the range"):
        fac.update(g2)


def test_state_quantities_that_overflow_are_refused():
    net, c = _small()
    s = c.solve(np.ones(net.n_edges), np.full((2, 2), 1e200) * [1, -1])
    assert np.isfinite(s.potentials).all()
    with pytest.raises(ParameterError, match="dissipated power .* overflowed float64"):
        s.power
    with pytest.raises(ParameterError, match="right-hand side contains NaN or inf .* overflow"):
        c.solve(np.full(net.n_edges, 1e120), np.full((1, 2), 1e200) * [1, -1])  # g * x > 1e308


def test_maximum_principle_is_checked(monkeypatch):
    """A solve that puts a free potential outside the range of the clamped ones (SuperLU
    returned 2.0 V from sources of at most 1 V) is refused, on both solve paths."""
    net, c = _small()
    g = np.random.default_rng(0).uniform(0.5, 2.0, net.n_edges)
    fac = c.factorize(g, backend="splu")
    assert np.all(np.abs(fac.solve([[1.0, -0.5]]).potentials) <= 1.0)
    real = type(fac.factor).solve
    monkeypatch.setattr(type(fac.factor), "solve", lambda self, rhs: 2.0 * real(self, rhs))
    with pytest.raises(IllConditionedError, match=r"violates the maximum principle \(sample 0: free potentials"):
        c.factorize(g, backend="splu").solve([1.0, -0.5])
    with pytest.raises(IllConditionedError, match="per volt at the inputs outside \\[0, 1\\]"):
        c.factorize(g, backend="splu").solve(np.ones((5, 2)))  # transfer-matrix path
    # with series sources the principle does not apply and is not checked
    cs = Circuit(net, ground=0, inputs=[15, Edge(3)], outputs=[10])
    cs.factorize(g, backend="splu").solve([1.0, 1.0])


def test_circuit_too_large_for_memory_is_refused(monkeypatch):
    """A circuit whose construction needs more than the memory limit is refused up front
    (a 25e6-node lattice died with MemoryError after seconds)."""
    from kirchnet import _memory
    from kirchnet.errors import SolverError

    net = topologies.lattice(30, 30)
    monkeypatch.setenv(_memory.ENV, "100K")
    with pytest.raises(SolverError, match=r"a circuit on 900 nodes and 1,740 edges .* more than the "
                                          r"memory limit of 102\.4 kB"):
        Circuit(net, ground=0, inputs=[899], outputs=[450])
    monkeypatch.setenv(_memory.ENV, "1G")
    assert Circuit(net, ground=0, inputs=[899], outputs=[450]).n_free == 898


def test_layers_import_one_way_and_old_names_still_work():
    """assembly -> factorization -> gradient -> nonlinear -> circuit: no module below
    circuit imports it (or a module above itself) at run time; the old names re-export."""
    import ast
    import pathlib

    import kirchnet
    import kirchnet.circuit as circuit_mod
    from kirchnet import assembly, factorization, gradient, nonlinear

    order = ["assembly", "factorization", "gradient", "nonlinear", "circuit"]
    for i, mod in enumerate((assembly, factorization, gradient, nonlinear)):
        tree = ast.parse(pathlib.Path(mod.__file__).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []  # annotations only
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                imported.update(n.split(".")[0] for n in names)
        above = set(order[i + 1:])
        assert not imported & above, (mod.__name__, imported & above)
    assert circuit_mod.State is factorization.State is kirchnet.State
    assert circuit_mod.CircuitFactorization is factorization.CircuitFactorization
