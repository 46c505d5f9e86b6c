"""The lane iteration of resistor-diode batches (kirchnet._jit_nonlinear.lanes_newton,
kirchnet.nonlinear._lanes_newton): the sparse factor's pattern against the elimination
game, the lanes' factorizations against numpy, and the iteration step for step against
the numpy limited iteration, cold and warm, on lattices and random graphs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import kirchnet as kn
from kirchnet.elements import Diode, Rectifier
from test_nonlinear import LD, D2, _bench_diode_circuit, _fuzz_circuit, nl_problems, ref_loss, ref_solve

pytest.importorskip("numba", reason="the lane iteration is compiled with numba (the `jit` extra)")
from kirchnet import _jit_nonlinear  # noqa: E402
from kirchnet import nonlinear as nl  # noqa: E402
from kirchnet.solvers.symbolic import factor_pattern  # noqa: E402
from test_ports import _eligible_circuit, assert_numpy_steps  # noqa: E402
from test_solvers import _elimination_game  # noqa: E402

pytestmark = pytest.mark.skipif(not _jit_nonlinear.enabled(), reason="KIRCHNET_JIT=0")
LANES = _jit_nonlinear.LANES


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), density=st.floats(0.02, 0.3), seed=st.integers(0, 2 ** 31))
def test_factor_pattern_is_the_elimination_games(n, density, seed):
    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=density, random_state=seed)
    A = ((A + A.T) != 0).astype(float) + sp.eye(n)
    perm = rng.permutation(n)
    colptr, rowidx, rowptr, rowcol, rowpos = factor_pattern(A, perm)
    expected = sp.csc_matrix(_elimination_game(A, perm).astype(float))
    np.testing.assert_array_equal(colptr, expected.indptr)
    np.testing.assert_array_equal(rowidx, expected.indices)  # ascending rows, the diagonal first
    for i in range(n):
        cols, pos = rowcol[rowptr[i]:rowptr[i + 1]], rowpos[rowptr[i]:rowptr[i + 1]]
        np.testing.assert_array_equal(cols, np.flatnonzero(expected.toarray()[i, :i]))  # ascending
        assert np.all(rowidx[pos] == i) and np.all((pos > colptr[cols]) & (pos < colptr[cols + 1]))


def test_lane_row_operations_are_the_numpy_ones():
    """The vector intrinsics against their numpy meaning, on rows of 64-byte-aligned
    (_lane_rows) and plain numpy arrays; a non-contiguous array is refused at typing time."""
    import numba

    J = _jit_nonlinear

    @numba.njit
    def ops(X, Lx, d, i, p):
        y = J._dot8(X, i, Lx, p, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
        J._axpy8(X, i, Lx, p, 1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0)
        J._add8(X, 0, Lx, p, -0.5)
        piv = J._pivot8(X, 1, Lx, 0, 2, d)
        return y, piv

    rng = np.random.default_rng(5)
    for rows in (1, 3, 17):
        aligned = J._lane_rows(rows)
        assert aligned.shape == (rows, LANES) and aligned.flags.c_contiguous and aligned.ctypes.data % 64 == 0
    for X, Lx in ((J._lane_rows(4), J._lane_rows(5)), (np.empty((4, LANES)), np.empty((5, LANES)))):
        X[:] = rng.normal(size=X.shape)
        Lx[:] = rng.normal(size=Lx.shape)
        d = rng.normal(size=LANES)
        X0, Lx0, d0 = X.copy(), Lx.copy(), d.copy()
        t, y = np.arange(1.0, 9.0), np.array([1.0, -2, 3, -4, 5, -6, 7, -8])
        dot, piv = ops(X, Lx, d, 3, 4)
        np.testing.assert_allclose(dot, t - Lx0[4] * X0[3], rtol=1e-15, atol=1e-15)
        expected = X0.copy()
        expected[3] -= Lx0[4] * y
        expected[0] += -0.5 * Lx0[4]
        lkj = expected[1] * Lx0[0]
        expected[1] = 0.0
        np.testing.assert_allclose(X, expected, rtol=1e-15, atol=1e-15)
        np.testing.assert_allclose(piv, lkj, rtol=1e-15)
        np.testing.assert_array_equal(Lx[2], np.array(piv))
        np.testing.assert_allclose(d, d0 - lkj * lkj, rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(np.delete(Lx, 2, axis=0), np.delete(Lx0, 2, axis=0))
    with pytest.raises(numba.core.errors.TypingError, match="non-contiguous"):
        ops(np.zeros((4, 2 * LANES))[:, ::2], np.zeros((5, LANES)), np.zeros(LANES), 0, 0)


def _lane_factor_solve(pattern, D, rhs, shift=None):
    """``H_l^-1 rhs_l`` per lane by the compiled factorization and solve (``D`` (m, LANES))."""
    nf = pattern.colptr.size - 1
    Lx = np.empty((pattern.nnz, LANES))
    bad = np.zeros(LANES, dtype=bool)
    work = [np.empty((nf, LANES)) for _ in range(2)] + [np.empty(LANES)]
    _jit_nonlinear._lane_factor(Lx, *pattern.arrays, pattern.fa, pattern.fb, np.ascontiguousarray(D),
                                np.zeros(LANES) if shift is None else shift, *work, bad)
    X = np.ascontiguousarray(rhs.copy())
    _jit_nonlinear._lane_solve(Lx, pattern.colptr, pattern.rowidx, X)
    return X, bad


@pytest.mark.parametrize("order", ["cholmod", "envelope", "identity"])
def test_lane_factorization_solves_every_lanes_tangent(order):
    """Each lane's weights over six decades: the lanes' factorization and solve give numpy's
    solution of that lane's tangent, in CHOLMOD's order, the envelope's (the fallback without
    CHOLMOD) and the natural one; a lane with an isolated node is reported, the others not."""
    c, g, _ = _eligible_circuit(seed=3, n=40)
    p = c._pattern
    if order == "cholmod":
        perm = nl._assembly(c).kernel.factor.perm
    elif order == "envelope":
        perm = p.envelope().perm
    else:
        perm = np.arange(c.n_free)
    pattern = p.factor_pattern(perm)
    rng = np.random.default_rng(0)
    D = g[:, None] * 10 ** rng.uniform(-3, 3, (g.size, LANES))
    rhs = rng.standard_normal((c.n_free, LANES))
    X, bad = _lane_factor_solve(pattern, D, rhs)
    assert not bad.any()
    for ln in range(LANES):
        H = p.laplacian(D[:, ln]).toarray()[np.ix_(perm, perm)]
        np.testing.assert_allclose(H @ X[:, ln], rhs[:, ln], rtol=0, atol=1e-9 * np.abs(rhs[:, ln]).max())
    node = pattern.fa[0] if pattern.fa[0] >= 0 else pattern.fb[0]
    cut = D.copy()
    cut[(pattern.fa == node) | (pattern.fb == node), 2] = 0.0  # lane 2: the node has no edge left
    _, bad = _lane_factor_solve(pattern, cut, rhs)
    np.testing.assert_array_equal(bad, np.arange(LANES) == 2)
    shift = np.where(np.arange(LANES) == 2, 1e-6, 0.0)  # the shifted retry of lanes_newton
    X, bad = _lane_factor_solve(pattern, cut, rhs, shift)
    assert not bad.any()
    H = p.laplacian(cut[:, 2]).toarray()[np.ix_(perm, perm)] + 1e-6 * np.eye(c.n_free)
    np.testing.assert_allclose(X[:, 2], np.linalg.solve(H, rhs[:, 2]), rtol=1e-8)


@pytest.mark.parametrize("make", [lambda: _bench_diode_circuit(7, Diode(), seed=2, batch=13),
                                  lambda: _bench_diode_circuit(5, D2, seed=5, batch=13),
                                  lambda: _eligible_circuit(seed=4, batch=13),
                                  lambda: _eligible_circuit(seed=9, n=60, batch=LANES)],
                         ids=["lattice", "lattice-D2", "random", "random-one-round"])
def test_lanes_take_the_python_iterations_steps(monkeypatch, count_calls, make):
    """The lane iteration is the numpy limited iteration of dense circuits (every step a new
    factorization) with the samples side by side: the same iteration counts and equilibria,
    cold and warm, for batches that fill the lanes several times over or once."""
    c, g, X = make()
    calls = count_calls(nl, "_lanes_newton")
    fac = c.factorize(g)
    assert fac.dense and nl._lanes(fac, X.shape[0])
    assert_numpy_steps(monkeypatch, calls, fac, X)


def test_lanes_on_a_sparse_backend_reach_the_other_paths_equilibria(monkeypatch, count_calls):
    """A 30 x 30 lattice (sparse backend: chord steps and kept factorizations elsewhere):
    the lanes reach the same equilibria, cold, warm from a state and with injected
    currents, and the gradient through them is the other path's."""
    c, g, X = _bench_diode_circuit(30, Diode(), seed=3, batch=10, outputs=[5, 400])
    J = np.zeros((1, c.network.n_nodes))
    J[0, 17] = 2e-4
    y = np.random.default_rng(1).uniform(-1, 1, (X.shape[0], 2))
    calls = count_calls(nl, "_lanes_newton")
    results = []
    for lanes in (True, False):
        monkeypatch.setattr(nl, "LANES_MIN_BATCH", 4 if lanes else 10 ** 9)
        fac = c.factorize(g)
        assert not fac.dense and nl._lanes(fac, X.shape[0]) == lanes
        cold = fac.solve(X)
        warm = fac.solve(X * 0.98, warm_start=cold)
        fed = fac.solve(X, currents=J)
        loss, grad = c.loss_and_grad(g, X, y)
        results.append((cold.potentials, warm.potentials, fed.potentials, loss, grad))
    assert calls["n"] >= 3
    vs = np.abs(results[0][0]).max()
    for a, b in zip(results[0][:3], results[1][:3]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * vs)
    np.testing.assert_allclose(results[0][3], results[1][3], rtol=1e-9)
    np.testing.assert_allclose(results[0][4], results[1][4], rtol=1e-6, atol=1e-9 * np.abs(results[1][4]).max())


@pytest.mark.parametrize("seed", [3, 22, 72, 102, 115])
def test_lanes_on_random_graphs_reach_the_other_paths_equilibria(monkeypatch, seed):
    """Random resistor-diode graphs of the robustness sweep (conductances over five decades,
    injected currents, series sources), cold and warm from another sample's equilibrium:
    the lanes' equilibria are the other compiled paths'."""
    c, g, X, J = _fuzz_circuit(seed)
    out = []
    for lanes in (4, 10 ** 9):
        monkeypatch.setattr(nl, "LANES_MIN_BATCH", lanes)
        fac = c.factorize(g)
        cold = fac.solve(X, currents=J)
        warm = fac.solve(X, currents=J, warm_start=np.roll(cold.potentials, 1, axis=0))
        out.append((cold.potentials, warm.potentials))
    vs = np.abs(out[1][0]).max()
    for a, b in zip(out[0], out[1]):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-8 * vs)


def test_a_node_held_by_cut_off_diodes_takes_the_shifted_step(monkeypatch):
    """A free node tied to the network only by two diodes 40 V reverse-biased (their
    tangent weights underflow to 0: its lane's tangent is singular at every step): the
    lane is factorized again with the shift, and the batch reaches the numpy iteration's
    equilibrium (the node at 0 V by symmetry)."""
    net = kn.Network(6, [[1, 3], [3, 2], [1, 4], [4, 5], [5, 0], [4, 0], [2, 5]])
    c = kn.Circuit(net, ground=0, inputs=[1, 2], elements={Diode(): [0, 1]})
    g = np.array([1.0, 1.0, 1e-3, 2e-3, 1e-3, 1.5e-3, 1e-3])
    X = np.column_stack([np.linspace(-40, -35, 9), np.linspace(40, 35, 9)])
    fac = c.factorize(g)
    assert nl._lanes(fac, X.shape[0])
    shifted = {"n": 0}
    real = _jit_nonlinear._lane_factor

    def factor(*args):  # (run interpreted, so that the shifted factorizations can be counted)
        shifted["n"] += int(np.any(args[12] > 0))
        return real(*args)

    monkeypatch.setattr(_jit_nonlinear, "_lane_factor", factor)
    monkeypatch.setattr(_jit_nonlinear, "lanes_newton", _jit_nonlinear.lanes_newton.py_func)
    st_ = fac.solve(X)
    assert shifted["n"] > 0
    np.testing.assert_allclose(st_.potentials[:, 3], 0.0, atol=1e-12)
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    ref = c.factorize(g).solve(X)
    np.testing.assert_allclose(st_.potentials, ref.potentials, rtol=0, atol=1e-10 * np.abs(X).max())


def test_which_batches_take_the_lanes(monkeypatch):
    """Lanes for batches of at least LANES_MIN_BATCH samples of resistor-diode circuits whose
    factor is within LANES_MAX_FLOPS; not where the port reduction is asked for, not for
    other laws, not with KIRCHNET_JIT=0."""
    c, g, X = _bench_diode_circuit(6, Diode(), seed=1, batch=8)
    fac = c.factorize(g)
    assert nl._lanes(fac, nl.LANES_MIN_BATCH) and not nl._lanes(fac, nl.LANES_MIN_BATCH - 1)
    assert not nl._lanes(c.factorize(g, port_reduction=True), 8)
    assert nl._lanes(c.factorize(g, port_reduction=False), 8)
    rect, g_rect, _ = _bench_diode_circuit(6, Rectifier(), seed=1, batch=8)
    assert not nl._lanes(rect.factorize(g_rect), 8)
    monkeypatch.setattr(nl, "LANES_MAX_FLOPS", 0.0)
    assert not nl._lanes(fac, 8)
    monkeypatch.undo()
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    assert not nl._lanes(fac, 8)


def test_lanes_solve_is_each_samples_tangent_solve():
    """The adjoint's batched tangent solves in lanes: numpy's solution of each sample's
    tangent for several right-hand sides, a batch that is no multiple of LANES; a sample
    whose tangent is not positive definite is reported (and TangentSystem solves it by the
    other path: the same solution as without lanes)."""
    c, g, X = _eligible_circuit(seed=5, n=45, batch=11)
    fac = c.factorize(g)
    state = fac.solve(X)
    pattern = nl._assembly(c).kernel.factor
    perm, p = pattern.perm, c._pattern
    rng = np.random.default_rng(2)
    W = np.array(state.tangent_weights)
    rhs = rng.standard_normal((X.shape[0], c.n_free, 3))
    W[4, (pattern.fa == 0) | (pattern.fb == 0)] = 0.0  # sample 4: free position perm[0] cut off
    sol, ok = _jit_nonlinear.lanes_solve(W, np.ascontiguousarray(rhs[:, perm]), pattern.fa, pattern.fb,
                                         *pattern.arrays)
    np.testing.assert_array_equal(ok, np.arange(X.shape[0]) != 4)
    for s in np.flatnonzero(ok):
        H = p.laplacian(W[s]).toarray()[np.ix_(perm, perm)]
        np.testing.assert_allclose(H @ sol[s], rhs[s, perm], rtol=0, atol=1e-9 * np.abs(rhs[s]).max())
    active = np.zeros((X.shape[0], 0), dtype=bool)
    lanes = nl.TangentSystem(c, W, active, fac.dense, fac.backend, lanes=True).solve(rhs)
    other = nl.TangentSystem(c, W, active, fac.dense, fac.backend).solve(rhs)
    np.testing.assert_allclose(lanes, other, rtol=1e-9, atol=1e-12 * np.abs(other).max())


def test_gradients_through_the_lanes_are_the_other_paths(monkeypatch, count_calls):
    """loss_and_grad (per sample) and the output compliance of a batch: the lanes' forward
    solves and tangent solves give the other paths' values."""
    c, g, X = _bench_diode_circuit(8, Diode(), seed=4, batch=12, outputs=[9, 30, 50])
    y = np.random.default_rng(3).uniform(-1, 1, (X.shape[0], 3))
    calls = count_calls(_jit_nonlinear, "lanes_solve")
    out = []
    for lanes in (4, 10 ** 9):
        monkeypatch.setattr(nl, "LANES_MIN_BATCH", lanes)
        fac = c.factorize(g)
        loss, grad, per = c.loss_and_grad(g, X, y, per_sample=True)
        out.append((loss, per, fac.compliance(fac.solve(X))))
    assert calls["n"] >= 2
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-10)
    for a, b in zip(out[0][1:], out[1][1:]):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10 * np.abs(b).max())


@settings(max_examples=40, deadline=None)
@given(nl_problems(laws=("R", "D1", "D2")), st.integers(5, 11))
def test_lanes_match_the_long_double_reference(p, batch):
    """Random resistor-diode graphs (conductance ratios to 1e4, both diode laws), the inputs
    scaled into a batch that takes the lanes: the equilibria are the long-double
    reference's, the batch-mean gradient its central differences."""
    rng = np.random.default_rng(batch)
    rows = rng.integers(0, p.x.shape[0], batch)
    p = dataclasses.replace(p, x=p.x[rows] * rng.uniform(0.5, 2.0, (batch, 1)), y=p.y[rows])
    c = p.circuit()
    fac = c.factorize(p.g)
    assert nl._lanes(fac, batch)
    ref = ref_solve(p)[0]
    vscale = float(np.abs(ref).max()) + 1.0
    np.testing.assert_allclose(fac.solve(p.x).potentials, ref.astype(float), rtol=0, atol=1e-8 * vscale)
    loss, grad = c.loss_and_grad(p.g, p.x, p.y, factorization=fac)
    assert loss == pytest.approx(float(ref_loss(p, ref[None])[0]), rel=1e-7, abs=1e-14)
    edges = rng.choice(p.g.size, size=min(3, p.g.size), replace=False)
    h = 1e-5 * p.g[edges]
    G = np.tile(p.g, (2 * edges.size, 1)).astype(LD)
    G[np.arange(edges.size), edges] += h
    G[edges.size + np.arange(edges.size), edges] -= h
    L = ref_loss(p, ref_solve(p, G, u0=ref))
    fd = ((L[:edges.size] - L[edges.size:]) / LD(2 * h)).astype(float)
    floor = 1e-12 * np.sqrt(2 * loss) * vscale / p.g[edges]
    np.testing.assert_allclose(grad[edges], fd, rtol=1e-5, atol=1e-6 * np.abs(grad).max() + floor.max())


def test_a_converged_lane_estimates_with_its_last_factorization(monkeypatch, count_calls):
    """Newton's error estimate at a converged state reuses the lane's last factorization
    where no tangent weight drifted more than CHORD_DRIFT (the lane takes its next sample in
    the same round): fewer rounds of factorizations than with an estimate of its own
    (CHORD_DRIFT = 0), same iterations and equilibria (run interpreted, so that the rounds
    can be counted)."""
    c, g, X = _bench_diode_circuit(5, Diode(), seed=7, batch=10)
    monkeypatch.setattr(_jit_nonlinear, "lanes_newton", _jit_nonlinear.lanes_newton.py_func)
    runs = []
    for drift in (nl.CHORD_DRIFT, 0.0):
        monkeypatch.setattr(nl, "CHORD_DRIFT", drift)
        rounds = count_calls(_jit_nonlinear, "_lane_factor")
        reused = count_calls(_jit_nonlinear, "_lane_solve_one")
        runs.append((c.factorize(g).solve(X), rounds["n"], reused["n"]))
    (a, rounds_a, reused_a), (b, rounds_b, reused_b) = runs
    assert reused_a > 0 and reused_b == 0 and rounds_a < rounds_b
    np.testing.assert_array_equal(a.iterations, b.iterations)
    np.testing.assert_allclose(a.potentials, b.potentials, rtol=0, atol=1e-12 * np.abs(b.potentials).max())


def test_lanes_without_cholmod_order_the_factor_as_the_envelope(monkeypatch):
    """Where CHOLMOD is not installed (numba without scikit-sparse), the lanes' factor takes
    the envelope's reverse Cuthill-McKee order, and the batch reaches the other path's
    equilibria."""
    from kirchnet.errors import SolverError

    def no_cholmod(self):
        raise SolverError("CHOLMOD is not installed")

    monkeypatch.setattr(kn.Circuit, "_symbolic", property(no_cholmod))
    c, g, X = _bench_diode_circuit(6, Diode(), seed=3, batch=9)
    fac = c.factorize(g, backend="splu")
    assert nl._lanes(fac, X.shape[0])
    kernel = nl._assembly(c).kernel
    np.testing.assert_array_equal(kernel.factor.perm, kernel.envelope.perm)
    lanes = fac.solve(X)
    monkeypatch.setattr(nl, "LANES_MIN_BATCH", 10 ** 9)
    other = c.factorize(g, backend="splu").solve(X)
    np.testing.assert_allclose(lanes.potentials, other.potentials, rtol=0, atol=1e-10 * np.abs(X).max())
