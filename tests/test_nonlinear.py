"""Nonlinear equilibria and their exact gradients (kirchnet.nonlinear).

The reference here is independent of kirchnet's solvers: a plain Newton iteration in
``np.longdouble`` written from the problem specification (dense incidence, the laws
re-implemented below, step halving on the KCL residual, batched Gaussian elimination
from ``tests/strategies.py``), and for ideal diodes an enumeration of every active set.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.special import lambertw

import kirchnet as kn
from kirchnet import Edge, Pair
from kirchnet.elements import Diode, IdealDiode, Rectifier, Resistor
from kirchnet.errors import BoundaryConditionError, ConvergenceError
from kirchnet.nonlinear import NonlinearFactorization, NonlinearState
from kirchnet import _jit_nonlinear as _jit_nl
from conftest import backend_params, needs_cholmod

from strategies import _solve_spd_batched

LD = np.longdouble
D1 = Diode(saturation_current=1e-3, thermal_voltage=0.05)
D2 = Diode(saturation_current=1e-6, emission=1.5, thermal_voltage=0.04)
LAWS = {"R": Resistor(), "D1": D1, "D2": D2, "Rect": Rectifier()}


# ----------------------------------------------------------------- reference model
def ref_law(kind: str, w):
    """``(phi, phi')`` in long double, written from the law definitions."""
    if kind == "R":
        return w, np.ones_like(w)
    if kind == "Rect":
        return np.maximum(w, 0), (w > 0).astype(LD)
    d = LAWS[kind]
    Is, nvt, X = LD(d.saturation_current), LD(d.emission) * LD(d.thermal_voltage), LD(d.max_exponent)
    x = w / nvt
    xc = np.minimum(x, X)
    phi = Is * np.expm1(xc) + np.where(x > X, Is * np.exp(X) * (x - X), 0)
    return phi, Is / nvt * np.exp(xc)


@dataclass
class NLProblem:
    network: kn.Network
    kinds: list  # law name per edge
    inputs: list
    outputs: list
    g: np.ndarray
    x: np.ndarray
    y: np.ndarray
    ground: int = 0

    def elements(self):
        out = {}
        for e, k in enumerate(self.kinds):
            if k != "R":
                out.setdefault(LAWS[k], []).append(e)
        return out

    def circuit(self, backend="auto"):
        return kn.Circuit(self.network, ground=self.ground, inputs=self.inputs, outputs=self.outputs,
                          elements=self.elements(), backend=backend)


def _ref_pieces(p: NLProblem):
    net = p.network
    n, m = net.n_nodes, net.n_edges
    B = np.zeros((n, m), dtype=LD)
    B[net.tails, np.arange(m)] = 1
    B[net.heads, np.arange(m)] = -1
    node_in = [(j, v) for j, v in enumerate(p.inputs) if not isinstance(v, Edge)]
    edge_in = [(j, v.index) for j, v in enumerate(p.inputs) if isinstance(v, Edge)]
    C = np.asarray([p.ground] + [v for _, v in node_in], dtype=np.int64)
    F = np.setdiff1d(np.arange(n), C)
    b = p.x.shape[0]
    u = np.zeros((b, n), dtype=LD)
    for j, v in node_in:
        u[:, v] = p.x[:, j]
    s = np.zeros((b, m), dtype=LD)
    for j, e in edge_in:
        s[:, e] = p.x[:, j]
    return B, F, u, s


def ref_currents(p: NLProblem, w, g):
    phi = np.zeros_like(w)
    dphi = np.zeros_like(w)
    for kind in set(p.kinds):
        idx = [e for e, k in enumerate(p.kinds) if k == kind]
        phi[..., idx], dphi[..., idx] = ref_law(kind, w[..., idx])
    return g * phi, g * dphi


def ref_solve(p: NLProblem, G=None, u0=None):
    """Potentials (P, b, n) in long double for conductance rows ``G`` (P, m)."""
    B, F, uc, s = _ref_pieces(p)
    G = np.asarray(p.g if G is None else G, dtype=LD).reshape(-1, 1, p.g.size)
    u = np.broadcast_to(uc, (G.shape[0],) + uc.shape).copy()
    if u0 is not None:
        u[..., F] = u0[..., F]
    BF = B[F]

    def resid(u):
        i, di = ref_currents(p, u @ B + s, G)
        # current scale plus the rounding level of the computed currents
        wabs = np.abs(u) @ np.abs(B) + np.abs(s)
        return i @ BF.T, di, np.abs(i) @ np.abs(BF).T + 64 * (di * wabs) @ np.abs(BF).T

    r, di, sc = resid(u)
    for it in range(200):
        # at least one Newton step: a start u0 of a nearby problem (finite differences) may
        # already pass the rounding-level test although its potentials are off by O(h)
        if it and np.all(np.abs(r) <= 1e-17 * sc + 1e-300):
            return u
        H = np.einsum("fm,pbm,hm->pbfh", BF, di, BF)
        du = _solve_spd_batched(H, -r[..., None])[..., 0]
        t = np.ones(r.shape[:2], dtype=LD)
        norm0 = np.sqrt((r ** 2).sum(-1))
        done = np.all(np.abs(r) <= 1e-17 * sc + 1e-300, axis=-1)
        for _ in range(60):  # step halving on the KCL residual
            un = u.copy()
            un[..., F] += t[..., None] * du
            rn, din, scn = resid(un)
            ok = (np.sqrt((rn ** 2).sum(-1)) < norm0) | done
            if ok.all():
                break
            t = np.where(ok, t, t / 2)
        u, r, di, sc = un, rn, din, scn
    raise AssertionError("reference Newton did not converge")


def ref_outputs(p: NLProblem, u):
    n = p.network.n_nodes
    P = np.zeros((len(p.outputs), n), dtype=LD)
    for k, o in enumerate(p.outputs):
        if isinstance(o, Pair):
            P[k, o.a] += 1
            P[k, o.b] -= 1
        else:
            P[k, o] = 1
    return u @ P.T


def ref_loss(p: NLProblem, u):
    d = ref_outputs(p, u) - np.asarray(p.y, dtype=LD)
    return 0.5 * (d ** 2).sum(-1).mean(-1)


# ----------------------------------------------------------------- strategy
@st.composite
def nl_problems(draw, max_nodes: int = 10, decades: float = 4.0, laws=("R", "D1", "D2", "Rect"),
                tree_diodes: float = 0.3):
    """A connected graph whose spanning tree is resistors and diodes (a fraction
    ``tree_diodes``; so the energy is strictly convex), random extra edges with mixed laws,
    conductances spanning up to ``10**decades``, node and series-source inputs, node and
    pair outputs."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(3, max_nodes))
    perm = rng.permutation(n)
    parents = perm[(rng.random(n - 1) * np.arange(1, n)).astype(np.int64)]
    edges = [(int(a), int(b)) for a, b in zip(parents, perm[1:])]
    tree_laws = [k for k in laws if k != "Rect"]
    kinds = [str(rng.choice(tree_laws)) if rng.random() < tree_diodes else "R" for _ in edges]
    for _ in range(draw(st.integers(1, 2 * n))):
        a, b = rng.choice(n, size=2, replace=False)
        edges.append((int(a), int(b)))
        kinds.append(str(rng.choice(laws)))
    if all(k == "R" for k in kinds):
        kinds[-1] = laws[-1] if laws[-1] != "R" else "D1"
    E = np.asarray(edges)
    flip = rng.random(len(E)) < 0.5
    E = np.where(flip[:, None], E[:, ::-1], E)
    net = kn.Network(n, E)
    m = net.n_edges
    logs = rng.uniform(-decades / 2, decades / 2, m)
    i, j = rng.choice(m, 2, replace=False)
    logs[i], logs[j] = -decades / 2, decades / 2
    g = 10.0 ** logs
    others = [v for v in range(1, n)]
    n_node_in = int(rng.integers(1, min(2, n - 2) + 1))
    node_in = [int(v) for v in rng.choice(others, n_node_in, replace=False)]
    free = [v for v in others if v not in node_in]
    inputs = list(node_in)
    if draw(st.booleans()):
        inputs.insert(int(rng.integers(0, len(inputs) + 1)), Edge(int(rng.integers(m))))
    outputs = [int(rng.choice(free))]
    if len(free) >= 2 and draw(st.booleans()):
        a, b2 = rng.choice(free, 2, replace=False)
        outputs.append(Pair(int(a), int(b2)))
    bsz = draw(st.integers(1, 3))
    x = rng.uniform(-1, 1, (bsz, len(inputs)))
    y = 0.3 * rng.normal(size=(bsz, len(outputs)))
    return NLProblem(net, kinds, inputs, outputs, g, x, y)


@pytest.mark.parametrize("jit", ["1", "0"])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nl_problems(laws=("R", "D1", "D2")), st.floats(0.5, 8.0), st.integers(0, 2 ** 31))
def test_warm_start_from_any_potentials_reaches_the_reference(monkeypatch, jit, p, spread, seed):
    """Warm starts from arbitrary potentials (uniform in +-spread volts at every node: diodes
    up to 16 V forward or reverse) reach the long-double reference equilibrium, compiled
    and numpy: the start only changes the path (Diode.max_start_voltage caps the first
    linearization; source stepping catches what the direct iteration misses)."""
    monkeypatch.setenv("KIRCHNET_JIT", jit)
    c = p.circuit()
    ref = ref_solve(p)[0]
    start = np.random.default_rng(seed).uniform(-spread, spread, ref.shape)
    state = c.factorize(p.g).solve(p.x, warm_start=start)
    vscale = float(np.abs(ref).max()) + 1.0
    np.testing.assert_allclose(state.potentials, ref.astype(float), rtol=0, atol=1e-8 * vscale)


def _rectifier_margin(p: NLProblem, u) -> float:
    B, F, _, s = _ref_pieces(p)
    w = (u @ B + s).reshape(-1, p.g.size)
    idx = [e for e, k in enumerate(p.kinds) if k == "Rect"]
    return float(np.abs(w[:, idx]).min()) if idx else np.inf


@pytest.mark.parametrize("limiting", [True, False], ids=["limited-newton", "damped-newton"])
@settings(max_examples=200)
@given(nl_problems())
def test_equilibrium_and_gradient_match_the_long_double_reference(limiting, p):
    """Both Newton iterations (SPICE-style limited, the default for smooth laws; damped with
    an exact line search, the fallback and the path of piecewise-linear laws)."""
    c = p.circuit()
    ref = ref_solve(p)[0]
    assume(_rectifier_margin(p, ref) > 1e-6)  # finite differences across a kink are meaningless
    state = c.factorize(p.g, limiting=limiting).solve(p.x)
    assert isinstance(state, NonlinearState)
    vscale = float(np.abs(ref).max()) + 1.0
    np.testing.assert_allclose(state.potentials, ref.astype(float), rtol=0, atol=1e-8 * vscale)
    # KCL on the free nodes from the returned currents, relative to the node's current scale
    i = state.currents
    r = np.asarray((c._B_free @ i.T).T)
    sc = np.asarray((abs(c._B_free) @ np.abs(i).T).T)
    wabs = np.abs(state.potentials) @ np.abs(c.network.incidence().toarray()) \
        + np.abs(state.potentials).max(axis=1, keepdims=True)
    if state.sources is not None:
        wabs = wabs + np.abs(state.sources)
    rounding = 64 * 2.2e-16 * np.asarray((abs(c._B_free) @ (state.tangent_weights * wabs).T).T)
    assert np.all(np.abs(r) <= 1e-10 * np.maximum(sc, 1e-12 * sc.max()) + rounding + 1e-300)
    # gradient against central differences of the reference, a few edges per example
    loss, grad = c.loss_and_grad(p.g, p.x, p.y)
    assert loss == pytest.approx(float(ref_loss(p, ref[None])[0]), rel=1e-7, abs=1e-14)
    rng = np.random.default_rng(len(p.kinds))
    edges = rng.choice(p.g.size, size=min(3, p.g.size), replace=False)
    h = 1e-5 * p.g[edges]
    G = np.tile(p.g, (2 * edges.size, 1)).astype(LD)
    G[np.arange(edges.size), edges] += h
    G[edges.size + np.arange(edges.size), edges] -= h
    up = ref_solve(p, G, u0=ref)
    assume(_rectifier_margin(p, up) > 1e-6)
    L = ref_loss(p, up)
    fd = ((L[:edges.size] - L[edges.size:]) / LD(2 * h)).astype(float)
    # absolute floor: rounding of the forward and adjoint solves, ~eps |delta| |u| / g
    floor = 1e-12 * np.sqrt(2 * loss) * vscale / p.g[edges]
    np.testing.assert_allclose(grad[edges], fd, rtol=1e-5, atol=1e-6 * np.abs(grad).max() + floor.max())


@settings(max_examples=12)
@given(nl_problems(max_nodes=8, laws=("R", "D1", "Rect")))
def test_equilibrium_minimizes_the_co_content(p):
    c = p.circuit()
    g = p.g
    x = p.x[:1]
    state = c.solve(g, x)
    free = c.free_nodes
    E0 = float(state.energy[0])

    def energy(uf):
        u = state.potentials[0].copy()
        u[free] = uf
        return float(c.elements.Phi(c.network.incidence().T @ u + (0 if state.sources is None
                                                                  else state.sources[0])) @ g)

    assert energy(state.potentials[0, free]) == pytest.approx(E0, rel=1e-12, abs=1e-300)
    res = minimize(energy, np.zeros(free.size), method="BFGS", options={"gtol": 1e-12})
    assert E0 <= res.fun + 1e-9 * (abs(res.fun) + 1e-12)
    rng = np.random.default_rng(0)
    for _ in range(5):
        v = rng.normal(size=free.size) * 1e-3
        assert energy(state.potentials[0, free] + v) >= E0 - 1e-12 * abs(E0)


def test_series_diode_matches_the_lambert_w_solution():
    # V -- R -- |>|-- ground: I = (nVt/R) W(Is R/(nVt) exp((V + Is R)/(nVt))) - Is
    net = kn.Network(3, [(1, 2), (2, 0)])
    d = Diode()  # ngspice defaults: Is = 1e-14 A, n = 1, Vt at 27 C
    g_r = 1e-3  # 1 kOhm
    c = kn.Circuit(net, ground=0, inputs=[1], outputs=[2], elements={d: [1]})
    V = np.array([[-2.0], [0.0], [0.3], [0.7], [1.0], [5.0], [10.0]])
    st_ = c.solve(np.array([g_r, 1.0]), V)
    nvt, Is, R = d.nvt, d.saturation_current, 1 / g_r
    arg = Is * R / nvt * np.exp((V[:, 0] + Is * R) / nvt)
    with np.errstate(over="ignore"):
        I_exact = nvt / R * np.real(lambertw(arg)) - Is
    big = ~np.isfinite(arg)  # overflow of the closed form: use its asymptotic inverse by Newton
    assert not big.any()
    rounding = 64 * np.finfo(float).eps * g_r * np.abs(V[:, 0])  # of the resistor's current g (V - u)
    assert np.all(np.abs(st_.currents[:, 1] - I_exact) <= 1e-9 * np.abs(I_exact) + rounding + 1e-28)
    assert np.all(np.abs(st_.currents[:, 0] - st_.currents[:, 1]) <= 1e-9 * np.abs(I_exact) + rounding + 1e-28)
    assert st_.iterations.max() <= 40


def test_half_wave_rectifier_with_an_ideal_diode_is_exact():
    # input -- R -- node 2 -- ideal diode (anode 2) -- ground: node 2 = min(V, 0)
    net = kn.Network(3, [(1, 2), (2, 0)])
    c = kn.Circuit(net, ground=0, inputs=[1], outputs=[2], elements={IdealDiode(): [1]})
    V = np.linspace(-2, 2, 9)[:, None]
    s = c.solve(np.array([0.5, 1.0]), V)
    np.testing.assert_allclose(s.outputs[:, 0], np.minimum(V[:, 0], 0.0), atol=1e-14)
    np.testing.assert_allclose(s.currents[:, 1], 0.5 * np.maximum(V[:, 0], 0.0), atol=1e-14)
    assert np.all(s.currents[:, 1] >= 0)
    # the same with a rectifier: a diode in series with the edge's resistance
    c2 = kn.Circuit(net, ground=0, inputs=[1], outputs=[2], elements={Rectifier(): [1]})
    s2 = c2.solve(np.array([0.5, 1.5]), V)
    expected = np.where(V[:, 0] > 0, V[:, 0] * 0.5 / 2.0, V[:, 0])
    np.testing.assert_allclose(s2.outputs[:, 0], expected, atol=1e-14)


# ----------------------------------------------------------------- ideal diodes
def _enumerate_ideal(c, g, x):
    """Reference equilibrium of resistor + ideal-diode circuits: try every active set."""
    net = c.network
    n, m = net.n_nodes, net.n_edges
    B = net.incidence().toarray()
    F, Cn = c.free_nodes, np.flatnonzero(c.is_clamped)
    ideal = c.elements.constraint_edges
    res = [e for e in range(m) if e not in set(ideal)]
    out = []
    for xs in x:
        u = np.zeros(n)
        u[c.input_nodes] = xs
        best = None
        for bits in itertools.product([0, 1], repeat=ideal.size):
            A = ideal[np.asarray(bits, dtype=bool)]
            BF = B[F]
            L = (BF[:, res] * g[res]) @ BF[:, res].T
            rhs = -(BF[:, res] * g[res]) @ (B[Cn][:, res].T @ u[Cn])
            CA = BF[:, A]
            K = np.block([[L, CA], [CA.T, np.zeros((A.size, A.size))]])
            r2 = np.concatenate([rhs, -(B[Cn][:, A].T @ u[Cn])])
            try:
                sol = np.linalg.solve(K, r2)
            except np.linalg.LinAlgError:
                continue
            uu = u.copy()
            uu[F] = sol[:F.size]
            w = B.T @ uu
            mu = sol[F.size:]
            if np.all(mu >= -1e-12) and np.all(w[ideal] <= 1e-12):
                best = uu
                break
        assert best is not None
        out.append(best)
    return np.asarray(out)


@settings(max_examples=30)
@given(st.integers(0, 2 ** 32 - 1), st.integers(4, 9), st.integers(1, 3))
def test_ideal_diode_equilibria_and_gradients_match_enumerated_active_sets(seed, n, n_ideal):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    parents = perm[(rng.random(n - 1) * np.arange(1, n)).astype(np.int64)]
    E = [(int(a), int(b)) for a, b in zip(parents, perm[1:])]
    for _ in range(n):
        a, b = rng.choice(n, 2, replace=False)
        E.append((int(a), int(b)))
    ideal = []
    for _ in range(n_ideal):  # ideal diodes from free nodes to ground or to the input
        v = int(rng.integers(2, n))
        E.append((v, 0) if rng.random() < 0.5 else (0, v))
        ideal.append(len(E) - 1)
    net = kn.Network(n, E)
    c = kn.Circuit(net, ground=0, inputs=[1], outputs=[n - 1], elements={IdealDiode(): ideal})
    g = 10 ** rng.uniform(-2, 2, net.n_edges)
    x = rng.uniform(-1, 1, (3, 1))
    s = c.solve(g, x)
    ref = _enumerate_ideal(c, g, x)
    np.testing.assert_allclose(s.potentials, ref, atol=1e-11)
    w = s.resistor_voltages[:, ideal]
    mu = s.currents[:, ideal]
    vs = np.abs(x).max() + 1
    assert np.all(w <= 1e-12 * vs) and np.all(mu >= -1e-12) and np.all(np.abs(mu * w) <= 1e-12 * vs)
    # gradient with the active set frozen vs finite differences of the enumerated reference
    y = np.zeros((3, 1))
    _, grad = c.loss_and_grad(g, x, y)
    assert np.all(grad[ideal] == 0)
    res_edges = [e for e in range(net.n_edges) if e not in ideal][:4]
    for e in res_edges:
        h = 1e-6 * g[e]
        gp, gm = g.copy(), g.copy()
        gp[e] += h
        gm[e] -= h
        up, um = _enumerate_ideal(c, gp, x), _enumerate_ideal(c, gm, x)
        Lp, Lm = 0.5 * (up[:, n - 1] ** 2).mean(), 0.5 * (um[:, n - 1] ** 2).mean()
        fd = (Lp - Lm) / (2 * h)
        noise = 1e-14 * (Lp + Lm) / h + 1e-20  # cancellation in the float64 difference
        assert grad[e] == pytest.approx(fd, rel=1e-5, abs=1e-9 * np.abs(grad).max() + noise)


def test_forward_biased_ideal_diode_between_clamped_nodes_is_rejected():
    net = kn.Network(3, [(1, 0), (1, 2), (2, 0)])
    c = kn.Circuit(net, ground=0, inputs=[1], outputs=[2], elements={IdealDiode(): [0]})
    g = np.ones(3)
    s = c.solve(g, [[-1.0]])  # reverse-biased: fine
    assert s.currents[0, 0] == 0
    with pytest.raises(BoundaryConditionError, match=r"ideal diode edge\(s\) 0 .*forward-biased"):
        c.solve(g, [[-1.0], [1.0]])


def test_forward_biased_ideal_diode_loop_through_a_free_node_is_rejected():
    # input 1 -> ideal -> 2 -> ideal -> ground: both conduct for x > 0, no resistance in the loop
    net = kn.Network(4, [(1, 2), (2, 0), (2, 3), (3, 0)])
    c = kn.Circuit(net, ground=0, inputs=[1], outputs=[3], elements={IdealDiode(): [0, 1]})
    g = np.ones(4)
    assert np.allclose(c.solve(g, [[-0.5]]).outputs, 0.0)
    with pytest.raises(BoundaryConditionError, match=r"ideal diode edge\(s\) .*no resistance"):
        c.solve(g, [[0.5]])


def test_unbounded_and_pinned_current_injections():
    net = kn.Network(3, [(1, 2), (2, 0)])
    J = np.array([0.0, 0.0, -1.0])  # 1 A drawn out of node 2
    # blocking rectifiers on both sides: no equilibrium (the energy is unbounded below)
    c = kn.Circuit(net, ground=0, inputs=[1], outputs=[2], elements={Rectifier(): [0, 1]})
    with pytest.raises(ConvergenceError, match="worst node 2"):
        c.solve(np.ones(2), [[0.0]], currents=J)
    # ideal diodes pin node 2 at 0 V; the 1 A comes from the input node through diode 0
    # (node 1 -> 2 -> ground is a loop of ideal diodes: the solver keeps one of them conducting)
    c = kn.Circuit(net, ground=0, inputs=[1], outputs=[2], elements={IdealDiode(): [0, 1]})
    s = c.solve(np.ones(2), [[0.0]], currents=J)
    np.testing.assert_allclose(s.potentials, 0.0, atol=1e-15)
    np.testing.assert_allclose(s.currents[0], [1.0, 0.0], atol=1e-15)


def test_nonlinear_circuits_pickle_and_warm_start_from_potentials():
    import pickle

    c, g, x = _diode_lattice()
    s = c.solve(g, x)
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.elements == c.elements and not c2.is_linear
    np.testing.assert_array_equal(c2.solve(g, x).potentials, s.potentials)
    again = c.factorize(g).solve(x, warm_start=s.potentials)
    assert again.iterations.max() <= 1
    np.testing.assert_allclose(again.potentials, s.potentials, atol=1e-12)


# ----------------------------------------------------------------- solver behaviour
def _diode_lattice(rows=5, cols=5, seed=0, backend="auto"):
    net = kn.topologies.lattice(rows, cols)
    m = net.n_edges
    rect = [e for e in range(2, m, 11) if e % 3]
    el = {D1: list(range(0, m, 3)), Rectifier(): rect,
          D2: [e for e in range(1, m, 7) if e % 3 and e not in rect]}
    c = kn.Circuit(net, ground=0, inputs=[net.n_nodes - 1, cols], outputs=[rows * cols // 2, 1],
                   elements=el, backend=backend)
    rng = np.random.default_rng(seed)
    return c, rng.uniform(0.5, 2.0, m), rng.uniform(-1, 1, (6, 2))


def test_dense_batched_and_sparse_paths_agree():
    c, g, x = _diode_lattice()
    dense = c.factorize(g)
    assert isinstance(dense, NonlinearFactorization) and dense.dense
    sparse = NonlinearFactorization(c, g, backend="splu")
    assert not sparse.dense
    a, b = dense.solve(x), sparse.solve(x)
    np.testing.assert_allclose(a.potentials, b.potentials, atol=1e-11)
    y = np.zeros((6, 2))
    ga = kn.loss_and_grad(c, g, x, y, factorization=dense)[1]
    gb = kn.loss_and_grad(c, g, x, y, factorization=sparse)[1]
    np.testing.assert_allclose(ga, gb, rtol=1e-9, atol=1e-13)
    pcg = NonlinearFactorization(c, g, backend="pcg", rtol=1e-10)
    np.testing.assert_allclose(pcg.solve(x).potentials, a.potentials, atol=1e-8)


def test_batch_equals_sample_by_sample_and_warm_start_saves_iterations():
    c, g, x = _diode_lattice()
    fac = c.factorize(g)
    batch = fac.solve(x)
    for s in range(x.shape[0]):
        np.testing.assert_allclose(fac.solve(x[s]).potentials[0], batch.potentials[s], atol=1e-12)
    warm = fac.solve(x * 1.001, warm_start=batch)
    cold = fac.solve(x * 1.001)
    np.testing.assert_allclose(warm.potentials, cold.potentials, atol=1e-11)
    assert warm.iterations.sum() < cold.iterations.sum()
    assert fac.solve(x, warm_start=batch).iterations.max() <= 1


def test_non_convergence_raises_naming_the_worst_node():
    c, g, x = _diode_lattice()
    fac = NonlinearFactorization(c, g, max_iter=1)
    with pytest.raises(ConvergenceError, match=r"did not converge in 1 Newton iterations: sample \d+, "
                                               r"worst node \d+, KCL residual"):
        fac.solve(x)


def test_linear_circuits_keep_the_linear_path_bit_for_bit():
    net = kn.topologies.lattice(6, 6)
    rng = np.random.default_rng(3)
    g = rng.uniform(0.5, 2, net.n_edges)
    x = rng.uniform(-1, 1, (40, 3))
    y = rng.normal(size=(40, 2))
    args = dict(ground=0, inputs=[35, 30, Edge(4)], outputs=[14, Pair(20, 21)])
    plain = kn.Circuit(net, **args)
    named = kn.Circuit(net, elements={Resistor(): [0, 1, 2]}, **args)
    assert named.is_linear
    fa, fb = plain.factorize(g), named.factorize(g)
    assert type(fa) is type(fb) is kn.CircuitFactorization
    np.testing.assert_array_equal(fa.solve(x).potentials, fb.solve(x).potentials)
    la, ga = plain.loss_and_grad(g, x, y)
    lb, gb = named.loss_and_grad(g, x, y)
    assert la == lb
    np.testing.assert_array_equal(ga, gb)


def test_gradient_options_per_sample_resistance_and_cross_entropy():
    c, g, x = _diode_lattice()
    y = np.array([0, 1, 1, 0, 1, 0])
    for loss in ("mse", kn.CrossEntropy(temperature=0.2)):
        yy = np.zeros((6, 2)) if loss == "mse" else y
        L, G, per = c.loss_and_grad(g, x, yy, loss=loss, per_sample=True)
        np.testing.assert_allclose(per.mean(axis=0), G, rtol=1e-13, atol=1e-16)
        _, Gr = c.loss_and_grad(g, x, yy, loss=loss, wrt="resistance")
        np.testing.assert_allclose(Gr, -(g ** 2) * G, rtol=1e-13, atol=1e-16)
        for e in (0, 5, 17):
            h = 1e-6 * g[e]
            gp, gm = g.copy(), g.copy()
            gp[e] += h
            gm[e] -= h
            fd = (c.loss_and_grad(gp, x, yy, loss=loss)[0] - c.loss_and_grad(gm, x, yy, loss=loss)[0]) / (2 * h)
            assert G[e] == pytest.approx(fd, rel=1e-5, abs=1e-9)
        full = c.loss_and_grad(g, x, yy, loss=loss, full=True)
        assert full.adjoint_potentials.shape == (6, c.network.n_nodes)
        np.testing.assert_allclose(full.grad, G)


def test_dense_stacks_are_solved_in_chunks(monkeypatch):
    import kirchnet.nonlinear as nl

    c, g, x = _diode_lattice()
    whole = c.factorize(g).solve(x)
    monkeypatch.setattr(nl, "DENSE_STACK_BYTES", 8 * c.n_free ** 2 * 2)  # two samples per chunk
    np.testing.assert_array_equal(c.factorize(g).solve(x).potentials, whole.potentials)


def test_solver_caches_do_not_keep_circuits_alive():
    import gc
    import weakref

    c, g, x = _diode_lattice()
    c.solve(g, x)
    ref = weakref.ref(c)
    del c
    gc.collect()
    assert ref() is None


# ----------------------------------------------------------------- loose ends of the core
def test_layered_drn_circuits_use_the_layered_solver_and_equal_the_general_one():
    """DRN.to_circuit circuits are solved by the DRN's block coordinate descent (no Newton
    iteration: the result passes the stopping rule as it is), equal to the general method."""
    from kirchnet.drn import deep_resistive_circuit

    drn, c, g = deep_resistive_circuit([5, 7, 6, 3], seed=2)
    x = drn.circuit_inputs(np.random.default_rng(1).normal(size=(12, 5)))
    auto = c.factorize(g).solve(x)
    general = c.factorize(g, method="general").solve(x)
    assert isinstance(auto, NonlinearState) and auto.iterations.max() == 0
    assert general.iterations.max() >= 1
    np.testing.assert_allclose(auto.potentials, general.potentials, rtol=0, atol=1e-10)
    np.testing.assert_allclose(auto.multipliers, general.multipliers, rtol=0, atol=1e-10)
    np.testing.assert_allclose(c.solve(g, x).outputs, general.outputs, rtol=0, atol=1e-10)
    y = np.zeros((12, 3))
    va, ga = kn.loss_and_grad(c, g, x, y)
    vg, gg = kn.loss_and_grad(c, g, x, y, factorization=c.factorize(g, method="general"))
    assert va == pytest.approx(vg, rel=1e-12) and np.abs(ga - gg).max() <= 1e-10 * np.abs(gg).max()
    # injected currents: the general method
    other = c.factorize(g).solve(x, currents=np.zeros(c.network.n_nodes))
    assert other.iterations.max() >= 1
    np.testing.assert_allclose(other.potentials, general.potentials, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="method must be 'auto'.*or 'general', got 'bcd'"):
        c.factorize(g, method="bcd")


def test_active_set_cycle_is_detected_and_names_the_switching_elements():
    """A repeated active set of a piecewise-linear iteration raises at once (not after max_iter)."""
    from kirchnet.nonlinear import _check_cycle

    class Asm:
        ci = np.array([7, 9])

    seen = [dict()]
    a0 = np.array([[True, False]]), np.array([[True, True, False, True]])
    a1 = np.array([[False, True]]), np.array([[True, False, False, True]])
    _check_cycle(seen, np.array([0]), *a0, 0, Asm)
    _check_cycle(seen, np.array([0]), *a1, 1, Asm)
    with pytest.raises(ConvergenceError, match=r"cycles \(sample 0: iteration 2 repeats the active set "
                                               r"of iteration 0\); elements switching along the cycle: "
                                               r"edge\(s\) 1, 7, 9"):
        _check_cycle(seen, np.array([0]), *a0, 2, Asm)


def test_active_set_cycle_raises_in_the_solver(monkeypatch):
    """The solver calls the cycle check: an iteration forced to alternate (every step solves
    garbage) is stopped on the repeat instead of running max_iter iterations."""
    import kirchnet.nonlinear as nl

    net = kn.topologies.lattice(5, 5)
    lin = kn.Circuit(net, ground=0, inputs=[24, 5], outputs=[12, 1],
                     elements={Rectifier(): list(range(1, net.n_edges, 3))})
    x = np.random.default_rng(0).uniform(-1, 1, (6, 2))
    assert lin.elements.piecewise_linear  # cycle detection on
    real = nl.TangentSystem.solve
    flip = {"k": 0}

    def alternating(self, rhs):
        flip["k"] += 1
        return real(self, rhs) * (1.0 if flip["k"] % 2 else -3.0)

    monkeypatch.setattr(nl.TangentSystem, "solve", alternating)
    with pytest.raises(ConvergenceError, match=r"active-set iteration cycles"):
        lin.factorize(np.ones(lin.network.n_edges), max_iter=1000).solve(x)


def test_tangent_solves_are_certified_refined_and_refused(monkeypatch):
    """The adjoint/compliance solves check their KKT residual: a slightly wrong solve is
    refined to the exact one, a wrong one raises IllConditionedError naming the place."""
    import kirchnet.nonlinear as nl

    c, g, x = _diode_lattice()
    fac = c.factorize(g)
    st_ = fac.solve(x)
    delta = np.random.default_rng(3).normal(size=(st_.batch_size, c.n_outputs))
    exact = fac.adjoint(st_, delta)
    real = nl.TangentSystem.solve
    calls = {"k": 0}

    def perturbed(self, rhs):
        calls["k"] += 1
        X = real(self, rhs)
        return X * (1 + 1e-6) if calls["k"] == 1 else X

    monkeypatch.setattr(nl.TangentSystem, "solve", perturbed)
    np.testing.assert_allclose(fac.adjoint(st_, delta), exact, rtol=1e-12, atol=1e-14)
    assert calls["k"] == 2  # one refinement step
    monkeypatch.setattr(nl.TangentSystem, "solve", lambda self, rhs: real(self, rhs) * 1.01)
    with pytest.raises(kn.IllConditionedError, match=r"tangent system at this equilibrium is not "
                                                      r"accurate: sample \d+, node \d+, residual"):
        fac.adjoint(st_, delta)


# ----------------------------------------------------------------- honest stopping rule (issue 12)
def _bench_diode_circuit(k, law, seed=0, batch=64, outputs=None):
    """benchmarks/bench_spice.py's ``diode_task`` on a k x k lattice with the law ``law``
    (and the output nodes ``outputs``)."""
    from _reference import _resistor_tree

    net = kn.topologies.lattice(k, k)
    n_inputs = max(4, net.n_nodes // 16 + 1)
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(net.n_edges), _resistor_tree(net))
    diodes = np.sort(rng.choice(rest, min(rest.size, net.n_edges // 3), replace=False))
    nodes = rng.choice(np.arange(1, net.n_nodes), size=n_inputs - 1, replace=False)
    c = kn.Circuit(net, ground=0, inputs=[*(int(v) for v in nodes), Edge(int(diodes[0]))],
                   outputs=outputs or [], elements={law: diodes})
    g = rng.uniform(0.5e-3, 2e-3, net.n_edges)
    g[diodes] = rng.uniform(0.5, 2.0, diodes.size)
    return c, g, rng.uniform(-2.0, 2.0, (batch, n_inputs))


def _giant_current_circuit():
    """Two diodes in series between clamped nodes 1 (+2 V) and 2 (-2 V) carry ~1e20 A
    through free node 3; a separate resistor-diode part (nodes 4..7) carries mA."""
    net = kn.Network(8, [[1, 3], [3, 2], [1, 4], [4, 5], [5, 0], [4, 6], [6, 0], [5, 7], [7, 0], [6, 7]])
    c = kn.Circuit(net, ground=0, inputs=[1, 2], outputs=[5], elements={Diode(): [0, 1, 5, 9]})
    g = np.array([1.0, 1.0, 1e-3, 2e-3, 1e-3, 1.0, 1.5e-3, 1e-3, 2e-3, 0.7])
    return c, g, np.array([[2.0, -2.0]])


def test_stopping_rule_is_per_node_next_to_a_giant_current():
    """A node carrying mA is checked to rtol of its own currents even when another node
    carries 1e20 A (the rule once floored every node's scale at 1e-12 of the largest):
    the exact equilibrium matches the reference, and a state 1e-3 V off at node 5 is not
    accepted as converged (max_iter=0: the warm start itself is tested)."""
    from _reference import _reference_potentials

    c, g, x = _giant_current_circuit()
    fac = c.factorize(g)
    state = fac.solve(x)
    assert np.abs(state.currents).max() > 1e19
    ref = _reference_potentials(c, g, x)
    np.testing.assert_allclose(state.potentials, ref, rtol=0, atol=1e-12)
    off = state.potentials.copy()
    off[0, 5] += 1e-3
    with pytest.raises(ConvergenceError, match=r"worst node 5"):
        c.factorize(g, max_iter=0).solve(x, warm_start=off)
    fac0 = c.factorize(g, max_iter=0)
    assert np.array_equal(fac0.solve(x, warm_start=state).potentials, state.potentials)


def _fuzz_circuit(seed):
    """A random graph of 8-200 nodes (random tree plus extra edges), diodes (one random law)
    on 10-90 % of the edges or of the extra edges, 1-5 input nodes and sometimes a series
    source on a diode, conductances over 5 decades, inputs in +-5 V, and in 30 % of them a
    current of up to 1 mA injected at one node (the robustness sweep of the closing
    notes). Returns ``(circuit, g, X, J or None)``."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 200))
    parents = (rng.random(n - 1) * np.arange(1, n)).astype(np.int64)
    edges = [(int(a), int(b)) for a, b in zip(parents, range(1, n))]
    extra = rng.choice(n, size=(int(rng.integers(n // 2, 3 * n)), 2))
    edges += [(int(a), int(b)) for a, b in extra if a != b]
    net = kn.Network(n, np.asarray(edges))
    frac = rng.uniform(0.1, 0.9)
    pool = np.arange(net.n_edges) if rng.random() < 0.5 else np.arange(n - 1, net.n_edges)
    diodes = np.sort(rng.choice(pool, max(1, int(frac * pool.size)), replace=False))
    law = Diode(10 ** rng.uniform(-16, -8), rng.uniform(1, 2))
    ins = [int(v) for v in rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(1, 6))), replace=False)]
    inputs = ins + ([Edge(int(diodes[0]))] if rng.random() < 0.5 else [])
    c = kn.Circuit(net, ground=0, inputs=inputs, elements={law: diodes})
    g = 10 ** rng.uniform(-4, 1, net.n_edges)
    X = rng.uniform(-5, 5, (8, len(inputs)))
    J = None
    if rng.random() < 0.3:  # sometimes a current injected at one node
        J = np.zeros((1, n))
        J[0, rng.integers(1, n)] = rng.uniform(-1e-3, 1e-3)
    return c, g, X, J


@pytest.mark.parametrize("seed", [72, 75, 82, 115, 22])
@pytest.mark.parametrize("jit", ["1", "0"])
def test_warm_start_from_another_operating_point(monkeypatch, seed, jit):
    """Warm starts from another sample's equilibrium on random resistor-diode graphs (the
    four of 120 in a sweep that failed compiled; numpy runs here too, also where numba is
    not installed): diodes start up to 7 V forward, where the
    tangent's weights span 40 decades and no Cholesky gives a usable step, so the first
    step linearizes them at most ``vcrit + 20 n Vt`` (Diode.max_start_voltage). Same
    equilibrium as the cold start, compiled and numpy. Seed 22 (a current drawn from one
    node) once returned 1e14 V at two nodes, compiled, which passed the KCL test (its
    rounding floor grows with the potentials): the maximum principle now counts nodes fed by
    injected currents as driven and refuses it (source stepping then solves it)."""
    monkeypatch.setenv("KIRCHNET_JIT", jit)
    c, g, X, J = _fuzz_circuit(seed)  # seed 22: 0.8 mA drawn from node 69
    fac = c.factorize(g)
    cold = fac.solve(X, currents=J)
    start = np.roll(cold.potentials, 1, axis=0)
    warm = fac.solve(X, currents=J, warm_start=start)
    vs = np.abs(cold.potentials).max()
    np.testing.assert_allclose(warm.potentials, cold.potentials, rtol=0, atol=1e-8 * vs)


def _kcl_ratio(state):
    """Worst ``|sum of currents|`` over the free nodes, from the state's currents, less the
    rounding of its edges' currents ``1e-12 sum g_e phi'(w_e) V`` (``V`` the voltage scale: a
    node carrying 1e-13 A through a 8 S resistor is known only to its rounding), relative to
    the node's ``sum |i_e|``."""
    c = state.circuit
    i = state.currents
    d = state.conductances * c.elements.dphi(state.resistor_voltages)
    V = np.abs(state.potentials).max(axis=1, keepdims=True)
    B = abs(c._B_free)
    excess = np.maximum(np.abs(np.asarray(c._B_free @ i.T)) - 1e-12 * np.asarray(B @ (d * V).T), 0.0)
    return float(np.max(excess / (np.asarray(B @ np.abs(i).T) + 1e-300)))


@pytest.mark.parametrize("jit", ["1", "0"])
def test_source_stepping_solves_what_the_direct_iteration_misses(monkeypatch, count_calls, jit):
    """A random graph of the robustness sweep (190 nodes, diodes on tree edges, +-5 V) where
    the direct iteration (limited, then damped Newton) does not converge for several
    samples: solve() falls back to source stepping (SPICE's), sample by sample, and returns
    the equilibrium (KCL recomputed from the returned currents, and the direct iteration
    warm-started from it comes back to it)."""
    import kirchnet.nonlinear as nl

    monkeypatch.setenv("KIRCHNET_JIT", jit)
    c, g, X, _ = _fuzz_circuit(71)
    fac = c.factorize(g)
    with pytest.raises(ConvergenceError, match="did not converge"):
        nl.equilibrium(fac, X)
    calls = count_calls(nl, "_source_stepping")
    state = fac.solve(X)
    assert calls["n"] == 1 and state.potentials.shape == (X.shape[0], c.network.n_nodes)
    assert _kcl_ratio(state) < 1e-6  # the settled rule's bound (RTOL 1e-10 where a step still moves)
    again = nl.equilibrium(fac, X, warm_start=state)
    vs = np.abs(state.potentials).max()
    np.testing.assert_allclose(again.potentials, state.potentials, rtol=0, atol=1e-9 * vs)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["injected", "drawn"])
def test_current_with_no_way_out_is_refused_naming_nodes_and_edges(sign):
    """1 mA injected into (drawn from) nodes 2-3 whose only way out (in) is diode 1 against
    its direction (at most g Is = 1e-14 A): no equilibrium at any drive. After the direct
    iteration fails, solve() names the nodes, the edge and both currents instead of trying
    source stepping. The sweep's seed 29 is such a circuit (0.95 mA, 1.7e-13 A)."""
    net = kn.Network(4, [[0, 1], [1, 2], [2, 3]])
    c = kn.Circuit(net, ground=0, inputs=[1], elements={Diode(): [1]})
    g = np.ones(3)
    if sign < 0:  # drawn from node 3: the diode must point out of {2, 3}
        c = kn.Circuit(kn.Network(4, [[0, 1], [2, 1], [2, 3]]), ground=0, inputs=[1], elements={Diode(): [1]})
    J = np.zeros(4)
    J[3] = sign * 1e-3
    with pytest.raises(BoundaryConditionError, match=r"node\(s\) 2, 3, which reach no driven node.*edge\(s\) 1 "
                                                     r"\(reverse-biased diodes, at most 1\.000e-14 A"):
        c.factorize(g).solve(np.array([0.5]), currents=J)
    J[3] = sign * 0.5e-14  # below the saturation current: an equilibrium exists
    state = c.factorize(g).solve(np.array([0.5]), currents=J)
    assert np.isfinite(state.potentials).all()


def test_source_stepping_gives_up_where_no_drive_scale_converges(monkeypatch):
    """Source stepping's last resort: every continuation step fails (the iteration is
    made to fail for lambda > 0): the step shrinks to SOURCE_STEP_MIN and the error says
    where it stopped, with the direct iteration's message first."""
    import kirchnet.nonlinear as nl

    c, g, x = _giant_current_circuit()
    real = nl.equilibrium

    def failing(fac, xx, *a, **k):
        if np.any(np.asarray(xx) != 0):
            raise ConvergenceError("nonlinear equilibrium did not converge (forced)")
        return real(fac, xx, *a, **k)

    monkeypatch.setattr(nl, "equilibrium", failing)
    with pytest.raises(ConvergenceError, match=r"\(forced\) Source stepping .* stuck at lambda = 0\b"):
        c.factorize(g).solve(x)


def test_final_check_recomputes_the_returned_state(monkeypatch):
    """The returned state is certified from its own potentials: an iterate whose
    bookkeeping says converged but whose potentials are wrong raises ConvergenceError."""
    import kirchnet.nonlinear as nl

    c, g, x = _giant_current_circuit()
    monkeypatch.setenv("KIRCHNET_JIT", "0")  # the Python iteration (the compiled ones test inside)
    real = nl._kcl_test
    calls = {"n": 0}

    def lying(fac, uu, *args):
        calls["n"] += 1
        out = real(fac, uu, *args)
        if calls["n"] == 1:  # the loop's first test says 'converged' at the cold start
            return (*out[:5], np.ones_like(out[5]))
        return out

    monkeypatch.setattr(nl, "_kcl_test", lying)
    with pytest.raises(ConvergenceError, match=r"final check: sample 0, worst node"):
        nl.equilibrium(c.factorize(g), x)  # the iteration itself (solve() would then step the sources)


@pytest.mark.parametrize("limiting", [True, False], ids=["limited-newton", "damped-newton"])
@pytest.mark.parametrize("k, seed, samples, law, backend", [
    (6, 1, [40, 43], Diode(), "splu"),
    # bench_spice lattice-100 sample 61 (CHOLMOD where installed), CODATA 2018 thermal voltage
    (8, 0, [61], Diode(thermal_voltage=1.380649e-23 * 300.15 / 1.602176634e-19), "auto")])
def test_non_descent_newton_step_does_not_diverge(k, seed, samples, law, backend, limiting):
    """Regression: deep-reverse diodes' g phi'(w) underflow, the step's factorization pivots
    on cancellation noise and the Newton step is no descent direction; the line search took
    it and the iteration diverged (residuals of 1e18..1e66 A). Now the step's tangent weights
    are floored at 1e-2 g phi'(0) and a non-descent step is replaced by a diagonally scaled
    gradient step: these samples converge to the reference (each fix alone leaves some of
    them failing)."""
    from _reference import _reference_potentials

    c, g, X = _bench_diode_circuit(k, law, seed=seed)
    x = X[samples]
    state = c.factorize(g, backend=backend, limiting=limiting).solve(x)
    np.testing.assert_allclose(state.potentials, _reference_potentials(c, g, x), rtol=0, atol=1e-9)


def test_steep_diodes_are_solved_or_refused():
    """Diode(1e-12, N=0.01) (nVt = 0.26 mV) from a cold start once returned potentials of
    1e13 V 'as converged': the result is now either the reference equilibrium or a
    ConvergenceError, never such numbers (maximum principle of passive circuits)."""
    from _reference import _resistor_tree

    net = kn.topologies.random_connected(12, m=30, seed=2)
    rng = np.random.default_rng(2)
    rest = np.setdiff1d(np.arange(net.n_edges), _resistor_tree(net))
    for N in (0.01, 0.001):
        c = kn.Circuit(net, ground=0, inputs=[1, 2], outputs=[3],
                       elements={Diode(1e-12, N): rest[:9]})
        g = rng.uniform(0.5, 2.0, net.n_edges)
        x = np.array([[1.0, -0.7]])
        try:
            state = c.factorize(g).solve(x)
        except ConvergenceError:
            continue
        assert np.abs(state.potentials).max() <= 1.0 + 1e-9
        # KCL recomputed here from the law (the reference's Newton overflows for such laws)
        u = state.potentials[0]
        w = u[net.tails] - u[net.heads]
        i = g * w
        i[rest[:9]] = g[rest[:9]] * Diode(1e-12, N).phi(w[rest[:9]])
        kcl, scale = np.zeros(net.n_nodes), np.zeros(net.n_nodes)
        np.add.at(kcl, net.tails, i), np.add.at(kcl, net.heads, -i)
        np.add.at(scale, net.tails, np.abs(i)), np.add.at(scale, net.heads, np.abs(i))
        free = c.free_nodes
        assert np.all(np.abs(kcl[free]) <= 1e-9 * scale[free] + 1e-15)


def test_steep_exported_ideal_diodes_are_solved_or_refused():
    """The netlist of ideal diodes and rectifiers, read back as steep diodes
    (IS=1e-12, N=0.01), once returned potentials of -1.9e14 V from a cold start: now the
    equilibrium (within the inputs' range, KCL to 1e-9) or ConvergenceError."""
    from _reference import _resistor_tree

    from kirchnet.spice import from_netlist, to_netlist

    net = kn.topologies.random_connected(12, m=30, seed=2)
    rng = np.random.default_rng(2)
    rest = np.setdiff1d(np.arange(net.n_edges), _resistor_tree(net))
    inner = rest[np.all(net.edges[rest] > 2, axis=1)]
    c = kn.Circuit(net, ground=0, inputs=[1, 2], outputs=[3],
                   elements={IdealDiode(): inner[:3], Rectifier(): np.setdiff1d(rest, inner[:3])[:6]})
    g = rng.uniform(0.5, 2.0, net.n_edges)
    sc = from_netlist(to_netlist(c, g, np.array([1.0, -0.7]), ideal_model=(1e-12, 0.01)))
    try:
        state = sc.solve()
    except ConvergenceError as exc:
        assert "final check" in str(exc) or "did not converge" in str(exc)
        return
    u = state.potentials[0]
    assert np.abs(u).max() <= 1.0 + 1e-9
    cn = sc.circuit
    w = u[cn.network.tails] - u[cn.network.heads]
    i = sc.conductances * cn.elements.phi(w[None])[0]
    kcl, scale = np.zeros(cn.network.n_nodes), np.zeros(cn.network.n_nodes)
    np.add.at(kcl, cn.network.tails, i), np.add.at(kcl, cn.network.heads, -i)
    np.add.at(scale, cn.network.tails, np.abs(i)), np.add.at(scale, cn.network.heads, np.abs(i))
    assert np.all(np.abs(kcl[cn.free_nodes]) <= 1e-9 * scale[cn.free_nodes] + 1e-15)


# ----------------------------------------------------------------- limited Newton, chord steps
@pytest.mark.parametrize("backend", ["auto", "splu"])
def test_limited_and_damped_newton_reach_the_same_equilibrium(backend):
    """The SPICE-style iteration (default for smooth laws) and the damped one agree with the
    long-double reference on the resistor-diode networks of bench_spice, and the limited one
    needs fewer iterations there (its purpose)."""
    from _reference import _reference_potentials

    c, g, X = _bench_diode_circuit(8, Diode(), seed=3, batch=12)
    limited = c.factorize(g, backend=backend).solve(X)
    damped = c.factorize(g, backend=backend, limiting=False).solve(X)
    ref = _reference_potentials(c, g, X)
    for state in (limited, damped):
        np.testing.assert_allclose(state.potentials, ref, rtol=0, atol=1e-9)
    assert limited.iterations.mean() < damped.iterations.mean()


@pytest.mark.parametrize("jit", ["1", "0"], ids=["compiled", "python"])
def test_limited_newton_hands_unconverged_samples_to_the_damped_iteration(monkeypatch, jit):
    """A sample that stalls in the limited iteration (compiled or Python; port-reduced, on
    the full network or in lanes), or whose tangent is singular there, goes on with the
    damped iteration from its best iterate: same equilibrium."""
    import kirchnet.nonlinear as nl

    monkeypatch.setenv("KIRCHNET_JIT", jit)
    c, g, x = _bench_diode_circuit(6, Diode(), seed=1, batch=5)
    expected = c.factorize(g).solve(x).potentials
    monkeypatch.setattr(nl, "LIMITED_STALL", -1)  # every sample leaves after its first test
    for ports, lanes in ((True, 4), (False, 10 ** 9), ("auto", 4)):
        monkeypatch.setattr(nl, "LANES_MIN_BATCH", lanes)
        assert nl._lanes(c.factorize(g, port_reduction=ports), x.shape[0]) == (_jit_nl.enabled() and ports == "auto")
        handed = c.factorize(g, port_reduction=ports).solve(x)
        np.testing.assert_allclose(handed.potentials, expected, rtol=0, atol=1e-10)
        assert np.all(handed.iterations > 1)  # the damped iteration's steps
    monkeypatch.undo()
    if jit == "1":
        return
    monkeypatch.setenv("KIRCHNET_JIT", "0")  # the Python iteration: a singular tangent

    real = nl.TangentSystem.solve
    calls = {"n": 0}

    def singular_once(self, rhs):
        calls["n"] += 1
        if calls["n"] == 2:  # the limited iteration's second step
            raise nl._Singular()
        return real(self, rhs)

    monkeypatch.setattr(nl.TangentSystem, "solve", singular_once)
    np.testing.assert_allclose(c.factorize(g).solve(x).potentials, expected, rtol=0, atol=1e-10)
    assert calls["n"] > 2


def test_warm_start_takes_chord_steps_on_one_factorization(no_lanes, monkeypatch):
    """Sparse backends reuse a sample's tangent factorization while no tangent weight
    drifted more than CHORD_DRIFT: a warm start after a 1 % input change takes several
    steps on fewer factorizations, to the same equilibrium as a cold solve."""
    import kirchnet.nonlinear as nl

    monkeypatch.setenv("KIRCHNET_JIT", "0")  # the numpy iteration (chord steps are its own)
    c, g, X = _bench_diode_circuit(8, Diode(), seed=0, batch=4)
    fac = c.factorize(g, backend="splu", port_reduction=False)
    start = fac.solve(X)
    real = nl.TangentSystem._factor_one
    count = {"n": 0}

    def counting(self, k):
        count["n"] += 1
        return real(self, k)

    monkeypatch.setattr(nl.TangentSystem, "_factor_one", counting)
    warm = fac.solve(X * 1.01, warm_start=start)
    assert count["n"] < warm.iterations.sum()
    monkeypatch.undo()
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    cold = fac.solve(X * 1.01)
    np.testing.assert_allclose(warm.potentials, cold.potentials, rtol=0, atol=1e-11)
    monkeypatch.setattr(nl, "CHORD_DRIFT", -1.0)  # no chord steps: a factorization per step
    count["n"] = 0
    monkeypatch.setattr(nl.TangentSystem, "_factor_one", counting)
    exact = fac.solve(X * 1.01, warm_start=start)
    # and one per sample for the final error estimate (which reuses the last one otherwise)
    assert count["n"] == exact.iterations.sum() + X.shape[0]
    np.testing.assert_allclose(exact.potentials, cold.potentials, rtol=0, atol=1e-11)


def test_a_newton_step_at_the_rounding_level_settles_the_stopping_rule():
    """_settled: a full Newton step below rtol of the voltage scale; _kcl_test then accepts a
    residual ratio up to SETTLED_RTOL (potentials determined to rounding, residual floor of
    stiff clusters), but never more."""
    import kirchnet.nonlinear as nl

    c, g, x = _bench_diode_circuit(6, Diode(), seed=1, batch=3)
    fac = c.factorize(g)
    state = fac.solve(x)
    u = state.potentials.copy()
    s = np.zeros((3, c.network.n_edges)) if state.sources is None else state.sources
    s = np.broadcast_to(s, (3, c.network.n_edges))
    none, J = np.zeros((3, 0)), np.zeros((3, c.n_free))
    # the free node carrying the largest currents (a node between reverse diodes carries ~Is,
    # and its ratio jumps to 1 at once)
    v = c.free_nodes[np.argmax(np.asarray(abs(c._B_free) @ np.abs(state.currents).T).min(axis=1))]

    def off_by(delta):
        off = u.copy()
        off[:, v] += delta  # (3,): per sample
        return off, nl._kcl_test(fac, off, s, none, J, none)[4].max(axis=1)

    _, rel = off_by(1e-12)
    for target, settles in ((1e-8, True), (1e-4, False)):  # worst KCL ratios (linear in delta)
        off, rel_off = off_by(1e-12 * target / rel)
        *_, ok = nl._kcl_test(fac, off, s, none, J, none)
        assert not ok.any() and rel_off.max() > fac.rtol
        *_, ok_settled = nl._kcl_test(fac, off, s, none, J, none, np.ones(3, dtype=bool))
        assert ok_settled.all() == settles
    vs = np.abs(u).max(axis=1) + np.abs(s).max(axis=1)
    du = np.zeros((3, c.n_free))
    du[:, 0] = [0.5e-10 * vs[0], 2e-10 * vs[1], 0.0]
    assert nl._settled(du, u, s, 1e-10).tolist() == [True, False, True]


def _leaky_cluster_circuit(seed=24):
    """A 10x10 lattice, 60 % of the edges diodes (Is = 1e-16 A, N = 1.6) in random
    orientation, conductances 1e-4..10: clusters of nodes joined by large conductances are
    held only by the tiny currents of reverse-biased diodes."""
    rng = np.random.default_rng(seed)
    net = kn.topologies.lattice(10, 10)
    m = net.n_edges
    flip = rng.random(m) < 0.5
    net = kn.Network(net.n_nodes, np.where(flip[:, None], net.edges[:, ::-1], net.edges))
    d = np.flatnonzero(rng.random(m) < 0.6)
    c = kn.Circuit(net, ground=0, inputs=[99, 45, 9], outputs=[55],
                   elements={Diode(saturation_current=1e-16, emission=1.6): d})
    return c, 10 ** rng.uniform(-4, 1, m), rng.uniform(-5, 5, (8, 3))


def test_false_convergence_of_leaky_clusters_is_polished_or_refused(monkeypatch):
    """The per-node stopping rule passes where the rounding of a cluster's large internal
    currents hides the imbalance of the tiny diode currents that fix its potential (states
    off by 8 mV). The Newton error estimate (a signed Newton step at the returned state)
    sees it: such samples take more Newton steps until the estimate is below CERTIFY_RTOL of
    the voltage scale (agreeing with the long-double reference), or raise
    IllConditionedError when they may not."""
    import kirchnet.nonlinear as nl
    from _reference import _reference_potentials
    from kirchnet.errors import IllConditionedError

    c, g, X = _leaky_cluster_circuit()
    state = c.factorize(g).solve(X)
    ref = _reference_potentials(c, g, X)
    vscale = np.abs(ref).max(axis=1, keepdims=True)
    assert np.all(np.abs(state.potentials - ref) <= 2e-8 * vscale)
    monkeypatch.setattr(nl, "POLISH_STEPS", 0)
    with pytest.raises(IllConditionedError, match=r"determined only to \+-.* V .*CERTIFY_RTOL"):
        c.factorize(g).solve(X)


def _diode_lattice_every_third(side=10, seed=1, batch=16):
    """benchmarks/bench_nonlinear.py's circuit: a side x side lattice, every third edge an
    ngspice-default diode in random orientation (area 1..10), resistors 0.5..2 S, inputs of
    1-2 V of either sign at three corners."""
    net = kn.topologies.lattice(side, side)
    rng = np.random.default_rng(seed)
    m = net.n_edges
    flip = rng.random(m) < 0.5
    net = kn.Network(net.n_nodes, np.where(flip[:, None], net.edges[:, ::-1], net.edges))
    n = net.n_nodes
    ins = [n - 1, n - side, side - 1]
    c = kn.Circuit(net, ground=0, inputs=ins, outputs=[n // 2 + side // 2, n // 3],
                   elements={Diode(): np.arange(0, m, 3)})
    g = rng.uniform(0.5, 2.0, m)
    g[::3] = rng.uniform(1.0, 10.0, g[::3].size)
    x = rng.uniform(1.0, 2.0, (batch, len(ins))) * rng.choice([-1.0, 1.0], (batch, len(ins)))
    return c, g, x


@pytest.mark.parametrize("limiting", [True, False], ids=["limited-newton", "damped-newton"])
def test_diode_lattice_clusters_are_solved_to_the_reference(monkeypatch, limiting):
    """Regression: on the diode lattices of bench_nonlinear, clusters reached only through
    reverse-biased diodes passed the per-node stopping rule 3-8 mV off the long-double
    reference (both Newton iterations). With Newton's error estimate such samples go back to
    the damped iteration until every potential is known to CERTIFY_RTOL of the voltage scale."""
    import kirchnet.nonlinear as nl
    from _reference import _reference_potentials

    c, g, x = _diode_lattice_every_third()
    ref = _reference_potentials(c, g, x)
    vscale = np.abs(ref).max(axis=1, keepdims=True)
    state = c.factorize(g, limiting=limiting).solve(x)
    assert np.all(np.abs(state.potentials - ref) <= 5e-8 * vscale)
    monkeypatch.setattr(nl, "CERTIFY_RTOL", np.inf)  # the per-node rule alone
    unchecked = c.factorize(g, limiting=limiting).solve(x)
    assert np.abs(unchecked.potentials - ref).max() > 1e-4


@pytest.mark.skipif(not _jit_nl.AVAILABLE, reason="the compiled sparse iteration needs numba")
@pytest.mark.parametrize("backend", backend_params(["cholmod", "splu"]))
@pytest.mark.parametrize("case", ["lattice", 3, 17, 40, 22])
def test_sparse_compiled_iteration_takes_the_numpy_iterations_steps(no_lanes, monkeypatch, count_calls, backend, case):
    """On sparse backends the limited iteration's edge work is compiled (_sparse_newton): the
    same iterations, chord steps and equilibrium as the numpy iteration (_limited_newton), on
    the spice benchmark's lattice and on random graphs of the robustness sweep (mixed laws,
    series sources, injected currents). The plan is forced to the sparse steps (small
    networks otherwise take the envelope or Woodbury kernels)."""
    import kirchnet.nonlinear as nl

    monkeypatch.setattr(nl, "_sparse_step_flops", lambda circuit, backend: 0.0)
    if case == "lattice":
        c, g, X = _bench_diode_circuit(7, Diode(), seed=3, batch=6)
        J = None
    else:
        c, g, X, J = _fuzz_circuit(case)
        X = X[:6]
        J = None if J is None else J[:6] if J.ndim == 2 and J.shape[0] > 1 else J
    if nl._assembly(c).kernel is None:
        pytest.skip("a law the compiled kernels do not take")
    fac = c.factorize(g, backend=backend, port_reduction=False)
    assert fac.plan[0] == "numpy" and not fac.dense
    states, factorized = {}, {}
    for jit in ("0", "1"):
        monkeypatch.setenv("KIRCHNET_JIT", jit)
        calls = count_calls(nl, "_sparse_newton")
        factored = count_calls(nl.TangentSystem, "_factor_one")
        fac = c.factorize(g, backend=backend, port_reduction=False)  # its own kept first tangent
        states[jit] = fac.solve(X, currents=J)
        assert calls["n"] == (1 if jit == "1" else 0)
        factorized[jit] = factored["n"]
    if case != 22:  # seed 22 (1e14 V once, see above) runs 58-65 iterations: rounding changes the path
        np.testing.assert_array_equal(states["1"].iterations, states["0"].iterations)
        assert factorized["1"] == factorized["0"]
    vs = np.abs(states["0"].potentials).max()
    np.testing.assert_allclose(states["1"].potentials, states["0"].potentials, rtol=0, atol=1e-11 * vs)


@pytest.mark.parametrize("backend", [None, "splu"], ids=["dense", "sparse"])
def test_the_error_estimate_solves_only_the_samples_it_was_not_given(monkeypatch, backend):
    """The compiled iterations hand Newton's error estimate |H^-1 r| of the samples they
    certified (NaN for those handed to the damped iteration): only the missing samples' tangent
    systems are solved, to the estimate a full solve gives them."""
    import kirchnet.nonlinear as nl

    c, g, X = _bench_diode_circuit(5, Diode(), seed=2, batch=5)
    fac = c.factorize(g, backend=backend)
    state = fac.solve(X)
    b, nf = X.shape[0], c.n_free
    u, s = state.potentials, c.edge_sources(c.driver_values(X, None)[1])  # (a series source on a diode)
    r, weights = nl._final_checks(fac, u, s, np.zeros((b, 0)), np.zeros((b, nf)), np.zeros(b, bool), True)
    full, vs, _ = nl._newton_estimate(fac, u, s, r, weights)
    rows = []
    real = nl.TangentSystem.__init__

    def init(self, circuit, weights, *args, **kw):
        rows.append(weights.shape[0])
        real(self, circuit, weights, *args, **kw)

    monkeypatch.setattr(nl.TangentSystem, "__init__", init)
    given = np.full((b, nf), 7.0)
    given[2] = np.nan
    bound, vs2, _ = nl._newton_estimate(fac, u, s, r, weights, step=given)
    assert rows == [1]  # the one sample without a finite estimate
    np.testing.assert_allclose(bound[2], full[2], rtol=1e-12)
    rounding = np.delete(bound, 2, axis=0) - 7.0  # the given ones: as given, plus one edge's rounding
    assert np.all((rounding >= 0) & (rounding < 1e-9))
    np.testing.assert_array_equal(vs2, vs)


@pytest.mark.skipif(not _jit_nl.AVAILABLE, reason="the sparse iteration's kernels need numba")
def test_certification_takes_newton_steps_before_the_damped_iteration(no_lanes, monkeypatch, count_calls):
    """Where the stopping rule passed but Newton's error estimate is not yet within
    CERTIFY_RTOL (clusters held by reverse diodes on the 40 x 40 diode lattice), the
    estimate's own Newton step is taken (NEWTON_POLISH rounds) before the damped iteration:
    the same equilibrium with fewer tangent factorizations than the damped iteration's."""
    import kirchnet.nonlinear as nl

    monkeypatch.setattr(nl, "_sparse_step_flops", lambda circuit, backend: 0.0)  # the sparse steps
    c, g, X = _diode_lattice_every_third(40, seed=3, batch=8)
    fac = c.factorize(g, backend="splu", port_reduction=False)
    out = {}
    for rounds in (0, 2):
        monkeypatch.setattr(nl, "NEWTON_POLISH", rounds)
        checks = count_calls(nl, "_final_checks")
        factored = count_calls(nl.TangentSystem, "_factor_one")
        states = [fac.solve(X[k:k + 1]) for k in range(X.shape[0])]
        out[rounds] = (np.concatenate([st.potentials for st in states]), checks["n"], factored["n"])
    assert out[0][1] > X.shape[0]  # some samples needed certification rounds
    assert out[2][2] < out[0][2]
    vs = np.abs(out[0][0]).max()
    np.testing.assert_allclose(out[2][0], out[0][0], rtol=0, atol=1e-8 * vs)


@pytest.mark.skipif(not _jit_nl.AVAILABLE, reason="the sparse iteration's kernels need numba")
def test_after_a_certification_newton_step_the_stopping_rule_is_compiled(no_lanes, monkeypatch, count_calls):
    """After the estimate's Newton step the stopping rule is checked by the compiled test
    (the iterations' own evaluate): on the 40 x 40 diode lattice no numpy test runs at all
    (it would only where the compiled one fails: its quantities are the damped step's), and
    the final check takes that test's result (one compiled test per round, not two).
    Without it (numpy tests only), the same iterations and equilibria."""
    import kirchnet.nonlinear as nl

    monkeypatch.setattr(nl, "_sparse_step_flops", lambda circuit, backend: 0.0)  # the sparse steps
    c, g, X = _diode_lattice_every_third(40, seed=3, batch=8)
    fac = c.factorize(g, backend="splu", port_reduction=False)
    out = {}
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(nl, "_compiled_kcl_test", lambda *args: (None, None, None))
        checks = count_calls(nl, "_final_checks")
        numpy_tests = count_calls(nl, "_kcl_test")
        compiled_tests = count_calls(nl, "_compiled_kcl_test")
        states = [fac.solve(X[k:k + 1]) for k in range(X.shape[0])]
        out[compiled] = (np.concatenate([st.potentials for st in states]),
                         np.concatenate([st.iterations for st in states]), checks["n"], numpy_tests["n"])
        if compiled:
            assert compiled_tests["n"] == checks["n"]
    assert out[True][2] > X.shape[0]  # some samples took certification rounds
    assert out[True][3] == 0 and out[False][3] > out[False][2]  # numpy: each final check and more
    np.testing.assert_array_equal(out[True][1], out[False][1])
    np.testing.assert_allclose(out[True][0], out[False][0], rtol=0, atol=1e-12 * np.abs(out[False][0]).max())


@needs_cholmod
def test_refreshed_factorization_is_a_chord_a_low_rank_update_or_new(monkeypatch):
    """_refreshed keeps the factorization while no weight drifted beyond CHORD_DRIFT, updates
    it (CHOLMOD up/downdate) over a few drifted weights, which then solves like a fresh
    factorization of those weights, also where a weight switches by more than
    LOWRANK_RANGE but stays within LOWRANK_DOMINANCE of its nodes' other conductance (a
    diode switching between reverse and forward, both ways), and factorizes anew where many
    drifted or a switching weight dominates its nodes (or the downdate fails)."""
    import kirchnet.nonlinear as nl
    from kirchnet.errors import SolverError

    c, g, _ = _diode_lattice_every_third(12, seed=0)
    rng = np.random.default_rng(0)
    d0 = rng.uniform(0.5, 2.0, g.size)

    def system(d):
        return nl.TangentSystem(c, d[None], np.zeros((1, 0), dtype=bool), False, "cholmod")

    f0 = system(d0)._factor_one(0)
    b = rng.normal(size=c.n_free)
    small = d0 * (1 + 0.05 * rng.uniform(-1, 1, g.size))  # every weight within CHORD_DRIFT
    f, w, chord = nl._refreshed(system(small), 0, f0, d0)
    assert f is f0 and w is d0 and chord

    few = d0.copy()
    few[[3, 40, 77]] *= [3.0, 0.2, 50.0]  # three weights beyond CHORD_DRIFT
    f, w, chord = nl._refreshed(system(few), 0, f0, d0)
    assert f is not f0 and chord and np.array_equal(w, few)
    exact = system(few)._factor_one(0).solve(b)
    np.testing.assert_allclose(f.solve(b), exact, rtol=1e-9, atol=1e-12 * np.abs(exact).max())

    for switched in (d0 * np.where(np.arange(g.size) == 5, 1e4, 1.0),  # up by more than LOWRANK_RANGE
                     d0 * np.where(np.arange(g.size) == 5, 1e-20, 1.0)):  # down to a leakage
        sw_start = d0 if switched[5] > d0[5] else d0 * np.where(np.arange(g.size) == 5, 1e3, 1.0)
        f_sw = system(sw_start)._factor_one(0)
        f, w, chord = nl._refreshed(system(switched), 0, f_sw, sw_start)
        assert chord and f is not f_sw and np.array_equal(w, switched)
        exact = system(switched)._factor_one(0).solve(b)
        np.testing.assert_allclose(f.solve(b), exact, rtol=1e-9, atol=1e-12 * np.abs(exact).max())

    for d in (d0 * rng.uniform(1.5, 2.0, g.size),  # all drifted
              np.where(np.arange(g.size) == 5, d0 * 1e9, d0)):  # one dominating its nodes 1e9 to 1
        f, w, chord = nl._refreshed(system(d), 0, f0, d0)
        assert not chord and np.array_equal(w, d)

    monkeypatch.setattr(type(f0), "updated", lambda self, *a: (_ for _ in ()).throw(SolverError("lost")))
    f, w, chord = nl._refreshed(system(few), 0, f0, d0)
    assert not chord and np.array_equal(w, few)


@needs_cholmod
def test_warm_start_from_a_state_reuses_its_tangent_factorizations(no_lanes, monkeypatch, count_calls):
    """A state keeps its last CHOLMOD tangent factorizations (while it lives, within
    WARM_FACTOR_BYTES): a warm start from it begins with chord steps or low-rank updates on
    them, so it factorizes less than a warm start from the same potentials, and reaches the
    same equilibrium. Pickled factorizations drop them; a collected state frees them."""
    import gc
    import pickle

    import kirchnet.nonlinear as nl

    monkeypatch.setattr(nl, "_sparse_step_flops", lambda circuit, backend: 0.0)  # the sparse steps
    c, g, X = _diode_lattice_every_third(30, seed=2, batch=4)
    fac = c.factorize(g, backend="cholmod", port_reduction=False)
    state = fac.solve(X)
    assert fac._tangents.get(state) is not None
    counts = {}
    for start in ("state", "potentials"):
        factored = count_calls(nl.TangentSystem, "_factor_one")
        warm = fac.solve(X * 1.01, warm_start=state if start == "state" else state.potentials)
        counts[start] = (factored["n"], warm.potentials)
    assert counts["state"][0] < counts["potentials"][0]
    vs = np.abs(counts["potentials"][1]).max()
    np.testing.assert_allclose(counts["state"][1], counts["potentials"][1], rtol=0, atol=1e-9 * vs)
    again = pickle.loads(pickle.dumps(fac))
    assert len(again._tangents) == 0
    np.testing.assert_allclose(again.solve(X).potentials, state.potentials, rtol=0, atol=1e-9 * vs)
    monkeypatch.setattr(nl, "WARM_FACTOR_BYTES", 0)  # over the memory bound: nothing kept
    assert fac._tangents.get(fac.solve(X)) is None
    n = len(fac._tangents)
    del state, warm
    gc.collect()
    assert len(fac._tangents) < n


@pytest.mark.skipif(not _jit_nl.AVAILABLE, reason="the compiled final check needs numba")
def test_compiled_final_check_agrees_with_the_numpy_test(monkeypatch):
    """_final_checks recomputes the returned state compiled where it can (resistors and
    diodes): the same residuals and tangent weights as the numpy _kcl_test at an
    equilibrium, and the same refusal, naming the same sample and node, at a state one free
    node of which is off by a millivolt."""
    import kirchnet.nonlinear as nl

    c, g, X = _bench_diode_circuit(7, Diode(), seed=3, batch=6)
    fac = c.factorize(g)
    state = fac.solve(X)
    b, m = X.shape[0], c.network.n_edges
    s = np.broadcast_to(state.sources if state.sources is not None else np.zeros(m), (b, m))
    args = (np.zeros((b, 0)), np.zeros((b, c.n_free)), np.zeros(b, dtype=bool))
    out, errors = {}, {}
    off = state.potentials.copy()
    off[4, c.free_nodes[17]] += 1e-3
    for jit in ("0", "1"):
        monkeypatch.setenv("KIRCHNET_JIT", jit)
        out[jit] = nl._final_checks(fac, state.potentials, s, *args, passive=True)
        with pytest.raises(ConvergenceError, match=r"final check: sample 4, worst node") as info:
            nl._final_checks(fac, off, s, *args, passive=True)
        errors[jit] = str(info.value)
    # residuals at an equilibrium are rounding noise: equal to the rounding of the currents
    np.testing.assert_allclose(out["1"][0], out["0"][0], rtol=0, atol=nl.ROUNDING * np.abs(state.currents).max())
    np.testing.assert_allclose(out["1"][1], out["0"][1], rtol=1e-12)  # tangent weights
    assert errors["1"] == errors["0"]


@pytest.mark.skipif(not _jit_nl.AVAILABLE, reason="compared with the compiled iteration")
def test_dense_steps_of_leakage_held_clusters_are_deflated_after_a_failure(monkeypatch, count_calls):
    """The sweep's seed 102 on the numpy (dense LAPACK) path: a cluster held only by 6e-17 S
    diodes, whose common mode LAPACK's pivots resolve to cancellation noise; the plain
    iteration fails, and before source stepping the batch is solved again with those
    samples' dense steps by the subtraction-free elimination: the compiled iteration's equilibrium
    (both certified to 1e-8 of the voltage scale)."""
    import kirchnet.nonlinear as nl

    c, g, X, J = _fuzz_circuit(102)
    monkeypatch.setenv("KIRCHNET_JIT", "1")
    ref = c.factorize(g).solve(X, currents=J).potentials
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    fac = c.factorize(g)
    with pytest.raises(ConvergenceError):
        nl.equilibrium(fac, X, currents=J)
    stepping = count_calls(nl, "_source_stepping")
    state = fac.solve(X, currents=J)
    assert stepping["n"] == 0
    np.testing.assert_allclose(state.potentials, ref, rtol=0, atol=2e-8 * np.abs(ref).max())
    # warm-started from another sample's equilibrium: source stepping, its steps deflated too
    warm = fac.solve(X, currents=J, warm_start=np.roll(state.potentials, 1, axis=0))
    np.testing.assert_allclose(warm.potentials, ref, rtol=0, atol=2e-8 * np.abs(ref).max())


@needs_cholmod
def test_cold_starts_share_the_first_tangent(no_lanes, monkeypatch, count_calls):
    """A cold start's first tangent differs between samples only at the diodes touching driven
    nodes: the factorization keeps it (_cold_tangent) and later cold starts take their first
    step as a chord step or a low-rank update on it, to the same equilibria as fresh
    factorizations, with fewer factorizations."""
    import pickle

    import kirchnet.nonlinear as nl

    monkeypatch.setattr(nl, "_sparse_step_flops", lambda circuit, backend: 0.0)  # the sparse steps
    c, g, X = _diode_lattice_every_third(30, seed=2, batch=5)
    counts, states = {}, {}
    for shared in (True, False):
        factored = count_calls(nl.TangentSystem, "_factor_one")
        fac = c.factorize(g, backend="cholmod", port_reduction=False)
        out = []
        for k in range(X.shape[0]):
            if not shared:
                fac = c.factorize(g, backend="cholmod", port_reduction=False)
            out.append(fac.solve(X[k:k + 1]).potentials)
        counts[shared], states[shared] = factored["n"], np.concatenate(out)
    assert counts[True] < counts[False]
    vs = np.abs(states[False]).max()
    np.testing.assert_allclose(states[True], states[False], rtol=0, atol=1e-9 * vs)
    assert fac._cold is not None and pickle.loads(pickle.dumps(fac))._cold is None


@pytest.mark.parametrize("jit", ["1", "0"])
@pytest.mark.parametrize("batch", [1, 9])
def test_a_diode_circuit_with_every_node_driven(monkeypatch, jit, batch):
    """No free node (every node a driver or the ground): the equilibrium is the inputs, the
    diodes' currents follow from their drops, the gradient is defined (it once failed
    building the compiled kernels' orderings of zero unknowns)."""
    monkeypatch.setenv("KIRCHNET_JIT", jit)
    net = kn.Network(3, [[0, 1], [1, 2], [0, 2]])
    c = kn.Circuit(net, ground=0, inputs=[1, 2], outputs=[Pair(1, 2)], elements={Diode(): [0, 1]})
    g = np.array([1.0, 2.0, 1e-3])
    X = np.random.default_rng(0).uniform(-1, 1, (batch, 2))
    state = c.factorize(g).solve(X)
    np.testing.assert_array_equal(state.potentials, np.column_stack([np.zeros(batch), X]))
    w = np.column_stack([-X[:, 0], X[:, 0] - X[:, 1], -X[:, 1]])
    np.testing.assert_allclose(state.currents[:, :2], g[:2] * Diode().phi(w[:, :2]), rtol=1e-12)
    loss, grad = c.loss_and_grad(g, X, np.zeros((batch, 1)))
    np.testing.assert_array_equal(grad, 0.0)  # the outputs do not depend on the conductances
