"""The two-level solve of grounded Laplacians with weights over many decades
(kirchnet.solvers.deflated), against a subtraction-free elimination reference, and its use
by the Newton steps of large diode networks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kirchnet.errors import SolverError
from kirchnet.solvers.deflated import (DeflatedLaplacian, SubtractionFreeElimination, floating_clusters,
                                      grounded_laplacian)


def gth_solve(n, ea, eb, d, b):
    """``H^-1 b`` by Gaussian elimination without subtractions (Grassmann-Taksar-Heyman):
    each pivot is recomputed as the node's conductance to the ground plus its remaining
    off-diagonal weights, the Schur complement only adds positive terms, so every entry of
    the factorization (and of ``x`` for ``b >= 0``) is accurate to a few ulps whatever the
    weights' range. Dense, O(n^3): the reference only."""
    A = np.zeros((n, n))
    g0 = np.zeros(n)
    for a, c, w in zip(ea, eb, d):
        if a >= 0 and c >= 0:
            A[a, c] += w
            A[c, a] += w
        else:
            g0[max(a, c)] += w
    b = np.array(b, dtype=float)
    piv = np.zeros(n)
    for k in range(n):
        piv[k] = g0[k] + A[k, k + 1:].sum()
        f = A[k + 1:, k] / piv[k]
        A[k + 1:, k + 1:] += np.outer(f, A[k, k + 1:])
        g0[k + 1:] += f * g0[k]
        b[k + 1:] += f * b[k]
    x = np.zeros(n)
    for k in range(n - 1, -1, -1):
        x[k] = (b[k] + A[k, k + 1:] @ x[k + 1:]) / piv[k]
    return x


def clustered_laplacian(seed, n):
    """Clusters of nodes joined by strong edges (0.1..10 S, a random tree each), about a third
    of them also strongly grounded, all joined to each other and to the ground by weak edges
    (1e-40..1e-11 S: diodes at zero bias down to deep reverse), a weak chain keeping the graph
    connected to the ground. Returns ``(n, ea, eb, d, b)`` (end ``-1``: the ground)."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, max(2, n // 5), n)
    ea, eb, d = [], [], []
    clusters = np.unique(lab)
    for k in clusters:
        mem = np.flatnonzero(lab == k)
        for i in range(1, mem.size):
            ea.append(mem[i]), eb.append(mem[rng.integers(0, i)]), d.append(10 ** rng.uniform(-1, 1))
        if rng.random() < 0.3:
            ea.append(mem[0]), eb.append(-1), d.append(10 ** rng.uniform(-1, 1))
    for _ in range(n):
        a, c = rng.integers(-1, n, 2)
        if a != c and max(a, c) >= 0:
            ea.append(a), eb.append(c), d.append(10 ** rng.uniform(-40, -11))
    for k1, k2 in zip(clusters[:-1], clusters[1:]):
        ea.append(np.flatnonzero(lab == k1)[0]), eb.append(np.flatnonzero(lab == k2)[0])
        d.append(10 ** rng.uniform(-40, -11))
    ea.append(0), eb.append(-1), d.append(1e-13)
    return n, np.array(ea), np.array(eb), np.array(d), rng.uniform(-1.0, 1.0, n)


def test_gth_reference_is_a_solver():
    """The reference agrees with LAPACK where LAPACK is accurate (weights within 1e2)."""
    rng = np.random.default_rng(0)
    n = 30
    ea, eb = rng.integers(-1, n, 120), rng.integers(0, n, 120)
    keep = ea != eb
    ea, eb = np.r_[ea[keep], np.arange(n)], np.r_[eb[keep], np.arange(1, n + 1) % n]  # a ring
    d = rng.uniform(0.1, 10.0, ea.size)
    ea, eb, d = np.r_[ea, 0], np.r_[eb, -1], np.r_[d, 1.0]
    b = rng.uniform(-1, 1, n)
    x = np.linalg.solve(grounded_laplacian(n, ea, eb, d).toarray(), b)
    np.testing.assert_allclose(gth_solve(n, ea, eb, d, b), x, rtol=1e-12, atol=1e-12 * np.abs(x).max())


def _exact_solve(n, ea, eb, d, b):
    """``H^-1 b`` in exact rational arithmetic (fractions)."""
    from fractions import Fraction

    H = [[Fraction(0)] * n for _ in range(n)]
    for a, c, w in zip(ea, eb, d):
        w = Fraction(float(w))
        for u, v in ((a, c), (c, a)):
            if u >= 0:
                H[u][u] += w
                if v >= 0:
                    H[u][v] -= w
    x = [Fraction(float(v)) for v in b]
    for k in range(n):
        for i in range(k + 1, n):
            f = H[i][k] / H[k][k]
            for j in range(k, n):
                H[i][j] -= f * H[k][j]
            x[i] -= f * x[k]
    for k in range(n - 1, -1, -1):
        x[k] = (x[k] - sum(H[k][j] * x[j] for j in range(k + 1, n))) / H[k][k]
    return np.array([float(v) for v in x])


@pytest.mark.parametrize("jit", ["1", "0"], ids=["compiled", "numpy"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_subtraction_free_elimination_is_exact_to_ulps(monkeypatch, jit, seed):
    """Against exact rational arithmetic, on 3-9 nodes with weights 1e-300 .. 1 (b >= 0 and
    mixed signs): componentwise to 1e-12 for b >= 0, where no cancellation is left in the
    data; where b has mixed signs LAPACK-like accuracy relative to max |x| is all there is.
    The elimination compiled (numba, where installed) and numpy's."""
    monkeypatch.setenv("KIRCHNET_JIT", jit)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 10))
    ea = np.r_[rng.integers(-1, n, 3 * n), np.arange(n)]
    eb = np.r_[rng.integers(0, n, 3 * n), (np.arange(n) + 1) % n]
    keep = ea != eb
    ea, eb = np.r_[ea[keep], 0], np.r_[eb[keep], -1]
    d = 10.0 ** rng.uniform(-300, 0, ea.size)
    solver = SubtractionFreeElimination(n, ea, eb, d)
    b = rng.uniform(0.0, 1.0, n)
    np.testing.assert_allclose(solver.solve(b), _exact_solve(n, ea, eb, d, b), rtol=1e-12)
    b = rng.uniform(-1.0, 1.0, n)
    x = _exact_solve(n, ea, eb, d, b)
    np.testing.assert_allclose(solver.solve(b), x, rtol=0, atol=1e-12 * np.abs(x).max())


def test_floating_clusters():
    """Nodes 0-1 strong to the ground, 2-3-4 joined strongly and held by weak edges only
    (one floating cluster), 5 alone on weak edges (a second)."""
    ea = np.array([0, 1, 2, 3, 4, 2, 5, 5])
    eb = np.array([-1, 0, 3, 4, 1, -1, 4, 0])
    d = np.array([1.0, 2.0, 1.0, 3.0, 1e-14, 1e-20, 1e-15, 1e-16])
    labels, k = floating_clusters(6, ea, eb, d)
    assert k == 2
    assert labels[0] == labels[1] == -1
    assert labels[2] == labels[3] == labels[4] >= 0
    assert labels[5] >= 0 and labels[5] != labels[2]
    # a weak edge is weak relative to the larger scale of its ends: 1e-9 of 1 S is still weak
    d2 = d.copy()
    d2[4] = 1e-7
    assert floating_clusters(6, ea, eb, d2)[0][2] == -1


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), n=st.sampled_from([6, 20, 45, 80]))
def test_deflated_solve_matches_the_exact_elimination(seed, n):
    """Componentwise relative accuracy (1e-9) where weights span 1e-40..10 S: the clusters'
    potentials are ~1/weak (up to 1e40 V), the others O(1)."""
    n, ea, eb, d, b = clustered_laplacian(seed, n)
    ref = gth_solve(n, ea, eb, d, b)
    solver = DeflatedLaplacian(n, ea, eb, d)
    x = solver.solve(b)
    assert np.all(np.isfinite(x))
    np.testing.assert_array_less(np.abs(x - ref), 1e-9 * np.abs(ref) + 1e-300)
    # several right-hand sides at once: the same columns
    X = solver.solve(np.stack([b, -2 * b], axis=1))
    np.testing.assert_allclose(X[:, 1], -2 * X[:, 0], rtol=1e-12)


def test_a_diagonal_shift_is_far_off_where_the_deflated_solve_is_exact():
    """What the two-level solve replaces: Cholesky of such a Laplacian fails (or pivots on
    noise) and the shift of 1e-12 max diag that makes it factorize moves the answer by O(1)."""
    n, ea, eb, d, b = clustered_laplacian(3, 40)
    ref = gth_solve(n, ea, eb, d, b)
    H = grounded_laplacian(n, ea, eb, d).toarray()
    shifted = np.linalg.solve(H + 1e-12 * np.diag(H).max() * np.eye(n), b)
    assert np.max(np.abs(shifted - ref) / np.abs(ref)) > 0.5
    assert np.max(np.abs(DeflatedLaplacian(n, ea, eb, d).solve(b) - ref) / np.abs(ref)) < 1e-12


def test_exactly_singular_is_refused():
    """A cluster whose every weight to the rest underflowed to 0 has no solution."""
    ea = np.array([0, 1, 2])
    eb = np.array([-1, 2, -1])
    d = np.array([1.0, 1.0, 0.0])  # nodes 1-2 hang on a zero weight
    with pytest.raises(SolverError, match="singular"):
        DeflatedLaplacian(3, ea, eb, d)
    with pytest.raises((np.linalg.LinAlgError, ValueError)):
        sla.cho_factor(grounded_laplacian(3, ea, eb, d).toarray())


@pytest.mark.slow
def test_diode_lattice_newton_does_not_creep_where_cholesky_fails(count_calls):
    """bench_nonlinear's 10^4-node lattice, sample 2: its tangents are not positive definite
    to CHOLMOD (clusters held at ~1e-13 S by diodes at zero bias next to 1 S resistors). With
    the old fallback (a diagonal shift) the limited and damped Newton iterations crept for 66
    iterations; with the two-level solve 11."""
    pytest.importorskip("sksparse")
    import sys
    from pathlib import Path

    import kirchnet.nonlinear as nl

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_nonlinear import diode_lattice

    _, circuit, g, X, _ = diode_lattice(10_000, batch=8)
    fac = circuit.factorize(g)
    assert fac.backend == "cholmod"
    calls = count_calls(nl, "DeflatedLaplacian")
    state = fac.solve(X[2:3])
    assert state.iterations[0] <= 20  # Newton at its pace ...
    assert calls["n"] >= 1  # ... although the plain factorization failed


def test_flush_subnormals_is_scoped():
    """Inside the block subnormal results are zero; the caller's mode comes back after it,
    also when the block raises."""
    from kirchnet.solvers import _fpmode

    if not _fpmode.AVAILABLE:
        pytest.skip("flush-to-zero is set through glibc's x86-64 fenv_t only")
    tiny = np.array([1e-300])
    assert (tiny * 1e-10)[0] > 0  # subnormal, not zero
    with _fpmode.flush_subnormals():
        assert (tiny * 1e-10)[0] == 0.0
    assert (tiny * 1e-10)[0] > 0
    with pytest.raises(RuntimeError):
        with _fpmode.flush_subnormals():
            raise RuntimeError("inside")
    assert (tiny * 1e-10)[0] > 0


def test_factorizations_with_subnormal_fill_solve_the_same():
    """A lattice whose weights span 1 .. 1e-150 (long chains of tiny weights fill the factor
    with subnormal numbers): CHOLMOD and SuperLU, which factorize with subnormals flushed,
    agree with the subtraction-free reference to 1e-10 on the well-held nodes."""
    import kirchnet as kn
    from kirchnet import solvers

    rng = np.random.default_rng(5)
    net = kn.topologies.lattice(12, 12)
    ea, eb = net.edges[:, 0].copy(), net.edges[:, 1].copy()
    d = np.where(rng.random(ea.size) < 0.5, 10 ** rng.uniform(-150, -100, ea.size), rng.uniform(0.5, 2.0, ea.size))
    # node 0 grounded strongly, every node weakly (the system is nonsingular in any precision)
    n = net.n_nodes
    ea, eb = np.r_[ea, np.arange(n)], np.r_[eb, np.full(n, -1)]
    d = np.r_[d, np.r_[1.0, np.full(n - 1, 1e-3)]]
    b = rng.uniform(0.0, 1.0, n)  # b >= 0: the reference is componentwise accurate
    ref = gth_solve(n, ea, eb, d, b)
    H = grounded_laplacian(n, ea, eb, d)
    backends = ["splu"] + (["cholmod"] if solvers.cholmod_available() else [])
    for backend in backends:
        x = solvers.factorize(H, backend, check=False).solve(b)
        np.testing.assert_allclose(x, ref, rtol=1e-10, err_msg=backend)


def test_newton_steps_take_the_two_level_solve_where_superlu_fails(monkeypatch, count_calls):
    """The path of a machine without CHOLMOD: SuperLU's Newton steps (numpy iteration).
    SuperLU pivots through the cancellation CHOLMOD reports, so its plain factorization is
    made to fail here; every step then goes through floating_clusters and the two-level
    solve (or the last-resort shift where nothing floats), Newton keeps its pace and the
    equilibrium is the same."""
    import kirchnet.nonlinear as nl
    from test_nonlinear import _leaky_cluster_circuit

    monkeypatch.setenv("KIRCHNET_JIT", "0")
    c, g, x = _leaky_cluster_circuit()  # clusters held only by reverse-biased diodes
    ref = c.factorize(g, backend="splu").solve(x)
    real = nl.TangentSystem._factor_fine

    def plain_fails(self, s, shift=0.0):
        if np.isscalar(shift) and shift == 0.0:
            raise SolverError("forced: the plain factorization fails")
        return real(self, s, shift)

    monkeypatch.setattr(nl.TangentSystem, "_factor_fine", plain_fails)
    calls = count_calls(nl, "DeflatedLaplacian")
    state = c.factorize(g, backend="splu").solve(x)
    assert calls["n"] > 0
    # accurate steps: about the plain iteration's count (121 -> 135 measured; steps 1.5x off: 553)
    assert state.iterations.sum() <= 1.5 * ref.iterations.sum()
    vs = np.abs(ref.potentials).max(axis=1, keepdims=True)
    assert np.all(np.abs(state.potentials - ref.potentials) <= 1e-8 * vs)
