"""Solver backends: agreement with dense Cholesky, gradients through every backend,
low-rank updates against refactorization, the automatic choice, and failures."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from kirchnet import Circuit, ConvergenceError, Edge, Network, Pair, SolverError, solvers, topologies
from kirchnet.errors import BoundaryConditionError
from kirchnet.solvers import cholmod as cholmod_mod
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
