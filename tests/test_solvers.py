"""Solver backends: agreement with dense Cholesky, gradients through every backend,
low-rank updates against refactorization, the automatic choice, and failures."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from kirchnet import Circuit, ConvergenceError, Edge, Network, Pair, SolverError, solvers, topologies
from kirchnet.errors import BoundaryConditionError
from kirchnet.solvers import cholmod as cholmod_mod
from kirchnet.solvers import symbolic as symbolic_mod
from conftest import backend_params, needs_cholmod, needs_pyamg
from strategies import rel_err

#: agreement with the dense reference; PCG stops at a relative residual of 1e-10
TOL = {"dense": 1e-12, "cholmod": 1e-11, "splu": 1e-11, "pcg": 1e-7, "pcg-amg": 1e-7}


def _circuits():
    """Three shapes: a grid, a random graph with parallel edges, and a Delaunay mesh."""
    rng = np.random.default_rng(7)
    grid = topologies.lattice(14, 15)
    rnd = topologies.random_connected(300, mean_degree=5, seed=1)
    rnd = Network(rnd.n_nodes, np.concatenate([rnd.edges, rnd.edges[:20, ::-1]]))  # parallel edges
    mesh = topologies.delaunay(250, seed=2)
    out = []
    for net, inputs, outputs, clamped in (
        (grid, [209, Edge(5)], [100, Pair(50, 60), Edge(77)], [14]),
        (rnd, [10, 20, Edge(3)], [30, 40], [50]),
        (mesh, [Edge(0), 1], [2, Edge(9)], []),
    ):
        c = Circuit(net, ground=0, inputs=inputs, outputs=outputs, clamped=clamped)
        g = rng.uniform(0.2, 5.0, net.n_edges)
        out.append((c, g))
    return out


CIRCUITS = _circuits()


@pytest.mark.parametrize("which", range(len(CIRCUITS)), ids=["grid", "random", "delaunay"])
def test_backend_agrees_with_dense(backend, which):
    c, g = CIRCUITS[which]
    rng = np.random.default_rng(which)
    b = 9
    x = rng.normal(size=(b, c.n_inputs))
    clamp = rng.normal(size=(b, c.n_clamped))
    J = rng.normal(size=(b, c.network.n_nodes))
    y = rng.normal(size=(b, c.n_outputs))
    ref = c.factorize(g, backend="dense")
    fac = c.factorize(g, backend=backend)
    assert fac.backend == backend
    tol = TOL[backend]
    s_ref, s = ref.solve(x, currents=J, clamp=clamp), fac.solve(x, currents=J, clamp=clamp)
    assert rel_err(s.potentials, s_ref.potentials) < tol
    assert rel_err(s.currents, s_ref.currents) < 10 * tol
    assert rel_err(fac.solve_currents(J), ref.solve_currents(J)) < tol
    assert rel_err(fac.adjoint_basis(), ref.adjoint_basis()) < tol
    # gradients through every backend, both parametrizations and both batch paths
    for wrt in ("conductance", "resistance"):
        for bb in (2, b):  # bb <= n_outputs: per-sample adjoint; bb > n_outputs: contracted
            l_ref, g_ref = c.loss_and_grad(g, x[:bb], y[:bb], wrt=wrt, factorization=ref)
            l, gr = c.loss_and_grad(g, x[:bb], y[:bb], wrt=wrt, factorization=fac)
            assert l == pytest.approx(l_ref, rel=10 * tol)
            assert rel_err(gr, g_ref) < 10 * tol, (wrt, bb)
    # the Circuit's own backend setting is honoured
    c2 = Circuit(c.network, ground=c.ground, inputs=list(c.input_nodes), outputs=[int(c.free_nodes[0])],
                 backend=backend)
    assert c2.factorize(g).backend == backend


def test_raw_factorization_interface(backend):
    c, g = CIRCUITS[0]
    L = c.reduced_laplacian(g)
    fac = solvers.factorize(L, backend)
    rng = np.random.default_rng(0)
    R = rng.normal(size=(L.shape[0], 3))
    X = fac.solve(R)
    assert X.shape == R.shape
    assert rel_err(L @ X, R) < TOL[backend]
    x1 = fac.solve(R[:, 0])
    assert x1.shape == (L.shape[0],)
    assert rel_err(x1, X[:, 0]) < TOL[backend]
    assert fac.solve(np.zeros((L.shape[0], 0))).shape == (L.shape[0], 0)
    with pytest.raises(ValueError, match="right-hand side has 3 rows"):
        fac.solve(np.ones(3))


def _changed(g, edges, factors):
    g2 = g.copy()
    g2[edges] *= factors
    return g2


@pytest.mark.parametrize("which", [0, 1], ids=["grid", "random"])
def test_update_equals_refactorization(backend, which):
    """Repeated low-rank updates (up- and downdates) match a fresh factorization."""
    c, g = CIRCUITS[which]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, c.n_inputs))
    y = rng.normal(size=(5, c.n_outputs))
    fac = c.factorize(g, backend=backend)
    gg = g
    for step in range(3):
        edges = rng.choice(c.network.n_edges, size=4, replace=False)
        gg = _changed(gg, edges, rng.uniform(0.3, 3.0, size=4))  # both increases and decreases
        fac = fac.update(gg, max_rank=20)
        fresh = c.factorize(gg, backend="dense")
        assert np.array_equal(fac.conductances, gg)
        assert fac.base_backend == backend
        tol = TOL[backend]
        assert rel_err(fac.solve(x).potentials, fresh.solve(x).potentials) < 10 * tol
        assert rel_err(fac.adjoint_basis(), fresh.adjoint_basis()) < 10 * tol
        assert rel_err(c.loss_and_grad(gg, x, y, factorization=fac)[1],
                       c.loss_and_grad(gg, x, y, factorization=fresh)[1]) < 100 * tol
        # the updated factorization solves the updated matrix
        L = c.reduced_laplacian(gg)
        R = rng.normal(size=(c.n_free, 2))
        assert rel_err(L @ fac.solve_free(R), R) < 10 * tol
    if backend == "splu":  # SuperLU has no native update: Woodbury corrections stack up
        assert fac.backend.startswith("splu+woodbury") and fac.factor.update_rank == 12


def test_update_rank_limit_triggers_refactorization(backend):
    c, g = CIRCUITS[0]
    fac = c.factorize(g, backend=backend)
    g2 = _changed(g, np.arange(30), 2.0)
    up = fac.update(g2, max_rank=10)
    assert up.backend == backend and up.factor.update_rank == 0  # refactored from scratch
    x = np.ones((2, c.n_inputs))
    assert rel_err(up.solve(x).potentials, c.factorize(g2, backend="dense").solve(x).potentials) < TOL[backend]
    assert fac.update(g) is fac  # nothing changed


def test_update_touching_only_clamped_edges(backend):
    """Edges between clamped nodes do not enter L_FF: the factor is reused as is, but
    their currents and gradients use the new conductances."""
    net = topologies.lattice(6, 6)
    # clamp both ends of edge 0 (0 -> 1): ground 0 and input node 1
    c = Circuit(net, ground=0, inputs=[1, 35], outputs=[14, 21])
    rng = np.random.default_rng(5)
    g = rng.uniform(0.5, 2, net.n_edges)
    fac = c.factorize(g, backend=backend)
    g2 = g.copy()
    g2[0] *= 3.0
    up = fac.update(g2)
    assert up.factor is fac.factor
    x = rng.normal(size=(3, 2))
    y = rng.normal(size=(3, 2))
    fresh = c.factorize(g2, backend="dense")
    s, s_ref = up.solve(x), fresh.solve(x)
    assert rel_err(s.currents, s_ref.currents) < TOL[backend]
    np.testing.assert_allclose(s.currents[:, 0], g2[0] * (0.0 - x[:, 0]), rtol=1e-12)  # u_0 - u_1
    assert rel_err(c.loss_and_grad(g2, x, y, factorization=up)[1],
                   c.loss_and_grad(g2, x, y, factorization=fresh)[1]) < 10 * TOL[backend]
    # mixed: one clamped-clamped edge and one free edge
    g3 = g2.copy()
    g3[[0, 40]] *= 0.5
    up3 = up.update(g3)
    assert rel_err(up3.solve(x).potentials, c.factorize(g3, backend="dense").solve(x).potentials) < 10 * TOL[backend]


@needs_cholmod
def test_cholmod_symbolic_reuse_and_native_update():
    c, g = CIRCUITS[0]
    fac = c.factorize(g, backend="cholmod")
    assert c._symbolic is c._symbolic  # one analysis per circuit
    g2 = _changed(g, [3, 4, 5], [0.5, 2.0, 0.25])
    up = fac.update(g2)
    assert up.backend == "cholmod"  # native up/downdate, not a Woodbury wrapper
    R = np.random.default_rng(1).normal(size=(c.n_free, 2))
    assert rel_err(c.reduced_laplacian(g2) @ up.solve_free(R), R) < 1e-11


@needs_cholmod
@pytest.mark.skipif(not symbolic_mod.AVAILABLE, reason="the mode choice needs numba's column counts")
def test_cholmod_native_update_of_a_supernodal_factor():
    """A random graph's factor is supernodal (the mode choice); CHOLMOD's up/downdate
    converts it and the updated factorization solves like a fresh one."""
    net = topologies.random_connected(1500, mean_degree=6, seed=2)
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[3])
    g = np.random.default_rng(0).uniform(0.5, 2.0, net.n_edges)
    fac = c.factorize(g, backend="cholmod")
    assert c._symbolic.mode == "supernodal"
    g2 = _changed(g, [3, 40, 500], [0.5, 2.0, 0.25])
    up = fac.update(g2)
    assert up.backend == "cholmod"
    R = np.random.default_rng(1).normal(size=(c.n_free, 2))
    assert rel_err(c.reduced_laplacian(g2) @ up.solve_free(R), R) < 1e-11


def test_pcg_reports_non_convergence():
    c, g = CIRCUITS[1]
    fac = c.factorize(g, backend="pcg", maxiter=2)
    with pytest.raises(ConvergenceError, match=r"did not converge in 2 iterations .*relative residual"):
        fac.solve(np.ones((1, c.n_inputs)))
    assert issubclass(ConvergenceError, SolverError)
    for bad in (dict(maxiter=0), dict(rtol=0.0), dict(rtol=-1e-3)):
        with pytest.raises(SolverError, match="PCG needs maxiter >= 1 and rtol > 0"):
            c.factorize(g, backend="pcg", **bad)


@needs_pyamg
def test_pcg_amg_reports_non_convergence():
    c, g = CIRCUITS[1]
    fac_amg = c.factorize(g, backend="pcg-amg", maxiter=1, rtol=1e-14)
    with pytest.raises(ConvergenceError, match="did not converge in 1 iterations"):
        fac_amg.solve_free(np.ones(c.n_free))


def test_pcg_amg_without_pyamg_says_how_to_get_it(monkeypatch):
    """Without pyamg, backend 'pcg-amg' fails with a SolverError naming the package."""
    import builtins

    real_import = builtins.__import__

    def no_pyamg(name, *args, **kwargs):
        if name == "pyamg" or name.startswith("pyamg."):
            raise ImportError("No module named 'pyamg'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyamg)
    assert not solvers.pyamg_available()
    c, g = CIRCUITS[0]
    with pytest.raises(SolverError, match=r"needs pyamg: pip install pyamg"):
        c.factorize(g, backend="pcg-amg")
    assert c.factorize(g, backend="pcg").backend == "pcg"  # Jacobi needs nothing


def test_pcg_tolerance_is_met():
    c, g = CIRCUITS[1]
    L = c.reduced_laplacian(g)
    R = np.random.default_rng(2).normal(size=(c.n_free, 4))
    R[:, 1] = 0  # a zero column stays zero
    for rtol in (1e-4, 1e-8, 1e-12):
        fac = solvers.factorize(L, "pcg", rtol=rtol)
        X = fac.solve(R)
        res = np.linalg.norm(R - L @ X, axis=0)
        assert np.all(res <= rtol * np.linalg.norm(R, axis=0) + 1e-300)
        assert np.all(X[:, 1] == 0)
        assert 0 < fac.iterations < fac.maxiter


def test_auto_backend_choice():
    # small: dense
    c, g = CIRCUITS[0]
    assert solvers.choose_backend(c.reduced_laplacian(g)) == "dense"
    assert c.factorize(g).backend == "dense"
    # 200 x 200 lattice: a sparse direct method
    lat = topologies.lattice(200, 200)
    cl = Circuit(lat, ground=0, inputs=[39999], outputs=[20100])
    direct = "cholmod" if solvers.cholmod_available() else "splu"
    assert solvers.choose_backend(cl.reduced_laplacian(np.ones(lat.n_edges))) == direct
    # random 4-regular graph, 20000 nodes: conjugate gradients
    reg = topologies.random_regular(20000, 4, seed=0)
    cr = Circuit(reg, ground=0, inputs=[1], outputs=[2])
    assert solvers.choose_backend(cr.reduced_laplacian(np.ones(reg.n_edges))) == "pcg"
    fill = solvers.predicted_fill(cr.reduced_laplacian(np.ones(reg.n_edges)))
    assert fill["n"] == 19998 and fill["envelope"] >= fill["n"]


def test_scipy_only_fallback(monkeypatch):
    """Without scikit-sparse the package still works: auto picks splu, cholmod says why."""
    monkeypatch.setattr(cholmod_mod, "AVAILABLE", False)
    assert not solvers.cholmod_available()
    lat = topologies.lattice(40, 40)
    c = Circuit(lat, ground=0, inputs=[1599], outputs=[800])
    L = c.reduced_laplacian(np.ones(lat.n_edges))
    assert solvers.choose_backend(L) == "splu"
    with pytest.raises(SolverError, match="scikit-sparse"):
        solvers.factorize(L, "cholmod")


def test_unknown_backend_and_not_positive_definite():
    c, g = CIRCUITS[0]
    L = c.reduced_laplacian(g)
    with pytest.raises(SolverError, match="unknown solver backend 'magic'"):
        solvers.factorize(L, "magic")
    with pytest.raises(BoundaryConditionError, match="unknown backend 'magic'"):
        Circuit(c.network, ground=0, inputs=[1], outputs=[2], backend="magic")
    indefinite = sp.csc_array(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(SolverError, match="not numerically positive definite .*potrf info=2"):
        solvers.factorize(indefinite, "dense")
    with pytest.raises(SolverError, match="singular"):
        solvers.factorize(sp.csc_array(np.array([[1.0, 1.0], [1.0, 1.0]])), "splu")
    with pytest.raises(SolverError, match="unknown preconditioner"):
        solvers.PCG(L, "ilu")


def test_woodbury_wrapper():
    c, g = CIRCUITS[2]
    L = c.reduced_laplacian(g)
    base = solvers.factorize(L, "splu")
    C = c.edge_columns([1, 2, 3])
    d = np.array([0.5, -0.1, 2.0])
    wb = solvers.WoodburyFactorization(base, C, d)
    L2 = L + C @ sp.diags_array(d) @ C.T
    R = np.random.default_rng(0).normal(size=(c.n_free, 3))
    assert rel_err(L2 @ wb.solve(R), R) < 1e-11
    assert wb.update_rank == 3 and wb.updated(C[:, :1], [1.0]).update_rank == 4


@pytest.mark.parametrize("backend", backend_params(["pcg", "pcg-amg"]))
def test_solver_options_survive_updates(backend):
    """rtol/maxiter given to factorize are kept by update(), on every update path."""
    c, g = CIRCUITS[0]
    fac = c.factorize(g, backend=backend, rtol=1e-6, maxiter=321)
    small = fac.update(_changed(g, [1], 2.0))  # low-rank path
    big = fac.update(_changed(g, np.arange(40), 2.0), max_rank=8)  # refactorization path
    for f in (fac, small, big):
        assert f.factor.rtol == 1e-6 and f.factor.maxiter == 321


def test_every_node_clamped(backend):
    """No free node (L_FF is 0 x 0): solves, gradients and updates still work."""
    net = Network(2, [[0, 1], [1, 0]])
    c = Circuit(net, ground=0, inputs=[1], outputs=[1, Edge(0)], backend=backend)
    assert c.n_free == 0
    g = np.array([1.0, 2.0])
    fac = c.factorize(g)
    s = fac.solve([[2.0], [3.0]], currents=np.ones(2))
    # edge 0 runs 0 -> 1 (drop -x), edge 1 runs 1 -> 0 (drop +x)
    np.testing.assert_array_equal(s.currents, [[-2.0, 4.0], [-3.0, 6.0]])
    loss, grad = c.loss_and_grad(g, [[2.0], [3.0]], [[0.0, 0.0], [1.0, 1.0]])
    assert loss == 7.0  # mean of 1/2 (4 + 4) and 1/2 (4 + 16)
    np.testing.assert_array_equal(grad, [0.0, 0.0])
    np.testing.assert_array_equal(fac.update([2.0, 2.0]).solve([1.0]).currents, [[-2.0, 2.0]])


@pytest.mark.parametrize("which", range(len(CIRCUITS)), ids=["grid", "random", "delaunay"])
def test_kirchhoff_current_law_every_backend(backend, which):
    """KCL residual at the free nodes < 1e-10 relative to the currents meeting there
    (iterative backends with rtol=1e-12, since rtol bounds the 2-norm of the residual)."""
    c, g = CIRCUITS[which]
    rng = np.random.default_rng(11)
    opts = {"rtol": 1e-12} if backend.startswith("pcg") else {}
    fac = c.factorize(g, backend=backend, **opts)
    x = rng.normal(size=(4, c.n_inputs))
    J = rng.normal(size=(4, c.network.n_nodes))
    s = fac.solve(x, currents=J, clamp=rng.normal(size=(4, c.n_clamped)))
    B = c.network.incidence()
    resid = np.asarray((B @ s.currents.T).T)[:, c.free_nodes] - J[:, c.free_nodes]
    src = 0 if s.sources is None else np.abs(s.sources)
    span = np.abs(s.potentials[:, c.network.tails]) + np.abs(s.potentials[:, c.network.heads])
    scale = np.asarray((abs(B) @ (g * (span + src)).T).T)[:, c.free_nodes] + np.abs(J[:, c.free_nodes])
    assert np.abs(resid).max() < 1e-10 * scale.max()


# ------------------------------------------------------ every solve is checked (issue 9)
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kirchnet.errors import IllConditionedError, ParameterError  # noqa: E402
from kirchnet.solvers import base as solver_base  # noqa: E402
from strategies import exact_potentials, exact_problem_potentials, problems  # noqa: E402

DIRECT_AND_CG = backend_params(["dense", "cholmod", "splu", "pcg", "pcg-amg"])


def _alternating_lattice(high, low):
    """4x4 lattice, odd edges ``high``, even edges ``low``; +1 V at node 15, -0.5 V at node 3."""
    net = topologies.lattice(4, 4)
    g = np.where(np.arange(net.n_edges) % 2 == 1, high, low)
    exact = exact_potentials(net, g, 0, [15, 3], [[1.0, -0.5]])[0, 10]
    return net, g, exact


@pytest.mark.parametrize("backend", DIRECT_AND_CG)
@pytest.mark.parametrize("high, low", [(1e8, 1e-8), (1e6, 1e-6)], ids=["ratio1e16", "ratio1e12"])
def test_ill_conditioned_lattice_is_exact_or_refused(backend, high, low):
    """The issue's lattice (exact output 0.2222 from rational arithmetic): unchecked, every
    backend returned 25-50 % off (SuperLU 2.0 V, PCG ~0 after one iteration). Now every
    backend returns the exact value to 1e-6 or raises IllConditionedError with the ratio."""
    net, g, exact = _alternating_lattice(high, low)
    assert exact == pytest.approx(2 / 9, abs=1e-4)
    c = Circuit(net, ground=0, inputs=[15, 3], outputs=[10], backend=backend)
    for x in ([1.0, -0.5], np.tile([1.0, -0.5], (5, 1))):  # per-sample and transfer paths
        try:
            out = c.solve(g, x).outputs
        except IllConditionedError as exc:
            assert f"conductance ratio max(g)/min(g) = {high / low:.1e}" in str(exc)
            assert "merge near-shorts" in str(exc) and "remove near-opens" in str(exc)
            continue
        except ConvergenceError as exc:  # CG may not even reach its residual tolerance
            assert backend.startswith("pcg") and f"max(g)/min(g) = {high / low:.1e}" in str(exc)
            continue
        assert np.all(np.abs(out - exact) <= 1e-6), (out, exact)


def test_pcg_convergence_test_is_diagonally_scaled():
    """Half a chain of 1e6 S, half of 1 S, driven at the strong end: ||b|| is dominated by
    the strong rows, so ||r|| <= rtol ||b|| alone accepts large residuals on the weak rows.
    CG stops only when ||D^{-1/2} r|| <= rtol ||D^{-1/2} b|| as well."""
    n = 41
    net = Network(n, [[i, i + 1] for i in range(n - 1)])
    g = np.where(np.arange(n - 1) >= 20, 1e6, 1.0)
    c = Circuit(net, ground=0, inputs=[40], outputs=[10])
    L = c.reduced_laplacian(g)
    b = c.driver_matrix(g)
    for rtol in (1e-6, 1e-10):
        fac = solvers.factorize(L, "pcg", rtol=rtol, check=False)
        X = fac.solve(b)
        r = b - L @ X
        s = 1 / np.sqrt(L.diagonal())[:, None]
        assert np.linalg.norm(r) <= rtol * np.linalg.norm(b)
        assert np.linalg.norm(s * r) <= rtol * np.linalg.norm(s * b)
    exact = exact_potentials(net, g, 0, [40], [[1.0]])[0, c.free_nodes]
    assert np.abs(X[:, 0] - exact).max() < 1e-8


@pytest.mark.parametrize("backend", DIRECT_AND_CG)
def test_chain_with_a_near_open_bridge_is_refined_to_the_exact_value(backend):
    """Chain 0..19 grounded at 0, 1 V at node 1, a 1e-10 bridge at edge 5: node 19 sits at
    exactly 1 V (no current flows beyond the input). Unchecked PCG returned 0.0 and the
    direct backends 0.99999992; iterative refinement restores 1.0."""
    n = 20
    net = Network(n, [[i, i + 1] for i in range(n - 1)])
    g = np.ones(n - 1)
    g[5] = 1e-10
    for inputs, out in (([1], 19), ([19], 18), ([19], 6)):
        exact = exact_potentials(net, g, 0, inputs, [[1.0]])[0, out]
        c = Circuit(net, ground=0, inputs=inputs, outputs=[out], backend=backend)
        got = c.solve(g, [1.0]).outputs[0, 0]
        assert got == pytest.approx(exact, abs=1e-9), (inputs, out)
    assert exact_potentials(net, g, 0, [1], [[1.0]])[0, 19] == 1.0


@pytest.mark.parametrize("backend", DIRECT_AND_CG)
def test_update_never_returns_nan_where_refactorization_is_right(backend):
    """Lowering a leaf edge to 1e-17 of itself made the Woodbury capacitance 1/d + c^T Z
    cancel to 0 (NaN potentials); the update now refactorizes, with the exact matrix."""
    n = 10
    net = Network(n, [[i, i + 1] for i in range(n - 1)])
    c = Circuit(net, ground=0, inputs=[5], outputs=[9, 7], backend=backend)
    g = np.linspace(0.5, 2.0, n - 1)
    for factor in (1e-12, 1e-16, 1e-17, 1e-300):
        g1 = g.copy()
        g1[8] *= factor
        try:
            c.factorize(g1).solve([1.0])
        except SolverError:  # (AMG-preconditioned CG may not converge here): the update neither
            with pytest.raises(SolverError):
                c.factorize(g).update(g1).solve([1.0])
            continue
        up = c.factorize(g).update(g1)
        out = up.solve([1.0]).outputs
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, c.factorize(g1, backend="dense").solve([1.0]).outputs, rtol=1e-12)
        np.testing.assert_allclose(out, exact_potentials(net, g1, 0, [5], [[1.0]])[:, [9, 7]], rtol=1e-12)


def test_woodbury_refuses_a_cancelling_capacitance():
    n = 10
    net = Network(n, [[i, i + 1] for i in range(n - 1)])
    c = Circuit(net, ground=0, inputs=[5], outputs=[9])
    g = np.linspace(0.5, 2.0, n - 1)
    base = solvers.factorize(c.reduced_laplacian(g), "splu")
    with pytest.raises(SolverError, match="Woodbury update"):
        solvers.WoodburyFactorization(base, c.edge_columns([8]), [g[8] * (1e-17 - 1.0)])


def test_updated_factorization_falls_back_to_refactorization(monkeypatch):
    """A derived (updated) factorization whose solves fail the check refactorizes once."""
    c, g = CIRCUITS[2]
    fac = c.factorize(g, backend="splu")
    g2 = _changed(g, [1, 2], [2.0, 0.5])
    up = fac.update(g2, max_rank=20)
    assert up.factor.derived and up.backend == "splu+woodbury"
    real = solvers.WoodburyFactorization._solve_block
    monkeypatch.setattr(solvers.WoodburyFactorization, "_solve_block",
                        lambda self, rhs: 1.5 * real(self, rhs))  # a broken update
    R = np.random.default_rng(0).normal(size=(c.n_free, 2))
    X = up.solve_free(R)
    assert up.factor._fallback is not None and up.factor._fallback.name == "splu"
    assert rel_err(c.reduced_laplacian(g2) @ X, R) < 1e-11


def test_check_refines_and_certifies(monkeypatch):
    """A solve perturbed by 1e-5 is refined back to full accuracy; one that stays wrong
    raises IllConditionedError; check=False returns it unexamined."""
    c, g = CIRCUITS[0]
    L = c.reduced_laplacian(g)
    R = np.random.default_rng(1).normal(size=(c.n_free, 3))
    exact = solvers.factorize(L, "dense").solve(R)
    real = solvers.DenseCholesky._solve_block
    calls = []

    def sloppy(self, rhs):
        calls.append(rhs.shape[1])
        x = real(self, rhs)
        return x * (1 + 1e-5) if len(calls) == 1 else x  # only the first solve is off

    monkeypatch.setattr(solvers.DenseCholesky, "_solve_block", sloppy)
    fac = solvers.factorize(L, "dense")
    X = fac.solve(R)
    assert fac.refinements >= 1 and rel_err(X, exact) < 1e-12
    monkeypatch.setattr(solvers.DenseCholesky, "_solve_block", lambda self, rhs: 0.9 * real(self, rhs))
    with pytest.raises(IllConditionedError, match="cannot be certified accurate: relative error bound"):
        solvers.factorize(L, "dense").solve(R)
    unchecked = solvers.factorize(L, "dense", check=False)
    assert rel_err(unchecked.solve(R), exact) == pytest.approx(0.1, rel=1e-6)


def test_non_finite_right_hand_side_is_refused():
    c, g = CIRCUITS[0]
    fac = solvers.factorize(c.reduced_laplacian(g), "splu")
    rhs = np.ones(c.n_free)
    rhs[3] = np.nan
    with pytest.raises(ParameterError, match="right-hand side contains NaN or inf"):
        fac.solve(rhs)


def test_not_positive_definite_names_the_conductance_ratio():
    """Two free nodes joined by 1e20 S, one grounded through 1 S, one driven through 1e-20 S:
    the assembled L_FF rounds to a singular matrix. potrf's info=2 is reported as not
    numerically positive definite (ill-conditioned or floating), with the ratio."""
    net = Network(4, [[0, 1], [1, 2], [2, 3]])
    g = np.array([1.0, 1e20, 1e-20])
    for backend in ("dense", "splu"):
        c = Circuit(net, ground=0, inputs=[3], outputs=[2], backend=backend)
        with pytest.raises(IllConditionedError) as info:
            c.solve(g, [1.0])
        msg = str(info.value)
        assert "not numerically positive definite" in msg and "floating part" in msg
        assert "conductance ratio max(g)/min(g) = 1.0e+40" in msg
        if backend == "dense":
            assert "potrf info=2" in msg


def test_cholmod_library_errors_become_kirchnet_errors(monkeypatch):
    """CHOLMOD's CholmodTooLargeError (a large random graph) is a SolverError advising pcg.
    Runs without scikit-sparse: the module is replaced by a stand-in that raises."""
    class CholmodError(Exception):
        pass

    class CholmodTooLargeError(CholmodError):
        pass

    class FakeCholmod:
        def analyze(self, A, mode="auto"):
            raise CholmodTooLargeError("problem too large")

        def cholesky(self, A):
            raise CholmodTooLargeError("problem too large")

    fake = FakeCholmod()
    fake.CholmodError, fake.CholmodTooLargeError = CholmodError, CholmodTooLargeError
    monkeypatch.setattr(cholmod_mod, "_cholmod", fake)
    monkeypatch.setattr(cholmod_mod, "AVAILABLE", True)
    net = topologies.random_connected(300, mean_degree=5, seed=1)  # a fresh circuit: no cached analysis
    c = Circuit(net, ground=0, inputs=[10, 20], outputs=[30])
    g = np.ones(net.n_edges)
    for call in (lambda: c.factorize(g, backend="cholmod"),
                 lambda: solvers.factorize(c.reduced_laplacian(g), "cholmod")):
        with pytest.raises(SolverError, match=r"CholmodTooLargeError.*use backend='pcg'"):
            call()


def test_memory_guard(monkeypatch):
    """Dense on a 200x200 lattice (~38 GB), a huge batch and a predicted sparse fill beyond
    the limit are refused before allocating, with the estimate and the alternative."""
    from kirchnet import _memory

    monkeypatch.setenv(_memory.ENV, "4G")
    assert _memory.memory_limit()[0] == 4 * 2**30
    lat = topologies.lattice(200, 200)
    c = Circuit(lat, ground=0, inputs=[39999], outputs=[20100])
    g = np.ones(lat.n_edges)
    with pytest.raises(SolverError, match=r"backend='dense' on 39,998 free nodes .* 38\.4 GB.*"
                                          r"KIRCHNET_MEMORY_LIMIT=4G.*backend='auto'"):
        c.factorize(g, backend="dense")
    with pytest.raises(SolverError, match="dense Cholesky of 39,998 unknowns"):
        solvers.DenseCholesky(c.reduced_laplacian(g))
    fac = c.factorize(g, backend="splu")
    with pytest.raises(SolverError, match=r"a batch of 200,000 samples .* smaller batch"):
        fac.solve(np.zeros((200_000, 1)))
    monkeypatch.setenv(_memory.ENV, "10M")
    with pytest.raises(SolverError, match=r"backend='splu' on 39,998 free nodes .* backend='pcg'"):
        c.factorize(g, backend="splu")
    monkeypatch.setenv(_memory.ENV, "0")  # guard off
    assert _memory.memory_limit()[0] == np.inf
    for text, expected in (("8G", 8 * 2**30), ("1.5M", 1.5 * 2**20), ("1e9", 1e9), ("512 kB", 512 * 2**10)):
        assert _memory.parse_size(text) == expected
    from kirchnet.errors import ConfigError

    with pytest.raises(ConfigError, match="KIRCHNET_MEMORY_LIMIT='lots' is not a memory size"):
        _memory.parse_size("lots")


@pytest.mark.parametrize("backend", DIRECT_AND_CG)
@settings(max_examples=25)
@given(st.sampled_from([0.0, 6.0, 10.0, 12.0, 14.0, 16.0]).flatmap(
    lambda d: problems(min_nodes=3, max_nodes=9, decades=d, max_batch=3)))
def test_every_backend_is_exact_or_refuses(backend, p):
    """Conductance ratios up to 1e16: a backend's potentials match exact rational arithmetic
    (to the accuracy every solve certifies, relative to the drive) or it raises a
    SolverError (IllConditionedError in the first place), never a wrong number."""
    c = p.circuit(backend)
    clamp = p.clamp if p.clamped else None
    try:
        u = c.solve(p.g, p.x, clamp=clamp).potentials
    except IllConditionedError as exc:
        assert "conductance ratio" in str(exc) or "diagonal ratio" in str(exc)
        assert p.extra["decades"] >= 6  # well-conditioned circuits are never refused
        return
    except SolverError:  # e.g. CG not converging on an ill-conditioned matrix
        assert p.extra["decades"] >= 10
        return
    exact = exact_problem_potentials(p)
    drive = np.abs(np.concatenate([p.x, p.clamp], axis=1)).sum(axis=1, keepdims=True)
    assert np.all(np.abs(u - exact) <= 10 * solver_base.ACCURACY * drive), np.abs(u - exact).max()


def test_ill_conditioned_error_is_exported():
    import kirchnet
    from kirchnet.errors import IllConditionedError, SolverError
    assert kirchnet.IllConditionedError is IllConditionedError and issubclass(IllConditionedError, SolverError)


# ---------------------------------------------------------------- factorization mode


def _elimination_game(A, perm) -> np.ndarray:
    """The lower pattern (bool, diagonal included) of the Cholesky factor of
    ``A[perm][:, perm]`` by the elimination game on the dense pattern (eliminating a vertex
    joins its later neighbours pairwise): the reference."""
    P = sp.csr_matrix(A)[perm][:, perm].toarray() != 0
    for k in range(P.shape[0]):
        later = np.flatnonzero(P[k + 1:, k]) + k + 1
        P[np.ix_(later, later)] = True
    return np.tril(P | np.eye(P.shape[0], dtype=bool))


def _elimination_counts(A, perm) -> np.ndarray:
    """Column counts (diagonal included) of :func:`_elimination_game`."""
    return _elimination_game(A, perm).sum(axis=0).astype(np.int64)


@pytest.mark.skipif(not symbolic_mod.AVAILABLE, reason="column counts are compiled (numba, the jit extra)")
@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 40), p=st.floats(0.02, 0.5), seed=st.integers(0, 2**31 - 1))
def test_column_counts_equal_the_elimination_game(n, p, seed):
    """Factor column counts of random symmetric patterns (any permutation) equal the dense
    elimination game's; the count can fail: a wrong elimination tree undercounts fill."""
    rng = np.random.default_rng(seed)
    U = sp.random(n, n, density=p, random_state=rng, format="csr")
    A = (U + U.T + sp.eye(n)).tocsc()
    perm = rng.permutation(n)
    np.testing.assert_array_equal(symbolic_mod.column_counts(A, perm), _elimination_counts(A, perm))


@needs_cholmod
@pytest.mark.skipif(not symbolic_mod.AVAILABLE, reason="the mode choice needs numba's column counts")
def test_cholmod_mode_follows_the_factor_work():
    """A lattice's factor (little work per entry) is factorized simplicial, a random
    graph's (dense fronts) supernodal; both solve to rounding. The counts are CHOLMOD's."""
    for net, mode in ((topologies.lattice(40, 40), "simplicial"),
                      (topologies.random_connected(1500, mean_degree=6, seed=2), "supernodal")):
        c = Circuit(net, ground=0, inputs=[1, 2], outputs=[3])
        g = np.random.default_rng(0).uniform(0.5, 2.0, net.n_edges)
        L = sp.csc_matrix(c.reduced_laplacian(g))
        sym = cholmod_mod.CholmodSymbolic(L)
        assert sym.mode == mode
        counts = symbolic_mod.column_counts(L, sym._symbolic.P())
        F = sym.factorize(L)
        if mode == "simplicial":  # the factor's own column counts
            np.testing.assert_array_equal(np.diff(F._factor.L().indptr), counts)
        b = np.random.default_rng(1).normal(size=L.shape[0])
        assert np.linalg.norm(L @ F.solve(b) - b) <= 1e-12 * np.linalg.norm(b) * np.abs(L).max()


@needs_cholmod
def test_cholmod_mode_without_numba_is_cholmods_own(monkeypatch):
    monkeypatch.setattr(symbolic_mod, "AVAILABLE", False)
    assert symbolic_mod.column_counts(sp.eye(3, format="csc")) is None
    L = topologies.lattice(10, 10)
    c = Circuit(L, ground=0, inputs=[1], outputs=[2])
    sym = cholmod_mod.CholmodSymbolic(c.reduced_laplacian(np.ones(L.n_edges)))
    assert sym.mode == "auto"


def test_cholmod_scaled_columns_match_scipy():
    """The update's ``C[:, keep] diag(scale)``, gathered from the CSC arrays, is scipy's
    product exactly (empty columns, one- and two-entry columns, nothing kept)."""
    rng = np.random.default_rng(5)
    C = sp.random(30, 40, density=0.06, format="csc", random_state=6)
    C.sort_indices()
    for keep in (rng.random(40) < 0.5, np.zeros(40, dtype=bool), np.ones(40, dtype=bool)):
        scale = rng.uniform(0.1, 3.0, int(keep.sum()))
        got = cholmod_mod._scaled_columns(C, keep, scale)
        want = sp.csc_matrix(C[:, keep] @ sp.diags(scale)) if keep.any() else sp.csc_matrix((30, 0))
        assert got.shape == want.shape
        assert np.array_equal(got.toarray(), want.toarray())
        assert got.has_sorted_indices or got.nnz == 0
